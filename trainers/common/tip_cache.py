"""Tip-Adapter's cache model (Zhang et al., ECCV 2022), shared by TipAdapter and TipAdapterF.

The reference implementation, kept here:
- keys: per few-shot training image, the mean of its RAW (un-normalised) CLIP image features
  over `augment_epoch` (10) randomly augmented views, then L2-normalised: [N, D];
- values: the one-hot labels, one row per training image: [N, C];
- for L2-normalised image features f and the L2-normalised zero-shot text classifier W [C, D]:
      A             = f @ keys^T                       (cosine affinities, [M, N])
      cache logits  = exp(-beta * (1 - A)) @ values    ([M, C])
      logits        = 100 * f @ W^T + alpha * cache logits
  (the scale 100 is hard-coded, not CLIP's logit_scale);
- W: per class, every template's text feature L2-normalised, averaged, renormalised; one
  hand-written template per dataset, the 7 selected templates for ImageNet; "_" in class names
  becomes a space;
- (beta, alpha) search: beta_i = i * (scale_beta - 0.1) / n_beta + 0.1 for i < n_beta (the scale
  itself is never reached), alpha likewise; beta is the outer loop, alpha the inner one, and the
  first strictly better top-1 accuracy wins (ties keep the earlier grid point).
Tip-Adapter-F trains the keys (initialised from the cache keys, used as they are, without
renormalising) and keeps values, W, beta and alpha fixed while training.

Everything is computed in fp32 here (the reference runs it in fp16 on CUDA).
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import clip

from .templates import IMAGENET_TEMPLATES_SELECT, custom_template, dataset_name
from .text import class_prompt_features

IMAGENET_FAMILY = ("ImageNet", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")


def tip_templates(dataset):
    """The reference's prompts: the 7 selected templates for ImageNet (and, here, for its
    evaluation-only variants, so a model trained on ImageNet meets the same classifier), one
    hand-written template for every other dataset. `dataset`: a run's config or a DATASET.NAME."""
    if dataset_name(dataset) in IMAGENET_FAMILY:
        return list(IMAGENET_TEMPLATES_SELECT)
    return [custom_template(dataset)]


def text_classifier(trainer, clip_model, classnames, templates):
    """Zero-shot classifier W [C, D], fp32: per class, normalise each template's feature, average,
    renormalise (recorded on `trainer`'s run, see class_prompt_features)."""
    names = [c.replace("_", " ") for c in classnames]
    feats = class_prompt_features(trainer, clip.TextEncoder(clip_model), names, templates).float()
    return F.normalize(F.normalize(feats, dim=-1).mean(1), dim=-1)


def build_cache(view_features, labels, num_classes):
    """(keys [N, D], values [N, C]) from raw features of V augmented views [N, V, D]."""
    keys = F.normalize(view_features.float().mean(1), dim=-1)
    values = F.one_hot(labels.long(), num_classes).float()
    return keys, values


def cache_logits(features, keys, values, beta):
    """exp(-beta * (1 - f @ keys^T)) @ values for L2-normalised features f [M, D]."""
    affinity = features @ keys.t()
    return torch.exp(-beta * (1.0 - affinity)) @ values


def tip_logits(features, text_weights, keys, values, beta, alpha, logit_scale=100.0):
    """Tip-Adapter logits for RAW image features [M, D] (normalised here)."""
    f = F.normalize(features.float(), dim=-1)
    return logit_scale * f @ text_weights.t() + alpha * cache_logits(f, keys, values, beta)


@torch.no_grad()
def count_correct(features, labels, text_weights, keys, values, beta, alpha, logit_scale=100.0, rows=4096):
    """Top-1 correct predictions of `tip_logits` over RAW features [M, D], in row chunks (an
    ImageNet-size [M, N] affinity matrix would not fit in memory at once)."""
    labels = labels.to(features.device)
    return sum(int((tip_logits(features[i:i + rows], text_weights, keys, values, beta, alpha, logit_scale)
                    .argmax(-1) == labels[i:i + rows]).sum()) for i in range(0, len(features), rows))


