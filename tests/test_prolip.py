"""ProLIP: pre-projection features against CLIP's own embeddings (ViT and ResNet tiny CLIPs), the
proximal penalty and its gradient by hand, the reference's view order, the store namespaces,
and runs through train.py on synthetic DTD and on a EuroSAT drawn with its own seed."""
import json
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import clip
from runs import results, run_direct as run
from trainers.prolip import ProjectionHead, ProLIP, proximal_lambda

CFG = "configs/trainers/ProLIP/few_shot_no_val_lr1e-5_lambda_1_N.yaml"


# ---- pre-projection features -------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["vit", "rn"])
def test_projecting_pre_projection_features_gives_clip_embeddings(arch, tiny_clip_path, tiny_clip_rn_path):
    model = clip.load(tiny_clip_path if arch == "vit" else tiny_clip_rn_path)
    images = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    z = clip.encode_image_pre_projection(model, images)
    weight, bias = clip.image_projection(model)
    width = model.visual.attnpool.c_proj.in_features if arch == "rn" else model.visual.proj.shape[0]
    assert z.shape == (4, width) and weight.shape == (model.embed_dim, width)
    assert (bias is not None) == (arch == "rn")
    f = z @ weight.t() + (bias if bias is not None else 0.0)
    assert torch.allclose(F.normalize(f, dim=-1), F.normalize(clip.encode_image(model, images), dim=-1), atol=1e-5)


# ---- penalty, lambda, views --------------------------------------------------------------------
def test_penalty_and_its_gradient_by_hand():
    p0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    head = ProjectionHead(p0, torch.tensor([0.5, -0.5]), "projection")
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.5, 2.0], [3.0, 3.0]]))
    lam = proximal_lambda("1/N", 4)
    loss = lam * head.penalty()
    loss.backward()
    # ||P - P0||^2 = 0.5^2 + 1^2 = 1.25; d/dP of lambda ||P - P0||^2 = 2 lambda (P - P0)
    assert lam == 0.25 and loss.item() == pytest.approx(0.3125)
    assert head.weight.grad.tolist() == [[0.25, 0.0], [0.0, -0.5]]
    # f = z @ P^T + b, the bias frozen and not saved
    assert head(torch.tensor([[1.0, 1.0]])).tolist() == [[4.0, 5.5]]
    assert list(head.state_dict()) == ["weight"]


def test_lambda_rules():
    assert proximal_lambda("1/N", 16) == 1 / 16 and proximal_lambda("1/N^2", 4) == 1 / 16
    assert proximal_lambda("fixed", 4, 0.3) == 0.3


def test_linear_adapter_starts_at_the_identity_on_the_projected_feature():
    p0 = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    head = ProjectionHead(p0, None, "linear_adapter")
    z = torch.tensor([[1.0, 2.0, 3.0]])
    assert head.weight.shape == (2, 2) and head(z).tolist() == [[7.0, 5.0]] and head.penalty().item() == 0.0


def test_epoch_e_trains_on_view_e_plus_1_mod_v():
    feats = torch.arange(2 * 3, dtype=torch.float32).view(2, 3, 1)  # 2 images x 3 views
    seen = [int(next(ProLIP._epoch_batch(SimpleNamespace(epoch=e), feats, None, 3))[0][0]) for e in range(4)]
    assert seen == [1, 2, 0, 1]  # the reference's counter: views 1, 2, ..., V - 1, 0, 1, ...


# ---- runs --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_path):
    from synthetic.layouts import write_dtd, write_eurosat

    root = tmp_path_factory.mktemp("prolip")
    write_eurosat(str(root / "data"), per_class=20, seed=2024)
    write_dtd(str(root / "data"), per_class=20)
    return {"root": str(root / "data"), "store": str(root / "store"), "clip": tiny_clip_path, "tmp": root}


DATASETS = {"eurosat": "configs/datasets/eurosat.yaml", "dtd": "configs/datasets/dtd.yaml"}


def argv(env, out, dataset="eurosat", *opts, trainer="ProLIP", config=CFG, shots=4):
    return ["--root", env["root"], "--seed", "1", "--trainer", trainer, "--dataset-config-file", DATASETS[dataset],
            "--config-file", config, "--output-dir", str(out), "DATASET.NUM_SHOTS", shots,
            "MODEL.BACKBONE.NAME", env["clip"], "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False,
            "FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", env["store"], "FEATURES.NUM_VIEWS", 8, *opts]


def zero_shot(env, dataset, subsample="all"):
    out = env["tmp"] / f"zs_{dataset}_{subsample}"
    if not (out / "results.json").exists():
        trainer = run(argv(env, out, dataset, "DATASET.SUBSAMPLE_CLASSES", subsample, trainer="ZeroshotCLIP",
                           config="configs/trainers/ZeroshotCLIP/rn50.yaml") + ["--eval-only"])
        env[f"zs_trainer_{dataset}_{subsample}"] = trainer
    return results(out)


