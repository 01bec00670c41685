"""FEATURES.MODE cached and the feature store: same results structure as online, reuse across
runs, stale/corrupt entries rebuilt, concurrent writers safe."""
import json
import multiprocessing as mp
import os

import pytest
import torch

import train
from engine import features as features_mod
from engine.feature_store import Namespace
from runs import results

RECIPE = "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml"


@pytest.fixture()
def data_root(tmp_path):
    from synthetic.layouts import write_eurosat

    write_eurosat(str(tmp_path / "data"), per_class=12)
    return str(tmp_path / "data")


def argv(root, out, backbone, cache, mode="cached", seed=1, shots=2, epochs=3):
    return ["--root", root, "--seed", str(seed), "--trainer", "TaskRes", "--dataset-config-file",
            "configs/datasets/eurosat.yaml", "--config-file", RECIPE, "--output-dir", out,
            "DATASET.NUM_SHOTS", str(shots), "MODEL.BACKBONE.NAME", backbone, "OPTIM.MAX_EPOCH", str(epochs),
            "DATALOADER.NUM_WORKERS", "0", "TRAIN.TENSORBOARD", "False", "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5",
            "FEATURES.MODE", mode, "FEATURES.NUM_VIEWS", "3", "FEATURES.CACHE_DIR", cache]


@pytest.fixture()
def count_encodes(monkeypatch):
    calls = []
    original = features_mod.CachedSource._encode_into

    def counting(self, ns, pairs, train_split):
        calls.append(len(pairs))
        return original(self, ns, pairs, train_split)

    monkeypatch.setattr(features_mod.CachedSource, "_encode_into", counting)
    monkeypatch.setattr(features_mod, "_NAMESPACES", {})  # no in-memory reuse between tests
    return calls


def chunks(cache):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(cache) for f in files if f.startswith("chunk-"))


def test_cached_and_online_write_the_same_structure(data_root, tiny_clip_path, tmp_path, count_encodes):
    cache = str(tmp_path / "cache")
    assert train.main(argv(data_root, str(tmp_path / "c"), tiny_clip_path, cache)) == 0
    assert train.main(argv(data_root, str(tmp_path / "o"), tiny_clip_path, cache, mode="online")) == 0
    rc, ro = results(tmp_path / "c"), results(tmp_path / "o")
    assert set(rc) == set(ro) and rc["total"] == ro["total"]
    assert sorted(os.listdir(tmp_path / "c" / "prompt_learner")) == sorted(os.listdir(tmp_path / "o" / "prompt_learner"))
    sc = torch.load(tmp_path / "c" / "prompt_learner" / "model.pth.tar-3", weights_only=True)
    so = torch.load(tmp_path / "o" / "prompt_learner" / "model.pth.tar-3", weights_only=True)
    assert sc["state_dict"].keys() == so["state_dict"].keys()
    assert torch.allclose(sc["state_dict"]["base_text_features"], so["state_dict"]["base_text_features"])
    assert abs(rc["accuracy"] - ro["accuracy"]) <= 10.0
    assert count_encodes == [2 * 10 * 3, 10 * 4]  # 2 shots x 10 classes x 3 views; then the test split


def test_features_are_reused_across_shots_and_seeds(data_root, tiny_clip_path, tmp_path, count_encodes):
    cache = str(tmp_path / "cache")
    train.main(argv(data_root, str(tmp_path / "a"), tiny_clip_path, cache, shots=4, seed=1))
    first = list(count_encodes)
    train.main(argv(data_root, str(tmp_path / "b"), tiny_clip_path, cache, shots=4, seed=1))
    assert count_encodes == first  # same run again: nothing encoded
    train.main(argv(data_root, str(tmp_path / "c"), tiny_clip_path, cache, shots=2, seed=1))
    # test features reused; a 2-shot subset of the same seed draws other images, encoded on demand
    assert len(count_encodes) <= len(first) + 1
    assert results(tmp_path / "a")["accuracy"] == results(tmp_path / "b")["accuracy"]


def test_corrupt_chunk_is_detected_and_rebuilt(data_root, tiny_clip_path, tmp_path, count_encodes, capsys):
    cache = str(tmp_path / "cache")
    train.main(argv(data_root, str(tmp_path / "a"), tiny_clip_path, cache))
    acc = results(tmp_path / "a")["accuracy"]
    victim = chunks(cache)[0]
    with open(victim, "wb") as f:
        f.write(b"not a torch file")
    features_mod._NAMESPACES.clear()
    count_encodes.clear()
    assert train.main(argv(data_root, str(tmp_path / "b"), tiny_clip_path, cache)) == 0
    assert "discarding" in capsys.readouterr().out
    assert len(count_encodes) == 1 and results(tmp_path / "b")["accuracy"] == acc


