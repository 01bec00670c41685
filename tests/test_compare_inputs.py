"""analysis.compare on damaged or repeated inputs: every run it leaves out is named with the
reason; a seed found twice is counted once (the folder that sorts first) with a note; a study's
table rows carry the study's method names."""
import csv
import json
import os

import yaml

import study
from analysis import compare
from studies.plan import plan_study
from studies.spec import load_study


def write_run(folder, acc, seed, shots=4, dataset="EuroSAT", log=True, **fields):
    os.makedirs(folder, exist_ok=True)
    record = {"accuracy": acc, "split": "test", "trainer": "TaskRes", "dataset": dataset, "num_shots": shots,
              "seed": seed, "backbone": "RN50", "extras": {"base": "regular", "alpha": 0.5}}
    record.update(fields)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(record, f)
    if log:  # what train.py's log holds: the header lines and no final result yet
        with open(os.path.join(folder, "log.txt"), "w") as f:
            f.write("Loading trainer: TaskRes\nLoading dataset: EuroSAT\nepoch [1/100] batch [1/1]\n")


def cells(path):
    with open(path, newline="") as f:
        return {(r["method"], int(r["shots"])): (int(r["n"]), float(r["mean"])) for r in csv.DictReader(f)
                if r["table"] == "few-shot"}


def test_runs_left_out_are_named_with_the_reason(tmp_path, capsys):
    root = tmp_path / "out"
    seeds = {s: root / "eurosat" / "TaskRes" / "cfg_4shots" / "v" / f"seed{s}" for s in (1, 2, 3)}
    write_run(seeds[1], 70.0, 1)
    write_run(seeds[2], 72.0, "2", num_shots="4")  # hand-edited: strings where numbers belong
    write_run(seeds[3], 74.0, 3)
    os.remove(seeds[3] / "results.json")  # deleted record, the log has no final result
    table = tmp_path / "t.csv"
    assert compare.main([str(root), "--csv", str(table)]) == 0
    err = capsys.readouterr().err
    assert f"{seeds[2] / 'results.json'} has values of the wrong type (num_shots is '4'; seed is '2')" in err
    assert f"skip {seeds[2]}: no final result (its results.json is unusable" in err
    assert f"skip {seeds[3]}: no final result (no results.json" in err
    assert cells(table) == {("TaskRes", 4): (1, 70.0)}


def test_a_seed_found_twice_counts_once_with_a_note(tmp_path, capsys):
    root = tmp_path / "out"
    for copy in ("a", "b"):
        for seed, acc in ((1, 70.0), (2, 72.0)):
            write_run(root / copy / f"seed{seed}", acc + (copy == "b"), seed, log=False)
    table = tmp_path / "t.csv"
    assert compare.main([str(root), "--csv", str(table)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--by-alpha" not in err
    assert f"note: {root / 'b' / 'seed1'} left out: seed 1 of eurosat / TaskRes / 4 shots is already counted " \
           f"from {root / 'a' / 'seed1'} (70.00% there, 71.00% here; one run per seed)" in err
    assert cells(table) == {("TaskRes", 4): (2, 71.0)}


def test_study_table_rows_are_the_study_method_names(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "names", "root": str(tmp_path), "output": str(tmp_path / "out"), "datasets": ["eurosat"],
        "shots": [2], "seeds": [1, 2],
        "methods": [{"name": "Residual, my recipe", "trainer": "TaskRes"},
                    {"name": "CLIP zero-shot", "trainer": "ZeroshotCLIP2", "shots": [0], "seeds": None}]}))
    runs, _ = plan_study(load_study(str(path)))
    for run in runs:  # what the runs would have written
        write_run(run.out, 60.0 if run.trainer == "ZeroshotCLIP2" else 70.0 + (run.seed or 0), run.seed,
                  shots=run.shots, trainer=run.trainer, log=False)
    assert study.main(["table", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| Residual, my recipe | unknown | 71.50 ± 0.50 |" in out and "| CLIP zero-shot | none | 60.00 |" in out
