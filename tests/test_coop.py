"""CoOp: prompt assembly, the exact text-path savings, learning, checkpoints in CoOp's layout,
transfer to other classes, scripts and recipes; on the tiny CLIP and synthetic EuroSAT."""
import json
import os
import subprocess
import sys

import pytest
import torch

import clip
import train
from engine.recipes import recipe
from runs import results, run
from trainers.coop import PromptLearner
from trainers.common.prompt_text import PromptTextEncoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = "configs/trainers/CoOp/rn50.yaml"
NAMES = ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road", "Sea or Lake",
         "american_pit_bull_terrier"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two threads on a shared 2-core machine are many times slower than one for these small ops."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def text_encoder(tiny_clip_path):
    return clip.TextEncoder(clip.load(tiny_clip_path, device="cpu", precision="fp32"))


# ---- prompt assembly ---------------------------------------------------------------------------

def closed_form(encoder, learner, k, name):
    """The reference's prompt for class k, built row by row from token ids."""
    emb = encoder.token_embedding.weight.detach()
    ids = clip.tokenize(f"{learner.prompt_prefix} {name.replace('_', ' ')}.")[0].tolist()
    name_ids = clip.tokenize(name.replace("_", " "))[0].tolist()
    name_ids = name_ids[1:name_ids.index(max(name_ids))]
    n = learner.n_ctx
    ctx = learner.ctx.detach()
    ctx = ctx[k] if learner.csc else ctx
    after = ids[1 + n + len(name_ids):]  # '.', EOT, padding
    assert ids[1 + n:1 + n + len(name_ids)] == name_ids
    rows = [emb[ids[0]]]
    if learner.position == "end":
        rows += list(ctx) + [emb[i] for i in name_ids]
    elif learner.position == "middle":
        half = n // 2
        rows += list(ctx[:half]) + [emb[i] for i in name_ids] + list(ctx[half:])
    else:
        rows += [emb[i] for i in name_ids] + list(ctx)
    rows += [emb[i] for i in after]
    return torch.stack(rows)


@pytest.mark.parametrize("position", ["end", "middle", "front"])
@pytest.mark.parametrize("csc", [False, True])
def test_prompt_assembly_matches_reference_layout(text_encoder, position, csc):
    torch.manual_seed(0)
    learner = PromptLearner(text_encoder, NAMES, n_ctx=5, csc=csc, position=position)
    prompts = learner()
    assert prompts.shape == (len(NAMES), 77, text_encoder.ln_final.weight.shape[0])
    for k, name in enumerate(NAMES):
        assert torch.equal(prompts[k], closed_form(text_encoder, learner, k, name)), (position, csc, name)
    # The shared prefix and the per-class rest put back together are the same prompts.
    prefix, rest = learner.parts(30)
    assert torch.equal(torch.cat([prefix.expand(len(NAMES), -1, -1), rest], 1), prompts[:, :30])
    assert set(learner.state_dict()) == {"ctx", "token_prefix", "token_suffix"}
    assert learner.token_suffix.shape[1] == 77 - 1 - 5


def test_ctx_init_uses_word_embeddings_and_is_generic(text_encoder):
    learner = PromptLearner(text_encoder, NAMES, n_ctx=16, csc=True, ctx_init="a_photo of a")
    assert learner.n_ctx == 4 and not learner.csc and learner.ctx.shape == (4, learner.ctx.shape[-1])
    tokens = clip.tokenize("a photo of a")
    assert torch.equal(learner.ctx.detach(), text_encoder.token_embedding.weight[tokens[0, 1:5]].detach())
    assert learner.prompts[0] == "a photo of a Annual Crop Land."


# ---- text path: truncation, shared prefix and chunks equal the reference --------------------

def features_and_grad(learner, encoder):
    learner.zero_grad()
    prefix, rest = learner.parts(encoder.length)
    feats = encoder(prefix, rest)[0]
    weights = torch.randn(feats.shape, generator=torch.Generator().manual_seed(3))
    (feats * weights).sum().backward()
    return feats.detach(), learner.ctx.grad.clone()


