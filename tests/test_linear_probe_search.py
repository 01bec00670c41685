"""The linear probe's C search at a lower cost: fits in the row space of the training features
(ROW_SPACE) choose the same C and make the same predictions as the full-space fits the search
ran before (scikit-learn's coordinates), which `fit_logistic` still runs; warm starts still reach
the optimum of their own C."""
import math

import pytest
import torch

from runs import results, run_direct as run
from trainers.linear_probe import C_GRID, LogisticProblem, fit_logistic, search_c

CFG = "configs/trainers/LinearProbe/rn50.yaml"


def clusters(seed, per_class, d=96, k=5, noise=2.0):
    """Overlapping classes in more dimensions than images (few-shot on CLIP's features)."""
    means = torch.randn(k, d, generator=torch.Generator().manual_seed(99)) * 0.4
    y = torch.arange(k).repeat_interleave(per_class)
    return means[y] + noise * torch.randn(len(y), d, generator=torch.Generator().manual_seed(seed)), y


def search(fit, Xv, yv, steps=4):
    fits = {}

    def score(c):
        key = round(math.log10(c), 9)
        if key not in fits:
            fits[key] = fit(c)
        W, b = fits[key][:2]
        return 100.0 * ((Xv @ W.t() + b).argmax(-1) == yv).float().mean().item()

    c, trace = search_c(score, C_GRID, steps)
    return c, trace, fits[round(math.log10(c), 9)]


@pytest.mark.parametrize("per_class", [1, 2, 4])
def test_row_space_search_matches_the_full_space_search(per_class):
    X, y = clusters(1, per_class)
    Xv, yv = clusters(2, min(per_class, 4))
    Xt, yt = clusters(3, 20)
    assert X.shape[0] < X.shape[1]  # the case the row space changes
    ref_c, ref_trace, (ref_W, ref_b, _) = search(lambda c: fit_logistic(X, y, 5, c), Xv, yv)
    problem = LogisticProblem(X, y, 5, row_space=True)
    assert problem.Z.shape == (len(y), len(y))  # the fits run on N coordinates, not D
    c, trace, (W, b, _, _) = search(lambda c: problem.fit(c), Xv, yv)
    assert c == ref_c and trace == ref_trace
    assert torch.equal((Xt @ W.t() + b).argmax(-1), (Xt @ ref_W.t() + ref_b).argmax(-1))
    assert torch.allclose(W, ref_W, atol=1e-3 * float(ref_W.abs().max()) + 1e-6)


def gradient_at(X, y, W, b, C):
    W = W.double().requires_grad_(True)
    b = b.double().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(X.double() @ W.t() + b, y) + (W ** 2).sum() / (2 * C * len(y))
    loss.backward()
    return max(float(W.grad.abs().max()), float(b.grad.abs().max()))


@pytest.mark.parametrize("row_space", [True, False])
def test_a_warm_started_fit_reaches_its_own_optimum(row_space):
    X, y = clusters(1, 3)
    problem = LogisticProblem(X, y, 5, row_space=row_space)
    _, _, cold_iters, x1 = problem.fit(1.0)
    W, b, iters, _ = problem.fit(1.3, x0=x1)  # a neighbouring C, started at C = 1's solution
    assert gradient_at(X, y, W, b, 1.3) < 1e-3
    assert iters < cold_iters


# ---- runs: the trainer's search, before (full space) and now --------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_path):
    from synthetic.layouts import write_eurosat

    root = tmp_path_factory.mktemp("lps")
    write_eurosat(str(root / "data"), per_class=20)
    return {"root": str(root / "data"), "cache": str(root / "features"), "clip": tiny_clip_path, "tmp": root}


def lp_run(env, name, *opts):
    out = env["tmp"] / name
    run(["--root", env["root"], "--seed", "1", "--trainer", "LinearProbe", "--dataset-config-file",
         "configs/datasets/eurosat.yaml", "--config-file", CFG, "--output-dir", str(out),
         "DATASET.NUM_SHOTS", "2", "MODEL.BACKBONE.NAME", env["clip"], "DATALOADER.NUM_WORKERS", "0",
         "TRAIN.TENSORBOARD", "False", "FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", env["cache"],
         "TRAINER.LINEAR_PROBE.SEARCH_STEPS", "3", *map(str, opts)])
    return results(out), torch.load(out / "linear_probe" / "model-fit.pth.tar", weights_only=True)


def test_the_trainer_chooses_the_same_c_and_predicts_the_same(env):
    # 2 shots x 10 classes = 20 images in the tiny CLIP's 128 dimensions: the row space applies.
    before, ckpt_before = lp_run(env, "full_space", "TRAINER.LINEAR_PROBE.ROW_SPACE", "False")
    now, ckpt_now = lp_run(env, "row_space")
    assert now["extras"]["C"] == before["extras"]["C"]
    assert now["extras"]["c_search"] == before["extras"]["c_search"]
    assert now["correct"] == before["correct"] and now["accuracy"] == before["accuracy"]
    W0, W1 = ckpt_before["state_dict"]["weight"], ckpt_now["state_dict"]["weight"]
    assert torch.allclose(W0, W1, atol=1e-3 * float(W0.abs().max()))


def test_the_torch_loss_gives_the_same_row_space_fit():
    """On an accelerator the loss runs in torch (float64); checked here on the CPU."""
    X, y = clusters(1, 2)
    W1, b1, it1, _ = LogisticProblem(X, y, 5, numpy_loss=True).fit(0.5)
    W2, b2, it2, _ = LogisticProblem(X, y, 5, numpy_loss=False).fit(0.5)
    assert it1 == it2 and torch.allclose(W1, W2, atol=1e-5) and torch.allclose(b1, b2, atol=1e-5)
