"""Your own images, set up by one yaml (configs/datasets/imagefolder.yaml, imagelist.yaml; the
keys DATASET.CUSTOM.*, DATASET.TEMPLATE and DATASET.SPLIT_SEED; DATASETS.md#your-own-data).

- ImageFolder: a tree of class folders, `<tree>/<class>/*.jpg`, or the same under `train/`,
  `test/` and, optionally, `val/`. The tree is DATASET.CUSTOM.PATH (under --root), or --root.
- ImageList: a CSV file with the header `path,label[,split]` (more columns are ignored) or a
  JSON list of objects with those keys; paths are relative to the list's folder. The list is
  DATASET.CUSTOM.PATH (under --root).

Class names are the folder names or labels, underscores read as spaces, in sorted order, unless
DATASET.CUSTOM.CLASSNAMES names a file of `<folder or label> <class name>` lines, whose order
sets the labels. Without a given split, each class is cut TRAIN_FRACTION / VAL_FRACTION / the
rest, shuffled by Python's `random` seeded with DATASET.SPLIT_SEED (CoOp's cut, the run's own
random stream untouched); with train and test but no val, VAL_FRACTION of each class's train
images form val. Few-shot subsets are drawn and cached as for the benchmarks (fewshot.py), in
`split_fewshot/<variant>/` beside the data: one variant per list and split, so that changing
the fractions or the split seed never meets a subset of another split.
"""
import csv
import json
import os

from engine.errors import DatasetError
from engine.registry import DATASET_REGISTRY

