"""Per-process caches that keep a sweep's per-run costs from growing with the dataset: the split
read once (its Datums shared), the few-shot path index, the image check's file, store keys with
one stat per image and the last large store read; each one gives way when a file changes."""
import os

import pytest
import torch

from datasets import records
from engine import features as features_mod
from engine import image_check
from engine.config import get_cfg_default
from engine.data import DataManager
from engine.errors import DatasetError
from engine.feature_store import image_key, image_keys


@pytest.fixture()
def data_root(tmp_path, monkeypatch):
    from synthetic.layouts import write_eurosat

    write_eurosat(str(tmp_path / "data"), per_class=6)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(records, "_SPLITS", {})
    monkeypatch.setattr(image_check, "_CHECKED", {})
    monkeypatch.setattr(image_check, "_KNOWN", {})
    monkeypatch.setattr(features_mod, "_NAMESPACES", {})
    monkeypatch.setattr(features_mod, "_STACKED", {})
    return str(tmp_path / "data")


def cfg_for(root, shots=2, seed=1, cache=""):
    cfg = get_cfg_default()
    cfg.DATASET.NAME, cfg.DATASET.ROOT, cfg.DATASET.NUM_SHOTS, cfg.SEED = "EuroSAT", root, shots, seed
    cfg.FEATURES.MODE, cfg.FEATURES.CACHE_DIR, cfg.FEATURES.NUM_VIEWS = "cached", cache, 2
    cfg.INPUT.SIZE = (16, 16)
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


def build(root, **kw):
    import random

    random.seed(kw.get("seed", 1))
    return DataManager(cfg_for(root, **kw), torch.device("cpu"))


def test_the_split_is_read_once_until_a_file_or_folder_changes(data_root, monkeypatch):
    reads = []
    real = records.read_split
    monkeypatch.setattr("datasets.base.read_split", lambda *a: reads.append(a) or real(*a))
    a = build(data_root)
    b = build(data_root, shots=4, seed=2)
    assert len(reads) == 1
    assert a.dataset.test == b.dataset.test and a.dataset.test is not b.dataset.test  # new lists...
    assert all(x is y for x, y in zip(a.dataset.test, b.dataset.test))  # ...of the same Datums
    split_file = os.path.join(data_root, "eurosat", "split_zhou_EuroSAT.json")
    os.utime(split_file, ns=(1, 1))  # the split file changed
    build(data_root)
    assert len(reads) == 2
    gone = b.dataset.test[0].impath  # a listed image removed: its folder changes, the check runs again
    os.remove(gone)
    with pytest.raises(DatasetError, match="missing"):
        build(data_root)
    assert len(reads) == 3


def test_store_keys_and_reads_follow_the_files(data_root, tmp_path):
    dm = build(data_root, cache=str(tmp_path / "store"))
    pairs = [(d.impath, v) for d in dm.dataset.test[:3] for v in (0, 1)]
    assert image_keys(pairs) == [image_key(p, v) for p, v in pairs]
    encoded = []

    def encode(x):
        encoded.append(len(x))
        return x.flatten(1)[:, :8] + 0.0

    def source():
        src = features_mod.CachedSource(dm.cfg, dm, encode, "cpu", "caches-test", "fp32")
        src._d = 8  # no probe encode for the width
        return src

    first, _ = source().split_features("test")
    n = len(dm.dataset.test)
    assert sum(encoded) == n
    assert torch.equal(source().split_features("test")[0], first) and sum(encoded) == n
    changed = dm.dataset.test[1].impath
    other = dm.dataset.test[0].impath
    with open(other, "rb") as f:
        content = f.read()
    with open(changed, "wb") as f:  # rewritten in place with another image: new size/mtime, new key
        f.write(content)
    feats = source().split_features("test")[0]
    assert sum(encoded) == n + 1  # only the changed image is encoded again
    assert torch.equal(feats[1], feats[0]) and not torch.equal(feats[1], first[1])


def test_image_check_keeps_other_runs_entries_and_rereads_a_changed_file(data_root, tmp_path):
    paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(data_root) for f in fs if f.endswith(".jpg"))
    cache = str(tmp_path / "checks.json")
    image_check.check_images(paths[:30], "k", cache)
    image_check._CHECKED.clear()  # another process
    image_check.check_images(paths[30:], "k", cache)
    import json

    assert set(json.load(open(cache))) == set(paths)
    image_check._CHECKED.clear()
    image_check._KNOWN.clear()
    with open(paths[3], "wb") as f:
        f.write(b"damaged")
    with pytest.raises(DatasetError, match=os.path.basename(paths[3])):
        image_check.check_images(paths, "k", cache)
