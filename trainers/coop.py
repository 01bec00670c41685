"""CoOp (Zhou et al., IJCV 2022): learn the context words of CLIP's prompt, keep CLIP frozen.

Each class's prompt is n_ctx learned vectors plus the class name's token embeddings, as the
reference assembles it in 77 positions:
    end     [SOS] [ctx_1 .. ctx_n] [class tokens] [.] [EOT] [pad ...]
    middle  [SOS] [ctx_1 .. ctx_n/2] [class tokens] [ctx_n/2+1 .. ctx_n] [.] [EOT] [pad ...]
    front   [SOS] [class tokens] [ctx_1 .. ctx_n] [.] [EOT] [pad ...]
(TRAINER.COOP.CLASS_TOKEN_POSITION). The context is shared by all classes, or with CSC one per
class. It starts N(0, 0.02) at random, or, with CTX_INIT, as the token embeddings of those words
(n_ctx = their number; the context is then always generic, CSC is ignored, as in the reference).
logits = exp(logit_scale) * norm(image feature) @ norm(text feature)^T, cross-entropy, SGD on
the context only; gradients reach it through the frozen text encoder. Image features come from
the engine's feature source (FEATURES.MODE online or cached), since nothing flows into the
image encoder.

Compatibility: the learned module is registered as `prompt_learner` with the reference's state
dict {ctx, token_prefix, token_suffix} (the last two are the constant SOS and class-token
embeddings), so checkpoints move both ways between CoOp and this framework; like CoOp, loading
ignores token_prefix/token_suffix and rebuilds them from the current class names, which is what
lets a context trained on ImageNet be evaluated on its variants and on other datasets.

Differences from the reference, each a config key with the reference value reachable:
- TEXT_TRUNCATE / TEXT_SHARED_PREFIX / TEXT_CHUNK: exact savings in the text encoder (same
  features up to float rounding; see trainers/common/prompt_text.py). The reference computation is
  TEXT_TRUNCATE False, TEXT_SHARED_PREFIX False, TEXT_CHUNK 0.
Behaviour that differs without a key, because the reference cannot do it:
- the reference re-runs the text encoder over all classes for every test batch; here the text
  features are computed once per evaluation (they depend only on the context);
- the context is an fp32 parameter (the engine's rule for trainable parameters); the reference
  keeps it in fp16 under PREC fp16;
- a class-specific context evaluated on other classes: ImageNet -> ImageNet-A/R keeps the rows
  of the 200 classes (the reference fails on the size mismatch); for other class sets rows are
  matched by class name, and a class the checkpoint never saw gets the mean of the trained
  class contexts (a fresh random row would be noise; the mean is the natural generic context).
"""
import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

import clip
from engine.errors import ConfigError, UserError
from engine.record import LEARNED
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer

from .common.prompt_text import PromptTextEncoder

POSITIONS = ("end", "middle", "front")

# TRAINER.COOP: the reference keys (CoOp's train.py) and this framework's text-path keys.
COOP_DEFAULTS = (
    ("N_CTX", 16),
    ("CSC", False),
    ("CTX_INIT", ""),
    ("PREC", "fp16"),
    ("CLASS_TOKEN_POSITION", "end"),
    # Run the text transformer only up to the longest prompt's EOT position (False: all 77
    # positions, the reference). Exact: the transformer is causal.
    ("TEXT_TRUNCATE", True),
    # Run the positions shared by all prompts (SOS and a generic context before the class name)
    # once instead of once per class (False: the reference). Exact: the transformer is causal.
    ("TEXT_SHARED_PREFIX", True),
    # Prompts whose text activations are held at once during training; more are processed in
    # chunks with activation checkpointing (one extra forward pass). 0: all prompts at once,
    # the reference (which runs out of memory on ImageNet's 1000 classes on common GPUs).
    ("TEXT_CHUNK", 256),
)


def add_node(cfg, name, defaults):
    """Create TRAINER.<name> if needed and add every missing key (other trainer files may have
    created the node with the reference keys only)."""
    if name not in cfg.TRAINER:
        cfg.TRAINER[name] = CN()
    node = cfg.TRAINER[name]
    for key, value in defaults:
        if key not in node:
            node[key] = value


