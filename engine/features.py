"""Where a trainer's inputs come from (DESIGN.md, "How data flows").

Trainers that need no gradient through the image encoder consume features; the source decides
how they are produced (FEATURES.MODE). Pixel trainers (mask tuning) get augmented images.
A source has three methods, so trainer files never change between modes:

    train_batches()      -> iterator of (inputs, labels) for one epoch
    num_train_batches()  -> batches per epoch
    eval_batches(split)  -> iterator of (inputs, labels) over a deterministic split

`online` is the reference: every batch is augmented afresh and encoded under no_grad.
`cached`: V augmented views per training image and the center-crop features of val/test are
encoded once into the FeatureStore and reused by every run with the same backbone weights;
each epoch draws one view per image. Shuffling follows the same rules as the online loader
(global RNG, drop_last only when the split holds a full batch).
"""
import hashlib

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from datasets.transforms import describe_transform, read_image

from .data import num_workers
from .feature_store import Namespace, default_root, image_key


class OnlineSource:
    def __init__(self, dm, encode=None, device="cpu"):
        self.dm = dm
        self.encode = encode  # None -> pixels
        self.device = torch.device(device)

    def _inputs(self, images):
        images = images.to(self.device, non_blocking=True)
        if self.encode is None:
            return images
        with torch.no_grad():
            return self.encode(images)

    def train_batches(self):
        for images, labels, _ in self.dm.train_loader():
            yield self._inputs(images), labels.to(self.device)

    def num_train_batches(self):
        return len(self.dm.train_loader())

    def eval_batches(self, split):
        loader = self.dm.eval_loader(split)
        for images, labels, _ in tqdm(loader, desc=f"Evaluate {split}", unit="batch", leave=False):
            yield self._inputs(images), labels.to(self.device)


class _SeededViews(Dataset):
    """(image, view) pairs; each pair is augmented with its own seed, so a view is the same
    image tensor in every process and every run, without touching the caller's RNG."""

    def __init__(self, pairs, transform, seeded):
        self.pairs, self.transform, self.seeded = pairs, transform, seeded

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        path, view = self.pairs[i]
        img = read_image(path)
        if not self.seeded:
            return self.transform(img)
        seed = int.from_bytes(hashlib.sha256(f"{path}|{view}".encode()).digest()[:8], "little") >> 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(img)


class CachedSource:
    def __init__(self, cfg, dm, encode, device, backbone_id, encoder_tag):
        self.cfg, self.dm, self.encode = cfg, dm, encode
        self.device = torch.device(device)
        self.views = int(cfg.FEATURES.NUM_VIEWS)
        root = cfg.FEATURES.CACHE_DIR or default_root()
        self._ns = {}
        self._ns_args = (root, f"{backbone_id}|{encoder_tag}")
        self.train_labels = torch.tensor([d.label for d in dm.dataset.train_x], device=self.device)
        self._train_feats = None  # encoded on first use: eval-only runs never need them
        self._eval = {}

    @property
    def train_feats(self):
        if self._train_feats is None:
            self._train_feats = self._features(self.dm.dataset.train_x, range(self.views), train=True).to(self.device)
        return self._train_feats

    def _namespace(self, train, dim):
        key = (train, dim)
        if key not in self._ns:
            tfm = describe_transform(self.cfg, is_train=train)
            self._ns[key] = shared_namespace(*self._ns_args, tfm, dim)
        return self._ns[key]

    def _features(self, items, views, train):
        """[len(items), len(views), D] (train) or [len(items), D] (eval), fp16 on the CPU."""
        views = list(views)
        pairs = [(d.impath, v) for d in items for v in views]
        keys = [image_key(p, v) for p, v in pairs]
        ns = self._namespace(train, self._dim())
        ns.refresh()
        todo = set(ns.missing(keys))
        if todo:
            todo_pairs = [pv for pv, k in zip(pairs, keys) if k in todo]
            self._encode_into(ns, todo_pairs, train)
        feats = ns.get(keys)
        return feats.view(len(items), len(views), -1) if train else feats

    def _dim(self):
        if not hasattr(self, "_d"):
            size = tuple(self.cfg.INPUT.SIZE)
            with torch.no_grad():
                self._d = self.encode(torch.zeros(1, 3, size[0], size[-1], device=self.device)).shape[-1]
        return self._d

    def _encode_into(self, ns, pairs, train):
        tfm = self.dm.tfm_train if train else self.dm.tfm_test
        loader = DataLoader(_SeededViews(pairs, tfm, seeded=train), batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE,
                            num_workers=num_workers(self.cfg), pin_memory=self.device.type == "cuda")
        what = f"{len(pairs):,} {'augmented views' if train else 'images'}"
        done, keys, feats = 0, [], []
        bar = tqdm(loader, desc=f"Encoding {what}", unit="batch")
        for images in bar:
            with torch.no_grad():
                out = self.encode(images.to(self.device, non_blocking=True))
            batch = pairs[done:done + len(out)]
            keys += [image_key(p, v) for p, v in batch]
            feats.append(out)
            done += len(out)
            bar.set_postfix(img_s=f"{done / max(bar.format_dict['elapsed'], 1e-6):.0f}")
            if len(keys) >= 8192:  # flush so an interrupted fill keeps what it encoded
                ns.add(keys, torch.cat(feats))
                keys, feats = [], []
        if keys:
            ns.add(keys, torch.cat(feats))

    def train_batches(self):
        n = len(self.train_labels)
        bs = int(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
        perm = torch.randperm(n).to(self.device)
        view = torch.randint(self.views, (n,)).to(self.device)
        drop_last = n >= bs
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            if drop_last and len(idx) < bs:
                break
            yield self.train_feats[idx, view[idx]].float(), self.train_labels[idx]

    def num_train_batches(self):
        n, bs = len(self.train_labels), int(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
        return n // bs if n >= bs else 1

    def eval_batches(self, split):
        if split not in self._eval:
            items = self.dm.split(split)
            feats = self._features(items, [0], train=False).to(self.device)
            labels = torch.tensor([d.label for d in items], device=self.device)
            self._eval[split] = (feats, labels)
        feats, labels = self._eval[split]
        bs = int(self.cfg.DATALOADER.TEST.BATCH_SIZE)
        for i in range(0, len(labels), bs):
            yield feats[i:i + bs].float(), labels[i:i + bs]


_NAMESPACES = {}


def shared_namespace(root, backbone_id, transform_id, dim):
    """One in-memory index per namespace per process, so runs in one process share features."""
    key = (root, backbone_id, transform_id, dim)
    if key not in _NAMESPACES:
        _NAMESPACES[key] = Namespace(root, backbone_id, transform_id, dim)
    return _NAMESPACES[key]


def build_source(cfg, dm, encode, device, backbone_id="", encoder_tag=""):
    if cfg.FEATURES.MODE == "cached" and encode is not None:
        return CachedSource(cfg, dm, encode, device, backbone_id, encoder_tag)
    return OnlineSource(dm, encode, device)