@pytest.mark.parametrize("position,csc", [("end", False), ("end", True), ("middle", False), ("front", True)])
def test_fast_text_paths_equal_reference(text_encoder, position, csc):
    names = NAMES + ["river", "a b c d e f g h", "Industrial Buildings", "x"]
    torch.manual_seed(1)
    learner = PromptLearner(text_encoder, names, n_ctx=6, csc=csc, position=position)
    reference = PromptTextEncoder(text_encoder, learner.tokenized_prompts, False, False, 0)
    assert reference.reference and reference.length == 77
    # The reference computation, written out: full 77-token prompts through CLIP's text path.
    expected = text_encoder(learner(), learner.tokenized_prompts)
    ref_feats, ref_grad = features_and_grad(learner, reference)
    assert torch.allclose(ref_feats, expected, atol=1e-6)
    for truncate, share, chunk in [(True, False, 0), (False, True, 0), (True, True, 0), (True, True, 3),
                                   (True, False, 4), (False, False, 7)]:
        encoder = PromptTextEncoder(text_encoder, learner.tokenized_prompts, truncate, share, chunk)
        assert encoder.fast and encoder.share_prefix == share
        if truncate:
            assert encoder.length == int(learner.tokenized_prompts.argmax(-1).max()) + 1 < 77
        feats, grad = features_and_grad(learner, encoder)
        assert torch.allclose(feats, ref_feats, atol=1e-5), (truncate, share, chunk)
        assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-6 * ref_grad.abs().max()), (truncate, share, chunk)


def test_chunks_hold_one_chunk_of_activations(text_encoder, monkeypatch):
    """With TEXT_CHUNK, the encoder runs once per chunk under activation checkpointing."""
    import trainers.common.prompt_text as pt

    learner = PromptLearner(text_encoder, NAMES * 5, n_ctx=4)
    encoder = PromptTextEncoder(text_encoder, learner.tokenized_prompts, True, True, 8)
    calls = []
    real = pt.checkpoint
    monkeypatch.setattr(pt, "checkpoint", lambda fn, *a, **k: calls.append(a[1].shape[1]) or real(fn, *a, **k))
    prefix, rest = learner.parts(encoder.length)
    encoder(prefix, rest).sum().backward()
    assert calls == [8, 8, 8, 6]
    with torch.no_grad():
        encoder(prefix, rest)
    assert len(calls) == 4  # evaluation needs no checkpointing


# ---- end to end -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from synthetic.layouts import write_eurosat

    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=32)  # 16 train images per class
    return str(root)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("features"))


def coop_args(root, out, clip_path, cache, *opts, seed=1, shots=16, epochs=20):
    return ["--root", root, "--seed", seed, "--trainer", "CoOp", "--dataset-config-file",
            "configs/datasets/eurosat.yaml", "--config-file", CFG, "--output-dir", out,
            "DATASET.NUM_SHOTS", shots, "MODEL.BACKBONE.NAME", clip_path, "OPTIM.MAX_EPOCH", epochs,
            "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False, "FEATURES.MODE", "cached",
            "FEATURES.NUM_VIEWS", 1, "FEATURES.CACHE_DIR", cache, *opts]


@pytest.fixture(scope="module")
def zero_shot_acc(data_root, tiny_clip_path, cache_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("zs"))
    run(["--root", data_root, "--trainer", "ZeroshotCLIP", "--dataset-config-file", "configs/datasets/eurosat.yaml",
         "--config-file", CFG, "--output-dir", out, "--eval-only", "MODEL.BACKBONE.NAME", tiny_clip_path,
         "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False, "FEATURES.MODE", "cached",
         "FEATURES.CACHE_DIR", cache_dir])
    return results(out)["accuracy"]


@pytest.fixture(scope="module")
def trained(data_root, tiny_clip_path, cache_dir, tmp_path_factory):
    """CoOp at its reference recipe (SGD lr 0.002, cosine, 16 generic tokens at the end), 20 epochs."""
    out = str(tmp_path_factory.mktemp("coop") / "seed1")
    run(coop_args(data_root, out, tiny_clip_path, cache_dir))
    return out


