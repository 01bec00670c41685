"""Producing the enhanced base of TaskRes (the reference repo only ships the results).

The paper's enhanced base is CLIP's text classifier after tuning the text projection on the
target task. Here the projection is a bias-free linear layer W_text -> D initialised from CLIP's
pretrained projection; everything else is frozen, so the pooled (pre-projection) text features
of every class and template are computed once. The classifier is built exactly as TaskRes
builds its base (same templates, underscores kept, mean of raw features; the mean commutes
with the linear projection) and trained with cross-entropy on
    logits = exp(logit_scale) * norm(f) @ norm(P(mean_t pooled))^T.

The registered module is the linear layer itself, so every checkpoint's state dict is
{"weight": [D, W_text]}: the format of the published strong_base/<Dataset>/rn50_<K>shots/
model.pth.tar files. After training, `OUTPUT_DIR/strong_base.pth.tar` holds that file, ready
for `--enhanced-base`. Recipe: configs/trainers/TaskResEnhancedBase/ (50 epochs as the paper).
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

import clip
from engine.io import save_torch
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer

from .taskres import base_templates
from .common.text import class_prompt_features

STRONG_BASE_FILE = "strong_base.pth.tar"


@TRAINER_REGISTRY.register()
class TaskResEnhancedBase(Trainer):
    cfg_node = "TaskRes"
    config_nodes = ("TaskRes.PREC",)  # the rest of the node is the residual's
    reference_image_encoder_prec = "fp32"
    produces = "enhanced_base"  # for TaskRes's --enhanced-base; not a result of its own
    product_file = STRONG_BASE_FILE

    def build_model(self):
        clip_model = self.load_clip()
        text_encoder = clip.TextEncoder(clip_model)
        pooled = class_prompt_features(self, text_encoder, self.dm.classnames, base_templates(self.cfg),
                                pooled=True)
        self.pooled = pooled.float().mean(1)  # [K, W]
        projection = text_encoder.text_projection.detach().float()  # [W_text, D]
        self.projection = nn.Linear(projection.shape[0], projection.shape[1], bias=False).to(self.device)
        with torch.no_grad():
            self.projection.weight.copy_(projection.t())
        self.logit_scale = clip_model.logit_scale.detach().exp().float()
        print(f"Tuning the text projection ({self.projection.weight.numel():,} parameters); "
              f"everything else is frozen")
        self.register_model("text_projection", self.projection)

    def forward(self, features):
        weights = F.normalize(self.projection(self.pooled), dim=-1)
        return self.logit_scale * F.normalize(features.float(), dim=-1) @ weights.t()

    def after_train(self):
        # After the engine has deployed the final model (with TEST.FINAL_MODEL best_val, the
        # best epoch's projection is reloaded first), so the file holds what was evaluated.
        super().after_train()
        path = os.path.join(self.output_dir, STRONG_BASE_FILE)
        save_torch({"state_dict": {"weight": self.projection.weight.detach().cpu()}}, path)
        print(f"Enhanced base saved to {path} (use it with --enhanced-base)")
