"""Few-shot subsets, drawn as CoOp draws them and cached per (shots, seed) as portable JSON.

Sampling uses Python's global `random` in CoOp's order (train, then val with min(K, 4) shots),
so after `random.seed(SEED)` the selection equals CoOp's for the same split file. CoOp pickles
Datum objects with absolute paths; the cache here is `{"train": [[relpath, label, classname],
...], "val": [...]}` relative to the image folder, so it survives moving the data root and can
be shared (the way to give everyone the same ImageNet subset, which has no split file). A
CoOp cache `shot_K-seed_S.pkl` next to it is read when no JSON exists, re-rooted if the data
moved, checked, and converted to JSON (the pkl is kept). A cache that no longer matches the
split or the files on disk is an error, never silently used.
"""
import contextlib
import operator
import os
import pickle
import random

from engine.errors import DatasetError

from .records import Datum, items_from_json, items_to_json, read_json, split_dataset_by_label, write_json_atomic

MAX_VAL_SHOTS = 4
_SAVE_DRAWN = [True]


@contextlib.contextmanager
def drawn_unsaved():
    """Subsets drawn inside are not written to the cache: a look-ahead at what a run will draw
    (the store pre-fill) must not fix a selection the run itself would make."""
    _SAVE_DRAWN[0] = False
    try:
        yield
    finally:
        _SAVE_DRAWN[0] = True
CONVERTED_FROM = "converted_from"  # key of a cache converted from CoOp's pickle: the pickle's name


def generate_fewshot_dataset(*data_sources, num_shots=-1, repeat=False):
    """Per label (first-appearance order) `random.sample(items, K)`; with fewer than K items all
    of them, or `random.choices(items, k=K)` when `repeat`. One source -> one list."""
    if num_shots < 1:
        return data_sources[0] if len(data_sources) == 1 else list(data_sources)
    print(f"Creating a {num_shots}-shot dataset")
    output = []
    for data_source in data_sources:
        dataset = []
        for items in split_dataset_by_label(data_source).values():
            if len(items) >= num_shots:
                dataset.extend(random.sample(items, num_shots))
            elif repeat:
                dataset.extend(random.choices(items, k=num_shots))
            else:
                dataset.extend(items)
        output.append(dataset)
    return output[0] if len(output) == 1 else output


def carve_val(pool, train, num_shots, seed):
    """DATASET.VAL_FROM_TRAIN: a few-shot validation split of min(K, 4) images per class drawn
    from the training images that are not in the few-shot training set `train`, so that choices
    made on it never see a test image (ImageNet's own val is its test set). Drawn with its own
    generator seeded by `seed` over path-sorted candidates: the global `random` stream, and so the
    reference's draws, stay untouched."""
    taken = {d.impath for d in train}
    rng = random.Random(f"val-from-train-{seed}")
    k = min(int(num_shots), MAX_VAL_SHOTS)
    val = []
    for items in split_dataset_by_label(pool).values():
        rest = sorted((d for d in items if d.impath not in taken), key=lambda d: d.impath)
        val.extend(rng.sample(rest, min(k, len(rest))))
    return val


def fewshot_cache_path(dataset_dir, num_shots, seed, variant=""):
    """`variant`: a sub-folder for the subsets of a split other than the official one."""
    return os.path.join(dataset_dir, "split_fewshot", variant, f"shot_{num_shots}-seed_{seed}.json")