from .base import (
    Datum, LocalDataset, cut_class, listdir_nohidden, missing_files, read_lines, seeded_random, split_trainval,
    subsample_classes, subsample_labels,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
LIST_COLUMNS = ("path", "label")  # and, optionally, "split"


class CustomDataset(LocalDataset):
    """The flow shared by ImageFolder and ImageList: entries (image path, key, split or None)
    from `read_entries`, class names, the split, the few-shot subset, base-to-new subsampling.
    Every error is one line naming the file or folder at fault."""

    anchor = "your-own-data"

    def __init__(self, cfg):
        self.locate(cfg)
        custom = cfg.DATASET.CUSTOM
        self.split_seed = int(cfg.DATASET.SPLIT_SEED)
        self.p_trn, self.p_val = float(custom.TRAIN_FRACTION), float(custom.VAL_FRACTION)
        if not (0 < self.p_trn and 0 < self.p_val and self.p_trn + self.p_val < 1):
            raise self.fail(f"DATASET.CUSTOM.TRAIN_FRACTION ({self.p_trn}) and VAL_FRACTION ({self.p_val}) must be "
                            "positive and leave some images for test (sum below 1)")
        self.place(self.under_root(custom.PATH))
        entries = self.read_entries()
        keys = sorted({key for _, key, _ in entries})
        names = self.read_classnames(self.under_root(custom.CLASSNAMES), keys) if custom.CLASSNAMES else None
        if names is None:
            numeric = [k for k in keys if k.isdigit()]
            if numeric:
                raise self.fail(f"labels {', '.join(numeric[:3])}{' ...' if len(numeric) > 3 else ''} are numbers, "
                                "which make no prompt: give their class names in DATASET.CUSTOM.CLASSNAMES (a file "
                                "of '<label> <class name>' lines)")
            names = {k: k.replace("_", " ") for k in keys}
        label_of = {key: i for i, key in enumerate(names)}
        classnames = list(names.values())
        items = {s: [] for s in SPLITS + (None,)}
        for path, key, split in entries:
            items[split].append(Datum(impath=path, label=label_of[key], classname=names[key]))
        self.check_files([d.impath for part in items.values() for d in part])

        train, val, test = self.split(items)
        if cfg.DATASET.NUM_SHOTS >= 1:
            train, val = self.select_fewshot(train, val, cfg.DATASET.NUM_SHOTS, cfg.SEED)
        labels = range(len(classnames))
        train, val, test = subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES, labels=labels)
        kept = subsample_labels(labels, cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=val, test=test, classnames=[classnames[i] for i in kept])

    # -- where things are ----------------------------------------------------------------------

    def under_root(self, path):
        return os.path.join(self.root, os.path.expanduser(path)) if path else ""

    def place(self, path):
        """Set dataset_dir (where split_fewshot/ goes) and path_prefix from DATASET.CUSTOM.PATH."""
        raise NotImplementedError

    def fail(self, problem):
        return DatasetError(f"{type(self).__name__}: {problem} (see DATASETS.md#{self.anchor})")

    def check_files(self, paths):
        missing = missing_files(paths)
        if missing:
            raise self.fail(f"{len(missing)} of {len(paths)} images are missing, e.g. {missing[0]}")

    # -- class names ---------------------------------------------------------------------------

    def read_classnames(self, path, keys):
        """{key: class name} in the file's order; every key of the data must be in the file."""
        try:
            lines = read_lines(path, "class-names file (DATASET.CUSTOM.CLASSNAMES)")
        except DatasetError as e:
            raise self.fail(str(e)) from None
        names = {}
        for lineno, line in lines:
            key, _, name = line.partition(" ")
            if not name.strip():
                raise self.fail(f"{path}:{lineno}: expected '<folder or label> <class name>', got {line!r}")
            if key in names:
                raise self.fail(f"{path}:{lineno}: {key!r} is listed twice")
            names[key] = name.strip()
        unknown = [k for k in keys if k not in names]
        if unknown:
            raise self.fail(f"{self.key_word} {unknown[0]!r} is not in {path}"
                            + (f" ({len(unknown) - 1} more are not either)" if len(unknown) > 1 else ""))
        absent = [n for k, n in names.items() if k not in keys]
        if absent:
            print(f"Note: {len(absent)} classes of {path} have no images ({', '.join(absent[:5])}"
                  f"{' ...' if len(absent) > 5 else ''}); they stay in the classifier")
        return names

    # -- the split -----------------------------------------------------------------------------

    def split(self, items):
        """(train, val, test) from the given split, completed or generated with DATASET.SPLIT_SEED."""
        given = {s: items[s] for s in SPLITS}
        if not any(given.values()):
            return self.generate(items[None])
        if not given["train"] or not given["test"]:
            raise self.fail(f"the given split has {', '.join(s for s in SPLITS if given[s]) or 'nothing'} but needs "
                            "train and test (val is optional)")
        train_labels, test_labels = {d.label for d in given["train"]}, {d.label for d in given["test"]}
        if test_labels - train_labels:
            missing = sorted(test_labels - train_labels)
            cname = next(d.classname for d in given["test"] if d.label == missing[0])
            raise self.fail(f"class {cname!r} has test images but no train images")
        self.split_origin = "given"
        self.fewshot_variant = self.variant("given")
        if given["val"]:
            return given["train"], given["val"], given["test"]
        print(f"No val images given: {self.p_val:.0%} of each class's train images form val "
              f"(DATASET.CUSTOM.VAL_FRACTION, DATASET.SPLIT_SEED {self.split_seed})")
        with seeded_random(self.split_seed):
            try:
                train, val = split_trainval(given["train"], p_val=self.p_val)
            except DatasetError as e:
                raise self.fail(str(e)) from None
        self.split_origin = f"given, val generated seed={self.split_seed}"
        self.fewshot_variant = self.variant(f"val{self.p_val:g}_seed{self.split_seed}")
        return train, val, given["test"]

    def generate(self, items):
        print(f"No split given: each class is cut {self.p_trn:.0%} train, {self.p_val:.0%} val and "
              f"{1 - self.p_trn - self.p_val:.0%} test (DATASET.CUSTOM.TRAIN_FRACTION / VAL_FRACTION, "
              f"DATASET.SPLIT_SEED {self.split_seed})")
        by_label = {}
        for d in sorted(items, key=lambda d: (d.label, d.impath)):
            by_label.setdefault(d.label, []).append(d)
        parts = ([], [], [])
        with seeded_random(self.split_seed):
            for group in by_label.values():
                for part, cut in zip(parts, cut_class(group, self.p_trn, self.p_val, f"class {group[0].classname!r}")):
                    part.extend(cut)
        self.split_origin = f"generated seed={self.split_seed}"
        self.fewshot_variant = self.variant(f"generated_seed{self.split_seed}_train{self.p_trn:g}_val{self.p_val:g}")
        return parts

    def variant(self, split_name):
        return split_name


