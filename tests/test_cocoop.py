"""CoCoOp: the batched forward equals the reference's per-image loop, checkpoints in CoCoOp's
layout, base-to-new through train.py and the scripts; on the tiny CLIP and synthetic EuroSAT."""
import json
import os
import subprocess
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import clip
from engine.recipes import recipe
from runs import results, run
from trainers.cocoop import CoCoOp, CoCoOpPromptLearner
from trainers.common.prompt_text import PromptTextEncoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG_NAME = "vit_b16_c4_ep10_batch1_ctxv1"
CFG = f"configs/trainers/CoCoOp/{CFG_NAME}.yaml"
NAMES = ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road", "Sea or Lake", "river",
         "Industrial Buildings"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two threads on a shared 2-core machine are many times slower than one for these small ops."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tiny_clip_path):
    model = clip.load(tiny_clip_path, device="cpu", precision="fp32")
    return model, clip.TextEncoder(model)


def per_image_loop(learner, text_encoder, features, scale):
    """The reference: for each image, its prompts for all classes through the text encoder."""
    x = F.normalize(features, dim=-1)
    prompts = learner(x)  # [B, K, 77, W]
    logits = []
    for prompts_i, x_i in zip(prompts, x):
        text = F.normalize(text_encoder(prompts_i, learner.tokenized_prompts), dim=-1)
        logits.append(scale * x_i @ text.t())
    return torch.stack(logits)


def grads(learner, logits, labels):
    learner.zero_grad()
    F.cross_entropy(logits, labels).backward()
    return {k: p.grad.clone() for k, p in learner.named_parameters()}


@pytest.mark.parametrize("ctx_init,settings", [
    ("", (True, True, 0)), ("", (True, True, 5)), ("a photo of a", (True, True, 3)),
    ("a photo of a", (True, False, 10)), ("", (False, False, 0))])
def test_batched_forward_equals_per_image_loop(tiny, ctx_init, settings):
    model, text_encoder = tiny
    torch.manual_seed(0)
    learner = CoCoOpPromptLearner(text_encoder, NAMES, model.visual.output_dim, n_ctx=6, ctx_init=ctx_init)
    with torch.no_grad():  # a trained-looking meta-net, so that the shift matters
        learner.meta_net.linear2.weight.normal_(std=0.5)
    stub = types.SimpleNamespace(prompt_learner=learner, logit_scale=100.0,
                                 text=PromptTextEncoder(text_encoder, learner.tokenized_prompts, *settings))
    features = torch.randn(4, model.visual.output_dim, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3, 6, 1])
    expected = per_image_loop(learner, text_encoder, features, 100.0)
    expected_grads = grads(learner, expected, labels)
    logits = CoCoOp.forward(stub, features)
    assert logits.shape == (4, len(NAMES))
    assert torch.allclose(logits, expected, atol=1e-4), (logits - expected).abs().max()
    for name, g in grads(learner, logits, labels).items():
        e = expected_grads[name]
        assert torch.allclose(g, e, rtol=1e-3, atol=1e-5 * e.abs().max()), name
    # Every image gets its own context: a shuffled batch gives shuffled logits.
    with torch.no_grad():
        assert torch.allclose(CoCoOp.forward(stub, features.flip(0)), logits.detach().flip(0), atol=1e-4)


def test_state_dict_in_cocoop_layout(tiny):
    model, text_encoder = tiny
    learner = CoCoOpPromptLearner(text_encoder, NAMES, model.visual.output_dim, ctx_init="a photo of a")
    d = model.visual.output_dim
    shapes = {k: tuple(v.shape) for k, v in learner.state_dict().items()}
    assert shapes == {"ctx": (4, 64), "meta_net.linear1.weight": (d // 16, d), "meta_net.linear1.bias": (d // 16,),
                      "meta_net.linear2.weight": (64, d // 16), "meta_net.linear2.bias": (64,),
                      "token_prefix": (len(NAMES), 1, 64), "token_suffix": (len(NAMES), 72, 64)}


# ---- base-to-new through train.py ---------------------------------------------------------------

@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from synthetic.layouts import write_eurosat

    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=32)
    return str(root)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("features"))


def cocoop_args(root, out, clip_path, cache, *opts, sub="base", epochs=2):
    return ["--root", root, "--seed", 1, "--trainer", "CoCoOp", "--dataset-config-file",
            "configs/datasets/eurosat.yaml", "--config-file", CFG, "--output-dir", out,
            "DATASET.NUM_SHOTS", 16, "DATASET.SUBSAMPLE_CLASSES", sub, "MODEL.BACKBONE.NAME", clip_path,
            "OPTIM.MAX_EPOCH", epochs, "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False,
            "FEATURES.MODE", "cached", "FEATURES.NUM_VIEWS", 1, "FEATURES.CACHE_DIR", cache, *opts]


@pytest.fixture(scope="module")
def trained_base(data_root, tiny_clip_path, cache_dir, tmp_path_factory):
    """The published recipe (batch 1, SGD lr 0.002, "a photo of a"), 2 epochs on the base classes."""
    out = str(tmp_path_factory.mktemp("cocoop") / "train_base")
    run(cocoop_args(data_root, out, tiny_clip_path, cache_dir))
    return out


