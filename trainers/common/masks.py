"""Binary weight masks inside a loaded CLIP image encoder, without copying the encoder.

Mask tuning multiplies frozen weights W element-wise by a binary mask bin(m) = 1[m > threshold]
computed from real-valued scores m, and trains m with a straight-through estimator: the
backward pass treats bin as the identity, so dL/dm = dL/dW' * W for W' = W * bin(m).

The masks are attached to the modules of the (private) CLIP model itself with
`torch.nn.utils.parametrize`: `module.weight` (or `attn.in_proj_weight`) becomes W * bin(m),
computed from the module's own frozen tensor; no encoder is re-implemented and no weight is
copied. `MaskSet.off()` switches every mask off at once, which gives back the zero-shot encoder
(the teacher of gradient dropout regularity) from the same weights.

What is masked (OpenAI CLIP architectures as open_clip builds them):
  ViT     the patch-embedding conv1, every attention in-projection (one mask over the fused
          Q/K/V matrix) and out-projection; with `mask_mlp` also every MLP c_fc / c_proj.
  ResNet  every convolution (stem, bottlenecks, downsample) and the attention-pool
          q/k/v/c projections. BatchNorm stays frozen in eval mode (the model is never put in
          train mode), and nothing else (biases, norms, embeddings, projections) is masked.

Score names follow the module paths plus ".mask_real" (`conv1.mask_real`,
`transformer.resblocks.3.attn.mask_real` for the in-projection,
`transformer.resblocks.3.attn.out_proj.mask_real`), the names the original implementation
saves its masks under, so its checkpoints load here too.

Saved masks are bit-packed: the boolean mask flattened row-major, 8 entries per byte with the
first entry in the most significant bit, zero-padded to a whole byte (numpy.packbits), one
uint8 tensor per masked weight: ViT-B/16 attention masks take 3.6 MB instead of 116 MB of
fp32 scores.
"""
import contextlib
import os

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from engine.errors import UserError

SUFFIX = ".mask_real"