@DATASET_REGISTRY.register()
class ImageFolder(CustomDataset):
    stem = "imagefolder"
    key_word = "class folder"

    def place(self, path):
        self.dataset_dir = self.image_dir = self.path_prefix = path or self.root
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot")

    def read_entries(self):
        top = self.dataset_dir
        if not os.path.isdir(top):
            raise self.fail(f"folder not found: {top} (--root, or DATASET.CUSTOM.PATH under it: a folder of "
                            "class folders)")
        given = [s for s in SPLITS if os.path.isdir(os.path.join(top, s))]
        if not given:
            return [(p, key, None) for key, p in self.class_images(top)]
        return [(p, key, s) for s in given for key, p in self.class_images(os.path.join(top, s))]

    def class_images(self, folder):
        """[(class folder name, image path)], both sorted; an empty class folder is an error."""
        classes = [c for c in listdir_nohidden(folder)
                   if c != "split_fewshot" and os.path.isdir(os.path.join(folder, c))]
        if not classes:
            raise self.fail(f"no class folders in {folder}")
        out = []
        for c in classes:
            images = [f for f in listdir_nohidden(os.path.join(folder, c)) if f.lower().endswith(IMAGE_EXTENSIONS)]
            if not images:
                raise self.fail(f"class folder {os.path.join(folder, c)} has no images ({', '.join(IMAGE_EXTENSIONS)})")
            out.extend((c, os.path.join(folder, c, f)) for f in images)
        return out


@DATASET_REGISTRY.register()
class ImageList(CustomDataset):
    stem = "imagelist"
    key_word = "label"

    def place(self, path):
        if not path:
            raise self.fail("DATASET.CUSTOM.PATH is empty: give the CSV or JSON list of images (under --root)")
        if not os.path.isfile(path):
            raise self.fail(f"image list not found: {path} (DATASET.CUSTOM.PATH, under --root)")
        self.list_path = path
        self.dataset_dir = self.image_dir = os.path.dirname(path)
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot")

    def variant(self, split_name):
        # Several lists may share a folder: each keeps its own subsets.
        return f"{os.path.splitext(os.path.basename(self.list_path))[0]}_{split_name}"

    def read_entries(self):
        rows = self.read_json() if self.list_path.lower().endswith(".json") else self.read_csv()
        if not rows:
            raise self.fail(f"{self.list_path} lists no images")
        entries = []
        for where, row in rows:
            path, label, split = (str(row.get(k, "") or "").strip() for k in ("path", "label", "split"))
            if not path or not label:
                raise self.fail(f"{where}: needs a path and a label, got {row!r}")
            if "split" in row and split not in SPLITS:
                raise self.fail(f"{where}: split must be one of {', '.join(SPLITS)}, got {split!r}")
            full = os.path.normpath(os.path.join(self.dataset_dir, os.path.expanduser(path)))
            entries.append((full, label, split or None))
        missing = set(missing_files([p for p, _, _ in entries]))
        for (where, row), (full, _, _) in zip(rows, entries):
            if full in missing:
                raise self.fail(f"{where}: image not found: {full} ({len(missing)} of {len(entries)} listed images "
                                f"are missing; paths are relative to {self.dataset_dir})")
        if len({s for _, _, s in entries}) > 1 and None in {s for _, _, s in entries}:
            raise self.fail(f"{self.list_path}: some entries have a split and some do not")
        # Cache paths are relative to the folder all images share (they may lie outside the list's).
        self.path_prefix = os.path.commonpath([self.dataset_dir] + [os.path.dirname(p) for p, _, _ in entries])
        return entries

    def read_csv(self):
        try:
            with open(self.list_path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                columns = [c.strip() for c in reader.fieldnames or []]
                if any(c not in columns for c in LIST_COLUMNS):
                    raise self.fail(f"{self.list_path}: the first line must name the columns path,label[,split]; "
                                    f"got {','.join(columns) or 'nothing'}")
                reader.fieldnames = columns
                return [(f"{self.list_path}:{reader.line_num}", row) for row in reader]
        except (UnicodeDecodeError, csv.Error) as e:
            raise self.fail(f"{self.list_path} is not a readable CSV file ({e})") from None

    def read_json(self):
        try:
            with open(self.list_path, encoding="utf-8") as f:
                data = json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            raise self.fail(f"{self.list_path} is not valid JSON ({e})") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise self.fail(f"{self.list_path}: expected a list of objects with the keys path, label[, split]")
        return [(f"{self.list_path} [entry {i}]", row) for i, row in enumerate(data)]
