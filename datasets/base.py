"""The construction flow shared by CoOp-style datasets (records and split files: records.py).

Kept from CoOp/Dassl because users and published numbers depend on them: the split JSON format
and its relative-path rule, the fallback splits used when a JSON is missing
(`read_and_split_data`, `split_trainval`), the order in which Python's global `random` is
consumed, and `subsample_classes` for base-to-new. A new dataset whose images sit in class
folders or come with a split JSON is a subclass of `SplitJsonDataset` with a few class
attributes and, at most, a `generate_split` method.
"""
import contextlib
import math
import os
import random
import textwrap
from collections import defaultdict

from engine.errors import ConfigError, DatasetError

from . import records
from .fewshot import carve_val, fewshot_cache_path, load_or_sample_fewshot
from .records import (  # noqa: F401  (re-exported: dataset files and Dassl's shim import them from here)
    Datum, items_from_json, items_to_json, listdir_nohidden, missing_files, read_json, read_split, save_split,
    split_dataset_by_label, to_relpath, write_json_atomic,
)

SUBSAMPLE_CHOICES = ("all", "base", "new")


class DatasetBase:
    """Holds the splits; class names come from train_x, as in Dassl, unless `classnames` gives
    the full class list (the ImageNet family, whose labels index a fixed list of classes that
    need not all have images)."""

    dataset_dir = ""  # absolute dataset folder; set by subclasses
    # What code outside the dataset reads about it (through datasets.info): the stem of its
    # configs/datasets/<stem>.yaml, its name in figures ("" = the registered name), and the prompt
    # template of the reference CoOp/TaskRes code (CLIP's generic prompt unless it has its own).
    stem = ""
    display_name = ""
    template = "a photo of a {}."

    def __init__(self, train_x, val=None, test=None, train_u=None, classnames=None):
        self._train_x = list(train_x)
        self._train_u = train_u
        self._val = val
        self._test = test
        if classnames is None:
            self._num_classes = get_num_classes(self._train_x)
            self._lab2cname, self._classnames = get_lab2cname(self._train_x)
        else:
            self._classnames = list(classnames)
            self._lab2cname = dict(enumerate(self._classnames))
            self._num_classes = len(self._classnames)

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def num_classes(self):
        return self._num_classes

    @property
    def lab2cname(self):
        return self._lab2cname

    @property
    def classnames(self):
        return self._classnames


def get_num_classes(data_source):
    return max((d.label for d in data_source), default=-1) + 1


def get_lab2cname(data_source):
    """({label: classname}, classnames sorted by label); the first name seen for a label wins."""
    mapping = {}
    for d in data_source:
        mapping.setdefault(d.label, d.classname)
    return mapping, [mapping[label] for label in sorted(mapping)]


# ---------------------------------------------------------------------------------------------
# Split generation (used when a dataset's split JSON is absent)


def class_folders(image_dir, ignored=()):
    """[(folder name, [image paths])] for a folder of class folders; label = position.
    Folders are sorted (as in CoOp); images are sorted too, so that a generated split depends
    only on the seed, not on the file system's listing order (CoOp keeps os.listdir order)."""
    out = []
    for c in listdir_nohidden(image_dir):
        if c in ignored or not os.path.isdir(os.path.join(image_dir, c)):
            continue
        folder = os.path.join(image_dir, c)
        out.append((c, [os.path.join(folder, im) for im in listdir_nohidden(folder)]))
    if not out:
        raise DatasetError(f"No class folders found in {image_dir}.")
    return out


def cut_class(images, p_trn, p_val, where, shuffle=random.shuffle):
    """CoOp's cut of one class: shuffle, then round(n * p_trn) train, round(n * p_val) val, the
    rest test, each part non-empty (a DatasetError naming `where` otherwise)."""
    images = list(images)
    shuffle(images)
    n_train, n_val = round(len(images) * p_trn), round(len(images) * p_val)
    if min(n_train, n_val, len(images) - n_train - n_val) <= 0:
        raise DatasetError(
            f"{where} has {len(images)} images: too few to split {p_trn:.0%}/{p_val:.0%}/{1 - p_trn - p_val:.0%} "
            "into non-empty train/val/test.")
    return images[:n_train], images[n_train:n_train + n_val], images[n_train + n_val:]


