"""Dassl's `build_optimizer`: the optimizer named by OPTIM.NAME with Dassl's settings."""
import warnings

import torch
from torch import nn

from engine.errors import ConfigError
from engine.optim import build_optimizer as _engine_build_optimizer

AVAI_OPTIMS = ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]


def build_optimizer(model, optim_cfg, param_groups=None):
    """`model`: an nn.Module (all its parameters, as Dassl passes them, frozen ones included) or
    an iterable of parameters / param-group dicts. With OPTIM.STAGED_LR, the children named in
    OPTIM.NEW_LAYERS get OPTIM.LR and the others OPTIM.LR * OPTIM.BASE_LR_MULT."""
    o = optim_cfg
    if o.NAME not in AVAI_OPTIMS:
        raise ConfigError(f"OPTIM.NAME must be one of {AVAI_OPTIMS}, but got {o.NAME!r}")
    if param_groups is not None and o.STAGED_LR:
        warnings.warn("staged_lr will be ignored, if you need to use staged_lr, please bind it with "
                      "param_groups yourself.", stacklevel=2)
    if param_groups is None:
        if o.STAGED_LR:
            if not isinstance(model, nn.Module):
                raise ConfigError("When OPTIM.STAGED_LR is True, build_optimizer() needs an nn.Module")
            if isinstance(model, nn.DataParallel):
                model = model.module
            new_layers = [o.NEW_LAYERS] if isinstance(o.NEW_LAYERS, str) else list(o.NEW_LAYERS)
            if not new_layers:
                warnings.warn("OPTIM.NEW_LAYERS is empty (staged_lr is useless)", stacklevel=2)
            base, new = [], []
            for name, child in model.named_children():
                (new if name in new_layers else base).extend(child.parameters())
            param_groups = [{"params": base, "lr": float(o.LR) * float(o.BASE_LR_MULT)}, {"params": new}]
        else:
            param_groups = model.parameters() if isinstance(model, nn.Module) else model
    if o.NAME == "radam":
        betas = (float(o.ADAM_BETA1), float(o.ADAM_BETA2))
        return torch.optim.RAdam(param_groups, lr=float(o.LR), weight_decay=float(o.WEIGHT_DECAY), betas=betas)
    return _engine_build_optimizer(param_groups, o)
