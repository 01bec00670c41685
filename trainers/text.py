"""Text-side helpers shared by the CLIP trainers: prompts -> text features in one batched pass."""
import torch

import clip


@torch.no_grad()
def encode_prompts(text_encoder, classnames, templates, chunk=1024, pooled=False):
    """Raw (un-normalised) text features [K, T, D] in the text encoder's dtype.

    The reference runs the text encoder once per class; batching gives the same numbers.
    `pooled=True` stops before the text projection ([K, T, W]).
    """
    encode = text_encoder.encode_pooled if pooled else text_encoder.encode
    prompts = [t.format(c) for c in classnames for t in templates]
    tokens = clip.tokenize(prompts)
    feats = [encode(tokens[i:i + chunk]) for i in range(0, len(prompts), chunk)]
    return torch.cat(feats).view(len(classnames), len(templates), -1)
