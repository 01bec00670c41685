"""ZS-LP and CLAP: the multipliers, penalty and outer step against hand computations, the
reference's pooled-view sampling, and runs through train.py with the tiny CLIP on synthetic
DTD and on a EuroSAT drawn with its own seed (no image shared with the other tests' EuroSAT)."""
import math

import pytest
import torch

from runs import results, run_direct as run, run_killed
from trainers.clap import outer_step, prototype_penalty, zero_shot_confidence
from trainers.common.view_pool import pooled_rows

ZSLP_CFG = "configs/trainers/ZSLP/SGD_lr1e-1_B256_ep300.yaml"
CLAP_CFG = "configs/trainers/CLAP/SGD_lr1e-1_B256_ep300.yaml"


# ---- math --------------------------------------------------------------------------------------
def test_multipliers_are_the_mean_zero_shot_confidence_on_the_class_views():
    base = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # un-normalised zero-shot prototypes
    views = torch.tensor([[[1.0, 0.0], [3.0, 4.0]],     # the class-0 image, 2 views
                          [[0.0, 1.0], [-1.0, 0.0]]])   # the class-1 image
    lam = zero_shot_confidence(views, torch.tensor([0, 1]), base, logit_scale=1.0, num_classes=2)
    # normalised views give cosines (1, 0), (0.6, 0.8) and (0, 1), (-1, 0); softmax at scale 1:
    # class 0: p0 = e / (e + 1) = 0.731059 and 1 / (1 + e^0.2) = 0.450166 -> 0.590612
    # class 1: p1 = e / (1 + e) = 0.731059 and 1 / (1 + e^-1) = 0.731059 -> 0.731059
    assert lam.tolist() == pytest.approx([0.590612, 0.731059], abs=1e-6)
    assert lam[0].item() == pytest.approx((math.e / (math.e + 1) + 1 / (1 + math.exp(0.2))) / 2, abs=1e-7)


def test_a_class_without_support_views_gets_no_weight():
    base = torch.eye(3)
    lam = zero_shot_confidence(torch.eye(3)[:2].unsqueeze(1), torch.tensor([0, 1]), base, 100.0, 3)
    assert lam[2].item() == 0.0 and lam[0].item() == pytest.approx(1.0)


def test_penalty_is_the_class_mean_of_weighted_squared_distances():
    w = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    lam = torch.tensor([0.5, 0.25])
    assert prototype_penalty(w, t, lam).item() == pytest.approx((0.5 * 1.0 + 0.25 * 4.0) / 2)


def test_augmented_lagrangian_step():
    w = torch.tensor([[1.0, 1.0], [0.0, 2.0], [0.0, 0.0]])
    t = torch.zeros(3, 2)
    lam, rho = outer_step(w, t, torch.tensor([0.5, 0.2, -1.0]), torch.tensor([0.0, 2.0, 3.0]))
    # h = (2, 4, 0): lambda + rho h = (0.5, 8.2, -1) -> clipped at 0; rho <- h
    assert lam.tolist() == pytest.approx([0.5, 8.2, 0.0]) and rho.tolist() == [2.0, 4.0, 0.0]