def check_text_keys(cfg, node_name):
    node = cfg.TRAINER[node_name]
    if int(node.TEXT_CHUNK) < 0:
        raise ConfigError(f"TRAINER.{node_name}.TEXT_CHUNK must be >= 0 (0 = all prompts at once), "
                          f"got {node.TEXT_CHUNK}")
    if not node.CTX_INIT and int(node.N_CTX) < 1:
        raise ConfigError(f"TRAINER.{node_name}.N_CTX must be >= 1, got {node.N_CTX}")


def context_init(text_encoder, ctx_init, n_ctx):
    """(initial vectors or None, n_ctx, prompt prefix text). With `ctx_init`, the words' token
    embeddings (n_ctx = number of words, counted as the reference does: split on spaces after
    replacing '_'); otherwise None and "X X ... X"."""
    if not ctx_init:
        return None, n_ctx, " ".join(["X"] * n_ctx)
    ctx_init = ctx_init.replace("_", " ")
    n_ctx = len(ctx_init.split(" "))
    tokens = clip.tokenize(ctx_init)
    n_bpe = int(tokens.argmax(-1)) - 1
    if n_bpe != n_ctx:
        # The reference assumes one BPE token per word; with more, the context takes the first
        # n_ctx token embeddings and the remaining ones stay in the prompt as fixed text.
        print(f'Warning: CTX_INIT "{ctx_init}" has {n_ctx} words but {n_bpe} BPE tokens; as in the reference, '
              f"the context is the first {n_ctx} token embeddings")
    with torch.no_grad():
        vectors = text_encoder.embed(tokens)[0, 1:1 + n_ctx].float().cpu()
    return vectors, n_ctx, ctx_init


def class_prompts(prompt_prefix, classnames):
    """(prompts, name lengths in BPE tokens, token ids [K, 77]) as the reference builds them."""
    names = [name.replace("_", " ") for name in classnames]
    name_lens = [int(clip.tokenize(name).argmax(-1)) - 1 for name in names]
    prompts = [f"{prompt_prefix} {name}." for name in names]
    return prompts, name_lens, clip.tokenize(prompts)