class _MaskedWeight(torch.autograd.Function):
    """W * 1[m > threshold] forward; straight-through backward: grad_m = grad_W' * W (in the
    scores' dtype, fp32, also when W is half). W gets no gradient. Vectorisable (vmap), so
    several cotangents can go through it in one batched backward pass."""

    generate_vmap_rule = True

    @staticmethod
    def forward(weight, scores, threshold):
        return weight * (scores > threshold).to(weight.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        weight, scores, _ = inputs
        ctx.save_for_backward(weight)  # the frozen tensor itself: nothing is copied
        ctx.score_dtype = scores.dtype

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return None, grad.to(ctx.score_dtype) * weight.to(ctx.score_dtype), None


class _Switch:
    on = True


class MaskedWeight(nn.Module):
    """Parametrization W -> W * bin(scores). The scores Parameter belongs to a `MaskSet`; it is
    only referenced here (not registered), so it is saved and optimised in one place."""

    def __init__(self, scores, threshold, switch):
        super().__init__()
        object.__setattr__(self, "scores", scores)
        self.threshold = float(threshold)
        self.switch = switch

    def forward(self, weight):
        if not self.switch.on:
            return weight
        return _MaskedWeight.apply(weight, self.scores, self.threshold)


def _is_vit(visual):
    return hasattr(visual, "conv1") and hasattr(visual, "transformer") and hasattr(visual, "class_embedding")


def _is_resnet(visual):
    return hasattr(visual, "attnpool") and hasattr(visual, "layer1")


def mask_targets(visual, mask_mlp=False):
    """[(score name, module, tensor name)] of the weights to mask, in module order."""
    vit, resnet = _is_vit(visual), _is_resnet(visual)
    if not (vit or resnet):
        raise UserError(f"Mask tuning supports CLIP's ViT and ModifiedResNet image encoders; this backbone's "
                        f"image encoder is a {type(visual).__name__}")
    targets, done = [], set()
    for name, module in visual.named_modules():
        if id(module) in done:
            continue
        if isinstance(module, nn.Conv2d):
            targets.append((name + SUFFIX, module, "weight"))
        elif isinstance(module, nn.MultiheadAttention):
            if not module._qkv_same_embed_dim or module.in_proj_weight is None:
                raise UserError(f"{name}: attention with separate Q/K/V projections cannot be masked here")
            targets.append((name + SUFFIX, module, "in_proj_weight"))
            targets.append((f"{name}.out_proj{SUFFIX}", module.out_proj, "weight"))
            done.add(id(module.out_proj))
        elif isinstance(module, nn.Linear):
            if resnet and name.startswith("attnpool."):
                targets.append((name + SUFFIX, module, "weight"))
            elif vit and ".mlp." in f".{name}." and mask_mlp:
                targets.append((name + SUFFIX, module, "weight"))
    return targets


def _tree_add(root, dotted, param):
    """Register `param` in a tree of empty modules so that its state-dict key is `dotted`."""
    *path, leaf = dotted.split(".")
    node = root
    for part in path:
        if part not in node._modules:
            node.add_module(part, nn.Module())
        node = node._modules[part]
    node.register_parameter(leaf, param)


class MaskSet(nn.Module):
    """The trainable mask scores of one encoder, attached to it by `attach`.

    `state_dict()` holds the real scores under the reference names (what an exact resume
    needs); `packed()` / `load_masks()` are the compact binary form.
    """

    def __init__(self):
        super().__init__()
        self.names, self.shapes = [], {}
        self.threshold, self.scale = 5e-3, 1e-2
        self._switch = _Switch()
        self._params = {}
        self._weights = {}  # name -> (module, tensor name) in the encoder

    @classmethod
    def attach(cls, visual, mask_mlp=False, init="1s", scale=1e-2, threshold=5e-3, generator=None):
        """Create scores for every target weight of `visual` (init "1s": all `scale`; "uniform":
        U(0, scale)) and parametrize the weights. `visual` must be private to the caller."""
        self = cls()
        self.threshold, self.scale = float(threshold), float(scale)
        for name, module, tensor in mask_targets(visual, mask_mlp):
            weight = getattr(module, tensor)
            if parametrize.is_parametrized(module, tensor):
                raise UserError(f"{name}: this encoder already has masks attached (a shared CLIP model?); "
                                "masks go on a private copy (load_clip(private=True))")
            if init == "1s":
                data = torch.full(weight.shape, float(scale), device=weight.device, dtype=torch.float32)
            elif init == "uniform":
                data = torch.rand(weight.shape, generator=generator, dtype=torch.float32).to(weight.device) * scale
            else:
                raise UserError(f"MASK.INIT must be '1s' or 'uniform', got {init!r}")
            scores = nn.Parameter(data)
            _tree_add(self, name, scores)
            self.names.append(name)
            self.shapes[name] = tuple(weight.shape)
            self._params[name] = scores
            self._weights[name] = (module, tensor)
            parametrize.register_parametrization(module, tensor, MaskedWeight(scores, threshold, self._switch))
        return self

    # ---- use -------------------------------------------------------------------------------
    def scores(self):
        return [self._params[n] for n in self.names]

    @contextlib.contextmanager
    def off(self):
        """Masks switched off: the encoder computes with its original weights (zero-shot CLIP)."""
        before = self._switch.on
        self._switch.on = False
        try:
            yield
        finally:
            self._switch.on = before

    def frozen_weight(self, name):
        module, tensor = self._weights[name]
        return module.parametrizations[tensor].original

    # ---- statistics --------------------------------------------------------------------------
    @torch.no_grad()
    def binary(self):
        """{name: bool tensor} (True = weight kept)."""
        return {n: self._params[n] > self.threshold for n in self.names}

    def num_entries(self):
        return sum(int(np.prod(s)) for s in self.shapes.values())

    @torch.no_grad()
    def layer_stats(self):
        """[(name, entries, masked entries)]; masked = score <= threshold (what the binarizer zeroes)."""
        return [(n, self._params[n].numel(), int((self._params[n] <= self.threshold).sum())) for n in self.names]

    # ---- compact form ----------------------------------------------------------------------
    def packed(self):
        """{name: uint8 tensor} of bit-packed binary masks (CPU)."""
        return {n: pack_mask(m) for n, m in self.binary().items()}

    @torch.no_grad()
    def scores_from_masks(self, masks, source="masks"):
        """{name: real scores} for binary masks {name: bool tensor}: kept entries get
        threshold + margin, masked ones threshold - margin, margin = |scale - threshold| (with
        the defaults 1e-2 and 0: a kept entry is as far from flipping as a fresh score)."""
        missing = [n for n in self.names if n not in masks]
        unexpected = [n for n in masks if n not in self._params]
        if missing or unexpected:
            raise UserError(f"{source} does not fit this encoder's masks: "
                            + "; ".join(filter(None, [missing and f"missing {_few(missing)}",
                                                      unexpected and f"unexpected {_few(unexpected)}"]))
                            + ". Was it trained with another backbone or MASK.MASK_MLP setting?")
        margin = abs(self.scale - self.threshold) or abs(self.threshold) or 1e-2
        out = {}
        for n in self.names:
            p = self._params[n]
            m = masks[n].to(p.device)
            if tuple(m.shape) != self.shapes[n]:
                raise UserError(f"{source}: mask {n} has shape {tuple(m.shape)}, the encoder's weight {self.shapes[n]}")
            out[n] = torch.where(m, self.threshold + margin, self.threshold - margin).to(p.dtype)
        return out

    @torch.no_grad()
    def load_masks(self, masks, source="masks"):
        """Set the scores from binary masks (see `scores_from_masks`)."""
        for n, v in self.scores_from_masks(masks, source).items():
            self._params[n].copy_(v)

    def decode_state(self, state_dict, threshold=None, source="checkpoint"):
        """A loaded state dict in any saved form -> {name: real scores} for load_state_dict:
        real scores pass through; bit-packed masks (uint8 tensors, or the `bytes` the original
        implementation saves) become scores by `scores_from_masks`' rule."""
        if all(torch.is_tensor(v) and v.is_floating_point() for v in state_dict.values()):
            return state_dict
        if any(n not in self._params for n in state_dict):
            return state_dict  # the strict loader names the mismatch
        threshold = self.threshold if threshold is None else float(threshold)
        return self.scores_from_masks(masks_from_state(state_dict, self.shapes, threshold, source), source)


def _few(names, k=4):
    return f"{names[:k]}{' ...' if len(names) > k else ''}"


# ---- bit packing --------------------------------------------------------------------------------
def pack_mask(mask):
    """bool tensor -> uint8 tensor of ceil(numel / 8) bytes (row-major, MSB first, zero-padded)."""
    bits = mask.detach().reshape(-1).to("cpu", torch.bool).numpy()
    return torch.from_numpy(np.packbits(bits))


def unpack_mask(packed, shape):
    """Inverse of `pack_mask`; `packed` may be a uint8 tensor, numpy array or bytes."""
    if isinstance(packed, (bytes, bytearray)):
        data = np.frombuffer(bytes(packed), dtype=np.uint8)
    elif torch.is_tensor(packed):
        data = packed.detach().to("cpu", torch.uint8).numpy()
    else:
        data = np.asarray(packed, dtype=np.uint8)
    n = int(np.prod(shape))
    if data.size != (n + 7) // 8:
        raise UserError(f"a packed mask of {data.size} bytes cannot hold a mask of shape {tuple(shape)} "
                        f"({(n + 7) // 8} bytes)")
    return torch.from_numpy(np.unpackbits(data, count=n).astype(bool)).view(*shape)


def masks_from_state(state_dict, shapes, threshold, source="checkpoint"):
    """{name: bool mask} from a saved state dict: packed uint8 / bytes, or real scores."""
    out = {}
    for name, value in state_dict.items():
        if name not in shapes:
            out[name] = value  # reported by the caller
            continue
        shape = shapes[name]
        if isinstance(value, (bytes, bytearray)) or (torch.is_tensor(value) and value.dtype == torch.uint8):
            try:
                out[name] = unpack_mask(value, shape)
            except UserError as e:
                raise UserError(f"{source}: {name}: {e}") from None
        elif torch.is_tensor(value) and value.is_floating_point():
            if tuple(value.shape) != tuple(shape):
                raise UserError(f"{source}: {name} has shape {tuple(value.shape)}, the encoder's weight {tuple(shape)}")
            out[name] = value > threshold
        else:
            raise UserError(f"{source}: {name} is a {type(value).__name__}, not a mask")
    return out


# ---- learned masks for other methods ------------------------------------------------------------
def read_mask_checkpoint(path):
    """(state dict, checkpoint dict) of a MaskTuning checkpoint file, or of a run folder
    (OUTPUT_DIR, whose shared/checkpoint file names the latest checkpoint)."""
    from engine import checkpoint as ckpt

    if not os.path.exists(path):
        raise UserError(f"No MaskTuning checkpoint at {path}: expected the output folder of a MaskTuning run "
                        "(holding shared/checkpoint) or one of its shared/model.pth.tar-<epoch> files")
    if os.path.isdir(path):
        found = ckpt.read_pointer(path, "shared") or ckpt.read_pointer(os.path.dirname(path.rstrip("/")), "shared")
        if found is None:
            raise UserError(f"No MaskTuning checkpoint in {path}: expected {path}/shared/checkpoint naming a "
                            "model.pth.tar-<epoch> file (the output folder of a MaskTuning run), or pass the file")
        path = found
    state = ckpt.load_checkpoint(path)
    sd = state.get("state_dict", state) if isinstance(state, dict) else None
    if not isinstance(sd, dict) or not sd or not all(str(k).endswith(SUFFIX) for k in sd):
        raise UserError(f"{path} holds no masks (expected a MaskTuning checkpoint: state_dict entries named "
                        f"'<module>{SUFFIX}')")
    return ckpt.strip_module(sd), state, path


@torch.no_grad()
def fold_masks(clip_model, path, threshold=5e-3):
    """Multiply the learned binary masks of a MaskTuning checkpoint into `clip_model`'s image
    encoder weights, in place (the model must be private: `load_clip(private=True)`), so that
    any method (CoOp, Tip-Adapter, ...) runs on the masked encoder at no extra cost. Which
    layers are masked (MASK_MLP or not) follows the checkpoint's names. `backbone_id` gets the
    checkpoint's name and epoch, so cached features of the unmasked encoder are never reused.
    Returns the number of masked-out entries."""
    sd, state, path = read_mask_checkpoint(path)
    threshold = float(state.get("mask_threshold", threshold))
    mlp = any(".mlp." in k for k in sd)
    targets = {name: (module, tensor) for name, module, tensor in mask_targets(clip_model.visual, mlp)}
    shapes = {n: tuple(getattr(m, t).shape) for n, (m, t) in targets.items()}
    masks = masks_from_state(sd, shapes, threshold, path)
    missing, unexpected = sorted(set(targets) - set(masks)), sorted(set(masks) - set(targets))
    if missing or unexpected:
        raise UserError(f"{path} does not fit this backbone's image encoder (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}); was it trained on another backbone?")
    zeros = 0
    for name, (module, tensor) in targets.items():
        if parametrize.is_parametrized(module, tensor):
            raise UserError("fold_masks needs an encoder without attached masks")
        weight = getattr(module, tensor)
        mask = masks[name].to(weight.device)
        weight.mul_(mask.to(weight.dtype))
        zeros += int((~mask).sum())
    import hashlib

    digest = hashlib.sha256(b"".join(pack_mask(masks[n]).numpy().tobytes() for n in sorted(masks))).hexdigest()[:16]
    clip_model.backbone_id = f"{getattr(clip_model, 'backbone_id', '')}|masks={digest}"
    return zeros


# ---- gradient dropout regularity -----------------------------------------------------------------
def gdr_keep(g_ce, g_kl, lam, u, eps=1e-8):
    """The factor GDR multiplies the CE gradient by, per element:

        P    = (sign(g_ce) * (g_ce + g_kl) / (|g_ce| + |g_kl| + eps) + 1) / 2
        keep = (1 - lam) + lam * 1[P > U],  U ~ Uniform[0, 1)

    Same signs (or g_kl = 0): P = 1, the CE gradient is kept. Opposite signs:
    P = |g_ce| / (|g_ce| + |g_kl|) is the chance of keeping it in full; otherwise (1 - lam) of
    it is kept. lam = 0 is plain CE, lam = 1 drops conflicting elements entirely."""
    p = (torch.sign(g_ce) * (g_ce + g_kl) / (g_ce.abs() + g_kl.abs() + eps) + 1) / 2
    return (1 - lam) + lam * (p > u).to(g_ce.dtype)


def gdr_gradient(g_ce, g_kl, lam, u, eps=1e-8):
    """keep * g_ce (see `gdr_keep`)."""
    return gdr_keep(g_ce, g_kl, lam, u, eps) * g_ce
