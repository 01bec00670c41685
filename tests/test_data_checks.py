"""Data problems found before training: unreadable images, too few images per class, a
dataset folder that cannot hold the few-shot caches."""
import json
import os
import shutil

import pytest

import train
from engine.errors import DatasetError
from engine.image_check import check_images
from synthetic.layouts import write_eurosat

RECIPE = "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml"


@pytest.fixture()
def data_root(tmp_path):
    write_eurosat(str(tmp_path / "data"), per_class=8)
    return str(tmp_path / "data")


def args(root, out, clip_path, *opts):
    return [str(a) for a in ["--root", root, "--seed", 1, "--trainer", "TaskRes", "--dataset-config-file",
                             "configs/datasets/eurosat.yaml", "--config-file", RECIPE, "--output-dir", out,
                             "DATASET.NUM_SHOTS", 2, "MODEL.BACKBONE.NAME", clip_path, "OPTIM.MAX_EPOCH", 1,
                             "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False, *opts]]


def images(root):
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(root) for f in fs if f.endswith(".jpg"))


def test_every_bad_image_is_named_before_training(data_root, tiny_clip_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bad = images(data_root)[:2]
    for path in bad:
        with open(path, "wb") as f:
            f.write(b"not an image")
    out = str(tmp_path / "out")
    assert train.main(args(data_root, out, tiny_clip_path, "DATASET.NUM_SHOTS", -1)) == 2
    err = capsys.readouterr().err
    assert "2 image file(s) cannot be opened" in err and all(p in err for p in bad)
    assert not os.path.isdir(os.path.join(out, "prompt_learner"))  # nothing trained


def test_image_check_is_remembered_by_file_identity(data_root, tmp_path, monkeypatch):
    import engine.image_check as ic

    paths = images(data_root)
    cache = str(tmp_path / "checks.json")
    check_images(paths, "k", cache)
    opened = []
    real_open = ic.Image.open
    monkeypatch.setattr(ic.Image, "open", lambda p, *a, **k: opened.append(p) or real_open(p, *a, **k))
    check_images(paths, "k", cache)
    assert opened == []  # a rerun is free
    with open(paths[0], "wb") as f:
        f.write(b"damaged later")
    with pytest.raises(DatasetError, match=os.path.basename(paths[0])):
        check_images(paths, "k", cache)
    assert opened == [paths[0]]


def test_too_few_images_per_class_is_warned_and_recorded(data_root, tiny_clip_path, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert train.main(args(data_root, out, tiny_clip_path, "DATASET.NUM_SHOTS", 16)) == 0
    assert "have fewer than 16 training images and use all they have" in capsys.readouterr().out
    counts = json.load(open(os.path.join(out, "results.json")))["extras"]["train_images_per_class"]
    assert counts["requested"] == 16 and counts["max"] < 16 and counts["classes_with_fewer"] == 10


def test_read_only_dataset_folder_uses_a_user_cache(data_root, tiny_clip_path, tmp_path, capsys, monkeypatch):
    import datasets.base as base

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(base, "_writable", lambda folder: False)  # tests run as root: simulate it
    out = str(tmp_path / "out")
    assert train.main(args(data_root, out, tiny_clip_path)) == 0
    assert "is not writable; few-shot subsets are cached under" in capsys.readouterr().out
    assert not os.path.isdir(os.path.join(data_root, "eurosat", "split_fewshot"))
    cached = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "cache" / "taskres-splits") for f in fs]
    assert [os.path.basename(p) for p in cached] == ["shot_2-seed_1.json"]

    # An explicit location, and a cache already beside the data is still read from there.
    explicit = str(tmp_path / "splits")
    assert train.main(args(data_root, str(tmp_path / "o2"), tiny_clip_path, "DATASET.SPLIT_CACHE_DIR", explicit,
                           "DATASET.NUM_SHOTS", 1)) == 0
    assert any(f == "shot_1-seed_1.json" for _, _, fs in os.walk(explicit) for f in fs)
    beside = os.path.join(data_root, "eurosat", "split_fewshot")
    os.makedirs(beside)
    shutil.copy(cached[0], os.path.join(beside, "shot_2-seed_1.json"))
    assert train.main(args(data_root, str(tmp_path / "o3"), tiny_clip_path, "DATASET.SPLIT_CACHE_DIR",
                           explicit)) == 0
    assert f"Loading preprocessed few-shot data from {beside}" in capsys.readouterr().out
