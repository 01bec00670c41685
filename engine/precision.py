"""Precision of a method (TRAINER.<X>.PREC) and the optimizer step under it.

fp16: half encoders on CUDA; fp32: fp32 encoders; amp: autocast around every forward, and on
CUDA a GradScaler around every step. Trainable parameters stay fp32 in all three.

`GradientSteps` is the trainer's optimizer step: gradient accumulation over
TRAIN.GRAD_ACCUM_STEPS micro-batches, the loss scale, and (for methods that compute their
gradients themselves) the unscaled gradients a gradient rule sees between backward and step.
"""
import contextlib

import torch

from .errors import ConfigError

PRECISIONS = ("fp16", "fp32", "amp")


def method_precision(cfg, cfg_node):
    """TRAINER.<cfg_node>.PREC (fp16 when the method has no node or no PREC)."""
    node = cfg.TRAINER.get(cfg_node) if cfg_node else None
    prec = node.get("PREC", "fp16") if node is not None else "fp16"
    if prec not in PRECISIONS:
        raise ConfigError(f"TRAINER.{cfg_node}.PREC must be one of {', '.join(PRECISIONS)}, got {prec!r}")
    return prec


def effective_precision(prec, dtypes):
    """What a run under PREC `prec` ran at, given its encoders' dtypes (name -> torch dtype):
    fp16 off CUDA loads fp32 encoders, so it ran at fp32 there."""
    if prec == "amp":
        return prec
    return "fp16" if torch.float16 in dtypes.values() else "fp32"


def autocast(prec, device):
    """autocast under PREC amp (fp16 on CUDA, bf16 on the CPU, where fp16 autocast is not
    supported), else nothing."""
    if prec != "amp":
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(prec, device):
    """A GradScaler under PREC amp on CUDA (bf16 on other devices needs none), else None."""
    if prec == "amp" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def loss_scale(scaler, device):
    """The scaler's current scale (1.0 without one). Read through `scaler.scale`, which also
    starts the scaler for methods that never scale a loss themselves."""
    if scaler is None:
        return 1.0
    return float(scaler.scale(torch.ones((), device=device)))


class GradientSteps:
    """One optimizer step per `steps` micro-batches (and at the epoch's last batch).

    Gradients come either from `backward(loss)` (into `.grad`) or from the method itself
    (`add(grads)`: [(param, gradient, *companions)], summed over the micro-batches). Both are
    in the loss-scaled domain; `step(optims, scaler, rule)` unscales them for `rule`.
    """

    def __init__(self, steps):
        self.steps = max(1, int(steps))
        self.count = 0
        self.pending = None  # the method's own gradients summed so far

    def backward(self, loss, optims, scaler):
        if self.count == 0:
            for o in optims:
                o.zero_grad(set_to_none=True)
        if self.steps > 1:
            loss = loss / self.steps
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()

    def add(self, grads):
        if self.steps > 1:
            grads = [(p, *[g / self.steps for g in gs]) for p, *gs in grads]
        if self.pending is None:
            self.pending = [list(entry) for entry in grads]
            return
        for acc, (_, *gs) in zip(self.pending, grads):
            for a, g in zip(acc[1:], gs):
                a.add_(g)

    def due(self, last_batch):
        """Counts one micro-batch; True when it completes a step."""
        self.count += 1
        if self.count < self.steps and not last_batch:
            return False
        self.count = 0
        return True

    @torch.no_grad()
    def step(self, optims, scaler, rule=None):
        """Step `optims` on the accumulated gradients. Under the GradScaler a step whose
        gradients overflowed is skipped and the scale adapts."""
        pending, self.pending = self.pending, None
        if pending is not None:
            self._assign(pending, optims, scaler, rule)
        for o in optims:
            if scaler is not None:
                scaler.step(o)  # unscales (unless done above); skips on inf/NaN
            else:
                o.step()
        if scaler is not None:
            scaler.update()
        if pending is not None:
            for o in optims:
                o.zero_grad(set_to_none=True)

    @staticmethod
    def _assign(pending, optims, scaler, rule):
        for p, g, *_ in pending:
            p.grad = g
        if rule is not None and scaler is not None:
            # The scale is a power of two, so unscaling first changes no bit of what the rule
            # computes on the scaled values; scaler.step then does not unscale again.
            inv = 1.0 / loss_scale(scaler, pending[0][1].device)
            for o in optims:
                scaler.unscale_(o)
            for entry in pending:
                entry[2:] = [c * inv for c in entry[2:]]
        if rule is not None:
            for p, _, *companions in pending:
                p.grad = rule(p.grad, *companions)
        if scaler is None and not all(torch.isfinite(p.grad).all() for p, *_ in pending):
            raise FloatingPointError("Gradients are infinite or NaN!")
