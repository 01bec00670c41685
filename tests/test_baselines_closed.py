"""GDA, LP++ and ProKeR: their core math against hand computations on tiny cases, and runs through
train.py on synthetic EuroSAT (and DTD) with the tiny CLIP: each beats zero-shot CLIP, records
what it chose and on which split, refits to the same model, evaluates from its fit file, and
scores new classes as zero-shot CLIP does."""
import math

import pytest
import torch

import train
from runs import results, run_direct as run
from trainers.gda import GDAHead, gda_classifier
from trainers.lppp import init_alpha, lr_alpha, lr_w
from trainers.proker import ProKeRModel, fit_alpha, support_rows

CONFIGS = {"GDA": "configs/trainers/GDA/rn50.yaml", "LPpp": "configs/trainers/LPpp/rn50.yaml",
           "ProKeR": "configs/trainers/ProKeR/rn50.yaml"}
FIT = {"GDA": "gda", "LPpp": "lppp", "ProKeR": "proker"}
SMALL = {"GDA": ["TRAINER.GDA.AUGMENT_EPOCH", 2], "LPpp": [], "ProKeR": ["TRAINER.ProKeR.AUGMENT_EPOCH", 2]}


# ---- GDA ---------------------------------------------------------------------------------------
def test_gda_classifier_matches_a_hand_computation():
    # 3 classes x 4 points in 2-D: means (2, 0), (0, 2), (-2, -2), each with deviations
    # (+-1, 0) and (0, +-2). Centred rows X (M = 12): X^T X = [[6, 0], [0, 24]], S = X^T X / 11,
    # trace(S) = 30/11, (M-1) S + trace(S) I = [[96/11, 0], [0, 294/11]],
    # Sigma^-1 = 2 * its inverse = [[11/48, 0], [0, 11/147]].
    devs = [(1.0, 0.0), (-1.0, 0.0), (0.0, 2.0), (0.0, -2.0)]
    means = [(2.0, 0.0), (0.0, 2.0), (-2.0, -2.0)]
    x = torch.tensor([[m[0] + d[0], m[1] + d[1]] for m in means for d in devs])
    y = torch.tensor([c for c in range(3) for _ in devs])
    weight, bias = gda_classifier(x, y, 3)
    # weight_c = Sigma^-1 mu_c; b_c = ln(1/3) - mu_c Sigma^-1 mu_c / 2
    assert torch.allclose(weight, torch.tensor([[11 / 24, 0.0], [0.0, 22 / 147], [-11 / 24, -22 / 147]],
                                               dtype=torch.float64), atol=1e-12)
    ln3 = math.log(3.0)
    assert torch.allclose(bias, torch.tensor([-ln3 - 11 / 24, -ln3 - 22 / 147, -ln3 - 11 / 24 - 22 / 147],
                                             dtype=torch.float64), atol=1e-12)
    # logits of a unit feature f = (0.6, 0.8) with text rows t0 = (1, 0), t1 = (0, 1), t2 = (0.6, -0.8)
    # and alpha 0.5: 100 f.t_c + 0.5 (f.w_c + b_c)
    head = GDAHead(3, 2, 0.5)
    head.weight.copy_(weight.float())
    head.bias.copy_(bias.float())
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, -0.8]])
    got = head(torch.tensor([[3.0, 4.0]]), text, 100.0)
    expected = [60.0 + 0.5 * (0.6 * 11 / 24 - ln3 - 11 / 24),
                80.0 + 0.5 * (0.8 * 22 / 147 - ln3 - 22 / 147),
                -28.0 + 0.5 * (-0.6 * 11 / 24 - 0.8 * 22 / 147 - ln3 - 11 / 24 - 22 / 147)]
    assert torch.allclose(got, torch.tensor([expected]), atol=1e-4)


# ---- LP++ --------------------------------------------------------------------------------------
def test_lppp_step_sizes_and_alpha_init_match_a_hand_computation():
    # F rows (1, 0), (0, 1), (0.6, 0.8): F^T F = [[1.36, 0.48], [0.48, 1.64]], trace 3, det 2, so
    # its eigenvalues are 2 and 1 and lr_w = 4 * 3 / 2 = 6.
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    assert lr_w(feats) == pytest.approx(6.0, rel=1e-12)
    # t0 = (1, 0), t1 = (0, 1): sum_i (f_i.t_c)^2 = 1.36 and 1.64, so lr_alpha = 3 / (4 * 1.64)
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert lr_alpha(feats, text) == pytest.approx(3 / 6.56, rel=1e-12)
    # labels 0, 1, 1: class 0's mean f.t0 = 1, class 1's mean f.t1 = (1 + 0.8) / 2 = 0.9
    assert init_alpha(feats, torch.tensor([0, 1, 1]), text) == pytest.approx(250 * 0.95, rel=1e-12)


