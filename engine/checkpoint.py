"""Checkpoints in Dassl's layout, holding plain tensors and numbers only.

`OUTPUT_DIR/<model name>/model.pth.tar-<epoch>` plus a `checkpoint` text file naming the latest
file, so reference tooling finds them; every file loads with `torch.load(weights_only=True)`.
A rolling `resume.pth.tar` (with RNG states) lets a killed run continue where it stopped; it is
removed when the run finishes.
"""
import os
import pickle
import random

import numpy as np
import torch

from .errors import UserError
from .io import save_text, save_torch

POINTER = "checkpoint"
RESUME_FILE = "resume.pth.tar"


def strip_module(state_dict):
    return {k[7:] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def save_checkpoint(state, directory, name, filename, fsync=True):
    folder = os.path.join(directory, name)
    path = os.path.join(folder, filename)
    save_torch(state, path, fsync=fsync)
    save_text(filename + "\n", os.path.join(folder, POINTER))
    return path


def read_pointer(directory, name):
    pointer = os.path.join(directory, name, POINTER)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        filename = f.read().strip()
    path = os.path.join(directory, name, filename)
    return path if os.path.isfile(path) else None


def load_checkpoint(path, device="cpu"):
    if not os.path.isfile(path):
        raise UserError(f'Model not found at "{path}"')
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise UserError(f"Cannot read checkpoint {path}: {e}. Delete it to retrain, or point --model-dir "
                        f"at a folder with a valid checkpoint.") from None


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