def test_coop_learns_beyond_zero_shot(trained, zero_shot_acc):
    acc = results(trained)["accuracy"]
    assert acc >= zero_shot_acc + 15.0, (acc, zero_shot_acc)
    extras = results(trained)["extras"]
    assert extras["n_ctx"] == 16 and extras["text_truncate"] and extras["text_shared_prefix"]
    assert extras["num_trainable_params"] == 16 * 64  # the context only


def test_checkpoint_in_coop_layout(trained):
    folder = os.path.join(trained, "prompt_learner")
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-20"]
    state = torch.load(os.path.join(folder, "model.pth.tar-20"), weights_only=True)
    sd = state["state_dict"]
    assert set(sd) == {"ctx", "token_prefix", "token_suffix"}
    assert sd["ctx"].shape == (16, 64) and sd["token_prefix"].shape == (10, 1, 64)
    assert sd["token_suffix"].shape == (10, 60, 64)
    assert state["epoch"] == 20
    log = open(os.path.join(trained, "log.txt")).read()
    assert "Initializing a generic context" in log and "Number of context words (tokens): 16" in log
    assert f"* accuracy: {results(trained)['accuracy']:.1f}%" in log[log.index("Finish training"):]


def test_eval_only_reproduces_logged_accuracy_with_one_text_pass(trained, data_root, tiny_clip_path, cache_dir,
                                                                 tmp_path, monkeypatch):
    calls = []
    real = PromptTextEncoder.__call__
    monkeypatch.setattr(PromptTextEncoder, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    out = str(tmp_path / "eval")
    run(coop_args(data_root, out, tiny_clip_path, cache_dir, "DATALOADER.TEST.BATCH_SIZE", 7)
        + ["--eval-only", "--model-dir", trained, "--load-epoch", 20])
    assert results(out)["accuracy"] == results(trained)["accuracy"]
    assert results(out)["correct"] == results(trained)["correct"]
    assert results(out)["total"] > 7 * 5 and len(calls) == 1  # many test batches, one text pass


def test_reference_style_checkpoint_loads(trained, data_root, tiny_clip_path, cache_dir, tmp_path):
    """A CoOp-made checkpoint: fp16 ctx, no class names, and the buffers present or deleted."""
    state = torch.load(os.path.join(trained, "prompt_learner", "model.pth.tar-20"), weights_only=True)
    for variant in ("with_buffers", "without_buffers"):
        sd = {k: v.half() for k, v in state["state_dict"].items()}
        if variant == "without_buffers":
            del sd["token_prefix"], sd["token_suffix"]
        model_dir = tmp_path / variant
        (model_dir / "prompt_learner").mkdir(parents=True)
        torch.save({"state_dict": sd, "epoch": 50, "optimizer": None, "scheduler": None, "val_result": None},
                   model_dir / "prompt_learner" / "model.pth.tar-50")
        out = str(tmp_path / f"eval_{variant}")
        run(coop_args(data_root, out, tiny_clip_path, cache_dir)
            + ["--eval-only", "--model-dir", str(model_dir), "--load-epoch", 50])
        assert abs(results(out)["accuracy"] - results(trained)["accuracy"]) <= 2.0
        assert "(epoch = 50)" in open(os.path.join(out, "log.txt")).read()


def test_wrong_context_settings_give_one_clear_message(trained, data_root, tiny_clip_path, cache_dir, tmp_path, capsys):
    out = str(tmp_path / "bad")
    code = train.main([str(a) for a in coop_args(data_root, out, tiny_clip_path, cache_dir, "TRAINER.COOP.N_CTX", 8)
                       + ["--eval-only", "--model-dir", trained, "--load-epoch", 20]])
    assert code == 2
    err = capsys.readouterr().err
    assert "TRAINER.COOP.N_CTX 16" in err and "Traceback" not in err
    assert train.main([str(a) for a in coop_args(data_root, str(tmp_path / "bad2"), tiny_clip_path, cache_dir,
                                                 "TRAINER.COOP.CLASS_TOKEN_POSITION", "back")]) == 2
    assert "end, middle, front" in capsys.readouterr().err


def test_reference_text_path_trains_the_same(trained, data_root, tiny_clip_path, cache_dir, tmp_path):
    """TEXT_TRUNCATE False, TEXT_SHARED_PREFIX False, TEXT_CHUNK 0 (the reference computation)
    trains to the same context as the default fast path, up to float rounding."""
    out = str(tmp_path / "ref")
    run(coop_args(data_root, out, tiny_clip_path, cache_dir, "TRAINER.COOP.TEXT_TRUNCATE", False,
                  "TRAINER.COOP.TEXT_SHARED_PREFIX", False, "TRAINER.COOP.TEXT_CHUNK", 0))
    a = torch.load(os.path.join(trained, "prompt_learner", "model.pth.tar-20"), weights_only=True)["state_dict"]
    b = torch.load(os.path.join(out, "prompt_learner", "model.pth.tar-20"), weights_only=True)["state_dict"]
    assert torch.allclose(a["ctx"], b["ctx"], atol=1e-4), (a["ctx"] - b["ctx"]).abs().max()
    assert abs(results(out)["accuracy"] - results(trained)["accuracy"]) <= 1.0, \
        (results(out)["accuracy"], results(trained)["accuracy"])
    assert results(out)["extras"]["text_positions"] == 77


def test_class_specific_context_on_new_classes(data_root, tiny_clip_path, cache_dir, tmp_path):
    """CSC trained on the base half, evaluated on the new half: rows follow class names, and the
    classes it never saw get the mean trained context."""
    base = str(tmp_path / "base")
    run(coop_args(data_root, base, tiny_clip_path, cache_dir, "TRAINER.COOP.CSC", True,
                  "TRAINER.COOP.CLASS_TOKEN_POSITION", "middle", "DATASET.SUBSAMPLE_CLASSES", "base", epochs=3))
    state = torch.load(os.path.join(base, "prompt_learner", "model.pth.tar-3"), weights_only=True)
    assert state["state_dict"]["ctx"].shape == (5, 16, 64) and len(state["classnames"]) == 5
    new = str(tmp_path / "new")
    run(coop_args(data_root, new, tiny_clip_path, cache_dir, "TRAINER.COOP.CSC", True,
                  "TRAINER.COOP.CLASS_TOKEN_POSITION", "middle", "DATASET.SUBSAMPLE_CLASSES", "new", epochs=3)
        + ["--eval-only", "--model-dir", base, "--load-epoch", 3])
    assert results(new)["extras"]["unseen_classes_mean_context"] == 5
    assert results(new)["accuracy"] > 20.0  # 5 classes: chance is 20%

    from trainers.coop import CoOp

    class Stub:
        dm = type("DM", (), {"classnames": ["b", "x", "a"], "dataset": None})()
        record = {}
        cfg = None
    ctx = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    rows = CoOp.class_contexts(Stub(), ctx, ["a", "b"])
    assert torch.equal(rows, torch.stack([ctx[1], ctx.mean(0), ctx[0]]))


# ---- scripts and recipes ----------------------------------------------------------------------

FAKE_PYTHON = """#!{python}
import json, os, sys
args = sys.argv[1:]
if args[0] == "-m":  # the scripts' engine.describe look-ups
    os.execv(sys.executable, [sys.executable] + args)
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(args) + "\\n")
out = args[args.index("--output-dir") + 1]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({{"accuracy": 80.0}}, f)
"""


@pytest.fixture
def fake(tmp_path):
    tmp_path = type(tmp_path)(os.path.realpath(tmp_path))
    python = tmp_path / "fake_python"
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    (tmp_path / "data").mkdir()
    calls = tmp_path / "calls.jsonl"

    def run_script(script, *args, **env):
        full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHON": str(python),
                "FAKE_CALLS": str(calls), **{k: str(v) for k, v in env.items()}}
        r = subprocess.run(["bash", os.path.join(REPO, script), *map(str, args)], cwd=str(tmp_path), env=full,
                           capture_output=True, text=True, timeout=60)
        recorded = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
        return r, recorded

    return run_script, tmp_path


