"""ProKeR (Bendou et al., CVPR 2025, "A kernel perspective on training-free few-shot adaptation of
large vision-language models"): zero-shot CLIP plus a kernel ridge regression of its residual on
the support set, fitted in closed form.

    f(x) = f0(x) + g(x),   g(x) = k(x, X) (K + lambda I)^-1 (Y - f0(X))

the minimiser of  sum_i |y_i - f0(x_i) - g(x_i)|^2 + lambda |g|_H^2  over the RKHS of the kernel.
- X: Tip-Adapter's cache keys (per support image the mean of AUGMENT_EPOCH (10) augmented views'
  raw features, L2-normalised; trainers/common/tip_cache.py), Y their one-hot labels [N, C];
- k(x, x') = exp(-beta (1 - x . x')), Tip-Adapter's affinity (an RBF kernel on the unit sphere),
  K = k(X, X) [N, N]: one N x N solve (ImageNet 16 shots: N = 16 000), in float64;
- f0 (TRAINER.ProKeR.BASE): "probs" (default), zero-shot CLIP's class probabilities
  softmax(100 f T^T), on the one-hot scale of Y; or "cosine", f T^T; T Tip-Adapter's zero-shot
  classifier;
- (beta, lambda): the first strictly best pair of BETA_GRID x LAMBDA_GRID (beta outer, lambda
  inner, as Tip-Adapter's search) by accuracy on the split TRAINER.ProKeR.SEARCH names: "val"
  (default; this framework's few-shot validation split, min(K, 4) images per class; for ImageNet
  the test split, as in CoOp), "test" (an oracle) or "none" (the fixed BETA and LAMBDA). The
  choice and its split are recorded (results.json selection). For each beta, K is diagonalised
  once and every lambda costs a matrix product.
The released code was not available; this form and search follow the paper's abstract and
project page (zero-shot CLIP as the proximal base learner, kernel ridge regression in the RKHS of
Tip-Adapter's kernel, a closed-form solution). Which f0 the paper uses (probabilities or scaled
logits) and its search grids could not be checked: BASE and the grids are keys for that reason.

Base -> new: the coefficients (K + lambda I)^-1 (Y - f0(X)) have one column per class; a class the
fit never saw gets a zero column, so its output is f0's alone (new classes alone: zero-shot CLIP's
ranking).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from engine.errors import ConfigError, UserError
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer

from .common.choices import SEARCH_SPLITS, first_best, restore_choices, saved_choices, search_features
from .common.tip_cache import build_cache, remap_value_columns, text_classifier, tip_templates

BASES = ("probs", "cosine")
SEARCHES = SEARCH_SPLITS + ("none",)
SEARCH_ROWS = 4096


def zero_shot(features, text_weights, base, logit_scale=100.0):
    """f0 for L2-normalised features [M, d]: probabilities or cosine similarities [M, C]."""
    cos = features @ text_weights.t()
    return torch.softmax(logit_scale * cos, dim=-1) if base == "probs" else cos


def kernel(a, b, beta):
    """exp(-beta (1 - a . b^T)) for L2-normalised rows."""
    return torch.exp(-beta * (1.0 - a @ b.t()))


def krr_coefficients(keys, residual, beta, lam):
    """(K + lambda I)^-1 residual, float64: keys [N, d] L2-normalised, residual [N, C]."""
    k = kernel(keys.double(), keys.double(), beta)
    return torch.linalg.solve(k + lam * torch.eye(k.shape[0], dtype=k.dtype, device=k.device), residual.double())


class ProKeRModel(nn.Module):
    """keys [N, d], coef [N, C] = (K + lambda I)^-1 (Y - f0(X)), beta and lambda."""

    def __init__(self, n, dim, num_classes, beta, lam):
        super().__init__()
        self.register_buffer("keys", torch.zeros(n, dim))
        self.register_buffer("coef", torch.zeros(n, num_classes))
        # float64: the grid values, exactly
        self.register_buffer("beta", torch.tensor(float(beta), dtype=torch.float64))
        self.register_buffer("lam", torch.tensor(float(lam), dtype=torch.float64))

    def reshape(self, keys_shape, coef_shape):
        self.keys = self.keys.new_zeros(keys_shape)
        self.coef = self.coef.new_zeros(coef_shape)

    def forward(self, features, text_weights, base, logit_scale):
        f = F.normalize(features.float(), dim=-1)
        return zero_shot(f, text_weights, base, logit_scale) + kernel(f, self.keys, self.beta) @ self.coef


@TRAINER_REGISTRY.register()
class ProKeR(Trainer):
    cfg_node = "ProKeR"
    closed_form = True
    label = "ProKeR"
    class_dims = {"coef": 1}  # one column per class; adapt_loaded_state matches them by name

    @classmethod
    def extend_cfg(cls, cfg):
        if "ProKeR" in cfg.TRAINER:
            return
        node = cfg.TRAINER.ProKeR = CN()
        node.PREC = "fp16"  # CLIP in fp16 on CUDA, as Tip-Adapter's code
        node.AUGMENT_EPOCH = 10  # augmented views averaged into each key (Tip-Adapter's cache)
        node.BASE = "probs"  # f0: "probs" or "cosine"
        node.SEARCH = "val"  # "val", "test" or "none" (fixed BETA, LAMBDA)
        node.BETA_GRID = (1.0, 2.0, 4.0, 6.0, 8.0, 10.0)
        node.LAMBDA_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
        node.BETA = 1.0
        node.LAMBDA = 1.0
        node.LOGIT_SCALE = 100.0

    def check_cfg(self, cfg):
        node = cfg.TRAINER.ProKeR
        if node.BASE not in BASES:
            raise ConfigError(f"TRAINER.ProKeR.BASE must be one of {', '.join(BASES)}, got {node.BASE!r}")
        if node.SEARCH not in SEARCHES:
            raise ConfigError(f"TRAINER.ProKeR.SEARCH must be one of {', '.join(SEARCHES)}, got {node.SEARCH!r}")
        if int(node.AUGMENT_EPOCH) < 1:
            raise ConfigError(f"TRAINER.ProKeR.AUGMENT_EPOCH must be >= 1, got {node.AUGMENT_EPOCH}")
        lams = list(node.LAMBDA_GRID) + [node.LAMBDA]
        if not node.BETA_GRID or not node.LAMBDA_GRID or any(float(v) <= 0 for v in lams):
            raise ConfigError("TRAINER.ProKeR.BETA_GRID and LAMBDA_GRID must not be empty, and every lambda must "
                              f"be > 0, got {list(node.BETA_GRID)}, {list(node.LAMBDA_GRID)}, LAMBDA {node.LAMBDA}")

    def build_model(self):
        node = self.cfg.TRAINER.ProKeR
        clip_model = self.load_clip()
        self.text_weights = text_classifier(clip_model, self.dm.classnames,
                                            tip_templates(self.cfg.DATASET.NAME)).to(self.device)
        self.logit_scale = float(node.LOGIT_SCALE)
        self.model = ProKeRModel(len(self.dm.dataset.train_x), int(clip_model.embed_dim), self.dm.num_classes,
                                 node.BETA, node.LAMBDA).to(self.device)
        self.register_model("proker", self.model)
        self._loaded_classnames = None

    def forward(self, features):
        return self.model(features, self.text_weights, self.cfg.TRAINER.ProKeR.BASE, self.logit_scale)

    def fit(self):
        node = self.cfg.TRAINER.ProKeR
        views = int(node.AUGMENT_EPOCH)
        if not self.dm.dataset.train_x:
            raise UserError(f"{self.cfg.DATASET.NAME} has no training images to fit ProKeR on; evaluate a fitted "
                            f"model with --eval-only --model-dir DIR instead")
        feats, labels = self.source.split_features("train", views=views)
        keys, onehot = build_cache(feats, labels, self.dm.num_classes)
        residual = onehot - zero_shot(keys, self.text_weights, node.BASE, self.logit_scale)
        beta, lam = self.choose(keys, residual)
        coef = krr_coefficients(keys, residual, beta, lam)
        self.model.reshape(keys.shape, coef.shape)
        with torch.no_grad():
            self.model.keys.copy_(keys)
            self.model.coef.copy_(coef.float())
            self.model.beta.fill_(beta)
            self.model.lam.fill_(lam)
        self.record.update(support_size=int(keys.shape[0]), augment_epoch=views)
        print(f"ProKeR: {keys.shape[0]} support images, beta {beta:g}, lambda {lam:g}")

    @torch.no_grad()
    def choose(self, keys, residual):
        node = self.cfg.TRAINER.ProKeR
        if node.SEARCH == "none":
            print(f"TRAINER.ProKeR.SEARCH is none: beta {float(node.BETA):g}, lambda {float(node.LAMBDA):g}")
            return float(node.BETA), float(node.LAMBDA)
        split = node.SEARCH
        feats, labels = search_features(self, split, "beta and lambda",
                                        "set TRAINER.ProKeR.SEARCH none to use TRAINER.ProKeR.BETA and LAMBDA")
        f = F.normalize(feats.double(), dim=-1)
        labels = labels.to(f.device)
        x, r = keys.double(), residual.double()
        lams = [float(v) for v in node.LAMBDA_GRID]
        correct = {}
        for beta in (float(b) for b in node.BETA_GRID):
            evals, vecs = torch.linalg.eigh(kernel(x, x, beta))  # K = U diag(e) U^T
            rotated = vecs.t() @ r  # [N, C]
            for lam in lams:
                correct[(beta, lam)] = 0
            for start in range(0, len(f), SEARCH_ROWS):  # [rows, N] at a time: ImageNet's val is its test set
                fc = f[start:start + SEARCH_ROWS]
                base = zero_shot(fc, self.text_weights.double(), node.BASE, self.logit_scale)
                projected = kernel(fc, x, beta) @ vecs
                for lam in lams:
                    pred = (base + projected @ (rotated / (evals + lam).unsqueeze(1))).argmax(-1)
                    correct[(beta, lam)] += int((pred == labels[start:start + SEARCH_ROWS]).sum())
        (beta, lam), acc, trace = first_best(list(correct), lambda p: 100.0 * correct[p] / max(1, len(f)))
        print(f"ProKeR: beta {beta:g}, lambda {lam:g} chosen on the {split} split (accuracy {acc:.2f})")
        self.record.update(search_accuracy=acc, search_grid=[len(node.BETA_GRID), len(lams)])
        self.chose("beta", beta, split)
        self.chose("lambda", lam, split)
        return beta, lam

    def run_extras(self):
        node = self.cfg.TRAINER.ProKeR
        return {"beta": float(self.model.beta), "lambda": float(self.model.lam), "base": node.BASE,
                "search_split": node.SEARCH}

    def checkpoint_extras(self, name):
        return {"choices": saved_choices(self)}

    # ---- checkpoints on other images or classes ------------------------------------------------
    def check_loaded(self, name, checkpoint):
        self._loaded_classnames = checkpoint.get("classnames")
        restore_choices(self, checkpoint)

    def adapt_loaded_state(self, name, state_dict):
        """A fit on other images keeps its size; coefficient columns follow the class names."""
        if "coef" not in state_dict or "keys" not in state_dict:
            return state_dict  # not a ProKeR fit: the engine names the missing keys
        coef, current = state_dict["coef"], list(self.dm.classnames)
        remapped, unseen = remap_value_columns(coef, self._loaded_classnames, current)
        if remapped is None:
            raise UserError(f"The checkpoint's ProKeR fit has {coef.shape[1]} classes and no class names, but "
                            f"{self.cfg.DATASET.NAME} has {len(current)}: cannot tell which column is which class")
        if unseen:
            print(f"{len(unseen)} of {len(current)} classes were not in the fit; their outputs are zero-shot CLIP's")
            self.record["unseen_classes_zeroshot"] = len(unseen)
        self.model.reshape(state_dict["keys"].shape, remapped.shape)
        return dict(state_dict, coef=remapped)
