"""Training counted in iterations rather than epochs (CLIP-LoRA trains 500 x K iterations).

`IterationBudget` wraps a pixel source: every epoch is one pass of a shuffled loader over the
few-shot images that keeps its last partial batch (torch's DataLoader with drop_last False, as
the reference loops over its loader), and the run stops after `total` iterations, partway through
its last epoch. An epoch's batches depend only on the random state at its start, so a run resumed
from an epoch's checkpoint (which restores that state) continues exactly.

`IterationCosine` is the learning rate of iteration t in closed form, as torch's
CosineAnnealingLR(T_max = total, eta_min) gives it when stepped once per iteration:
eta_min + (lr - eta_min) (1 + cos(pi t / total)) / 2.
"""
import math

from torch.utils.data import DataLoader

from engine.data import ImageDataset, num_workers


class IterationBudget:
    """A source (train_batches, num_train_batches, eval_batches) training `total` iterations."""

    def __init__(self, source, dm, cfg, device, total, epoch_of):
        self.inner, self.dm, self.cfg, self.device = source, dm, cfg, device
        self.batch_size = int(cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
        self.per_epoch = math.ceil(len(dm.dataset.train_x) / self.batch_size)
        self.total = int(total)
        self.epoch_of = epoch_of  # () -> the trainer's current 0-based epoch

    @property
    def epochs(self):
        return math.ceil(self.total / self.per_epoch) if self.total > 0 else 0

    def first_iteration(self, epoch):
        return epoch * self.per_epoch

    def num_train_batches(self):
        return max(0, min(self.per_epoch, self.total - self.first_iteration(self.epoch_of())))

    def train_batches(self):
        loader = DataLoader(ImageDataset(self.dm.dataset.train_x, self.dm.tfm_train), batch_size=self.batch_size,
                            shuffle=True, drop_last=False, num_workers=num_workers(self.cfg),
                            pin_memory=self.device.type == "cuda")
        left = self.num_train_batches()
        if left <= 0:
            return
        for i, (images, labels, _) in enumerate(loader):
            yield images.to(self.device, non_blocking=True), labels.to(self.device)
            if i + 1 == left:
                break

    def eval_batches(self, split):
        return self.inner.eval_batches(split)

    def stats(self):
        return self.inner.stats()


class IterationCosine:
    """Sets the optimizer's LR for an iteration (`at(t)`); the engine's per-epoch `step()` does
    nothing, and it has no state of its own (the iteration follows from the epoch)."""

    def __init__(self, optimizer, base_lr, total, eta_min):
        self.optimizer, self.base, self.total, self.eta_min = optimizer, float(base_lr), int(total), float(eta_min)
        self.at(0)

    def lr(self, t):
        if self.total <= 0:
            return self.base
        return self.eta_min + (self.base - self.eta_min) * (1 + math.cos(math.pi * t / self.total)) / 2

    def at(self, t):
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(t)

    def step(self):
        pass

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass
