"""CLIP's tokenizer and its text path, split open so that learned token embeddings can be fed in.

The tokenizer is open_clip's bundled copy of OpenAI's byte-level BPE (same vocabulary, same
cleaning: ftfy, HTML unescape, whitespace collapse, lowercase), so ids match OpenAI CLIP's. Note
that `_` is not a letter for the pre-tokeniser, so "american_bulldog" becomes
"american _ bulldog": TaskRes keeps underscores in class names and relies on exactly this.
"""
import functools

import torch
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import text_global_pool
from torch import nn

from engine.errors import UserError

CONTEXT_LENGTH = 77


@functools.lru_cache(maxsize=1)
def _tokenizer():
    # Reading the 1.3 MB merge table takes a moment; do it once, on first use.
    return SimpleTokenizer()


def tokenize(texts, context_length=CONTEXT_LENGTH, truncate=False):
    """[SOT] + BPE ids + [EOT], zero-padded to `context_length`: LongTensor [N, context_length].

    Text too long for the context raises UserError unless `truncate`, which cuts it and makes the
    last token EOT (the text encoder pools at the EOT position, so it must be present).
    """
    if isinstance(texts, str):
        texts = [texts]
    tok = _tokenizer()
    sot, eot = tok.sot_token_id, tok.eot_token_id
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [sot] + tok.encode(text) + [eot]
        if len(ids) > context_length:
            if not truncate:
                raise UserError(f"Text is {len(ids)} tokens long, more than the context length "
                                f"{context_length}: {text[:80]!r}... Shorten it or tokenize with "
                                "truncate=True.")
            ids = ids[:context_length]
            ids[-1] = eot
        out[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def _text_tower(model):
    # open_clip's CLIP keeps the text tower at top level (OpenAI naming); CustomTextCLIP nests it.
    for candidate in (model, getattr(model, "text", None)):
        if candidate is not None and hasattr(candidate, "token_embedding") \
                and hasattr(candidate, "positional_embedding"):
            return candidate
    raise UserError(f"{type(model).__name__} has no CLIP-style text transformer (token_embedding, "
                    "positional_embedding, transformer, ln_final); prompt-learning methods need one.")


class TextEncoder(nn.Module):
    """CLIP's `encode_text` from token embeddings onwards.

    `forward(prompt_embeddings, tokens)` runs positional embedding -> causal transformer ->
    ln_final -> pooling at the EOT position (tokens.argmax(-1), EOT being the largest id) ->
    `project`. Methods such as CoOp build `prompt_embeddings` themselves from `embed(tokens)`.
    The submodules are shared with `model`, not copied.
    """

    def __init__(self, model):
        super().__init__()
        text = _text_tower(model)
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        # Kept as a plain reference, not a submodule: registering the tower would duplicate its
        # parameters here, and a copied mask buffer would go stale when `model` is moved.
        object.__setattr__(self, "_tower", text)
        self.pool_type = getattr(text, "text_pool_type", getattr(text, "pool_type", "argmax"))
        self.eos_id = getattr(text, "text_eos_id", getattr(text, "eos_id", None))

    @property
    def attn_mask(self):
        """Causal additive mask [L, L] (-inf above the diagonal), or None for towers without one."""
        return getattr(self._tower, "attn_mask", None)

    @property
    def dtype(self):
        """Dtype of the transformer weights (fp16 for OpenAI weights on CUDA, else fp32)."""
        get = getattr(self.transformer, "get_cast_dtype", None)
        return get() if get is not None else next(self.transformer.parameters()).dtype

    @property
    def device(self):
        return self.positional_embedding.device

    def embed(self, tokens):
        """Token embeddings [N, L, W] in the transformer's dtype."""
        return self.token_embedding(tokens.to(self.device)).to(self.dtype)

    def project(self, x):
        """Pooled text feature [N, W] -> joint embedding space [N, D]; a method may override it."""
        proj = self.text_projection
        if proj is None:
            return x
        if isinstance(proj, nn.Module):
            return proj(x)
        return x @ proj

    def set_projection(self, projection):
        """Use another projection [W, D] here only (the CLIP model keeps its own), e.g. the tuned
        projection of TaskRes's enhanced base."""
        p = self.text_projection
        self.text_projection = nn.Parameter(projection.detach().to(p.device, p.dtype), requires_grad=False)

    def pool(self, prompt_embeddings, tokens):
        """Text features before the projection [N, W]."""
        dtype = self.dtype
        x = prompt_embeddings.to(device=self.device, dtype=dtype)
        x = x + self.positional_embedding.to(dtype)
        # open_clip's Transformer takes batch-first input and handles the layout itself.
        mask = self.attn_mask
        x = self.transformer(x, attn_mask=None if mask is None else mask.to(x.device))
        x = self.ln_final(x)
        return text_global_pool(x, tokens.to(self.device), self.pool_type, eos_token_id=self.eos_id)

    def forward(self, prompt_embeddings, tokens):
        return self.project(self.pool(prompt_embeddings, tokens))

    def encode_pooled(self, tokens):
        return self.pool(self.embed(tokens), tokens)

    def encode(self, tokens):
        """Same result as `model.encode_text(tokens)`."""
        return self.forward(self.embed(tokens), tokens)
