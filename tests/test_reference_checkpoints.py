"""Checkpoints written by the reference Dassl-based code (TaskRes, CoOp) load safely: Dassl pickles
its scheduler object (and through it an optimizer copy), which torch.load(weights_only=True)
refuses. Those entries are read as inert placeholders and dropped; any other pickled object is
refused unread; a damaged file gets a message that says so."""
import json
import os
import pickle
import shutil
import sys

import pytest
import torch

import train
from engine import checkpoint as ckpt
from engine.errors import UserError
from synthetic.layouts import write_eurosat
from synthetic.reference_runs import dassl_stand_ins, make_taskres_reference_run, \
    save_dassl_checkpoint

K, D = 10, 16


@pytest.fixture(scope="module")
def tensors():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(K, D, generator=gen), 0.01 * torch.randn(K, D, generator=gen)


@pytest.fixture
def reference_run(tmp_path, tensors):
    base, residuals = tensors
    out = tmp_path / "output" / "eurosat" / "adam_lr2e-3_B256_ep200_16shots" / "seed1"
    path = make_taskres_reference_run(str(out), base, residuals, accuracy=81.23, epochs=200)
    return out, path


# ---------------------------------------------------------------------------------------------
# (a) reference checkpoints load

def test_reference_checkpoint_needs_more_than_weights_only(reference_run):
    _, path = reference_run
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # what plain loading does with it
    assert "torch.optim.lr_scheduler.CosineAnnealingLR" in \
        torch.serialization.get_unsafe_globals_in_checkpoint(path)


def dassl_modules():
    return {name: module for name, module in sys.modules.items()
            if name == "dassl" or name.startswith("dassl.")}


def test_reference_checkpoint_gives_state_dict_and_epoch(reference_run, tensors):
    _, path = reference_run
    before = dassl_modules()
    state = ckpt.load_checkpoint(path, "cpu")
    base, residuals = tensors
    assert set(state) == {"state_dict", "epoch", "optimizer", "scheduler", "val_result", "skipped"}
    assert set(state["state_dict"]) == {"base_text_features", "text_feature_residuals"}
    assert torch.equal(state["state_dict"]["base_text_features"], base)
    assert torch.equal(state["state_dict"]["text_feature_residuals"], residuals)
    assert state["epoch"] == 200 and state["val_result"] is None
    assert state["scheduler"] is None and state["skipped"] == ["scheduler"]
    # The optimizer entry is Adam's plain state dict: a resumed run can load it.
    param = torch.nn.Parameter(torch.zeros(K, D))
    optim = torch.optim.Adam([param], lr=2e-3)
    optim.load_state_dict(state["optimizer"])
    assert optim.state[param]["exp_avg"].shape == (K, D)
    assert dassl_modules() == before  # nothing was imported to read it


@pytest.mark.parametrize("warmup", ["constant", "linear"])
@pytest.mark.parametrize("scheduler_object", [False, True])
def test_dassl_scheduler_variants(tmp_path, tensors, warmup, scheduler_object):
    """The warm-up class's own name is in the file when the scheduler object itself is saved."""
    base, residuals = tensors
    before = dassl_modules()
    path = save_dassl_checkpoint(tmp_path / "model.pth.tar-3",
                                 {"base_text_features": base, "text_feature_residuals": residuals},
                                 3, warmup=warmup, scheduler_object=scheduler_object)
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    cls = "ConstantWarmupScheduler" if warmup == "constant" else "LinearWarmupScheduler"
    assert (f"dassl.optim.lr_scheduler.{cls}" in names) == scheduler_object
    state = ckpt.load_checkpoint(path)
    assert state["epoch"] == 3 and state["scheduler"] is None and state["skipped"] == ["scheduler"]
    assert torch.equal(state["state_dict"]["text_feature_residuals"], residuals)
    assert dassl_modules() == before  # the stand-ins are gone, whatever was there is back


def test_own_checkpoints_are_unchanged(tmp_path):
    state = {"state_dict": {"w": torch.ones(2)}, "epoch": 4,
             "optimizer": {"state": {}, "param_groups": []}, "scheduler": {"last_epoch": 4}, "val_result": None}
    path = ckpt.save_checkpoint(state, str(tmp_path), "prompt_learner", "model.pth.tar-4")
    loaded = ckpt.load_checkpoint(path)
    assert set(loaded) == set(state) and loaded["scheduler"] == {"last_epoch": 4}
    assert "skipped" not in loaded


