"""Dassl's optimizer and LR-schedule builders."""
from .lr_scheduler import AVAI_SCHEDS, EpochLRScheduler, build_lr_scheduler
from .optimizer import AVAI_OPTIMS, build_optimizer

__all__ = ["AVAI_OPTIMS", "AVAI_SCHEDS", "EpochLRScheduler", "build_lr_scheduler", "build_optimizer"]
