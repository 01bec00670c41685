"""What the engine gives every method family: whole-split features, closed-form fits, precision,
gradient accumulation, private models in a shared cache, run records, base-to-new rows,
MODEL.INIT_WEIGHTS, strictness about keys that do nothing."""
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import clip
import train
from datasets.transforms import read_image
from engine import precision
from engine.errors import ConfigError
from engine.models import ModelCache
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer
from runs import results, run_direct as run
from synthetic.layouts import write_eurosat

RECIPE = "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml"
BETA = 5.0


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=12)
    return str(root)


def common(root, out, clip_path, *opts):
    return ["--root", root, "--dataset-config-file", "configs/datasets/eurosat.yaml", "--output-dir", out,
            "MODEL.BACKBONE.NAME", clip_path, "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False, *opts]


def taskres(root, out, clip_path, *opts, seed=1, shots=4, epochs=4):
    return common(root, out, clip_path, "--seed", seed, "--trainer", "TaskRes", "--config-file", RECIPE,
                  "DATASET.NUM_SHOTS", shots, "OPTIM.MAX_EPOCH", epochs, *opts)


def residuals(out, epoch):
    path = os.path.join(out, "prompt_learner", f"model.pth.tar-{epoch}")
    return torch.load(path, weights_only=True)["state_dict"]["text_feature_residuals"]


# ---------------------------------------------------------------- test trainers (a few lines each)

class CacheProbeModule(nn.Module):
    def __init__(self, keys, values):
        super().__init__()
        self.register_buffer("keys", keys)
        self.register_buffer("values", values)


@TRAINER_REGISTRY.register(force=True)
class CacheProbe(Trainer):
    """A Tip-Adapter-style cache fitted in closed form: keys = normalised mean over 3 views."""
    closed_form = True

    def build_model(self):
        self.load_clip()

    def after_source(self):
        views, labels = self.source.split_features("train", views=3)
        keys = F.normalize(views.mean(1), dim=-1)
        self.cache = CacheProbeModule(keys, F.one_hot(labels, self.dm.num_classes).float())
        self.register_model("cache", self.cache)

    def fit(self):
        self.record["fitted"] = True

    def forward(self, features):
        affinity = F.normalize(features, dim=-1) @ self.cache.keys.t()
        return torch.exp(-BETA * (1 - affinity)) @ self.cache.values


@TRAINER_REGISTRY.register(force=True)
class EncoderPatcher(Trainer):
    """A method that modifies its encoder: it must get a private copy."""

    def build_model(self):
        model = self.load_clip(private=True)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.5)
        self.head = nn.Linear(model.embed_dim, self.dm.num_classes).to(self.device)
        self.register_model("head", self.head)

    def forward(self, features):
        return self.head(features)


# ---------------------------------------------------------------- whole-split features, closed form

@pytest.mark.parametrize("mode", ["online", "cached"])
def test_cache_probe_equals_closed_form(mode, data_root, tiny_clip_path, tmp_path):
    out = str(tmp_path / mode)
    trainer = run(common(data_root, out, tiny_clip_path, "--seed", 1, "--trainer", "CacheProbe",
                         "--config-file", RECIPE, "DATASET.NUM_SHOTS", 2, "FEATURES.MODE", mode,
                         "FEATURES.CACHE_DIR", tmp_path / "store"))
    # Closed form, from features computed here: test images through the test transform.
    model = clip.load(tiny_clip_path)
    test = trainer.dm.dataset.test
    with torch.no_grad():
        feats = torch.cat([clip.encode_image(model, trainer.dm.tfm_test(read_image(d.impath))[None]) for d in test])
    keys, values = trainer.cache.keys, trainer.cache.values
    logits = torch.exp(-BETA * (1 - F.normalize(feats, dim=-1) @ keys.t())) @ values
    labels = torch.tensor([d.label for d in test])
    expected = 100.0 * (logits.argmax(1) == labels).float().mean().item()
    res = results(out)
    assert res["accuracy"] == pytest.approx(expected)
    assert res["accuracy"] > 10.0 * 2  # a 2-shot cache beats chance (10 classes)
    assert res["extras"]["fitted"] is True and res["timing"]["train"] >= 0
    # The views are augmented (they differ) and the keys follow the few-shot labels.
    views, _ = trainer.source.split_features("train", views=3)
    assert views.shape[:2] == (len(trainer.dm.dataset.train_x), 3)
    assert not torch.allclose(views[:, 0], views[:, 1])
    assert torch.equal(values.argmax(1), torch.tensor([d.label for d in trainer.dm.dataset.train_x]))
    # Closed-form fit: one file, no epochs; --eval-only finds it without --load-epoch.
    assert sorted(os.listdir(os.path.join(out, "cache"))) == ["checkpoint", "model-fit.pth.tar"]
    again = str(tmp_path / f"{mode}-eval")
    run(common(data_root, again, tiny_clip_path, "--seed", 1, "--trainer", "CacheProbe", "--config-file",
               RECIPE, "DATASET.NUM_SHOTS", 2, "--eval-only", "--model-dir", out, "FEATURES.MODE", mode,
               "FEATURES.CACHE_DIR", tmp_path / "store"))
    assert results(again)["accuracy"] == res["accuracy"]


