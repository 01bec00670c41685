"""Dassl's `build_lr_scheduler`, as a scheduler whose state is one number.

Dassl wraps a torch scheduler (StepLR, MultiStepLR or CosineAnnealingLR over MAX_EPOCH) in a
warm-up scheduler and steps it once per epoch (trainer files call `self.update_lr()` after their
last batch). Its state dict pickles the wrapped scheduler and the optimizer, which breaks
`torch.load(weights_only=True)` and, in the cosine phase, resuming. The learning rates it
produces have a closed form in the number of steps taken, computed here per parameter group
(base LR = the group's `initial_lr`):

  * warm-up epochs e < W (OPTIM.WARMUP_EPOCH): constant -> WARMUP_CONS_LR; linear ->
    WARMUP_MIN_LR at e = 0, base * e / W after;
  * then, with WARMUP_RECOUNT (the default) the successor counts t = e - W from 0:
    cosine base * (1 + cos(pi * t / MAX_EPOCH)) / 2, single_step base * GAMMA ** (t // STEPSIZE),
    multi_step base * GAMMA ** (number of milestones <= t);
  * without WARMUP_RECOUNT, Dassl sets the successor's counter to W before wrapping it, and the
    torch schedulers then compute each LR from the previous one: the rate is the base at e = W
    and follows s(e) / s(W) after it, s being the schedule above with t = e (for cosine:
    base * (1 + cos(pi * e / T)) / (1 + cos(pi * W / T)), not the cosine itself).

For the CoOp recipe (SGD, LR 0.002, cosine, 1 constant warm-up epoch at 1e-5) epoch 1 runs at
1e-5 and epoch k >= 2 at 0.001 * (1 + cos(pi * (k - 2) / MAX_EPOCH)).
"""
import math

from engine.errors import ConfigError, UserError

AVAI_SCHEDS = ["single_step", "multi_step", "cosine"]
AVAI_WARMUPS = ["constant", "linear"]


class EpochLRScheduler:
    """Sets each param group's LR for the current epoch; `step()` once per finished epoch.

    state_dict() is {"last_epoch": steps taken}; the rest comes from the config."""

    def __init__(self, optimizer, optim_cfg):
        o = optim_cfg
        if o.LR_SCHEDULER not in AVAI_SCHEDS:
            raise ConfigError(f"OPTIM.LR_SCHEDULER must be one of {AVAI_SCHEDS}, but got {o.LR_SCHEDULER!r}")
        self.stepsize = o.STEPSIZE
        if o.LR_SCHEDULER == "single_step":
            step = o.STEPSIZE[-1] if isinstance(o.STEPSIZE, (list, tuple)) else o.STEPSIZE
            if not isinstance(step, int):
                raise ConfigError(f"For single_step lr_scheduler, stepsize must be an integer, but got {step!r}")
            self.stepsize = int(o.MAX_EPOCH) if step <= 0 else step
        elif o.LR_SCHEDULER == "multi_step":
            if not isinstance(o.STEPSIZE, (list, tuple)):
                raise ConfigError(f"For multi_step lr_scheduler, stepsize must be a list, but got {o.STEPSIZE!r}")
            self.stepsize = sorted(int(m) for m in o.STEPSIZE)
        self.warmup_epoch = int(o.WARMUP_EPOCH) if int(o.WARMUP_EPOCH) > 0 else 0
        if self.warmup_epoch and o.WARMUP_TYPE not in AVAI_WARMUPS:
            raise ConfigError(f"OPTIM.WARMUP_TYPE must be one of {AVAI_WARMUPS}, but got {o.WARMUP_TYPE!r}")
        self.kind = o.LR_SCHEDULER
        self.max_epoch = float(o.MAX_EPOCH)
        self.gamma = float(o.GAMMA)
        self.warmup_type = o.WARMUP_TYPE
        self.cons_lr = float(o.WARMUP_CONS_LR)
        self.min_lr = float(o.WARMUP_MIN_LR)
        self.recount = bool(o.WARMUP_RECOUNT)
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def _factor(self, t):
        """The successor schedule's multiplier of the base LR after t of its own steps."""
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t / self.max_epoch))
        if self.kind == "single_step":
            return self.gamma ** (t // self.stepsize)
        return self.gamma ** sum(1 for m in self.stepsize if m <= t)

    def lr_at(self, base, epoch):
        """LR of a group with base LR `base` during 0-based `epoch`."""
        w = self.warmup_epoch
        if epoch < w:
            if self.warmup_type == "constant":
                return self.cons_lr
            return self.min_lr if epoch == 0 else base * epoch / w
        if w and not self.recount:
            at_w = self._factor(w)
            return base * self._factor(epoch) / at_w if at_w else 0.0
        return base * self._factor(epoch - w)

    def _apply(self):
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(base, self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def step(self, epoch=None):
        self.last_epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        self._apply()

    def get_last_lr(self):
        return list(self._last_lr)

    def get_lr(self):
        return [self.lr_at(base, self.last_epoch) for base in self.base_lrs]

    def state_dict(self):
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict):
        if "last_epoch" not in state_dict or "successor" in state_dict:
            raise UserError("This scheduler state was written by Dassl's own warm-up scheduler; it cannot be "
                            "resumed here. Start the run in a new output folder (the weights can still be "
                            "loaded for evaluation).")
        self.last_epoch = int(state_dict["last_epoch"])
        self._apply()


def build_lr_scheduler(optimizer, optim_cfg):
    """The LR schedule of OPTIM (LR_SCHEDULER, STEPSIZE, GAMMA, MAX_EPOCH and the WARMUP_* keys)."""
    return EpochLRScheduler(optimizer, optim_cfg)
