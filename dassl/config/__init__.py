"""Dassl's config entry points: the default tree (this project's, with Dassl's keys and yacs
semantics), `clean_cfg`, and `merging_nodes`, under which copied `extend_cfg` functions run."""
import contextlib

from yacs.config import CfgNode as CN

from engine.config import get_cfg_default
from engine.errors import ConfigError

__all__ = ["get_cfg_default", "clean_cfg", "merging_nodes"]


def clean_cfg(cfg, trainer):
    """Drop every TRAINER.<X> node except NAME and the active trainer's (`trainer.upper()`), so
    that print(cfg) shows only what the run uses (Dassl's tools/train.py does this)."""
    for key in list(cfg.TRAINER.keys()):
        if key == "NAME" or key == trainer.upper():
            continue
        cfg.TRAINER.pop(key, None)


class _MergingNode(CN):
    """A node on which assigning a CfgNode to an existing node merges it into that node: the
    existing keys stay, the assigned ones take their new values. CoOp-derived files re-create
    `cfg.TRAINER.COOP = CN()` with the reference keys only; replacing the node would wipe the
    keys this project's CoOp (or another copied file) declared."""

    def __setitem__(self, key, value):
        old = self.get(key)
        if isinstance(old, CN) and isinstance(value, CN) and old is not value:
            for k, v in value.items():
                old[k] = v  # old is a _MergingNode too while the context is active
            return
        super().__setitem__(key, value)


def _nodes(cfg):
    yield cfg
    for v in cfg.values():
        if isinstance(v, CN):
            yield from _nodes(v)


def _keys(cfg, prefix=""):
    out = set()
    for k, v in cfg.items():
        out.add(prefix + k)
        if isinstance(v, CN):
            out |= _keys(v, f"{prefix}{k}.")
    return out


@contextlib.contextmanager
def merging_nodes(cfg, source):
    """Run a copied `extend_cfg` on `cfg` so that it adds keys and sets values but removes none;
    keys it still drops (del, pop, a value over a node) raise an error naming `source`."""
    before = _keys(cfg)
    swapped = [n for n in _nodes(cfg) if type(n) is CN]
    for node in swapped:
        object.__setattr__(node, "__class__", _MergingNode)  # same layout; restored below
    try:
        yield
    finally:
        for node in swapped:
            object.__setattr__(node, "__class__", CN)
    lost = sorted(before - _keys(cfg))
    if lost:
        raise ConfigError(f"extend_cfg in {source} removed config keys that other trainers declare: "
                          f"{', '.join(lost)}. Let it add or set keys instead of deleting or replacing nodes.")
