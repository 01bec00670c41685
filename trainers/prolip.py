"""ProLIP (Fahes et al., "Fine-Tuning CLIP's Last Visual Projector: A Few-Shot Cornucopia",
astra-vision/ProLIP): fine-tune the image encoder's last projection P, kept near its
pre-trained value P0 by a proximal penalty.

    f = norm(P z + b),  logits = 100 * f @ T^T,  loss = CE + lambda * ||P - P0||_F^2

z is the image feature *before* that projection (`clip.encode_image_pre_projection`): ResNets
the input of `attnpool.c_proj` (2048-d for RN50; its bias b stays frozen), ViTs the input of
`visual.proj` (768-d for ViT-B/16; no bias). The feature store keeps these features in their
own namespace (`feature_kind = "pre-projection"`), never mixed with CLIP embeddings. T is the
zero-shot classifier of the Tip-Adapter / LP++ code ProLIP is built on (underscores replaced by
spaces, each template's feature normalised, averaged, renormalised); the 100 is hard-coded there.

As the released code (methods/ProLIP.py with configs/experiments/
few_shot_no_val_lr1e-5_lambda_1_N.yaml, the validation-free setting):
- lambda = 1/N, N the number of shots (TRAINER.PROLIP.LAMBDA_RULE "1/N"); "1/N^2" is the
  paper's other validation-free rule, "fixed" takes TRAINER.PROLIP.LAMBDA;
- Adam (eps 1e-4: TRAINER.PROLIP.ADAM_EPS) at lr 1e-5, no weight decay, cosine over the 300
  epochs (torch's CosineAnnealingLR stepped per epoch, no warm-up), last epoch;
- 300 augmented views per support image (random resized crop at scale 0.5-1, bicubic, flip)
  encoded once (FEATURES.NUM_VIEWS: 300); every epoch is one full-batch step on all support
  images, epoch e (0-based) on view (e + 1) mod V, the reference's order (only the views an
  epoch uses are encoded);
- nothing is chosen on data (selection tier "none"; the reference's optional lr x lambda grid
  search on a few-shot validation split is not reproduced).
Deviation kept by the engine: P is trained in fp32 (the reference trains the fp16 weight).

TRAINER.PROLIP.VARIANT "linear_adapter" is the paper's regularised linear adapter
(methods/RegLinearAdapter.py): P stays frozen and a linear map A [D, D], initialised at the
identity, is learned on the projected feature, f = norm(A (P0 z + b)), with the same penalty
lambda * ||A - I||_F^2 and the same recipe.

Base to new: the projection (or adapter) is class-agnostic, so it applies to every class: a
checkpoint trained on base classes is evaluated on new classes with the new classes' text
classifier and the trained projection (no zero-shot fallback; that is the method's transfer).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

import clip
from engine.errors import ConfigError, UserError
from engine.evaluator import batch_accuracy
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer

from .common.tip_cache import text_classifier, tip_templates
from .common.view_pool import MethodBatches

LAMBDA_RULES = ("1/N", "1/N^2", "fixed")
VARIANTS = ("projection", "linear_adapter")
LOGIT_SCALE = 100.0


class ProjectionHead(nn.Module):
    """The learned linear map and its anchor. "projection": weight = P [D, W] (anchor P0),
    f = z @ P^T + b; "linear_adapter": weight = A [D, D] (anchor I), f = (z @ P0^T + b) @ A^T.
    Only the weight is saved; P0 and b come from the CLIP weights."""

    def __init__(self, projection, bias, variant):
        super().__init__()
        self.variant = variant
        self.register_buffer("projection", projection, persistent=False)
        self.register_buffer("bias", bias if bias is not None else torch.zeros(len(projection)), persistent=False)
        init = projection.clone() if variant == "projection" else torch.eye(len(projection))
        self.weight = nn.Parameter(init)
        self.register_buffer("anchor", init.clone(), persistent=False)

    def forward(self, z):
        if self.variant == "projection":
            return z @ self.weight.t() + self.bias
        return (z @ self.projection.t() + self.bias) @ self.weight.t()

    def penalty(self):
        """||weight - anchor||_F^2 (a sum, as the reference's MSELoss(reduction="sum"))."""
        return (self.weight - self.anchor).pow(2).sum()


def proximal_lambda(rule, shots, fixed=0.0):
    """The penalty weight: 1/N, 1/N^2 (N shots per class) or a fixed value."""
    if rule == "1/N":
        return 1.0 / shots
    if rule == "1/N^2":
        return 1.0 / shots ** 2
    return float(fixed)


@TRAINER_REGISTRY.register()
class ProLIP(Trainer):
    cfg_node = "PROLIP"
    label = "ProLIP"
    feature_kind = "pre-projection"

    @classmethod
    def extend_cfg(cls, cfg):
        cfg.TRAINER.PROLIP = CN({
            "PREC": "fp16",  # the reference runs CLIP in fp16
            "LAMBDA_RULE": "1/N",  # "1/N", "1/N^2" or "fixed" (TRAINER.PROLIP.LAMBDA)
            "LAMBDA": 0.0,
            "ADAM_EPS": 1e-4,
            "VARIANT": "projection",  # or "linear_adapter"
        })

    @classmethod
    def table_label(cls, extras):
        return "Reg. linear adapter" if extras.get("variant") == "linear_adapter" else "ProLIP"

    def check_cfg(self, cfg):
        node = cfg.TRAINER.PROLIP
        if node.LAMBDA_RULE not in LAMBDA_RULES:
            raise ConfigError(f"TRAINER.PROLIP.LAMBDA_RULE must be one of {', '.join(LAMBDA_RULES)}, "
                              f"got {node.LAMBDA_RULE!r}")
        if node.VARIANT not in VARIANTS:
            raise ConfigError(f"TRAINER.PROLIP.VARIANT must be one of {', '.join(VARIANTS)}, got {node.VARIANT!r}")
        if cfg.OPTIM.NAME != "adam":
            raise ConfigError(f"ProLIP trains with Adam (OPTIM.NAME adam, eps TRAINER.PROLIP.ADAM_EPS), "
                              f"got OPTIM.NAME {cfg.OPTIM.NAME!r}")

    def build_model(self):
        node = self.cfg.TRAINER.PROLIP
        clip_model = self.load_clip()
        self.text_weights = text_classifier(self, clip_model, self.dm.classnames,
                                            tip_templates(self.cfg)).to(self.device)
        projection, bias = clip.image_projection(clip_model)
        self.head = ProjectionHead(projection, bias, node.VARIANT).to(self.device)
        print(f"Learning {'the last image projection' if node.VARIANT == 'projection' else 'a linear adapter'} "
              f"{tuple(self.head.weight.shape)} on {projection.shape[1]}-d pre-projection features")
        o = self.cfg.OPTIM
        optim = torch.optim.Adam([self.head.weight], lr=float(o.LR), weight_decay=float(o.WEIGHT_DECAY),
                                 betas=(float(o.ADAM_BETA1), float(o.ADAM_BETA2)), eps=float(node.ADAM_EPS))
        self.register_model("projection", self.head, optim=optim)
        shots = int(self.cfg.DATASET.NUM_SHOTS)
        if shots < 1:  # all images: the mean number per class
            shots = max(1, round(len(self.dm.dataset.train_x) / max(1, self.dm.num_classes)))
        self.lam = proximal_lambda(node.LAMBDA_RULE, shots, node.LAMBDA)
        print(f"Proximal penalty weight lambda = {self.lam:g} ({node.LAMBDA_RULE}, N = {shots})")

    def forward(self, features):
        f = F.normalize(self.head(features.float()), dim=-1)
        return LOGIT_SCALE * f @ self.text_weights.t()

    def forward_backward(self, inputs, labels):
        logits = self.forward(inputs)
        ce = F.cross_entropy(logits, labels)
        loss = ce + self.lam * self.head.penalty()
        self.model_backward_and_update(loss)
        return {"loss": loss.item(), "loss_ce": ce.item(), "acc": batch_accuracy(logits, labels)}

    # ---- training on the stored views -----------------------------------------------------------
    def before_train(self):
        views = int(self.cfg.FEATURES.NUM_VIEWS)
        if not self.dm.dataset.train_x:
            raise UserError(f"{self.cfg.DATASET.NAME} has no training images for ProLIP; evaluate a trained run "
                            f"with --eval-only --model-dir DIR instead")
        used = min(views, self.max_epoch + 1)  # epoch e trains on view (e + 1) mod V
        print(f"Support features: {used} of {views} augmented views per training image (one per epoch)")
        with self.timer("prepare"):  # encoding is preparation, not training time
            feats, labels = self.source.split_features("train", views=used)
        self.record["views"] = views
        self.source = MethodBatches(self.source, lambda: self._epoch_batch(feats, labels, views), lambda: 1)
        super().before_train()

    def _epoch_batch(self, feats, labels, views):
        yield feats[:, (self.epoch + 1) % views].float(), labels

    def run_extras(self):
        node = self.cfg.TRAINER.PROLIP
        return {"lambda": self.lam, "lambda_rule": node.LAMBDA_RULE, "variant": node.VARIANT,
                "logit_scale": LOGIT_SCALE}
