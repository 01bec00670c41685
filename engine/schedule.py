"""Per-epoch learning-rate schedules in closed form.

Dassl chains a warmup wrapper around a torch scheduler and steps it once per epoch; its state
dict pickles the wrapped scheduler (and a copy of the optimizer), which breaks resume, and it
no longer runs on current PyTorch. The LR it produces has a closed form, so we compute it
directly from the epoch index; the only state is that index.

For the TaskRes/CoOp recipe (cosine, 1 constant warmup epoch, recount) the LR of 0-based epoch
e is WARMUP_CONS_LR for e = 0 and LR * (1 + cos(pi * (e - 1) / MAX_EPOCH)) / 2 after that: the
cosine is shifted by the warmup epoch and never reaches 0.
"""
import math

from .errors import ConfigError

SCHEDULERS = ("single_step", "multi_step", "cosine")
WARMUPS = ("constant", "linear")


def lr_at_epoch(optim_cfg, epoch):
    """Learning rate used during 0-based `epoch` (Dassl semantics)."""
    o = optim_cfg
    base, total = float(o.LR), int(o.MAX_EPOCH)
    warm = int(o.WARMUP_EPOCH)
    if o.LR_SCHEDULER not in SCHEDULERS:
        raise ConfigError(f"OPTIM.LR_SCHEDULER {o.LR_SCHEDULER!r} is not one of {', '.join(SCHEDULERS)}")
    if warm > 0:
        if o.WARMUP_TYPE not in WARMUPS:
            raise ConfigError(f"OPTIM.WARMUP_TYPE {o.WARMUP_TYPE!r} is not one of {', '.join(WARMUPS)}")
        if epoch < warm:
            if o.WARMUP_TYPE == "constant":
                return float(o.WARMUP_CONS_LR)
            return float(o.WARMUP_MIN_LR) if epoch == 0 else base * epoch / warm
        if o.WARMUP_RECOUNT:  # the successor starts counting at 0 after warm-up
            return base * _factor(o, epoch - warm, total)
        # Without recount it starts at WARMUP_EPOCH from the base LR; torch's chainable
        # schedulers then scale relative to that start: base * f(e) / f(WARMUP_EPOCH).
        return base * _factor(o, epoch, total) / _factor(o, warm, total)
    return base * _factor(o, epoch, total)


def _factor(o, t, total):
    """The successor schedule's multiplier of the base LR at its epoch t."""
    # OPTIM.MAX_EPOCH 0 (score the untrained model) builds a schedule that never steps.
    if o.LR_SCHEDULER == "cosine":
        return 1.0 if t == 0 else 0.5 * (1.0 + math.cos(math.pi * t / total))
    if o.LR_SCHEDULER == "single_step":
        step = o.STEPSIZE[-1] if o.STEPSIZE[-1] > 0 else max(total, 1)
        return o.GAMMA ** (t // step)
    return o.GAMMA ** sum(1 for m in o.STEPSIZE if t >= m)


class EpochScheduler:
    """Sets the optimizer's LR for the current epoch; `step()` once per finished epoch."""

    def __init__(self, optimizer, optim_cfg):
        self.optimizer = optimizer
        self.cfg = optim_cfg
        self.last_epoch = 0
        self._apply()

    def _apply(self):
        lr = lr_at_epoch(self.cfg, self.last_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)

    def step(self):
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state):
        self.last_epoch = int(state["last_epoch"])
        self._apply()
