"""Check that every image a run will read can be opened, before any training.

A damaged or truncated file otherwise surfaces only when the test loader reaches it, after all
epochs. The check opens each file's header with PIL (cheap: no pixel decoding) and names every
bad file in one message. Files that passed are remembered by identity (path, size, mtime) in a
small JSON file under the user's cache, so a rerun or the next run on the same data checks only
what changed; within one process (a sweep) that costs one stat per file.
"""
import hashlib
import json
import os

from PIL import Image, UnidentifiedImageError

from .errors import DatasetError
from .io import save_json


def _cache_path(key):
    root = os.path.join(os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "~/.cache")), "taskres-image-checks")
    return os.path.join(root, hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")


def _identity(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


# Per process: {cache file: {path: identity}} of the files that passed here, so a sweep's runs
# (which share their val and test images) cost one stat per file, not a read and a rewrite of
# the JSON file: a file whose identity is unchanged is not opened again.
_CHECKED = {}


_KNOWN = {}  # per process: {cache file: (its mtime, its entries)}, read again when it changes


def _mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _known(cache_path):
    mtime = _mtime(cache_path)
    hit = _KNOWN.get(cache_path)
    if hit is not None and hit[0] == mtime and mtime is not None:
        return hit[1]
    try:
        with open(cache_path, encoding="utf-8") as f:
            known = json.load(f)
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    _KNOWN[cache_path] = (mtime, known)
    return known


def check_images(paths, key, cache_path=None):
    """Raise DatasetError naming every path that cannot be opened as an image."""
    cache_path = cache_path or _cache_path(key)
    done = _CHECKED.setdefault(cache_path, {})
    todo = []
    for path in set(paths):
        try:
            if done.get(path) == _identity(path):
                continue
        except OSError:
            pass  # missing: the check below names it
        todo.append(path)
    if not todo:
        return
    todo.sort()
    known = _known(cache_path)
    good, bad = {}, []
    for path in todo:
        try:
            ident = _identity(path)
            if known.get(path) == ident:
                good[path] = ident
                continue
            with Image.open(path) as img:
                img.size  # noqa: B018 - reading the header is the check
            good[path] = ident
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
            bad.append(f"{path} ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'unreadable'})")
    done.update(good)
    new = sum(known.get(p) != v for p, v in good.items())
    # Rewritten when re-opening the new files next time would cost more than writing the file (a
    # few-shot subset's new files in a 100k-entry file: not each run); other runs' entries stay.
    if new and new * 20 >= len(known) + new:
        known.update(good)
        try:
            save_json(known, cache_path)
            _KNOWN[cache_path] = (_mtime(cache_path), known)
        except OSError:
            pass  # the check still happened; it is only redone next time
    if bad:
        raise DatasetError(f"{len(bad)} image file(s) cannot be opened; replace or remove them (and their "
                           "entries in the split file) before running:\n  " + "\n  ".join(bad))
