"""On-disk store of image features, shared by every run that uses the same backbone weights.

An entry is one image feature, keyed by (image path, file size, file mtime, view index) inside a
namespace that fixes the backbone weights and the transform. A namespace is a folder of
append-only chunk files; each chunk is written atomically and carries its namespace metadata,
so two processes filling the same namespace at once only add chunks, never rewrite each other's.
Loading validates every chunk (readable, right namespace, shape, dtype, and a SHA-256 of its keys
and feature bytes: torch's zip reader checks no CRC, so flipped bytes would otherwise load as
features); a bad chunk is reported, deleted and its entries are encoded again. A store that
cannot be written (read-only, full disk, file-size limit) keeps this process's new features in
memory, with one note, and the run goes on. A changed image file has a new key, so a
stale feature is never returned. Features are stored in fp16 to halve disk and memory.

Layout: <root>/<backbone id[:16]>/<namespace hash>/chunk-<uuid>.pt (+ meta.json for humans).
"""
import hashlib
import json
import os
import pickle
import uuid

import torch

from .io import StorageError, clean_orphans, save_json, save_torch

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


def content_hash(keys, feats):
    """SHA-256 of a chunk's keys and feature bytes, stored in the chunk and checked on read."""
    h = hashlib.sha256("\0".join(keys).encode("utf-8"))
    h.update(feats.contiguous().view(torch.uint8).numpy().data)
    return h.hexdigest()


class Namespace:
    """Features for one (backbone weights, transform) pair."""

    def __init__(self, root, backbone_id, transform_id, dim):
        self.meta = {"backbone": backbone_id, "transform": transform_id, "dim": int(dim),
                     "dtype": str(STORE_DTYPE)}
        self.dir = os.path.join(root, backbone_id[:16], _hash(json.dumps(self.meta, sort_keys=True))[:16])
        self._index = {}  # key -> fp16 feature [dim]
        self._seen = set()  # chunk files already read
        self.writable = True
        try:
            os.makedirs(self.dir, exist_ok=True)
            if not os.path.exists(os.path.join(self.dir, "meta.json")):
                save_json(self.meta, os.path.join(self.dir, "meta.json"))
        except (OSError, StorageError) as e:
            self._read_only(e)
        else:
            clean_orphans(self.dir)

    def _read_only(self, error):
        """From now on keep new features in memory only (this process's runs still share them)."""
        if self.writable:
            self.writable = False
            print(f"Note: the feature store cannot be written ({error}); this run keeps its features in "
                  "memory (set FEATURES.CACHE_DIR or FEATURE_CACHE_DIR to a writable folder to store them)")

    def _chunks(self):
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(f for f in names if f.startswith("chunk-") and f.endswith(".pt"))

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
        if not isinstance(data, dict):
            return self._drop(path, f"not a feature chunk ({type(data).__name__})")
        feats, keys = data.get("features"), data.get("keys")
        if data.get("meta") != self.meta:
            return self._drop(path, "written for another backbone/transform")
        if (not isinstance(feats, torch.Tensor) or feats.dtype != STORE_DTYPE or feats.dim() != 2
                or feats.shape[1] != self.meta["dim"] or not isinstance(keys, list) or len(keys) != len(feats)
                or not all(isinstance(k, str) for k in keys)):
            return self._drop(path, "wrong shape or dtype")
        if "sha256" not in data:
            return self._drop(path, "written before chunks carried a content hash")
        if data["sha256"] != content_hash(keys, feats):
            return self._drop(path, "content does not match its hash: the file is corrupted")
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

    def _write_chunk(self, keys, feats):
        """Write one chunk; its name, or None when the store cannot be written."""
        if not self.writable:
            return None
        name = f"chunk-{uuid.uuid4().hex}.pt"
        chunk = {"meta": self.meta, "keys": keys, "features": feats, "sha256": content_hash(keys, feats)}
        try:
            save_torch(chunk, os.path.join(self.dir, name))
        except StorageError as e:
            self._read_only(e)
            return None
        return name

    def add(self, keys, feats):
        keys = list(keys)
        feats = feats.detach().to("cpu", STORE_DTYPE).contiguous()
        name = self._write_chunk(keys, feats)
        if name is not None:
            self._seen.add(name)
        self._index.update(zip(keys, feats))
        if len(self._seen) > MAX_CHUNKS:
            self.compact()

    def compact(self):
        """Merge every chunk into one; other processes that still list the old names skip them."""
        old = self._chunks()  # listed first: chunks added while merging survive
        self.refresh()
        keys = list(self._index)
        name = self._write_chunk(keys, torch.stack([self._index[k] for k in keys]))
        if name is None:
            return
        for f in old:
            try:
                os.remove(os.path.join(self.dir, f))
            except FileNotFoundError:
                pass
        self._seen = {name}

    def get(self, keys):
        return torch.stack([self._index[k] for k in keys])
