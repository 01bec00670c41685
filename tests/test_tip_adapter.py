"""Tip-Adapter and Tip-Adapter-F: the cache formulas against hand computations, the reference's
search loop, and runs through train.py on synthetic EuroSAT with the tiny CLIP."""
import json
import math
import os

import pytest
import torch

import train
from runs import results, run_direct as run, run_killed
from trainers.common.tip_cache import (TipCache, build_cache, remap_value_columns, search_grid, search_hp,
                                tip_logits)

TIP = "configs/trainers/TipAdapter/eurosat.yaml"
TIPF = "configs/trainers/TipAdapterF/eurosat.yaml"


# ---- formulas ----------------------------------------------------------------------------------
def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def test_logits_match_a_hand_computation():
    f_raw = [[3.0, 4.0], [1.0, -1.0]]  # raw image features, 2 images
    keys = [unit([1.0, 0.0]), unit([0.0, 1.0]), unit([1.0, 1.0])]  # 3 cached images
    labels = [0, 1, 1]
    W = [unit([1.0, 0.2]), unit([0.3, 1.0])]  # 2 classes
    beta, alpha = 5.5, 1.7
    expected = []
    for raw in f_raw:
        f = unit(raw)
        row = []
        for c in range(2):
            zero_shot = 100.0 * sum(a * b for a, b in zip(f, W[c]))
            cache = sum(math.exp(-beta * (1.0 - sum(a * b for a, b in zip(f, k))))
                        for k, y in zip(keys, labels) if y == c)
            row.append(zero_shot + alpha * cache)
        expected.append(row)
    values = torch.nn.functional.one_hot(torch.tensor(labels), 2).float()
    got = tip_logits(torch.tensor(f_raw), torch.tensor(W), torch.tensor(keys), values, beta, alpha)
    assert torch.allclose(got, torch.tensor(expected), rtol=1e-5)
    cache = TipCache(3, 2, 2, beta, alpha)
    cache.fill(torch.tensor(keys), values)
    assert torch.allclose(cache(torch.tensor(f_raw), torch.tensor(W), 100.0), torch.tensor(expected), rtol=1e-5)


def test_cache_keys_average_raw_views_then_normalise():
    views = torch.tensor([[[2.0, 0.0], [0.0, 10.0]],   # image 0: two views of very different norms
                          [[1.0, 1.0], [3.0, 3.0]]])   # image 1
    keys, values = build_cache(views, torch.tensor([2, 0]), num_classes=3)
    # mean of raw views, then L2: (1, 5)/sqrt(26) -- not the mean of normalised views
    assert torch.allclose(keys[0], torch.tensor([1.0, 5.0]) / math.sqrt(26.0))
    assert torch.allclose(keys[1], torch.tensor([1.0, 1.0]) / math.sqrt(2.0))
    assert values.tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]


def test_search_grid_is_the_reference_formula():
    betas = search_grid(12.0, 200)
    assert len(betas) == 200 and betas[0] == pytest.approx(0.1) and betas[1] == pytest.approx(0.1 + 11.9 / 200)
    assert betas[-1] < 12.0  # the scale itself is never reached
    assert search_grid(10.0, 20)[-1] == pytest.approx(0.1 + 19 * 9.9 / 20)


