"""What a run's results.json records besides its metrics: timings per phase, peak memory,
library versions and the frozen config of the run's method, as plain JSON values."""
import contextlib
import functools
import platform
import resource
import sys
import time
from importlib import metadata

import torch
import yaml

from .config import get_cfg_default


class PhaseTimer:
    """Wall-clock seconds per named phase (build, prepare, train, test); phases add up."""

    def __init__(self):
        self._seconds = {}
        self.active = []  # the phases being timed now, outermost first

    @contextlib.contextmanager
    def __call__(self, phase):
        start = time.perf_counter()
        self.active.append(phase)
        try:
            yield
        finally:
            self.active.pop()
            self._seconds[phase] = self._seconds.get(phase, 0.0) + time.perf_counter() - start

    def seconds(self):
        return {k: round(v, 3) for k, v in self._seconds.items()}


def peak_memory_mb(device):
    """Peak accelerator memory on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)


def versions():
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("torchvision", "open_clip_torch", "numpy", "yacs"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def config_dict(cfg, trainer=None):
    """The frozen config as nested plain dicts (tuples become lists); with `trainer` (a Trainer
    class), only the keys a run of it records (recorded_config)."""
    if trainer is None:
        return yaml.safe_load(cfg.dump())
    tree = {}
    for key, value in recorded_config(cfg, trainer).items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def recorded_config(cfg, trainer):
    """{"OPTIM.LR": 0.002, ...}: the keys of `cfg` a run of `trainer` records and compares: the
    common ones, those its extend_cfg adds (MaskTuning's top-level MASK included) and those of
    the `config_nodes` it reads but does not add, less its `ignored_keys`. Other methods' nodes,
    which every run carries so that any yaml file loads, are left out: a key added to one method
    then changes no record of another."""
    own = _own_keys(trainer)
    keys = set(own)
    flat = flatten(config_dict(cfg))
    for name in trainer.config_nodes:
        path = f"TRAINER.{name}" if name.split(".")[0] in cfg.TRAINER else name
        # A node its own extend_cfg adds holds what it reads (TIP without Tip-Adapter-F's keys).
        if not any(_under(k, path) for k in own):
            keys.update(k for k in flat if _under(k, path))
    keys.difference_update(trainer.ignored_keys)
    return {k: v for k, v in flat.items() if k in keys}


def _under(key, path):
    return key == path or key.startswith(path + ".")


@functools.lru_cache(maxsize=None)
def _own_keys(trainer):
    """The default keys and those the trainer's extend_cfg adds to them."""
    cfg = get_cfg_default()
    trainer.extend_cfg(cfg)
    return frozenset(flatten(config_dict(cfg)))


# Config keys that never change what a run computes (where files live, logging, worker counts).
RESULT_NEUTRAL_KEYS = frozenset({
    "OUTPUT_DIR", "RESUME", "VERBOSE", "DATASET.ROOT", "DATALOADER.NUM_WORKERS", "TRAIN.PRINT_FREQ",
    "TRAIN.TENSORBOARD", "TRAIN.CHECKPOINT_FREQ", "TRAIN.RESUME_FREQ", "FEATURES.CACHE_DIR",
    "MODEL.BACKBONE.CACHE_DIR", "DATASET.SPLIT_CACHE_DIR",
})


def flatten(tree, prefix=""):
    """{"OPTIM.LR": 0.002, ...} from a nested config dict (config_dict's output)."""
    out = {}
    for key, value in (tree or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def plain(value):
    """JSON-safe copy: tensors and numpy scalars become numbers or lists."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def template_kind(templates):
    """How a zero-shot classifier was prompted: "single" (one hand-written template) or
    "ensemble-N" (the mean of N templates' features), as results.json records it."""
    return "single" if len(templates) == 1 else f"ensemble-{len(templates)}"


LEARNED = "learned"  # the kind of a classifier whose prompts are trained (CoOp's context)


def text_templates(templates, kind=None):
    """The results.json extras of a run whose classifier comes from CLIP text embeddings of class
    prompts: `zero_shot_template` (`template_kind`, or `kind`, e.g. LEARNED) and the `templates`."""
    return {"zero_shot_template": kind or template_kind(templates), "templates": list(templates)}