def test_an_epoch_samples_the_view_pool_as_the_reference():
    from yacs.config import CfgNode as CN

    def epoch(n, v, bs):
        views = torch.arange(n * v, dtype=torch.float32).view(n, v, 1)  # row value = image * v + view
        cfg = CN({"DATALOADER": CN({"TRAIN_X": CN({"BATCH_SIZE": bs})})})
        return list(pooled_rows(views, torch.arange(n) * 10, cfg))

    torch.manual_seed(0)
    small = epoch(3, 4, 8)  # 3 images < batch 8: one batch of 8 rows out of the pool of 12
    assert len(small) == 1 and len(small[0][0]) == 8
    rows = small[0][0].view(-1).long()
    assert len(set(rows.tolist())) == 8 and torch.equal(small[0][1], (rows // 4) * 10)
    big = epoch(10, 2, 4)  # 10 images: 10 // 4 = 2 batches of 4 distinct rows of the 20
    assert [len(b[0]) for b in big] == [4, 4]
    assert len({int(x) for b in big for x in b[0].view(-1)}) == 8


# ---- runs --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_path):
    from synthetic.layouts import write_dtd, write_eurosat

    root = tmp_path_factory.mktemp("clap")
    write_eurosat(str(root / "data"), per_class=20, seed=2024)
    write_dtd(str(root / "data"), per_class=20)
    return {"root": str(root / "data"), "store": str(root / "store"), "clip": tiny_clip_path, "tmp": root}


DATASETS = {"eurosat": "configs/datasets/eurosat.yaml", "dtd": "configs/datasets/dtd.yaml"}


def argv(env, out, trainer, config, dataset="eurosat", *opts, shots=4, epochs=30):
    return ["--root", env["root"], "--seed", "1", "--trainer", trainer, "--dataset-config-file", DATASETS[dataset],
            "--config-file", config, "--output-dir", str(out), "DATASET.NUM_SHOTS", shots,
            "MODEL.BACKBONE.NAME", env["clip"], "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False,
            "FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", env["store"], "FEATURES.NUM_VIEWS", 4,
            "OPTIM.MAX_EPOCH", epochs, *opts]


def zero_shot(env, dataset, subsample="all"):
    out = env["tmp"] / f"zs_{dataset}_{subsample}"
    if not (out / "results.json").exists():
        run(argv(env, out, "ZeroshotCLIP", "configs/trainers/ZeroshotCLIP/rn50.yaml", dataset,
                 "DATASET.SUBSAMPLE_CLASSES", subsample) + ["--eval-only"])
    return results(out)


@pytest.mark.parametrize("dataset", ["eurosat", "dtd"])
@pytest.mark.parametrize("trainer,config", [("ZSLP", ZSLP_CFG), ("CLAP", CLAP_CFG)])
def test_beats_zero_shot_and_chooses_nothing(env, trainer, config, dataset):
    out = env["tmp"] / f"{trainer}_{dataset}"
    run(argv(env, out, trainer, config, dataset))
    r = results(out)
    assert r["accuracy"] > zero_shot(env, dataset)["accuracy"] + 10.0
    assert r["selection"]["tier"] == "none" and r["selection"]["chosen"] == {}
    assert r["extras"]["views"] == 4 and r["epoch"] == 30
    if trainer == "CLAP":
        assert r["extras"]["multipliers"] == "fixed" and 0.0 < r["extras"]["initial_multipliers_mean"] < 1.0


def test_clap_keeps_prototypes_closer_to_zero_shot_than_zslp(env):
    """The penalty's whole point: with the same data and steps, CLAP's prototypes move less."""
    moved = {}
    for trainer, config in (("ZSLP", ZSLP_CFG), ("CLAP", CLAP_CFG)):
        t = run(argv(env, env["tmp"] / f"{trainer}_moved", trainer, config, "eurosat", "TEST.NO_TEST", True))
        moved[trainer] = (t.adapter.prototypes - t.adapter.base_text_features).norm().item()
    assert 0.0 < moved["CLAP"] < moved["ZSLP"]


def test_new_classes_fall_back_to_zero_shot(env):
    base = env["tmp"] / "clap_base"
    run(argv(env, base, "CLAP", CLAP_CFG, "eurosat", "DATASET.SUBSAMPLE_CLASSES", "base"))
    new = env["tmp"] / "clap_new"
    run(argv(env, new, "CLAP", CLAP_CFG, "eurosat", "DATASET.SUBSAMPLE_CLASSES", "new")
        + ["--eval-only", "--model-dir", str(base)])
    assert results(new)["correct"] == zero_shot(env, "eurosat", "new")["correct"]


def test_augmented_lagrangian_resumes_exactly(env, monkeypatch):
    from trainers.clap import CLAP

    opts = ("TRAINER.CLAP.MULTIPLIERS", "augmented_lagrangian")
    full = env["tmp"] / "al_full"
    t = run(argv(env, full, "CLAP", CLAP_CFG, "eurosat", *opts, epochs=4))
    part = env["tmp"] / "al_part"
    run_killed([str(a) for a in argv(env, part, "CLAP", CLAP_CFG, "eurosat", *opts, epochs=4)], 2, monkeypatch, CLAP)
    run(argv(env, part, "CLAP", CLAP_CFG, "eurosat", *opts, epochs=4))
    a = torch.load(full / "adapter" / "model.pth.tar-4", weights_only=True)["state_dict"]
    b = torch.load(part / "adapter" / "model.pth.tar-4", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the outer step ran: rho holds the squared distances of the last epoch (it starts at 0)
    h = (t.adapter.prototypes - t.adapter.base_text_features).pow(2).sum(-1)
    assert torch.allclose(a["penalty"], h.cpu()) and results(full)["correct"] == results(part)["correct"]


def test_runs_appear_in_the_comparison_table(env, tmp_path):
    from analysis.compare import main

    roots = []
    for trainer, config in (("ZSLP", ZSLP_CFG), ("CLAP", CLAP_CFG)):
        out = env["tmp"] / f"{trainer}_eurosat"
        if not (out / "results.json").exists():
            run(argv(env, out, trainer, config))
        roots.append(str(out))
    table = tmp_path / "table.md"
    assert main(roots + ["--out", str(table)]) == 0
    rows = [line.split("|")[1].strip() for line in table.read_text().splitlines() if line.startswith("| ")]
    assert {"ZS-LP", "CLAP"} <= {r.split(" [")[0] for r in rows}  # labels carry " [backbone]" off RN50