@pytest.mark.parametrize("budget", [1 << 25, 50])  # one chunk, and many row chunks
def test_search_picks_what_the_reference_double_loop_picks(budget):
    g = torch.Generator().manual_seed(0)
    n, d, k, m = 24, 8, 4, 30
    keys = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    cache_labels = torch.arange(k).repeat(n // k)
    values = torch.nn.functional.one_hot(cache_labels, k).float()
    W = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=-1)
    labels = torch.randint(k, (m,), generator=g)
    feats = keys[torch.randint(n, (m,), generator=g)] * 3 + torch.randn(m, d, generator=g)
    betas, alphas = search_grid(7.0, 12), search_grid(3.0, 6)
    # the reference: beta outer, alpha inner, strictly better accuracy wins
    best, choice = 0.0, None
    fn = torch.nn.functional.normalize(feats, dim=-1)
    for beta in betas:
        for alpha in alphas:
            logits = 100.0 * fn @ W.t() + torch.exp(-beta * (1 - fn @ keys.t())) @ values * alpha
            acc = 100.0 * (logits.argmax(-1) == labels).float().mean().item()
            if acc > best:
                best, choice = acc, (beta, alpha)
    result = search_hp(feats, labels, W, keys, values, betas, alphas, budget=budget, verbose=False)
    assert (result.beta, result.alpha) == choice
    assert result.accuracy == pytest.approx(best)


def test_value_columns_follow_class_names():
    values = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    out, unseen = remap_value_columns(values, ["a", "b", "c"], ["c", "d"])
    assert out.tolist() == [[0.0, 0.0], [1.0, 0.0]] and unseen == ["d"]
    same, none = remap_value_columns(values, ["a", "b", "c"], ["a", "b", "c"])
    assert same is values and none == []
    # (ImageNet subsets of a 1000-column cache: tests/test_checkpointing.py)
    assert remap_value_columns(values, None, ["x", "y"]) == (None, None)


# ---- runs --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_path):
    from synthetic.layouts import write_eurosat

    root = tmp_path_factory.mktemp("tip")
    write_eurosat(str(root / "data"), per_class=34)  # 17 train, 7 val, 10 test images per class
    return {"root": str(root / "data"), "cache": str(root / "features"), "clip": tiny_clip_path, "tmp": root}


def argv(env, out, trainer="TipAdapter", config=TIP, shots=16, mode="cached", *opts):
    return ["--root", env["root"], "--seed", "1", "--trainer", trainer, "--dataset-config-file",
            "configs/datasets/eurosat.yaml", "--config-file", config, "--output-dir", str(out),
            "DATASET.NUM_SHOTS", str(shots), "MODEL.BACKBONE.NAME", env["clip"], "DATALOADER.NUM_WORKERS", "0",
            "TRAIN.TENSORBOARD", "False", "FEATURES.MODE", mode, "FEATURES.CACHE_DIR", env["cache"],
            "FEATURES.NUM_VIEWS", "2", "TRAINER.TIP.AUGMENT_EPOCH", "2", *map(str, opts)]


def zero_shot(env, name, subsample="all"):
    out = env["tmp"] / f"zs_{name}"
    if not (out / "results.json").exists():
        run(["--root", env["root"], "--trainer", "ZeroshotCLIP", "--dataset-config-file",
             "configs/datasets/eurosat.yaml", "--config-file", TIP, "--output-dir", str(out), "--eval-only",
             "MODEL.BACKBONE.NAME", env["clip"], "DATALOADER.NUM_WORKERS", "0", "TRAIN.TENSORBOARD", "False",
             "FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", env["cache"], "DATASET.SUBSAMPLE_CLASSES", subsample])
    return results(out)


@pytest.fixture(scope="module")
def tip_run(env):
    out = env["tmp"] / "tip16"
    trainer = run(argv(env, out))
    return out, trainer


@pytest.fixture(scope="module")
def tipf_run(env, tip_run):
    out = env["tmp"] / "tipf16"
    run(argv(env, out, "TipAdapterF", TIPF, 16, "cached", "OPTIM.MAX_EPOCH", 10))
    return out


def test_alpha_zero_is_zero_shot_clip(env):
    out = env["tmp"] / "alpha0"
    run(argv(env, out, "TipAdapter", TIP, 16, "cached", "TRAINER.TIP.SEARCH_HP", "False",
             "TRAINER.TIP.INIT_ALPHA", "0.0"))
    assert results(out)["correct"] == zero_shot(env, "all")["correct"]


