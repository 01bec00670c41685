"""Check that every image a run will read can be opened, before any training.

A damaged or truncated file otherwise surfaces only when the test loader reaches it, after all
epochs. The check opens each file's header with PIL (cheap: no pixel decoding) and names every
bad file in one message. Files that passed are remembered by identity (path, size, mtime) in a
small JSON file under the user's cache, so a rerun or the next run on the same data checks only
what changed.
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


def check_images(paths, key, cache_path=None):
    """Raise DatasetError naming every path that cannot be opened as an image."""
    cache_path = cache_path or _cache_path(key)
    try:
        with open(cache_path, encoding="utf-8") as f:
            known = json.load(f)
    except (OSError, ValueError):
        known = {}
    good, bad = {}, []
    for path in sorted(set(paths)):
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
    if len(good) != len(known) or any(known.get(p) != v for p, v in good.items()):
        try:
            save_json(good, cache_path)
        except OSError:
            pass  # the check still happened; it is only redone next time
    if bad:
        raise DatasetError(f"{len(bad)} image file(s) cannot be opened; replace or remove them (and their "
                           "entries in the split file) before running:\n  " + "\n  ".join(bad))
