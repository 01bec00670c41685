"""The OpenAI `clip` module's API (`from clip import clip`), for trainer files written against the
OpenAI `clip` package (CoOp, CoCoOp, KgCoOp, ProGrad, TaskRes, CLIP-Adapter ...).

Such files load CLIP like this:

    url = clip._MODELS[cfg.MODEL.BACKBONE.NAME]
    model_path = clip._download(url)
    try:
        model = torch.jit.load(model_path, map_location="cpu").eval(); state_dict = None
    except RuntimeError:
        state_dict = torch.load(model_path, map_location="cpu")
    model = clip.build_model(state_dict or model.state_dict())

and then reach into the model: `dtype`, `visual`, `transformer`, `token_embedding`,
`positional_embedding`, `ln_final`, `text_projection`, `logit_scale`. This module makes that path
work for every backbone name this project accepts:

  * an OpenAI name: `_MODELS[name]` is OpenAI's URL and `_download` fetches (or finds) the
    checksummed file in the CLIP cache, as the original does;
  * a path to a weights file: `_MODELS[path]` is the path and `_download` returns it;
  * an open_clip "model:pretrained" pair: `_MODELS[name]` is "open_clip:<name>"; `_download`
    loads the model through open_clip once and writes its weights with OpenAI's key names (plus
    the open_clip config, as a tensor, so the activation and sizes are kept) under
    `<cache>/open_clip/`. That file is a plain torch file: torch.jit.load raises RuntimeError on
    it and torch.load reads it, exactly the fallback such files already take.

`build_model` returns OpenAI's module layout with OpenAI's mixed precision (convolution, linear
and attention weights and the projections in fp16; LayerNorm computed in fp32), built from
open_clip's layers. Unlike open_clip (batch-first, mask passed as an argument), the transformers
take the SEQUENCE-FIRST layout [L, N, W] and every text block applies the causal mask itself, as
OpenAI's do, so `x.permute(1, 0, 2); model.transformer(x)` in a trainer file computes what it
computes with the original package. The state dict has OpenAI's key names, so
`build_model(model.state_dict())` round-trips.
"""
import functools
import hashlib
import json
import os
import re
import warnings
from collections.abc import Mapping

import torch
from open_clip.model import CLIP as OpenClipCLIP
from open_clip.model import convert_weights_to_lp
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import ResidualAttentionBlock as OpenClipBlock
from open_clip.transformer import VisionTransformer as OpenClipViT
from torch import nn
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

import clip as _project
from engine.errors import UserError, WeightsError
from engine.io import save_torch

from .simple_tokenizer import SimpleTokenizer

__all__ = ["available_models", "load", "tokenize", "build_model"]

BICUBIC = InterpolationMode.BICUBIC
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

OPEN_CLIP_PREFIX = "open_clip:"
# Key of the open_clip model config (JSON bytes as a uint8 tensor) in converted weight files.
OPEN_CLIP_CONFIG_KEY = "open_clip_config"
_META_KEYS = ("input_resolution", "context_length", "vocab_size")


class BackboneNotFound(UserError, KeyError):
    """An unknown backbone name: a KeyError for `_MODELS[name]` callers, a clear message for users."""

    __str__ = Exception.__str__


class TextTooLong(UserError, RuntimeError):
    """OpenAI's tokenize raises RuntimeError for text longer than the context."""


# ---------------------------------------------------------------------------------------------
# Names -> files


def available_models():
    """OpenAI's model names (paths and open_clip "model:pretrained" pairs are accepted too)."""
    return _project.available_models()


class _ModelTable(Mapping):
    """`_MODELS[name]` -> what `_download` turns into a local file, for every accepted name.

    Iterating lists OpenAI's names (as the original dict does); lookups also accept weight file
    paths and open_clip "model:pretrained" pairs.
    """

    def __getitem__(self, name):
        name = str(name)
        if name in _project.MODEL_URLS:
            return _project.MODEL_URLS[name]
        if name.startswith(OPEN_CLIP_PREFIX):
            return name
        path = os.path.expanduser(name)
        if os.path.isfile(path):
            return os.path.abspath(path)
        if ":" in name and not os.path.isabs(path):
            return OPEN_CLIP_PREFIX + name
        raise BackboneNotFound(
            f"Unknown CLIP backbone {name!r}: not one of {', '.join(_project.MODEL_URLS)}, not an existing "
            "weights file, and not an open_clip 'model:pretrained' pair (e.g. 'ViT-B-32:laion2b_s34b_b79k').")

    def __iter__(self):
        return iter(_project.MODEL_URLS)

    def __len__(self):
        return len(_project.MODEL_URLS)


