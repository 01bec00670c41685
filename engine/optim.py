"""Optimizers with Dassl's defaults (weight decay 5e-4, Adam betas from the config)."""
import torch

from .errors import ConfigError

OPTIMIZERS = ("adam", "amsgrad", "sgd", "rmsprop", "adamw")


def build_optimizer(params, optim_cfg):
    """`params`: an iterable of parameters or of param-group dicts (a group may carry
    "lr_mult", which the schedule applies on top of the epoch LR)."""
    o = optim_cfg
    params = list(params)
    if not params:
        raise ConfigError("Nothing to optimize: the trainer registered no trainable parameters")
    lr, wd = float(o.LR), float(o.WEIGHT_DECAY)
    betas = (float(o.ADAM_BETA1), float(o.ADAM_BETA2))
    name = o.NAME
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas, amsgrad=name == "amsgrad")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=o.MOMENTUM, weight_decay=wd,
                               dampening=o.SGD_DAMPNING, nesterov=o.SGD_NESTEROV)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=o.MOMENTUM, weight_decay=wd, alpha=o.RMSPROP_ALPHA)
    raise ConfigError(f"OPTIM.NAME {name!r} is not one of {', '.join(OPTIMIZERS)}")