def load_or_sample_fewshot(train, val, *, num_shots, cache_path, path_prefix, name="dataset", dataset_dir=None):
    """(train, val, origin): train and val reduced to `num_shots` per class (val: min(K, 4)), read
    from `cache_path` if it exists (else from CoOp's pickle beside it), else sampled and saved
    there; origin is "cache", "coop-pkl" (also for a JSON converted from one) or "sampled".
    `val=None` (ImageNet) caches train only. `dataset_dir` is where re-rooted pickle paths must land."""
    if os.path.isfile(cache_path):
        print(f"Loading preprocessed few-shot data from {cache_path}")
        return _load_cache(train, val, cache_path, path_prefix, name)
    pkl_path = os.path.splitext(cache_path)[0] + ".pkl"
    if os.path.isfile(pkl_path):
        print(f"Loading preprocessed few-shot data from {pkl_path} (CoOp's pickle)")
        return _convert_pickle(train, val, pkl_path, cache_path, path_prefix, dataset_dir or path_prefix, name) + (
            "coop-pkl",)

    train = generate_fewshot_dataset(train, num_shots=num_shots)
    data = {"train": items_to_json(train, path_prefix)}
    if val is not None:
        val = generate_fewshot_dataset(val, num_shots=min(num_shots, MAX_VAL_SHOTS))
        data["val"] = items_to_json(val, path_prefix)
    if not _SAVE_DRAWN[0]:
        return train, val, "sampled"
    print(f"Saving preprocessed few-shot data to {cache_path}")
    try:
        write_json_atomic(data, cache_path)
    except OSError as e:
        raise DatasetError(
            f"{name}: cannot write the few-shot cache {cache_path} ({e}). "
            "The dataset folder must be writable to store few-shot subsets.") from None
    return train, val, "sampled"


def _stale(name, cache_path, detail):
    return DatasetError(
        f"{name}: the few-shot cache {cache_path} {detail}\n"
        f"Delete {cache_path} and run again to draw the subset anew "
        "(the same split file and seed give the same selection).")


def _parts(train, val):
    return [("train", train)] + ([("val", val)] if val is not None else [])


_INDEXES = []  # per process: [(split, {normalised path: Datum})], the last few splits indexed


def _path_index(split):
    """{normalised path: Datum} of a split; a sweep's runs share the split's Datums (records.py),
    so the index of a 100k-image split is built once per process, not once per run."""
    for items, index in _INDEXES:
        if len(items) == len(split) and all(map(operator.is_, items, split)):
            return index
    index = {os.path.normpath(d.impath): d for d in split}
    _INDEXES.insert(0, (list(split), index))
    del _INDEXES[4:]
    return index


def _load_cache(train, val, cache_path, path_prefix, name):
    try:
        data = read_json(cache_path, "Few-shot cache")
        if not isinstance(data, dict) or "train" not in data or (val is not None and "val" not in data):
            raise DatasetError(f"Few-shot cache {cache_path} must hold the keys 'train' and 'val'.")
        loaded = {key: items_from_json(data[key], path_prefix, f"{cache_path} [{key}]")
                  for key, _ in _parts(train, val)}
    except DatasetError as e:
        raise _stale(name, cache_path, f"cannot be read: {e}") from None
    out = _match(loaded, train, val, cache_path, path_prefix, name)
    return out["train"], out.get("val", val), "coop-pkl" if CONVERTED_FROM in data else "cache"


def _match(loaded, train, val, cache_path, path_prefix, name):
    """The current split's items for the cached ones, in cache order; any entry that is not a
    file, not in the split, or labelled differently there makes the cache stale."""
    problems, out = [], {}
    for key, split in _parts(train, val):
        index = _path_index(split)
        out[key] = []
        for d in loaded[key]:
            rel = os.path.relpath(d.impath, path_prefix)
            current = index.get(os.path.normpath(d.impath))
            if not os.path.isfile(d.impath):
                problems.append(f"{key}: {rel} does not exist")
            elif current is None:
                problems.append(f"{key}: {rel} is not in the current {key} split")
            elif (current.label, current.classname) != (d.label, d.classname):
                problems.append(
                    f"{key}: {rel} has label {d.label} ({d.classname!r}) in the cache but "
                    f"{current.label} ({current.classname!r}) in the split")
            else:
                out[key].append(current)
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise _stale(name, cache_path,
                     f"does not match the current split and files ({len(problems)} entries):\n{shown}{more}")
    return out


# ---------------------------------------------------------------------------------------------
# CoOp's pickled caches

DASSL_DATUM = ("dassl.data.datasets.base_dataset", "Datum")


