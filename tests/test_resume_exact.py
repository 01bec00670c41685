"""Exact resume from every resume point: a run killed right after a periodic checkpoint
(TRAIN.CHECKPOINT_FREQ), or between two models' saves of one epoch (CoOpMaskTuning), ends
bit-identical to the uninterrupted run."""
import os

import pytest
import torch

from engine import checkpoint as ckpt
from engine.recipes import recipe
from runs import results, run, run_killed
from test_method_contract import data_root, store  # noqa: F401  (module fixtures: the same EuroSAT and store)

SHOTS, EPOCHS = 2, 4
# Mask scores start 5e-3 above the threshold: at the recipe's lr (8e-5) no mask flips in a few
# epochs of this tiny data, and a resume that restored the wrong scores would go unseen.
FAST_MASKS = ("OPTIM.LR", 2e-3)


def args(name, root, out, clip_path, store, *opts, epochs=EPOCHS):
    r = recipe(name, "eurosat", SHOTS)
    return ["--root", root, "--seed", 1, "--trainer", name, "--dataset-config-file",
            "configs/datasets/eurosat.yaml", "--config-file", r.config, "--output-dir", out, *r.opts_list(),
            "DATASET.NUM_SHOTS", SHOTS, "MODEL.BACKBONE.NAME", clip_path, "OPTIM.MAX_EPOCH", epochs,
            "DATALOADER.NUM_WORKERS", 0, "DATALOADER.TRAIN_X.BATCH_SIZE", 4, "DATALOADER.TEST.BATCH_SIZE", 50,
            "TRAIN.TENSORBOARD", False, "FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", store, *opts]


def final_weights(out, names):
    return {n: torch.load(ckpt.read_pointer(out, n), map_location="cpu", weights_only=True)["state_dict"]
            for n in names}


def assert_same_run(full, part, names):
    a, b = final_weights(full, names), final_weights(part, names)
    for name in names:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key}"
    assert results(full)["accuracy"] == results(part)["accuracy"]


def logs(out):
    return "".join(open(os.path.join(out, f)).read() for f in sorted(os.listdir(out)) if f.startswith("log.txt"))


@pytest.mark.parametrize("name,models,resume_freq", [
    ("TaskRes", ["prompt_learner"], 1),
    ("TaskRes", ["prompt_learner"], 0),
    pytest.param("MaskTuning", ["shared"], 1, marks=pytest.mark.slow),
])
def test_kill_right_after_a_periodic_checkpoint_resumes_exactly(name, models, resume_freq, data_root, tiny_clip_path,
                                                                 store, tmp_path, monkeypatch):
    opts = ("TRAIN.CHECKPOINT_FREQ", 2, "TRAIN.RESUME_FREQ", resume_freq) + (FAST_MASKS if name == "MaskTuning" else ())
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    run(args(name, data_root, full, tiny_clip_path, store, *opts))
    run_killed(args(name, data_root, part, tiny_clip_path, store, *opts), 2, monkeypatch)
    pointed = {model: torch.load(ckpt.read_pointer(part, model), weights_only=True) for model in models}
    run(args(name, data_root, part, tiny_clip_path, store, *opts))
    assert "Previous epoch: 2" in logs(part)
    assert_same_run(full, part, models)
    # What resume continued from holds the RNG states; model.pth.tar-2 stays beside it.
    assert all("rng" in state and state["epoch"] == 2 for state in pointed.values())
    for model in models:  # the periodic checkpoints are kept, the snapshot goes with the finished run
        assert sorted(os.listdir(os.path.join(part, model))) == ["checkpoint", "model.pth.tar-2", "model.pth.tar-4"]


COOP_MASKS = ["shared", "prompt_learner"]


@pytest.fixture(scope="module")
def coop_masks_full(data_root, tiny_clip_path, store, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("coop_masks") / "full")
    run(args("CoOpMaskTuning", data_root, out, tiny_clip_path, store, *FAST_MASKS, epochs=3))
    return out


class Killed(Exception):
    pass


@pytest.mark.slow
def test_kill_between_two_models_snapshots_resumes_one_epoch_for_all(coop_masks_full, data_root, tiny_clip_path,
                                                                    store, tmp_path, monkeypatch):
    """Killed after the masks' snapshot of epoch 2 was written and before the prompt learner's:
    both resume from epoch 1 (before, the masks came from epoch 2 and the context from epoch 1)."""
    part = str(tmp_path / "part")
    save = ckpt.save_checkpoint

    def die_before_the_second_model(state, directory, name, filename, **kw):
        if name == "prompt_learner" and filename.startswith(ckpt.RESUME_FILE) and state["epoch"] == 2:
            raise Killed()
        return save(state, directory, name, filename, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(ckpt, "save_checkpoint", die_before_the_second_model)
        with pytest.raises(Killed):
            run(args("CoOpMaskTuning", data_root, part, tiny_clip_path, store, *FAST_MASKS, epochs=3))
    run(args("CoOpMaskTuning", data_root, part, tiny_clip_path, store, *FAST_MASKS, epochs=3))
    assert "Previous epoch: 1" in logs(part)
    assert_same_run(coop_masks_full, part, COOP_MASKS)


@pytest.mark.slow
def test_torn_epoch_falls_back_to_the_epoch_all_models_share(coop_masks_full, data_root, tiny_clip_path, store,
                                                             tmp_path, monkeypatch):
    """One model's snapshot of epoch 2 in place, the other's still at epoch 1 (its epoch-2 file
    written beside it): resume takes the epoch every model has, says so, and ends as the
    uninterrupted run. With only epoch-1 files for one model, all restart from what they share."""
    part = str(tmp_path / "part")
    write = ckpt.write_pointer

    def die_after_the_first_model_moved(directory, name, filename):
        if name == "shared" and filename == ckpt.RESUME_FILE and os.path.isfile(
                os.path.join(directory, "prompt_learner", ckpt.RESUME_FILE + ".next")):
            raise Killed()
        return write(directory, name, filename)

    with monkeypatch.context() as patch:
        patch.setattr(ckpt, "write_pointer", die_after_the_first_model_moved)
        with pytest.raises(Killed):
            run(args("CoOpMaskTuning", data_root, part, tiny_clip_path, store, *FAST_MASKS, epochs=3))
    epochs = {m: torch.load(os.path.join(part, m, ckpt.RESUME_FILE), weights_only=True)["epoch"] for m in COOP_MASKS}
    assert epochs == {"shared": 2, "prompt_learner": 1}  # the torn state
    run(args("CoOpMaskTuning", data_root, part, tiny_clip_path, store, *FAST_MASKS, epochs=3))
    log = logs(part)
    assert "from different epochs (shared epoch 2, prompt_learner epoch 1)" in log
    assert "resuming every model from epoch 2" in log and "Previous epoch: 2" in log
    assert_same_run(coop_masks_full, part, COOP_MASKS)
