"""`clip.load`: turn a backbone name into a frozen open_clip `CLIP` module.

Three kinds of names:
  * an OpenAI name ("RN50", "ViT-B/16", ...): the checksummed file from the CLIP cache, else
    open_clip's copy of the same weights on the Hugging Face hub, else the legacy OpenAI URL
    (see `weights.fetch_openai`);
  * a path to a file in OpenAI's key names: a TorchScript archive like the released .pt files, a
    plain state dict, a training checkpoint {"state_dict": ...} (a "module." prefix is
    stripped), or a .safetensors file (open_clip's hub copies of OpenAI's weights). The
    architecture is inferred from the tensor shapes, as the original `clip` package does, and
    is assumed to be OpenAI's (QuickGELU); weights trained with open_clip's GELU models belong
    in the third form, whose `pretrained` part may also be a file path;
  * an open_clip "model:pretrained" pair such as "ViT-B-32:laion2b_s34b_b79k".
"""
import difflib
import logging
import os
import pickle
import warnings

import open_clip
import torch
from open_clip.model import build_model_from_openai_state_dict

from engine.errors import ConfigError, UserError, WeightsError

from .weights import MODEL_URLS, Unavailable, available_models, fetch_openai, hub_download_hint, \
    sentence, sha256_file, through_hub

PRECISIONS = ("fp16", "fp32", "amp")

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".tar", ".safetensors")

# Scalars stored next to the weights in OpenAI's files; they are not parameters.
_META_KEYS = ("input_resolution", "context_length", "vocab_size")


def read_state_dict(path):
    """State dict of a CLIP file: TorchScript archive, plain state dict, or {"state_dict": ...}."""
    if not os.path.isfile(path):
        raise WeightsError(f"CLIP weights file not found: {path}")
    if str(path).endswith(".safetensors"):
        sd = _read_safetensors(path)
    else:
        sd = _read_torch(path)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors.")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def _read_safetensors(path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"Cannot read CLIP weights from {path}: {str(e).splitlines()[0][:200]}. "
                           "The file may be truncated or corrupt; delete it and download it "
                           "again.") from e


def _read_torch(path):
    try:
        with warnings.catch_warnings():
            # The released OpenAI files are TorchScript; torch marks the loader as deprecated.
            warnings.simplefilter("ignore", FutureWarning)
            sd = torch.jit.load(path, map_location="cpu").state_dict()
    except (RuntimeError, ValueError):
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as e:
            raise WeightsError(f"Cannot read CLIP weights from {path}: it is neither a TorchScript "
                               f"archive nor a torch state dict ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:200]}). The file may be truncated or "
                               "corrupt; delete it and download it again.") from e
    return sd


def _check_clip_keys(sd, source):
    needed = ["text_projection", "token_embedding.weight", "positional_embedding", "ln_final.weight"]
    missing = [k for k in needed if k not in sd]
    if "visual.proj" not in sd and "visual.attnpool.positional_embedding" not in sd:
        missing.append("visual.proj (ViT) or visual.attnpool.positional_embedding (ResNet)")
    if missing:
        raise WeightsError(f"{source} is not an OpenAI-format CLIP state dict; missing keys: "
                           + ", ".join(missing))


def openai_signature(state_dict):
    """The architecture of an OpenAI-format state dict: its keys and shapes, all that
    `build_model` infers the architecture from."""
    return ("openai",) + tuple((k, tuple(v.shape)) for k, v in sorted(state_dict.items()) if k not in _META_KEYS)


def build_random(signature):
    """A randomly initialised CLIP of the architecture `signature` (`model.arch_signature`),
    built on the CPU as the reference builds it before copying in its weights: OpenAI's
    `clip.build_model` for OpenAI architectures, open_clip's init for open_clip models."""
    kind, rest = signature[0], signature[1:]
    if kind == "openai":
        # Shape-only weights (zero-stride): the build draws its random init, the copy is cheap.
        shapes = {k: torch.zeros(()).expand(shape) for k, shape in rest}
        return build_model_from_openai_state_dict(shapes, quick_gelu=True, cast_dtype=torch.float16)
    if kind == "open_clip":
        logging.disable(logging.WARNING)  # open_clip warns that the model is randomly initialised
        try:
            return open_clip.create_model(rest[0], pretrained=None, load_weights=False, pretrained_text=False,
                                          device="cpu")
        finally:
            logging.disable(logging.NOTSET)
    raise ValueError(f"Unknown CLIP architecture signature kind {kind!r}")


