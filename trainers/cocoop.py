"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context plus an image-conditioned shift.

A small meta-net pi = Linear(D, D/16) -> ReLU -> Linear(D/16, W) (D: image feature size, W: text
width; names linear1 / relu / linear2 as the reference) maps the L2-normalised image feature x
to one vector added to every context token: ctx_m(x) = ctx_m + pi(x). Each image thus gets its
own prompts [SOS] [ctx(x)] [class tokens] [.] [EOT] for all classes, and
    logits(x)_k = exp(logit_scale) * x @ norm(text(prompt_k(x)))
with cross-entropy. The context is generic, random N(0, 0.02) or from TRAINER.COCOOP.CTX_INIT
words (n_ctx = their number). The class token is always at the end.

The reference runs the text encoder once per image in a Python loop, each time over all classes.
Here a batch's B x K prompts go through the text encoder together (the same numbers, tested
against the loop), with the savings of trainers/common/prompt_text.py: the SOS and context positions
are run once per image (not once per class and image), only up to the longest EOT position,
and in chunks of at most TEXT_CHUNK prompts with activation checkpointing during training.
TEXT_TRUNCATE False, TEXT_SHARED_PREFIX False, TEXT_CHUNK 0 give the reference computation.

Checkpoints: module `prompt_learner`, state dict {ctx, meta_net.linear1.*, meta_net.linear2.*,
token_prefix, token_suffix} as the reference, which drops the last two when loading; so a model
trained on base classes is evaluated on new classes (DATASET.SUBSAMPLE_CLASSES new) or on
other datasets with the same checkpoint. Nothing in it is per class. The context and meta-net
are fp32 parameters (the reference keeps them in fp16 under PREC fp16).
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

import clip
from engine.record import LEARNED
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer

from .coop import add_node, check_text_keys, class_prompts, context_init
from .common.prompt_text import PromptTextEncoder

# TRAINER.COCOOP: the reference keys plus the text-path keys (see trainers/coop.py).
COCOOP_DEFAULTS = (
    ("N_CTX", 16),
    ("CTX_INIT", ""),
    ("PREC", "fp16"),
    ("TEXT_TRUNCATE", True),
    ("TEXT_SHARED_PREFIX", True),
    ("TEXT_CHUNK", 256),
)


class CoCoOpPromptLearner(nn.Module):
    """ctx [n_ctx, W], meta_net, and the constant SOS / class-token embeddings."""

    def __init__(self, text_encoder, classnames, vis_dim, n_ctx=16, ctx_init=""):
        super().__init__()
        dtype = text_encoder.dtype
        width = text_encoder.ln_final.weight.shape[0]
        vectors, n_ctx, prompt_prefix = context_init(text_encoder, ctx_init, n_ctx)
        if vectors is None:
            vectors = torch.empty(n_ctx, width)
            nn.init.normal_(vectors, std=0.02)
        print(f'Initial context: "{prompt_prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")
        self.ctx = nn.Parameter(vectors)
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, vis_dim // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(vis_dim // 16, width)),
        ]))
        self.n_cls, self.n_ctx, self.prompt_prefix = len(classnames), n_ctx, prompt_prefix
        self.prompts, self.name_lens, self.tokenized_prompts = class_prompts(prompt_prefix, classnames)
        with torch.no_grad():
            embedding = text_encoder.embed(self.tokenized_prompts).to(dtype)
        self.register_buffer("token_prefix", embedding[:, :1].clone())  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:].clone())  # CLS, EOS, padding

    def shifted_context(self, image_features):
        """ctx + pi(x) per image [B, n_ctx, W], from L2-normalised image features [B, D]."""
        bias = self.meta_net(image_features)
        return self.ctx.unsqueeze(0) + bias.unsqueeze(1)

    def parts(self, image_features, length):
        """(per-image prefix [B, 1 + n_ctx, W], class tokens [K, length - 1 - n_ctx, W])."""
        ctx = self.shifted_context(image_features)
        sos = self.token_prefix[:1].expand(ctx.shape[0], -1, -1)
        prefix = torch.cat([sos, ctx.to(sos.dtype)], dim=1)
        return prefix, self.token_suffix[:, :length - 1 - self.n_ctx]

    def forward(self, image_features):
        """The reference's prompts [B, K, 77, W]."""
        prefix, rest = self.parts(image_features, 1 + self.n_ctx + self.token_suffix.shape[1])
        B, K = prefix.shape[0], rest.shape[0]
        return torch.cat([prefix.unsqueeze(1).expand(B, K, -1, -1), rest.unsqueeze(0).expand(B, -1, -1, -1)], dim=2)


@TRAINER_REGISTRY.register()
class CoCoOp(Trainer):
    cfg_node = "COCOOP"
    ignored_load_keys = ("token_prefix", "token_suffix")

    @classmethod
    def extend_cfg(cls, cfg):
        add_node(cfg, "COCOOP", COCOOP_DEFAULTS)

    def check_cfg(self, cfg):
        check_text_keys(cfg, "COCOOP")

    def build_model(self):
        node = self.cfg.TRAINER.COCOOP
        clip_model = self.load_clip()
        print("Building custom CLIP")
        text_encoder = clip.TextEncoder(clip_model)
        vis_dim = clip_model.visual.output_dim
        learner = CoCoOpPromptLearner(text_encoder, self.dm.classnames, vis_dim, int(node.N_CTX), node.CTX_INIT)
        self.prompt_learner = learner.to(self.device)
        self.note_templates([f"{learner.prompt_prefix} {{}}."], LEARNED)  # the prompt as initialised
        self.text = PromptTextEncoder(text_encoder, learner.tokenized_prompts, node.TEXT_TRUNCATE,
                                      node.TEXT_SHARED_PREFIX, node.TEXT_CHUNK)
        self.logit_scale = clip_model.logit_scale.detach().exp().float()
        print("Turning off gradients in both the image and the text encoder")
        self.register_model("prompt_learner", self.prompt_learner)

    def forward(self, features):
        x = F.normalize(features.float(), dim=-1)
        prefix, rest = self.prompt_learner.parts(x, self.text.length)
        text = F.normalize(self.text(prefix, rest).float(), dim=-1)  # [B, K, D]
        return self.logit_scale * torch.einsum("bd,bkd->bk", x, text)

    def run_extras(self):
        learner = self.prompt_learner
        return {"n_ctx": learner.n_ctx, "initial_context": learner.prompt_prefix, **self.text.settings()}
