"""Linear-probe CLIP, the protocol of CoOp's lpclip (Radford et al. 2021, App. A3).

The reference (lpclip/feat_extractor.py + linear_probe.py):
- image features of every split with the TEST transform (resize + center crop, no
  augmentation), raw: not L2-normalised;
- scikit-learn LogisticRegression(solver="lbfgs", penalty="l2", max_iter=1000, C): multinomial,
  objective  mean_i CE(W x_i + b, y_i) + ||W||^2 / (2 C N)  (bias not penalised), started at 0,
  L-BFGS-B with gtol 1e-4 (sklearn's tol), ftol 64 * machine eps, at most 50 line-search steps;
- C: fit at each of [1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6] and score on the few-shot validation
  split (min(K, 4) images per class); c_peak = the first best; then 8 steps of log-space
  bisection on [c_peak / 10, c_peak * 10]: fit at both ends, the better one (ties: the left,
  smaller C) is c_final, and the interval halves towards it; the classifier fitted at the last
  c_final is the result.
Here the same objective and search run on the run's own few-shot splits, through train.py like
every trainer (log block, results.json, checkpoint `linear_probe/model-fit.pth.tar` with
`weight` [K, D] and `bias` [K]). The solver (TRAINER.LINEAR_PROBE.SOLVER):
- "scipy" (default): SciPy's L-BFGS-B, the routine and settings scikit-learn calls, on the
  same float64 objective (NumPy on the CPU; torch on the run's GPU when there is one, so large
  problems such as ImageNet's 16 000 x 1000 classes are evaluated there): the same iterates and
  optimum as scikit-learn, without depending on it;
- "torch": torch.optim.LBFGS (strong-Wolfe line search) in float32 on the device. Cheaper, but it
  stops at another point within the tolerance, and with weak regularisation (large C, where
  the optimum is far away) its predictions can differ markedly from scikit-learn's.
Fits are cached per C (the bisection re-scores one end of every interval).

Classes never trained on (base -> new): their rows are zero-shot CLIP's text classifier, scaled
to the raw features: weight = exp(logit_scale) * t / r with t the L2-normalised text feature of
the dataset's hand-written template and r the mean norm of the training features (saved in the
checkpoint), bias 0, so such a row scores about as zero-shot CLIP does.
"""
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

import clip
from engine.errors import ConfigError, UserError
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer

from .common.templates import custom_template
from .common.text import encode_prompts

C_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)
SOLVERS = ("scipy", "torch")


# ---- multinomial logistic regression -----------------------------------------------------------
def logistic_loss_grad(X, Y, W, b, C):
    """(loss, dW, db) of  mean CE(X W^T + b, Y) + ||W||^2 / (2 C N); Y one-hot [N, K]."""
    n = X.shape[0]
    logits = X @ W.t() + b
    logp = torch.log_softmax(logits, dim=-1)
    lam = 1.0 / (C * n)
    loss = -(Y * logp).sum() / n + 0.5 * lam * (W * W).sum()
    g = (logp.exp() - Y) / n
    return loss, g.t() @ X + lam * W, g.sum(0)


def fit_logistic(X, y, num_classes, C, max_iter=1000, tol=1e-4, solver="scipy"):
    """Fit the L2 multinomial logistic regression; returns (W [K, D], b [K], iterations), fp32."""
    if solver == "scipy":
        return _fit_scipy(X, y, num_classes, C, max_iter, tol)
    if solver == "torch":
        return _fit_torch(X, y, num_classes, C, max_iter, tol)
    raise ValueError(f"unknown solver {solver!r}")


def _loss_grad_numpy(X, Y, W, b, C):
    """`logistic_loss_grad` in NumPy: on the CPU it costs a fraction of torch's per-call overhead
    (and no OpenMP spinning on a busy machine); scikit-learn computes it the same way."""
    n = X.shape[0]
    z = X @ W.T + b
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    lam = 1.0 / (C * n)
    loss = -(Y * logp).sum() / n + 0.5 * lam * (W * W).sum()
    g = (np.exp(logp) - Y) / n
    return loss, g.T @ X + lam * W, g.sum(axis=0)


