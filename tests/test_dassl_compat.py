"""Dassl-style trainer files and the OpenAI `clip` module API on this project's engine.

tests/dassl_style/ holds files written the way Dassl-based CLIP repositories write theirs (a
CoOp-like prompt learner, CoOp's own trainer file renamed, a CoOp-like dataset); they import
only dassl, clip, torch and yacs and run through train.main like any trainer here, on the tiny
CLIP and synthetic EuroSAT.
"""
import importlib.util
import io
import json
import math
import os
import pickle
import random
import re
import subprocess
import sys
import urllib.error

import pytest
import torch
from torch import nn

import parse_test_res
import train
from runs import results, run, run_direct, run_killed
from synthetic.layouts import write_eurosat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STYLE_DIR = os.path.join(REPO, "tests", "dassl_style")
RECIPE = os.path.join(STYLE_DIR, "prompt_style_sgd.yaml")
EPOCHS, SHOTS, BATCH = 5, 4, 8
# Seed 2 is shorter: it is the uninterrupted reference of the resume test and parse_test_res's
# second seed (CPU time is what these tests cost).
EPOCHS_2, KILL_AFTER = 3, 1


# ---------------------------------------------------------------------------------------------
# Fixtures


def _import_style(name):
    """Import tests/dassl_style/<name>.py as a top-level module (its `extend_cfg` is found
    through sys.modules, as for a file imported from trainers/)."""
    module_name = f"dassl_style_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, os.path.join(STYLE_DIR, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    return sys.modules[module_name]


@pytest.fixture(scope="module", autouse=True)
def _unimport_dassl_afterwards():
    """Other test modules check that this project's own code never imports dassl; leave
    sys.modules as this module found it."""
    before = {name for name in sys.modules if name == "dassl" or name.startswith("dassl.")}
    yield
    for name in [n for n in sys.modules if (n == "dassl" or n.startswith("dassl.")) and n not in before]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def style():
    """The style files, registered for this module only: their names leave the registries
    afterwards, so later test modules see the registries (and configs) as they were."""
    from engine.registry import DATASET_REGISTRY, TRAINER_REGISTRY

    before = {id(r): set(r.names()) for r in (TRAINER_REGISTRY, DATASET_REGISTRY)}
    modules = [_import_style("prompt_style"), _import_style("eurosat_style"), _import_style("coop_style")]
    yield modules[0]
    for registry in (TRAINER_REGISTRY, DATASET_REGISTRY):
        for name in set(registry.names()) - before[id(registry)]:
            registry._items.pop(name)
    for module in modules:
        sys.modules.pop(module.__name__, None)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dassl-data")
    write_eurosat(str(root), per_class=20)
    return str(root)


def style_args(root, out, clip_path, *opts, seed=1, epochs=EPOCHS, shots=SHOTS):
    return ["--root", root, "--seed", seed, "--trainer", "PromptStyle",
            "--dataset-config-file", "configs/datasets/eurosat.yaml", "--config-file", RECIPE,
            "--output-dir", out, "DATASET.NUM_SHOTS", shots, "MODEL.BACKBONE.NAME", clip_path,
            "OPTIM.MAX_EPOCH", epochs, "DATALOADER.TRAIN_X.BATCH_SIZE", BATCH,
            "TRAINER.PROMPTSTYLE.PREC", "fp32", "TRAIN.TENSORBOARD", False, *opts]


def read_logs(out):
    return "".join(open(os.path.join(out, f)).read() for f in sorted(os.listdir(out)) if f.startswith("log.txt"))


@pytest.fixture(scope="module")
def runs(style, data_root, tiny_clip_path, tmp_path_factory):
    """Two seeds of the style trainer under <base>/seed1, <base>/seed2; the learning rate in
    force at every step of seed 1 is recorded (before the file's own update_lr call)."""
    base = str(tmp_path_factory.mktemp("prompt_style"))
    lrs = {}
    original = style.PromptStyle.forward_backward

    def recording(self, batch):
        lrs.setdefault(self.epoch + 1, set()).add(self.get_current_lr())
        return original(self, batch)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(style.PromptStyle, "forward_backward", recording)
        run(style_args(data_root, os.path.join(base, "seed1"), tiny_clip_path, seed=1))
    run(style_args(data_root, os.path.join(base, "seed2"), tiny_clip_path, seed=2, epochs=EPOCHS_2))
    return {"base": base, "seed1": os.path.join(base, "seed1"), "seed2": os.path.join(base, "seed2"), "lrs": lrs}


@pytest.fixture(scope="module")
def untrained_acc(style, data_root, tiny_clip_path, tmp_path_factory):
    """The style trainer's random prompt, evaluated without training (no --model-dir)."""
    out = str(tmp_path_factory.mktemp("untrained"))
    run(style_args(data_root, out, tiny_clip_path) + ["--eval-only"])
    assert "Note that load_model() is skipped as no pretrained model is given" in read_logs(out)
    return results(out)["accuracy"]


# ---------------------------------------------------------------------------------------------
# A Dassl-style trainer file, end to end