def test_changed_image_is_encoded_again(data_root, tiny_clip_path, tmp_path, count_encodes):
    cache = str(tmp_path / "cache")
    train.main(argv(data_root, str(tmp_path / "a"), tiny_clip_path, cache))
    split = json.load(open(os.path.join(data_root, "eurosat", "split_zhou_EuroSAT.json")))
    img = os.path.join(data_root, "eurosat", "2750", split["test"][0][0])
    os.utime(img, ns=(1, 1))  # a new file identity, as after replacing the image
    features_mod._NAMESPACES.clear()
    count_encodes.clear()
    train.main(argv(data_root, str(tmp_path / "b"), tiny_clip_path, cache))
    assert count_encodes == [1]


def test_wrong_shape_chunk_is_discarded(tmp_path):
    ns = Namespace(str(tmp_path), "weights", "tfm", 4)
    ns.add(["k1", "k2"], torch.ones(2, 4))
    path = chunks(str(tmp_path))[0]
    torch.save({"meta": ns.meta, "keys": ["k1"], "features": torch.ones(1, 3, dtype=torch.float16)}, path)
    fresh = Namespace(str(tmp_path), "weights", "tfm", 4)
    fresh.refresh()
    assert fresh.missing(["k1", "k2"]) == ["k1", "k2"] and not os.path.exists(path)


def _writer(root, start, n):
    ns = Namespace(root, "weights", "tfm", 8)
    for i in range(start, start + n, 5):
        keys = [f"k{j}" for j in range(i, i + 5)]
        ns.add(keys, torch.arange(i, i + 5, dtype=torch.float32)[:, None].expand(5, 8))


def test_concurrent_writers_do_not_corrupt_the_store(tmp_path, monkeypatch):
    import engine.feature_store as fs

    monkeypatch.setattr(fs, "MAX_CHUNKS", 6)  # force merges while the other process writes
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), s, 100)) for s in (0, 50)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    ns = Namespace(str(tmp_path), "weights", "tfm", 8)
    ns.refresh()
    keys = [f"k{j}" for j in range(150)]
    assert ns.missing(keys) == []  # a chunk is deleted only after a merged copy of it exists
    for k in keys:
        assert torch.all(ns.get([k]) == float(k[1:]))


def test_a_moved_dataset_gives_the_same_views_and_result(data_root, tiny_clip_path, tmp_path, count_encodes):
    import shutil

    cache = str(tmp_path / "cache")
    assert train.main(argv(data_root, str(tmp_path / "a"), tiny_clip_path, cache)) == 0
    moved = str(tmp_path / "elsewhere" / "data")
    shutil.copytree(data_root, moved)
    count_encodes.clear()
    assert train.main(argv(moved, str(tmp_path / "b"), tiny_clip_path, cache)) == 0
    assert count_encodes == [2 * 10 * 3, 10 * 4]  # other paths: encoded again, not read back
    a = torch.load(tmp_path / "a" / "prompt_learner" / "model.pth.tar-3", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "prompt_learner" / "model.pth.tar-3", weights_only=True)["state_dict"]
    assert torch.equal(a["text_feature_residuals"], b["text_feature_residuals"])
    assert results(tmp_path / "a")["accuracy"] == results(tmp_path / "b")["accuracy"]


def test_training_views_are_encoded_in_the_prepare_phase(data_root, tiny_clip_path, tmp_path, monkeypatch):
    from engine.trainer import Trainer

    trainers, phases = [], []
    before_train = Trainer.before_train

    def remember(self):
        trainers.append(self)
        return before_train(self)

    original = features_mod.CachedSource._encode_into

    def record_phase(self, ns, pairs, train_split):
        phases.append((train_split, list(trainers[-1].timer.active) if trainers else None))
        return original(self, ns, pairs, train_split)

    monkeypatch.setattr(Trainer, "before_train", remember)
    monkeypatch.setattr(features_mod.CachedSource, "_encode_into", record_phase)
    monkeypatch.setattr(features_mod, "_NAMESPACES", {})
    assert train.main(argv(data_root, str(tmp_path / "a"), tiny_clip_path, str(tmp_path / "cache"))) == 0
    assert (True, ["prepare"]) in phases  # the training views, timed as preparation
