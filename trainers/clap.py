"""CLAP, the class-adaptive linear probe (Silva-Rodriguez et al., "A Closer Look at the Few-Shot
Adaptation of Large Vision-Language Models", CVPR 2024): ZS-LP (trainers/zslp.py) with a penalty
that keeps each prototype near its zero-shot start, weighted by how well zero-shot CLIP already
does on that class:

    loss = CE + (1/C) sum_c lambda_c ||w_c - t_c||^2

with t_c the un-normalised zero-shot prototype (ZS-LP's base) and lambda_c the mean zero-shot
softmax probability of class c over its own support views (all 20 views of every image of
class c; zero-shot logits exp(logit_scale) * norm(f) @ norm(t)^T).

As the released code (jusiro/CLAP, `ADAPTER` with INIT "ZS", CONSTRAINT "l2", the README's
command): the multipliers are computed once, before training, and stay fixed
(TRAINER.CLAP.MULTIPLIERS "fixed"). Everything else is ZS-LP's: the same views, sampling and
fixed configuration for every dataset and shot count, last epoch, nothing chosen on data.

Deviation, a key: TRAINER.CLAP.MULTIPLIERS "augmented_lagrangian" runs the paper's outer step
after every epoch, as the released code does with CONSTRAINT "adaptative": with h_c =
||w_c - t_c||^2 and penalty rho (0 at the start), lambda_c <- max(0, lambda_c + rho_c h_c), then
rho_c <- h_c. The loss keeps the form above (lambda only). Multipliers and rho are saved in
every checkpoint, so a resumed run continues from them.

Base to new: prototypes, base rows and multipliers are per class; classes never trained on keep
their fresh rows, W = t: zero-shot CLIP.
"""
import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from engine.errors import ConfigError
from engine.evaluator import batch_accuracy
from engine.registry import TRAINER_REGISTRY

from .zslp import ZSLP, prototype_logits

MULTIPLIERS = ("fixed", "augmented_lagrangian")


def zero_shot_confidence(view_features, labels, base, logit_scale, num_classes):
    """lambda [C]: per class c, the mean over its support views ([N, V, D] features, labels [N]) of
    zero-shot CLIP's softmax probability of c (0 for a class without support images)."""
    feats = view_features.reshape(-1, view_features.shape[-1])
    rows = labels.repeat_interleave(view_features.shape[1])
    probs = torch.softmax(prototype_logits(feats, base, logit_scale), dim=-1)
    onehot = F.one_hot(rows.long(), num_classes).to(probs.dtype)
    return (probs * onehot).sum(0) / onehot.sum(0).clamp(min=1)


def prototype_penalty(prototypes, base, multipliers):
    """(1/C) sum_c lambda_c ||w_c - t_c||^2."""
    return (multipliers * (prototypes - base).pow(2).sum(-1)).mean()


def outer_step(prototypes, base, multipliers, penalty):
    """The augmented-Lagrangian (PHR) update: (max(0, lambda + rho h), h) with h_c = ||w_c - t_c||^2."""
    h = (prototypes - base).pow(2).sum(-1)
    return (multipliers + penalty * h).clamp(min=0), h


@TRAINER_REGISTRY.register()
class CLAP(ZSLP):
    cfg_node = "CLAP"
    label = "CLAP"
    per_class_keys = ZSLP.per_class_keys + ("multipliers", "penalty")

    @classmethod
    def extend_cfg(cls, cfg):
        cfg.TRAINER.CLAP = CN({"PREC": "fp16", "MULTIPLIERS": "fixed"})

    def check_cfg(self, cfg):
        if cfg.TRAINER.CLAP.MULTIPLIERS not in MULTIPLIERS:
            raise ConfigError(f"TRAINER.CLAP.MULTIPLIERS must be one of {', '.join(MULTIPLIERS)}, "
                              f"got {cfg.TRAINER.CLAP.MULTIPLIERS!r}")

    def build_model(self):
        super().build_model()
        zeros = torch.zeros(self.dm.num_classes, device=self.device)
        self.adapter.register_buffer("multipliers", zeros.clone())
        self.adapter.register_buffer("penalty", zeros.clone())

    def init_from_support(self, feats, labels):
        a = self.adapter
        with torch.no_grad():
            a.multipliers.copy_(zero_shot_confidence(feats, labels, a.base_text_features, self.logit_scale,
                                                     self.dm.num_classes))
            a.penalty.zero_()
        shown = ", ".join(f"{x:.3f}" for x in a.multipliers[:10].tolist())
        print(f"Class multipliers (zero-shot confidence on the support views): {shown}"
              f"{' ...' if self.dm.num_classes > 10 else ''}")
        self.record["initial_multipliers_mean"] = float(a.multipliers.mean())

    def forward_backward(self, inputs, labels):
        a = self.adapter
        logits = self.forward(inputs)
        ce = F.cross_entropy(logits, labels)
        loss = ce + prototype_penalty(a.prototypes, a.base_text_features, a.multipliers)
        self.model_backward_and_update(loss)
        return {"loss": loss.item(), "loss_ce": ce.item(), "acc": batch_accuracy(logits, labels)}

    def after_epoch(self):
        if self.cfg.TRAINER.CLAP.MULTIPLIERS == "augmented_lagrangian":
            a = self.adapter
            with torch.no_grad():
                lam, rho = outer_step(a.prototypes, a.base_text_features, a.multipliers, a.penalty)
                a.multipliers.copy_(lam)
                a.penalty.copy_(rho)
        super().after_epoch()

    def run_extras(self):
        extras = super().run_extras()
        extras["multipliers"] = self.cfg.TRAINER.CLAP.MULTIPLIERS
        return extras