@contextlib.contextmanager
def seeded_random(seed):
    """Python's global `random` seeded with `seed` inside the block and restored after it: a
    split drawn with CoOp's functions (which use the global `random`) without moving the run's
    own random stream."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def read_and_split_data(image_dir, p_trn=0.5, p_val=0.2, ignored=(), new_cnames=None):
    """CoOp's per-class random split of a folder of class folders (50/20/30 by default), using
    Python's global `random` (SplitJsonDataset seeds it with DATASET.SPLIT_SEED)."""
    categories = class_folders(image_dir, ignored)
    print(f"Splitting into {p_trn:.0%} train, {p_val:.0%} val, and {1 - p_trn - p_val:.0%} test")
    train, val, test = [], [], []
    for label, (category, images) in enumerate(categories):
        cname = new_cnames.get(category, category) if new_cnames else category
        parts = cut_class(images, p_trn, p_val, f"Class folder {os.path.join(image_dir, category)}")
        for part, ims in zip((train, val, test), parts):
            part.extend(Datum(impath=im, label=label, classname=cname) for im in ims)
    return train, val, test


def split_trainval(trainval, p_val=0.2):
    """CoOp's split of an official trainval list: per label (first-appearance order),
    round(n * p_val) random items go to val."""
    p_trn = 1 - p_val
    print(f"Splitting trainval into {p_trn:.0%} train and {p_val:.0%} val")
    tracker = defaultdict(list)
    for idx, item in enumerate(trainval):
        tracker[item.label].append(idx)
    train, val = [], []
    for label, idxs in tracker.items():
        n_val = round(len(idxs) * p_val)
        if n_val <= 0:
            raise DatasetError(
                f"Label {label} has {len(idxs)} trainval images: too few to hold out {p_val:.0%} for val.")
        random.shuffle(idxs)
        for n, idx in enumerate(idxs):
            (val if n < n_val else train).append(trainval[idx])
    return train, val


def check_subsample(subsample):
    if subsample not in SUBSAMPLE_CHOICES:
        raise ConfigError(
            f"DATASET.SUBSAMPLE_CLASSES must be one of {', '.join(SUBSAMPLE_CHOICES)}; got {subsample!r}.")


def subsample_labels(labels, subsample):
    """The labels kept by "base" (first ceil(n/2) in sorted order), "new" (the rest) or "all"."""
    labels = sorted(labels)
    m = math.ceil(len(labels) / 2)
    return {"all": labels, "base": labels[:m], "new": labels[m:]}[subsample]


def subsample_classes(*splits, subsample="all", labels=None):
    """Base-to-new: the first ceil(n/2) labels of the first split (or of `labels`, when the
    class list is fixed) are "base", the rest "new"; every split keeps the chosen labels,
    relabelled 0.. in order (domain reset to 0)."""
    check_subsample(subsample)
    if subsample == "all":
        return list(splits)
    print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    selected = subsample_labels({d.label for d in splits[0]} if labels is None else labels, subsample)
    relabel = {y: i for i, y in enumerate(selected)}
    return [
        None if split is None else
        [Datum(impath=d.impath, label=relabel[d.label], classname=d.classname) for d in split if d.label in relabel]
        for split in splits
    ]


# ---------------------------------------------------------------------------------------------
# The shared construction flow


def _writable(folder):
    target = os.path.join(folder, "split_fewshot")
    return os.access(target if os.path.isdir(target) else folder, os.W_OK)


def _short_hash(text):
    import hashlib
    return hashlib.sha256(os.path.abspath(text).encode()).hexdigest()[:10]


