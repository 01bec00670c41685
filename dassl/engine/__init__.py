"""Dassl's engine: the trainer registry, `build_trainer` and the trainer classes."""
from .build import TRAINER_REGISTRY, build_trainer  # isort:skip
from .trainer import SimpleTrainer, TrainerBase, TrainerX

__all__ = ["TRAINER_REGISTRY", "SimpleTrainer", "TrainerBase", "TrainerX", "build_trainer"]