def build_model(state_dict, precision="fp32", source="state dict"):
    """CLIP with the architecture inferred from `state_dict` (OpenAI key names)."""
    _check_clip_keys(state_dict, source)
    fp16 = precision == "fp16"
    try:
        # Casts conv/linear/attention weights and projections to fp16, as OpenAI stores them;
        # with cast_dtype=fp16, LayerNorm runs in fp32 like OpenAI's.
        model = build_model_from_openai_state_dict(
            dict(state_dict), quick_gelu=True, cast_dtype=torch.float16 if fp16 else None)
        if not fp16:
            model.float()
            # Reload so that a file stored in fp32 keeps its precision (OpenAI files are fp16
            # already, so for them this changes nothing).
            weights = {k: v for k, v in state_dict.items() if k not in _META_KEYS}
            model.load_state_dict(weights)
    except (RuntimeError, KeyError, ValueError, AssertionError) as e:
        raise WeightsError(f"{source} does not match any CLIP architecture that can be inferred "
                           f"from its shapes: {str(e).splitlines()[0][:300]}") from e
    return model


def _resolve_precision(precision, device):
    if precision is None:
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(f"Unknown CLIP precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    if precision == "fp16" and device.type != "cuda":
        print(f"Note: fp16 weights are only used on CUDA; loading CLIP in fp32 on {device.type}.")
        return "fp32"
    # amp keeps fp32 weights; autocast is the trainer's business.
    return "fp32" if precision == "amp" else precision


def _unknown_name(name):
    names = available_models()
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UserError(f"Unknown CLIP backbone {name!r}.{hint} Available: {', '.join(names)}. "
                     "A path to a weights file or an open_clip 'model:pretrained' pair "
                     "(e.g. 'ViT-B-32:laion2b_s34b_b79k') also works.")


def _load_open_clip(name, device, precision, cache_dir):
    arch, tag = name.split(":", 1)
    if arch == "hf-hub":
        # open_clip's own scheme: the whole name is the model id, weights come with it.
        arch, tag, repo, quick_gelu = name, None, name[len("hf-hub:"):], False
    else:
        if arch not in open_clip.list_models():
            close = difflib.get_close_matches(arch, open_clip.list_models(), n=3, cutoff=0.6)
            hint = f" Close matches: {', '.join(close)}." if close else ""
            raise UserError(f"Unknown open_clip model {arch!r} in backbone {name!r}.{hint} "
                            "See open_clip.list_models().")
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if tag not in tags and not os.path.isfile(os.path.expanduser(tag)):
            raise UserError(f"Unknown pretrained tag {tag!r} for open_clip model {arch!r}; known "
                            f"tags: {', '.join(tags) or 'none'}. A path to a weights file also works.")
        if tag not in tags:
            tag = os.path.expanduser(tag)
        cfg = (open_clip.get_pretrained_cfg(arch, tag) or {}) if tag in tags else {}
        hub, quick_gelu = cfg.get("hf_hub", ""), cfg.get("quick_gelu", False)
        repo = os.path.split(hub)[0]  # 'org/repo/' or 'org/repo/file' -> 'org/repo'
    cache = os.path.expanduser(cache_dir) if cache_dir else None

    def create():
        model, _, _ = open_clip.create_model_and_transforms(
            arch, pretrained=tag, precision=precision, device=device, cache_dir=cache,
            require_pretrained=True)
        return model

    try:
        # Hub downloads go through `through_hub`: the cache first, no retry loop when offline.
        model = through_hub(create, repo, cache_dir) if repo else create()
    except Unavailable as e:
        whole_repo = arch.startswith("hf-hub:")
        msg = (f"Could not get open_clip weights {name!r}: {e}. To fix it, "
               + hub_download_hint(repo, cache_dir, None if whole_repo else "open_clip_*"))
        if not whole_repo and not quick_gelu:
            # (A file path loses the tag's QuickGELU flag, so it is no advice for OpenAI tags.)
            msg += (f"; or pass the weights file itself as "
                    f"'{arch}:/path/to/open_clip_model.safetensors'")
        raise WeightsError(msg + ". MODEL.BACKBONE.CACHE_DIR sets the Hugging Face cache "
                           "folder.") from None
    except (RuntimeError, OSError, ValueError) as e:
        where = cache_dir or "open_clip's default cache (the Hugging Face hub cache)"
        raise WeightsError(f"Could not get open_clip weights {name!r}: {sentence(e)} "
                           f"Without network access, the files must already be in {where}; the "
                           "folder can be set with MODEL.BACKBONE.CACHE_DIR.") from e
    if tag is not None and os.path.isfile(tag):
        backbone_id = f"open_clip:{arch}:sha256={sha256_file(tag)}"
    else:
        backbone_id = f"open_clip:{name}"
    return model, backbone_id


def load(name, device="cpu", precision=None, cache_dir=None):
    """Frozen CLIP (open_clip `CLIP`, eval mode, no gradients) on `device`.

    precision: None picks fp16 on CUDA (OpenAI's mixed fp16 weights, as the references run) and
    fp32 elsewhere; "fp16" off CUDA falls back to fp32; "fp32" and "amp" give fp32 weights.
    cache_dir: MODEL.BACKBONE.CACHE_DIR; holds OpenAI's files (e.g. RN50.pt) and hub downloads.
    Adds `input_resolution` (int), `embed_dim`, `backbone_id` (identifies the weights, for
    feature caches: the SHA-256 of the weights file for OpenAI names and paths) and
    `arch_signature` (the architecture, for `build_random`) to the module.
    """
    device = torch.device(device)
    precision = _resolve_precision(precision, device)
    print(f"Loading CLIP (backbone: {name})")
    path = os.path.expanduser(str(name))
    if name in MODEL_URLS:
        path, backbone_id, source = fetch_openai(name, cache_dir)
        if source.startswith("Hugging Face"):
            print(f"Using the {source} of {name}: {path}")
        sd = read_state_dict(path)
        model, signature = build_model(sd, precision, source=path), openai_signature(sd)
    elif os.path.isfile(path):
        sd = read_state_dict(path)
        model, signature = build_model(sd, precision, source=path), openai_signature(sd)
        backbone_id = sha256_file(path)
    elif ":" in name:
        model, backbone_id = _load_open_clip(name, device, precision, cache_dir)
        signature = ("open_clip", name if name.startswith("hf-hub:") else name.split(":", 1)[0])
    elif os.path.isabs(path) or name.startswith(".") or name.endswith(_WEIGHT_SUFFIXES):
        raise WeightsError(f"CLIP weights file not found: {path}")
    else:
        raise _unknown_name(name)

    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    size = model.visual.image_size
    model.input_resolution = int(size[0] if isinstance(size, (tuple, list)) else size)
    model.embed_dim = _embed_dim(model)
    model.backbone_id = backbone_id
    model.arch_signature = signature
    return model


def _embed_dim(model):
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[1])
    if isinstance(proj, torch.nn.Linear):
        return int(proj.out_features)
    return int(getattr(model.visual, "output_dim"))