def test_reference_run_folder_layout(reference_run):
    out, path = reference_run
    assert sorted(os.listdir(out)) == ["log.txt", "prompt_learner"]
    assert ckpt.read_pointer(str(out), "prompt_learner") == path
    assert path.endswith(os.path.join("prompt_learner", "model.pth.tar-200"))
    log = open(out / "log.txt").read()
    tail = log[log.index("Finish training"):]
    assert "=> result\n* total: 1,000\n* correct: 812\n* accuracy: 81.2%\n" in tail
    assert f"Checkpoint saved to {out}/prompt_learner/model.pth.tar-200" in log
    assert "Loading trainer: TaskRes" in log and ">> Use regular base!" in log


# ---------------------------------------------------------------------------------------------
# (b) anything else pickled is refused without running it

class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_object_is_refused_unread(tmp_path, tensors, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {"w": tensors[0]}, "epoch": 1, "val_result": _Payload(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UserError) as e:
        ckpt.load_checkpoint(str(path))
    msg = str(e.value)
    assert msg.startswith(f'Refusing to load checkpoint "{path}"') and "system" in msg
    assert "arbitrary code" in msg and "weights_only" not in msg
    assert not marker.exists()


def test_malicious_object_next_to_dassl_state_is_refused(tmp_path, tensors):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth.tar-1"
    with dassl_stand_ins():
        from synthetic.reference_runs import dassl_checkpoint
        state = dassl_checkpoint({"w": tensors[0]}, 1)
    state["scheduler"]["extra"] = _Payload(marker)
    torch.save(state, path)
    with pytest.raises(UserError, match="Refusing to load checkpoint"):
        ckpt.load_checkpoint(str(path))
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# (c) damaged files say so

@pytest.mark.parametrize("cut", ["half", "head", "garbage", "empty"])
def test_damaged_checkpoint_message(reference_run, tmp_path, cut):
    _, path = reference_run
    data = open(path, "rb").read()
    bad = tmp_path / f"model.pth.tar-{cut}"
    bad.write_bytes({"half": data[:len(data) // 2], "head": data[:64], "garbage": b"\x80junk" * 50,
                     "empty": b""}[cut])
    with pytest.raises(UserError) as e:
        ckpt.load_checkpoint(str(bad))
    msg = str(e.value)
    assert msg.startswith(f'Checkpoint "{bad}" is damaged or is not a PyTorch checkpoint (')
    assert "copy it again" in msg and "delete it to retrain" in msg
    assert "weights_only" not in msg and "arbitrary code" not in msg and "\n" not in msg


def test_missing_checkpoint_message(tmp_path):
    with pytest.raises(UserError, match='Model not found at ".*nothing.pth.tar"'):
        ckpt.load_checkpoint(str(tmp_path / "nothing.pth.tar"))


# ---------------------------------------------------------------------------------------------
# end to end: --eval-only --model-dir <reference run>, and resuming one

RECIPE = "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml"


def taskres(root, out, clip_path, *extra, epochs=2):
    return ["--root", root, "--seed", "1", "--trainer", "TaskRes",
            "--dataset-config-file", "configs/datasets/eurosat.yaml", "--config-file", RECIPE,
            "--output-dir", out, *extra, "DATASET.NUM_SHOTS", "2",
            "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5", "MODEL.BACKBONE.NAME", clip_path,
            "OPTIM.MAX_EPOCH", str(epochs), "DATALOADER.NUM_WORKERS", "0", "TRAIN.TENSORBOARD",
            "False"]


def accuracy(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)["accuracy"]


def test_eval_only_and_resume_on_a_reference_run(tmp_path, tiny_clip_path, capsys):
    root = str(tmp_path / "data")
    write_eurosat(root, per_class=8)  # small: this runs train.py three times
    ours = str(tmp_path / "ours")
    assert train.main(taskres(root, ours, tiny_clip_path)) == 0
    saved = torch.load(os.path.join(ours, "prompt_learner", "model.pth.tar-2"), weights_only=True)
    ref = str(tmp_path / "reference")
    make_taskres_reference_run(ref, saved["state_dict"]["base_text_features"],
                               saved["state_dict"]["text_feature_residuals"], epochs=2)

    evaluated = str(tmp_path / "eval")
    assert train.main(taskres(root, evaluated, tiny_clip_path, "--eval-only", "--model-dir", ref,
                              "--load-epoch", "2")) == 0
    assert accuracy(evaluated) == pytest.approx(accuracy(ours))

    resumed = str(tmp_path / "resumed")
    shutil.copytree(ref, resumed)
    assert train.main(taskres(root, resumed, tiny_clip_path, epochs=3)) == 0
    out = capsys.readouterr().out
    assert "Previous epoch: 2" in out and "Loaded optimizer" in out
    assert os.path.isfile(os.path.join(resumed, "prompt_learner", "model.pth.tar-3"))