def _fit_scipy(X, y, num_classes, C, max_iter, tol, numpy_loss=None):
    """SciPy's L-BFGS-B with scikit-learn's settings; the loss in NumPy on the CPU, in torch
    (float64) on an accelerator, where only the parameter vector crosses to the host."""
    from scipy.optimize import minimize

    k, d = num_classes, X.shape[1]
    device = X.device
    if numpy_loss is None:
        numpy_loss = device.type == "cpu"
    if numpy_loss:
        Xn = X.double().cpu().numpy()
        Yn = np.eye(k)[y.long().cpu().numpy()]

        def fun(w):
            w = w.reshape(k, d + 1)
            loss, gw, gb = _loss_grad_numpy(Xn, Yn, w[:, :d], w[:, d], C)
            return float(loss), np.concatenate([gw, gb[:, None]], axis=1).ravel()
    else:
        Xt = X.double()
        Yt = F.one_hot(y.long(), k).double()

        def fun(w):
            w = torch.from_numpy(w).to(device).view(k, d + 1)
            loss, gw, gb = logistic_loss_grad(Xt, Yt, w[:, :d], w[:, d], C)
            return loss.item(), torch.cat([gw, gb.unsqueeze(1)], 1).flatten().cpu().numpy()

    res = minimize(fun, np.zeros(k * (d + 1)), method="L-BFGS-B", jac=True,
                   options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps})
    w = torch.from_numpy(res.x).view(k, d + 1).float().to(device)
    return w[:, :d].contiguous(), w[:, d].contiguous(), int(res.nit)


