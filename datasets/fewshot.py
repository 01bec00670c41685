"""Few-shot subsets, drawn as CoOp draws them and cached per (shots, seed) as portable JSON.

Sampling uses Python's global `random` in CoOp's order (train, then val with min(K, 4) shots),
so after `random.seed(SEED)` the selection equals CoOp's for the same split file. CoOp pickles
Datum objects with absolute paths; the cache here is `{"train": [[relpath, label, classname],
...], "val": [...]}` relative to the image folder, so it survives moving the data root. A
cache that no longer matches the split or the files on disk is an error, never silently used.
"""
import os
import random

from engine.errors import DatasetError

from .base import items_from_json, items_to_json, read_json, split_dataset_by_label, write_json_atomic

MAX_VAL_SHOTS = 4


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


def fewshot_cache_path(dataset_dir, num_shots, seed):
    return os.path.join(dataset_dir, "split_fewshot", f"shot_{num_shots}-seed_{seed}.json")


def load_or_sample_fewshot(train, val, *, num_shots, cache_path, path_prefix, name="dataset"):
    """(train, val) reduced to `num_shots` per class (val: min(K, 4)), read from `cache_path` if
    it exists, else sampled and saved there. `val=None` (ImageNet) caches train only."""
    if os.path.isfile(cache_path):
        print(f"Loading preprocessed few-shot data from {cache_path}")
        return _load_cache(train, val, cache_path, path_prefix, name)

    train = generate_fewshot_dataset(train, num_shots=num_shots)
    data = {"train": items_to_json(train, path_prefix)}
    if val is not None:
        val = generate_fewshot_dataset(val, num_shots=min(num_shots, MAX_VAL_SHOTS))
        data["val"] = items_to_json(val, path_prefix)
    print(f"Saving preprocessed few-shot data to {cache_path}")
    try:
        write_json_atomic(data, cache_path)
    except OSError as e:
        raise DatasetError(
            f"{name}: cannot write the few-shot cache {cache_path} ({e}). "
            "The dataset folder must be writable to store few-shot subsets.") from None
    return train, val


def _load_cache(train, val, cache_path, path_prefix, name):
    def stale(detail):
        return DatasetError(
            f"{name}: the few-shot cache {cache_path} {detail}\n"
            f"Delete {cache_path} and run again to draw the subset anew "
            "(the same split file and seed give the same selection).")

    try:
        data = read_json(cache_path, "Few-shot cache")
        if not isinstance(data, dict) or "train" not in data or (val is not None and "val" not in data):
            raise DatasetError(f"Few-shot cache {cache_path} must hold the keys 'train' and 'val'.")
        parts = [("train", train)] + ([("val", val)] if val is not None else [])
        loaded = {key: items_from_json(data[key], path_prefix, f"{cache_path} [{key}]") for key, _ in parts}
    except DatasetError as e:
        raise stale(f"cannot be read: {e}") from None

    problems, out = [], {}
    for key, split in parts:
        index = {os.path.normpath(d.impath): d for d in split}
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
        raise stale(f"does not match the current split and files ({len(problems)} entries):\n{shown}{more}")
    return out["train"], out.get("val", val)
