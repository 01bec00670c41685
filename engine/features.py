"""Where a trainer's inputs come from: image features for most methods, pixels for mask tuning.

Trainers that need no gradient through the image encoder consume features; the source decides
how they are produced (FEATURES.MODE). Pixel trainers (mask tuning) get augmented images:
fresh ones every batch (the reference), or with `Trainer.pixel_views()` > 0 seeded views that
name their (image, view), so a view's zero-shot features can come from the store.
A source has three methods, so trainer files never change between modes:

    train_batches()      -> iterator of (inputs, labels) for one epoch
    num_train_batches()  -> batches per epoch
    eval_batches(split)  -> iterator of (inputs, labels) over a deterministic split

and feature sources add, for methods that need a whole split at once (Tip-Adapter's cache,
closed-form probes, zero-shot initialisations):

    split_features(split, views=0) -> (features float32 [N, D], labels [N]) with the test
                         transform (resize + center crop), or with views=V: [N, V, D], V
                         augmented views per image (train transform, one seed per (image, view))

`online` is the reference: every batch is augmented afresh and encoded under no_grad.
`cached`: V augmented views per training image and the center-crop features of val/test are
encoded once into the FeatureStore and reused by every run with the same backbone weights;
each epoch draws one view per image. Shuffling follows the same rules as the online loader
(global RNG, drop_last only when the split holds a full batch). Encoding never draws from the
global RNG (its loaders get their own generator and every view its own seed), so a run's result
does not depend on what the store already held. A view's seed hashes the image path relative to
DATASET.ROOT, so a moved or copied dataset gives the same views and results. An image is decoded
once for its consecutive views (`_SeededViews`). A group of runs (a sweep) can fill the store in
one pass after its first run (`prefill`).
"""
import hashlib
import os
import random
import time
from collections import namedtuple

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from datasets.transforms import describe_transform, read_image

from .data import num_workers
from .feature_store import Namespace, default_root, image_key, image_keys


class EncoderStats:
    """Images encoded and seconds spent encoding them (results.json: encoder images/s)."""

    def __init__(self):
        self.images, self.seconds = 0, 0.0

    def timed(self, encode, images):
        start = time.perf_counter()
        with torch.no_grad():
            out = encode(images)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        self.images += len(images)
        self.seconds += time.perf_counter() - start
        return out

    def stats(self):
        rate = self.images / self.seconds if self.seconds > 0 else None
        return {"images": self.images, "seconds": round(self.seconds, 3),
                "images_per_s": round(rate, 1) if rate else None}


def _split_items(dm, split):
    return dm.dataset.train_x if split in ("train", "train_x") else dm.read(split)


# Part of a stored view's identity: changing how views are seeded must not reuse old features.
VIEW_SEEDS = "view seeds: sha256(path relative to DATASET.ROOT|view)"


def view_seed(path, view, root):
    """The seed of one augmented view. It hashes the image's path relative to the dataset root,
    so a dataset copied or moved elsewhere gives the same views (and the same results)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root or ".")).replace(os.sep, "/")
    return int.from_bytes(hashlib.sha256(f"{rel}|{view}".encode()).digest()[:8], "little") >> 1


def _views_loader(dataset, cfg, device, batch_size):
    """A loader over seeded views; its own generator leaves the caller's RNG untouched."""
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers(cfg),
                      pin_memory=device.type == "cuda", generator=torch.Generator())


def encode_views(pairs, transform, seeded, encode, cfg, device, stats, flush=None, desc=None):
    """Encode (path, view) pairs; returns [len(pairs), D] (or calls `flush(keys_pairs, feats)`
    every few thousand features and returns None)."""
    views = _SeededViews(pairs, transform, seeded=seeded, root=cfg.DATASET.ROOT)
    loader = _views_loader(views, cfg, device, cfg.DATALOADER.TEST.BATCH_SIZE)
    done, pending, feats = 0, [], []
    bar = tqdm(loader, desc=desc or f"Encoding {len(pairs):,} images", unit="batch")
    for images in bar:
        out = stats.timed(encode, images.to(device, non_blocking=True))
        pending += pairs[done:done + len(out)]
        feats.append(out)
        done += len(out)
        bar.set_postfix(img_s=f"{done / max(bar.format_dict['elapsed'], 1e-6):.0f}")
        if flush is not None and len(pending) >= 8192:  # an interrupted fill keeps what it encoded
            flush(pending, torch.cat(feats))
            pending, feats = [], []
    if flush is not None:
        if pending:
            flush(pending, torch.cat(feats))
        return None
    return torch.cat(feats) if feats else torch.zeros(0)


