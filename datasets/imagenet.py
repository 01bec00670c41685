"""ImageNet: `<root>/imagenet/images/{train,val}/<wnid>/*.JPEG` + `classnames.txt`; val is the test
set (and the val set, as in CoOp). No split file exists, so the few-shot subset is the only
thing to share between users: images are listed in sorted order (CoOp keeps os.listdir
order, which differs between file systems, CoOp issue #88), so a seed gives the same subset on
every machine, and `split_fewshot/shot_K-seed_S.json` is the portable record of it (see
DATASETS.md#imagenet and `prepare_datasets.py --export-fewshot`).

Labels index the classes of `classnames.txt` (sorted wnids, CLIP's names): the same labels as
CoOp's sorted folders on a complete copy, and still aligned with a 1000-class classifier when
only some classes are present. The variants (imagenet_variants.py) share this class list.

Listing 1.28M training files takes minutes on network storage, and every run needs the full
listing (the few-shot subset is drawn from it and checked against it). So the listing of a
folder of class folders is cached, as CoOp caches `preprocessed.pkl`: in memory for the runs of
one process, and in `<dataset dir>/listing_cache/<folder>.json` for every later process. The
cache is keyed by the sorted entry names of the folder and each class folder's mtime (adding,
removing or renaming an image changes its folder's mtime), so a changed tree is listed again.
"""
import hashlib
import json
import os
import stat
import time

from engine.errors import DatasetError
from engine.io import atomic_write
from engine.registry import DATASET_REGISTRY

from .base import Datum, LocalDataset, listdir_nohidden, read_lines, subsample_classes, subsample_labels

CLASSNAMES_FILE = "classnames.txt"
LISTING_CACHE_DIR = "listing_cache"
LISTING_VERSION = 1
SETTLE_S = 2.0  # a folder changed this recently may still be changing: do not cache it yet
_LISTINGS = {}  # (folder, signature) -> listing, for the runs of this process


def folder_signature(split_dir):
    """What invalidates a cached listing: the folder's entries, their kind and mtimes."""
    entries, newest = [], 0
    for name in listdir_nohidden(split_dir):
        st = os.stat(os.path.join(split_dir, name))
        entries.append([name, stat.S_ISDIR(st.st_mode), st.st_mtime_ns])
        newest = max(newest, st.st_mtime_ns)
    digest = hashlib.sha256(json.dumps(entries).encode("utf-8")).hexdigest()
    return digest, newest / 1e9


def list_class_folders(split_dir, cache_path=None):
    """{entry name: sorted image names (a folder) or None (a file)}, from the process memory, the
    cache file (when its signature matches) or the disk (then cached)."""
    signature, newest = folder_signature(split_dir)
    key = (os.path.abspath(split_dir), signature)
    if key in _LISTINGS:
        return _LISTINGS[key]
    listing = _read_listing(cache_path, signature) if cache_path else None
    if listing is None:
        listing = {}
        for name in listdir_nohidden(split_dir):
            path = os.path.join(split_dir, name)
            listing[name] = listdir_nohidden(path) if os.path.isdir(path) else None
        if cache_path and time.time() - newest > SETTLE_S:
            _write_listing(cache_path, split_dir, signature, listing)
    _LISTINGS[key] = listing
    return listing


def _read_listing(path, signature):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        print(f"Note: ignoring the listing cache {path} ({type(e).__name__}); listing the folders again")
        return None
    if not isinstance(data, dict) or data.get("version") != LISTING_VERSION or data.get("signature") != signature:
        return None
    listing = data.get("listing")
    return listing if isinstance(listing, dict) else None


def _write_listing(path, split_dir, signature, listing):
    data = {"version": LISTING_VERSION, "folder": os.path.abspath(split_dir), "signature": signature,
            "listing": listing}
    try:
        with atomic_write(path, "w") as f:
            json.dump(data, f, separators=(",", ":"))
    except OSError as e:
        print(f"Note: cannot write the listing cache {path} ({e}); the folders are listed again by every process")