def _fit_torch(X, y, num_classes, C, max_iter, tol):
    X = X.float()
    Y = F.one_hot(y.long(), num_classes).float()
    W = torch.zeros(num_classes, X.shape[1], device=X.device, requires_grad=True)
    b = torch.zeros(num_classes, device=X.device, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                            history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        with torch.no_grad():
            loss, gw, gb = logistic_loss_grad(X, Y, W, b, C)
        W.grad, b.grad = gw, gb
        return loss

    opt.step(closure)
    iters = opt.state[W].get("n_iter", 0)
    return W.detach(), b.detach(), int(iters)


def search_c(score, grid=C_GRID, steps=8):
    """lpclip's C search. `score(C)` -> validation accuracy. Returns (c_final, [(C, acc), ...])."""
    trace = []

    def scored(c):
        acc = score(c)
        trace.append((float(c), float(acc)))
        return acc

    accs = [scored(c) for c in grid]
    c_peak = grid[int(np.argmax(accs))]  # the first best
    c_final, left, right = c_peak, 0.1 * c_peak, 10.0 * c_peak
    for _ in range(int(steps)):
        acc_left, acc_right = scored(left), scored(right)
        mid = 0.5 * (np.log10(right) + np.log10(left))
        if acc_left < acc_right:
            c_final = right
            left, right = np.power(10.0, mid), np.power(10.0, np.log10(right))
        else:
            c_final = left
            left, right = np.power(10.0, np.log10(left)), np.power(10.0, mid)
    return float(c_final), trace


# ---- trainer -----------------------------------------------------------------------------------
@TRAINER_REGISTRY.register()
class LinearProbe(Trainer):
    cfg_node = "LINEAR_PROBE"
    closed_form = True
    per_class_keys = ("weight", "bias")

    @classmethod
    def extend_cfg(cls, cfg):
        if "LINEAR_PROBE" in cfg.TRAINER:
            return
        node = cfg.TRAINER.LINEAR_PROBE = CN()
        node.PREC = "fp16"  # lpclip encodes with the fp16 CLIP on CUDA
        node.C_GRID = C_GRID  # the coarse grid, in the order searched
        node.SEARCH_STEPS = 8  # bisection steps (lpclip's --num_step)
        node.C = -1.0  # > 0: fit this C, no search
        node.MAX_ITER = 1000
        node.TOL = 1e-4
        node.SOLVER = "scipy"  # "scipy" (scikit-learn's L-BFGS-B) or "torch" (torch.optim.LBFGS)

    def check_cfg(self, cfg):
        node = cfg.TRAINER.LINEAR_PROBE
        if node.SOLVER not in SOLVERS:
            raise ConfigError(f"TRAINER.LINEAR_PROBE.SOLVER must be one of {', '.join(SOLVERS)}, got {node.SOLVER!r}")
        if not node.C_GRID or any(float(c) <= 0 for c in node.C_GRID):
            raise ConfigError(f"TRAINER.LINEAR_PROBE.C_GRID must hold positive values, got {list(node.C_GRID)}")
        if int(node.SEARCH_STEPS) < 0 or int(node.MAX_ITER) < 1:
            raise ConfigError("TRAINER.LINEAR_PROBE.SEARCH_STEPS must be >= 0 and MAX_ITER >= 1, got "
                              f"{node.SEARCH_STEPS} and {node.MAX_ITER}")

    def build_model(self):
        clip_model = self.load_clip()
        names = [c.replace("_", " ") for c in self.dm.classnames]
        feats = encode_prompts(clip.TextEncoder(clip_model), names, [custom_template(self.cfg)])
        self.text_features = F.normalize(feats.float()[:, 0], dim=-1).to(self.device)
        self.logit_scale = float(clip_model.logit_scale.detach().exp())
        self.probe = nn.Linear(int(clip_model.embed_dim), self.dm.num_classes).to(self.device)
        self.feature_norm = 1.0
        self.C = None
        self.set_zero_shot_rows(1.0)
        self.register_model("linear_probe", self.probe)

    @torch.no_grad()
    def set_zero_shot_rows(self, feature_norm):
        self.probe.weight.copy_(self.logit_scale * self.text_features / feature_norm)
        self.probe.bias.zero_()

    def forward(self, features):
        return self.probe(features.float())

    def fit(self):
        node = self.cfg.TRAINER.LINEAR_PROBE
        X, y = self.source.split_features("train")
        self.feature_norm = float(X.norm(dim=-1).mean())
        fits, start = {}, time.perf_counter()

        def fitted(c):
            key = round(math.log10(c), 9)
            if key not in fits:
                W, b, iters = fit_logistic(X, y, self.dm.num_classes, c, int(node.MAX_ITER), float(node.TOL),
                                           node.SOLVER)
                fits[key] = (W, b, iters)
            return fits[key]

        if float(node.C) > 0:
            c_final = float(node.C)
            print(f"Fitting the linear probe at C = {c_final:g} (TRAINER.LINEAR_PROBE.C)")
            self.record["c_search"] = None
        else:
            split = "val"
            Xv, yv = self.source.split_features(split)
            if len(yv) == 0:
                raise UserError(f"{self.cfg.DATASET.NAME} has no validation images to search C on; set "
                                f"TRAINER.LINEAR_PROBE.C to a positive value to fit one C")
            if self.dm.split("val") is self.dm.split("test"):
                print("Note: the validation split of this dataset is its test split (as in CoOp); C is searched "
                      "on test images")
                self.record["search_on_test"] = True

            def score(c):
                W, b, iters = fitted(c)
                acc = 100.0 * ((Xv @ W.t() + b).argmax(-1) == yv).float().mean().item()
                print(f"C {c:.6g}: val accuracy {acc:.2f}% ({iters} iterations)")
                return acc

            print(f"Searching C on the {split} set ({node.SOLVER} L-BFGS)")
            c_final, trace = search_c(score, [float(c) for c in node.C_GRID], int(node.SEARCH_STEPS))
            self.record["c_search"] = trace
            self.record["val_accuracy"] = next(a for c, a in reversed(trace) if c == c_final)
        W, b, iters = fitted(c_final)
        with torch.no_grad():
            self.probe.weight.copy_(W)
            self.probe.bias.copy_(b)
        self.C = c_final
        self.record.update(fits=len(fits), fit_seconds=round(time.perf_counter() - start, 3))
        print(f"Linear probe: C = {c_final:.6g} ({len(fits)} fits, {time.perf_counter() - start:.1f} s)")

    def run_extras(self):
        node = self.cfg.TRAINER.LINEAR_PROBE
        return {"C": self.C, "solver": node.SOLVER, "feature_norm": self.feature_norm}

    def checkpoint_extras(self, name):
        return {"C": self.C, "feature_norm": self.feature_norm}

    # ---- checkpoints on other classes ----------------------------------------------------------
    def check_loaded(self, name, checkpoint):
        self.C = checkpoint.get("C")
        if checkpoint.get("feature_norm"):
            self.feature_norm = float(checkpoint["feature_norm"])
            self.set_zero_shot_rows(self.feature_norm)  # rows of classes the checkpoint lacks