class LocalDataset(DatasetBase):
    """A dataset under `DATASET.ROOT`: where its folders are, and errors that show the expected
    layout and the DATASETS.md section. Subclasses set the class attributes.

    `provenance` is what results.json records about where the splits came from (the Trainer
    copies it into extras): `split_origin` ("official": the reference split file or lists;
    "given": own data's split folders or column; "generated seed=N": a random split made here
    with DATASET.SPLIT_SEED N) and `fewshot_origin` ("sampled" now, read from the "cache", or
    converted from CoOp's pickle, "coop-pkl")."""

    folder = ""  # under --root
    image_folder = ""  # under folder; "" = the dataset folder itself
    anchor = ""  # DATASETS.md#<anchor>
    layout = ""  # expected tree under --root, shown in errors
    fewshot_val = True  # False where val is the test set (ImageNet): CoOp draws no few-shot val then
    split_origin = "official"
    # Few-shot subsets of any split other than the official one live in split_fewshot/<variant>/,
    # so that they are never mistaken for (or collide with) subsets of the official split.
    fewshot_variant = ""

    def locate(self, cfg):
        check_subsample(cfg.DATASET.SUBSAMPLE_CLASSES)
        self.root_given = bool(cfg.DATASET.ROOT)
        self.root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.dataset_dir = os.path.join(self.root, self.folder)
        self.image_dir = os.path.join(self.dataset_dir, self.image_folder) if self.image_folder else self.dataset_dir
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot")
        self.path_prefix = self.image_dir
        self.split_cache_dir = cfg.DATASET.get("SPLIT_CACHE_DIR", "")
        self.val_from_train = bool(cfg.DATASET.get("VAL_FROM_TRAIN", False))

    def require_dirs(self, *paths):
        for path in paths:
            if not os.path.isdir(path):
                raise self.error(f"folder not found: {path}")

    @property
    def provenance(self):
        out = {"split_origin": self.split_origin}
        if getattr(self, "fewshot_origin", None):
            out["fewshot_origin"] = self.fewshot_origin
        return out

    def fewshot_cache_path(self, num_shots, seed):
        """Where the few-shot subset of (num_shots, seed) is read and written: the dataset folder
        (CoOp's `split_fewshot/`), unless DATASET.SPLIT_CACHE_DIR names another root, or the
        dataset folder cannot be written (a shared read-only copy): then a per-user cache. A
        cache already in the dataset folder is always read from there."""
        beside_data = fewshot_cache_path(self.dataset_dir, num_shots, seed, self.fewshot_variant)
        stem = os.path.splitext(beside_data)[0]
        if os.path.isfile(beside_data) or os.path.isfile(stem + ".pkl"):
            return beside_data
        if self.split_cache_dir:
            root = os.path.expanduser(self.split_cache_dir)
        elif _writable(self.dataset_dir):
            return beside_data
        else:
            root = os.path.join(os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "~/.cache")), "taskres-splits")
            print(f"Note: {self.dataset_dir} is not writable; few-shot subsets are cached under {root} "
                  "(set DATASET.SPLIT_CACHE_DIR to choose)")
        # Keyed by the dataset folder, so that two copies of a dataset never share subsets.
        folder = f"{os.path.basename(self.dataset_dir.rstrip(os.sep))}-{_short_hash(self.dataset_dir)}"
        return fewshot_cache_path(os.path.join(root, folder), num_shots, seed, self.fewshot_variant)

    def select_fewshot(self, train, val, num_shots, seed):
        """(train, val) cut to `num_shots` per class, from the cache for (num_shots, seed) or
        drawn with the global `random` (seeded by the caller) and cached. val is passed through
        untouched when the dataset draws no few-shot val."""
        pool = train
        train, fs_val, self.fewshot_origin = load_or_sample_fewshot(
            train, val if self.fewshot_val else None, num_shots=num_shots,
            cache_path=self.fewshot_cache_path(num_shots, seed), path_prefix=self.path_prefix,
            name=type(self).__name__, dataset_dir=self.dataset_dir)
        if self.val_from_train:  # after CoOp's draws, which it leaves as they are
            print("DATASET.VAL_FROM_TRAIN: the validation split is min(K, 4) per class of the other training images")
            return train, carve_val(pool, train, num_shots, seed)
        return train, (fs_val if self.fewshot_val else val)

    def error(self, problem):
        layout = textwrap.indent(textwrap.dedent(self.layout).strip("\n"), "  ")
        where = self.root if self.root_given else f"{self.root}; DATASET.ROOT is empty, so the current folder"
        return DatasetError(
            f"{type(self).__name__}: {problem}\n"
            f"Expected layout under --root ({where}):\n{layout}\n"
            f"See DATASETS.md#{self.anchor} for the downloads and the split file.")


