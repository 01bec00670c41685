"""Linear probe: the C search, the logistic-regression optimum, and runs through train.py on
synthetic EuroSAT with the tiny CLIP."""
import math
import os

import pytest
import torch

import train
from runs import opt, results, run_direct as run
from trainers.linear_probe import C_GRID, fit_logistic, search_c

CFG = "configs/trainers/LinearProbe/rn50.yaml"


# ---- search and solver -------------------------------------------------------------------------
def test_search_converges_to_the_peak_of_a_unimodal_score():
    peak = 2.3  # val accuracy peaks at C = 10^2.3
    c, trace = search_c(lambda c: 100.0 - 10.0 * abs(math.log10(c) - peak), C_GRID, steps=8)
    assert [t[0] for t in trace[:7]] == list(C_GRID)  # the coarse grid first, in its order
    assert abs(math.log10(c) - peak) < 2.0 / 2 ** 7  # within the last bisection interval
    assert len(trace) == 7 + 2 * 8


def test_search_ties_go_to_the_first_grid_point_then_left():
    c, _ = search_c(lambda c: 50.0, C_GRID, steps=8)
    # c_peak = 1e6 (first of the grid); every bisection tie keeps the left (smaller) end
    assert c == pytest.approx(1e5)
    c0, trace = search_c(lambda c: 50.0, C_GRID, steps=0)
    assert c0 == 1e6 and len(trace) == 7


def toy(seed=0, n=20, d=6, k=3):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=g) * 2
    y = torch.arange(k).repeat_interleave(n)
    return means[y] + torch.randn(len(y), d, generator=g), y


@pytest.mark.parametrize("solver", ["scipy", "torch"])
@pytest.mark.parametrize("C", [1e-2, 1.0])
def test_fit_reaches_the_regularised_optimum(solver, C):
    """scikit-learn's objective, written out here: mean cross-entropy + ||W||^2 / (2 C N), bias
    not penalised; its gradient vanishes at the fitted (W, b)."""
    X, y = toy()
    W, b, _ = fit_logistic(X, y, 3, C, solver=solver)
    W = W.clone().double().requires_grad_(True)
    b = b.clone().double().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(X.double() @ W.t() + b, y) + (W ** 2).sum() / (2 * C * len(y))
    loss.backward()
    assert W.grad.abs().max() < 1e-3 and b.grad.abs().max() < 1e-3
    assert abs(b.detach().sum()) < 1e-3  # started at 0; the unpenalised biases keep summing to 0


def test_loss_on_an_accelerator_gives_the_same_fit():
    """The scipy solver evaluates the loss with torch when the features are on a GPU; the same
    iterates as the NumPy loss used on the CPU (checked here on the CPU)."""
    from trainers.linear_probe import _fit_scipy

    X, y = toy()
    W1, b1, it1 = _fit_scipy(X, y, 3, 1.0, 1000, 1e-4, numpy_loss=True)
    W2, b2, it2 = _fit_scipy(X, y, 3, 1.0, 1000, 1e-4, numpy_loss=False)
    assert it1 == it2 and torch.allclose(W1, W2, atol=1e-5) and torch.allclose(b1, b2, atol=1e-5)


def test_search_on_a_toy_problem_picks_the_best_validation_c():
    X, y = toy(0)
    Xv, yv = toy(1, n=8)
    accs = {}

    def score(c):
        W, b, _ = fit_logistic(X, y, 3, c)
        accs[c] = 100.0 * ((Xv @ W.t() + b).argmax(-1) == yv).float().mean().item()
        return accs[c]

    c, trace = search_c(score, C_GRID, steps=3)
    assert accs[c] == max(a for _, a in trace)
    assert accs[1e-6] < accs[c]  # over-regularised: the probe barely moves from 0


# ---- runs --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_path):
    from synthetic.layouts import write_eurosat

    root = tmp_path_factory.mktemp("lp")
    write_eurosat(str(root / "data"), per_class=34)  # 17 train, 7 val, 10 test images per class
    return {"root": str(root / "data"), "cache": str(root / "features"), "clip": tiny_clip_path, "tmp": root}


