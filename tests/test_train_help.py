"""train.py's --help and the --model-dir check: what they say matches what the code does."""
import pytest

import datasets
import train
from engine.registry import TRAINER_REGISTRY
from runs import results


@pytest.fixture(scope="module")
def help_text():
    return " ".join(train.build_parser().format_help().split())  # argparse's line breaks removed


def test_help_lists_every_registered_trainer_and_dataset(help_text, monkeypatch):
    for name in TRAINER_REGISTRY.names():
        assert f" {name}," in help_text or f" {name} " in help_text, name
    for i in datasets.all_info():
        assert f"{i.stem} ({i.name})" in help_text
    # From the registry, not a list kept by hand: a newly registered method shows up.
    monkeypatch.setitem(TRAINER_REGISTRY._items, "BrandNewMethod",
                        type("BrandNewMethod", (TRAINER_REGISTRY.get("ZeroshotCLIP"),), {}))
    assert "BrandNewMethod" in train.build_parser().format_help()


def test_missing_model_dir_is_one_line_naming_the_folder_and_load_epoch(tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    code = train.main(["--trainer", "TaskRes", "--eval-only", "--model-dir", str(missing), "--output-dir",
                       str(tmp_path / "out"), "MODEL.BACKBONE.NAME", str(tmp_path / "no_such_weights.pt")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"--model-dir {missing}: folder not found" in err and "--load-epoch" in err
    assert "Model not found" not in err and "no_such_weights" not in err  # checked before anything loads


def test_load_epoch_default_is_what_help_says(help_text, tmp_path, tiny_clip_path):
    """Without --load-epoch, a run that kept no best-val model is evaluated at its last epoch."""
    from synthetic.layouts import write_eurosat

    write_eurosat(str(tmp_path / "data"), classes=("Forest", "River", "SeaLake"), per_class=10)
    common = ["--root", tmp_path / "data", "--seed", 1, "--trainer", "TaskRes", "--dataset-config-file",
              "configs/datasets/eurosat.yaml", "--config-file", "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml",
              "DATASET.NUM_SHOTS", 2, "OPTIM.MAX_EPOCH", 3, "MODEL.BACKBONE.NAME", tiny_clip_path,
              "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False, "TRAIN.CHECKPOINT_FREQ", 1]
    trained, ev = tmp_path / "trained", tmp_path / "eval"
    assert train.main([str(a) for a in common + ["--output-dir", trained]]) == 0
    assert train.main([str(a) for a in common + ["--output-dir", ev, "--eval-only", "--model-dir", trained]]) == 0
    assert results(ev)["epoch"] == 3 and results(ev)["correct"] == results(trained)["correct"]
    assert "else the last saved epoch" in help_text and "(default: model-best.pth.tar)" not in help_text
