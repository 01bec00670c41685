"""Dassl's checkpoint and parameter helpers.

Checkpoints are written atomically and hold plain tensors and numbers, so they load with
`torch.load(..., weights_only=True)`. `load_checkpoint` reads those, and also checkpoints written
by Dassl itself, whose scheduler entry pickles torch scheduler and optimizer objects: when the
safe loader refuses a file, it is read again with a restricted unpickler that rebuilds tensors
and plain containers and replaces every other object by an inert placeholder (no code from the
file runs), which is enough for the `state_dict` that trainer files take from it.
"""
import os
import shutil
import warnings
from collections import OrderedDict

import torch
from torch import nn

from engine.checkpoint import load_checkpoint as _engine_load_checkpoint
from engine.checkpoint import read_pointer, set_rng_state, strip_module
from engine.errors import UserError
from engine.io import save_text, save_torch

__all__ = [
    "save_checkpoint", "load_checkpoint", "resume_from_checkpoint", "open_all_layers", "open_specified_layers",
    "count_num_param", "load_pretrained_weights", "init_network_weights",
]


class CheckpointNotFound(UserError, FileNotFoundError):
    __str__ = Exception.__str__


def save_checkpoint(state, save_dir, is_best=False, remove_module_from_keys=True, model_name=""):
    """Write `state` to `save_dir/<model_name or model.pth.tar-<epoch>>`, name it in the
    `checkpoint` file beside it, and copy it to model-best.pth.tar when `is_best`."""
    os.makedirs(save_dir, exist_ok=True)
    if remove_module_from_keys:
        state = dict(state, state_dict=OrderedDict(strip_module(state["state_dict"])))
    fpath = os.path.join(save_dir, model_name or f"model.pth.tar-{state['epoch']}")
    save_torch(state, fpath)
    print(f"Checkpoint saved to {fpath}")
    save_text(os.path.basename(fpath) + "\n", os.path.join(save_dir, "checkpoint"))
    if is_best:
        best = os.path.join(save_dir, "model-best.pth.tar")
        tmp = best + ".tmp"
        shutil.copyfile(fpath, tmp)
        os.replace(tmp, best)
        print(f'Best checkpoint saved to "{best}"')


# ---------------------------------------------------------------------------------------------
# Reading checkpoints, including Dassl's own



def load_checkpoint(fpath):
    """The dict saved in `fpath`, tensors on the CPU (load_state_dict moves them). Checkpoints
    written by Dassl itself load too: their pickled scheduler objects are read as inert
    placeholders and dropped (the entry becomes None); any other pickled object refuses the file
    unread (engine.checkpoint.load_checkpoint)."""
    if fpath is None:
        raise ValueError("File path is None")
    if not os.path.isfile(fpath):
        raise CheckpointNotFound(f'No file found at "{fpath}"')
    return _engine_load_checkpoint(fpath, "cpu")


def resume_from_checkpoint(fdir, model, optimizer=None, scheduler=None):
    """Load the checkpoint that `fdir/checkpoint` names into model (and optimizer, scheduler);
    returns the epoch it was saved at. Restores the random number generators when the file
    carries them (this project's per-epoch resume snapshots do)."""
    fpath = read_pointer(fdir, "")
    if fpath is None:
        raise CheckpointNotFound(f'No checkpoint named in "{os.path.join(fdir, "checkpoint")}"')
    print(f'Loading checkpoint from "{fpath}"')
    checkpoint = load_checkpoint(fpath)
    model.load_state_dict(checkpoint["state_dict"])
    print("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer"):
        optimizer.load_state_dict(checkpoint["optimizer"])
        print("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler"):
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")
    if "rng" in checkpoint:
        set_rng_state(checkpoint["rng"])
    start_epoch = checkpoint["epoch"]
    print(f"Previous epoch: {start_epoch}")
    return start_epoch


# ---------------------------------------------------------------------------------------------
# Parameters


def _unwrap(model):
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def open_all_layers(model):
    """Train mode and gradients for every parameter."""
    model.train()
    for p in model.parameters():
        p.requires_grad = True


def open_specified_layers(model, open_layers):
    """Train mode and gradients for the named children only; the others are frozen (eval)."""
    model = _unwrap(model)
    if isinstance(open_layers, str):
        open_layers = [open_layers]
    for layer in open_layers:
        if not hasattr(model, layer):
            raise UserError(f"{layer!r} is not an attribute of the model, please provide the correct name")
    for name, module in model.named_children():
        opened = name in open_layers
        module.train(opened)
        for p in module.parameters():
            p.requires_grad = opened


def count_num_param(model=None, params=None):
    """Number of parameters of `model`, or of `params` (tensors or param-group dicts)."""
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    if params is not None:
        total = 0
        for p in params:
            if isinstance(p, dict):
                total += sum(q.numel() for q in (p["params"] if isinstance(p["params"], (list, tuple)) else [p["params"]]))
            else:
                total += p.numel()
        return total
    raise ValueError("model and params must provided")


def load_pretrained_weights(model, weight_path):
    """Copy the entries of a checkpoint (or raw state dict) whose name (without "module.") and
    shape match into `model`; the others are reported as discarded."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    model_dict = model.state_dict()
    matched, discarded = OrderedDict(), []
    for k, v in state_dict.items():
        k = k[7:] if k.startswith("module.") else k
        if k in model_dict and isinstance(v, torch.Tensor) and model_dict[k].size() == v.size():
            matched[k] = v
        else:
            discarded.append(k)
    model_dict.update(matched)
    model.load_state_dict(model_dict)
    if not matched:
        warnings.warn(f'Cannot load "{weight_path}" (check the key names manually)', stacklevel=2)
    else:
        print(f'Successfully loaded pretrained weights from "{weight_path}"')
        if discarded:
            print(f"Layers discarded due to unmatched keys or size: {discarded}")


def init_network_weights(model, init_type="normal", gain=0.02):
    """Initialise Conv/Linear weights (normal, xavier, kaiming or orthogonal; biases 0) and
    BatchNorm/InstanceNorm (weight 1, bias 0)."""

    def _init(m):
        classname = m.__class__.__name__
        if hasattr(m, "weight") and ("Conv" in classname or "Linear" in classname):
            if init_type == "normal":
                nn.init.normal_(m.weight.data, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight.data, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(m.weight.data, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                nn.init.orthogonal_(m.weight.data, gain=gain)
            else:
                raise NotImplementedError(f"initialization method {init_type} is not implemented")
            if getattr(m, "bias", None) is not None:
                nn.init.constant_(m.bias.data, 0.0)
        elif "BatchNorm" in classname or "InstanceNorm" in classname:
            if getattr(m, "weight", None) is not None:
                nn.init.constant_(m.weight.data, 1.0)
            if getattr(m, "bias", None) is not None:
                nn.init.constant_(m.bias.data, 0.0)

    model.apply(_init)
