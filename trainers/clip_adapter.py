"""CLIP-Adapter (Gao et al., IJCV 2023): a bottleneck MLP on the image feature, mixed back in.

The reference code (a Dassl trainer, registry name CLIP_Adapter):
- adapter = Linear(D, D/4, bias=False) -> ReLU -> Linear(D/4, D, bias=False) -> ReLU, PyTorch's
  default initialisation, on the projected (un-normalised) image feature f;
- f' = ratio * adapter(f) + (1 - ratio) * f with ratio 0.2;
- logits = exp(logit_scale) * norm(f') @ norm(t)^T, t = CLIP text features of the dataset's one
  hand-written template per class ("_" in class names becomes a space); cross-entropy;
- CLIP is cast to fp32 (`clip_model.float()`); only the adapter is trained and saved, as
  `clip_adapter` (state dict keys fc.0.weight, fc.2.weight);
- training settings: those of CoOp's configs (SGD lr 0.002, cosine, one constant warmup epoch
  at 1e-5, batch 32, 200 epochs), as its README says to run it with CoOp's commands.
Changes that keep that behaviour: the width D comes from the backbone (the reference hard-codes
1024, RN50's, and crashes on RN101/ViT), the ratio and the reduction are keys
(TRAINER.CLIP_ADAPTER.RATIO 0.2, REDUCTION 4), and the text features are computed once instead
of on every forward pass (same numbers: the text encoder is frozen). PREC defaults to fp32 as the
reference casts CLIP to fp32; fp16 / amp are faster options.
The adapter does not depend on the classes, so a checkpoint evaluates on any class set.
"""
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

import clip
from engine.errors import ConfigError
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer

from .common.templates import custom_template
from .common.text import class_prompt_features


class Adapter(nn.Module):
    def __init__(self, dim, reduction=4):
        super().__init__()
        hidden = max(1, dim // reduction)
        self.fc = nn.Sequential(
            nn.Linear(dim, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim, bias=False),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.fc(x)


def mix(features, adapted, ratio):
    """The residual blend f' = ratio * adapter(f) + (1 - ratio) * f."""
    return ratio * adapted + (1 - ratio) * features


@TRAINER_REGISTRY.register()
class CLIP_Adapter(Trainer):  # noqa: N801  (the reference's registry name)
    cfg_node = "CLIP_ADAPTER"

    @classmethod
    def extend_cfg(cls, cfg):
        if "CLIP_ADAPTER" in cfg.TRAINER:
            return
        node = cfg.TRAINER.CLIP_ADAPTER = CN()
        node.RATIO = 0.2  # residual ratio (hard-coded 0.2 in the reference)
        node.REDUCTION = 4  # bottleneck reduction (hard-coded 4)
        node.PREC = "fp32"  # the reference casts CLIP to fp32; fp16 runs both towers in half on CUDA

    def check_cfg(self, cfg):
        node = cfg.TRAINER.CLIP_ADAPTER
        if not 0.0 <= float(node.RATIO) <= 1.0:
            raise ConfigError(f"TRAINER.CLIP_ADAPTER.RATIO must lie in [0, 1], got {node.RATIO}")
        if int(node.REDUCTION) < 1:
            raise ConfigError(f"TRAINER.CLIP_ADAPTER.REDUCTION must be >= 1, got {node.REDUCTION}")

    def build_model(self):
        node = self.cfg.TRAINER.CLIP_ADAPTER
        clip_model = self.load_clip()
        print("Building custom CLIP")
        names = [c.replace("_", " ") for c in self.dm.classnames]
        template = custom_template(self.cfg)
        feats = class_prompt_features(self, clip.TextEncoder(clip_model), names, [template]).float()[:, 0]
        self.text_features = F.normalize(feats, dim=-1).to(self.device)
        self.logit_scale = clip_model.logit_scale.detach().exp().float()
        self.ratio = float(node.RATIO)
        dim = int(clip_model.embed_dim)
        self.adapter = Adapter(dim, int(node.REDUCTION)).to(self.device)
        print("Turning off gradients in both the image and the text encoder")
        print(f"Adapter: {dim} -> {max(1, dim // int(node.REDUCTION))} -> {dim}, ratio {self.ratio}")
        self.register_model("clip_adapter", self.adapter)

    def forward(self, features):
        f = features.float()
        f = mix(f, self.adapter(f), self.ratio)
        return self.logit_scale * F.normalize(f, dim=-1) @ self.text_features.t()

    def run_extras(self):
        return {"ratio": self.ratio, "reduction": int(self.cfg.TRAINER.CLIP_ADAPTER.REDUCTION)}
