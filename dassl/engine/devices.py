"""CUDA calls inside copied trainer files.

Reference files often hard-code the device (`prompts.to("cuda")`, `.cuda()`, as CLIP-Adapter's
does), which fails on a machine without a GPU or with USE_CUDA False. With DASSL.MAP_CUDA True
the Dassl layer runs such files with Tensor/Module `.cuda()` and `.to(<a cuda device>)` sent to
the run's device, only while it runs the file's code (never globally), so this project's code and
other trainers are untouched. Without it, the CUDA error is re-raised naming the key.
"""
import contextlib
import inspect
import os
import re
import traceback

import torch

from engine.errors import UserError

MAP_CUDA_KEY = "DASSL.MAP_CUDA"

# What torch says when code asks for CUDA that this run does not use: no driver, a CPU-only build,
# no visible GPU, or (USE_CUDA False on a GPU machine) a CUDA tensor meeting the run's tensors.
_NO_CUDA = re.compile(r"NVIDIA driver|not compiled with CUDA|no CUDA GPUs|CUDA driver|"
                      r"Expected all tensors to be on the same device")

_depth = 0  # nesting of mapped() (test() runs inside train())


def _is_cuda(device):
    if isinstance(device, str):
        return device == "cuda" or device.startswith("cuda:")
    return isinstance(device, torch.device) and device.type == "cuda"


def _remapped_to(original, device):
    def to(self, *args, **kwargs):
        if args and _is_cuda(args[0]):
            args = (device,) + args[1:]
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = device
        return original(self, *args, **kwargs)
    return to


@contextlib.contextmanager
def mapped(device):
    """Tensor/Module `.cuda()` and `.to("cuda"...)` go to `device` inside the block."""
    global _depth
    if _depth:
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    saved = [(cls, name, cls.__dict__.get(name)) for cls in (torch.Tensor, torch.nn.Module) for name in ("to", "cuda")]
    tensor_to, module_to = torch.Tensor.to, torch.nn.Module.to
    torch.Tensor.to = _remapped_to(tensor_to, device)
    torch.nn.Module.to = _remapped_to(module_to, device)
    torch.Tensor.cuda = lambda self, *args, **kwargs: tensor_to(self, device)
    torch.nn.Module.cuda = lambda self, *args, **kwargs: module_to(self, device)
    _depth = 1
    try:
        yield
    finally:
        _depth = 0
        for cls, name, attr in saved:
            if attr is None:
                delattr(cls, name)  # inherited (Tensor.cuda/to come from torch._C.TensorBase)
            else:
                setattr(cls, name, attr)


def map_cuda(cfg):
    node = cfg.get("DASSL")
    return bool(node is not None and node.get("MAP_CUDA", False))


@contextlib.contextmanager
def reference_code(trainer):
    """Where the Dassl layer runs a copied file's code (build_model, the training loop, test)."""
    device = trainer.device
    use_map = device.type != "cuda" and map_cuda(trainer.cfg)
    try:
        with mapped(device) if use_map else contextlib.nullcontext():
            yield
    except (RuntimeError, AssertionError) as e:  # torch's CUDA errors are of these two types
        if device.type == "cuda" or not _NO_CUDA.search(str(e)):
            raise
        where = _calling_line(e, inspect.getsourcefile(type(trainer)) or type(trainer).__module__)
        reason = str(e).splitlines()[0]
        if use_map:
            raise UserError(f"{where} uses CUDA in a way {MAP_CUDA_KEY} does not map (it maps Tensor/Module .cuda() "
                            f"and .to('cuda'), not e.g. torch.zeros(..., device='cuda')), and this run is on {device}: "
                            f"make that line use self.device (torch: {reason})") from e
        raise UserError(f"{where} moves data to CUDA itself, but this run is on {device} (no GPU, or USE_CUDA "
                        f"False). Append `{MAP_CUDA_KEY} True` to the command (or set it in the yaml file) to run "
                        f"that file's .cuda() / .to('cuda') calls on {device} (torch: {reason})") from e


def _calling_line(exc, default):
    """file:line of the innermost frame of `exc` outside torch and this module: the line of the
    trainer file that asked for CUDA."""
    skip = (os.path.dirname(torch.__file__) + os.sep, os.path.abspath(__file__))
    frames = [(f.f_code.co_filename, line) for f, line in traceback.walk_tb(exc.__traceback__)]
    own = [(name, line) for name, line in frames if not os.path.abspath(name).startswith(skip)]
    return f"{own[-1][0]}:{own[-1][1]}" if own else default