_MODELS = _ModelTable()


def _download(url, root=None):
    """Local path for a `_MODELS` value: OpenAI URLs are downloaded into `root` (default: the CLIP
    cache, $CLIP_CACHE_DIR or ~/.cache/clip) and checked against the SHA-256 in the URL; file
    paths are returned as they are; open_clip names are converted once into an OpenAI-format
    file under `<root>/open_clip/`."""
    url = str(url)
    if url.startswith(OPEN_CLIP_PREFIX):
        return _open_clip_as_openai_file(url[len(OPEN_CLIP_PREFIX):], root)
    path = os.path.expanduser(url)
    if os.path.isfile(path):
        return os.path.abspath(path)
    if re.match(r"^https?://", url):
        return _project.download(url, root or _project.default_cache_dir())
    raise WeightsError(f"CLIP weights file not found: {url}")


def _open_clip_as_openai_file(name, root=None):
    root = os.path.expanduser(root or _project.default_cache_dir())
    arch, _, tag = name.partition(":")
    identity = name
    tag_path = os.path.expanduser(tag)
    if tag and os.path.isfile(tag_path):
        identity = f"{arch}:sha256={_project.sha256_file(tag_path)}"  # a changed file gets a new name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", arch).strip("_") or "model"
    path = os.path.join(root, "open_clip", f"{stem}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.pt")
    if os.path.isfile(path):
        return path
    import open_clip

    config = open_clip.get_model_config(arch)
    model = _project.load(name, device="cpu", precision="fp32")
    _check_openai_layout(model, name)
    if config is None:
        raise UserError(f"open_clip has no config for {arch!r} (backbone {name!r}); only models listed by "
                        "open_clip.list_models() can be converted for OpenAI-style trainer files.")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state[OPEN_CLIP_CONFIG_KEY] = torch.tensor(list(json.dumps(config).encode()), dtype=torch.uint8)
    save_torch(state, path)
    print(f"Wrote {name} in OpenAI's format to {path}")
    return path


# ---------------------------------------------------------------------------------------------
# OpenAI's module layout on open_clip's layers


class ResidualAttentionBlock(nn.Module):
    """Pre-LN residual block on [L, N, W] input; a text block applies its causal mask itself."""

    def __init__(self, block, attn_mask=None):
        super().__init__()
        _require(isinstance(block, OpenClipBlock) and isinstance(block.ls_1, nn.Identity)
                 and isinstance(block.ls_2, nn.Identity) and not hasattr(block, "ln_1_kv"),
                 "its transformer blocks are not plain pre-LN attention blocks")
        self.ln_1 = block.ln_1
        self.attn = block.attn
        self.attn.batch_first = False  # nn.MultiheadAttention reads this flag at every call
        self.ln_2 = block.ln_2
        self.mlp = block.mlp
        self.register_buffer("attn_mask", attn_mask, persistent=False)

    def attention(self, x):
        mask = self.attn_mask
        if mask is not None:
            n = x.shape[0]
            mask = mask[:n, :n].to(dtype=x.dtype, device=x.device)
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """OpenAI's Transformer: `resblocks` is an nn.Sequential; input and output are [L, N, W]."""

    def __init__(self, width, blocks):
        super().__init__()
        self.width = width
        self.layers = len(blocks)
        self.resblocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.resblocks(x)


def _transformer(transformer, attn_mask=None):
    mask = None if attn_mask is None else attn_mask.detach().clone()
    return Transformer(transformer.width, [ResidualAttentionBlock(b, mask) for b in transformer.resblocks])


