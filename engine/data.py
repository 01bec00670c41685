"""DataManager: dataset from the registry, transforms, loaders (Dassl's rules).

The training loader drops its last partial batch only when the split holds at least one full
batch, so a few-shot set smaller than the batch (EuroSAT 1-shot: 10 images) trains on one
partial batch per epoch, as in the reference.
"""
import os
from collections import Counter

from torch.utils.data import DataLoader, Dataset

from datasets import build_dataset
from datasets.transforms import build_transform, read_image

from .image_check import check_images


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
        self.on_read = None  # called with a split's name whenever its images are read (Trainer notes it)
        self.num_classes = dataset.num_classes
        self.lab2cname = dataset.lab2cname
        self.classnames = dataset.classnames
        if not dataset.train_x and not dataset.test:
            from .errors import DatasetError
            raise DatasetError(f"Dataset {cfg.DATASET.NAME} has no images in its train and test splits")
        self.shot_counts = self._check_shots(cfg)
        items = list(dataset.train_x) + list(dataset.val or []) + list(dataset.test)
        check_images([d.impath for d in items], key=f"{cfg.DATASET.NAME}|{cfg.DATASET.ROOT}")
        if cfg.VERBOSE:
            rows = [("Dataset", cfg.DATASET.NAME), ("# classes", f"{self.num_classes:,}"),
                    ("# train_x", f"{len(dataset.train_x):,}")]
            if dataset.val:
                rows.append(("# val", f"{len(dataset.val):,}"))
            rows.append(("# test", f"{len(dataset.test):,}"))
            print(format_table(rows))

    def _check_shots(self, cfg):
        """Images per class in the few-shot training set; a class with fewer images than
        NUM_SHOTS keeps all it has (as CoOp does), which is said here and recorded."""
        k = int(cfg.DATASET.NUM_SHOTS)
        counts = Counter(d.label for d in self.dataset.train_x)
        if k < 1 or not counts:
            return None
        short = {self.lab2cname.get(label, str(label)): n for label, n in sorted(counts.items()) if n < k}
        if short:
            print(f"Warning: {len(short)} of {len(counts)} classes have fewer than {k} training images and use "
                  f"all they have: " + ", ".join(f"{name} ({n})" for name, n in list(short.items())[:10])
                  + (" ..." if len(short) > 10 else ""))
        return {"requested": k, "min": min(counts.values()), "max": max(counts.values()),
                "classes_with_fewer": len(short)}

    def set_cfg(self, cfg):
        """Rebuild the transforms for a changed INPUT config (e.g. the backbone's resolution)."""
        self.cfg = cfg
        self.tfm_train = build_transform(cfg, is_train=True)
        self.tfm_test = build_transform(cfg, is_train=False)

    def selection_tier(self, split):
        """The selection tier (engine.selection) of a choice made on `split`: the few-shot training
        images and a validation split sampled at few shots are "fewshot-val", a whole validation
        split "full-val", test images "test" (so is ImageNet's val, which is its test set, unless
        DATASET.VAL_FROM_TRAIN carves a few-shot val from its training images)."""
        val = self.dataset.val
        if split == "test" or (split == "val" and val and val is self.dataset.test):
            return "test"
        if split == "val" and int(self.cfg.DATASET.NUM_SHOTS) < 1:
            return "full-val"
        if split in ("train", "val"):
            return "fewshot-val"
        raise ValueError(f"unknown split {split!r}")

    def split(self, name):
        return {"train": self.dataset.train_x, "val": self.dataset.val or [], "test": self.dataset.test}[name]

    def read(self, name):
        """The items of split `name` for encoding or evaluation: every read of images by a feature
        source goes through here, so that the run can note what it looked at (on_read)."""
        if self.on_read is not None:
            self.on_read(name)
        return self.split(name)

    def train_loader(self):
        return make_loader(self.dataset.train_x, self.tfm_train, self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
                           train=True, cfg=self.cfg, device=self.device)

    def eval_loader(self, split):
        return make_loader(self.read(split), self.tfm_test, self.cfg.DATALOADER.TEST.BATCH_SIZE,
                           train=False, cfg=self.cfg, device=self.device)