class ImageNetFamily(LocalDataset):
    """Class list from `<dataset dir>/classnames.txt` and images in class folders."""

    def read_classnames(self):
        """[(wnid, CLIP name)] in file order; the order defines the 1000 ImageNet labels."""
        path = os.path.join(self.dataset_dir, CLASSNAMES_FILE)
        try:
            lines = read_lines(path, "class-name file")
        except DatasetError as e:
            raise self.error(str(e)) from None
        entries = []
        for lineno, line in lines:
            wnid, _, name = line.partition(" ")
            if not name.strip():
                raise self.error(f"{path}:{lineno}: expected '<wnid> <class name>', got {line!r}")
            entries.append((wnid, name.strip()))
        if [w for w, _ in entries] != sorted(w for w, _ in entries):
            raise self.error(f"{path} is not sorted by wnid; ImageNet's labels are the sorted wnids")
        return entries

    def class_folders(self, split_dir, folder_to_label):
        """{label: [image paths, sorted]} for the class folders of `split_dir`."""
        self.require_dirs(split_dir)
        rel = os.path.relpath(os.path.abspath(split_dir), self.dataset_dir)
        cache = None if rel.startswith("..") else os.path.join(
            self.dataset_dir, LISTING_CACHE_DIR, rel.replace(os.sep, "_") + ".json")
        out, unknown, loose = {}, [], []
        for name, images in list_class_folders(split_dir, cache).items():
            path = os.path.join(split_dir, name)
            if images is None:
                loose.append(name)
            elif name in folder_to_label:
                out[folder_to_label[name]] = [os.path.join(path, im) for im in images]
            else:
                unknown.append(name)
        if unknown:
            raise self.error(f"{len(unknown)} folders in {split_dir} are not classes of {CLASSNAMES_FILE}, "
                             f"e.g. {', '.join(unknown[:5])}")
        if not out:
            detail = f" but {len(loose)} loose files such as {loose[0]}" if loose else ""
            raise self.error(f"no class folders in {split_dir}{detail}")
        return out

    def report_missing(self, present, names, split_dir):
        """A note (not an error) for classes without images: evaluating on some classes is
        legitimate, and labels stay aligned with the full class list."""
        missing = [i for i in range(len(names)) if not present.get(i)]
        if missing:
            print(f"Note: {type(self).__name__}: {len(missing)} of the {len(names)} classes have no images in "
                  f"{split_dir} (e.g. {names[missing[0]]!r}); labels still index all {len(names)} classes. "
                  f"A complete copy has all of them (DATASETS.md#{self.anchor}).")

    @staticmethod
    def to_items(groups, names):
        return [Datum(impath=p, label=label, classname=names[label])
                for label in sorted(groups) for p in groups[label]]

    def finish(self, cfg, train, test, names, class_indices_1k, val_is_test=False, val=None):
        """Subsample over the full class list, build the splits (val = test for ImageNet, none for
        the evaluation-only variants) and set `class_indices_1k`: per label, the row of the
        ImageNet classifier (all classes of the same classnames.txt) it corresponds to; None when
        the dataset has exactly those classes in that order, so no slicing is needed."""
        rows = list(range(len(names))) if class_indices_1k is None else list(class_indices_1k)
        subsample = cfg.DATASET.SUBSAMPLE_CLASSES
        if subsample != "all":
            keep = subsample_labels(range(len(names)), subsample)
            train, test, val = subsample_classes(train, test, val, subsample=subsample, labels=range(len(names)))
            names, rows = [names[y] for y in keep], [rows[y] for y in keep]
        if val is None and val_is_test:
            val = test
        super().__init__(train_x=train, val=val, test=test, classnames=names)
        self.class_indices_1k = None if class_indices_1k is None and subsample == "all" else rows


@DATASET_REGISTRY.register()
class ImageNet(ImageNetFamily):
    stem = "imagenet"
    folder = "imagenet"
    image_folder = "images"
    anchor = "imagenet"
    fewshot_val = False  # val is the 50k test set
    layout = """
        imagenet/
          images/
            train/n01440764/n01440764_10026.JPEG ...   (1000 wnid folders)
            val/n01440764/ILSVRC2012_val_00000293.JPEG ...   (val sorted into the same wnid folders)
          classnames.txt   (1000 lines '<wnid> <class name>', sorted by wnid)
          split_fewshot/shot_K-seed_S.json   (few-shot subsets: made on first use, shareable)
    """

    def __init__(self, cfg):
        self.locate(cfg)
        self.require_dirs(self.dataset_dir, self.image_dir)
        entries = self.read_classnames()
        names = [n for _, n in entries]
        folder_to_label = {w: i for i, (w, _) in enumerate(entries)}
        train_dir, val_dir = os.path.join(self.image_dir, "train"), os.path.join(self.image_dir, "val")
        train_groups = self.class_folders(train_dir, folder_to_label)
        val_groups = self.class_folders(val_dir, folder_to_label)
        half = sorted(y for y in set(train_groups) | set(val_groups)
                      if bool(train_groups.get(y)) != bool(val_groups.get(y)))
        if half:
            y = half[0]
            where = "val" if train_groups.get(y) else "train"
            raise self.error(f"{len(half)} classes have images in only one of train/ and val/, e.g. "
                             f"{entries[y][0]} has none in images/{where}/. The extraction looks incomplete.")
        self.report_missing(train_groups, names, train_dir)

        train, test = self.to_items(train_groups, names), self.to_items(val_groups, names)
        val = None  # val is test (CoOp), unless DATASET.VAL_FROM_TRAIN carves one from train
        if cfg.DATASET.NUM_SHOTS >= 1:
            train, val = self.select_fewshot(train, None, cfg.DATASET.NUM_SHOTS, cfg.SEED)
        self.finish(cfg, train, test, names, None, val_is_test=True, val=val)