class OnlineSource:
    def __init__(self, cfg, dm, encode=None, device="cpu"):
        self.cfg = cfg
        self.dm = dm
        self.encode = encode  # None -> pixels
        self.device = torch.device(device)
        self._stats = EncoderStats()
        self._splits = {}

    def stats(self):
        return self._stats.stats()

    def _inputs(self, images):
        images = images.to(self.device, non_blocking=True)
        if self.encode is None:
            return images
        return self._stats.timed(self.encode, images)

    def split_features(self, split, views=0):
        """Encoded once per run (no store); the same seeded views as the cached mode."""
        if self.encode is None:
            raise RuntimeError("split_features needs a feature source; this trainer consumes pixels")
        key = (split, int(views))
        if key not in self._splits:
            items = _split_items(self.dm, split)
            train = views > 0
            pairs = [(d.impath, v) for d in items for v in (range(views) if train else [0])]
            tfm = self.dm.tfm_train if train else self.dm.tfm_test
            feats = encode_views(pairs, tfm, train, self.encode, self.cfg, self.device, self._stats)
            feats = feats.float().to(self.device)
            feats = feats.view(len(items), views, -1) if train else feats.view(len(items), -1)
            labels = torch.tensor([d.label for d in items], device=self.device)
            self._splits[key] = (feats, labels)
        return self._splits[key]

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
    """(image, view) pairs; each pair is augmented with its own seed (`view_seed`), so a view is
    the same image tensor in every process and every run, without touching the caller's RNG.
    Consecutive pairs of one image share one decode (callers list an image's views together):
    a view depends only on the decoded pixels and its seed, so the tensors are the same as
    decoding per view, for the cost of one decode per image and loader worker."""

    def __init__(self, pairs, transform, seeded, root):
        self.pairs, self.transform, self.seeded, self.root = pairs, transform, seeded, root
        self._last = (None, None)  # (path, decoded image): per worker, one image held at a time

    def __len__(self):
        return len(self.pairs)

    def _decoded(self, path, transform):
        # INPUT.TRANSFORM_BACKEND tensor: its pipeline reads uint8 tensors (`TensorCompose.read`)
        read = getattr(transform, "read", None) or read_image
        if self._last[0] != (path, read):
            self._last = (None, None)  # release the previous image before decoding the next
            self._last = ((path, read), read(path))
        return self._last[1]

    def __getitem__(self, i):
        path, view = self.pairs[i]
        return seeded_view(self._decoded(path, self.transform), path, view, self.transform, self.seeded, self.root)


def seeded_view(img, path, view, transform, seeded, root):
    """One view of a decoded image: `transform(img)` under the view's own seed (or unseeded, the
    test transform). The transforms return new images, so `img` can serve the next view."""
    if not seeded:
        return transform(img)
    seed = view_seed(path, view, root)
    # torchvision draws from torch's CPU RNG; other transforms (Dassl's policies) from Python's.
    # Only the CPU generator is seeded (the one fork_rng restores): torch.manual_seed would also
    # reseed the CUDA generators for good, and records a stack trace per call (~0.7 ms a view).
    py_state = random.getstate()
    try:
        random.seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return transform(img)
    finally:
        random.setstate(py_state)


class _MixedViews(_SeededViews):
    """(path, view, pipeline) entries, each through its own (transform, seeded) pipeline."""

    def __init__(self, entries, pipelines, root):
        super().__init__(entries, None, None, root)
        self.pipelines = pipelines

    def __getitem__(self, i):
        path, view, p = self.pairs[i]
        transform, seeded = self.pipelines[p]
        return seeded_view(self._decoded(path, transform), path, view, transform, seeded, self.root)


