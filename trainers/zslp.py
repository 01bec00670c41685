"""ZS-LP (Silva-Rodriguez et al., "A Closer Look at the Few-Shot Adaptation of Large
Vision-Language Models", CVPR 2024): a linear probe whose class prototypes start at zero-shot
CLIP's text classifier, trained with plain cross-entropy.

    logits = exp(logit_scale) * norm(f) @ norm(W)^T,   W [C, D] initialised at t

As the released code (jusiro/CLAP, `ADAPTER` with INIT "ZS", CONSTRAINT "none"):
- t is the mean of the *un-normalised* text features over the templates (the dataset's custom
  template; the 7 selected templates plus "a photo of a {}." for ImageNet; class names keep
  their underscores), computed before the model is cast to fp32: in fp16 on CUDA under PREC
  fp16, and the image encoder then runs in fp32 (the reference casts the whole model with
  `.float()`), as TaskRes;
- 20 augmented views of every support image are encoded once (FEATURES.NUM_VIEWS: 20, the
  same seeded views in online and cached mode) and the probe trains on those features only;
- each epoch shuffles the N x 20 rows as one pool and takes as many batches of 256 rows as a
  loader over the N images has batches (N // 256, or 1 when N < 256: then the whole pool when
  it holds at most 256 rows), trainers/common/view_pool.py;
- one configuration for every dataset and shot count: SGD (momentum 0.9) lr 0.1, batch 256, 300
  epochs, cosine, one constant warm-up epoch at 1e-5, no weight decay; the last epoch is
  reported. Nothing is chosen on data (selection tier "none").
Not reproduced: the reference evaluates the test set after every batch (for its log only).

Base to new: the prototypes are per class; classes never trained on keep their fresh rows,
W = t, i.e. zero-shot CLIP with the same templates.
"""
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

import clip
from engine.errors import UserError
from engine.features import num_view_batches
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer

from .common.text import class_prompt_features
from .common.view_pool import MethodBatches, pooled_rows
from .taskres import base_templates


class Prototypes(nn.Module):
    """The learned class prototypes W and the zero-shot base t they start from (both [C, D])."""

    def __init__(self, base):
        super().__init__()
        self.register_buffer("base_text_features", base)
        self.prototypes = nn.Parameter(base.clone())


def prototype_logits(features, prototypes, logit_scale):
    """exp(logit_scale) * norm(f) @ norm(W)^T for raw image features [B, D]."""
    return logit_scale * F.normalize(features.float(), dim=-1) @ F.normalize(prototypes, dim=-1).t()


@TRAINER_REGISTRY.register()
class ZSLP(Trainer):
    cfg_node = "ZSLP"
    label = "ZS-LP"
    reference_image_encoder_prec = "fp32"
    per_class_keys = ("base_text_features", "prototypes")
    model_name = "adapter"

    @classmethod
    def extend_cfg(cls, cfg):
        setattr(cfg.TRAINER, cls.cfg_node, CN({"PREC": "fp16"}))

    @property
    def node(self):
        return self.cfg.TRAINER[self.cfg_node]

    def build_model(self):
        clip_model = self.load_clip()
        feats = class_prompt_features(self, clip.TextEncoder(clip_model), self.dm.classnames, base_templates(self.cfg))
        self.adapter = Prototypes(feats.mean(1).float()).to(self.device)  # mean in the encoder's dtype
        self.logit_scale = clip_model.logit_scale.detach().exp().float()
        self.register_model(self.model_name, self.adapter)

    def forward(self, features):
        return prototype_logits(features, self.adapter.prototypes, self.logit_scale)

    # ---- training on the stored views -----------------------------------------------------------
    def before_train(self):
        """Encode (or read) the support views, let the method initialise from them, then train on
        batches drawn from them; resuming (in super) then restores the trained state."""
        views = int(self.cfg.FEATURES.NUM_VIEWS)
        if not self.dm.dataset.train_x:
            raise UserError(f"{self.cfg.DATASET.NAME} has no training images for {type(self).__name__}; evaluate "
                            f"a trained run with --eval-only --model-dir DIR instead")
        print(f"Support features: {views} augmented views per training image")
        with self.timer("prepare"):  # encoding is preparation, not training time
            feats, labels = self.source.split_features("train", views=views)
        self.init_from_support(feats, labels)
        self.record["views"] = views
        n = len(labels)
        self.source = MethodBatches(self.source, lambda: pooled_rows(feats, labels, self.cfg),
                                    lambda: num_view_batches(n, self.cfg))
        super().before_train()

    def init_from_support(self, feats, labels):
        """Hook: initialisation from the support views [N, V, D] (CLAP's multipliers)."""

    def run_extras(self):
        return {"logit_scale": float(self.logit_scale)}
