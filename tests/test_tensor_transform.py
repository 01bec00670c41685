"""INPUT.TRANSFORM_BACKEND tensor: the training views on uint8 tensors (torchvision v2, antialias).
The default stays the PIL reference; the tensor path draws the same crop boxes and flips for a
view's seed, differs from PIL bicubic within a bound, keys its own store namespace, and trains."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

import clip
from benchmarks.pipeline import photo_like
from datasets.transforms import TensorCompose, build_transform, describe_transform, read_image, read_image_tensor
from engine.config import get_cfg_default
from engine.errors import ConfigError
from engine.features import EncoderStats, _SeededViews, encode_views, seeded_view
from runs import results, run
from synthetic.layouts import write_eurosat

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
RRC = ["random_resized_crop", "random_flip", "normalize"]


def cfg_with(transforms, backend="pil", size=224):
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (size, size)
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.TRANSFORMS = transforms
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = CLIP_MEAN, CLIP_STD
    cfg.INPUT.TRANSFORM_BACKEND = backend
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A photo-sized JPEG with photo-like detail (smooth noise, hard edges, grain)."""
    path = str(tmp_path_factory.mktemp("photo") / "photo.jpg")
    photo_like(np.random.default_rng(3)).save(path, quality=90)
    return path


def views(path, tfm, n, root):
    read = read_image_tensor if isinstance(tfm, TensorCompose) else read_image
    img = read(path)
    return [seeded_view(img, path, v, tfm, True, root) for v in range(n)]