def test_tip_adapter_beats_zero_shot_and_records_its_search(env, tip_run):
    out, trainer = tip_run
    r = results(out)
    assert r["accuracy"] > zero_shot(env, "all")["accuracy"] + 5.0
    ex = r["extras"]
    assert ex["search_split"] == "val" and ex["search_on_test"] is False and ex["cache_size"] == 160
    assert ex["beta"] in search_grid(12.0, 200) and ex["alpha"] in search_grid(10.0, 20)
    state = torch.load(out / "tip_adapter" / "model-fit.pth.tar", weights_only=True)
    sd = state["state_dict"]
    assert set(sd) == {"cache_keys", "cache_values", "beta", "alpha"}
    assert sd["cache_keys"].shape[0] == 160 and sd["cache_values"].shape == (160, 10)
    assert torch.allclose(sd["cache_keys"].norm(dim=-1), torch.ones(160), atol=1e-5)
    assert float(sd["beta"]) == ex["beta"] and float(sd["alpha"]) == ex["alpha"]
    log = (out / "log.txt").read_text()
    assert "After searching, the best accuracy" in log and "Finish training" in log


def test_tip_adapter_eval_only_reproduces_the_logged_accuracy(env, tip_run):
    out, _ = tip_run
    ev = env["tmp"] / "tip16_eval"
    run(argv(env, ev) + ["--eval-only", "--model-dir", str(out)])
    assert results(ev)["correct"] == results(out)["correct"]


def test_tip_adapter_f_learns_and_round_trips(env, tipf_run):
    r = results(tipf_run)
    assert r["accuracy"] > zero_shot(env, "all")["accuracy"] + 10.0
    assert r["extras"]["epoch_selection"] == "val" and 1 <= r["extras"]["best_epoch"] <= 10
    files = sorted(os.listdir(tipf_run / "tip_adapter_f"))
    assert files == ["checkpoint", "model-best.pth.tar", "model.pth.tar-10"]
    best = torch.load(tipf_run / "tip_adapter_f" / "model-best.pth.tar", weights_only=True)
    assert float(best["state_dict"]["beta"]) == r["extras"]["beta"]
    assert best["epoch"] == r["extras"]["best_epoch"]
    ev = env["tmp"] / "tipf16_eval"
    run(argv(env, ev, "TipAdapterF", TIPF) + ["--eval-only", "--model-dir", str(tipf_run)])
    assert results(ev)["correct"] == r["correct"]
    # the last epoch's file holds the keys of that epoch with the init beta and alpha
    last = torch.load(tipf_run / "tip_adapter_f" / "model.pth.tar-10", weights_only=True)
    assert float(last["state_dict"]["beta"]) == 1.0 and float(last["state_dict"]["alpha"]) == 2.0


def test_tip_adapter_f_lr_is_cosine_per_batch(tipf_run):
    import re

    log = (tipf_run / "log.txt").read_text()
    lrs = [float(x) for x in re.findall(r"batch \[1/1\].* lr (\S+) eta", log)]
    assert len(lrs) == 10  # 16 shots x 10 classes < 256: one batch per epoch
    assert lrs == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * i / 10)) for i in range(10)], rel=1e-4)


def test_last_epoch_selection_round_trips_with_load_epoch(env, tip_run):
    out = env["tmp"] / "tipf_last"
    run(argv(env, out, "TipAdapterF", TIPF, 16, "cached", "OPTIM.MAX_EPOCH", 3,
             "TRAINER.TIP.EPOCH_SELECTION", "last"))
    assert sorted(os.listdir(out / "tip_adapter_f")) == ["checkpoint", "model.pth.tar-3"]
    ev = env["tmp"] / "tipf_last_eval"
    run(argv(env, ev, "TipAdapterF", TIPF) + ["--eval-only", "--model-dir", str(out), "--load-epoch", "3"])
    assert results(ev)["correct"] == results(out)["correct"]


