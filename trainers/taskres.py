"""TaskRes (Yu et al., CVPR 2023): a frozen text classifier t plus a learned residual, t' = t + a*x.

Reference behaviour kept on purpose (the reference TaskRes code):
- the base t is the mean of *un-normalised* CLIP text features over the templates (one custom
  template per dataset; 7 selected templates + "a photo of a {}." for ImageNet);
- class names keep their underscores (the tokenizer makes `_` a token);
- x is zero-initialised, one row per class; a (RESIDUAL_SCALE) is fixed;
- logits = exp(logit_scale) * norm(f) @ norm(t + a*x)^T, trained with plain cross-entropy;
- the base is computed in fp16 on CUDA when PREC is "fp16", and the image encoder then runs
  in fp32 (the reference casts the whole model with `.float()`).
Fixed here: the base is computed on any device, PREC fp32/amp work, and an enhanced base is
loaded whatever the precision.
"""
import os
import pickle
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

import clip
from engine.describe import Axis, Need
from engine.errors import ConfigError, UserError
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer

from .common.templates import IMAGENET_TEMPLATES_SELECT, custom_template, dataset_name
from .common.text import class_prompt_features


def base_templates(dataset):
    """`dataset`: a run's config (or a DATASET.NAME)."""
    if dataset_name(dataset) == "ImageNet":
        return list(IMAGENET_TEMPLATES_SELECT) + ["a photo of a {}."]
    return [custom_template(dataset)]


