"""A tiny CLIP in OpenAI's checkpoint format, and a few seconds of contrastive pretraining for it.

Real weights cannot be downloaded here, yet the loading code must be the real one. The tiny model
uses open_clip's CLIP architecture at small widths and is saved with OpenAI's key names and
dtypes (conv/linear/attention weights and projections in fp16, the rest fp32, plus the
`input_resolution` / `context_length` / `vocab_size` scalars), so `clip.load(path)` infers its
architecture exactly as it does for RN50 or ViT-B/16.

A randomly initialised CLIP maps every image to nearly the same direction, so nothing learns on
it. `pretrain_tiny_clip` trains it contrastively on `synthetic.images.class_image` pictures with
noisy captions, then knocks its image-text alignment partly off (`misalign_text`), so that on a
synthetic downstream task zero-shot is about half right while image features stay linearly
separable: the regime TaskRes is built for.
"""
import contextlib
import copy
import hashlib
import json
import math
import os
import time
import warnings

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, convert_weights_to_fp16
from torch import nn

import clip
from engine.io import atomic_write
from synthetic.images import class_image

# Class names of the synthetic datasets. Images of a class are generated from the very string
# its prompts contain, e.g. class_image("Annual Crop Land"), not from the folder name "AnnualCrop".
EUROSAT_CLASSNAMES = (
    "Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road",
    "Industrial Buildings", "Pasture Land", "Permanent Crop Land", "Residential Buildings",
    "River", "Sea or Lake",
)
DTD_CLASSNAMES = ("banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed",
                  "cracked")
OXFORD_PETS_CLASSNAMES = ("abyssinian", "american_bulldog", "american_pit_bull_terrier",
                          "basset_hound", "beagle", "bengal", "birman", "bombay")
PRETRAIN_CLASSNAMES = EUROSAT_CLASSNAMES + DTD_CLASSNAMES + OXFORD_PETS_CLASSNAMES

# The synthetic datasets' zero-shot tasks, as CoOp's ZeroshotCLIP builds them.
DATASET_PROBES = (
    (EUROSAT_CLASSNAMES, "a centered satellite photo of {}."),
    (DTD_CLASSNAMES, "{} texture."),
    (OXFORD_PETS_CLASSNAMES, "a photo of a {}, a type of pet."),
)

# The synthetic datasets' prompt templates plus generic ones. Each caption uses the class name
# either raw or with "_" replaced by spaces: TaskRes keeps underscores, zero-shot CLIP drops them.
PRETRAIN_TEMPLATES = (
    "a photo of a {}.",
    "a centered satellite photo of {}.",
    "{} texture.",
    "a photo of a {}, a type of pet.",
    "{}",
    "a photo of the {}.",
    "itap of a {}.",
)

IMAGE_RESOLUTION = 224
CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
LOGIT_SCALE = math.log(100.0)  # what the released CLIP checkpoints store
# Wider than `tiny_clip_state_dict`'s default of 32: Adam moves each coordinate by about the
# learning rate, so a residual's size relative to a text feature grows with the dimension. At 128,
# TaskRes at its reference recipe (lr 2e-3, 100 epochs) gains 20-35 points over zero-shot on the
# synthetic tasks; at 32 the gain on EuroSAT is about half that.
PRETRAINED_EMBED_DIM = 128

_MEAN = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)


# ---------------------------------------------------------------------------------------------
# Architecture and OpenAI-format state dicts

def _configs(arch):
    if arch == "vit":
        # 224 / 32 = a 7x7 patch grid.
        vision = CLIPVisionCfg(layers=2, width=64, patch_size=32, image_size=IMAGE_RESOLUTION)
    elif arch == "rn":
        # ModifiedResNet downsamples by 32, so attention pooling runs over 7x7 at 224 input.
        vision = CLIPVisionCfg(layers=(1, 1, 1, 1), width=8, image_size=IMAGE_RESOLUTION)
    else:
        raise ValueError(f"arch must be 'vit' or 'rn', not {arch!r}")
    # Loaders infer heads = width // 64, so the text width must be a multiple of 64.
    text = CLIPTextCfg(context_length=CONTEXT_LENGTH, vocab_size=VOCAB_SIZE, width=64, heads=1,
                       layers=2)
    return vision, text