@pytest.mark.slow
def test_tip_adapter_f_resume_equals_uninterrupted(env, tip_run, monkeypatch):
    from trainers.tip_adapter_f import TipAdapterF

    full = env["tmp"] / "tipf_full"
    run(argv(env, full, "TipAdapterF", TIPF, 16, "cached", "OPTIM.MAX_EPOCH", 4))

    part = env["tmp"] / "tipf_part"
    run_killed(argv(env, part, "TipAdapterF", TIPF, 16, "cached", "OPTIM.MAX_EPOCH", 4), 2, monkeypatch, TipAdapterF)
    run(argv(env, part, "TipAdapterF", TIPF, 16, "cached", "OPTIM.MAX_EPOCH", 4))
    a = torch.load(full / "tip_adapter_f" / "model-best.pth.tar", weights_only=True)
    b = torch.load(part / "tip_adapter_f" / "model-best.pth.tar", weights_only=True)
    assert a["epoch"] == b["epoch"] and torch.equal(a["state_dict"]["cache_keys"], b["state_dict"]["cache_keys"])
    assert results(full)["correct"] == results(part)["correct"]


def test_online_and_cached_caches_agree(env, tip_run):
    # 1 shot and no test evaluation: online mode encodes everything it needs again
    cached = run(argv(env, env["tmp"] / "tip1_cached", "TipAdapter", TIP, 1, "cached", "TEST.NO_TEST", "True"))
    online = run(argv(env, env["tmp"] / "tip1_online", "TipAdapter", TIP, 1, "online", "TEST.NO_TEST", "True"))
    a, b = cached.cache, online.cache
    assert a.cache_keys.shape == (10, b.cache_keys.shape[1]) and torch.equal(a.cache_values, b.cache_values)
    # the same seeded views; the store keeps fp16 features
    assert torch.allclose(a.cache_keys, b.cache_keys, atol=2e-2)
    assert os.path.isfile(env["tmp"] / "tip1_online" / "tip_adapter" / "model-fit.pth.tar")


def test_new_classes_fall_back_to_zero_shot(env, tip_run):
    base = env["tmp"] / "tip_base"
    run(argv(env, base, "TipAdapter", TIP, 16, "cached", "DATASET.SUBSAMPLE_CLASSES", "base"))
    new = env["tmp"] / "tip_new"
    run(argv(env, new, "TipAdapter", TIP, 16, "cached", "DATASET.SUBSAMPLE_CLASSES", "new")
        + ["--eval-only", "--model-dir", str(base)])
    r = results(new)
    assert r["extras"]["unseen_classes_zeroshot"] == 5
    assert r["correct"] == zero_shot(env, "new", "new")["correct"]


def test_bad_search_split_is_one_clear_error(env, tmp_path, capsys):
    code = train.main(argv(env, tmp_path / "o", "TipAdapter", TIP, 16, "cached", "TRAINER.TIP.SEARCH_SPLIT", "train"))
    assert code == 2 and "TRAINER.TIP.SEARCH_SPLIT must be one of val, test" in capsys.readouterr().err
    code = train.main(argv(env, tmp_path / "p", "TipAdapterF", TIPF, 16, "cached", "TRAINER.TIP.EPOCH_SELECTION",
                           "test", "TEST.FINAL_MODEL", "best_val"))
    assert code == 2 and "TRAINER.TIP.EPOCH_SELECTION" in capsys.readouterr().err


def test_reference_protocol_selects_epoch_and_pair_on_test(env, tip_run):
    out = env["tmp"] / "tipf_ref"
    run(argv(env, out, "TipAdapterF", TIPF, 16, "cached", "OPTIM.MAX_EPOCH", 3, "TRAINER.TIP.EPOCH_SELECTION", "test"))
    ex = results(out)["extras"]
    assert ex["epoch_selection"] == "test" and ex["deployed_hp"] in ("init", "searched")
    log = (out / "log.txt").read_text()
    assert "Deploy the model with the best test performance" in log
    ev = env["tmp"] / "tipf_ref_eval"
    run(argv(env, ev, "TipAdapterF", TIPF) + ["--eval-only", "--model-dir", str(out)])
    assert results(ev)["correct"] == results(out)["correct"]


