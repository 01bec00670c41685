"""Text-side helpers shared by the CLIP trainers: prompts -> text features in one batched pass."""
import torch

import clip


# (weights objects, prompts) -> features. The key holds the weight tensors themselves, so the
# cache lives as long as they do and an id is never confused with a later object's.
_CACHE = {}


def encode_prompts(text_encoder, classnames, templates, chunk=1024, pooled=False):
    """Cached per (text weights, templates, class names, pooled): runs that share a loaded CLIP
    in one process (a sweep) compute each classifier once."""
    key = (id(text_encoder.transformer), id(text_encoder.text_projection), text_encoder.dtype,
           tuple(classnames), tuple(templates), pooled)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is text_encoder.transformer and hit[1] is text_encoder.text_projection:
        return hit[2]
    feats = _encode_prompts(text_encoder, classnames, templates, chunk, pooled)
    _CACHE[key] = (text_encoder.transformer, text_encoder.text_projection, feats)
    return feats


@torch.no_grad()
def _encode_prompts(text_encoder, classnames, templates, chunk, pooled):
    """Raw (un-normalised) text features [K, T, D] in the text encoder's dtype.

    The reference runs the text encoder once per class; batching gives the same numbers.
    `pooled=True` stops before the text projection ([K, T, W]).
    """
    encode = text_encoder.encode_pooled if pooled else text_encoder.encode
    prompts = [t.format(c) for c in classnames for t in templates]
    tokens = clip.tokenize(prompts)
    feats = [encode(tokens[i:i + chunk]) for i in range(0, len(prompts), chunk)]
    return torch.cat(feats).view(len(classnames), len(templates), -1)