def test_style_trainer_learns(runs, untrained_acc):
    for seed in ("seed1", "seed2"):
        assert results(runs[seed])["accuracy"] >= 4 * 10.0, seed  # chance is 10% on 10 classes
    assert results(runs["seed1"])["accuracy"] > untrained_acc


def test_lr_per_epoch_follows_dassl(runs):
    """SGD, cosine, one constant warm-up epoch: epoch 1 at WARMUP_CONS_LR, epoch k >= 2 at
    LR / 2 * (1 + cos(pi * (k - 2) / MAX_EPOCH)) (the cosine counts from 0 after the warm-up)."""
    lr, cons = 0.002, 1e-5
    expected = {1: cons, **{k: lr / 2 * (1 + math.cos(math.pi * (k - 2) / EPOCHS)) for k in range(2, EPOCHS + 1)}}
    assert sorted(runs["lrs"]) == list(range(1, EPOCHS + 1))
    for epoch, seen in runs["lrs"].items():
        assert len(seen) == 1, (epoch, seen)  # constant within an epoch
        assert next(iter(seen)) == pytest.approx(expected[epoch], rel=1e-12, abs=0), epoch


def test_outputs_have_dassl_layout_and_plain_checkpoints(runs):
    out = runs["seed1"]
    folder = os.path.join(out, "prompt_learner")
    assert open(os.path.join(folder, "checkpoint")).read().strip() == f"model.pth.tar-{EPOCHS}"
    assert sorted(os.listdir(folder)) == ["checkpoint", f"model.pth.tar-{EPOCHS}"]  # resume snapshot removed
    state = torch.load(os.path.join(folder, f"model.pth.tar-{EPOCHS}"), weights_only=True)
    assert {"ctx", "token_prefix", "token_suffix"} <= set(state["state_dict"])
    assert state["epoch"] == EPOCHS and state["scheduler"] == {"last_epoch": EPOCHS}
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == 0.002
    log = read_logs(out)
    for line in ("Loading trainer: PromptStyle", 'Initial context: "X X X X"', "No checkpoint found, train from scratch",
                 f"epoch [{EPOCHS}/{EPOCHS}] batch [5/5]", "Finish training", "Deploy the last-epoch model"):
        assert line in log, line
    acc = results(out)["accuracy"]
    tail = log[log.index("Finish training"):]
    assert f"* accuracy: {acc:.1f}%" in tail
    assert results(out)["trainer"] == "PromptStyle" and results(out)["epoch"] == EPOCHS


def test_eval_only_reproduces_logged_accuracy(runs, style, data_root, tiny_clip_path, tmp_path):
    out = str(tmp_path / "eval")
    run(style_args(data_root, out, tiny_clip_path) + ["--eval-only", "--model-dir", runs["seed1"],
                                                      "--load-epoch", EPOCHS])
    assert results(out)["accuracy"] == results(runs["seed1"])["accuracy"]
    assert results(out)["correct"] == results(runs["seed1"])["correct"]
    path = os.path.join(runs["seed1"], "prompt_learner", f"model.pth.tar-{EPOCHS}")
    assert f'Loading weights to prompt_learner from "{path}" (epoch = {EPOCHS})' in read_logs(out)


def test_resume_after_kill_equals_uninterrupted(runs, style, data_root, tiny_clip_path, tmp_path, monkeypatch):
    from dassl.engine import SimpleTrainer

    out = str(tmp_path / "seed2")
    run_killed(style_args(data_root, out, tiny_clip_path, seed=2, epochs=EPOCHS_2), KILL_AFTER, monkeypatch,
               SimpleTrainer)
    assert open(os.path.join(out, "prompt_learner", "checkpoint")).read().strip() == "resume.pth.tar"
    run(style_args(data_root, out, tiny_clip_path, seed=2, epochs=EPOCHS_2))
    name = f"model.pth.tar-{EPOCHS_2}"
    a = torch.load(os.path.join(runs["seed2"], "prompt_learner", name), weights_only=True)
    b = torch.load(os.path.join(out, "prompt_learner", name), weights_only=True)
    assert torch.equal(a["state_dict"]["ctx"], b["state_dict"]["ctx"])
    assert results(out)["accuracy"] == results(runs["seed2"])["accuracy"]
    log = read_logs(out)
    assert f"Previous epoch: {KILL_AFTER}" in log and "Loaded scheduler" in log


def test_parse_test_res_averages_the_seeds(runs):
    logged = []
    for seed in ("seed1", "seed2"):
        log = read_logs(runs[seed])
        logged.append(float(re.findall(r"\* accuracy: ([\d.]+)%", log[log.index("Finish training"):])[-1]))
    out = io.StringIO()
    assert parse_test_res.main([runs["base"], "--from-log"], out=out, err=io.StringIO()) == 0
    mean, std = sum(logged) / 2, abs(logged[0] - logged[1]) / 2
    assert f"* accuracy: {mean:.2f}% +- {std:.2f}%" in out.getvalue()


