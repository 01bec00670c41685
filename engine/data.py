"""DataManager: dataset from the registry, transforms, loaders (Dassl's rules).

The training loader drops its last partial batch only when the split holds at least one full
batch, so a few-shot set smaller than the batch (EuroSAT 1-shot: 10 images) trains on one
partial batch per epoch, as in the reference.
"""
import os

import torch
from torch.utils.data import DataLoader, Dataset

from datasets import build_dataset
from datasets.transforms import build_transform, read_image


class ImageDataset(Dataset):
    def __init__(self, items, transform):
        self.items = items
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        d = self.items[i]
        return self.transform(read_image(d.impath)), d.label, i


def num_workers(cfg):
    return max(0, min(int(cfg.DATALOADER.NUM_WORKERS), os.cpu_count() or 1))


def make_loader(items, transform, batch_size, *, train, cfg, device):
    return DataLoader(
        ImageDataset(items, transform),
        batch_size=batch_size,
        shuffle=train,
        num_workers=num_workers(cfg),
        drop_last=train and len(items) >= batch_size,
        pin_memory=device.type == "cuda",
    )


def format_table(rows):
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


class DataManager:
    def __init__(self, cfg, device):
        self.cfg = cfg
        self.dataset = dataset = build_dataset(cfg)
        self.tfm_train = build_transform(cfg, is_train=True)
        self.tfm_test = build_transform(cfg, is_train=False)
        self.device = device
        self.num_classes = dataset.num_classes
        self.lab2cname = dataset.lab2cname
        self.classnames = dataset.classnames
        if not dataset.train_x and not dataset.test:
            from .errors import DatasetError
            raise DatasetError(f"Dataset {cfg.DATASET.NAME} has no images in its train and test splits")
        if cfg.VERBOSE:
            rows = [("Dataset", cfg.DATASET.NAME), ("# classes", f"{self.num_classes:,}"),
                    ("# train_x", f"{len(dataset.train_x):,}")]
            if dataset.val:
                rows.append(("# val", f"{len(dataset.val):,}"))
            rows.append(("# test", f"{len(dataset.test):,}"))
            print(format_table(rows))

    def set_cfg(self, cfg):
        """Rebuild the transforms for a changed INPUT config (e.g. the backbone's resolution)."""
        self.cfg = cfg
        self.tfm_train = build_transform(cfg, is_train=True)
        self.tfm_test = build_transform(cfg, is_train=False)

    def split(self, name):
        return {"train": self.dataset.train_x, "val": self.dataset.val or [], "test": self.dataset.test}[name]

    def train_loader(self):
        return make_loader(self.dataset.train_x, self.tfm_train, self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
                           train=True, cfg=self.cfg, device=self.device)

    def eval_loader(self, split):
        return make_loader(self.split(split), self.tfm_test, self.cfg.DATALOADER.TEST.BATCH_SIZE,
                           train=False, cfg=self.cfg, device=self.device)