def test_views_identical_in_both_modes(data_root, tiny_clip_path, tmp_path):
    keys = {}
    for mode in ("online", "cached"):
        trainer = run(common(data_root, str(tmp_path / mode), tiny_clip_path, "--seed", 1, "--trainer",
                             "CacheProbe", "--config-file", RECIPE, "DATASET.NUM_SHOTS", 2, "FEATURES.MODE",
                             mode, "FEATURES.CACHE_DIR", tmp_path / "store", "TEST.NO_TEST", True))
        keys[mode] = trainer.cache.keys
    # The store holds fp16 features; online keeps fp32.
    assert torch.allclose(keys["online"], keys["cached"], atol=2e-3)


# ---------------------------------------------------------------- precision, accumulation

def test_amp_runs_under_autocast_on_cpu(data_root, tiny_clip_path, tmp_path, monkeypatch):
    from trainers.taskres import TaskRes

    seen = []
    original = TaskRes.forward

    def spy(self, features):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return original(self, features)

    monkeypatch.setattr(TaskRes, "forward", spy)
    out = str(tmp_path / "amp")
    trainer = run(taskres(data_root, out, tiny_clip_path, "TRAINER.TaskRes.PREC", "amp", "FEATURES.MODE", "cached",
                          "FEATURES.CACHE_DIR", tmp_path / "store", epochs=20, shots=8))
    assert seen and all(seen)
    assert trainer.grad_scaler is None  # no GradScaler off CUDA (bf16 needs none)
    assert results(out)["extras"]["precision"] == "amp"
    assert results(out)["accuracy"] > 30.0
    assert trainer.learner.text_feature_residuals.dtype == torch.float32


def test_results_record_configured_and_effective_precision(data_root, tiny_clip_path, tmp_path):
    store = ("FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", tmp_path / "store")
    for prec in ("fp16", "fp32"):
        out = str(tmp_path / prec)
        run(taskres(data_root, out, tiny_clip_path, *store, "TRAINER.TaskRes.PREC", prec, epochs=1))
        extras = results(out)["extras"]
        # the CPU loads fp32 encoders under every PREC: an fp16 run ran at fp32
        assert extras["precision"] == prec and extras["precision_effective"] == "fp32"
        assert extras["encoder_dtypes"] == {"image": "float32", "text": "float32"}
    half, full = torch.float16, torch.float32  # what CUDA loads under fp16 (image tower fp32 for some methods)
    assert precision.effective_precision("fp16", {"image": half, "text": half}) == "fp16"
    assert precision.effective_precision("fp16", {"image": full, "text": half}) == "fp16"
    assert precision.effective_precision("amp", {"image": full, "text": full}) == "amp"


def test_gradient_accumulation_equals_full_batch(data_root, tiny_clip_path, tmp_path):
    store = ("FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", tmp_path / "store")
    full, accum = str(tmp_path / "full"), str(tmp_path / "accum")
    # 4 shots x 10 classes = 40 images: one batch of 40, or two of 20 with one step.
    run(taskres(data_root, full, tiny_clip_path, *store, "DATALOADER.TRAIN_X.BATCH_SIZE", 40))
    run(taskres(data_root, accum, tiny_clip_path, *store, "DATALOADER.TRAIN_X.BATCH_SIZE", 20,
                "TRAIN.GRAD_ACCUM_STEPS", 2))
    a, b = residuals(full, 4), residuals(accum, 4)
    assert a.abs().sum() > 0
    assert torch.allclose(a, b, atol=1e-6)


# ---------------------------------------------------------------- models shared read-only

def test_shared_cache_runs_equal_runs_alone(data_root, tiny_clip_path, tmp_path):
    store = ("FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", tmp_path / "store")
    alone = {}
    for prec in ("fp32", "amp"):
        alone[prec] = str(tmp_path / f"alone-{prec}")
        run(taskres(data_root, alone[prec], tiny_clip_path, *store, "TRAINER.TaskRes.PREC", prec))
    zs_alone = str(tmp_path / "zs-alone")
    zs = ("--trainer", "ZeroshotCLIP", "--config-file", "configs/trainers/ZeroshotCLIP/rn50.yaml", "--eval-only")
    run(common(data_root, zs_alone, tiny_clip_path, *zs))

    models = ModelCache()
    run(common(data_root, str(tmp_path / "patch"), tiny_clip_path, "--seed", 1, "--trainer", "EncoderPatcher",
               "--config-file", RECIPE, "DATASET.NUM_SHOTS", 2, "OPTIM.MAX_EPOCH", 1, *store), models=models)
    shared = {}
    for prec in ("amp", "fp32"):
        shared[prec] = str(tmp_path / f"shared-{prec}")
        run(taskres(data_root, shared[prec], tiny_clip_path, *store, "TRAINER.TaskRes.PREC", prec), models=models)
    zs_shared = str(tmp_path / "zs-shared")
    run(common(data_root, zs_shared, tiny_clip_path, *zs), models=models)
    assert len(models) == 1  # on the CPU every precision loads the same fp32 model
    for prec in ("fp32", "amp"):
        assert torch.equal(residuals(alone[prec], 4), residuals(shared[prec], 4))
    assert results(zs_shared)["accuracy"] == results(zs_alone)["accuracy"]
    assert not torch.equal(residuals(alone["fp32"], 4), residuals(alone["amp"], 4))