def test_extend_cfg_of_the_file_builds_its_config_node(style):
    cfg = train.setup_cfg(train.parse_args(["--trainer", "PromptStyle", "TRAINER.PROMPTSTYLE.N_CTX", "8"]))
    assert cfg.TRAINER.PROMPTSTYLE.N_CTX == 8 and cfg.TRAINER.PROMPTSTYLE.PREC == "fp16"
    assert cfg.TRAINER.PROMPTSTYLE.CTX_INIT == ""


@pytest.mark.parametrize("prec", ["fp16", "amp"])
def test_precision_branches_step_on_cpu(prec, style, data_root, tiny_clip_path, tmp_path):
    """PREC fp16 keeps OpenAI's half weights (the context too) and amp the float ones; both take
    a step on the CPU."""
    # No warm-up and a large rate, so that one step visibly moves fp16 values too.
    args = train.parse_args([str(a) for a in style_args(data_root, str(tmp_path), tiny_clip_path,
                                                        "TRAINER.PROMPTSTYLE.PREC", prec, "OPTIM.WARMUP_EPOCH", -1,
                                                        "OPTIM.LR", 0.5)])
    cfg = train.setup_cfg(args)

    class WithOwnInit(style.PromptStyle):  # Dassl files that override __init__ take cfg only
        def __init__(self, cfg):
            super().__init__(cfg)
            self.own_init_ran = True

    trainer = WithOwnInit(cfg, models=None)  # as train.py builds trainers
    assert trainer.own_init_ran
    trainer.epoch, trainer.batch_idx, trainer.num_batches = 0, 0, 2
    ctx = trainer.model.prompt_learner.ctx
    assert ctx.dtype == (torch.float16 if prec == "fp16" else torch.float32)
    before = ctx.detach().clone()
    trainer.set_model_mode("train")
    summary = trainer.forward_backward(next(iter(trainer.train_loader_x)))
    assert math.isfinite(summary["loss"]) and 0 <= summary["acc"] <= 100
    assert ctx.grad is not None and torch.isfinite(ctx.grad).all()
    assert not torch.equal(before, ctx.detach())


# ---------------------------------------------------------------------------------------------
# CoOp's own file beside this project's CoOp; CUDA calls in copied files


def test_copied_extend_cfg_merges_into_the_nodes_of_other_trainers(style):
    """CoOp's extend_cfg re-creates TRAINER.COOP / COCOOP with the reference keys; run after this
    project's trainers (or before), the nodes keep their other keys and take the file's values."""
    from engine.config import get_cfg_default
    from trainers.cocoop import CoCoOp
    from trainers.coop import CoOp

    coop_style = sys.modules["dassl_style_coop_style"]
    for order in ([CoOp, CoCoOp, coop_style.CoOpReference], [coop_style.CoOpReference, CoOp, CoCoOp]):
        cfg = get_cfg_default()
        for trainer in order:
            trainer.extend_cfg(cfg)
        assert {"N_CTX", "CSC", "CTX_INIT", "PREC", "CLASS_TOKEN_POSITION", "TEXT_CHUNK"} <= set(cfg.TRAINER.COOP)
        assert {"N_CTX", "CTX_INIT", "PREC", "TEXT_CHUNK"} <= set(cfg.TRAINER.COCOOP)
        assert type(cfg.TRAINER) is type(cfg) and cfg.DASSL.MAP_CUDA is False
    # The whole tree, as train.py builds it: this project's CoOp and CoCoOp check their keys.
    cfg = train.setup_cfg(train.parse_args(["--trainer", "CoOp", "TRAINER.COOP.TEXT_CHUNK", "3"]))
    CoOp.check_cfg(None, cfg)
    CoCoOp.check_cfg(None, cfg)
    assert cfg.TRAINER.COOP.TEXT_CHUNK == 3


def test_copied_extend_cfg_that_removes_keys_is_named(style, tmp_path):
    from dassl.config import merging_nodes
    from engine.config import get_cfg_default
    from engine.errors import ConfigError
    from trainers.coop import CoOp

    cfg = get_cfg_default()
    CoOp.extend_cfg(cfg)
    with pytest.raises(ConfigError, match=r"kgcoop\.py removed config keys .*TRAINER\.COOP\.TEXT_CHUNK"):
        with merging_nodes(cfg, "trainers/kgcoop.py"):
            del cfg.TRAINER.COOP["TEXT_CHUNK"]