def test_base_to_new(trained_base, data_root, tiny_clip_path, cache_dir, tmp_path):
    base = results(trained_base)
    assert base["extras"]["subsample_classes"] == "base" and base["extras"]["n_ctx"] == 4
    assert base["accuracy"] > 60.0  # 5 base classes: chance is 20%
    state = torch.load(os.path.join(trained_base, "prompt_learner", "model.pth.tar-2"), weights_only=True)
    assert set(state["state_dict"]) == {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                                        "meta_net.linear2.weight", "meta_net.linear2.bias",
                                        "token_prefix", "token_suffix"}
    assert state["state_dict"]["token_prefix"].shape[0] == 5
    log = open(os.path.join(trained_base, "log.txt")).read()
    assert "SUBSAMPLE BASE CLASSES!" in log and "batch [80/80]" in log  # batch 1: 5 x 16 steps
    # The same checkpoint on the new classes.
    new = str(tmp_path / "test_new")
    run(cocoop_args(data_root, new, tiny_clip_path, cache_dir, sub="new")
        + ["--model-dir", trained_base, "--load-epoch", 2, "--eval-only"])
    res = results(new)
    assert res["extras"]["subsample_classes"] == "new" and res["accuracy"] > 20.0
    assert 'Loading weights to prompt_learner from' in open(os.path.join(new, "log.txt")).read()
    # And on the base classes again: the logged accuracy.
    again = str(tmp_path / "test_base")
    run(cocoop_args(data_root, again, tiny_clip_path, cache_dir)
        + ["--model-dir", trained_base, "--load-epoch", 2, "--eval-only"])
    assert results(again)["correct"] == base["correct"]


# ---- scripts and recipe -------------------------------------------------------------------------

FAKE_PYTHON = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(args) + "\\n")
out = args[args.index("--output-dir") + 1]
os.makedirs(out, exist_ok=True)
if "--eval-only" not in args:
    os.makedirs(os.path.join(out, "prompt_learner"), exist_ok=True)
    open(os.path.join(out, "prompt_learner", "model.pth.tar-10"), "w").close()
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({{"accuracy": 80.0}}, f)
"""


def test_base2new_scripts(tmp_path):
    tmp = type(tmp_path)(os.path.realpath(tmp_path))
    python = tmp / "fake_python"
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    (tmp / "data").mkdir()
    calls = tmp / "calls.jsonl"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "PYTHON": str(python),
           "FAKE_CALLS": str(calls)}

    def script(name, *args):
        return subprocess.run(["bash", os.path.join(REPO, "scripts", "cocoop", name), *map(str, args)],
                              cwd=str(tmp), env=env, capture_output=True, text=True, timeout=60)

    r = script("base2new_test.sh", "dtd", 1, tmp / "data")
    assert r.returncode == 2 and "base2new_train.sh dtd 1" in r.stderr
    assert script("base2new_train.sh", "dtd", 1, tmp / "data").returncode == 0
    assert script("base2new_test.sh", "dtd", 1, tmp / "data").returncode == 0
    train_argv, test_argv = [json.loads(line) for line in calls.read_text().splitlines()]
    train_dir = f"{tmp}/output/base2new/train_base/dtd/shots_16/CoCoOp/{CFG_NAME}/seed1"
    assert train_argv == ["train.py", "--root", f"{tmp}/data", "--seed", "1", "--trainer", "CoCoOp",
                          "--dataset-config-file", "configs/datasets/dtd.yaml", "--config-file", CFG,
                          "--output-dir", train_dir, "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base"]
    assert test_argv == ["train.py", "--root", f"{tmp}/data", "--seed", "1", "--trainer", "CoCoOp",
                         "--dataset-config-file", "configs/datasets/dtd.yaml", "--config-file", CFG,
                         "--output-dir", f"{tmp}/output/base2new/test_new/dtd/shots_16/CoCoOp/{CFG_NAME}/seed1",
                         "--model-dir", train_dir, "--load-epoch", "10", "--eval-only",
                         "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "new"]
    r = script("base2new_train.sh", "dtd", 1, tmp / "data")
    assert "Skip: finished run" in r.stdout and len(calls.read_text().splitlines()) == 2


def test_recipe_and_configs():
    assert recipe("CoCoOp", "imagenet", 16).config == CFG
    from engine.config import get_cfg_default
    from engine.registry import TRAINER_REGISTRY
    import trainers  # noqa: F401

    for name, n_ctx, init in [("vit_b16_c4_ep10_batch1", 4, ""), ("vit_b16_c8_ep10_batch1", 8, ""),
                              ("vit_b16_c16_ep10_batch1", 16, ""), (CFG_NAME, 4, "a photo of a")]:
        cfg = get_cfg_default()
        for _, trainer in TRAINER_REGISTRY.items():
            trainer.extend_cfg(cfg)
        cfg.merge_from_file(os.path.join(REPO, "configs", "trainers", "CoCoOp", f"{name}.yaml"))
        assert (cfg.TRAINER.COCOOP.N_CTX, cfg.TRAINER.COCOOP.CTX_INIT) == (n_ctx, init)
        assert (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.OPTIM.MAX_EPOCH, cfg.MODEL.BACKBONE.NAME) == (1, 10, "ViT-B/16")