def test_sweep_sets_any_key_and_records_full_config(data_root, tiny_clip_path, tmp_path):
    import sweep

    out = str(tmp_path / "sweep")
    argv = ["--shots", "1", "2", "--seeds", "1", "2", "--set", "OPTIM.LR=1e-3,2e-3", "--alphas", "0.5",
            *[str(a) for a in taskres(data_root, out, tiny_clip_path, "FEATURES.MODE", "cached",
                                      "FEATURES.CACHE_DIR", tmp_path / "store", epochs=2)]]
    # taskres() sets DATASET.NUM_SHOTS; the grid's value must win over it.
    assert sweep.main(argv) == 0
    seen = set()
    for k in (1, 2):
        for lr in ("1e-3", "2e-3"):
            for s in (1, 2):
                res = results(os.path.join(out, f"adam_lr2e-3_B256_ep100_{k}shots", "base_regular_alpha0.5",
                                           f"LR{lr}", f"seed{s}"))
                cfg = res["config"]
                assert (cfg["DATASET"]["NUM_SHOTS"], cfg["OPTIM"]["LR"], cfg["SEED"]) == (k, float(lr), s)
                assert res["extras"]["alpha"] == 0.5 and res["extras"]["base"] == "regular"
                assert res["extras"]["num_trainable_params"] > 0
                assert res["versions"]["torch"] == torch.__version__
                seen.add((k, lr, s))
    assert len(seen) == 8


# ---------------------------------------------------------------- loading

def test_base_to_new_uses_zero_shot_rows_for_unseen_classes(data_root, tiny_clip_path, tmp_path):
    store = ("FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", tmp_path / "store")
    base = str(tmp_path / "base")
    run(taskres(data_root, base, tiny_clip_path, *store, "DATASET.SUBSAMPLE_CLASSES", "base", epochs=10))
    new_eval, new_zero = str(tmp_path / "new"), str(tmp_path / "new-zero")
    run(taskres(data_root, new_eval, tiny_clip_path, *store, "DATASET.SUBSAMPLE_CLASSES", "new", "--eval-only",
                "--model-dir", base, "--load-epoch", 10))
    run(taskres(data_root, new_zero, tiny_clip_path, *store, "DATASET.SUBSAMPLE_CLASSES", "new", epochs=0))
    assert results(new_eval)["extras"]["unseen_classes_zeroshot"] == 5
    assert results(new_eval)["correct"] == results(new_zero)["correct"]


def test_init_weights_and_ignored_keys(data_root, tiny_clip_path, tmp_path, monkeypatch):
    from trainers.taskres import TaskRes

    store = ("FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", tmp_path / "store")
    trained = str(tmp_path / "trained")
    run(taskres(data_root, trained, tiny_clip_path, *store, epochs=6))
    ckpt = os.path.join(trained, "prompt_learner", "model.pth.tar-6")
    init = str(tmp_path / "init")
    trainer = run(taskres(data_root, init, tiny_clip_path, *store, "MODEL.INIT_WEIGHTS", ckpt, "--no-train"))
    assert torch.equal(trainer.learner.text_feature_residuals.cpu(), residuals(trained, 6))

    # A checkpoint without the buffers CoOp-style methods drop loads when they are declared.
    state = torch.load(ckpt, weights_only=True)
    del state["state_dict"]["base_text_features"]
    os.makedirs(tmp_path / "stripped" / "prompt_learner")
    torch.save(state, tmp_path / "stripped" / "prompt_learner" / "model.pth.tar-6")
    def evaluate(out):
        return taskres(data_root, out, tiny_clip_path, *store, "--eval-only", "--model-dir", tmp_path / "stripped",
                       "--load-epoch", 6)

    assert train.main([str(a) for a in evaluate(str(tmp_path / "e1"))]) == 2  # strict by default
    monkeypatch.setattr(TaskRes, "ignored_load_keys", ("base_text_features",))
    run(evaluate(str(tmp_path / "e2")))
    assert results(tmp_path / "e2")["accuracy"] == results(trained)["accuracy"]


def test_inert_dassl_keys_are_refused(data_root, tiny_clip_path, tmp_path, capsys):
    args = taskres(data_root, str(tmp_path / "o"), tiny_clip_path, "DATALOADER.TRAIN_X.SAMPLER", "RandomDomainSampler")
    assert train.main([str(a) for a in args]) == 2
    assert "DATALOADER.TRAIN_X.SAMPLER" in capsys.readouterr().err
    from engine.config import check_inert_keys, get_cfg_default
    check_inert_keys(get_cfg_default())  # defaults pass
    cfg = get_cfg_default()
    cfg.MODEL.HEAD.NAME = "mlp"
    with pytest.raises(ConfigError, match="MODEL.HEAD.NAME"):
        check_inert_keys(cfg)
