"""The lifecycle contract every registered method keeps, checked for each one without tests of
its own: its recipe runs through train.py; results.json has the run record's schema; every
checkpoint loads with weights_only=True; --eval-only from the run folder scores what the run
scored (its deployed model); a run killed after its first epoch and resumed ends bit-identical to an uninterrupted
one. A method file dropped into trainers/ is checked by these tests as soon as it registers.

Each method runs its own recipe (engine.recipes) on a synthetic EuroSAT with the tiny CLIP,
2 shots, 2 epochs; the products a method needs (engine.describe.Need, e.g. the masks of a
MaskTuning run) are made once by their producer's recipe."""
import os

import pytest
import torch

from engine.describe import method, methods
from engine.recipes import recipe
from runs import results, run, run_killed

SHOTS, EPOCHS = 2, 2
# Registered by this project (trainers/), not by other test modules.
METHODS = [m for m in methods() if method(m).__module__.startswith("trainers.")]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from synthetic.layouts import write_eurosat

    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=6)
    return str(root)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return str(tmp_path_factory.mktemp("store"))


def args(name, root, out, clip_path, store, *opts, seed=1):
    r = recipe(name, "eurosat", SHOTS)
    return ["--root", root, "--seed", seed, "--trainer", name, "--dataset-config-file",
            "configs/datasets/eurosat.yaml", "--config-file", r.config, "--output-dir", out, *r.opts_list(),
            "DATASET.NUM_SHOTS", SHOTS, "MODEL.BACKBONE.NAME", clip_path, "OPTIM.MAX_EPOCH", EPOCHS,
            "DATALOADER.NUM_WORKERS", 0, "DATALOADER.TRAIN_X.BATCH_SIZE", 4, "DATALOADER.TEST.BATCH_SIZE", 50,
            "TRAIN.TENSORBOARD", False, "FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", store, *opts]


@pytest.fixture(scope="module")
def products(data_root, tiny_clip_path, store, tmp_path_factory):
    """{need name: its value}: each needed product made once by its producer."""
    made = {}

    def get(need):
        if need.name not in made:
            out = str(tmp_path_factory.mktemp(need.name) / "run")
            run(args(need.producer, data_root, out, tiny_clip_path, store))
            product = method(need.producer).product_file
            made[need.name] = os.path.join(out, product) if product else out
        return made[need.name]

    return get


def need_opts(name, products):
    return [t for need in method(name).needs for t in (need.key, products(need))]


@pytest.fixture(scope="module")
def finished(data_root, tiny_clip_path, store, products, tmp_path_factory):
    """{method: its finished run folder}, made on first use."""
    done = {}

    def get(name):
        if name not in done:
            out = str(tmp_path_factory.mktemp(name) / "run")
            eval_only = ["--eval-only"] if method(name).evaluation_only else []
            run(args(name, data_root, out, tiny_clip_path, store, *need_opts(name, products)) + eval_only)
            done[name] = out
        return done[name]

    return get


@pytest.mark.parametrize("name", METHODS)
def test_results_record_and_weights_only_checkpoints(name, finished):
    out = finished(name)
    res = results(out)
    for key in ("accuracy", "split", "trainer", "dataset", "num_shots", "seed", "backbone", "epoch", "extras",
                "timing", "config", "versions"):
        assert key in res, key
    assert res["trainer"] == name and res["num_shots"] == SHOTS and res["split"] == "test"
    assert 0.0 <= res["accuracy"] <= 100.0
    assert res["config"]["TRAINER"]["NAME"] == name
    files = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if ".pth" in f]
    if not method(name).evaluation_only:
        assert files, f"{name} saved no checkpoint"
    for path in files:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert isinstance(state, dict)


@pytest.mark.parametrize("name", [m for m in METHODS if not method(m).evaluation_only])
def test_eval_only_from_the_run_folder_scores_what_the_run_scored(name, finished, data_root, tiny_clip_path, store,
                                                                 products, tmp_path):
    """Without --load-epoch: the deployed model (model-best.pth.tar, else the pointer's file)."""
    out = finished(name)
    again = str(tmp_path / "eval")
    run(args(name, data_root, again, tiny_clip_path, store, *need_opts(name, products))
        + ["--eval-only", "--model-dir", out])
    assert results(again)["accuracy"] == results(out)["accuracy"]


def _weights(out):
    """{model name: its final state dict}, read through each model's checkpoint pointer."""
    from engine.checkpoint import read_pointer

    models = sorted(d for d in os.listdir(out) if os.path.isfile(os.path.join(out, d, "checkpoint")))
    assert models, f"no model folder with a checkpoint pointer in {out}"
    return {m: torch.load(read_pointer(out, m), map_location="cpu", weights_only=True)["state_dict"]
            for m in models}


@pytest.mark.parametrize("name", [m for m in METHODS
                                  if not method(m).evaluation_only and not getattr(method(m), "closed_form", False)])
def test_resume_after_a_kill_equals_the_uninterrupted_run(name, finished, data_root, tiny_clip_path, store, products,
                                                          tmp_path, monkeypatch):
    full = finished(name)
    part = str(tmp_path / "part")
    run_killed(args(name, data_root, part, tiny_clip_path, store, *need_opts(name, products)), 1, monkeypatch)
    run(args(name, data_root, part, tiny_clip_path, store, *need_opts(name, products)))
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for model in a:
        assert a[model].keys() == b[model].keys()
        for key in a[model]:
            assert torch.equal(a[model][key], b[model][key]), f"{name} {model}.{key}"
    assert results(full)["accuracy"] == results(part)["accuracy"]
