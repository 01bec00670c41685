"""Text-side helpers shared by the CLIP trainers: prompts -> text features in one batched pass."""
import torch

import clip


def class_prompt_features(trainer, text_encoder, classnames, templates, pooled=False):
    """`encode_prompts` for the text classifier of `trainer`'s run, recording which templates it
    is built from (Trainer.note_templates): method files build their classifier through this."""
    trainer.note_templates(templates)
    return encode_prompts(text_encoder, classnames, templates, pooled=pooled)


def encode_prompts(text_encoder, classnames, templates, chunk=1024, pooled=False):
    """Cached per (text weights, templates, class names, pooled): runs that share a loaded CLIP
    in one process (a sweep) compute each classifier once. The cache lives on the transformer
    module, so it goes away with the model; the key holds the ids of the transformer and the
    projection, and a hit is checked against the objects themselves, so a copied or re-projected
    encoder (an enhanced base) never reads another encoder's features."""
    store = text_encoder.transformer.__dict__.setdefault("_prompt_features", {})
    key = (id(text_encoder.transformer), id(text_encoder.text_projection), text_encoder.dtype,
           tuple(classnames), tuple(templates), pooled)
    hit = store.get(key)
    if hit is not None and hit[0] is text_encoder.text_projection:
        return hit[1]
    feats = _encode_prompts(text_encoder, classnames, templates, chunk, pooled)
    store[key] = (text_encoder.text_projection, feats)
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
