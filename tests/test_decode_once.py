"""Decode once per image: the views of an image share one decode, and every view tensor and
every encoded feature is bit-identical to decoding the file again for each view."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

import clip
from datasets.transforms import build_transform, read_image
from engine import features as features_mod
from engine.config import get_cfg_default
from engine.features import EncoderStats, _SeededViews, encode_views


def per_view_decode(path, view, transform, root):
    """The path before decode-once, frozen here: read and decode the file for every view."""
    img = read_image(path)
    seed = features_mod.view_seed(path, view, root)
    state = random.getstate()
    try:
        random.seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return transform(img)
    finally:
        random.setstate(state)


@pytest.fixture()
def photos(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        pixels = rng.integers(0, 256, (60 + 7 * i, 80, 3), dtype=np.uint8)
        path = tmp_path / f"img{i}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


def cfg_with(transforms, size=32):
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (size, size)
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.TRANSFORMS = transforms
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TEST.BATCH_SIZE = 7  # batches that cut through an image's views
    return cfg


@pytest.fixture()
def count_decodes(monkeypatch):
    calls = []

    def counting(path):
        calls.append(path)
        return read_image(path)

    monkeypatch.setattr(features_mod, "read_image", counting)
    return calls


def test_views_are_identical_to_decoding_per_view_and_decode_once(photos, tmp_path, count_decodes):
    cfg = cfg_with(["random_resized_crop", "random_flip", "colorjitter", "normalize"])
    tfm = build_transform(cfg, is_train=True)
    root = str(tmp_path)
    pairs = [(p, v) for p in photos for v in range(5)]
    views = _SeededViews(pairs, tfm, seeded=True, root=root)
    got = [views[i] for i in range(len(views))]
    assert count_decodes == photos  # one decode per image, in order
    for (p, v), tensor in zip(pairs, got):
        assert torch.equal(tensor, per_view_decode(p, v, tfm, root))
    assert not torch.equal(got[0], got[1])  # the views of one image do differ


def test_test_transform_reuses_the_decode_of_repeated_paths(photos, tmp_path, count_decodes):
    tfm = build_transform(cfg_with(["normalize"]), is_train=False)
    pairs = [(photos[0], 0), (photos[0], 0), (photos[1], 0), (photos[0], 0)]
    views = _SeededViews(pairs, tfm, seeded=False, root=str(tmp_path))
    got = [views[i] for i in range(len(pairs))]
    assert count_decodes == [photos[0], photos[1], photos[0]]  # only consecutive pairs share
    assert all(torch.equal(g, tfm(read_image(p))) for g, (p, _) in zip(got, pairs))


def test_encoded_features_are_bit_identical(photos, tmp_path, tiny_clip_path, count_decodes):
    cfg = cfg_with(["random_resized_crop", "random_flip", "normalize"], size=224)
    cfg.DATASET.ROOT = str(tmp_path)
    tfm = build_transform(cfg, is_train=True)
    model = clip.load(tiny_clip_path)
    pairs = [(p, v) for p in photos for v in range(3)]
    feats = encode_views(pairs, tfm, True, model.encode_image, cfg, torch.device("cpu"), EncoderStats())
    assert len(count_decodes) == len(photos)
    bs = cfg.DATALOADER.TEST.BATCH_SIZE
    with torch.no_grad():  # the same batches, each view decoded from its file again
        expected = torch.cat([model.encode_image(torch.stack([per_view_decode(p, v, tfm, str(tmp_path))
                                                              for p, v in pairs[i:i + bs]]))
                              for i in range(0, len(pairs), bs)])
    assert torch.equal(feats, expected)