# ---- ProKeR ------------------------------------------------------------------------------------
def proker_two_points():
    # support x1 = (1, 0) labelled 1, x2 = (0.6, 0.8) labelled 0; text t0 = (1, 0), t1 = (0, 1):
    # f0(X) = X T^T = [[1, 0], [0.6, 0.8]], Y - f0(X) = [[-1, 1], [0.4, -0.8]]
    return (torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64),
            torch.tensor([[-1.0, 1.0], [0.4, -0.8]], dtype=torch.float64))


def test_proker_solve_matches_a_hand_computation():
    # beta 2: K = [[1, e], [e, 1]], e = exp(-2 (1 - 0.6)) = 0.449328964; lambda 0.5:
    # (1/lambda) K + I = [[3, 2e], [2e, 3]], determinant 9 - 4e^2 = 8.192413928, inverse
    # [[3, -2e], [-2e, 3]] / 8.192413928, so alpha = inverse @ (Y - f0(X)):
    #   alpha_1 = (3 (-1, 1) - 0.898657928 (0.4, -0.8)) / 8.192413928 = (-0.410069999, 0.453947564)
    #   alpha_2 = (-0.898657928 (-1, 1) + 3 (0.4, -0.8)) / 8.192413928 = (0.256170885, -0.402647859)
    support, residual = proker_two_points()
    alpha = fit_alpha(support, residual, 2.0, 0.5)
    assert torch.allclose(alpha, torch.tensor([[-0.4100699990, 0.4539475636], [0.2561708852, -0.4026478590]],
                                              dtype=torch.float64), atol=1e-9)
    # logits of x = (0.8, 0.6): f0 = (0.8, 0.6); k(x, x1) = exp(-2 * 0.2) = 0.670320046,
    # k(x, x2) = exp(-2 * (1 - 0.96)) = 0.923116346:
    # (0.8, 0.6) + 0.670320046 alpha_1 + 0.923116346 alpha_2 = (0.761597391, 0.532599331)
    model = ProKeRModel(2, 2, 2, 2.0, 0.5)
    model.support.copy_(support.float())
    model.alpha.copy_(alpha.float())
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    got = model(torch.tensor([[4.0, 3.0]]), text, "cosine", 100.0)  # features are normalised first
    assert torch.allclose(got, torch.tensor([[0.7615973910, 0.5325993312]]), atol=1e-6)


def test_proker_lambda_runs_from_zero_shot_to_a_residual_cache():
    # lambda -> 0: alpha -> 0 (f0 alone); lambda -> infinity: alpha -> Y - f0(X), so the
    # correction becomes k(x, X) (Y - f0(X))
    g = torch.Generator().manual_seed(0)
    support = torch.nn.functional.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=-1)
    residual = torch.randn(6, 3, generator=g, dtype=torch.float64)
    assert fit_alpha(support, residual, 3.0, 1e-9).abs().max() < 1e-6
    assert torch.allclose(fit_alpha(support, residual, 3.0, 1e9), residual, atol=1e-6)