class PromptLearner(nn.Module):
    """CoOp's learnable context and the constant token embeddings of the class prompts.

    State dict as the reference: `ctx` ([n_ctx, W] generic or [K, n_ctx, W] class-specific),
    `token_prefix` [K, 1, W] (SOS) and `token_suffix` [K, 77 - 1 - n_ctx, W] (class tokens, '.',
    EOT, padding). `forward()` returns the reference's full prompts [K, 77, W]; `parts(length)`
    the same prompts cut to `length` positions and split into the prefix shared by all classes
    and the per-class rest, for PromptTextEncoder.
    """

    def __init__(self, text_encoder, classnames, n_ctx=16, csc=False, ctx_init="", position="end"):
        super().__init__()
        dtype = text_encoder.dtype
        width = text_encoder.ln_final.weight.shape[0]
        n_cls = len(classnames)
        vectors, n_ctx, prompt_prefix = context_init(text_encoder, ctx_init, n_ctx)
        if vectors is not None:
            csc = False
        elif csc:
            print("Initializing class-specific contexts")
            vectors = torch.empty(n_cls, n_ctx, width)
            nn.init.normal_(vectors, std=0.02)
        else:
            print("Initializing a generic context")
            vectors = torch.empty(n_ctx, width)
            nn.init.normal_(vectors, std=0.02)
        print(f'Initial context: "{prompt_prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")
        self.ctx = nn.Parameter(vectors)
        self.n_cls, self.n_ctx, self.csc, self.position = n_cls, n_ctx, bool(csc), position
        self.prompt_prefix = prompt_prefix
        self.prompts, self.name_lens, self.tokenized_prompts = class_prompts(prompt_prefix, classnames)
        with torch.no_grad():
            embedding = text_encoder.embed(self.tokenized_prompts).to(dtype)
        self.register_buffer("token_prefix", embedding[:, :1].clone())  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:].clone())  # CLS, EOS, padding
        self._build_layout(embedding.shape[1] - 1)

    def _build_layout(self, body):
        """Where each of the `body` positions after SOS comes from: a context row or a position of
        token_suffix (the reference's end / middle / front assembly, as index maps)."""
        n, half = self.n_ctx, self.n_ctx // 2
        is_ctx = torch.zeros(self.n_cls, body, dtype=torch.bool)
        ctx_index = torch.zeros(self.n_cls, body, dtype=torch.long)
        sfx_index = torch.zeros(self.n_cls, body, dtype=torch.long)
        b = torch.arange(body)
        for k, name_len in enumerate(self.name_lens):
            if self.position == "end":
                c = b < n
                ci, si = b, b - n
            elif self.position == "middle":
                c = (b < half) | ((b >= half + name_len) & (b < n + name_len))
                ci = torch.where(b < half, b, b - name_len)
                si = torch.where(b < half + name_len, b - half, b - n)
            else:  # front
                c = (b >= name_len) & (b < name_len + n)
                ci, si = b - name_len, torch.where(b < name_len, b, b - n)
            is_ctx[k] = c
            ctx_index[k] = torch.where(c, ci, 0)
            sfx_index[k] = torch.where(c, 0, si)
        self.register_buffer("is_ctx", is_ctx, persistent=False)
        self.register_buffer("ctx_index", ctx_index, persistent=False)
        self.register_buffer("sfx_index", sfx_index, persistent=False)
        self.ctx_columns = is_ctx.any(0)  # CPU: which body positions hold context for some class
        # Positions identical in every class's prompt: SOS, plus a generic context before the name.
        if self.csc:
            self.shared = 1
        else:
            self.shared = 1 + {"end": n, "middle": half, "front": 0}[self.position]

    def contexts(self):
        """The context per class [K, n_ctx, W] (a view for a generic context)."""
        return self.ctx if self.csc else self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)

    def body(self, start, stop):
        """Prompt embeddings of positions [start, stop) (start >= 1), [K, stop - start, W]."""
        b0, b1 = start - 1, stop - 1
        suffix = self.token_suffix
        if self.position == "end" and b0 >= self.n_ctx:
            return suffix[:, b0 - self.n_ctx:b1 - self.n_ctx]
        width = suffix.shape[-1]
        out = torch.gather(suffix, 1, self.sfx_index[:, b0:b1, None].expand(-1, -1, width))
        if not bool(self.ctx_columns[b0:b1].any()):
            return out
        ctx = torch.gather(self.contexts().to(out.dtype), 1, self.ctx_index[:, b0:b1, None].expand(-1, -1, width))
        return torch.where(self.is_ctx[:, b0:b1, None], ctx, out)

    def parts(self, length):
        """(prefix [1, Lp, W] shared by all classes, rest [K, length - Lp, W])."""
        lp = self.shared
        prefix = self.token_prefix[:1]
        if lp > 1:
            prefix = torch.cat([prefix, self.ctx[:lp - 1].unsqueeze(0).to(prefix.dtype)], dim=1)
        return prefix, self.body(lp, length)

    def forward(self):
        """The reference's prompts [K, 77, W]."""
        return torch.cat([self.token_prefix, self.body(1, 1 + self.is_ctx.shape[1])], dim=1)


