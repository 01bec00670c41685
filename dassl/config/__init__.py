"""Dassl's config entry points: the default tree (this project's, with Dassl's keys and yacs
semantics) and `clean_cfg`."""
from engine.config import get_cfg_default

__all__ = ["get_cfg_default", "clean_cfg"]


def clean_cfg(cfg, trainer):
    """Drop every TRAINER.<X> node except NAME and the active trainer's (`trainer.upper()`), so
    that print(cfg) shows only what the run uses (Dassl's tools/train.py does this)."""
    for key in list(cfg.TRAINER.keys()):
        if key == "NAME" or key == trainer.upper():
            continue
        cfg.TRAINER.pop(key, None)
