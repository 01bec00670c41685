"""The trainer registry (the same object train.py looks trainers up in) and `build_trainer`."""
from engine.registry import TRAINER_REGISTRY

__all__ = ["TRAINER_REGISTRY", "build_trainer"]


def build_trainer(cfg):
    """The trainer named by TRAINER.NAME, built on `cfg`."""
    cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    if cfg.VERBOSE:
        print(f"Loading trainer: {cfg.TRAINER.NAME}")
    return cls(cfg)
