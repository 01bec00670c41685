"""Dassl's `build_sampler`, for the samplers CLIP trainers use."""
from torch.utils.data import RandomSampler, SequentialSampler

from engine.errors import ConfigError

__all__ = ["build_sampler"]

_NOT_PROVIDED = ("RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler")


def build_sampler(sampler_type, cfg=None, data_source=None, batch_size=32, n_domain=0, n_ins=16):
    """RandomSampler (shuffle without replacement, from torch's global generator) or
    SequentialSampler over `data_source`."""
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    if sampler_type in _NOT_PROVIDED:
        raise ConfigError(f"The Dassl sampler {sampler_type} (domain generalisation / re-identification) is not "
                          "provided here; use RandomSampler or SequentialSampler.")
    raise ConfigError(f"Unknown sampler type: {sampler_type!r}")