def to_openai_state_dict(model):
    """State dict of an open_clip CLIP with OpenAI's key names and mixed fp16/fp32 dtypes."""
    model = copy.deepcopy(model).float()
    convert_weights_to_fp16(model)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sd["input_resolution"] = torch.tensor(IMAGE_RESOLUTION)
    sd["context_length"] = torch.tensor(CONTEXT_LENGTH)
    sd["vocab_size"] = torch.tensor(VOCAB_SIZE)
    return sd


def tiny_clip_state_dict(arch="vit", embed_dim=32, seed=0):
    """A randomly initialised tiny CLIP ("vit" or "rn") as an OpenAI-format state dict."""
    vision, text = _configs(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=True)
    return to_openai_state_dict(model)


# ---------------------------------------------------------------------------------------------
# Saving

class _Node(nn.Module):
    # TorchScript needs a forward to compile; the archive only exists to carry tensors.
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _tensor_tree(state_dict):
    """A module tree whose state_dict() has exactly the keys of `state_dict`."""
    root = _Node()
    for key, value in state_dict.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if part not in node._modules:
                node.add_module(part, _Node())
            node = node._modules[part]
        node.register_buffer(leaf, value.detach().clone())
    return root


def save_openai_checkpoint(state_dict, path, torchscript=False):
    """Write `state_dict` as a plain torch file or, like the released OpenAI files, as a
    TorchScript archive whose `.state_dict()` carries the OpenAI key names. Atomic; returns the
    path as a string."""
    path = os.fspath(path)
    with atomic_write(path, "wb") as f:
        if torchscript:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
                torch.jit.save(torch.jit.script(_tensor_tree(state_dict)), f)
        else:
            torch.save(state_dict, f)
    return path


# ---------------------------------------------------------------------------------------------
# Pretraining

