"""A benchmark folder without its split file trains on a generated split that is never written
under the official name, and results.json says where the split came from."""
import json
import os

import train
from synthetic.layouts import write_eurosat


def zero_shot(root, out, tiny_clip_path, *opts):
    assert train.main([str(a) for a in ["--root", root, "--seed", 2, "--trainer", "ZeroshotCLIP",
                                        "--dataset-config-file", "configs/datasets/eurosat.yaml", "--output-dir", out,
                                        "--eval-only", "MODEL.BACKBONE.NAME", tiny_clip_path,
                                        "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False, *opts]]) == 0
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def test_results_record_the_split_origin(tmp_path, tiny_clip_path, capsys):
    classes = ("Forest", "River", "SeaLake")
    write_eurosat(str(tmp_path / "official"), classes=classes, per_class=10)
    r = zero_shot(tmp_path / "official", tmp_path / "o1", tiny_clip_path)
    assert r["extras"]["split_origin"] == "official" and "fewshot_origin" not in r["extras"]

    write_eurosat(str(tmp_path / "nosplit"), classes=classes, per_class=10, with_split=False)
    capsys.readouterr()
    r = zero_shot(tmp_path / "nosplit", tmp_path / "o2", tiny_clip_path, "DATASET.SPLIT_SEED", 4)
    log = open(tmp_path / "o2" / "log.txt").read()
    assert r["extras"]["split_origin"] == "generated seed=4"
    assert "WARNING: EuroSAT: the split file" in log and "not CoOp's" in log
    assert os.listdir(tmp_path / "nosplit" / "eurosat") == ["2750"]  # nothing written, least of all the official name
    # The next run still has no split file: the same generated split again, never mistaken for CoOp's.
    again = zero_shot(tmp_path / "nosplit", tmp_path / "o3", tiny_clip_path, "DATASET.SPLIT_SEED", 4)
    assert again["extras"]["split_origin"] == "generated seed=4" and again["correct"] == r["correct"]


def test_tables_name_a_generated_split(tmp_path, tiny_clip_path):
    from analysis.compare import zero_shot_rows
    from analysis.runs import find_runs

    classes = ("Forest", "River", "SeaLake")
    write_eurosat(str(tmp_path / "official"), classes=classes, per_class=10)
    write_eurosat(str(tmp_path / "nosplit"), classes=classes, per_class=10, with_split=False)
    zero_shot(tmp_path / "official", tmp_path / "runs" / "official", tiny_clip_path)
    zero_shot(tmp_path / "nosplit", tmp_path / "runs" / "generated", tiny_clip_path, "DATASET.SPLIT_SEED", 4)
    labels = {os.path.basename(r.path): r.method() for r in find_runs(str(tmp_path / "runs"))}
    assert labels["generated"] == labels["official"] + " [split: generated seed=4]"
    rows = zero_shot_rows(find_runs(str(tmp_path / "runs")))
    assert len(rows) == 2  # one row per split origin, never averaged together
