"""Checkpoints in Dassl's layout, holding plain tensors and numbers only.

`OUTPUT_DIR/<model name>/model.pth.tar-<epoch>` plus a `checkpoint` text file naming the latest
file, so reference tooling finds them; every file loads with `torch.load(weights_only=True)`.
A rolling `resume.pth.tar` (with RNG states) lets a killed run continue where it stopped; it is
removed when the run finishes. The pointer names only files an exact resume can start from: the
snapshot, the last epoch's checkpoint, a closed-form fit (engine.checkpointing decides).

`load_checkpoint` also reads checkpoints written by Dassl-based reference code (CoOp, TaskRes),
which pickle optimizer and scheduler objects next to the tensors, without unpickling any code.
"""
import os
import pickle
import random
import re
import struct

import numpy as np
import torch

from .errors import UserError
from .io import save_text, save_torch

POINTER = "checkpoint"
RESUME_FILE = "resume.pth.tar"


def strip_module(state_dict):
    return {k[7:] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def save_checkpoint(state, directory, name, filename, fsync=True, pointer=True):
    """`pointer=False` for files that are not the run's latest state (model-best.pth.tar), so
    that resume always continues from the last epoch."""
    folder = os.path.join(directory, name)
    path = os.path.join(folder, filename)
    save_torch(state, path, fsync=fsync)
    if pointer:
        write_pointer(directory, name, filename)
    return path


def write_pointer(directory, name, filename):
    """Name `filename` as model `name`'s latest state (what resume continues from)."""
    save_text(filename + "\n", os.path.join(directory, name, POINTER))


def read_pointer(directory, name):
    pointer = os.path.join(directory, name, POINTER)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        filename = f.read().strip()
    path = os.path.join(directory, name, filename)
    return path if os.path.isfile(path) else None


# Dassl's save_model stores `scheduler.state_dict()`; for its warm-up schedulers
# (dassl.optim.lr_scheduler.ConstantWarmupScheduler / LinearWarmupScheduler) that dict holds the
# wrapped torch scheduler object and, through it, a copy of the optimizer object, whose `state` is a
# defaultdict(dict). These names are read as inert placeholders, never imported.
_INERT_PREFIXES = ("dassl.", "torch.optim.")

# How torch.save files begin: a zip archive, or (before torch 1.6) a pickled magic number.
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
# What torch.load raises on a file cut short or overwritten with other bytes.
_DATA_ERRORS = (RuntimeError, EOFError, ValueError, OSError, IndexError, KeyError, TypeError,
                struct.error)


class _Inert:
    """Stands in for a pickled object that is not loaded: takes any construction, keeps nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _plain_dict(*args, **kwargs):
    """defaultdict(factory) read as a plain dict: the factory is never called or kept."""
    return {}


def _placeholder(name):
    """What a pickled global is read as, or None if it must be refused."""
    if name == "collections.defaultdict":
        return _plain_dict
    if name.startswith(_INERT_PREFIXES) or name == "builtins.dict":  # dict: defaultdict's factory
        return _Inert
    return None


def load_checkpoint(path, device="cpu"):
    """The checkpoint's contents, read with torch's weights-only unpickler (tensors, numbers,
    strings, containers), mapped to `device`.

    A checkpoint from Dassl-based code also pickles optimizer/scheduler objects: the entries
    holding them (its "scheduler", and "optimizer" if it is an object rather than a state dict)
    come back as None, and a "skipped" entry lists their keys. Any other pickled object is
    refused, unread.
    """
    if not os.path.isfile(path):
        raise UserError(f'Model not found at "{path}"')
    names = _scan_globals(path)
    for _ in range(16):  # legacy (non-zip) files cannot be scanned: learn their names one by one
        try:
            with torch.serialization.safe_globals([(_placeholder(n), n) for n in names]):
                state = torch.load(path, map_location=device, weights_only=True)
            break
        except pickle.UnpicklingError as e:
            name = _unsupported_global(e)
            if name is None:
                raise _damaged(path, e) from None
            if _placeholder(name) is None or name in names:
                raise _refused(path, [name]) from None
            names.append(name)
        except _DATA_ERRORS as e:
            raise _damaged(path, e) from None
    else:
        raise _refused(path, names)
    return _drop_inert(state, path) if names else state


def _scan_globals(path):
    """Names of the pickled classes/functions beyond torch's weights-only set, found without
    unpickling; refuses the file if any is not optimizer/scheduler state."""
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if head.startswith(_LEGACY_MAGIC):
        return []  # legacy format: cannot be scanned, torch.load's own checks decide
    if not head.startswith(_ZIP_MAGIC):
        raise _damaged(path, ValueError("it starts with neither a zip header nor torch's "
                                        "legacy magic number" if head else "the file is empty"))
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except _DATA_ERRORS + (pickle.UnpicklingError,) as e:
        raise _damaged(path, e) from None
    refused = [n for n in names if _placeholder(n) is None]
    if refused:
        raise _refused(path, refused)
    return names


def _unsupported_global(err):
    # "Unsupported global: GLOBAL x.y ..." or "... GLOBAL x.y whose module x is blocked"
    match = re.search(r"\bGLOBAL ([\w.]+)", str(err))
    return match.group(1) if match else None


def _has_inert(obj):
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, _Inert) or item is _Inert or item is _plain_dict:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)
    return False


def _drop_inert(state, path):
    if not isinstance(state, dict) or _has_inert(state.get("state_dict")):
        raise UserError(f'Checkpoint "{path}" holds pickled optimizer/scheduler objects but no '
                        "plain state_dict of tensors; there is nothing in it to load.")
    skipped = [key for key, value in state.items() if _has_inert(value)]
    for key in skipped:
        state[key] = None
    state["skipped"] = skipped
    return state


def _damaged(path, err):
    return UserError(f'Checkpoint "{path}" is damaged or is not a PyTorch checkpoint '
                     f"({_torch_reason(err)}). It was probably cut short, e.g. by a full disk or an "
                     "interrupted copy: copy it again from where it came from, or delete it to "
                     "retrain (--model-dir must point at a folder with a valid checkpoint).")


def _refused(path, names):
    return UserError(f'Refusing to load checkpoint "{path}": it pickles Python objects '
                     f"({', '.join(names)}) that are neither tensors, numbers nor the optimizer "
                     "and scheduler state Dassl-based code saves. Unpickling them could run "
                     "arbitrary code, so nothing was read. If you trust the file, load it in the "
                     "code that wrote it and save only its tensors ({'state_dict': ..., "
                     "'epoch': ...}).")


def _torch_reason(err):
    """torch's error without its advice to turn weights_only off (never right for a damaged file)."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
    return (lines[0] if lines else type(err).__name__).split(". ")[0].rstrip(".")


def rng_state():
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    out = {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state):
    version, s, gauss = state["python"]
    random.setstate((version, tuple(s), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def set_random_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