class PromptClassifier:
    """CoOp's classifier for a trainer: `build_prompts(clip_model)` makes `self.prompt_learner`
    (TRAINER.COOP settings) and its text path; `classifier()` gives the normalised text features
    of the current context."""

    # CoOp drops these before loading, so the current dataset's class names are used.
    ignored_load_keys = ("token_prefix", "token_suffix")

    def build_prompts(self, clip_model):
        node = self.cfg.TRAINER.COOP
        text_encoder = clip.TextEncoder(clip_model)
        learner = PromptLearner(text_encoder, self.dm.classnames, int(node.N_CTX), bool(node.CSC),
                                node.CTX_INIT, node.CLASS_TOKEN_POSITION)
        self.prompt_learner = learner.to(self.device)
        self.note_templates([f"{learner.prompt_prefix} {{}}."], LEARNED)  # the prompt as initialised
        self.text = PromptTextEncoder(text_encoder, learner.tokenized_prompts, node.TEXT_TRUNCATE,
                                      node.TEXT_SHARED_PREFIX, node.TEXT_CHUNK)
        self._eval_text = None  # (context version, normalised text features)
        self._loaded_classnames = None
        # A class-specific context has a row per class (matched by name in class_contexts).
        self.class_dims = {"ctx": 0} if learner.csc else {}
        return self.prompt_learner

    def text_features(self):
        """Projected, un-normalised text features [K, D] of the current context."""
        prefix, rest = self.prompt_learner.parts(self.text.length)
        return self.text(prefix, rest)[0]

    def classifier(self):
        """Normalised text features; computed once per evaluation (they change only with ctx)."""
        if torch.is_grad_enabled() or self.prompt_learner.training:
            self._eval_text = None
            return F.normalize(self.text_features().float(), dim=-1)
        ctx = self.prompt_learner.ctx
        key = (ctx.data_ptr(), ctx._version, torch.is_autocast_enabled(self.device.type))
        if self._eval_text is None or self._eval_text[0] != key:
            self._eval_text = (key, F.normalize(self.text_features().float(), dim=-1))
        return self._eval_text[1]

    def prompt_extras(self):
        learner = self.prompt_learner
        return {"n_ctx": learner.n_ctx, "csc": learner.csc, "class_token_position": learner.position,
                "initial_context": learner.prompt_prefix, **self.text.settings()}

    def check_loaded(self, name, checkpoint):
        self._loaded_classnames = checkpoint.get("classnames")
        ctx = checkpoint.get("state_dict", {}).get("ctx")
        own = self.prompt_learner.ctx
        if ctx is None or ctx.shape[-2:] == own.shape[-2:] and ctx.dim() == own.dim():
            return
        def describe(t):
            kind = "generic" if t.dim() == 2 else f"class-specific ({t.shape[0]} classes)"
            return f"a {kind} context of {t.shape[-2]} tokens x {t.shape[-1]}"
        raise UserError(f"The checkpoint holds {describe(ctx)}, but this run builds {describe(own)}. "
                        f"Pass the settings it was trained with: TRAINER.COOP.N_CTX {ctx.shape[-2]} "
                        f"TRAINER.COOP.CSC {ctx.dim() == 3} (and the same TRAINER.COOP.CTX_INIT and backbone).")

    def adapt_loaded_state(self, name, state_dict):
        if not self.prompt_learner.csc or "ctx" not in state_dict:
            return state_dict
        return dict(state_dict, ctx=self.class_contexts(state_dict["ctx"], self._loaded_classnames))

    def class_contexts(self, ctx, trained):
        """A class-specific context [K', n, W] trained on other classes, for this run's classes."""
        current = list(self.dm.classnames)
        if trained is not None and list(trained) == current:
            return ctx
        if trained is None:
            if ctx.shape[0] == len(current):
                return ctx  # a reference checkpoint: no class names, assume the same classes
            raise UserError(f"This class-specific context has {ctx.shape[0]} rows and no class names, but "
                            f"{self.cfg.DATASET.NAME} has {len(current)} classes; class-specific contexts "
                            f"only transfer between the same classes")
        index = {c: i for i, c in enumerate(trained)}
        mean = ctx.mean(0)
        rows = [ctx[index[c]] if c in index else mean for c in current]
        unseen = sum(c not in index for c in current)
        print(f"{unseen} of {len(current)} classes were not seen in training; they get the mean of the "
              f"{len(trained)} trained class contexts")
        self.record["unseen_classes_mean_context"] = unseen
        return torch.stack(rows)


def check_coop_cfg(cfg):
    node = cfg.TRAINER.COOP
    if node.CLASS_TOKEN_POSITION not in POSITIONS:
        raise ConfigError(f"TRAINER.COOP.CLASS_TOKEN_POSITION must be one of {', '.join(POSITIONS)}, "
                          f"got {node.CLASS_TOKEN_POSITION!r}")
    check_text_keys(cfg, "COOP")


@TRAINER_REGISTRY.register()
class CoOp(PromptClassifier, Trainer):
    cfg_node = "COOP"

    @classmethod
    def extend_cfg(cls, cfg):
        add_node(cfg, "COOP", COOP_DEFAULTS)

    def check_cfg(self, cfg):
        check_coop_cfg(cfg)

    def build_model(self):
        clip_model = self.load_clip()
        print("Building custom CLIP")
        self.build_prompts(clip_model)
        self.logit_scale = clip_model.logit_scale.detach().exp().float()
        print("Turning off gradients in both the image and the text encoder")
        self.register_model("prompt_learner", self.prompt_learner)

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, features):
        text = self.classifier()
        return self.logit_scale * F.normalize(features.float(), dim=-1) @ text.t()

    # ---- records and checkpoints -------------------------------------------------------------
    def run_extras(self):
        return self.prompt_extras()