class SplitJsonDataset(LocalDataset):
    """CoOp's flow: read `<root>/<folder>/<split_file>` (or, without it, generate a split), draw
    or load the few-shot subset, subsample classes. Subclasses set the class attributes below and
    implement `generate_split` when the dataset has a fallback.

    Unlike CoOp, a generated split is never saved under the official file name (CoOp's first run
    wrote its random split there, and every later run took it for the published one): it is
    made in memory on every run, from the sorted image list and Python's `random` seeded with
    DATASET.SPLIT_SEED (CoOp's split for a first run with that seed, up to the listing order),
    announced with a warning and recorded as `split_origin` "generated seed=N". Its few-shot
    subsets live in `split_fewshot/generated_seed<N>/`."""

    split_file = ""  # e.g. split_zhou_EuroSAT.json; "" = always built from the annotations, never saved
    paths_relative_to_dataset_dir = False  # StanfordCars: split paths start at the dataset dir
    required_folders = None  # checked before loading, under the dataset dir; None = (image_folder,)

    def __init__(self, cfg):
        self.locate(cfg)
        self.split_seed = int(cfg.DATASET.SPLIT_SEED)
        self.split_path = os.path.join(self.dataset_dir, self.split_file) if self.split_file else ""
        if self.paths_relative_to_dataset_dir:
            self.path_prefix = self.dataset_dir

        train, val, test = self.load_split()
        if cfg.DATASET.NUM_SHOTS >= 1:
            train, val = self.select_fewshot(train, val, cfg.DATASET.NUM_SHOTS, cfg.SEED)
        train, val, test = subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=val, test=test)

    def generate_split(self):
        """(train, val, test) from the raw annotations, for when the split JSON is absent."""
        raise DatasetError(f"split file not found: {self.split_path}")

    def load_split(self):
        folders = self.required_folders if self.required_folders is not None else (self.image_folder,)
        self.require_dirs(self.dataset_dir, *(os.path.join(self.dataset_dir, f) for f in folders))
        generated = not self.split_path or not os.path.isfile(self.split_path)
        if not generated:
            known = records.known_split(self.split_path, self.path_prefix)
            if known is not None:  # read and found complete before in this process, unchanged since
                print(f"Reading split from {self.split_path}")
                return known
            ident = records.file_ident(self.split_path)
        try:
            if generated and self.split_path:
                train, val, test = self.generate_random_split()
            elif generated:
                train, val, test = self.generate_split()  # the official lists (FGVCAircraft)
            else:
                train, val, test = read_split(self.split_path, self.path_prefix)
        except DatasetError as e:
            raise self.error(str(e)) from None

        items = train + val + test
        missing = missing_files([d.impath for d in items])
        if missing:
            source = "the annotation files" if generated else os.path.basename(self.split_path)
            examples = "\n".join(f"  {to_relpath(p, self.path_prefix)}" for p in missing[:5])
            raise self.error(
                f"{len(missing)} of {len(items)} images listed in {source} are missing under "
                f"{self.path_prefix}, e.g.\n{examples}\nThe download looks incomplete or was extracted elsewhere.")
        if not generated:
            records.remember_split(self.split_path, self.path_prefix, (train, val, test), ident)
        return train, val, test

    def generate_random_split(self):
        """generate_split() under `random` seeded with DATASET.SPLIT_SEED, the run's own random
        state left as it was; says loudly that this is not the published split."""
        print(split_warning(type(self).__name__, self.split_path, self.split_seed, self.anchor))
        with seeded_random(self.split_seed):
            split = self.generate_split()
        self.split_origin = f"generated seed={self.split_seed}"
        self.fewshot_variant = f"generated_seed{self.split_seed}"
        return split


def split_warning(name, split_path, seed, anchor):
    bar = "!" * 78
    return (f"{bar}\nWARNING: {name}: the split file {split_path} is missing, so this run uses a RANDOM split\n"
            f"made here (DATASET.SPLIT_SEED {seed}), not CoOp's: results are not comparable with published\n"
            f"numbers. Nothing is written under the official name; results.json records split_origin\n"
            f"\"generated seed={seed}\". Get the split file: DATASETS.md#{anchor}.\n{bar}")


def read_lines(path, what="annotation file"):
    """Non-empty stripped lines of a text file (CRLF-safe); a missing file is a DatasetError."""
    if not os.path.isfile(path):
        raise DatasetError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
    except UnicodeDecodeError:
        raise DatasetError(f"{what} {path} is not a text file; download it again") from None