def visual_dtype(model):
    """Dtype of the image encoder's weights (what OpenAI's `model.dtype` reports)."""
    conv1 = getattr(model.visual, "conv1", None)
    if conv1 is not None:
        return conv1.weight.dtype
    return next(p for p in model.visual.parameters() if p.is_floating_point()).dtype


def encode_image(model, images):
    """Image features in float32; `images` are cast to the visual tower's dtype and device."""
    param = next(model.visual.parameters())
    return model.encode_image(images.to(device=param.device, dtype=visual_dtype(model))).float()


# ---- the last image projection (methods that learn it, e.g. ProLIP) ----------------------------
def _projection_kind(model):
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    visual = model.visual
    if isinstance(visual, ModifiedResNet) and getattr(visual, "attnpool", None) is not None:
        return "attnpool"
    if isinstance(visual, VisionTransformer) and isinstance(getattr(visual, "proj", None), torch.Tensor):
        return "proj"
    raise UserError(f"This image encoder ({type(visual).__name__}) has no last projection to split off: "
                    "pre-projection features need an OpenAI-architecture ResNet (attention pooling) or a "
                    "ViT with a `proj` matrix")


def image_projection(model):
    """(weight [D_embed, W], bias [D_embed] or None), float32 copies: the image tower's last linear
    map, f = z @ weight.T + bias, with z the pre-projection feature. ResNets: the attention
    pool's output projection `attnpool.c_proj` (it has a bias); ViTs: `visual.proj` transposed."""
    if _projection_kind(model) == "attnpool":
        c_proj = model.visual.attnpool.c_proj
        return c_proj.weight.detach().float().clone(), c_proj.bias.detach().float().clone()
    return model.visual.proj.detach().float().t().contiguous(), None


def _attnpool_before_projection(pool, x):
    """open_clip's AttentionPool2d.forward with an identity output projection, for the pooled
    (first) token only: the concatenated heads' output, the input of `c_proj`."""
    x = x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3]).permute(2, 0, 1)  # NCHW -> (HW)NC
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
    x = x + pool.positional_embedding[:, None, :].to(x.dtype)
    width = x.shape[-1]
    out, _ = torch.nn.functional.multi_head_attention_forward(
        query=x[:1], key=x, value=x, embed_dim_to_check=width, num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=torch.eye(width, dtype=x.dtype, device=x.device),
        out_proj_bias=torch.zeros(width, dtype=x.dtype, device=x.device),
        use_separate_proj_weight=True, training=False, need_weights=False)
    return out[0]


def encode_image_pre_projection(model, images):
    """Image features before the last projection (`image_projection`), float32: the input of
    `attnpool.c_proj` (ResNets, e.g. 2048-d for RN50) or of `visual.proj` (ViTs, the
    post-LayerNorm class token, e.g. 768-d for ViT-B/16)."""
    kind = _projection_kind(model)
    visual = model.visual
    param = next(visual.parameters())
    x = images.to(device=param.device, dtype=visual_dtype(model))
    if kind == "attnpool":
        x = visual.stem(x)
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
        return _attnpool_before_projection(visual.attnpool, x).float()
    pooled, _ = visual._pool(visual.transformer(visual._embeds(x)))
    return pooled.float()
