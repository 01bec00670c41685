"""The cross-dataset protocol (study.py): a source-trained model evaluated on other datasets,
per-class parameters falling back to zero-shot CLIP, and the conditional-prompt paper's table
(source, each target, the targets' average)."""
import json
import os

import pytest
import yaml

import study
from studies import load_study, plan_study
from studies.spec import CROSS_DATASET_TARGETS


def write(path, **fields):
    with open(path, "w") as f:
        yaml.safe_dump(fields, f)
    return str(path)


def test_the_targets_default_to_the_ten_other_datasets(tmp_path):
    s = load_study(write(tmp_path / "xd.yaml", protocol="cross-dataset", datasets=["imagenet"], methods=["CoOp"],
                         seeds=[1], output=str(tmp_path / "out")))
    assert s.targets == CROSS_DATASET_TARGETS and len(s.targets) == 10 and s.shots == [16]
    runs, _ = plan_study(s)
    evals = [r for r in runs if r.role != "source"]
    assert sorted(r.dataset for r in evals) == sorted(CROSS_DATASET_TARGETS)
    source = next(r for r in runs if r.role == "source")
    dtd = next(r for r in evals if r.dataset == "dtd")
    # CoCoOp's folder, beside (never inside) the few-shot runs on the target
    assert dtd.out == os.path.join(str(tmp_path / "out"), "evaluation", "CoOp", "rn50_ep50_16shots", "dtd", "seed1")
    assert dtd.argv[dtd.argv.index("--model-dir") + 1] == source.out and "--eval-only" in dtd.argv


@pytest.mark.slow  # about a minute: 8 runs
def test_a_cross_dataset_study_runs_and_tabulates(tmp_path, tiny_clip_path):
    from synthetic.layouts import write_dtd, write_eurosat

    data = tmp_path / "data"
    write_eurosat(str(data), per_class=10)
    write_dtd(str(data), classes=("banded", "braided", "bubbly", "cracked", "dotted"), per_class=10)
    out = tmp_path / "out"
    opts = {"MODEL.BACKBONE.NAME": tiny_clip_path, "OPTIM.MAX_EPOCH": 2, "DATALOADER.NUM_WORKERS": 0,
            "TRAIN.TENSORBOARD": False, "FEATURES.MODE": "cached", "FEATURES.CACHE_DIR": str(tmp_path / "store"),
            "FEATURES.NUM_VIEWS": 2, "TRAINER.TIP.AUGMENT_EPOCH": 2}
    path = write(tmp_path / "xd.yaml", name="xd", protocol="cross-dataset", root=str(data), output=str(out),
                 datasets=["eurosat"], targets=["dtd"], shots=[2], seeds=[1], opts=opts,
                 methods=[{"name": "ZS", "trainer": "ZeroshotCLIP", "config": "configs/trainers/ZeroshotCLIP/rn50.yaml",
                           "eval_only": True, "shots": [0], "seeds": None},
                          "TaskRes", "LinearProbe", "CoOp"])
    assert study.main(["run", path]) == 0
    assert study.main(["table", path]) == 0
    text = open(out / ".study" / "xd" / "table.md").read()
    assert "### Cross-dataset transfer" in text
    assert "| Method | Selection | Shots | Source: EuroSAT | DTD | Targets avg |" in text
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and not line.startswith("| Method")}
    assert set(rows) == {"ZS", "TaskRes", "LinearProbe", "CoOp"}
    assert rows["LinearProbe"][0] == "fewshot-val" and rows["TaskRes"][0] == "none"
    # one target: its average is its value
    assert all(r[-1] == r[-2] for r in rows.values())

    def target(method):
        (path,) = (out / "evaluation" / method).glob("**/dtd/seed1/results.json")
        with open(path) as f:
            return json.load(f)

    with open(out / "ZeroshotCLIP" / "rn50" / "dtd" / "results.json") as f:
        zs = json.load(f)
    # per-class parameters of EuroSAT's classes mean nothing for DTD's: TaskRes's residual rows and
    # the probe's rows fall back to their zero-shot initialisation, which predicts as zero-shot CLIP
    for method in ("TaskRes", "LinearProbe"):
        assert target(method)["correct"] == zs["correct"], method
    # the target evaluation inherits the source's selection (the probe's C chosen on EuroSAT's val)
    assert target("LinearProbe")["selection"]["tier"] == "fewshot-val"
