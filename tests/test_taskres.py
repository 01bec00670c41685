"""TaskRes and zero-shot CLIP end to end through train.py, on the tiny CLIP and synthetic EuroSAT."""
import os
import re

import pytest
import torch

import train
from engine.schedule import lr_at_epoch
from runs import results, run, run_killed
from synthetic.layouts import write_eurosat

RECIPE = "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=20)
    return str(root)


def taskres_args(root, out, clip_path, *opts, seed=1, shots=4, epochs=8):
    return ["--root", root, "--seed", seed, "--trainer", "TaskRes",
            "--dataset-config-file", "configs/datasets/eurosat.yaml", "--config-file", RECIPE,
            "--output-dir", out, "DATASET.NUM_SHOTS", shots, "TRAINER.TaskRes.RESIDUAL_SCALE", 0.5,
            "MODEL.BACKBONE.NAME", clip_path, "OPTIM.MAX_EPOCH", epochs, "DATALOADER.NUM_WORKERS", 0,
            "TRAIN.TENSORBOARD", False, *opts]


@pytest.fixture(scope="module")
def zero_shot_acc(data_root, tiny_clip_path, tmp_path_factory):
    """TaskRes trained for zero epochs evaluates the untrained base (the regular base, x = 0)."""
    out = str(tmp_path_factory.mktemp("base"))
    run(taskres_args(data_root, out, tiny_clip_path, epochs=0))
    return results(out)["accuracy"]


@pytest.fixture(scope="module")
def trained(data_root, tiny_clip_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("taskres") / "seed1")
    run(taskres_args(data_root, out, tiny_clip_path, shots=8, epochs=30, seed=1))
    return out


def test_taskres_learns_beyond_base_and_chance(trained, zero_shot_acc):
    acc = results(trained)["accuracy"]
    assert acc > 3 * 10.0  # chance is 10% on 10 classes
    assert acc >= zero_shot_acc + 10.0, (acc, zero_shot_acc)


def test_outputs_match_reference_layout(trained):
    folder = os.path.join(trained, "prompt_learner")
    assert open(os.path.join(folder, "checkpoint")).read().strip() == "model.pth.tar-30"
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-30"]  # resume snapshot removed
    state = torch.load(os.path.join(folder, "model.pth.tar-30"), weights_only=True)
    assert set(state["state_dict"]) == {"base_text_features", "text_feature_residuals"}
    assert state["state_dict"]["text_feature_residuals"].shape == state["state_dict"]["base_text_features"].shape
    assert state["state_dict"]["text_feature_residuals"].abs().sum() > 0
    assert state["epoch"] == 30 and state["residual_scale"] == 0.5
    log = open(os.path.join(trained, "log.txt")).read()
    tail = log[log.index("Finish training"):]
    acc = results(trained)["accuracy"]
    assert f"* accuracy: {acc:.1f}%" in tail
    assert ">> Use regular base!" in log and "Loading trainer: TaskRes" in log


def test_logged_lr_follows_closed_form(trained):
    from engine.config import get_cfg_default

    cfg = get_cfg_default()
    cfg.merge_from_file(RECIPE)
    cfg.OPTIM.MAX_EPOCH = 30
    log = open(os.path.join(trained, "log.txt")).read()
    lrs = {int(e): float(lr) for e, lr in re.findall(r"epoch \[(\d+)/30\] batch \[1/1\].* lr (\S+) eta", log)}
    assert len(lrs) == 30
    for epoch, lr in lrs.items():
        assert lr == pytest.approx(lr_at_epoch(cfg.OPTIM, epoch - 1), rel=1e-4)


def test_eval_only_reproduces_logged_accuracy(trained, data_root, tiny_clip_path, tmp_path):
    out = str(tmp_path / "eval")
    run(taskres_args(data_root, out, tiny_clip_path, shots=8, epochs=30)
        + ["--eval-only", "--model-dir", trained, "--load-epoch", "30"])
    assert results(out)["accuracy"] == results(trained)["accuracy"]
    assert results(out)["correct"] == results(trained)["correct"]


def test_resume_equals_uninterrupted(data_root, tiny_clip_path, tmp_path, monkeypatch):
    full = str(tmp_path / "full")
    run(taskres_args(data_root, full, tiny_clip_path, epochs=6, seed=2))

    part = str(tmp_path / "part")
    run_killed(taskres_args(data_root, part, tiny_clip_path, epochs=6, seed=2), 3, monkeypatch)
    assert open(os.path.join(part, "prompt_learner", "checkpoint")).read().strip() == "resume.pth.tar"
    run(taskres_args(data_root, part, tiny_clip_path, epochs=6, seed=2))
    a = torch.load(os.path.join(full, "prompt_learner", "model.pth.tar-6"), weights_only=True)
    b = torch.load(os.path.join(part, "prompt_learner", "model.pth.tar-6"), weights_only=True)
    assert torch.equal(a["state_dict"]["text_feature_residuals"], b["state_dict"]["text_feature_residuals"])
    assert results(full)["accuracy"] == results(part)["accuracy"]
    assert "Previous epoch: 3" in "".join(open(os.path.join(part, f)).read() for f in os.listdir(part)
                                         if f.startswith("log.txt"))


def test_zero_shot_trainers(data_root, tiny_clip_path, tmp_path):
    for trainer in ("ZeroshotCLIP", "ZeroshotCLIP2"):
        out = str(tmp_path / trainer)
        run(["--root", data_root, "--trainer", trainer, "--dataset-config-file", "configs/datasets/eurosat.yaml",
             "--config-file", "configs/trainers/ZeroshotCLIP/rn50.yaml", "--output-dir", out, "--eval-only",
             "MODEL.BACKBONE.NAME", tiny_clip_path, "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False])
        assert results(out)["accuracy"] > 20.0  # well above 10% chance


@pytest.mark.parametrize("args,message", [
    (["--trainer", "TaskRess"], "Did you mean 'TaskRes'"),
    (["--trainer", "TaskRes", "OPTIM.LRR", "1"], "unknown config key"),
    (["--trainer", "TaskRes", "DATASET.NAME", "EuroSet"], "Did you mean 'EuroSAT'"),
    (["--trainer", "TaskRes", "MODEL.BACKBONE.NAME", "RN5O"], "RN50"),
    (["--trainer", "TaskRes", "--root", "/nonexistent-root"], "DATASETS.md"),
    (["--trainer", "TaskRes", "--enhanced-base", "/nonexistent/model.pth.tar"], "Enhanced base not found"),
    (["--trainer", "TaskRes", "--eval-only", "--model-dir", "/nonexistent-dir", "--load-epoch", "3"],
     "--model-dir /nonexistent-dir: folder not found"),
    (["--trainer", "TaskRes", "--eval-only"], "--eval-only without --model-dir would evaluate an untrained TaskRes"),
])
def test_bad_input_gives_one_clear_message(args, message, data_root, tiny_clip_path, tmp_path, capsys):
    base = ["--root", data_root, "--dataset-config-file", "configs/datasets/eurosat.yaml", "--config-file", RECIPE,
            "--output-dir", str(tmp_path / "o"), "MODEL.BACKBONE.NAME", tiny_clip_path,
            "DATALOADER.NUM_WORKERS", "0", "TRAIN.TENSORBOARD", "False"]
    assert train.main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    logs = list((tmp_path / "o").glob("log.txt*"))
    if logs:  # errors after the log is opened are in it too
        assert message in logs[0].read_text()