def test_proker_support_rows_are_views_pass_after_pass():
    raw = torch.tensor([[[3.0, 4.0], [0.0, 2.0]], [[1.0, 0.0], [-5.0, 0.0]]])  # 2 images x 2 views
    rows, labels = support_rows(raw, torch.tensor([7, 9]), "views")
    assert torch.allclose(rows, torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    assert labels.tolist() == [7, 9, 7, 9]
    keys, labels = support_rows(raw, torch.tensor([7, 9]), "mean")  # means (1.5, 3) and (-2, 0)
    assert torch.allclose(keys, torch.tensor([[1 / 5 ** 0.5, 2 / 5 ** 0.5], [-1.0, 0.0]]))
    assert labels.tolist() == [7, 9]


# ---- runs --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_path):
    from synthetic.layouts import write_dtd, write_eurosat

    root = tmp_path_factory.mktemp("closed")
    write_eurosat(str(root / "data"), per_class=24)  # 12 train, 5 val, 7 test images per class
    write_dtd(str(root / "data"), per_class=24)
    return {"root": str(root / "data"), "cache": str(root / "features"), "clip": tiny_clip_path, "tmp": root}


def argv(env, out, trainer, *opts, shots=8, dataset="eurosat"):
    return ["--root", env["root"], "--seed", "1", "--trainer", trainer, "--dataset-config-file",
            f"configs/datasets/{dataset}.yaml", "--config-file", CONFIGS.get(trainer, CONFIGS["GDA"]),
            "--output-dir", str(out), "DATASET.NUM_SHOTS", str(shots), "MODEL.BACKBONE.NAME", env["clip"],
            "DATALOADER.NUM_WORKERS", "0", "TRAIN.TENSORBOARD", "False", "FEATURES.MODE", "cached",
            "FEATURES.CACHE_DIR", env["cache"], "FEATURES.NUM_VIEWS", "2", *SMALL.get(trainer, []),
            *map(str, opts)]


def zero_shot(env, dataset="eurosat", subsample="all"):
    out = env["tmp"] / f"zs_{dataset}_{subsample}"
    if not (out / "results.json").exists():
        run(argv(env, out, "ZeroshotCLIP", "DATASET.SUBSAMPLE_CLASSES", subsample, dataset=dataset)
            + ["--eval-only"])
    return results(out)


@pytest.fixture(scope="module")
def fitted(env):
    done = {}

    def get(name):
        if name not in done:
            out = env["tmp"] / f"{name}_8"
            run(argv(env, out, name))
            done[name] = out
        return done[name]

    return get


@pytest.mark.parametrize("name,chosen", [("GDA", ["alpha"]), ("LPpp", ["epoch"]), ("ProKeR", ["beta", "lambda"])])
def test_beats_zero_shot_and_records_its_choice(env, fitted, name, chosen):
    r = results(fitted(name))
    assert r["accuracy"] > zero_shot(env)["accuracy"] + 5.0
    assert r["selection"]["tier"] == "fewshot-val"
    assert sorted(r["selection"]["chosen"]) == sorted(chosen)
    assert set(r["selection"]["split"].values()) == {"val"}


@pytest.mark.parametrize("name", ["GDA", "LPpp", "ProKeR"])
def test_eval_only_and_refit_reproduce_the_fit(env, fitted, name, tmp_path):
    out = fitted(name)
    first = torch.load(out / FIT[name] / "model-fit.pth.tar", weights_only=True)
    ev = tmp_path / "eval"
    run(argv(env, ev, name) + ["--eval-only", "--model-dir", str(out)])
    assert results(ev)["correct"] == results(out)["correct"]
    fitted, evaluated = results(out)["selection"], results(ev)["selection"]
    # the fit file keeps how it was chosen: the evaluation inherits the fit's tier and choices
    assert {k: evaluated[k] for k in ("tier", "chosen", "split")} == {k: fitted[k] for k in ("tier", "chosen", "split")}
    assert evaluated["inherited"]["chosen"] == fitted["chosen"]
    run(argv(env, out, name))  # the same command again: a closed-form run refits
    again = torch.load(out / FIT[name] / "model-fit.pth.tar", weights_only=True)
    assert first["state_dict"].keys() == again["state_dict"].keys()
    for key, value in first["state_dict"].items():
        assert torch.equal(value, again["state_dict"][key]), key


@pytest.mark.parametrize("name", ["GDA", "LPpp", "ProKeR"])
def test_new_classes_fall_back_to_zero_shot(env, name):
    base = env["tmp"] / f"{name}_base"
    run(argv(env, base, name, "DATASET.SUBSAMPLE_CLASSES", "base"))
    assert results(base)["accuracy"] > zero_shot(env, subsample="base")["accuracy"]
    new = env["tmp"] / f"{name}_new"
    run(argv(env, new, name, "DATASET.SUBSAMPLE_CLASSES", "new") + ["--eval-only", "--model-dir", str(base)])
    r = results(new)
    assert r["extras"]["unseen_classes_zeroshot"] == 5
    assert r["correct"] == zero_shot(env, subsample="new")["correct"]


def test_fixed_hyperparameters_choose_nothing(env):
    out = env["tmp"] / "gda_fixed"
    run(argv(env, out, "GDA", "TRAINER.GDA.ALPHA_SEARCH", "none", "TRAINER.GDA.ALPHA", 0.0))
    r = results(out)
    assert r["selection"]["tier"] == "none" and r["extras"]["alpha"] == 0.0
    assert r["correct"] == zero_shot(env)["correct"]  # alpha 0 is zero-shot CLIP
    out = env["tmp"] / "proker_fixed"
    run(argv(env, out, "ProKeR", "TRAINER.ProKeR.SEARCH", "none", "TRAINER.ProKeR.LAMBDA", 1e-12))
    r = results(out)
    assert r["selection"]["tier"] == "none" and r["extras"]["lambda"] == 1e-12
    assert r["correct"] == zero_shot(env)["correct"]  # lambda -> 0 leaves f0 (cosine) alone
    out = env["tmp"] / "lppp_last"
    run(argv(env, out, "LPpp", "TRAINER.LPpp.EPOCH_SELECTION", "last", "TRAINER.LPpp.EPOCHS", 20))
    r = results(out)
    assert r["selection"]["tier"] == "none" and r["extras"]["best_epoch"] == 20


def test_lppp_alpha_gradient_is_accumulated_unless_reset(env):
    """The released code never zeroes alpha's gradient: its first alpha step (epoch 10) is the
    same either way, its second (epoch 20) differs."""
    def alpha(epochs, rule):
        out = env["tmp"] / f"lppp_{rule}_{epochs}"
        run(argv(env, out, "LPpp", "TRAINER.LPpp.EPOCH_SELECTION", "last", "TRAINER.LPpp.EPOCHS", epochs,
                 "TRAINER.LPpp.ALPHA_GRAD", rule, "TEST.NO_TEST", True))
        return torch.load(out / "lppp" / "model-fit.pth.tar", weights_only=True)["state_dict"]["alpha"]

    assert torch.equal(alpha(10, "accumulate"), alpha(10, "since_step"))
    assert not torch.allclose(alpha(20, "accumulate"), alpha(20, "since_step"))


@pytest.mark.parametrize("key,value", [("TRAINER.GDA.ALPHA_SEARCH", "train"), ("TRAINER.LPpp.W_INIT", "median"),
                                       ("TRAINER.ProKeR.BASE", "logits"), ("TRAINER.ProKeR.BETA_GRID", (1, 2)),
                                       ("TRAINER.ProKeR.MAX_SUPPORT", 100)])
def test_bad_keys_are_one_clear_error(env, tmp_path, capsys, key, value):
    name = key.split(".")[1]
    assert train.main([str(a) for a in argv(env, tmp_path / "o", name, key, value)]) == 2
    assert key in capsys.readouterr().err


def test_proker_support_is_every_view_unless_averaged(env, fitted, tmp_path, capsys):
    r = results(fitted("ProKeR"))  # 8 shots x 10 classes, AUGMENT_EPOCH 2
    assert r["extras"]["support_size"] == 160
    fit = torch.load(fitted("ProKeR") / "proker" / "model-fit.pth.tar", weights_only=True)["state_dict"]
    assert torch.allclose(fit["support"].norm(dim=-1), torch.ones(160))
    assert not torch.allclose(fit["support"][:80], fit["support"][80:])  # pass 1, then pass 2
    out = env["tmp"] / "proker_mean"
    run(argv(env, out, "ProKeR", "TRAINER.ProKeR.SUPPORT", "mean"))
    assert results(out)["extras"]["support_size"] == 80
    assert results(out)["accuracy"] > zero_shot(env)["accuracy"] + 5.0
    # the fit's residual is of its own f0: another BASE at evaluation is refused
    code = train.main([str(a) for a in argv(env, tmp_path / "e", "ProKeR", "TRAINER.ProKeR.BASE", "probs")
                       + ["--eval-only", "--model-dir", str(fitted("ProKeR"))]])
    assert code == 2 and "TRAINER.ProKeR.BASE cosine" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["GDA", "LPpp", "ProKeR"])
def test_beats_zero_shot_on_dtd(env, name):
    out = env["tmp"] / f"{name}_dtd"
    run(argv(env, out, name, dataset="dtd"))
    assert results(out)["accuracy"] > zero_shot(env, "dtd")["accuracy"] + 5.0