def test_default_is_the_pil_reference(photo):
    cfg = get_cfg_default()
    assert cfg.INPUT.TRANSFORM_BACKEND == "pil"
    cfg = cfg_with(RRC)
    cfg.INPUT.TRANSFORM_BACKEND = get_cfg_default().INPUT.TRANSFORM_BACKEND
    tfm = build_transform(cfg, is_train=True)
    assert not isinstance(tfm, TensorCompose)
    reference = T.Compose([T.RandomResizedCrop(224, interpolation=T.InterpolationMode.BICUBIC),
                           T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    root = os.path.dirname(photo)
    for got, want in zip(views(photo, tfm, 6, root), views(photo, reference, 6, root)):
        assert torch.equal(got, want)
    ds = _SeededViews([(photo, v) for v in range(3)], tfm, seeded=True, root=root)
    assert all(torch.equal(ds[v], w) for v, w in zip(range(3), views(photo, reference, 3, root)))


def test_jpeg_decode_matches_pil_and_other_formats_fall_back(tmp_path, photo):
    rng = np.random.default_rng(0)
    gray, cmyk = str(tmp_path / "gray.jpg"), str(tmp_path / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).save(gray, quality=90)
    Image.fromarray(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8), "CMYK").save(cmyk, quality=90)
    for path in (photo, gray, cmyk):  # the same RGB pixels as PIL's decode + convert("RGB")
        assert torch.equal(read_image_tensor(path), torch.from_numpy(np.array(read_image(path))).permute(2, 0, 1))
    png = str(tmp_path / "gray.png")
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).save(png)  # grayscale, not a JPEG
    x = read_image_tensor(png)
    assert x.dtype == torch.uint8 and x.shape == (3, 6, 8) and torch.equal(x[0], x[2])
    from engine.errors import DatasetError
    with pytest.raises(DatasetError, match="not found"):
        read_image_tensor(str(tmp_path / "missing.jpg"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(open(photo, "rb").read()[:200])
    with pytest.raises(DatasetError, match="Cannot read"):
        read_image_tensor(str(bad))


def test_same_crop_boxes_and_flips_as_pil(photo, monkeypatch):
    root = os.path.dirname(photo)
    # Without resampling (random crop + flip) the two paths must agree to float rounding.
    pil, ten = (build_transform(cfg_with(["random_crop", "random_flip", "normalize"], b, size=200), True)
                for b in ("pil", "tensor"))
    a, b = views(photo, pil, 12, root), views(photo, ten, 12, root)
    assert len({tuple(x[0, 0, :4].tolist()) for x in a}) > 6  # the views do differ
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-5)
    # Random resized crop: the boxes drawn are the same, view by view.
    drawn = []
    get_params = T.RandomResizedCrop.get_params

    def recording(img, scale, ratio):
        drawn.append(get_params(img, scale, ratio))
        return drawn[-1]

    monkeypatch.setattr(T.RandomResizedCrop, "get_params", staticmethod(recording))
    pil, ten = (build_transform(cfg_with(RRC, b), True) for b in ("pil", "tensor"))
    a = views(photo, pil, 20, root)
    boxes_pil, drawn[:] = list(drawn), []
    b = views(photo, ten, 20, root)
    assert drawn == boxes_pil and len(set(drawn)) == 20
    # ... and so are the flips: each tensor view is far closer to its PIL view than to its mirror.
    for x, y in zip(a, b):
        assert (x - y).abs().mean() < 0.2 * (x.flip(-1) - y).abs().mean()


def test_deviation_from_pil_bicubic_is_bounded(photo, tiny_clip_path):
    """The bounds README states: normalised tensors within 0.1 (about 7 uint8 levels) at most and
    0.002 on average; tiny-CLIP features within 0.5% (relative L2)."""
    root = os.path.dirname(photo)
    pil, ten = (build_transform(cfg_with(RRC, b), True) for b in ("pil", "tensor"))
    a, b = torch.stack(views(photo, pil, 10, root)), torch.stack(views(photo, ten, 10, root))
    diff = (a - b).abs()
    assert 0 < diff.max() < 0.1 and diff.mean() < 0.002
    model = clip.load(tiny_clip_path)
    with torch.no_grad():
        fa, fb = model.encode_image(a).float(), model.encode_image(b).float()
    rel = (fa - fb).norm(dim=-1) / fa.norm(dim=-1)
    assert rel.max() < 0.005, rel


def test_identity_and_config_errors(capsys):
    pil_train, pil_test = describe_transform(cfg_with(RRC), True), describe_transform(cfg_with(RRC), False)
    ten = cfg_with(RRC, "tensor")
    assert describe_transform(ten, True) != pil_train  # its own store namespace for training views
    assert describe_transform(ten, False) == pil_test  # the test pipeline is PIL on both
    assert not isinstance(build_transform(ten, False), TensorCompose)
    build_transform(ten, True)
    lines = capsys.readouterr().out.splitlines()
    assert "+ uint8 tensor backend (torchvision kernels, antialias)" in lines
    with pytest.raises(ConfigError, match="colorjitter"):
        build_transform(cfg_with(RRC + ["colorjitter"], "tensor"), True)
    with pytest.raises(ConfigError, match="TRANSFORM_BACKEND"):
        build_transform(cfg_with(RRC, "cuda"), True)
    # no crop chosen: resized to SIZE on the tensor path too
    x = build_transform(cfg_with(["random_flip"], "tensor", size=32), True)(Image.new("RGB", (64, 48), (255, 0, 0)))
    assert x.shape == (3, 32, 32) and float(x.max()) == 1.0


def test_encoded_views_use_the_tensor_decode(photo, tiny_clip_path, monkeypatch):
    """The store's loader decodes with torchvision for the tensor path, once per image."""
    from engine import features as features_mod

    decoded = []
    monkeypatch.setattr(TensorCompose, "read", staticmethod(lambda p: decoded.append(p) or read_image_tensor(p)))
    monkeypatch.setattr(features_mod, "read_image", lambda p: pytest.fail("PIL decode on the tensor path"))
    cfg = cfg_with(RRC, "tensor")
    cfg.DATASET.ROOT = os.path.dirname(photo)
    tfm = build_transform(cfg, True)
    model = clip.load(tiny_clip_path)
    pairs = [(photo, v) for v in range(4)]
    feats = encode_views(pairs, tfm, True, model.encode_image, cfg, torch.device("cpu"), EncoderStats())
    assert decoded == [photo] and feats.shape[0] == 4
    with torch.no_grad():
        want = model.encode_image(torch.stack(views(photo, tfm, 4, cfg.DATASET.ROOT)))
    assert torch.equal(feats, want)


def taskres(root, out, clip_path, cache, backend, epochs):
    return ["--root", root, "--seed", 1, "--trainer", "TaskRes",
            "--dataset-config-file", "configs/datasets/eurosat.yaml",
            "--config-file", "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml",
            "--output-dir", out, "DATASET.NUM_SHOTS", 8, "TRAINER.TaskRes.RESIDUAL_SCALE", 0.5,
            "MODEL.BACKBONE.NAME", clip_path, "OPTIM.MAX_EPOCH", epochs, "DATALOADER.NUM_WORKERS", 0,
            "TRAIN.TENSORBOARD", False, "FEATURES.MODE", "cached", "FEATURES.NUM_VIEWS", 4,
            "FEATURES.CACHE_DIR", cache, "INPUT.TRANSFORM_BACKEND", backend]


def namespaces(cache):
    return {json.load(open(os.path.join(d, "meta.json")))["transform"]: d
            for d, _, files in os.walk(cache) if "meta.json" in files}


def test_cached_taskres_on_the_tensor_path_beats_zero_shot(tmp_path, tiny_clip_path):
    root = str(tmp_path / "data")
    write_eurosat(root, per_class=20)
    cache = str(tmp_path / "store")
    run(taskres(root, str(tmp_path / "zs"), tiny_clip_path, cache, "tensor", 0))
    run(taskres(root, str(tmp_path / "tensor"), tiny_clip_path, cache, "tensor", 30))
    zero_shot, trained = results(str(tmp_path / "zs"))["accuracy"], results(str(tmp_path / "tensor"))["accuracy"]
    assert trained >= zero_shot + 10.0, (trained, zero_shot)
    ns_tensor = namespaces(cache)
    run(taskres(root, str(tmp_path / "pil"), tiny_clip_path, cache, "pil", 1))
    ns_all = namespaces(cache)
    train_ns = [t for t in ns_all if t.startswith("train: ")]
    assert len(train_ns) == 2 and sum("uint8 tensor" in t for t in train_ns) == 1  # never mixed
    assert len(ns_all) == len(ns_tensor) + 1  # the PIL run reused the stored test features
