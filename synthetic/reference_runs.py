"""Run folders and checkpoints as the reference Dassl-based code (TaskRes, CoOp) writes them.

Users bring outputs of the reference code: `--eval-only --model-dir <reference run>`, resuming,
parse_test_res.py and the analysis tools must read them. Dassl's `save_model` writes
`{"state_dict", "epoch", "optimizer", "scheduler", "val_result"}` with torch.save, where
"scheduler" is the warm-up scheduler's `state_dict()`: a dict that keeps the wrapped torch
scheduler *object* and, through it, a pickled copy of the optimizer object. Dassl itself is not
installed here, so its warm-up classes are re-created as stand-ins, importable as
`dassl.optim.lr_scheduler` only while a checkpoint is being saved.
"""
import contextlib
import math
import os
import sys
import types

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

DASSL_SCHEDULER_MODULE = "dassl.optim.lr_scheduler"


def _warmup_classes():
    """Dassl's warm-up schedulers, with its attribute names and rules. (Dassl passes `verbose` to
    LRScheduler, which torch >= 2.7 no longer accepts; the stand-ins leave it out.)"""

    class _BaseWarmupScheduler(LRScheduler):
        def __init__(self, optimizer, successor, warmup_epoch, last_epoch=-1):
            self.successor = successor
            self.warmup_epoch = warmup_epoch
            super().__init__(optimizer, last_epoch)

        def step(self, epoch=None):
            if self.last_epoch >= self.warmup_epoch:
                self.successor.step(epoch)
                self._last_lr = self.successor.get_last_lr()
            else:
                super().step(epoch)

    class ConstantWarmupScheduler(_BaseWarmupScheduler):
        def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1):
            self.cons_lr = cons_lr
            super().__init__(optimizer, successor, warmup_epoch, last_epoch)

        def get_lr(self):
            if self.last_epoch >= self.warmup_epoch:
                return self.successor.get_last_lr()
            return [self.cons_lr for _ in self.base_lrs]

    class LinearWarmupScheduler(_BaseWarmupScheduler):
        def __init__(self, optimizer, successor, warmup_epoch, min_lr, last_epoch=-1):
            self.min_lr = min_lr
            super().__init__(optimizer, successor, warmup_epoch, last_epoch)

        def get_lr(self):
            if self.last_epoch >= self.warmup_epoch:
                return self.successor.get_last_lr()
            if self.last_epoch == 0:
                return [self.min_lr for _ in self.base_lrs]
            return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]

    return _BaseWarmupScheduler, ConstantWarmupScheduler, LinearWarmupScheduler


@contextlib.contextmanager
def dassl_stand_ins():
    """A module `dassl.optim.lr_scheduler` holding the stand-in classes, in sys.modules only
    inside the block (so pickle records the real Dassl names, and nothing leaks into other
    tests; modules of those names imported before are put back). Yields the module."""
    names = ("dassl", "dassl.optim", DASSL_SCHEDULER_MODULE)
    before = {n: sys.modules[n] for n in names if n in sys.modules}
    modules = {n: types.ModuleType(n) for n in names}
    module = modules[DASSL_SCHEDULER_MODULE]
    for cls in _warmup_classes():
        cls.__module__ = module.__name__
        cls.__qualname__ = cls.__name__
        setattr(module, cls.__name__, cls)
    modules["dassl"].optim = modules["dassl.optim"]
    modules["dassl.optim"].lr_scheduler = module
    sys.modules.update(modules)
    try:
        yield module
    finally:
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(before)


def dassl_checkpoint(state_dict, epoch, trainable=None, lr=2e-3, max_epoch=None, warmup="constant",
                     warmup_lr=1e-5, weight_decay=5e-4, scheduler_object=False, val_result=None):
    """The dict Dassl's save_model passes to torch.save after `epoch` epochs of training.

    trainable: key of `state_dict` the optimizer trained (default: the last key); Adam with
    TaskRes's settings, a cosine schedule over `max_epoch` (default `epoch`) wrapped in Dassl's
    constant or linear warm-up (1 epoch). scheduler_object=True stores the scheduler object
    itself rather than its state_dict(), as some forks do. Call inside `dassl_stand_ins()`.
    """
    module = sys.modules.get(DASSL_SCHEDULER_MODULE)
    if module is None:
        raise RuntimeError("dassl_checkpoint needs the `dassl_stand_ins()` context")
    trainable = trainable or list(state_dict)[-1]
    param = torch.nn.Parameter(state_dict[trainable].detach().clone().float())
    optim = torch.optim.Adam([param], lr=lr, weight_decay=weight_decay)
    cosine = CosineAnnealingLR(optim, float(max_epoch or epoch))
    if warmup == "constant":
        sched = module.ConstantWarmupScheduler(optim, cosine, 1, warmup_lr)
    elif warmup == "linear":
        sched = module.LinearWarmupScheduler(optim, cosine, 1, warmup_lr)
    else:
        raise ValueError(f"warmup must be 'constant' or 'linear', not {warmup!r}")
    gen = torch.Generator().manual_seed(0)
    for _ in range(epoch):  # one step per epoch, as Dassl's update_lr does
        param.grad = 1e-3 * torch.randn(param.shape, generator=gen)
        optim.step()
        sched.step()
    with torch.no_grad():  # the saved tensor is the trained parameter, as in Dassl
        param.copy_(state_dict[trainable])
    saved = {k: (param.detach() if k == trainable else v) for k, v in state_dict.items()}
    return {"state_dict": saved, "epoch": epoch, "optimizer": optim.state_dict(),
            "scheduler": sched if scheduler_object else sched.state_dict(),
            "val_result": val_result}


