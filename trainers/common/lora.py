"""Low-rank adapters (LoRA) on the query, key and value projections of CLIP's attention layers.

A projection W (frozen) becomes W x + b + s * B A dropout(x), with A [r, d] and B [d, r] trained,
B initialised at zero (so an adapted model starts as the frozen one exactly) and A as nn.Linear's
weights are (Kaiming uniform, a = sqrt(5)). Each of q, k and v has its own A, B and its own
dropout draw. The scale s is alpha / sqrt(r) by default ("sqrt_rank", what the released CLIP-LoRA
code computes; its alpha / r line is commented out) or alpha / r ("rank", the LoRA paper's).

CLIP's transformer blocks use nn.MultiheadAttention, whose q, k, v projections are one packed
[3d, d] matrix: `LoRAMultiheadAttention` replaces such a module, computes the packed projection
and adds each delta to its third of it. A ResNet's attention pool (q_proj, k_proj, v_proj as
separate layers, read as weights by F.multi_head_attention_forward) is replaced by
`LoRAAttentionPool`. Without dropout in effect (evaluation, or dropout 0) the deltas are merged
into the packed weight for the forward (W + s B A: one matrix product per layer); the stored
weights are never changed.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TARGETS = ("q", "k", "v")
SCALINGS = ("sqrt_rank", "rank")


def lora_scale(alpha, rank, rule="sqrt_rank"):
    if rule not in SCALINGS:
        raise ValueError(f"LoRA scaling must be one of {', '.join(SCALINGS)}, got {rule!r}")
    return alpha / math.sqrt(rank) if rule == "sqrt_rank" else alpha / rank


class QKVLoRA(nn.Module):
    """The trained part of one attention layer: A_t [r, d] and B_t [d, r] per target t."""

    def __init__(self, dim, targets=TARGETS, rank=2, alpha=1.0, dropout=0.0, scaling="sqrt_rank"):
        super().__init__()
        unknown = [t for t in targets if t not in TARGETS]
        if unknown or not targets:
            raise ValueError(f"LoRA targets must be a non-empty subset of {TARGETS}, got {list(targets)}")
        self.dim, self.rank, self.targets = int(dim), int(rank), tuple(t for t in TARGETS if t in targets)
        self.scale = lora_scale(float(alpha), self.rank, scaling)
        self.dropout = nn.Dropout(float(dropout))
        for t in self.targets:
            a = nn.Parameter(torch.empty(self.rank, self.dim))
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            setattr(self, f"A_{t}", a)
            setattr(self, f"B_{t}", nn.Parameter(torch.zeros(self.dim, self.rank)))

    def pair(self, t):
        return getattr(self, f"A_{t}"), getattr(self, f"B_{t}")

    def delta_weight(self, t):
        """s * B A [d, d]."""
        a, b = self.pair(t)
        return self.scale * (b @ a)

    def merged(self, weight):
        """The packed [3d, d] weight with every delta added to its block."""
        blocks = list(weight.chunk(3))
        for t in self.targets:
            i = TARGETS.index(t)
            blocks[i] = blocks[i] + self.delta_weight(t).to(weight.dtype)
        return torch.cat(blocks)

    def project(self, x, weight, bias, merge=None):
        """(q, k, v) = the packed projection of x [..., d] plus the deltas. `merge` None: merged
        exactly when no dropout is in effect (eval mode or p = 0); True / False force it."""
        if merge is None:
            merge = not (self.training and self.dropout.p > 0)
        if merge:
            return F.linear(x, self.merged(weight), bias).chunk(3, dim=-1)
        q, k, v = F.linear(x, weight, bias).chunk(3, dim=-1)
        out = {"q": q, "k": k, "v": v}
        for t in self.targets:  # q, k, v in that order, each with its own dropout draw
            a, b = self.pair(t)
            h = F.linear(F.linear(self.dropout(x), a.to(x.dtype)), b.to(x.dtype))
            out[t] = out[t] + self.scale * h
        return out["q"], out["k"], out["v"]


def attend(q, k, v, num_heads, attn_mask, out_weight, out_bias):
    """Multi-head scaled dot-product attention on batch-first q [B, L, d], k, v [B, S, d], then
    the output projection; `attn_mask` as nn.MultiheadAttention takes it (additive float, or
    bool with True = not attended) of shape [L, S]."""
    bsz, tgt, dim = q.shape
    head = dim // num_heads

    def heads(x):
        return x.reshape(bsz, -1, num_heads, head).transpose(1, 2)

    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(attn_mask, -math.inf)
        attn_mask = attn_mask.to(q.dtype)
    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=attn_mask)
    out = out.transpose(1, 2).reshape(bsz, tgt, dim)
    return F.linear(out, out_weight.to(out.dtype), None if out_bias is None else out_bias.to(out.dtype))


class LoRAMultiheadAttention(nn.Module):
    """Drop-in for a self-attention nn.MultiheadAttention (CLIP's transformer blocks), frozen,
    with `lora` deltas on its packed q, k, v projection. Returns (output, None) as the original
    does with need_weights=False."""

    def __init__(self, mha, lora):
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
            raise ValueError("LoRA needs the packed q, k, v projection of a self-attention layer")
        if mha.bias_k is not None or mha.add_zero_attn or mha.dropout > 0:
            raise ValueError("LoRA supports CLIP's attention only (no bias_k/bias_v, zero attention or dropout)")
        self.mha, self.lora = mha, lora
        self.batch_first = mha.batch_first

    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights=False, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise ValueError("LoRAMultiheadAttention is for self-attention (query, key and value the same tensor)")
        if key_padding_mask is not None or is_causal:
            raise ValueError("LoRAMultiheadAttention takes an attn_mask only (as CLIP passes it)")
        x = query if self.batch_first else query.transpose(0, 1)
        q, k, v = self.lora.project(x, self.mha.in_proj_weight, self.mha.in_proj_bias)
        out = attend(q, k, v, self.mha.num_heads, attn_mask, self.mha.out_proj.weight, self.mha.out_proj.bias)
        return (out if self.batch_first else out.transpose(0, 1)), None


class LoRAAttentionPool(nn.Module):
    """A ResNet CLIP's attention pool (open_clip's AttentionPool2d), frozen, with `lora` deltas
    on its q, k, v projections; the same computation as the original otherwise."""

    def __init__(self, pool, lora):
        super().__init__()
        self.pool, self.lora = pool, lora

    def forward(self, x):
        p = self.pool
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # NCHW -> N(HW)C
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # N(HW+1)C
        x = x + p.positional_embedding[None].to(x.dtype)
        weight = torch.cat([p.q_proj.weight, p.k_proj.weight, p.v_proj.weight])
        bias = torch.cat([p.q_proj.bias, p.k_proj.bias, p.v_proj.bias])
        q, k, v = self.lora.project(x, weight, bias)
        return attend(q, k, v, p.num_heads, None, p.c_proj.weight, p.c_proj.bias)[:, 0]


def _replace(root, path, module):
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def attach_lora(tower, prefix, make_lora, attention_pool=True):
    """Put LoRA on every self-attention layer of `tower` (a module, changed in place): each
    nn.MultiheadAttention, and (`attention_pool`) a ResNet's attention pool. Returns
    {name: QKVLoRA}, names `prefix` + the layer's index in module order."""
    found = {}
    for path, module in list(tower.named_modules()):
        if isinstance(module, nn.MultiheadAttention):
            lora = make_lora(module.embed_dim)
            _replace(tower, path, LoRAMultiheadAttention(module, lora))
        elif attention_pool and type(module).__name__ == "AttentionPool2d" and hasattr(module, "q_proj"):
            lora = make_lora(module.q_proj.in_features)
            _replace(tower, path, LoRAAttentionPool(module, lora))
        else:
            continue
        found[f"{prefix}{len(found)}"] = lora
    return found
