"""On-disk store of image features, shared by every run that uses the same backbone weights.

An entry is one image feature, keyed by (image path, file size, file mtime, view index) inside a
namespace that fixes the backbone weights and the transform. A namespace is a folder of
append-only chunk files; each chunk is written atomically and carries its namespace metadata,
so two processes filling the same namespace at once only add chunks, never rewrite each other's.
Loading validates every chunk (readable, right namespace, shape, dtype); a bad chunk is
reported, deleted and its entries are encoded again. A changed image file has a new key, so a
stale feature is never returned. Features are stored in fp16 to halve disk and memory.

Layout: <root>/<backbone id[:16]>/<namespace hash>/chunk-<uuid>.pt (+ meta.json for humans).
"""
import hashlib
import json
import os
import pickle
import uuid

import torch

from .io import save_json, save_torch

STORE_DTYPE = torch.float16
MAX_CHUNKS = 64  # merge chunks beyond this, so loading stays one read per namespace


def default_root():
    return os.environ.get("FEATURE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                  "taskres-features")


def image_key(path, view):
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{view}"


_ABSPATHS = {}  # per process: absolute path -> its normalised form (relative paths depend on the cwd)


def image_keys(pairs):
    """[image_key(path, view) for (path, view) in pairs] with one stat per distinct path."""
    bases, out = {}, []
    for path, view in pairs:
        base = bases.get(path)
        if base is None:
            st = os.stat(path)
            absolute = _ABSPATHS.get(path)
            if absolute is None:
                absolute = os.path.abspath(path)
                if os.path.isabs(path):
                    _ABSPATHS[path] = absolute
            base = bases[path] = f"{absolute}|{st.st_size}|{st.st_mtime_ns}|"
        out.append(f"{base}{view}")
    return out


def _hash(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Namespace:
    """Features for one (backbone weights, transform) pair."""

    def __init__(self, root, backbone_id, transform_id, dim):
        self.meta = {"backbone": backbone_id, "transform": transform_id, "dim": int(dim),
                     "dtype": str(STORE_DTYPE)}
        self.dir = os.path.join(root, backbone_id[:16], _hash(json.dumps(self.meta, sort_keys=True))[:16])
        self._index = {}  # key -> fp16 feature [dim]
        self._seen = set()  # chunk files already read
        os.makedirs(self.dir, exist_ok=True)
        if not os.path.exists(os.path.join(self.dir, "meta.json")):
            save_json(self.meta, os.path.join(self.dir, "meta.json"))

    def _chunks(self):
        return sorted(f for f in os.listdir(self.dir) if f.startswith("chunk-") and f.endswith(".pt"))

    def refresh(self):
        """Read chunks written since the last call (by this or another process)."""
        for name in self._chunks():
            if name in self._seen:
                continue
            path = os.path.join(self.dir, name)
            entries = self._read_chunk(path)
            if entries is not None:
                self._index.update(entries)
                self._seen.add(name)

    def _read_chunk(self, path):
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None  # merged away by another process; its entries live in the merged chunk
        except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as e:
            return self._drop(path, f"unreadable ({type(e).__name__})")
        feats, keys = data.get("features"), data.get("keys")
        if data.get("meta") != self.meta:
            return self._drop(path, "written for another backbone/transform")
        if (not isinstance(feats, torch.Tensor) or feats.dtype != STORE_DTYPE or feats.dim() != 2
                or feats.shape[1] != self.meta["dim"] or not isinstance(keys, list) or len(keys) != len(feats)):
            return self._drop(path, "wrong shape or dtype")
        return dict(zip(keys, feats))

    @staticmethod
    def _drop(path, why):
        print(f"Feature cache: discarding {path} ({why}); its images will be encoded again")
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        return None

    def missing(self, keys):
        return [k for k in keys if k not in self._index]

    def add(self, keys, feats):
        feats = feats.detach().to("cpu", STORE_DTYPE).contiguous()
        name = f"chunk-{uuid.uuid4().hex}.pt"
        save_torch({"meta": self.meta, "keys": list(keys), "features": feats}, os.path.join(self.dir, name))
        self._seen.add(name)
        self._index.update(zip(keys, feats))
        if len(self._seen) > MAX_CHUNKS:
            self.compact()

    def compact(self):
        """Merge every chunk into one; other processes that still list the old names skip them."""
        old = self._chunks()  # listed first: chunks added while merging survive
        self.refresh()
        keys = list(self._index)
        name = f"chunk-{uuid.uuid4().hex}.pt"
        save_torch({"meta": self.meta, "keys": keys, "features": torch.stack([self._index[k] for k in keys])},
                   os.path.join(self.dir, name))
        for f in old:
            try:
                os.remove(os.path.join(self.dir, f))
            except FileNotFoundError:
                pass
        self._seen = {name}

    def get(self, keys):
        return torch.stack([self._index[k] for k in keys])
