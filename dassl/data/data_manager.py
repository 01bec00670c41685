"""Dassl's DataManager and DatasetWrapper on this project's datasets and transforms.

The DataManager is this project's (dataset from the registry, few-shot subset, transforms, the
dataset summary) plus Dassl's loaders, whose batches are dicts: img, label, domain, impath,
index (and img2.., img0 as configured). The loaders follow Dassl's rules: TRAIN_X sampler and
batch size for train_loader_x, TEST ones for val_loader/test_loader, the last partial training
batch dropped only when the split holds a full batch.
"""
import threading

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchvision import transforms as T

from datasets.transforms import INTERPOLATION_MODES, read_image
from engine.data import DataManager as _EngineDataManager
from engine.data import format_table, num_workers

from .samplers import build_sampler

__all__ = ["DataManager", "DatasetWrapper", "build_data_loader"]

# The dataset the trainer has already built, offered to the DataManager that its
# build_data_loader() creates for the same config, so the dataset is not built twice.
_offered = threading.local()


def build_data_loader(cfg, sampler_type="SequentialSampler", data_source=None, batch_size=64, n_domain=0, n_ins=2,
                      tfm=None, is_train=True, dataset_wrapper=None):
    sampler = build_sampler(sampler_type, cfg=cfg, data_source=data_source, batch_size=batch_size,
                            n_domain=n_domain, n_ins=n_ins)
    wrapper = dataset_wrapper or DatasetWrapper
    loader = DataLoader(
        wrapper(cfg, data_source, transform=tfm, is_train=is_train),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers(cfg),
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=torch.cuda.is_available() and cfg.USE_CUDA,
    )
    if len(loader) == 0:
        raise ValueError(f"The data loader over {len(data_source)} items with batch size {batch_size} is empty")
    return loader


class DataManager(_EngineDataManager):
    """dataset, tfm_train / tfm_test, train_loader_x, train_loader_u (None: no unlabelled data),
    val_loader (None without a val split), test_loader, num_classes, num_source_domains,
    lab2cname, classnames."""

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None, device=None):
        offered = getattr(_offered, "dm", None)
        if offered is not None and offered.cfg is cfg:
            self.__dict__.update(offered.__dict__)
        else:
            from engine.trainer import select_device

            super().__init__(cfg, device if device is not None else select_device(cfg))
        if custom_tfm_train is not None:
            print("* Using custom transform for training")
            self.tfm_train = custom_tfm_train
        if custom_tfm_test is not None:
            print("* Using custom transform for testing")
            self.tfm_test = custom_tfm_test
        dataset = self.dataset
        x = cfg.DATALOADER.TRAIN_X
        self.train_loader_x = build_data_loader(
            cfg, sampler_type=x.SAMPLER, data_source=dataset.train_x, batch_size=x.BATCH_SIZE,
            n_domain=x.N_DOMAIN, n_ins=x.N_INS, tfm=self.tfm_train, is_train=True, dataset_wrapper=dataset_wrapper)
        self.train_loader_u = None
        if dataset.train_u:
            u = cfg.DATALOADER.TRAIN_U
            src = x if u.SAME_AS_X else u
            self.train_loader_u = build_data_loader(
                cfg, sampler_type=src.SAMPLER, data_source=dataset.train_u, batch_size=u.BATCH_SIZE,
                n_domain=src.N_DOMAIN, n_ins=src.N_INS, tfm=self.tfm_train, is_train=True,
                dataset_wrapper=dataset_wrapper)
        test = cfg.DATALOADER.TEST
        self.val_loader = None
        if dataset.val:
            self.val_loader = build_data_loader(
                cfg, sampler_type=test.SAMPLER, data_source=dataset.val, batch_size=test.BATCH_SIZE,
                tfm=self.tfm_test, is_train=False, dataset_wrapper=dataset_wrapper)
        self.test_loader = build_data_loader(
            cfg, sampler_type=test.SAMPLER, data_source=dataset.test, batch_size=test.BATCH_SIZE,
            tfm=self.tfm_test, is_train=False, dataset_wrapper=dataset_wrapper)
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)

    @classmethod
    def offering(cls, dm):
        """Context in which a DataManager for `dm.cfg` reuses `dm`'s dataset and transforms."""
        return _Offer(dm)

    @property
    def num_source_domains(self):
        return self._num_source_domains

    def show_dataset_summary(self, cfg):
        rows = [("Dataset", cfg.DATASET.NAME), ("# classes", f"{self.num_classes:,}"),
                ("# train_x", f"{len(self.dataset.train_x):,}")]
        if self.dataset.train_u:
            rows.append(("# train_u", f"{len(self.dataset.train_u):,}"))
        if self.dataset.val:
            rows.append(("# val", f"{len(self.dataset.val):,}"))
        rows.append(("# test", f"{len(self.dataset.test):,}"))
        print(format_table(rows))


class _Offer:
    def __init__(self, dm):
        self.dm = dm

    def __enter__(self):
        self.previous = getattr(_offered, "dm", None)
        _offered.dm = self.dm

    def __exit__(self, *exc):
        _offered.dm = self.previous


class DatasetWrapper(TorchDataset):
    """Items as Dassl's dicts. A list of transforms gives img, img2, img3 ...; with
    DATALOADER.K_TRANSFORMS = K > 1 (training only) each is a list of K augmented views;
    DATALOADER.RETURN_IMG0 adds img0, the image resized to INPUT.SIZE (normalized when
    "normalize" is among INPUT.TRANSFORMS)."""

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0
        if self.k_tfm > 1 and transform is None:
            raise ValueError(f"Cannot augment the image {self.k_tfm} times because transform is None")
        steps = [T.Resize(cfg.INPUT.SIZE, interpolation=INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]), T.ToTensor()]
        if "normalize" in cfg.INPUT.TRANSFORMS:
            steps.append(T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        self.to_tensor = T.Compose(steps)

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, idx):
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        img0 = read_image(item.impath)
        if self.transform is None:
            output["img"] = img0
        elif isinstance(self.transform, (list, tuple)):
            for i, tfm in enumerate(self.transform):
                output["img" if i == 0 else f"img{i + 1}"] = self._transform_image(tfm, img0)
        else:
            output["img"] = self._transform_image(self.transform, img0)
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, tfm, img0):
        views = [tfm(img0) for _ in range(self.k_tfm)]
        return views[0] if len(views) == 1 else views