# ---- scripts/tip_adapter/main.sh ---------------------------------------------------------------
FAKE_PYTHON = """#!{python}
import json, os, sys
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def run_script(tmp_path, *args, **env):
    import subprocess
    import sys

    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    (tmp_path / "data").mkdir(exist_ok=True)
    calls = tmp_path / "calls.jsonl"
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHON": str(fake), "FAKE_CALLS": str(calls),
                "DATA": str(tmp_path / "data"), **{k: str(v) for k, v in env.items()}}
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "tip_adapter",
                          "main.sh")
    proc = subprocess.run(["bash", script, *map(str, args)], cwd=str(tmp_path), env=full_env, capture_output=True,
                          text=True, timeout=60)
    return proc, [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def test_script_runs_seeds_with_the_dataset_config(tmp_path):
    proc, calls = run_script(tmp_path, "TipAdapterF", "eurosat", 16, EPOCH_SELECTION="test", SEEDS="1 2")
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 2
    argv_ = calls[0]
    assert argv_[argv_.index("--config-file") + 1] == "configs/trainers/TipAdapterF/eurosat.yaml"
    assert argv_[argv_.index("--output-dir") + 1] == str(
        tmp_path / "output" / "eurosat" / "TipAdapterF" / "eurosat_16shots" / "search_val_epoch_test" / "seed1")
    assert argv_[-6:] == ["DATASET.NUM_SHOTS", "16", "TRAINER.TIP.SEARCH_SPLIT", "val",
                          "TRAINER.TIP.EPOCH_SELECTION", "test"]
    proc, _ = run_script(tmp_path, "TipAdaptor", "eurosat", 16)
    assert proc.returncode == 2 and "TipAdapter or TipAdapterF" in proc.stderr


# ---- configs and recipes -------------------------------------------------------------------------
REFERENCE = {  # the Tip-Adapter repository's configs: search_scale, init_alpha, train_epoch
    "caltech101": ((12, 5), 3, 20), "dtd": ((13, 13), 2, 20), "eurosat": ((12, 10), 2, 100),
    "fgvc_aircraft": ((30, 30), 5, 20), "food101": ((10, 10), 1.17, 20), "imagenet": ((7, 3), 1.17, 20),
    "oxford_flowers": ((50, 50), 10, 20), "oxford_pets": ((7, 3), 1.17, 20), "stanford_cars": ((20, 10), 3, 20),
    "sun397": ((12, 10), 1.17, 20), "ucf101": ((7, 3), 3, 20),
}


@pytest.mark.parametrize("method", ["TipAdapter", "TipAdapterF"])
def test_recipes_hold_the_reference_settings(method):
    import trainers  # noqa: F401
    from engine.config import get_cfg_default, merge_file
    from engine.recipes import recipe
    from engine.registry import TRAINER_REGISTRY

    for stem, (scale, alpha, epochs) in REFERENCE.items():
        cfg = get_cfg_default()
        for _, t in TRAINER_REGISTRY.items():
            t.extend_cfg(cfg)
        for shots in (1, 16):
            r = recipe(method, stem, shots)
            assert r.config == f"configs/trainers/{method}/{stem}.yaml"
        merge_file(cfg, r.config, "config file")
        tip = cfg.TRAINER.TIP
        assert tuple(tip.SEARCH_SCALE) == scale and tuple(tip.SEARCH_STEP) == (200, 20)
        assert (tip.INIT_BETA, tip.INIT_ALPHA, tip.AUGMENT_EPOCH) == (1.0, alpha, 10)
        assert tuple(cfg.INPUT.RRCROP_SCALE) == (0.5, 1.0) and cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 256
        if method == "TipAdapterF":
            assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.WEIGHT_DECAY) == (
                "adamw", 0.001, epochs, 0.01)