def save_dassl_checkpoint(path, state_dict, epoch, **kwargs):
    """torch.save of `dassl_checkpoint(...)` at `path` (folders created). Returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with dassl_stand_ins():
        torch.save(dassl_checkpoint(state_dict, epoch, **kwargs), path)
    return str(path)


_LOG = """\
Setting fixed seed: {seed}
***************
** Arguments **
***************
backbone: 
config_file: configs/trainers/TaskRes/{config}.yaml
dataset_config_file: configs/datasets/{dataset_file}.yaml
enhanced_base: none
eval_only: False
head: 
load_epoch: None
model_dir: 
no_train: False
opts: ['DATASET.NUM_SHOTS', '{shots}', 'TRAINER.TaskRes.RESIDUAL_SCALE', '{scale}']
output_dir: {out}
resume: 
root: /data0/dataset
seed: {seed}
source_domains: None
target_domains: None
trainer: TaskRes
transforms: None
Loading trainer: TaskRes
Loading dataset: {dataset}
Loading CLIP (backbone: {backbone})
Building custom CLIP
>> Use regular base!
>> DCT scale factor:  {scale}
Turning off gradients in both the image and the text encoder
prompt_learner.text_feature_residuals
Loading evaluator: Classification
Initialize tensorboard (log_dir={out}/tensorboard)
epoch [1/{epochs}] batch [1/1] time 0.512 (0.512) data 0.301 (0.301) loss 1.4019 (1.4019) acc 61.2500 (61.2500) lr 1.0000e-05 eta 0:01:42
epoch [{epochs}/{epochs}] batch [1/1] time 0.090 (0.091) data 0.000 (0.001) loss 0.3010 (0.2987) acc 93.7500 (94.1000) lr {last_lr:.4e} eta 0:00:00
Checkpoint saved to {out}/prompt_learner/model.pth.tar-{epochs}
Finish training
Deploy the last-epoch model
Evaluate on the *test* set
=> result
* total: {total:,}
* correct: {correct:,}
* accuracy: {acc:.1f}%
* error: {err:.1f}%
* macro_f1: {f1:.1f}%
Elapsed: 0:01:51
"""


def make_taskres_reference_run(output_dir, base, residuals, accuracy=80.0, epochs=200, *,
                               dataset="EuroSAT", dataset_file="eurosat", backbone="RN50",
                               shots=16, seed=1, scale=0.5, total=1000, lr=2e-3):
    """A finished reference TaskRes training run in `output_dir`:
      log.txt                         the reference log, result block with `* accuracy: X%`;
      prompt_learner/model.pth.tar-N  Dassl's checkpoint (pickled scheduler, see above), with
                                      state_dict {'base_text_features': base [K, D],
                                      'text_feature_residuals': residuals [K, D]};
      prompt_learner/checkpoint       the name of that file.
    Returns the checkpoint path.
    """
    if base.shape != residuals.shape or base.dim() != 2:
        raise ValueError(f"base and residuals must both be [K, D], got {tuple(base.shape)} and "
                         f"{tuple(residuals.shape)}")
    folder = os.path.join(output_dir, "prompt_learner")
    filename = f"model.pth.tar-{epochs}"
    path = save_dassl_checkpoint(
        os.path.join(folder, filename),
        {"base_text_features": base.float(), "text_feature_residuals": residuals.float()},
        epochs, lr=lr)
    with open(os.path.join(folder, "checkpoint"), "w") as f:
        f.write(filename + "\n")
    config = f"adam_lr{lr:.0e}_B256_ep{epochs}".replace("e-0", "e-")
    correct = round(accuracy * total / 100)
    acc = 100.0 * correct / total
    # The warm-up schedule's last lr: cosine shifted by one epoch (it never reaches 0).
    last_lr = lr * 0.5 * (1 + math.cos(math.pi * (epochs - 2) / epochs)) if epochs > 1 else 1e-5
    with open(os.path.join(output_dir, "log.txt"), "w") as f:
        f.write(_LOG.format(seed=seed, config=config, dataset_file=dataset_file, dataset=dataset,
                            shots=shots, scale=scale, out=output_dir, backbone=backbone,
                            epochs=epochs, last_lr=last_lr, total=total, correct=correct,
                            acc=acc, err=100 - acc, f1=max(acc - 0.5, 0.0)))
    return path