def test_coop_file_runs_beside_this_projects_coop_with_the_same_results(style, data_root, tiny_clip_path,
                                                                        tmp_path, monkeypatch):
    """CoOp's trainer file through dassl/ and this project's CoOp, in one process, on the same data,
    recipe, seed and PREC fp32: the same initial context and the same accuracy, seed by seed."""
    from trainers.coop import CoOp

    coop_style = sys.modules["dassl_style_coop_style"]
    contexts = {}

    def recording(cls, learner):
        original = cls.build_model

        def build_model(self):
            original(self)
            contexts[(cls.__name__, self.cfg.SEED)] = learner(self).ctx.detach().float().cpu().clone()
        monkeypatch.setattr(cls, "build_model", build_model)

    recording(CoOp, lambda t: t.prompt_learner)
    recording(coop_style.CoOpReference, lambda t: t.model.prompt_learner)
    for seed in (1, 2):
        acc = {}
        for name in ("CoOpReference", "CoOp"):
            out = str(tmp_path / name / f"seed{seed}")
            args = style_args(data_root, out, tiny_clip_path, "TRAINER.COOP.N_CTX", 4, "TRAINER.COOP.PREC", "fp32",
                              seed=seed, epochs=2)
            i = args.index("TRAINER.PROMPTSTYLE.PREC")
            args = args[:i] + args[i + 2:]
            args[args.index("PromptStyle")] = name
            run(args)
            acc[name] = results(out)["accuracy"]
        assert torch.equal(contexts[("CoOpReference", seed)], contexts[("CoOp", seed)]), seed
        assert acc["CoOpReference"] == acc["CoOp"], (seed, acc)
    assert not torch.equal(contexts[("CoOp", 1)], contexts[("CoOp", 2)])


def test_cuda_calls_of_a_copied_file_map_to_the_run_device_on_request(style, data_root, tiny_clip_path, tmp_path):
    """A file that hard-codes CUDA (as CLIP-Adapter's does) stops with an error naming
    DASSL.MAP_CUDA on a run without CUDA, and runs with it; the mapping ends with the run."""
    from dassl.engine import TRAINER_REGISTRY
    from engine.errors import UserError

    coop_style = sys.modules["dassl_style_coop_style"]

    @TRAINER_REGISTRY.register()
    class HardCodedCuda(coop_style.CoOpReference):
        def build_model(self):
            super().build_model()
            learner = self.model.prompt_learner
            learner.tokenized_prompts = learner.tokenized_prompts.to("cuda")
            self.model.tokenized_prompts = learner.tokenized_prompts
            self.model.cuda()

        def parse_batch_train(self, batch):
            return batch["img"].cuda(), batch["label"].to(device="cuda:0")

    def args(out, *opts):
        a = style_args(data_root, str(tmp_path / out), tiny_clip_path, "TRAINER.COOP.N_CTX", 4,
                       "TRAINER.COOP.PREC", "fp32", "USE_CUDA", False, *opts, epochs=1)
        i = a.index("TRAINER.PROMPTSTYLE.PREC")
        a = a[:i] + a[i + 2:]
        a[a.index("PromptStyle")] = "HardCodedCuda"
        return a

    originals = (torch.Tensor.cuda, torch.Tensor.to, nn.Module.cuda, nn.Module.to)
    with pytest.raises(UserError, match=r"test_dassl_compat\.py:\d+ moves data to CUDA itself.*DASSL\.MAP_CUDA True"):
        run_direct(args("off"))
    run(args("on", "DASSL.MAP_CUDA", True))
    assert results(str(tmp_path / "on"))["accuracy"] >= 0
    assert (torch.Tensor.cuda, torch.Tensor.to, nn.Module.cuda, nn.Module.to) == originals


def test_cuda_mapping_is_scoped():
    from dassl.engine.devices import mapped

    cpu = torch.device("cpu")
    with mapped(cpu):
        with mapped(cpu):  # test() inside train()
            assert torch.ones(1).to("cuda").device == cpu
        assert torch.ones(1).cuda().device == cpu and nn.Linear(1, 1).cuda().weight.device == cpu
        assert torch.ones(1).to(torch.float16).dtype == torch.float16
    assert "cuda" not in torch.Tensor.__dict__ and "to" not in torch.Tensor.__dict__
    assert nn.Module.cuda.__qualname__ == "Module.cuda"


# ---------------------------------------------------------------------------------------------
# Optimizer and LR schedule


def _optim_cfg(**kw):
    from dassl.config import get_cfg_default

    o = get_cfg_default().OPTIM
    o.NAME, o.LR, o.LR_SCHEDULER, o.MAX_EPOCH = "sgd", 0.002, "cosine", 50
    o.WARMUP_EPOCH, o.WARMUP_TYPE, o.WARMUP_CONS_LR = 1, "constant", 1e-5
    for k, v in kw.items():
        setattr(o, k, v)
    return o


def _lrs(o, epochs):
    from dassl.optim import build_lr_scheduler, build_optimizer

    optim = build_optimizer(nn.Linear(2, 2), o)
    sched = build_lr_scheduler(optim, o)
    out = []
    for _ in range(epochs):
        out.append(optim.param_groups[0]["lr"])
        sched.step()
    return out


def test_lr_schedule_closed_form_coop_recipe():
    lrs = _lrs(_optim_cfg(), 50)
    assert lrs[0] == 1e-5
    for k in range(2, 51):
        assert lrs[k - 1] == pytest.approx(0.001 * (1 + math.cos(math.pi * (k - 2) / 50)), rel=1e-12)