def search_grid(scale, steps):
    """The reference's grid: [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(int(steps))]


@dataclass
class SearchResult:
    beta: float
    alpha: float
    accuracy: float  # top-1 in %
    correct: torch.Tensor  # [n_beta, n_alpha] correct predictions per grid point
    total: int


@torch.no_grad()
def search_hp(features, labels, text_weights, keys, values, betas, alphas, logit_scale=100.0,
              budget=1 << 25, verbose=True):
    """Exhaustive (beta, alpha) grid search on RAW features [M, D]; the same choice as the
    reference's double loop (first strictly better accuracy wins), computed in row chunks so
    that [n_alpha, rows, C] logits stay within `budget` elements."""
    f = F.normalize(features.float(), dim=-1)
    labels = labels.to(f.device)
    alpha_t = torch.tensor(alphas, dtype=f.dtype, device=f.device).view(-1, 1, 1)
    correct = torch.zeros(len(betas), len(alphas), dtype=torch.long, device=f.device)
    rows = max(1, budget // max(1, len(alphas) * values.shape[1]))
    for start in range(0, len(f), rows):
        fc, yc = f[start:start + rows], labels[start:start + rows]
        zero_shot = logit_scale * fc @ text_weights.t()
        affinity = fc @ keys.t()
        for i, beta in enumerate(betas):
            cache = torch.exp(-beta * (1.0 - affinity)) @ values
            pred = (zero_shot.unsqueeze(0) + alpha_t * cache.unsqueeze(0)).argmax(-1)  # [n_alpha, rows]
            correct[i] += (pred == yc.unsqueeze(0)).sum(-1)
    flat = correct.flatten().cpu()
    total = max(1, len(f))
    best = -1
    for k, c in enumerate(flat.tolist()):  # replay the reference's loop for its log lines
        if c > best:
            best = c
            if verbose:
                print(f"New best setting, beta: {betas[k // len(alphas)]:.2f}, alpha: {alphas[k % len(alphas)]:.2f}; "
                      f"accuracy: {100.0 * c / total:.2f}")
    k = int(torch.argmax(flat))  # the first maximum: row-major = beta outer, alpha inner
    result = SearchResult(betas[k // len(alphas)], alphas[k % len(alphas)], 100.0 * int(flat[k]) / total,
                          correct.cpu(), total)
    if verbose:
        print(f"\nAfter searching, the best accuracy: {result.accuracy:.2f}.\n")
    return result


class TipCache(nn.Module):
    """The cache model's state: keys [N, D] (a parameter when they are trained), one-hot values
    [N, C] and the scalars beta and alpha. Its state dict holds plain tensors, so a checkpoint
    carries the whole model (the text classifier is recomputed from the class names)."""

    def __init__(self, num_items, dim, num_classes, beta, alpha, learnable_keys=False):
        super().__init__()
        keys = torch.zeros(num_items, dim)
        if learnable_keys:
            self.cache_keys = nn.Parameter(keys)
        else:
            self.register_buffer("cache_keys", keys)
        self.register_buffer("cache_values", torch.zeros(num_items, num_classes))
        # float64 scalars hold the searched values exactly (they multiply fp32 tensors as fp32)
        self.register_buffer("beta", torch.tensor(float(beta), dtype=torch.float64))
        self.register_buffer("alpha", torch.tensor(float(alpha), dtype=torch.float64))

    @torch.no_grad()
    def fill(self, keys, values):
        """Set keys and values in place (the optimizer keeps its reference to the keys)."""
        if keys.shape != self.cache_keys.shape or values.shape != self.cache_values.shape:
            self.reshape(keys.shape, values.shape)
        self.cache_keys.copy_(keys)
        self.cache_values.copy_(values)

    def reshape(self, key_shape, value_shape):
        """New zero tensors for another cache size (a checkpoint built on other images)."""
        if tuple(key_shape) == tuple(self.cache_keys.shape) and tuple(value_shape) == tuple(self.cache_values.shape):
            return
        device = self.cache_values.device
        keys = torch.zeros(tuple(key_shape), device=device)
        if isinstance(self.cache_keys, nn.Parameter):
            self.cache_keys = nn.Parameter(keys)
        else:
            self.cache_keys = keys
        self.cache_values = torch.zeros(tuple(value_shape), device=device)

    @torch.no_grad()
    def set_hp(self, beta, alpha):
        self.beta.fill_(float(beta))
        self.alpha.fill_(float(alpha))

    def forward(self, features, text_weights, logit_scale):
        return tip_logits(features, text_weights, self.cache_keys, self.cache_values, self.beta, self.alpha,
                          logit_scale)


def remap_value_columns(values, trained_classnames, current_classnames):
    """Value columns for the current classes: (values [N, C_now], classes never trained on), or
    (None, None) when that cannot be told.

    Columns follow the class names, and a class the cache has no image of gets a zero column, so
    its logit is the zero-shot one. (ImageNet subsets of a 1000-column cache are sliced by the
    engine before: see `engine.checkpointing`.)"""
    current = list(current_classnames)
    trained = list(trained_classnames) if trained_classnames is not None else None
    if trained == current or (trained is None and values.shape[1] == len(current)):
        return values, []
    if trained is None:
        return None, None
    index = {c: i for i, c in enumerate(trained)}
    out = values.new_zeros(values.shape[0], len(current))
    unseen = []
    for j, c in enumerate(current):
        if c in index:
            out[:, j] = values[:, index[c]]
        else:
            unseen.append(c)
    return out, unseen