class _PickledDatum:
    """Takes the place of Dassl's Datum while unpickling: it only receives the pickled
    attributes (`_impath`, `_label`, `_domain`, `_classname`) and runs no code of its own."""


class _CoOpUnpickler(pickle.Unpickler):
    """Resolves Dassl's Datum to a plain record and refuses every other global, so a pickle
    cannot make unpickling call anything (and dassl need not be installed)."""

    def find_class(self, module, name):
        if (module, name) == DASSL_DATUM:
            return _PickledDatum
        raise pickle.UnpicklingError(f"it refers to {module}.{name}; only {'.'.join(DASSL_DATUM)} is accepted")


def read_coop_pickle(pkl_path, keys=("train", "val")):
    """CoOp's `{"train": [Datum...], "val": [...]}` -> {key: [Datum]} with the pickled (absolute) paths."""
    try:
        with open(pkl_path, "rb") as f:
            data = _CoOpUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DatasetError(f"cannot be read as CoOp's few-shot pickle: {e}") from None
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise DatasetError(f"must hold a dict with the keys {', '.join(map(repr, keys))}")
    out = {}
    for key in keys:
        items = data[key]
        if not isinstance(items, list):
            raise DatasetError(f"[{key}] is {type(items).__name__}, expected a list of Datum")
        out[key] = []
        for i, rec in enumerate(items):
            attrs = vars(rec) if isinstance(rec, _PickledDatum) else {}
            impath, label, classname = attrs.get("_impath"), attrs.get("_label"), attrs.get("_classname", "")
            if not (isinstance(impath, str) and isinstance(label, int) and not isinstance(label, bool)
                    and isinstance(classname, str)):
                raise DatasetError(
                    f"[{key}] entry {i} is not a Datum with a str path, an int label and a str class name")
            out[key].append(Datum(impath=impath, label=label, classname=classname))
    return out


def reroot(loaded, known, dataset_dir):
    """Pickled absolute paths -> paths under `dataset_dir`. When the data root moved, the old
    dataset folder is the prefix left after removing the longest tail that, joined to
    `dataset_dir`, names an image of the current split; that prefix is swapped on every path.
    Returns (loaded, old prefix or None)."""
    items = [d for key in loaded for d in loaded[key]]
    if all(os.path.normpath(d.impath) in known for d in items):
        return loaded, None
    old = None
    for d in items[:100]:
        parts = d.impath.replace("\\", "/").split("/")
        for i in range(1, len(parts)):
            if os.path.normpath(os.path.join(dataset_dir, *parts[i:])) in known:
                old = "/".join(parts[:i])
                break
        if old is not None:
            break
    if old is None:
        return loaded, None

    def moved(d):
        p = d.impath.replace("\\", "/")
        if not p.startswith(old + "/"):
            return d
        return Datum(impath=os.path.join(dataset_dir, *p[len(old) + 1:].split("/")), label=d.label,
                     classname=d.classname)

    return {key: [moved(d) for d in v] for key, v in loaded.items()}, old


def _convert_pickle(train, val, pkl_path, cache_path, path_prefix, dataset_dir, name):
    keys = [key for key, _ in _parts(train, val)]
    try:
        loaded = read_coop_pickle(pkl_path, keys)
    except DatasetError as e:
        raise _stale(name, pkl_path, str(e)) from None
    known = {os.path.normpath(d.impath) for _, split in _parts(train, val) for d in split}
    loaded, old = reroot(loaded, known, dataset_dir)
    if old is not None:
        print(f"Re-rooted the pickled paths from {old} to {dataset_dir}")
    out = _match(loaded, train, val, pkl_path, path_prefix, name)
    data = {key: items_to_json(out[key], path_prefix) for key in keys}
    data[CONVERTED_FROM] = os.path.basename(pkl_path)
    try:
        write_json_atomic(data, cache_path)
        print(f"Converted it to {cache_path} (the .pkl is kept; the JSON is used from now on)")
    except OSError as e:
        print(f"Warning: could not write {cache_path} ({e}); the pickle will be read again next time")
    return out["train"], out.get("val", val)