def _random_resized_crops(images, out_size, gen, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Per-sample random resized crop + horizontal flip in one grid_sample call.

    w and h are the crop's sides as fractions of the image's, so w * h is the area fraction,
    drawn from `scale` as torchvision's RandomResizedCrop (and Dassl's default) draws it.
    """
    n = images.shape[0]
    area = torch.empty(n).uniform_(*scale, generator=gen)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, (n, 3, out_size, out_size), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def _caption_table(classnames, templates):
    """Tokens [T, V, K, 77]: template t, name variant v (raw, "_" -> " "), class k."""
    variants = [list(classnames), [c.replace("_", " ") for c in classnames]]
    texts = [t.format(name) for t in templates for names in variants for name in names]
    return clip.tokenize(texts).view(len(templates), len(variants), len(classnames), -1)


@contextlib.contextmanager
def _one_thread():
    # One thread gives the same result on every machine, and on a busy 2-core machine it is
    # several times faster than two threads waiting on each other.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pretrain_tiny_clip(state_dict, classnames=PRETRAIN_CLASSNAMES, templates=PRETRAIN_TEMPLATES,
                       steps=200, seconds=None, caption_noise=0.3, seed=0, batch_size=None,
                       lr=2e-3, image_size=64, target_accuracy=None, probe=None, verbose=False):
    """Contrastive (symmetric InfoNCE) training on synthetic images; returns a new state dict.

    Every step draws one fresh image per class (a random subset of `batch_size` classes when
    there are more), crops and flips it at random and pairs it with a caption from a random
    template; with probability `caption_noise` the caption names a wrong class. Deterministic
    for a given seed and step count (it runs on one thread); `seconds`, if given, also stops
    early (then the result depends on the machine). The logit scale ends at ln(100), as in the
    released CLIP weights.

    Trained to the end, the model names nearly every class right: caption noise alone does not
    change which class wins. `target_accuracy` then lowers zero-shot accuracy to about that
    value by rotating the text projection part of the way towards a random one
    (`misalign_text`), leaving the image encoder, and so the linear separability of its
    features, untouched. `probe` lists the (classnames, template) tasks it is measured on
    (default: all classes, each template); see `DATASET_PROBES`.
    """
    classnames = list(classnames)
    k = len(classnames)
    batch = min(batch_size or k, k)
    with torch.random.fork_rng(devices=[]), _one_thread():
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = clip.build_model(state_dict, precision="fp32", source="tiny CLIP state dict")
        model.train()
        for p in model.parameters():
            p.requires_grad_(True)
        captions = _caption_table(classnames, templates)
        n_templates, n_variants = captions.shape[:2]

        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
        other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                 {"params": other, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
        warmup = max(1, steps // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, 0.5 * (
            1 + math.cos(math.pi * min(s, steps) / steps))))

        start = time.time()
        for step in range(steps):
            labels = torch.randperm(k, generator=gen)[:batch]
            pixels = np.stack([np.asarray(class_image(classnames[c], rng, size=image_size))
                               for c in labels.tolist()])
            images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
            images = (_random_resized_crops(images, IMAGE_RESOLUTION, gen) - _MEAN) / _STD

            named = labels.clone()
            noisy = torch.rand(batch, generator=gen) < caption_noise
            shift = torch.randint(1, k, (batch,), generator=gen)  # never the true class
            named[noisy] = (labels[noisy] + shift[noisy]) % k
            t_idx = torch.randint(n_templates, (batch,), generator=gen)
            v_idx = torch.randint(n_variants, (batch,), generator=gen)
            tokens = captions[t_idx, v_idx, named]

            img = F.normalize(model.encode_image(images), dim=-1)
            txt = F.normalize(model.encode_text(tokens), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.t()
            target = torch.arange(batch)
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, LOGIT_SCALE)
            if verbose and (step % 50 == 0 or step == steps - 1):
                print(f"step {step}: loss {loss.item():.3f} ({time.time() - start:.1f}s)")
            if seconds is not None and time.time() - start > seconds:
                break

        model.eval()
        with torch.no_grad():
            model.logit_scale.fill_(LOGIT_SCALE)
        if target_accuracy is not None:
            tasks = probe or [(classnames, t) for t in templates]
            misalign_text(model, tasks, target_accuracy, seed=seed, image_size=image_size,
                          verbose=verbose)
    return to_openai_state_dict(model)


@torch.no_grad()
def misalign_text(model, tasks, target_accuracy, seed=0, image_size=64, per_class=16,
                  verbose=False):
    """Rotate `model.text_projection` towards a random matrix, in place, until zero-shot
    accuracy averaged over `tasks` ((classnames, template) pairs) is close to `target_accuracy`.

    P <- cos(a) P + sin(a) R keeps the projection's scale while giving every class a text
    feature that is partly off its images: the imperfect image-text alignment that makes real
    CLIP weak on some downstream tasks and that TaskRes-style methods learn to correct.
    Returns the angle used (radians).
    """
    gen = torch.Generator().manual_seed(seed + 12345)
    proj = model.text_projection
    rand = torch.randn(proj.shape, generator=gen) * proj.float().std()
    text = clip.TextEncoder(model)
    probes = []
    for names, template in tasks:
        x, y = eval_images(names, per_class, seed=seed + 1, size=image_size)
        feats = F.normalize(clip.encode_image(model, x), dim=-1)
        hidden = text.encode_pooled(clip.tokenize([template.format(n.replace("_", " ")) for n in names]))
        probes.append((feats, y, hidden.float()))

    def accuracy(angle):
        p = math.cos(angle) * proj.float() + math.sin(angle) * rand
        return sum((f @ F.normalize(h @ p, dim=-1).t()).argmax(-1).eq(y).float().mean().item()
                   for f, y, h in probes) / len(probes)

    # Accuracy falls (not strictly) from the trained value at 0 to chance at pi/2: bisect,
    # keeping the angle whose accuracy came closest to the target.
    lo, hi = 0.0, math.pi / 2
    best = (abs(accuracy(0.0) - target_accuracy), 0.0)
    for _ in range(14):
        mid = (lo + hi) / 2
        acc = accuracy(mid)
        best = min(best, (abs(acc - target_accuracy), mid))
        lo, hi = (mid, hi) if acc > target_accuracy else (lo, mid)
    angle = best[1]
    trained = accuracy(0.0)
    proj.copy_((math.cos(angle) * proj.float() + math.sin(angle) * rand).to(proj.dtype))
    if verbose:
        print(f"text projection rotated by {math.degrees(angle):.1f} deg: probe zero-shot "
              f"accuracy {trained:.3f} -> {accuracy(0.0):.3f} (target {target_accuracy})")
    return angle


# ---------------------------------------------------------------------------------------------
# Evaluation helpers (tests and the demo)

def eval_images(classnames, per_class, seed, size=64):
    """Fresh synthetic images, preprocessed as CLIP does at test time (resize, center crop)."""
    rng = np.random.default_rng(seed)
    pics, labels = [], []
    for label, name in enumerate(classnames):
        for _ in range(per_class):
            pics.append(np.asarray(class_image(name, rng, size=size)))
            labels.append(label)
    x = torch.from_numpy(np.stack(pics)).permute(0, 3, 1, 2).float() / 255.0
    # Square images: resize to the model's resolution, so the center crop is the whole image.
    x = F.interpolate(x, size=(IMAGE_RESOLUTION, IMAGE_RESOLUTION), mode="bicubic",
                      align_corners=False, antialias=True).clamp(0, 1)
    return (x - _MEAN) / _STD, torch.tensor(labels)


@torch.no_grad()
def zero_shot_accuracy(model, classnames, template, images, labels, tokens=None):
    """Top-1 accuracy of the text classifier built from `template` (underscores -> spaces)."""
    if tokens is None:
        tokens = clip.tokenize([template.format(c.replace("_", " ")) for c in classnames])
    text = F.normalize(model.encode_text(tokens).float(), dim=-1)
    feats = F.normalize(clip.encode_image(model, images), dim=-1)
    return (feats @ text.t()).argmax(-1).eq(labels).float().mean().item()


# ---------------------------------------------------------------------------------------------
# On-disk cache, so that test sessions pay for pretraining once per recipe

def default_cache_dir():
    return os.path.expanduser(os.environ.get("TINY_CLIP_CACHE") or "~/.cache/taskres-tests")


def _recipe_key(params):
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    h.update(f"torch {torch.__version__} open_clip {open_clip.__version__}".encode())
    # The recipe is this file plus the image generator: any edit to them invalidates the cache.
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("tiny_clip.py", "images.py"):
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def pretrained_tiny_clip_path(cache_dir=None, arch="vit", embed_dim=PRETRAINED_EMBED_DIM, seed=0,
                              steps=200, caption_noise=0.3, target_accuracy=0.55,
                              classnames=PRETRAIN_CLASSNAMES, templates=PRETRAIN_TEMPLATES,
                              probe=DATASET_PROBES):
    """Path of a pretrained tiny CLIP (plain state-dict file), built and cached on first use.

    The file name carries a hash of the parameters and of the code that produces it, so a
    changed recipe never reuses a stale file. Default folder: $TINY_CLIP_CACHE or
    ~/.cache/taskres-tests.
    """
    params = {"arch": arch, "embed_dim": embed_dim, "seed": seed, "steps": steps,
              "caption_noise": caption_noise, "target_accuracy": target_accuracy,
              "classnames": list(classnames), "templates": list(templates),
              "probe": [[list(names), t] for names, t in probe]}
    path = os.path.join(cache_dir or default_cache_dir(), f"tiny-clip-{arch}-{_recipe_key(params)}.pt")
    if not os.path.isfile(path):
        sd = tiny_clip_state_dict(arch, embed_dim, seed)
        sd = pretrain_tiny_clip(sd, classnames, templates, steps=steps, caption_noise=caption_noise,
                                seed=seed, target_accuracy=target_accuracy, probe=list(probe))
        save_openai_checkpoint(sd, path)
    return path
