"""One run per output folder: reruns with another config stop, concurrent writers are refused,
crashes and interruptions leave a clear last word in log.txt."""
import json
import os
import signal
import subprocess
import sys

import pytest

import train
from engine.errors import UserError
from engine.record import config_dict, flatten
from engine.run_lock import LOCK_FILE, run_lock
from runs import results, run_killed
from synthetic.layouts import write_eurosat

RECIPE = "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=8)
    return str(root)


def args(root, out, clip_path, *opts):
    return [str(a) for a in ["--root", root, "--seed", 1, "--trainer", "TaskRes", "--dataset-config-file",
                             "configs/datasets/eurosat.yaml", "--config-file", RECIPE, "--output-dir", out,
                             "DATASET.NUM_SHOTS", 2, "MODEL.BACKBONE.NAME", clip_path, "OPTIM.MAX_EPOCH", 2,
                             "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False, *opts]]


def last_log_line(out):
    logs = sorted(f for f in os.listdir(out) if f.startswith("log.txt"))
    lines = [ln for ln in open(os.path.join(out, logs[-1])).read().splitlines() if ln.strip()]
    return lines[-1]


def test_rerun_with_another_config_stops_and_overwrite_discards(data_root, tiny_clip_path, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert train.main(args(data_root, out, tiny_clip_path)) == 0
    # Same config (worker counts do not count): resumes / re-reports as before.
    assert train.main(args(data_root, out, tiny_clip_path, "DATALOADER.NUM_WORKERS", 1)) == 0
    first = json.load(open(os.path.join(out, "results.json")))
    capsys.readouterr()
    assert train.main(args(data_root, out, tiny_clip_path, "OPTIM.LR", 0.01, "DATASET.NUM_SHOTS", 1)) == 2
    err = capsys.readouterr().err
    assert "OPTIM.LR: 0.002 there, 0.01 now" in err and "DATASET.NUM_SHOTS: 2 there, 1 now" in err
    assert "--overwrite" in err
    assert json.load(open(os.path.join(out, "results.json"))) == first  # untouched
    assert train.main(args(data_root, out, tiny_clip_path, "OPTIM.LR", 0.01, "--overwrite")) == 0
    stored = json.load(open(os.path.join(out, "run_config.json")))
    assert stored["OPTIM.LR"] == 0.01
    assert json.load(open(os.path.join(out, "results.json")))["config"]["OPTIM"]["LR"] == 0.01


def edit_record(out, drop=(), add=None):
    path = os.path.join(out, "run_config.json")
    stored = json.load(open(path))
    for key in drop:
        del stored[key]
    stored.update(add or {})
    with open(path, "w") as f:
        json.dump(stored, f)


def test_a_record_without_a_later_key_resumes_as_the_uninterrupted_run(data_root, tiny_clip_path, tmp_path,
                                                                         monkeypatch, capsys):
    import torch

    epochs = ("OPTIM.MAX_EPOCH", 3)
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    assert train.main(args(data_root, full, tiny_clip_path, *epochs)) == 0
    # The run records TaskRes's keys and the common ones, not the other methods' nor the ignored ones.
    for config in (json.load(open(os.path.join(full, "run_config.json"))),
                   flatten(json.load(open(os.path.join(full, "results.json")))["config"])):
        nodes = {k.rsplit(".", 1)[0] for k in config if k.startswith("TRAINER.")}
        assert nodes == {"TRAINER", "TRAINER.TaskRes"} and not any(k.startswith("MASK.") for k in config)
        assert "TRAINER.TaskRes.RESIDUAL_SCALE" in config and "TRAINER.TaskRes.N_CTX" not in config

    run_killed(args(data_root, part, tiny_clip_path, *epochs), 2, monkeypatch)
    # As an older release left it: before MLP_REDUCTION existed, with every method's keys and
    # with a key this release no longer has.
    edit_record(part, drop=["TRAINER.TaskRes.MLP_REDUCTION"],
                add={"TRAINER.COOP.N_CTX": 16, "TRAINER.TaskRes.N_CTX": 16, "TRAINER.TaskRes.OLD_KEY": 1})
    capsys.readouterr()
    assert train.main(args(data_root, part, tiny_clip_path, *epochs)) == 0
    printed = capsys.readouterr().out
    assert "will resume training" in printed
    note = next(ln for ln in printed.splitlines() if ln.startswith("Note:") and "no longer has" in ln)
    assert note.endswith(": TRAINER.TaskRes.OLD_KEY")
    a = torch.load(os.path.join(full, "prompt_learner", "model.pth.tar-3"), weights_only=True)
    b = torch.load(os.path.join(part, "prompt_learner", "model.pth.tar-3"), weights_only=True)
    assert torch.equal(a["state_dict"]["text_feature_residuals"], b["state_dict"]["text_feature_residuals"])
    assert results(full)["accuracy"] == results(part)["accuracy"]


def test_an_unrecorded_key_blocks_only_when_off_its_default_and_ignored_keys_never(data_root, tiny_clip_path,
                                                                                 tmp_path, capsys):
    out = str(tmp_path / "run")
    assert train.main(args(data_root, out, tiny_clip_path)) == 0
    first = results(out)
    edit_record(out, drop=["TRAINER.TaskRes.MLP_REDUCTION"])
    capsys.readouterr()
    assert train.main(args(data_root, out, tiny_clip_path, "TRAINER.TaskRes.MLP_REDUCTION", 8)) == 2
    assert "TRAINER.TaskRes.MLP_REDUCTION: 4 there (default), 8 now" in capsys.readouterr().err
    # TaskRes has CoOp's prompt keys only so that reference configs load.
    assert train.main(args(data_root, out, tiny_clip_path, "TRAINER.TaskRes.N_CTX", 4,
                           "TRAINER.TaskRes.CLASS_TOKEN_POSITION", "front")) == 0
    assert results(out)["accuracy"] == first["accuracy"]


def test_each_method_records_the_nodes_it_reads():
    from engine.record import recorded_config
    from engine.registry import TRAINER_REGISTRY

    def recorded(name):
        cfg = train.setup_cfg(train.parse_args(["--trainer", name]))
        return recorded_config(cfg, TRAINER_REGISTRY.get(name)), cfg

    ramt, cfg = recorded("CoOp_RAMT")
    every = flatten(config_dict(cfg))
    assert {"TRAINER.COOP.N_CTX", "MASK.INIT_MASKS", "MASK.THRESHOLD"} <= set(ramt)
    assert not {"MASK.GDR", "TRAINER.TaskRes.PREC", "TRAINER.MaskTuning.PREC"} & set(ramt)
    combo, _ = recorded("CoOpMaskTuning")
    assert {"TRAINER.COOP.N_CTX", "MASK.GDR", "TRAINER.MaskTuning.PREC", "TRAINER.CoOpMaskTuning.PROMPT_LR"} \
        <= set(combo)
    tip, _ = recorded("TipAdapter")
    assert "TRAINER.TIP.INIT_ALPHA" in tip and "TRAINER.TIP.EPOCH_SELECTION" not in tip  # Tip-Adapter-F's
    base, _ = recorded("TaskResEnhancedBase")
    assert "TRAINER.TaskRes.PREC" in base and "TRAINER.TaskRes.RESIDUAL_SCALE" not in base
    for name, trainer in TRAINER_REGISTRY.items():
        assert set(trainer.ignored_keys) <= set(every), name


def test_second_writer_is_refused_and_a_dead_holder_is_taken_over(data_root, tiny_clip_path, tmp_path, capsys):
    out = str(tmp_path / "locked")
    with run_lock(out):
        assert train.main(args(data_root, out, tiny_clip_path)) == 2
    err = capsys.readouterr().err
    assert "is being written by pid" in err and "another --output-dir" in err
    assert not os.path.exists(os.path.join(out, "results.json"))
    # A process that holds the lock and is killed leaves nothing to clean up.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, '.'); from engine.run_lock import run_lock\n"
        f"with run_lock({out!r}):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError):
        with run_lock(out):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert os.path.exists(os.path.join(out, LOCK_FILE))
    assert train.main(args(data_root, out, tiny_clip_path)) == 0


def test_interrupt_and_crash_are_the_last_words_of_the_log(data_root, tiny_clip_path, tmp_path, capsys,
                                                          monkeypatch):
    from engine.trainer import Trainer

    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "run_epoch", interrupt)
    out = str(tmp_path / "ctrl-c")
    assert train.main(args(data_root, out, tiny_clip_path)) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("Interrupted. Rerun the same command")
    assert last_log_line(out).startswith("Interrupted: rerun the same command to resume")

    def crash(self):
        raise RuntimeError("boom in epoch")

    monkeypatch.setattr(Trainer, "run_epoch", crash)
    out = str(tmp_path / "crash")
    with pytest.raises(RuntimeError):
        train.main(args(data_root, out, tiny_clip_path))
    log = open(os.path.join(out, "log.txt")).read()
    assert "Traceback" in log and last_log_line(out) == "RuntimeError: boom in epoch"


def test_best_val_resume_continues_from_the_last_epoch_and_equals_uninterrupted(data_root, tiny_clip_path,
                                                                                tmp_path, monkeypatch):
    import torch

    best = ("TEST.FINAL_MODEL", "best_val", "OPTIM.MAX_EPOCH", 6, "DATASET.NUM_SHOTS", 4)
    full = str(tmp_path / "full")
    assert train.main(args(data_root, full, tiny_clip_path, *best)) == 0

    part = str(tmp_path / "part")
    run_killed(args(data_root, part, tiny_clip_path, *best), 3, monkeypatch)
    # The best-model save must not redirect resume to an earlier epoch.
    assert open(os.path.join(part, "prompt_learner", "checkpoint")).read().strip() == "resume.pth.tar"
    assert train.main(args(data_root, part, tiny_clip_path, *best)) == 0
    for name in ("model-best.pth.tar", "model.pth.tar-6"):
        a = torch.load(os.path.join(full, "prompt_learner", name), weights_only=True)
        b = torch.load(os.path.join(part, "prompt_learner", name), weights_only=True)
        assert torch.equal(a["state_dict"]["text_feature_residuals"], b["state_dict"]["text_feature_residuals"])
        assert a["epoch"] == b["epoch"] and a["val_result"] == b["val_result"]
    assert json.load(open(os.path.join(full, "results.json")))["accuracy"] == \
        json.load(open(os.path.join(part, "results.json")))["accuracy"]


def test_enhanced_base_file_holds_the_deployed_projection(data_root, tiny_clip_path, tmp_path):
    import torch

    out = str(tmp_path / "eb")
    argv = args(data_root, out, tiny_clip_path, "TEST.FINAL_MODEL", "best_val", "OPTIM.MAX_EPOCH", 5,
                "DATASET.NUM_SHOTS", 4, "OPTIM.LR", 0.01)
    argv[argv.index("TaskRes")] = "TaskResEnhancedBase"
    assert train.main(argv) == 0
    best = torch.load(os.path.join(out, "text_projection", "model-best.pth.tar"), weights_only=True)
    strong = torch.load(os.path.join(out, "strong_base.pth.tar"), weights_only=True)
    assert torch.equal(best["state_dict"]["weight"], strong["state_dict"]["weight"])


def test_cached_views_ignore_the_global_python_rng(data_root, tmp_path):
    import random

    import torch

    from engine.config import get_cfg_default
    from engine.features import _SeededViews

    cfg = get_cfg_default()
    images = sorted(str(p) for p in (tmp_path.parent).rglob("*.jpg"))[:1] or None
    if images is None:
        images = sorted(os.path.join(r, f) for r, _, fs in os.walk(data_root) for f in fs if f.endswith(".jpg"))[:1]

    def coin(img):  # a transform that draws from Python's RNG, as Dassl's policies do
        return torch.tensor([random.random()])

    views = _SeededViews([(images[0], 0), (images[0], 1)], coin, seeded=True, root=data_root)
    random.seed(1)
    a = [views[0].item(), views[1].item()]
    random.seed(2)
    b = [views[0].item(), views[1].item()]
    assert a == b and a[0] != a[1]
    state = random.getstate()
    views[0]
    assert random.getstate() == state  # the caller's RNG is untouched
    del cfg