class CachedSource:
    def __init__(self, cfg, dm, encode, device, backbone_id, encoder_tag):
        self.cfg, self.dm, self.encode = cfg, dm, encode
        self.device = torch.device(device)
        self.views = int(cfg.FEATURES.NUM_VIEWS)
        root = cfg.FEATURES.CACHE_DIR or default_root()
        print(f"Feature store: {root}")
        self._ns = {}
        self._ns_args = (root, f"{backbone_id}|{encoder_tag}")
        self.train_labels = torch.tensor([d.label for d in dm.dataset.train_x], device=self.device)
        self._train_feats = None  # encoded on first use: eval-only runs never need them
        self._eval = {}
        self._stats = EncoderStats()
        self.requests = []  # (split, views, train) in the order the run asked: see prefill

    def stats(self):
        return self._stats.stats()

    def split_features(self, split, views=0):
        """From the feature store; augmented views are the same ones training draws from."""
        items = _split_items(self.dm, split)
        labels = torch.tensor([d.label for d in items], device=self.device)
        if views > 0:
            if split in ("train", "train_x") and views == self.views:
                return self.train_feats.float(), labels
            return self._features(items, range(views), train=True, split=split).float().to(self.device), labels
        if split in ("val", "test"):
            return self._eval_split(split)
        return self._features(items, [0], train=False, split=split).float().to(self.device), labels

    @property
    def train_feats(self):
        if self._train_feats is None:
            self._train_feats = self._features(self.dm.dataset.train_x, range(self.views), train=True,
                                               split="train").to(self.device)
        return self._train_feats

    def _namespace(self, train, dim):
        key = (train, dim)
        if key not in self._ns:
            tfm = describe_transform(self.cfg, is_train=train) + (f" | {VIEW_SEEDS}" if train else "")
            self._ns[key] = shared_namespace(*self._ns_args, tfm, dim)
        return self._ns[key]

    def _features(self, items, views, train, split):
        """[len(items), len(views), D] (train) or [len(items), D] (eval), fp16 on the CPU."""
        views = list(views)
        self.requests.append((split, tuple(views), train))
        pairs = [(d.impath, v) for d in items for v in views]
        keys = image_keys(pairs)
        ns = self._namespace(train, self._dim())
        ns.refresh()
        todo = set(ns.missing(keys))
        if todo:
            todo_pairs = [pv for pv, k in zip(pairs, keys) if k in todo]
            self._encode_into(ns, todo_pairs, train)
        if train:
            return ns.get(keys).view(len(items), len(views), -1)
        return _stacked(ns, keys)  # callers copy it (.float())

    def _dim(self):
        if not hasattr(self, "_d"):
            size = tuple(self.cfg.INPUT.SIZE)
            with torch.no_grad():
                self._d = self.encode(torch.zeros(1, 3, size[0], size[-1], device=self.device)).shape[-1]
        return self._d

    def _encode_into(self, ns, pairs, train):
        tfm = self.dm.tfm_train if train else self.dm.tfm_test
        what = f"{len(pairs):,} {'augmented views' if train else 'images'}"
        encode_views(pairs, tfm, train, self.encode, self.cfg, self.device, self._stats,
                     flush=lambda done, feats: ns.add([image_key(p, v) for p, v in done], feats),
                     desc=f"Encoding {what}")

    def train_batches(self):
        for idx, view in epoch_views(len(self.train_labels), self.views, self.cfg, self.device):
            yield self.train_feats[idx, view].float(), self.train_labels[idx]

    def num_train_batches(self):
        return num_view_batches(len(self.train_labels), self.cfg)

    def _eval_split(self, split):
        if split not in self._eval:
            items = self.dm.read(split)
            feats = self._features(items, [0], train=False, split=split).float().to(self.device)
            labels = torch.tensor([d.label for d in items], device=self.device)
            self._eval[split] = (feats, labels)
        return self._eval[split]

    def eval_batches(self, split):
        feats, labels = self._eval_split(split)
        bs = int(self.cfg.DATALOADER.TEST.BATCH_SIZE)
        for i in range(0, len(labels), bs):
            yield feats[i:i + bs].float(), labels[i:i + bs]