class _Warmup(torch.optim.lr_scheduler.LRScheduler):
    """Dassl's warm-up wrapper, rebuilt from its documented behaviour on torch's schedulers:
    constant/linear rates for WARMUP_EPOCH steps, then the wrapped scheduler takes over."""

    def __init__(self, optimizer, successor, warmup, kind, cons_lr, min_lr):
        self.successor, self.warmup, self.kind, self.cons_lr, self.min_lr = successor, warmup, kind, cons_lr, min_lr
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch >= self.warmup:
            return self.successor.get_last_lr()
        if self.kind == "constant":
            return [self.cons_lr for _ in self.base_lrs]
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup for lr in self.base_lrs]

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)


def _torch_chain_lrs(o, epochs):
    from torch.optim import lr_scheduler as S

    optim = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=o.LR)
    if o.LR_SCHEDULER == "cosine":
        sched = S.CosineAnnealingLR(optim, float(o.MAX_EPOCH))
    elif o.LR_SCHEDULER == "single_step":
        sched = S.StepLR(optim, o.STEPSIZE[-1], o.GAMMA)
    else:
        sched = S.MultiStepLR(optim, list(o.STEPSIZE), o.GAMMA)
    if o.WARMUP_EPOCH > 0:
        if not o.WARMUP_RECOUNT:
            sched.last_epoch = o.WARMUP_EPOCH
        sched = _Warmup(optim, sched, o.WARMUP_EPOCH, o.WARMUP_TYPE, o.WARMUP_CONS_LR, o.WARMUP_MIN_LR)
    out = []
    for _ in range(epochs):
        out.append(optim.param_groups[0]["lr"])
        sched.step()
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("scheduler,stepsize", [("cosine", (-1,)), ("single_step", (4,)), ("multi_step", (2, 5, 9))])
@pytest.mark.parametrize("warmup,kind,recount", [(-1, "linear", True), (1, "constant", True), (3, "linear", True),
                                                 (3, "constant", False), (2, "linear", False)])
def test_lr_schedule_equals_torch_schedulers(scheduler, stepsize, warmup, kind, recount):
    o = _optim_cfg(LR_SCHEDULER=scheduler, STEPSIZE=stepsize, GAMMA=0.5, MAX_EPOCH=12, WARMUP_EPOCH=warmup,
                   WARMUP_TYPE=kind, WARMUP_RECOUNT=recount, WARMUP_MIN_LR=1e-4)
    expected = _torch_chain_lrs(o, 12)
    assert _lrs(o, 12) == pytest.approx(expected, rel=1e-12)
    from engine.schedule import lr_at_epoch  # the engine's closed form, used by every native trainer
    assert [lr_at_epoch(o, e) for e in range(12)] == pytest.approx(expected, rel=1e-12)


