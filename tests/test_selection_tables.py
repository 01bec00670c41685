"""Selection tiers and calibration metrics in the tables: every row names its tier, tiers are
never averaged together, --selection gives the fair table, --metric ece tabulates ECE."""
import csv
import json
import os

import pytest

import parse_test_res
from analysis import compare
from analysis.curves import legend_label


def write_run(root, name, trainer, dataset, shots, seed, acc, selection=None, ece=None, **extras):
    folder = os.path.join(root, name)
    os.makedirs(folder)
    data = {"accuracy": acc, "split": "test", "trainer": trainer, "dataset": dataset, "num_shots": shots,
            "seed": seed, "backbone": "RN50", "extras": dict(extras, subsample_classes="all")}
    if selection is not None:
        data["selection"] = {"tier": selection, "chosen": {}, "split": {}}
    if ece is not None:
        data["ece"] = ece
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(data, f)
    with open(os.path.join(folder, "log.txt"), "w") as f:
        f.write(f"Finish training\n=> result\n* accuracy: {acc:.1f}%\n" + (f"* ece: {ece:.2f}%\n" if ece else ""))


@pytest.fixture()
def tree(tmp_path):
    root = str(tmp_path / "out")
    for ds in ("EuroSAT", "ImageNet"):
        write_run(root, f"{ds}/zs/seed1", "ZeroshotCLIP", ds, -1, 1, 40.0, "none", 5.0, zero_shot_template="single")
        write_run(root, f"{ds}/zs2/seed1", "ZeroshotCLIP2", ds, -1, 1, 42.0, "none", 4.0,
                  zero_shot_template="ensemble-8")
        for s in (1, 2):
            write_run(root, f"{ds}/tr/seed{s}", "TaskRes", ds, 16, s, 70.0 + s, "none", 10.0 + s)
            # Tip-Adapter searched on val: CoOp's few-shot val, which on ImageNet is the test split
            write_run(root, f"{ds}/tip/seed{s}", "TipAdapter", ds, 16, s, 80.0 + s,
                      "test" if ds == "ImageNet" else "fewshot-val", 20.0 + s)
            write_run(root, f"{ds}/old/seed{s}", "CoOp", ds, 16, s, 60.0 + s)  # before tiers were recorded
    return root


def test_every_row_names_its_tier_and_tiers_are_never_averaged(tree, tmp_path, capsys):
    md, out = str(tmp_path / "t.md"), str(tmp_path / "t.csv")
    assert compare.main([tree, "--out", md, "--csv", out]) == 0
    text = open(md).read()
    imagenet = text[text.index("### ImageNet"):text.index("### EuroSAT")]  # the papers' order
    eurosat = text[text.index("### EuroSAT"):text.index("### Average")]
    average = text[text.index("### Average"):]
    assert "| TipAdapter | fewshot-val | 81.50 ± 0.50 |" in eurosat
    assert "| TipAdapter | **test** (oracle) | 81.50 ± 0.50 |" in imagenet
    assert "| CoOp | unknown | 61.50 ± 0.50 |" in eurosat  # never guessed "none"
    assert "| TaskRes | none | 71.50 ± 0.50 |" in average
    assert "TipAdapter" not in average  # fewshot-val on one dataset, test on the other
    assert "different tiers (fewshot-val: eurosat; test: imagenet)" in capsys.readouterr().err
    # the zero-shot rows name their templates
    assert "| ZeroshotCLIP (single template) | none | 40.00 |" in eurosat
    assert "| ZeroshotCLIP2 (ensemble-8) | none | 42.00 |" in eurosat
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert {(r["dataset"], r["method"], r["selection"]) for r in rows if r["method"] == "TipAdapter"} == {
        ("eurosat", "TipAdapter", "fewshot-val"), ("imagenet", "TipAdapter", "test")}


def test_the_selection_filter_gives_the_fair_table(tree, tmp_path):
    md = str(tmp_path / "t.md")
    assert compare.main([tree, "--out", md, "--selection", "none,fewshot-val"]) == 0
    text = open(md).read()
    assert "test" not in text.replace("### ", "") and "unknown" not in text
    assert "| TipAdapter | fewshot-val | 81.50 ± 0.50 |" in text
    assert compare.main([tree, "--selection", "nonsense"]) == 1


def test_metric_ece_tabulates_the_recorded_ece(tree, tmp_path):
    md = str(tmp_path / "t.md")
    assert compare.main([tree, "--out", md, "--metric", "ece"]) == 0
    text = open(md).read()
    assert "(ece %, mean ± std over seeds)" in text
    assert "| TaskRes | none | 11.50 ± 0.50 |" in text and "| ZeroshotCLIP (single template) | none | 5.00 |" in text
    assert "CoOp" not in text  # recorded no ECE


def test_figures_mark_oracle_rows(tree, tmp_path):
    assert legend_label("TipAdapter", "test") == "TipAdapter (oracle: selected on test)"
    assert legend_label("TaskRes", "none") == "TaskRes"
    assert legend_label("LinearProbe", "fewshot-val") == "LinearProbe [fewshot-val]"
    assert compare.main([tree, "--figure", str(tmp_path / "f.png")]) == 0
    assert os.path.getsize(tmp_path / "f.png") > 0


def test_parse_test_res_table_shows_the_tier(tree, capsys):
    assert parse_test_res.main([tree, "--table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[-1] == "selection"
    row = next(line for line in lines if line.startswith("ImageNet/tip"))
    assert row.split()[-1] == "test"
    assert next(line for line in lines if line.startswith("EuroSAT/old")).split()[-1] == "unknown"
    capsys.readouterr()
    assert parse_test_res.main([tree, "--table", "--selection", "none,fewshot-val"]) == 0
    shown = capsys.readouterr().out
    assert "ImageNet/tip" not in shown and "EuroSAT/tip" in shown and "EuroSAT/old" not in shown
    assert parse_test_res.main([tree, "--table", "--keyword", "ece"]) == 0
    assert "EuroSAT/tr" in capsys.readouterr().out