def test_main_sh_runs_coop_layout(fake):
    run_script, tmp = fake
    r, calls = run_script("scripts/coop/main.sh", "dtd", "rn50_ep50", "middle", 16, 1, "True", tmp / "data")
    assert r.returncode == 0, r.stderr
    assert len(calls) == 3
    for seed, argv in zip((1, 2, 3), calls):
        out = f"{tmp}/output/dtd/CoOp/rn50_ep50_1shots/nctx16_cscTrue_ctpmiddle/seed{seed}"
        assert argv == ["train.py", "--root", f"{tmp}/data", "--seed", str(seed), "--trainer", "CoOp",
                        "--dataset-config-file", "configs/datasets/dtd.yaml",
                        "--config-file", "configs/trainers/CoOp/rn50_ep50.yaml", "--output-dir", out,
                        "TRAINER.COOP.N_CTX", "16", "TRAINER.COOP.CSC", "True",
                        "TRAINER.COOP.CLASS_TOKEN_POSITION", "middle", "DATASET.NUM_SHOTS", "1"]
    r, calls = run_script("scripts/coop/main.sh", "dtd", "rn50_ep50", "middle", 16, 1, "True", tmp / "data")
    assert len(calls) == 3 and r.stdout.count("Skip: finished run") == 3
    r, _ = run_script("scripts/coop/main.sh", "dtd", "rn50_ep50", "back", 16, 1, "True", tmp / "data")
    assert r.returncode == 2 and "CTP must be end, middle or front" in r.stderr
    r, _ = run_script("scripts/coop/main.sh", "dtd", "rn5O", "end", 16, 1, "False", tmp / "data")
    assert r.returncode == 2 and "rn50_ep100" in r.stderr  # lists the available configs


