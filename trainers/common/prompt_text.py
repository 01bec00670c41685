"""The text side of prompt learning (CoOp, CoCoOp): CLIP's text transformer run on prompts that
mix learned context vectors with the constant token embeddings of the class names.

A prompt is [SOS] [context and class tokens ...] [.] [EOT] [padding] in 77 positions, and the
text feature is the transformer's output at the EOT position. The reference builds all 77
positions for every class and runs them through the encoder in one batch with gradients. Three
exact savings are available here, each switched by a config key so that the reference computation
stays reachable (TRAINER.<X>.TEXT_TRUNCATE False, TEXT_SHARED_PREFIX False, TEXT_CHUNK 0):

* Truncation (TEXT_TRUNCATE). CLIP's text transformer is causal: position i attends only to
  positions <= i, and every other operation (layer norm, MLP) is per position. The feature read
  at the EOT position therefore never depends on anything after it, so the transformer only
  needs to run up to the longest prompt's EOT position (about 20-30 of the 77 positions).
  Prompts are also grouped by length, so each chunk runs only to its own longest EOT.
* Shared prefix (TEXT_SHARED_PREFIX). The leading positions common to all prompts of a group
  (SOS plus, for a generic context in front of the class name, the context itself) have the same
  hidden states in every prompt, again by causality. They are computed once per group; the
  per-class positions attend to their keys and values. CoOp with 16 generic context tokens
  thus runs 17 positions once and only the class-name positions per class; CoCoOp does the same
  per image.
* Chunking (TEXT_CHUNK). With gradients, the activations of all prompts would otherwise be
  held at once (the reference's out-of-memory case on ImageNet's 1000 classes). Prompts are
  processed in chunks of at most TEXT_CHUNK, each under activation checkpointing: its
  activations are freed after the forward pass and recomputed during the backward pass, so only
  one chunk's activations exist at a time, at the cost of one extra forward pass.

All three give the same features as the reference computation up to float rounding (tested).
They need a causal CLIP-style text tower pooled at the EOT token; for any other tower the
reference computation runs instead (and `fast` is False).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def _is_causal(mask, length):
    if mask is None or mask.shape[-1] < length:
        return False
    blocked = torch.isinf(mask[:length, :length]) & (mask[:length, :length] < 0)
    return bool(torch.equal(blocked.cpu(), torch.ones(length, length, dtype=torch.bool).triu(1)))


def _plain_block(block):
    """True for open_clip's ResidualAttentionBlock with a standard nn.MultiheadAttention, the
    block the shared-prefix path re-implements (OpenAI CLIP and open_clip's CLIP text towers)."""
    attn = getattr(block, "attn", None)
    return (isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim
            and attn.in_proj_weight is not None and attn.bias_k is None and not attn.add_zero_attn
            and not hasattr(block, "ln_1_kv")
            and all(hasattr(block, n) for n in ("ln_1", "ln_2", "mlp", "ls_1", "ls_2")))


_MASKS = {}


def _causal_blocked(n, device):
    """Bool [n, n], True above the diagonal (positions a query must not see)."""
    key = (n, str(device))
    if key not in _MASKS:
        _MASKS[key] = torch.ones(n, n, dtype=torch.bool, device=device).triu(1)
    return _MASKS[key]


def _shared_prefix_block(block, xp, xs, last):
    """One residual attention block on prompts split into a shared prefix and per-class rest.

    xp [P, Lp, W]: hidden states of the shared positions, one group per row of P.
    xs [S, G, Ls, W] with S in (1, P): the G prompts' own positions (S = 1: the same for every
    group, as the constant class tokens entering the first block).
    Each prompt's positions attend causally to its own earlier positions and to all of its
    group's prefix positions, which is exactly the full prompt's causal attention. On the last
    block the prefix's own update is skipped: nothing reads it.
    """
    attn = block.attn
    heads = attn.num_heads
    P, Lp, W = xp.shape
    S, G, Ls = xs.shape[:3]
    dh = W // heads
    scale = 1.0 / math.sqrt(dh)
    w_in, b_in = attn.in_proj_weight, attn.in_proj_bias
    qp, kp, vp = F.linear(block.ln_1(xp), w_in, b_in).view(P, Lp, 3, heads, dh).unbind(2)
    qs, ks, vs = F.linear(block.ln_1(xs), w_in, b_in).view(S, G, Ls, 3, heads, dh).unbind(3)
    kp_t = kp.permute(0, 2, 3, 1)  # [P, H, dh, Lp]
    vp_h = vp.transpose(1, 2)  # [P, H, Lp, dh]
    qs = qs * scale
    # Scores of the own positions against the group's prefix: [N, G, H, Ls, Lp], N = max(S, P).
    s_pre = torch.matmul(qs.permute(0, 3, 1, 2, 4).reshape(S, heads, G * Ls, dh), kp_t)
    N = s_pre.shape[0]
    s_pre = s_pre.view(N, heads, G, Ls, Lp).permute(0, 2, 1, 3, 4)
    # Causal scores among the own positions: [S, G, H, Ls, Ls].
    s_own = torch.matmul(qs.permute(0, 1, 3, 2, 4), ks.permute(0, 1, 3, 4, 2))
    s_own = s_own.masked_fill(_causal_blocked(Ls, s_own.device), float("-inf"))
    scores = torch.cat([s_pre, s_own.expand(N, -1, -1, -1, -1)], dim=-1)
    weights = scores.softmax(dim=-1, dtype=torch.float32).to(qs.dtype)
    w_pre, w_own = weights.split([Lp, Ls], dim=-1)
    out = torch.matmul(w_own, vs.permute(0, 1, 3, 2, 4))  # [N, G, H, Ls, dh]
    out_pre = torch.matmul(w_pre.permute(0, 2, 1, 3, 4).reshape(N, heads, G * Ls, Lp), vp_h)
    out = out + out_pre.view(N, heads, G, Ls, dh).permute(0, 2, 1, 3, 4)
    out = out.permute(0, 1, 3, 2, 4).reshape(N, G, Ls, W)
    xs = xs + block.ls_1(F.linear(out, attn.out_proj.weight, attn.out_proj.bias))
    xs = xs + block.ls_2(block.mlp(block.ln_2(xs)))
    if not last:
        sp = torch.matmul(qp.transpose(1, 2) * scale, kp_t)  # [P, H, Lp, Lp]
        sp = sp.masked_fill(_causal_blocked(Lp, sp.device), float("-inf"))
        op = torch.matmul(sp.softmax(dim=-1, dtype=torch.float32).to(qp.dtype), vp_h)
        op = op.transpose(1, 2).reshape(P, Lp, W)
        xp = xp + block.ls_1(F.linear(op, attn.out_proj.weight, attn.out_proj.bias))
        xp = xp + block.ls_2(block.mlp(block.ln_2(xp)))
    return xp, xs


class PromptTextEncoder:
    """Text features of prompts given as a shared prefix and per-class rest.

    `text_encoder` is a `clip.TextEncoder`; `tokens` [G, 77] the token ids of the G class prompts
    (they give the EOT positions). Call with
        prefix [P, Lp, W]      leading positions shared by all G prompts of each of P groups
        suffix [G, L-Lp, W]    the rest of each class's prompt, the same for every group, or
               [P, G, L-Lp, W] one per group; L may stop anywhere after the last EOT position
    and get the projected, un-normalised features [P, G, D]. CoOp has P = 1 group; CoCoOp has
    one group per image (its context depends on the image). Not an nn.Module: it holds the frozen
    CLIP's modules without registering them, so they are never saved or optimised.
    """

    def __init__(self, text_encoder, tokens, truncate=True, share_prefix=True, chunk=0):
        self.enc = text_encoder
        self.tokens = tokens.cpu()
        self.context_length = tokens.shape[1]
        device = text_encoder.device
        self.eot_cpu = self._eot_positions(text_encoder, self.tokens)
        causal = _is_causal(text_encoder.attn_mask, self.context_length)
        self.fast = self.eot_cpu is not None and causal
        if not self.fast and (truncate or share_prefix):
            print("Note: this text encoder is not a causal transformer pooled at the EOT token; "
                  "its prompts run in full (TEXT_TRUNCATE / TEXT_SHARED_PREFIX have no effect)")
        self.truncate = bool(truncate) and self.fast
        blocks = list(getattr(text_encoder.transformer, "resblocks", []))
        self.share_prefix = bool(share_prefix) and self.fast and bool(blocks) and all(map(_plain_block, blocks))
        self.chunk = max(0, int(chunk))
        self.reference = not self.truncate and not self.share_prefix and self.chunk == 0
        if self.eot_cpu is None:
            self.eot_cpu = self.tokens.argmax(-1)
        self.eot = self.eot_cpu.to(device)
        # Prompts sorted by EOT position, so that a chunk holds prompts of similar length.
        order = torch.argsort(self.eot_cpu, stable=True) if self.truncate else torch.arange(len(self.tokens))
        self.order = order.to(device)
        self.order_cpu = order
        self.inverse = torch.argsort(order).to(device)

    @staticmethod
    def _eot_positions(enc, tokens):
        if enc.pool_type == "argmax":
            return tokens.argmax(-1)
        if enc.pool_type == "eos" and enc.eos_id is not None:
            return (tokens == enc.eos_id).int().argmax(-1)
        return None

    @property
    def length(self):
        """Positions any prompt needs (the longest EOT + 1, or all of them)."""
        return int(self.eot_cpu.max()) + 1 if self.truncate else self.context_length

    def settings(self):
        return {"text_truncate": self.truncate, "text_shared_prefix": self.share_prefix,
                "text_chunk": self.chunk, "text_positions": self.length}

    def __call__(self, prefix, suffix):
        P, G = prefix.shape[0], len(self.eot)
        if suffix.dim() == 3:
            suffix = suffix.unsqueeze(0)
        if self.reference:
            return self._reference(prefix, suffix)
        rows = P * G
        chunk = self.chunk if 0 < self.chunk < rows else rows
        if chunk == rows:
            return self._encode(prefix, suffix, self.eot)
        g_step = min(G, chunk)
        p_step = max(1, chunk // G)
        grad = torch.is_grad_enabled() and (prefix.requires_grad or suffix.requires_grad)
        Lp = prefix.shape[1]
        out = []
        for p0 in range(0, P, p_step):
            pre = prefix[p0:p0 + p_step]
            suf = suffix if suffix.shape[0] == 1 else suffix[p0:p0 + p_step]
            cols = []
            for g0 in range(0, G, g_step):
                idx = self.order[g0:g0 + g_step]
                eot = self.eot[idx]
                need = int(self.eot_cpu[self.order_cpu[g0:g0 + g_step]].max()) + 1 if self.truncate \
                    else self.context_length
                part = suf[:, :, :need - Lp].index_select(1, idx)
                if grad:
                    cols.append(checkpoint(self._encode, pre, part, eot, use_reentrant=False,
                                           preserve_rng_state=False))
                else:
                    cols.append(self._encode(pre, part, eot))
            out.append(torch.cat(cols, dim=1))
        return torch.cat(out, dim=0).index_select(1, self.inverse)

    def _reference(self, prefix, suffix):
        """The reference computation: full 77-position prompts, all in one batch."""
        P, G = prefix.shape[0], len(self.eot)
        full = torch.cat([prefix.unsqueeze(1).expand(P, G, -1, -1),
                          suffix.expand(P, G, -1, -1).to(prefix.dtype)], dim=2).flatten(0, 1)
        return self.enc(full, self.tokens.repeat(P, 1)).view(P, G, -1)

    def _encode(self, prefix, suffix, eot):
        """Features [P, g] of g prompts (EOT positions `eot`) in one pass."""
        length = int(eot.max()) + 1 if self.truncate else self.context_length
        if self.share_prefix:
            return self._encode_shared(prefix, suffix, eot, length)
        return self._encode_plain(prefix, suffix, eot, length)

    def _encode_plain(self, prefix, suffix, eot, length):
        enc = self.enc
        dtype = enc.dtype
        P, Lp, W = prefix.shape
        g = eot.shape[0]
        suffix = suffix[:, :, :length - Lp].to(dtype)
        x = torch.cat([prefix.to(dtype).unsqueeze(1).expand(P, g, -1, -1), suffix.expand(P, g, -1, -1)], dim=2)
        x = x.reshape(P * g, length, W) + enc.positional_embedding[:length].to(dtype)
        mask = enc.attn_mask
        x = enc.transformer(x, attn_mask=None if mask is None else mask[:length, :length].to(x.device))
        x = x[torch.arange(P * g, device=x.device), eot.repeat(P)]
        return enc.project(enc.ln_final(x)).view(P, g, -1)

    def _encode_shared(self, prefix, suffix, eot, length):
        enc = self.enc
        dtype = enc.dtype
        Lp = prefix.shape[1]
        pos = enc.positional_embedding.to(dtype)
        xp = prefix.to(dtype) + pos[:Lp]
        xs = suffix[:, :, :length - Lp].to(dtype) + pos[Lp:length]
        blocks = list(enc.transformer.resblocks)
        for i, block in enumerate(blocks):
            xp, xs = _shared_prefix_block(block, xp, xs, last=i == len(blocks) - 1)
        g = eot.shape[0]
        x = xs[:, torch.arange(g, device=xs.device), eot - Lp]  # [P, g, W]
        return enc.project(enc.ln_final(x))