@pytest.mark.parametrize("dataset", ["eurosat", "dtd"])
def test_beats_zero_shot_and_chooses_nothing(env, dataset):
    """At lr 1e-3 (one of the learning rates the paper reports as working with lambda = 1/N
    without validation) for 50 epochs; the recipe's own lr 1e-5 x 300 epochs: the slow test."""
    out = env["tmp"] / f"prolip_{dataset}"
    run(argv(env, out, dataset, "OPTIM.LR", 1e-3, "OPTIM.MAX_EPOCH", 50))
    r = results(out)
    assert r["accuracy"] > zero_shot(env, dataset)["accuracy"] + 10.0
    assert r["selection"]["tier"] == "none" and r["epoch"] == 50
    assert r["extras"]["lambda"] == 0.25 and r["extras"]["variant"] == "projection"


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["eurosat", "dtd"])
def test_the_reference_recipe_beats_zero_shot(env, dataset):
    out = env["tmp"] / f"prolip_ref_{dataset}"
    run(argv(env, out, dataset))  # lr 1e-5, lambda 1/N, 300 full-batch epochs
    r = results(out)
    assert r["accuracy"] > zero_shot(env, dataset)["accuracy"] + 5.0 and r["epoch"] == 300


def test_the_store_keeps_pre_projection_features_apart(env):
    """Two namespaces in one store; the stored pre-projection features, projected by P0, are the
    stored CLIP embeddings (within the store's fp16)."""
    zero_shot(env, "eurosat")
    prolip = run(argv(env, env["tmp"] / "prolip_store", "eurosat", "OPTIM.MAX_EPOCH", 0))
    zs = env["zs_trainer_eurosat_all"]
    assert zs._feature_identity()[0] == prolip._feature_identity()[0]
    assert prolip._feature_identity()[1] == zs._feature_identity()[1] + "|pre-projection"
    metas = [json.load(open(os.path.join(d, "meta.json"))) for d, _, files in os.walk(env["store"])
             if "meta.json" in files]
    kinds = {(m["backbone"].endswith("|pre-projection"), m["dim"]) for m in metas}
    assert kinds == {(False, 128), (True, 64)}  # tiny ViT: embeddings 128-d, before projection 64-d
    z, labels = prolip.source.split_features("test")
    f, labels_zs = zs.source.split_features("test")
    assert torch.equal(labels, labels_zs)
    projected = F.normalize(prolip.head(z), dim=-1)
    assert torch.allclose(projected, F.normalize(f, dim=-1), atol=2e-3)


def test_the_projection_applies_to_new_classes(env):
    base = env["tmp"] / "prolip_base"
    trained = run(argv(env, base, "eurosat", "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.LR", 1e-3,
                       "OPTIM.MAX_EPOCH", 50))
    new = env["tmp"] / "prolip_new"
    t = run(argv(env, new, "eurosat", "DATASET.SUBSAMPLE_CLASSES", "new") + ["--eval-only", "--model-dir", str(base)])
    assert torch.equal(t.head.weight, trained.head.weight)  # class-agnostic: the trained P, unchanged
    assert t.text_weights.shape[0] == 5 and results(new)["num_shots"] == 4


def test_regularised_linear_adapter_trains(env):
    out = env["tmp"] / "rla"
    run(argv(env, out, "eurosat", "TRAINER.PROLIP.VARIANT", "linear_adapter", "OPTIM.LR", 1e-3, "OPTIM.MAX_EPOCH", 50))
    r = results(out)
    assert r["accuracy"] > zero_shot(env, "eurosat")["accuracy"] + 5.0
    assert r["extras"]["variant"] == "linear_adapter"
    state = torch.load(out / "projection" / "model.pth.tar-50", weights_only=True)["state_dict"]
    assert list(state) == ["weight"] and state["weight"].shape == (128, 128)


def test_runs_appear_in_the_comparison_table(env, tmp_path):
    from analysis.compare import main

    for name, opts in (("prolip_eurosat", ()), ("rla", ("TRAINER.PROLIP.VARIANT", "linear_adapter"))):
        if not (env["tmp"] / name / "results.json").exists():
            run(argv(env, env["tmp"] / name, "eurosat", "OPTIM.MAX_EPOCH", 5, *opts))
    table = tmp_path / "table.md"
    assert main([str(env["tmp"] / "prolip_eurosat"), str(env["tmp"] / "rla"), "--out", str(table)]) == 0
    rows = {line.split("|")[1].strip().split(" [")[0] for line in table.read_text().splitlines() if line.startswith("| ")}
    assert {"ProLIP", "Reg. linear adapter"} <= rows


def test_a_resnet_clip_trains_its_attention_pool_projection(env, tiny_clip_rn_path, tmp_path):
    """The ResNet path end to end: pre-projection rows wider than the embedding (256 > 32 on the
    tiny ResNet), P = attnpool.c_proj's weight, its bias frozen."""
    store = str(tmp_path / "store")
    t = run(argv(env, tmp_path / "rn", "eurosat", "MODEL.BACKBONE.NAME", tiny_clip_rn_path, "FEATURES.CACHE_DIR", store,
                 "OPTIM.MAX_EPOCH", 2, "OPTIM.LR", 1e-3))
    p0, bias = clip.image_projection(t.clip_model)
    assert t.head.weight.shape == p0.shape == (32, 256) and torch.equal(t.head.bias, bias)
    assert not torch.equal(t.head.weight.detach(), p0)  # trained
    z, _ = t.source.split_features("test")
    assert z.shape[1] == 256
    state = torch.load(tmp_path / "rn" / "projection" / "model.pth.tar-2", weights_only=True)["state_dict"]
    assert torch.equal(state["weight"], t.head.weight.detach().cpu())
