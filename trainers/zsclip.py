"""Zero-shot CLIP: a fixed text classifier, nothing trained (run with --eval-only).

ZeroshotCLIP uses the dataset's single custom template; ZeroshotCLIP2 averages the normalised
features of the 7 selected ImageNet templates plus the custom one (only the 7 for ImageNet).
Both replace underscores in class names with spaces, as the reference does.
"""
import torch.nn.functional as F

import clip
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer

from .common.templates import IMAGENET_TEMPLATES_SELECT, custom_template
from .common.text import class_prompt_features


class _ZeroshotBase(Trainer):
    reference_image_encoder_prec = "fp16"  # the reference never casts CLIP to fp32 here

    def templates(self):
        raise NotImplementedError

    def build_model(self):
        clip_model = self.load_clip()
        names = [c.replace("_", " ") for c in self.dm.classnames]
        templates = self.templates()
        print(f"Prompts: {[templates[0].format(c) for c in names[:5]]}{' ...' if len(names) > 5 else ''}")
        feats = class_prompt_features(self, clip.TextEncoder(clip_model), names, templates).float()
        feats = F.normalize(feats, dim=-1).mean(1)
        self.text_features = F.normalize(feats, dim=-1)
        self.logit_scale = clip_model.logit_scale.exp().float()

    def forward(self, features):
        return self.logit_scale * F.normalize(features.float(), dim=-1) @ self.text_features.t()


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(_ZeroshotBase):
    evaluation_only = True
    def templates(self):
        return [custom_template(self.cfg)]


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(_ZeroshotBase):
    evaluation_only = True
    config_folder = "ZeroshotCLIP"
    def templates(self):
        extra = [] if self.cfg.DATASET.NAME == "ImageNet" else [custom_template(self.cfg)]
        return list(IMAGENET_TEMPLATES_SELECT) + extra
