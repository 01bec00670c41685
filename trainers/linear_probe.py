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
Fits are cached per C (the bisection re-scores one end of every interval). The scipy solver
prepares the training features once per run for all fits (LogisticProblem): with fewer images
than dimensions (N < D, every few-shot run on RN50's 1024-d features) it fits in the row space
of X, N x N per evaluation instead of N x D (TRAINER.LINEAR_PROBE.ROW_SPACE, on by default: the
same objective and optimum; only the stopping test is taken in the rotated coordinates).
TRAINER.LINEAR_PROBE.WARM_START (off by default, not the reference) starts each fit at the
nearest C already fitted: fewer iterations, but where the few-shot validation accuracy is flat
in C the fits' stopping points (within tol) can move the chosen C.

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
from .common.text import class_prompt_features

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
    """SciPy's L-BFGS-B with scikit-learn's settings from 0, in the features' own coordinates."""
    W, b, iters, _ = LogisticProblem(X, y, num_classes, row_space=False, numpy_loss=numpy_loss).fit(C, max_iter, tol)
    return W, b, iters


class LogisticProblem:
    """One run's training features, prepared once for every fit of its C search (up to 23 on the
    same X). The loss runs in NumPy on the CPU, in torch (float64) on an accelerator, where only
    the parameter vector crosses to the host.

    row_space: with fewer images than dimensions (few-shot: N = K x shots < D) every L-BFGS
    iterate started at 0 stays in the row space of X (each gradient is G^T X + W / (C N)), so the
    fit runs on the N coordinates of the images in an orthonormal basis Q of that space
    (X = Z Q^T, W = V Q^T: the same objective, since X W^T = Z V^T and ||W|| = ||V||) and returns
    W = V Q^T. L-BFGS-B's steps are made of inner products, which the rotation keeps; only its
    stopping test (the largest gradient entry below tol) is taken in the new coordinates, so a fit
    may stop an iteration earlier or later at the same optimum. Each evaluation then costs
    N x N x K instead of N x D x K."""

    def __init__(self, X, y, num_classes, row_space=True, numpy_loss=None):
        self.k, self.d, self.device = num_classes, X.shape[1], X.device
        self.numpy_loss = self.device.type == "cpu" if numpy_loss is None else numpy_loss
        Xd = X.double().cpu() if self.numpy_loss else X.double()
        self.Q = None
        if row_space and X.shape[0] < X.shape[1]:
            Q, R = torch.linalg.qr(Xd.t())  # X^T = Q R, Q [D, N] orthonormal: X = R^T Q^T
            self.Q, Xd = Q, R.t().contiguous()
        self.r = Xd.shape[1]
        if self.numpy_loss:
            self.Z, self.Y = Xd.cpu().numpy(), np.eye(self.k)[y.long().cpu().numpy()]
        else:
            self.Z, self.Y = Xd.to(self.device), F.one_hot(y.long(), self.k).double().to(self.device)

    def loss_grad(self, w, C):
        """(loss, flat gradient) at the flat parameters w = [V | b] (NumPy float64)."""
        k, r = self.k, self.r
        if self.numpy_loss:
            w = w.reshape(k, r + 1)
            loss, gw, gb = _loss_grad_numpy(self.Z, self.Y, w[:, :r], w[:, r], C)
            return float(loss), np.concatenate([gw, gb[:, None]], axis=1).ravel()
        w = torch.from_numpy(w).to(self.device).view(k, r + 1)
        loss, gw, gb = logistic_loss_grad(self.Z, self.Y, w[:, :r], w[:, r], C)
        return loss.item(), torch.cat([gw, gb.unsqueeze(1)], 1).flatten().cpu().numpy()

    def fit(self, C, max_iter=1000, tol=1e-4, x0=None):
        """(W [K, D], b [K] fp32 on the features' device, iterations, flat solution) from x0 (0)."""
        from scipy.optimize import minimize

        x0 = np.zeros(self.k * (self.r + 1)) if x0 is None else x0
        fun, stop = (lambda w: self.loss_grad(w, C)), None
        if self.Q is not None:
            fun, stop = self._stopping_in_features(C, tol)
        res = minimize(fun, x0, method="L-BFGS-B", jac=True, callback=stop,
                       options={"maxiter": max_iter, "maxls": 50, "gtol": tol if stop is None else 0.0,
                                "ftol": 64 * np.finfo(float).eps})
        v = torch.from_numpy(res.x).view(self.k, self.r + 1)
        W = v[:, :self.r] if self.Q is None else v[:, :self.r].to(self.Q.device) @ self.Q.t()
        return (W.float().to(self.device).contiguous(), v[:, self.r].float().to(self.device).contiguous(),
                int(res.nit), res.x)

    def _stopping_in_features(self, C, tol):
        """L-BFGS-B stops when the largest gradient entry is below tol, a test that a rotation
        changes; so it runs here on the gradient in the features' coordinates (dW = dV Q^T, at
        each new iterate, from the last evaluation), as the full-space fit takes it."""
        last, Qt = {}, self.Q.t().cpu().numpy()

        def fun(w):
            loss, g = self.loss_grad(w, C)
            last["x"], last["g"] = w.copy(), g
            return loss, g

        def stop(intermediate_result):
            x = intermediate_result.x
            g = last["g"] if np.array_equal(last["x"], x) else self.loss_grad(x, C)[1]
            g = g.reshape(self.k, self.r + 1)
            if max(np.abs(g[:, :self.r] @ Qt).max(), np.abs(g[:, self.r]).max()) <= tol:
                raise StopIteration

        return fun, stop


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
        node.ROW_SPACE = True  # scipy: fit in the row space of the training features when N < D (same optimum)
        node.WARM_START = False  # scipy: start each fit at the nearest C's solution (faster; not the reference)

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
        feats = class_prompt_features(self, clip.TextEncoder(clip_model), names, [custom_template(self.cfg)])
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
        fit_at = self._fitter(X, y, node)

        def fitted(c):
            key = round(math.log10(c), 9)
            if key not in fits:
                fits[key] = fit_at(c, fits, key)
            return fits[key][:3]

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
            if self.dm.selection_tier(split) == "test":
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
            self.chose("C", c_final, split)
            self.record["val_accuracy"] = next(a for c, a in reversed(trace) if c == c_final)
        W, b, iters = fitted(c_final)
        with torch.no_grad():
            self.probe.weight.copy_(W)
            self.probe.bias.copy_(b)
        self.C = c_final
        self.record.update(fits=len(fits), fit_seconds=round(time.perf_counter() - start, 3))
        print(f"Linear probe: C = {c_final:.6g} ({len(fits)} fits, {time.perf_counter() - start:.1f} s)")

    def _fitter(self, X, y, node):
        """fit(C, fits so far, log10 C) -> (W, b, iterations, solution) for the C search. The
        scipy solver prepares X once for every C (LogisticProblem, ROW_SPACE) and, with
        WARM_START, starts at the solution of the nearest C fitted so far when that is lower on
        the new objective than 0 (not the reference: the fits stop elsewhere within tol)."""
        max_iter, tol = int(node.MAX_ITER), float(node.TOL)
        if node.SOLVER != "scipy":
            return lambda c, fits, key: fit_logistic(X, y, self.dm.num_classes, c, max_iter, tol, node.SOLVER) + (None,)
        problem = LogisticProblem(X, y, self.dm.num_classes, row_space=bool(node.ROW_SPACE))

        def fit(c, fits, key):
            x0 = None
            if node.WARM_START and fits:
                near = fits[min(fits, key=lambda k: abs(k - key))][3]
                x0 = near if problem.loss_grad(near, c)[0] < math.log(self.dm.num_classes) else None  # 0 scores log K
            return problem.fit(c, max_iter, tol, x0)

        return fit

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
