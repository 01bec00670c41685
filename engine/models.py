"""Loaded CLIP models, shared read-only between the runs of one sweep.

A sweep owns a `ModelCache` and hands it to each run; a single `train.py` run has none and
loads its own model. The cache key holds everything that changes the weights or their dtype
(backbone, device, text and image tower precision, weight folder), so a run that needs the
image tower in fp32 gets its own entry instead of casting another run's model. A method that
patches or masks the encoder asks for a private copy (`private=True`), which is never cached.

Loading itself leaves the RNG alone (whether a model came from a cache must not matter); after
it, unless MODEL.BACKBONE.ISOLATED_RNG, `advance_like_reference_build` advances torch's CPU
generator exactly as the reference's load does: its `clip.build_model` initialises a random CLIP
before copying the weights in, and those draws shift every later initialisation, shuffle and
augmentation of a seeded run.
"""
import copy

import torch

import clip

from .checkpoint import rng_state, set_rng_state


# (architecture signature, CPU generator state before) -> state after the reference's build.
_ADVANCED = {}


def advance_like_reference_build(signature):
    """Advance torch's CPU generator as building a randomly initialised CLIP of this architecture
    on the CPU does (see `clip.build_random`). The state reached is remembered per process, so a
    sweep builds each architecture once per starting state, not once per run."""
    key = (signature, torch.get_rng_state().numpy().tobytes())
    if key not in _ADVANCED:
        clip.build_random(signature)
        _ADVANCED[key] = torch.get_rng_state()
    torch.set_rng_state(_ADVANCED[key])


def _load(name, device, text_prec, visual_prec, cache_dir):
    # Building the architecture initialises random weights before the real ones are copied in;
    # that must not advance the run's RNG, or a run's shuffles would depend on whether its model
    # came from a cache (a sweep), on the weight source and on open_clip's init code.
    state = rng_state()
    try:
        model = clip.load(name, device=device, precision=text_prec, cache_dir=cache_dir or None)
    finally:
        set_rng_state(state)
    if device.type == "cuda":
        if visual_prec == "fp32":
            model.visual.float()
        # Convolutions (ResNet stems, ViT patch embedding) run faster on NHWC tensors on GPUs.
        model.visual.to(memory_format=torch.channels_last)
    return model


class ModelCache:
    def __init__(self):
        self._models = {}

    def __len__(self):
        return len(self._models)

    def get(self, key):
        if key not in self._models:
            self._models[key] = _load(*key)
        return self._models[key]

    def clear(self):
        self._models.clear()


def load_clip_model(name, device, text_prec, visual_prec, cache_dir="", cache=None, private=False,
                    isolated_rng=False):
    """A frozen CLIP with the text tower in `text_prec` and the image tower in `visual_prec`
    (both "fp32" off CUDA). With a cache, the shared model is returned unless `private`, in
    which case the caller gets a deep copy it may cast, patch or mask freely. Unless
    `isolated_rng`, the CPU generator is then where the reference's model build leaves it."""
    if device.type != "cuda":
        text_prec = visual_prec = "fp32"
    key = (name, device, text_prec, visual_prec, cache_dir)
    if cache is None:
        model = _load(*key)
    else:
        model = cache.get(key)
        model = copy.deepcopy(model) if private else model
    if not isolated_rng:
        advance_like_reference_build(model.arch_signature)
    return model