def epoch_views(n, views, cfg, device):
    """One epoch over n training images, each as one of `views` seeded views: a shuffled order and
    a view per image, both from the global RNG (so resuming restores them), in batches of
    TRAIN_X.BATCH_SIZE; the last partial batch is dropped only when a full batch exists.
    Yields (image indices, view indices)."""
    bs = int(cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
    perm = torch.randperm(n).to(device)
    view = torch.randint(views, (n,)).to(device)
    for i in range(0, num_view_batches(n, cfg) * bs, bs):
        idx = perm[i:i + bs]
        yield idx, view[idx]


def num_view_batches(n, cfg):
    bs = int(cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
    return n // bs if n >= bs else 1


# A training batch of seeded views: the images and which (image, view) each row is.
ViewBatch = namedtuple("ViewBatch", "images index view")


class SeededPixelSource(OnlineSource):
    """Pixels for trainers that need to know which view a training image is (mask tuning's
    teacher from the feature store): every epoch draws one of `views` seeded views per image,
    as the cached feature mode does, so a row's zero-shot features are exactly the stored
    features of (image, view). Images are decoded and augmented in DataLoader workers. Training
    batches are `ViewBatch`es; evaluation is the same as OnlineSource's."""

    def __init__(self, cfg, dm, device, views):
        super().__init__(cfg, dm, None, device)
        self.views = int(views)
        self.train_labels = torch.tensor([d.label for d in dm.dataset.train_x])

    def train_batches(self):
        items = self.dm.dataset.train_x
        order = list(epoch_views(len(items), self.views, self.cfg, "cpu"))
        pairs = [(items[i].impath, int(v)) for idx, view in order for i, v in zip(idx.tolist(), view.tolist())]
        dataset = _SeededViews(pairs, self.dm.tfm_train, seeded=True, root=self.cfg.DATASET.ROOT)
        loader = _views_loader(dataset, self.cfg, self.device, int(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE))
        for (idx, view), images in zip(order, loader):
            batch = ViewBatch(images.to(self.device, non_blocking=True), idx.to(self.device), view.to(self.device))
            yield batch, self.train_labels[idx].to(self.device)

    def num_train_batches(self):
        return num_view_batches(len(self.train_labels), self.cfg)


def prefill(source, datasets, desc="Filling the store"):
    """Encode, in one pass with one DataLoader, what the runs on `datasets` (dataset objects with
    train_x / val / test) will ask the store for, when each asks what `source`'s run asked
    (`source.requests`: same method and config, other shots or seeds). The runs are replayed in
    order: each request's missing entries, deduplicated against the store and the entries the
    replay already planned, in batches of TEST.BATCH_SIZE: the very batches each run would
    encode itself, so the stored values are the same bit for bit as without the pre-fill. A run
    that asks for something else encodes it itself, as ever. Returns the entries encoded."""
    cfg, bs = source.cfg, int(source.cfg.DATALOADER.TEST.BATCH_SIZE)
    pipelines = [(source.dm.tfm_test, False), (source.dm.tfm_train, True)]  # by `train`
    entries, batches, planned = [], [], {}
    for ds in datasets:
        for split, views, train in source.requests:
            items = ds.train_x if split in ("train", "train_x") else {"val": ds.val or [], "test": ds.test}[split]
            ns = source._namespace(train, source._dim())
            if ns not in planned:
                ns.refresh()
                planned[ns] = set()
            pairs = [(d.impath, v) for d in items for v in views]
            keys = image_keys(pairs)
            todo = {k for k in ns.missing(keys) if k not in planned[ns]}
            todo_pairs = [(pv, k) for pv, k in zip(pairs, keys) if k in todo]
            planned[ns].update(todo)
            for i in range(0, len(todo_pairs), bs):
                chunk = todo_pairs[i:i + bs]
                batches.append((ns, [k for _, k in chunk], list(range(len(entries), len(entries) + len(chunk)))))
                entries += [(p, v, int(train)) for (p, v), _ in chunk]
    if not entries:
        return 0
    views = _MixedViews(entries, pipelines, cfg.DATASET.ROOT)
    loader = DataLoader(views, batch_sampler=[idx for _, _, idx in batches], num_workers=num_workers(cfg),
                        pin_memory=source.device.type == "cuda", generator=torch.Generator())
    pending = {}
    for (ns, keys, _), images in zip(batches, tqdm(loader, desc=f"{desc}: {len(entries):,} images", unit="batch")):
        out = source._stats.timed(source.encode, images.to(source.device, non_blocking=True))
        got = pending.setdefault(ns, ([], []))
        got[0].extend(keys)
        got[1].append(out)
        if len(got[0]) >= 8192:  # an interrupted fill keeps what it encoded
            ns.add(got[0], torch.cat(got[1]))
            pending[ns] = ([], [])
    for ns, (keys, feats) in pending.items():
        if keys:
            ns.add(keys, torch.cat(feats))
    return len(entries)


_NAMESPACES = {}
_STACKED = {}  # per process: {namespace: (keys, their features stacked)}, the last large read of each


def _stacked(ns, keys):
    """ns.get(keys), reused when a namespace's last large read asked for the same keys (a sweep's
    runs read the same test split: the keys hold every file's size and mtime, so a changed file is
    a changed key list and a new read)."""
    hit = _STACKED.get(ns)
    if hit is not None and hit[0] == keys:
        return hit[1]
    feats = ns.get(keys)
    if len(keys) >= 1000:
        _STACKED[ns] = (keys, feats)
    return feats


def shared_namespace(root, backbone_id, transform_id, dim):
    """One in-memory index per namespace per process, so runs in one process share features."""
    key = (root, backbone_id, transform_id, dim)
    if key not in _NAMESPACES:
        _NAMESPACES[key] = Namespace(root, backbone_id, transform_id, dim)
    return _NAMESPACES[key]


def build_source(cfg, dm, encode, device, backbone_id="", encoder_tag="", pixel_views=0):
    """Features from the store (FEATURES.MODE cached) or encoded per batch; for pixel trainers
    (encode None) fresh augmentations, or seeded views when `pixel_views` > 0."""
    if encode is None and pixel_views > 0:
        return SeededPixelSource(cfg, dm, device, pixel_views)
    if cfg.FEATURES.MODE == "cached" and encode is not None:
        return CachedSource(cfg, dm, encode, device, backbone_id, encoder_tag)
    return OnlineSource(cfg, dm, encode, device)