class VisionTransformer(nn.Module):
    """OpenAI's ViT image encoder: patches + class token + positions -> ln_pre -> transformer ->
    ln_post on the class token -> @ proj."""

    def __init__(self, vit):
        super().__init__()
        _require(getattr(vit, "attn_pool", None) is None and getattr(vit, "pool_type", "tok") == "tok"
                 and not getattr(vit, "final_ln_after_pool", False) and not getattr(vit, "output_tokens", False)
                 and isinstance(getattr(vit, "patch_dropout", nn.Identity()), nn.Identity),
                 "its image transformer pools differently from OpenAI's (attention pooling, average pooling "
                 "or patch dropout)")
        size = vit.image_size
        self.input_resolution = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.output_dim = vit.output_dim
        self.conv1 = vit.conv1
        self.class_embedding = vit.class_embedding
        self.positional_embedding = vit.positional_embedding
        self.ln_pre = vit.ln_pre
        self.transformer = _transformer(vit.transformer)
        self.ln_post = vit.ln_post
        self.proj = vit.proj

    def forward(self, x):
        x = self.conv1(x)  # [N, width, grid, grid]
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [N, grid ** 2, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # LND -> NLD
        x = self.ln_post(x[:, 0, :])
        if self.proj is not None:
            x = x @ self.proj
        return x


class CLIP(nn.Module):
    """OpenAI's CLIP module layout (see the module docstring)."""

    def __init__(self, model):
        super().__init__()
        _check_openai_layout(model)
        self.context_length = int(model.context_length)
        self.vocab_size = int(model.vocab_size)
        if isinstance(model.visual, ModifiedResNet):
            self.visual = model.visual  # open_clip's ModifiedResNet has OpenAI's layout already
            self.visual.input_resolution = int(model.visual.image_size)
        else:
            self.visual = VisionTransformer(model.visual)
        self.transformer = _transformer(model.transformer, model.attn_mask)
        self.token_embedding = model.token_embedding
        self.positional_embedding = model.positional_embedding
        self.ln_final = model.ln_final
        self.text_projection = model.text_projection
        self.logit_scale = model.logit_scale

    def build_attention_mask(self):
        """Causal additive mask [L, L]: -inf above the diagonal."""
        return torch.full((self.context_length, self.context_length), float("-inf")).triu_(1)

    @property
    def dtype(self):
        return self.visual.conv1.weight.dtype

    def encode_image(self, image):
        return self.visual(image.type(self.dtype))

    def encode_text(self, text):
        x = self.token_embedding(text).type(self.dtype)  # [N, L, W]
        x = x + self.positional_embedding.type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # LND -> NLD
        x = self.ln_final(x).type(self.dtype)
        # Features at the end-of-text token (the largest id in each row).
        return x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)] @ self.text_projection

    def forward(self, image, text):
        image_features = self.encode_image(image)
        text_features = self.encode_text(text)
        image_features = image_features / image_features.norm(dim=1, keepdim=True)
        text_features = text_features / text_features.norm(dim=1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


def _require(condition, problem):
    if not condition:
        raise UserError(f"This CLIP cannot be given OpenAI's module layout: {problem}. Trainer files written "
                        "for the OpenAI clip package need an OpenAI-architecture CLIP (ViT or ModifiedResNet "
                        "image encoder, causal text transformer pooled at the end-of-text token).")


def _check_openai_layout(model, name=None):
    what = f" ({name})" if name else ""
    _require(isinstance(model, OpenClipCLIP), f"{type(model).__name__}{what} is not open_clip's CLIP class")
    _require(getattr(model, "text_pool_type", "argmax") == "argmax", "its text features are not pooled at the "
             "end-of-text token")
    _require(getattr(model, "attn_mask", None) is not None, "its text transformer has no causal mask")
    _require(isinstance(model.text_projection, nn.Parameter), "its text projection is not a plain matrix")
    _require(getattr(model, "logit_bias", None) is None, "it has a logit bias (SigLIP-style training)")
    _require(isinstance(model.visual, (ModifiedResNet, OpenClipViT)),
             f"its image encoder is {type(model.visual).__name__}, not a ViT or ModifiedResNet")


# ---------------------------------------------------------------------------------------------
# build_model / load


def _check_design_details(details):
    """MaPLe-style forks pass `design_details` to their patched model code; prompt layers inside
    CLIP's transformers cannot be expressed with OpenAI's module layout alone."""
    if details is None:
        return
    trainer = details.get("trainer") if isinstance(details, dict) else None
    sizes = [v for k, v in (details.items() if isinstance(details, dict) else []) if k != "trainer"]
    if trainer in (None, "CoOp", "CoCoOp") and not any(isinstance(v, (int, float)) and v for v in sizes):
        return  # the plain model, which such forks also request this way
    raise UserError(
        f"clip.build_model(..., design_details={details!r}) asks for prompt layers inside CLIP's transformers "
        f"({trainer}). Trainer files that rely on a patched copy of the OpenAI clip model code (MaPLe, "
        "IVLP, VPT-deep, PromptSRC ...) are not supported as they are: express the deep prompts in the "
        "trainer file, e.g. by wrapping model.transformer.resblocks. See docs/dassl_compat.md.")


def _plain_state_dict(state_dict):
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise WeightsError(f"clip.build_model needs a state dict, got {type(state_dict).__name__}")
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _open_clip_from_config(config_tensor, state_dict):
    config = json.loads(bytes(config_tensor.to(torch.uint8).tolist()).decode())
    if config.pop("custom_text", False):
        _require(False, "its open_clip config uses a custom text tower")
    try:
        model = OpenClipCLIP(**config, cast_dtype=torch.float16)
    except TypeError as e:
        raise UserError(f"Cannot build an open_clip CLIP from the config stored with these weights: {e}") from None
    convert_weights_to_lp(model, torch.float16)
    weights = {k: v for k, v in state_dict.items() if k not in _META_KEYS}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise WeightsError(f"The weights do not fit their open_clip config: {str(e).splitlines()[0][:300]}") from None
    return model.eval()


def build_model(state_dict, design_details=None):
    """OpenAI's `build_model`: the architecture is inferred from `state_dict` (OpenAI key names),
    with OpenAI's fp16 weights; returns the model in eval mode, on the CPU. Call `.float()` for
    fp32 weights. `design_details` (MaPLe-style forks) is accepted when it asks for no prompt
    layers."""
    _check_design_details(design_details)
    sd = _plain_state_dict(state_dict)
    config = sd.pop(OPEN_CLIP_CONFIG_KEY, None)
    if config is not None:
        model = _open_clip_from_config(config, sd)
    else:
        model = _project.build_model(sd, precision="fp16")
    return CLIP(model).eval()


def _convert_image_to_rgb(image):
    return image.convert("RGB")


def _transform(n_px):
    """CLIP's preprocessing: bicubic resize of the short side, center crop, RGB, tensor, normalize."""
    return Compose([Resize(n_px, interpolation=BICUBIC), CenterCrop(n_px), _convert_image_to_rgb, ToTensor(),
                    Normalize(CLIP_MEAN, CLIP_STD)])


def load(name, device="cuda" if torch.cuda.is_available() else "cpu", jit=False, download_root=None):
    """(model, preprocess) as OpenAI's `clip.load`: fp16 weights on CUDA, fp32 on the CPU. No
    TorchScript models are made here; `jit=True` returns the eager model with a warning."""
    if jit:
        warnings.warn("clip.load(jit=True): TorchScript models are not provided here; loading the eager model.",
                      stacklevel=2)
    path = _download(_MODELS[name], download_root)
    model = build_model(_project.read_state_dict(path)).to(device)
    if str(device) == "cpu":
        model.float()
    return model, _transform(model.visual.input_resolution)


def tokenize(texts, context_length=77, truncate=False):
    """LongTensor [N, context_length]: [SOT] + BPE ids + [EOT], zero-padded (OpenAI's ids)."""
    try:
        return _project.tokenize(texts, context_length=context_length, truncate=truncate)
    except UserError as e:
        raise TextTooLong(str(e)) from None


@functools.lru_cache(maxsize=1)
def _shared_tokenizer():
    return SimpleTokenizer()


def __getattr__(name):
    # OpenAI's module holds a tokenizer instance as `_tokenizer`; build it on first use only.
    if name == "_tokenizer":
        return _shared_tokenizer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