def argv(env, out, *opts, trainer="LinearProbe"):
    return ["--root", env["root"], "--seed", "1", "--trainer", trainer, "--dataset-config-file",
            "configs/datasets/eurosat.yaml", "--config-file", CFG, "--output-dir", str(out),
            "DATASET.NUM_SHOTS", "16", "MODEL.BACKBONE.NAME", env["clip"], "DATALOADER.NUM_WORKERS", "0",
            "TRAIN.TENSORBOARD", "False", "FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", env["cache"],
            *map(str, opts)]


def zero_shot(env, subsample="all"):
    out = env["tmp"] / f"zs_{subsample}"
    run(argv(env, out, "DATASET.SUBSAMPLE_CLASSES", subsample, trainer="ZeroshotCLIP") + ["--eval-only"])
    return results(out)


@pytest.fixture(scope="module")
def trained(env):
    out = env["tmp"] / "lp16"
    run(argv(env, out))
    return out


def test_linear_probe_learns_beyond_zero_shot(env, trained):
    r = results(trained)
    assert r["accuracy"] > zero_shot(env)["accuracy"] + 10.0
    ex = r["extras"]
    assert ex["solver"] == "scipy" and ex["C"] > 0 and len(ex["c_search"]) == 7 + 2 * 8
    assert ex["val_accuracy"] == max(a for c, a in ex["c_search"] if c == ex["C"])
    log = (trained / "log.txt").read_text()
    assert "Finish training" in log and f"* accuracy: {r['accuracy']:.1f}%" in log


def test_checkpoint_and_eval_only_round_trip(env, trained):
    state = torch.load(trained / "linear_probe" / "model-fit.pth.tar", weights_only=True)
    assert set(state["state_dict"]) == {"weight", "bias"}
    assert state["state_dict"]["weight"].shape[0] == 10 and state["C"] == results(trained)["extras"]["C"]
    ev = env["tmp"] / "lp16_eval"
    run(argv(env, ev) + ["--eval-only", "--model-dir", str(trained)])
    assert results(ev)["correct"] == results(trained)["correct"]


def test_unseen_classes_get_zero_shot_rows(env):
    base = env["tmp"] / "lp_base"
    run(argv(env, base, "DATASET.SUBSAMPLE_CLASSES", "base", "TRAINER.LINEAR_PROBE.SEARCH_STEPS", "2"))
    new = env["tmp"] / "lp_new"
    run(argv(env, new, "DATASET.SUBSAMPLE_CLASSES", "new") + ["--eval-only", "--model-dir", str(base)])
    assert results(new)["extras"]["unseen_classes_zeroshot"] == 5
    assert results(new)["correct"] == zero_shot(env, "new")["correct"]


def test_fixed_c_skips_the_search(env):
    out = env["tmp"] / "lp_fixed"
    run(argv(env, out, "TRAINER.LINEAR_PROBE.C", "0.5", "TRAINER.LINEAR_PROBE.SOLVER", "torch"))
    ex = results(out)["extras"]
    assert ex["C"] == 0.5 and ex["fits"] == 1 and ex["c_search"] is None and ex["solver"] == "torch"


def test_bad_solver_is_one_clear_error(env, tmp_path, capsys):
    assert train.main(argv(env, tmp_path / "o", "TRAINER.LINEAR_PROBE.SOLVER", "sklearn")) == 2
    assert "TRAINER.LINEAR_PROBE.SOLVER must be one of scipy, torch" in capsys.readouterr().err


def test_script_runs_three_seeds(fake):
    run_script, recorded, _, tmp = fake
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "linear_probe",
                          "main.sh")
    proc = run_script(script, "oxford_pets", "rn50", "8", DATA="data")
    assert proc.returncode == 0, proc.stderr
    runs = recorded()
    assert len(runs) == 3
    assert opt(runs[0], "--output-dir") == str(tmp / "output" / "oxford_pets" / "LinearProbe" / "rn50_8shots" / "seed1")
    assert opt(runs[0], "--config-file") == "configs/trainers/LinearProbe/rn50.yaml"
    proc = run_script(script, "oxford_pets", "rn5O", "8", DATA="data")
    assert proc.returncode == 2 and "rn50" in proc.stderr