def test_eval_sh_transfers_imagenet_context(fake):
    run_script, tmp = fake
    r, calls = run_script("scripts/coop/eval.sh", "imagenet_a", "rn50_ep50", tmp / "data")
    assert r.returncode == 2 and "checkpoint not found" in r.stderr and not calls
    run_dir = "rn50_ep50_16shots/nctx16_cscFalse_ctpend"
    for seed in (1, 2, 3):
        folder = tmp / "output" / "imagenet" / "CoOp" / run_dir / f"seed{seed}" / "prompt_learner"
        folder.mkdir(parents=True)
        (folder / "model.pth.tar-50").write_bytes(b"")
    r, calls = run_script("scripts/coop/eval.sh", "imagenet_a", "rn50_ep50", tmp / "data")
    assert r.returncode == 0, r.stderr
    assert [c[c.index("--output-dir") + 1] for c in calls] == [
        f"{tmp}/output/evaluation/CoOp/{run_dir}/imagenet_a/seed{s}" for s in (1, 2, 3)]
    argv = calls[0]
    assert argv[argv.index("--model-dir") + 1] == f"{tmp}/output/imagenet/CoOp/{run_dir}/seed1"
    assert argv[argv.index("--load-epoch") + 1] == "50" and "--eval-only" in argv
    assert argv[-6:] == ["TRAINER.COOP.N_CTX", "16", "TRAINER.COOP.CSC", "False",
                         "TRAINER.COOP.CLASS_TOKEN_POSITION", "end"]


def test_recipe_table_follows_the_paper():
    assert [recipe("CoOp", "caltech101", k).cfg for k in (1, 2, 4, 8, 16)] == \
        ["rn50_ep50", "rn50_ep100", "rn50_ep100", "rn50", "rn50"]
    assert {recipe("CoOp", "ImageNet", k).cfg for k in (1, 2, 4, 8, 16)} == {"rn50_ep50"}
    r = recipe("CoOp", "eurosat", 16)
    assert r.opts == {"TRAINER.COOP.N_CTX": 16, "TRAINER.COOP.CSC": False,
                      "TRAINER.COOP.CLASS_TOKEN_POSITION": "end"}
    for stem in ("imagenet", "dtd"):
        for k in (1, 2, 4, 8, 16):
            assert os.path.isfile(os.path.join(REPO, recipe("CoOp", stem, k).config))