def test_scheduler_state_is_plain_and_resumes(tmp_path):
    from dassl.optim import build_lr_scheduler, build_optimizer

    o = _optim_cfg(MAX_EPOCH=10)
    optim = build_optimizer(nn.Linear(2, 2), o)
    sched = build_lr_scheduler(optim, o)
    for _ in range(4):
        sched.step()
    torch.save({"scheduler": sched.state_dict(), "optimizer": optim.state_dict()}, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    optim2 = build_optimizer(nn.Linear(2, 2), o)
    sched2 = build_lr_scheduler(optim2, o)
    optim2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr() == [optim.param_groups[0]["lr"]]


def test_staged_lr_param_groups():
    from dassl.optim import build_lr_scheduler, build_optimizer

    model = nn.Sequential()
    model.add_module("backbone", nn.Linear(2, 2))
    model.add_module("head", nn.Linear(2, 2))
    o = _optim_cfg(STAGED_LR=True, NEW_LAYERS=("head",), BASE_LR_MULT=0.1, WARMUP_EPOCH=-1)
    optim = build_optimizer(model, o)
    build_lr_scheduler(optim, o)
    assert [g["lr"] for g in optim.param_groups] == pytest.approx([0.0002, 0.002])


# ---------------------------------------------------------------------------------------------
# Datasets: Datum pickles and few-shot selections


def test_fewshot_selection_equals_this_projects(style, tmp_path):
    """A CoOp-style dataset file and this project's EuroSAT select the same files for a seed; the
    pickle the style file writes (dassl Datums) is what this project's dataset code reads."""
    import datasets
    from dassl.config import get_cfg_default
    from dassl.data.datasets import Datum as DasslDatum
    from datasets.base import Datum

    root = str(tmp_path)
    write_eurosat(root, per_class=20)
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NUM_SHOTS, cfg.SEED, cfg.VERBOSE = root, 4, 3, False

    def build(name, seed):
        cfg.DATASET.NAME = name
        random.seed(seed)
        return datasets.build_dataset(cfg)

    def files(ds):
        return [[(d.impath, d.label, d.classname) for d in split] for split in (ds.train_x, ds.val, ds.test)]

    ours = build("EuroSAT", 3)
    theirs = build("EuroSATDasslStyle", 3)
    assert files(theirs) == files(ours)
    assert theirs.classnames == ours.classnames and theirs.lab2cname == ours.lab2cname
    assert len(ours.train_x) == 40 and len(ours.val) == 40

    fewshot = os.path.join(root, "eurosat", "split_fewshot")
    with open(os.path.join(fewshot, "shot_4-seed_3.pkl"), "rb") as f:
        raw = f.read()
    assert b"dassl.data.datasets.base_dataset" in raw and b"_impath" in raw  # Dassl's pickle format
    data = pickle.loads(raw)
    assert all(type(d) is DasslDatum and isinstance(d, Datum) for d in data["train"] + data["val"])
    os.remove(os.path.join(fewshot, "shot_4-seed_3.json"))
    again = build("EuroSAT", 99)  # no JSON left: the pickle is read, the seed plays no part
    assert files(again) == files(ours)


def test_pickles_from_genuine_dassl_unpickle_to_our_datum(tmp_path):
    from dassl.data.datasets import Datum as DasslDatum
    from datasets.base import Datum

    path = str(tmp_path / "shot_1-seed_1.pkl")
    writer = (
        "import pickle, sys, types\n"
        "for name in ('dassl', 'dassl.data', 'dassl.data.datasets', 'dassl.data.datasets.base_dataset'):\n"
        "    sys.modules[name] = types.ModuleType(name)\n"
        "class Datum:\n"
        "    def __init__(self, impath='', label=0, domain=0, classname=''):\n"
        "        self._impath, self._label, self._domain, self._classname = impath, label, domain, classname\n"
        "Datum.__module__ = 'dassl.data.datasets.base_dataset'\n"
        "sys.modules['dassl.data.datasets.base_dataset'].Datum = Datum\n"
        "with open(sys.argv[1], 'wb') as f:\n"
        "    pickle.dump({'train': [Datum('/data/eurosat/2750/Forest/Forest_1.jpg', 1, 0, 'Forest')], 'val': []},\n"
        "                f, protocol=pickle.HIGHEST_PROTOCOL)\n"
    )
    subprocess.run([sys.executable, "-c", writer, path], check=True, cwd=str(tmp_path))
    with open(path, "rb") as f:
        data = pickle.load(f)
    (d,) = data["train"]
    assert type(d) is DasslDatum and isinstance(d, Datum)
    assert (d.impath, d.label, d.domain, d.classname) == ("/data/eurosat/2750/Forest/Forest_1.jpg", 1, 0, "Forest")
    assert d == Datum(impath=d.impath, label=1, classname="Forest") and hash(d) == hash(Datum(d.impath, 1, 0, "Forest"))
    assert pickle.loads(pickle.dumps(d)) == d


def test_dataset_helpers_take_dassl_arguments():
    from dassl.data.datasets import DatasetBase, Datum

    items = [Datum(impath=f"/x/{i}.jpg", label=i % 3, classname=f"c{i % 3}") for i in range(9)]
    ds = DatasetBase(train_x=items, val=items[:3], test=items[3:])
    assert ds.num_classes == 3 and ds.classnames == ["c0", "c1", "c2"] and ds.train_u is None
    random.seed(0)
    few = ds.generate_fewshot_dataset(items, num_shots=2)
    assert len(few) == 6 and all(type(d) is Datum for d in few)
    base, new = DatasetBase.subsample_classes(items, items, subsample="base")[:2]
    assert {d.label for d in base} == {0, 1} and all(type(d) is Datum for d in base)
    assert DatasetBase.subsample_classes(items, subsample="all") == (items,)


# ---------------------------------------------------------------------------------------------
# Checkpoint helpers


def test_load_checkpoint_reads_dassl_pickled_schedulers(tmp_path):
    """Dassl's checkpoints pickle its LR scheduler (with the torch scheduler and optimizer
    objects in it); the tensors still load, no pickled code runs."""
    from dassl.utils import load_checkpoint, load_pretrained_weights

    layer = nn.Linear(3, 2)
    optim = torch.optim.SGD(layer.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, 10)
    state = {"state_dict": {"module.weight": layer.weight.detach().clone(), "module.bias": layer.bias.detach().clone()},
             "epoch": 3, "optimizer": optim.state_dict(), "scheduler": {"successor": sched, "warmup_epoch": 1}}
    path = tmp_path / "model.pth.tar-3"
    torch.save(state, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    loaded = load_checkpoint(str(path))
    assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["module.weight"], layer.weight)
    assert loaded["scheduler"] is None and loaded["skipped"] == ["scheduler"]  # read, never unpickled
    fresh = nn.Linear(3, 2)
    load_pretrained_weights(fresh, str(path))
    assert torch.equal(fresh.weight, layer.weight)


def test_utils_meters_and_accuracy():
    from dassl.metrics import compute_accuracy
    from dassl.utils import AverageMeter, MetricMeter, count_num_param

    m = MetricMeter()
    m.update({"loss": torch.tensor(2.0), "acc": 50.0})
    m.update({"loss": 1.0, "acc": 100.0})
    assert str(m) == "loss 1.0000 (1.5000) acc 100.0000 (75.0000)"
    a = AverageMeter(ema=True)
    a.update(1.0)
    assert a.avg == pytest.approx(0.1)
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    top1, top2 = compute_accuracy(logits, torch.tensor([1, 0, 0, 1]), topk=(1, 2))
    assert top1.item() == 50.0 and top2.item() == 75.0
    assert count_num_param(nn.Linear(3, 2)) == 8


# ---------------------------------------------------------------------------------------------
# The OpenAI clip module API


@pytest.fixture(scope="module")
def openai_sd(tiny_clip_path):
    return torch.load(tiny_clip_path, map_location="cpu", weights_only=True)


def test_build_model_has_openai_layout_and_precision(openai_sd):
    from clip import clip

    model = clip.build_model(openai_sd)
    meta = {"input_resolution", "context_length", "vocab_size"}
    state = model.state_dict()
    assert set(state) == set(openai_sd) - meta
    assert {k: v.dtype for k, v in state.items()} == {k: openai_sd[k].dtype for k in state}  # OpenAI's fp16 mix
    assert model.dtype == torch.float16 and not model.training
    for name in ("visual", "transformer", "token_embedding", "positional_embedding", "ln_final", "text_projection",
                 "logit_scale"):
        assert hasattr(model, name), name
    assert model.visual.input_resolution == 224 and isinstance(model.transformer.resblocks, nn.Sequential)
    again = clip.build_model(model.state_dict())
    assert all(torch.equal(again.state_dict()[k], v) for k, v in state.items())


def test_sequence_first_transformer_with_mask_inside(openai_sd, tiny_clip_path, capsys):
    """What CoOp-style text encoders do: [N, L, W] -> permute to [L, N, W] -> model.transformer ->
    permute back. It equals this project's open_clip text path, and is causal."""
    import clip as project_clip
    from clip import clip

    model = clip.build_model(openai_sd).float()
    reference = project_clip.load(tiny_clip_path, precision="fp32")
    tokens = clip.tokenize(["a centered satellite photo of Forest.", "River", "X X X X Sea or Lake."])
    with torch.no_grad():
        x = model.token_embedding(tokens) + model.positional_embedding
        y = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        feats = model.ln_final(y)[torch.arange(3), tokens.argmax(-1)] @ model.text_projection
        torch.testing.assert_close(feats, reference.encode_text(tokens), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.encode_text(tokens), reference.encode_text(tokens), rtol=1e-4, atol=1e-5)
        images = torch.randn(2, 3, 224, 224)
        torch.testing.assert_close(model.encode_image(images), reference.encode_image(images), rtol=1e-4, atol=1e-5)
        changed = x.clone()
        changed[:, 5:] += 1.0
        y2 = model.transformer(changed.permute(1, 0, 2)).permute(1, 0, 2)
    assert torch.allclose(y2[:, :5], y[:, :5], atol=1e-5) and not torch.allclose(y2[:, 5:], y[:, 5:])


def test_models_and_download_resolve_files_and_the_jit_fallback(openai_sd, tiny_clip_path, tmp_path):
    from clip import clip
    from synthetic.tiny_clip import save_openai_checkpoint

    assert clip._MODELS[tiny_clip_path] == os.path.abspath(tiny_clip_path)
    assert clip._download(clip._MODELS[tiny_clip_path]) == os.path.abspath(tiny_clip_path)
    with pytest.raises(RuntimeError):  # a plain state-dict file: files fall back to torch.load
        torch.jit.load(tiny_clip_path, map_location="cpu")
    archive = save_openai_checkpoint(openai_sd, str(tmp_path / "tiny-jit.pt"), torchscript=True)
    jit_sd = torch.jit.load(clip._download(clip._MODELS[archive]), map_location="cpu").state_dict()
    a, b = clip.build_model(jit_sd).state_dict(), clip.build_model(openai_sd).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
    model, preprocess = clip.load(tiny_clip_path, device="cpu")
    assert model.dtype == torch.float32 and preprocess.transforms[1].size == (224, 224)


def test_models_openai_names_and_errors(tmp_path, monkeypatch):
    from clip import clip
    from engine.errors import UserError

    assert "ViT-B/16" in clip._MODELS and "ViT-B/16" in clip.available_models()
    url = clip._MODELS["RN50"]
    assert url.endswith("/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(UserError, match="RN50.pt"):
        clip._download(url, root=str(tmp_path))
    assert "RN5O" not in clip._MODELS
    with pytest.raises(KeyError, match="Unknown CLIP backbone 'RN5O'"):
        clip._MODELS["RN5O"]
    assert clip._MODELS["ViT-B-32:laion2b_s34b_b79k"] == "open_clip:ViT-B-32:laion2b_s34b_b79k"


def test_open_clip_pair_through_the_openai_path(tmp_path, capsys):
    """An open_clip model:pretrained backbone (here a tiny GELU config with a local weights file)
    goes through _MODELS -> _download -> torch.load -> build_model and keeps its activation."""
    import open_clip

    import clip as project_clip
    from clip import clip

    arch = "dassl-compat-tiny-gelu"
    config = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}
    (tmp_path / f"{arch}.json").write_text(json.dumps(config))
    open_clip.add_model_config(str(tmp_path / f"{arch}.json"))
    weights = tmp_path / "tiny-gelu.pt"
    torch.save(open_clip.create_model(arch).state_dict(), weights)
    name = f"{arch}:{weights}"

    path = clip._download(clip._MODELS[name], root=str(tmp_path / "cache"))
    assert clip._download(clip._MODELS[name], root=str(tmp_path / "cache")) == path  # converted once
    with pytest.raises(RuntimeError):
        torch.jit.load(path, map_location="cpu")
    model = clip.build_model(torch.load(path, map_location="cpu"))
    assert model.dtype == torch.float16
    assert isinstance(model.transformer.resblocks[0].mlp.gelu, nn.GELU)
    model.float()
    reference = project_clip.load(name, precision="fp32")
    # build_model stores weights in fp16 as OpenAI's does, whatever precision the file had.
    open_clip.model.convert_weights_to_lp(reference)
    reference.float()
    tokens = clip.tokenize(["a photo of a cat.", "dog"])
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens), reference.encode_text(tokens), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.encode_image(images), reference.encode_image(images), rtol=1e-4, atol=1e-5)