def load_enhanced_projection(path, text_encoder):
    """The tuned text projection of an enhanced base (`strong_base/.../model.pth.tar`):
    `state_dict.weight` is an nn.Linear weight [D_embed, W_text], i.e. the projection transposed."""
    if not os.path.isfile(path):
        raise UserError(f"Enhanced base not found: {path}. Pass --enhanced-base none for the regular base, "
                        f"or the path of a strong_base/<Dataset>/rn50_<K>shots/model.pth.tar file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        weight = state["state_dict"]["weight"]
    except (RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError) as e:
        raise UserError(f"Cannot read the enhanced base {path} ({type(e).__name__}: {e}); expected a "
                        f"torch file with a dict {{'state_dict': {{'weight': Tensor[D_embed, W_text]}}}}") from None
    expected = tuple(text_encoder.text_projection.shape[::-1])
    if tuple(weight.shape) != expected:
        raise UserError(f"Enhanced base {path} holds a projection of shape {tuple(weight.shape)}, but this "
                        f"backbone needs {expected} ([D_embed, W_text]); was it made for another backbone?")
    return weight.t()


def _base_kind(enhanced_base):
    return "regular" if str(enhanced_base).lower() == "none" else "enhanced"


# run_variant's folder part, read back by the tables for runs without results.json
_VARIANT_DIR = re.compile(r"^base_(?P<base>regular|enhanced)_alpha(?P<alpha>[0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)$")
VARIANTS = ("text", "image", "image_text", "adapted", "adapter")


class Bottleneck(nn.Module):
    """phi of the paper's Table 2: a two-layer MLP D -> D/r -> D."""

    def __init__(self, dim, reduction):
        super().__init__()
        self.fc1 = nn.Linear(dim, max(1, dim // reduction), bias=False)
        self.fc2 = nn.Linear(max(1, dim // reduction), dim, bias=False)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class TaskResLearner(nn.Module):
    """The classifier side of TaskRes and of the paper's ablations (TRAINER.TaskRes.VARIANT):

    text        t' = t + a*x, x [K, D] (the method; reference key names)
    image       f' = f + a*v, one vector v [1, D] added to the raw image feature, t fixed
    image_text  both of the above
    adapted     t' = phi(t)          ("directly adapted" classifier)
    adapter     t' = t + a*phi(t)    ("adapter-style" classifier)
    With LEARNABLE_SCALE, a is a trainable scalar initialised from RESIDUAL_SCALE.
    """

    def __init__(self, base_text_features, alpha, variant="text", learnable_scale=False, reduction=4):
        super().__init__()
        self.variant = variant
        self.register_buffer("base_text_features", base_text_features)
        dim = base_text_features.shape[-1]
        if variant in ("text", "image_text"):
            self.text_feature_residuals = nn.Parameter(torch.zeros_like(base_text_features))
        if variant in ("image", "image_text"):
            self.image_feature_residuals = nn.Parameter(torch.zeros(1, dim, dtype=base_text_features.dtype))
        if variant in ("adapted", "adapter"):
            self.mlp = Bottleneck(dim, reduction).to(base_text_features.dtype)
        if learnable_scale:
            self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        else:
            self.alpha = float(alpha)

    def forward(self):
        """The text classifier t' [K, D]."""
        t = self.base_text_features
        if self.variant in ("text", "image_text"):
            return t + self.alpha * self.text_feature_residuals
        if self.variant == "adapted":
            return self.mlp(t)
        if self.variant == "adapter":
            return t + self.alpha * self.mlp(t)
        return t

    def adapt_image(self, features):
        if self.variant in ("image", "image_text"):
            return features + self.alpha * self.image_feature_residuals
        return features


@TRAINER_REGISTRY.register()
class TaskRes(Trainer):
    cfg_node = "TaskRes"
    # CoOp's keys, in its node only so that reference configs load.
    ignored_keys = tuple(f"TRAINER.TaskRes.{k}" for k in ("N_CTX", "CSC", "CTX_INIT", "CLASS_TOKEN_POSITION"))
    reference_image_encoder_prec = "fp32"
    # Base-to-new: classes never trained on keep their base row with a zero residual.
    per_class_keys = ("base_text_features", "text_feature_residuals")
    axes = (Axis("alpha", "TRAINER.TaskRes.RESIDUAL_SCALE", "--alphas", "TaskRes RESIDUAL_SCALE values"),)
    needs = (Need("enhanced_base", "TRAINER.TaskRes.ENHANCED_BASE", "--enhanced-base", "TaskResEnhancedBase"),)

    @classmethod
    def run_variant(cls, cfg):
        """base_<regular|enhanced>_alpha<A>: the reference scripts' folder, so both bases and
        every alpha of one setting sit side by side."""
        node = cfg.TRAINER.TaskRes
        return f"base_{_base_kind(node.ENHANCED_BASE)}_alpha{float(node.RESIDUAL_SCALE)}"

    variant_log = {"alpha": r"^>> DCT scale factor:\s+([0-9.eE+-]+)", "base": r"^>> Use (regular|enhanced) base!"}

    @classmethod
    def variant_facts(cls, part):
        match = _VARIANT_DIR.match(part)
        return match.groupdict() if match else {}

    @classmethod
    def table_label(cls, extras):
        return "TaskRes (enhanced base)" if extras.get("base") == "enhanced" else "TaskRes"

    @classmethod
    def extend_cfg(cls, cfg):
        cfg.TRAINER.TaskRes = CN()
        cfg.TRAINER.TaskRes.N_CTX = 16  # unused; kept so reference configs load
        cfg.TRAINER.TaskRes.CSC = False
        cfg.TRAINER.TaskRes.CTX_INIT = ""
        cfg.TRAINER.TaskRes.PREC = "fp16"
        cfg.TRAINER.TaskRes.CLASS_TOKEN_POSITION = "end"
        cfg.TRAINER.TaskRes.RESIDUAL_SCALE = 1.0
        cfg.TRAINER.TaskRes.ENHANCED_BASE = "none"
        # Paper ablations, not in the reference code; the defaults are the method.
        cfg.TRAINER.TaskRes.VARIANT = "text"
        cfg.TRAINER.TaskRes.LEARNABLE_SCALE = False
        cfg.TRAINER.TaskRes.MLP_REDUCTION = 4

    def check_cfg(self, cfg):
        if cfg.TRAINER.TaskRes.VARIANT not in VARIANTS:
            raise ConfigError(f"TRAINER.TaskRes.VARIANT must be one of {', '.join(VARIANTS)}, "
                              f"got {cfg.TRAINER.TaskRes.VARIANT!r}")

    def build_model(self):
        cfg = self.cfg.TRAINER.TaskRes
        # PREC fp32/amp: the engine loads fp32 weights (the reference casts with .float()).
        clip_model = self.load_clip()
        print("Building custom CLIP")
        text_encoder = clip.TextEncoder(clip_model)
        if cfg.ENHANCED_BASE.lower() == "none":
            print(">> Use regular base!")
        else:
            print(">> Use enhanced base!")
            projection = load_enhanced_projection(cfg.ENHANCED_BASE, text_encoder)
            text_encoder.set_projection(projection)
            print(">> Pretrained text encoder loaded!")
            print(f">> Text projection parameters:  {projection.numel()}")
        feats = class_prompt_features(self, text_encoder, self.dm.classnames, base_templates(self.cfg))
        base = feats.mean(1).float()  # mean in the encoder's dtype, as the reference
        print(f">> DCT scale factor:  {cfg.RESIDUAL_SCALE}")
        self.learner = TaskResLearner(base, float(cfg.RESIDUAL_SCALE), cfg.VARIANT, cfg.LEARNABLE_SCALE,
                                      cfg.MLP_REDUCTION).to(self.device)
        print("Turning off gradients in both the image and the text encoder")
        for name, p in self.learner.named_parameters():
            print(f"prompt_learner.{name}")
        self.logit_scale = clip_model.logit_scale.detach().exp().float()
        self.register_model("prompt_learner", self.learner)

    def checkpoint_extras(self, name):
        return {"residual_scale": float(self.learner.alpha)}

    def run_extras(self):
        cfg = self.cfg.TRAINER.TaskRes
        base = _base_kind(cfg.ENHANCED_BASE)
        return {"alpha": float(self.learner.alpha), "base": base,
                "base_file": None if base == "regular" else os.path.abspath(cfg.ENHANCED_BASE),
                "variant": cfg.VARIANT}

    def check_loaded(self, name, checkpoint):
        # The reference keeps alpha only in the config, so evaluating with another alpha than
        # the one trained with silently changes the classifier; say so.
        trained = checkpoint.get("residual_scale")
        if trained is not None and not self.cfg.TRAINER.TaskRes.LEARNABLE_SCALE \
                and float(trained) != self.learner.alpha:
            print(f"Warning: this checkpoint was trained with TRAINER.TaskRes.RESIDUAL_SCALE {trained}, "
                  f"but this run uses {self.learner.alpha} (as the reference, the config value is used). "
                  f"Pass TRAINER.TaskRes.RESIDUAL_SCALE {trained} to evaluate the trained classifier.")

    def forward(self, features):
        weights = F.normalize(self.learner(), dim=-1)
        features = self.learner.adapt_image(features.float())
        return self.logit_scale * F.normalize(features, dim=-1) @ weights.t()
