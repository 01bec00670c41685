"""Dataset records and CoOp's split files: `Datum`, the split JSON format and its relative-path
rule, and the file helpers that the dataset flow (base.py) and the few-shot caches (fewshot.py)
both use. It imports neither of them.
"""
import json
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass

from engine.errors import DatasetError


@dataclass(frozen=True, slots=True)
class Datum:
    """One labelled image. Files are not checked here (that would stat every image on every
    construction); splits and caches check them once, where they are loaded."""

    impath: str
    label: int
    domain: int = 0
    classname: str = ""


def split_dataset_by_label(data_source):
    """{label: [Datum]} in first-appearance order (few-shot sampling depends on this order)."""
    groups = defaultdict(list)
    for d in data_source:
        groups[d.label].append(d)
    return groups

# ---------------------------------------------------------------------------------------------
# Files


def listdir_nohidden(path, sort=True):
    names = [n for n in os.listdir(path) if not n.startswith(".")]
    return sorted(names) if sort else names


def write_json_atomic(obj, path):
    """json.dump with CoOp's formatting, via a hidden temp file in the same folder + rename, so
    a killed run leaves the old file or the new one. Open mode "x" keeps the user's umask
    (split files on shared storage must stay readable by others)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            json.dump(obj, f, indent=4, separators=(",", ": "))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetError(f"{what} {path} is not valid JSON ({e}).") from None


def to_relpath(impath, path_prefix):
    """The split-file path of an image: relative to the prefix, always with '/'."""
    rel = os.path.relpath(impath, path_prefix)
    if rel.startswith(".."):
        raise ValueError(f"{impath} is not under {path_prefix}")
    return rel.replace(os.sep, "/")


def items_to_json(items, path_prefix):
    return [[to_relpath(d.impath, path_prefix), int(d.label), d.classname] for d in items]


def items_from_json(entries, path_prefix, where):
    """[[relpath, label, classname], ...] -> [Datum]; `where` names the source in errors."""
    if not isinstance(entries, list):
        raise DatasetError(f"{where}: expected a list of [relpath, label, classname] entries.")
    out = []
    for i, e in enumerate(entries):
        try:
            rel, label, classname = e
            out.append(Datum(impath=os.path.join(path_prefix, rel), label=int(label), classname=str(classname)))
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: entry {i} is {e!r}, expected [relpath, label, classname].") from None
    return out


def save_split(train, val, test, filepath, path_prefix):
    split = {k: items_to_json(v, path_prefix) for k, v in (("train", train), ("val", val), ("test", test))}
    write_json_atomic(split, filepath)
    print(f"Saved split to {filepath}")


def read_split(filepath, path_prefix):
    """CoOp's split JSON -> (train, val, test) with absolute paths under `path_prefix`."""
    print(f"Reading split from {filepath}")
    split = read_json(filepath, "Split file")
    if not isinstance(split, dict) or any(k not in split for k in ("train", "val", "test")):
        raise DatasetError(f"Split file {filepath} must hold the keys 'train', 'val' and 'test'.")
    return tuple(items_from_json(split[k], path_prefix, f"{filepath} [{k}]") for k in ("train", "val", "test"))


# Per process: a split file read, its images found complete: {(split file, prefix): (its size and
# mtime, (train, val, test), {image folder: mtime})}. Reused while the file and every image
# folder are unchanged (adding, removing or renaming a file changes its folder's mtime), so a
# sweep's runs do not parse the split and create its Datums (frozen, shared) again.
_SPLITS = {}


def _mtimes(folders):
    out = {}
    for folder in folders:
        try:
            out[folder] = os.stat(folder).st_mtime_ns
        except OSError:
            out[folder] = None
    return out


def known_split(filepath, path_prefix):
    """(train, val, test) as new lists of the Datums read before in this process, or None."""
    hit = _SPLITS.get((filepath, path_prefix))
    if hit is None:
        return None
    ident, splits, folders = hit
    try:
        st = os.stat(filepath)
    except OSError:
        return None
    if (st.st_size, st.st_mtime_ns) != ident or _mtimes(folders) != folders:
        return None
    return tuple(list(items) for items in splits)


def remember_split(filepath, path_prefix, splits, ident):
    """Remember a split read from `filepath` whose size and mtime were `ident` before reading."""
    folders = {os.path.dirname(d.impath) for items in splits for d in items}
    _SPLITS[(filepath, path_prefix)] = (ident, tuple(list(items) for items in splits), _mtimes(folders))


def file_ident(filepath):
    st = os.stat(filepath)
    return st.st_size, st.st_mtime_ns


def missing_files(impaths):
    """Paths that do not exist. One listdir per folder instead of one stat per image, which
    matters on network file systems with 100k-image datasets."""
    listings = {}
    missing = []
    for p in impaths:
        folder, name = os.path.split(p)
        names = listings.get(folder)
        if names is None:
            try:
                names = set(os.listdir(folder))
            except (FileNotFoundError, NotADirectoryError):
                names = set()
            listings[folder] = names
        if name not in names:
            missing.append(p)
    return missing