def test_openai_tokenizer_names():
    from clip import clip
    from clip.simple_tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    assert len(tok.encoder) == 49408
    assert tok.encoder["<|startoftext|>"] == 49406 and tok.encoder["<|endoftext|>"] == 49407
    ids = tok.encode("A photo of a Forest.")
    assert clip.tokenize("A photo of a Forest.")[0, :len(ids) + 2].tolist() == [49406] + ids + [49407]
    assert tok.encode("X") == [343] and tok.decode(ids) == "a photo of a forest . "
    with pytest.raises(RuntimeError):
        clip.tokenize("word " * 100)


def test_build_model_refuses_patched_model_requests(openai_sd):
    from clip import clip
    from engine.errors import UserError

    plain = {"trainer": "CoOp", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0}
    assert clip.build_model(openai_sd, plain).dtype == torch.float16
    with pytest.raises(UserError, match="MaPLe"):
        clip.build_model(openai_sd, dict(plain, trainer="MaPLe", maple_length=2))


# ---------------------------------------------------------------------------------------------
# Package surface and the opt-out for a genuine Dassl


def test_dassl_names_used_by_trainer_files():
    import dassl.config
    import dassl.data
    import dassl.data.datasets
    import dassl.engine
    import dassl.evaluation
    import dassl.metrics
    import dassl.optim
    import dassl.utils
    from engine.registry import DATASET_REGISTRY, TRAINER_REGISTRY

    assert dassl.engine.TRAINER_REGISTRY is TRAINER_REGISTRY and dassl.data.DATASET_REGISTRY is DATASET_REGISTRY
    for module, names in [
        (dassl.engine, "TRAINER_REGISTRY TrainerX SimpleTrainer TrainerBase build_trainer"),
        (dassl.config, "get_cfg_default clean_cfg"),
        (dassl.optim, "build_optimizer build_lr_scheduler"),
        (dassl.utils, "load_checkpoint load_pretrained_weights save_checkpoint count_num_param set_random_seed "
                      "setup_logger collect_env_info mkdir_if_missing listdir_nohidden read_json write_json "
                      "AverageMeter MetricMeter Registry resume_from_checkpoint tolist_if_not"),
        (dassl.metrics, "compute_accuracy"),
        (dassl.data, "DataManager DatasetWrapper DATASET_REGISTRY"),
        (dassl.data.datasets, "Datum DatasetBase DATASET_REGISTRY build_dataset"),
        (dassl.evaluation, "build_evaluator"),
    ]:
        for name in names.split():
            assert hasattr(module, name), f"{module.__name__}.{name}"
    from dassl.data.transforms import build_transform  # noqa: F401
    from dassl.engine.trainer import TrainerX  # noqa: F401

    cfg = dassl.config.get_cfg_default()
    cfg.TRAINER.NAME = "CoOp"
    from yacs.config import CfgNode

    cfg.TRAINER.COOP, cfg.TRAINER.OTHER = CfgNode(), CfgNode()
    dassl.config.clean_cfg(cfg, "CoOp")
    assert set(cfg.TRAINER) == {"NAME", "COOP"}


def _python(code, env):
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)


def test_real_dassl_can_take_over(tmp_path):
    site = tmp_path / "site"
    (site / "dassl").mkdir(parents=True)
    (site / "dassl" / "__init__.py").write_text("GENUINE = True\n")
    code = "import dassl, os; print(getattr(dassl, 'GENUINE', False), os.path.dirname(dassl.__file__))"
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TASKRES_USE_REAL_DASSL")}
    with_real = dict(base, PYTHONPATH=os.pathsep.join([REPO, str(site)]))

    ours = _python(code, with_real)
    assert ours.returncode == 0 and ours.stdout.split() == ["False", os.path.join(REPO, "dassl")], ours.stderr
    real = _python(code, dict(with_real, TASKRES_USE_REAL_DASSL="1"))
    assert real.returncode == 0 and real.stdout.split() == ["True", str(site / "dassl")], real.stderr
    missing = _python(code, dict(base, PYTHONPATH=REPO, TASKRES_USE_REAL_DASSL="1"))
    assert missing.returncode != 0 and "TASKRES_USE_REAL_DASSL" in missing.stderr
