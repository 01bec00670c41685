"""Dassl's small helpers (files, JSON, seeds, images, environment info, name checks)."""
import difflib
import json
import os
import warnings

import PIL

from datasets.transforms import read_image as _read_image
from engine.checkpoint import set_random_seed as _set_random_seed
from engine.errors import UserError
from engine.io import atomic_write

__all__ = [
    "mkdir_if_missing", "check_isfile", "read_json", "write_json", "set_random_seed", "download_url",
    "read_image", "collect_env_info", "listdir_nohidden", "get_most_similar_str_to_a_from_b",
    "check_availability", "tolist_if_not",
]


def mkdir_if_missing(dirname):
    os.makedirs(dirname, exist_ok=True)


def check_isfile(fpath):
    """True if `fpath` is a file; warns otherwise."""
    isfile = os.path.isfile(fpath)
    if not isfile:
        warnings.warn(f'No file found at "{fpath}"', stacklevel=2)
    return isfile


def read_json(fpath):
    with open(fpath, encoding="utf-8") as f:
        return json.load(f)


def write_json(obj, fpath):
    """JSON with Dassl's formatting (indent 4), written atomically."""
    with atomic_write(fpath, "w") as f:
        json.dump(obj, f, indent=4, separators=(",", ": "))


def set_random_seed(seed):
    """Seed Python's `random`, NumPy and torch (all CUDA devices)."""
    _set_random_seed(seed)


def download_url(url, dst):
    raise UserError(f"Downloads are not done by trainer code here: fetch {url} by other means and put it at "
                    f"{dst} (DATASETS.md lists the sources of every dataset).")


def read_image(path):
    """The image at `path` as a PIL RGB image."""
    return _read_image(path)


def collect_env_info():
    """torch's environment report plus the Pillow version."""
    from torch.utils.collect_env import get_pretty_env_info

    return get_pretty_env_info() + f"\n        Pillow ({PIL.__version__})"


def listdir_nohidden(path, sort=False):
    """Names in `path` not starting with '.' (sorted when `sort`; Dassl's default is unsorted)."""
    items = [f for f in os.listdir(path) if not f.startswith(".")]
    return sorted(items) if sort else items


def get_most_similar_str_to_a_from_b(a, b):
    close = difflib.get_close_matches(a, list(b), n=1, cutoff=0.0)
    return close[0] if close else None


def check_availability(requested, available):
    if requested not in available:
        hint = get_most_similar_str_to_a_from_b(requested, available)
        raise UserError(f"The requested one {requested!r} is not available (available: {', '.join(map(str, available))}); "
                        f"did you mean {hint!r}?")


def tolist_if_not(x):
    return x if isinstance(x, list) else [x]
