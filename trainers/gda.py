"""GDA (Wang et al., ICLR 2024, "A hard-to-beat baseline for training-free CLIP-based adaptation"):
a Gaussian discriminant on the few-shot image features, added to zero-shot CLIP. Closed form,
nothing is trained.

The reference (mrflogs/ICLR24, main_few_shots.py), kept here:
- samples: TRAINER.GDA.AUGMENT_EPOCH (10) augmented views of every support image, each view's
  feature L2-normalised and used as one sample (views are not averaged); here the engine's
  seeded stored views, the same ones Tip-Adapter's cache uses (random resized crops at scale
  0.5-1, on ImageNet 0.08-1 as the reference's ImageNet loader: configs/trainers/GDA/recipe.yaml);
- mu_c = the mean of class c's samples; X = every sample minus its class mean (M rows);
  S = the covariance of X (torch's `.cov()`, divided by M - 1);
- shrunk inverse  Sigma^-1 = d * pinv((M - 1) S + trace(S) I)   (d = feature dimension);
- W = Sigma^-1 mu^T [d, C],  b_c = log(1/C) - 0.5 mu_c^T Sigma^-1 mu_c;
- logits = 100 * f T^T + alpha * (f W + b), f the L2-normalised image feature, T Tip-Adapter's
  zero-shot classifier (the same templates; trainers/common/tip_cache.py);
- alpha: the first strictly best of ALPHA_GRID {1e-4, ..., 100} by accuracy on the validation
  split (0.1 when none scores above 0).

Deviations, each a key (reference value in brackets):
- TRAINER.GDA.ALPHA_SEARCH "val" (default): alpha is searched on this framework's few-shot
  validation split (min(K, 4) images per class, CoOp's protocol) [the FULL validation split of
  CoOp's split files, which this framework does not load: the reference's data are not at hand,
  so the default is the closest it allows]. For ImageNet the validation split is its test split
  here (as in CoOp), which is what the reference searches ImageNet's alpha on. "test" searches on
  the test split (an oracle); "none" uses the fixed TRAINER.GDA.ALPHA (default 1.0). The choice
  and its split are recorded (results.json selection: tier fewshot-val / test / none).
- The statistics are computed in float64 [the encoder's dtype on CUDA, fp16 features].

Base -> new: W's columns and b are stored per class (weight [C, d], bias [C]); a class the fit
never saw keeps zero rows, so its logit is zero-shot CLIP's (new classes alone: exactly zero-shot
CLIP). The KNN-synthesised new-class statistics of the paper's base-to-new section are not
implemented.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from engine.errors import ConfigError, UserError
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer

from .common.choices import accuracy, first_best, restore_choices, saved_choices, search_features
from .common.tip_cache import text_classifier, tip_templates

ALPHA_GRID = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)
ALPHA_SEARCHES = ("val", "test", "none")
UNSCORED_ALPHA = 0.1  # the reference's alpha when no grid point scores above 0


def gda_classifier(samples, labels, num_classes):
    """(weight [C, d], bias [C]) of the shrunk Gaussian discriminant, float64, from L2-normalised
    samples [M, d] and labels [M]: weight_c = Sigma^-1 mu_c, b_c = log(1/C) - mu_c Sigma^-1 mu_c / 2."""
    x = samples.double()
    d = x.shape[1]
    mus = torch.stack([x[labels == c].mean(0) for c in range(num_classes)])
    centred = x - mus[labels]
    cov = centred.T.cov()  # divides by M - 1
    shrunk = (centred.shape[0] - 1) * cov + cov.trace() * torch.eye(d, dtype=x.dtype, device=x.device)
    precision = d * torch.linalg.pinv(shrunk)
    weight = mus @ precision  # Sigma^-1 is symmetric: row c is (Sigma^-1 mu_c)^T
    bias = math.log(1.0 / num_classes) - 0.5 * (weight * mus).sum(-1)
    return weight, bias


class GDAHead(nn.Module):
    """The fitted discriminant: weight [C, d], bias [C] and the chosen alpha."""

    def __init__(self, num_classes, dim, alpha):
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_classes, dim))
        self.register_buffer("bias", torch.zeros(num_classes))
        self.register_buffer("alpha", torch.tensor(float(alpha), dtype=torch.float64))  # the grid value, exactly

    def forward(self, features, text_weights, logit_scale):
        f = F.normalize(features.float(), dim=-1)
        return logit_scale * f @ text_weights.t() + self.alpha * (f @ self.weight.t() + self.bias)


@TRAINER_REGISTRY.register()
class GDA(Trainer):
    cfg_node = "GDA"
    closed_form = True
    label = "GDA"
    per_class_keys = ("weight", "bias")  # base -> new: unseen classes keep zero rows (zero-shot logits)

    @classmethod
    def extend_cfg(cls, cfg):
        if "GDA" in cfg.TRAINER:
            return
        node = cfg.TRAINER.GDA = CN()
        node.PREC = "fp16"  # the reference runs CLIP in fp16 on CUDA
        node.AUGMENT_EPOCH = 10  # augmented views per support image, each one sample
        node.ALPHA_SEARCH = "val"  # "val", "test" or "none" (fixed ALPHA)
        node.ALPHA_GRID = ALPHA_GRID
        node.ALPHA = 1.0  # used when ALPHA_SEARCH is "none"
        node.LOGIT_SCALE = 100.0  # hard-coded 100 in the reference

    def check_cfg(self, cfg):
        node = cfg.TRAINER.GDA
        if node.ALPHA_SEARCH not in ALPHA_SEARCHES:
            raise ConfigError(f"TRAINER.GDA.ALPHA_SEARCH must be one of {', '.join(ALPHA_SEARCHES)}, "
                              f"got {node.ALPHA_SEARCH!r}")
        if int(node.AUGMENT_EPOCH) < 1:
            raise ConfigError(f"TRAINER.GDA.AUGMENT_EPOCH must be >= 1, got {node.AUGMENT_EPOCH}")
        if not node.ALPHA_GRID:
            raise ConfigError("TRAINER.GDA.ALPHA_GRID is empty")

    def build_model(self):
        node = self.cfg.TRAINER.GDA
        clip_model = self.load_clip()
        self.text_weights = text_classifier(self, clip_model, self.dm.classnames,
                                            tip_templates(self.cfg)).to(self.device)
        self.logit_scale = float(node.LOGIT_SCALE)
        self.head = GDAHead(self.dm.num_classes, int(clip_model.embed_dim), node.ALPHA).to(self.device)
        self.register_model("gda", self.head)

    def forward(self, features):
        return self.head(features, self.text_weights, self.logit_scale)

    def fit(self):
        node = self.cfg.TRAINER.GDA
        views = int(node.AUGMENT_EPOCH)
        if not self.dm.dataset.train_x:
            raise UserError(f"{self.cfg.DATASET.NAME} has no training images to fit GDA on; evaluate a fitted "
                            f"model with --eval-only --model-dir DIR instead")
        feats, labels = self.source.split_features("train", views=views)  # [N, V, d] raw
        samples = F.normalize(feats.float(), dim=-1).flatten(0, 1)
        sample_labels = labels.repeat_interleave(views)
        missing = sorted(set(range(self.dm.num_classes)) - set(sample_labels.tolist()))
        if missing:
            raise UserError(f"GDA needs images of every class; {len(missing)} classes have none "
                            f"(e.g. {self.dm.classnames[missing[0]]!r})")
        weight, bias = gda_classifier(samples, sample_labels, self.dm.num_classes)
        with torch.no_grad():
            self.head.weight.copy_(weight.float())
            self.head.bias.copy_(bias.float())
        self.record.update(augment_epoch=views, samples=int(samples.shape[0]))
        alpha = self.choose_alpha()
        self.head.alpha.fill_(alpha)
        print(f"GDA: {samples.shape[0]} samples ({views} views per image), alpha {alpha:g}")

    def choose_alpha(self):
        node = self.cfg.TRAINER.GDA
        if node.ALPHA_SEARCH == "none":
            print(f"TRAINER.GDA.ALPHA_SEARCH is none: alpha {float(node.ALPHA):g}")
            return float(node.ALPHA)
        split = node.ALPHA_SEARCH
        feats, labels = search_features(self, split, "alpha",
                                        "set TRAINER.GDA.ALPHA_SEARCH none to use TRAINER.GDA.ALPHA")

        def score(alpha):
            self.head.alpha.fill_(alpha)
            with torch.no_grad():
                return accuracy(self.forward(feats), labels)

        alpha, acc, trace = first_best([float(a) for a in node.ALPHA_GRID], score)
        if acc <= 0.0:
            alpha = UNSCORED_ALPHA
        print(f"best_val_alpha: {alpha:g} \t best_val_acc: {acc:.2f} (on the {split} split)")
        self.record.update(alpha_search=trace, search_accuracy=acc)
        self.chose("alpha", alpha, split)
        return alpha

    def run_extras(self):
        return {"alpha": float(self.head.alpha), "alpha_search_split": self.cfg.TRAINER.GDA.ALPHA_SEARCH,
                "logit_scale": self.logit_scale}

    def checkpoint_extras(self, name):
        return {"choices": saved_choices(self)}

    def check_loaded(self, name, checkpoint):
        restore_choices(self, checkpoint)
