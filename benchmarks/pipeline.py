"""The image pipeline's views/s: one decode per (image, view), one decode per image, and the uint8
tensor path (INPUT.TRANSFORM_BACKEND tensor), next to the image encoder's images/s.

    python benchmarks/pipeline.py [--images 40] [--views 10] [--repeats 3] [--work DIR]
                                  [--encoders tiny rn50] [--encoder-batch N] [--device auto]

Writes --images photo-sized JPEGs (500x375, quality 90) with photo-like detail (smooth noise at
several scales, hard-edged shapes, fine grain: a flat synthetic image would decode unrealistically
fast), then builds --views seeded training views of each (the recipes' train transform: random
resized crop 224 bicubic, flip, CLIP's normalisation) three ways, on one thread, no loader workers:

  decode-each  the path before decode-once: every (image, view) pair reads and decodes its file
               (`read_image` + `engine.features.seeded_view`, the old `_SeededViews.__getitem__`)
  decode-once  `engine.features._SeededViews`, the dataset the feature store fills itself with
  tensor       the same dataset with INPUT.TRANSFORM_BACKEND tensor: torchvision's JPEG decoder,
               uint8 crops/resizes/flips (v2 kernels, antialias), the same crop boxes and flips

It asserts that decode-each and decode-once give identical tensors, and reports the tensor path's
deviation from them (max / mean absolute difference of the normalised views and, with the tiny
CLIP, of its features). Then the encoders' images/s on the same machine (--device: the CPU on one
thread, like the pipeline, or CUDA in fp16 when present): the tiny CLIP and RN50's architecture
with random weights. "cores to feed" = encoder images/s / the path's views/s per core.
The best of --repeats alternating measurements; the last line is the decode-once ratio.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import clip  # noqa: E402
from datasets.transforms import build_transform, read_image  # noqa: E402
from engine.config import get_cfg_default  # noqa: E402
from engine.features import _SeededViews, seeded_view  # noqa: E402

WIDTH, HEIGHT = 500, 375


def photo_like(rng):
    """A 500x375 RGB image: smooth multi-scale noise, shapes with hard edges, sensor-like grain."""
    img = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    for cells, weight in ((4, 90.0), (16, 45.0), (64, 20.0)):
        coarse = rng.random((cells * HEIGHT // WIDTH + 2, cells + 2, 3)).astype(np.float32)
        up = Image.fromarray((coarse * 255).astype(np.uint8)).resize((WIDTH, HEIGHT), Image.BICUBIC)
        img += (np.asarray(up, np.float32) / 255.0 - 0.5) * weight
    base = Image.fromarray(np.clip(img + 128, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(base)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, WIDTH - 40)), int(rng.integers(0, HEIGHT - 40))
        x1, y1 = x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 150))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=color)
    grain = rng.normal(0, 6, (HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(np.asarray(base, np.float32) + grain, 0, 255).astype(np.uint8))


def write_images(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = os.path.join(folder, f"photo_{i:04d}.jpg")
        photo_like(rng).save(path, quality=90)
        paths.append(path)
    return paths


def train_transform(backend="pil"):
    cfg = get_cfg_default()
    cfg.INPUT.TRANSFORM_BACKEND = backend
    cfg.INPUT.SIZE = (224, 224)
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.PIXEL_MEAN = [0.48145466, 0.4578275, 0.40821073]
    cfg.INPUT.PIXEL_STD = [0.26862954, 0.26130258, 0.27577711]
    cfg.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]
    return build_transform(cfg, is_train=True)


def decode_each(pairs, tfm, root):
    return [seeded_view(read_image(p), p, v, tfm, True, root) for p, v in pairs]


def decode_once(pairs, tfm, root):
    views = _SeededViews(pairs, tfm, seeded=True, root=root)
    return [views[i] for i in range(len(views))]


def encoder(name, device):
    """(encode_image, dtype): the pretrained tiny CLIP, or RN50's architecture with random weights."""
    if name == "tiny":
        from synthetic.tiny_clip import pretrained_tiny_clip_path

        model = clip.load(pretrained_tiny_clip_path(), device=device)
    else:
        model = clip.build_random(("open_clip", "RN50-quickgelu")).to(device).eval()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    return model.to(dtype).encode_image, dtype


def images_per_s(encode, dtype, device, batch, repeats):
    images = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first call warms up
            start = time.perf_counter()
            encode(images)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
    return batch / best


def deviation(reference, tensor_views, encode=None, batch=50):
    """Max / mean absolute difference of the normalised views, and of their encoded features
    (relative L2 per view) when `encode` is given."""
    diff = [(a - b).abs() for a, b in zip(reference, tensor_views)]
    out = {"pixels max": max(float(d.max()) for d in diff), "pixels mean": float(torch.stack(diff).mean())}
    if encode is not None:
        rel = []
        with torch.no_grad():
            for i in range(0, len(reference), batch):
                fa = encode(torch.stack(reference[i:i + batch])).float()
                fb = encode(torch.stack(tensor_views[i:i + batch])).float()
                rel.append((fa - fb).norm(dim=-1) / fa.norm(dim=-1))
        rel = torch.cat(rel)
        out.update({"features max": float(rel.max()), "features mean": float(rel.mean())})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--views", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default="")
    p.add_argument("--encoders", nargs="*", default=["tiny", "rn50"], choices=["tiny", "rn50"])
    p.add_argument("--encoder-batch", type=int, default=0, help="0: 16 on the CPU, 256 on CUDA")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu or cuda")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # views/s per core, as one loader worker produces them
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    args.encoder_batch = args.encoder_batch or (256 if device.type == "cuda" else 16)
    work = args.work or tempfile.mkdtemp(prefix="pipeline-bench-")
    os.makedirs(work, exist_ok=True)
    paths = write_images(work, args.images)
    kib = sum(os.path.getsize(q) for q in paths) / len(paths) / 1024
    print(f"{len(paths)} JPEGs {WIDTH}x{HEIGHT} quality 90 (mean {kib:.0f} KiB) in {work}; {args.views} views each")
    tfm, tensor_tfm = train_transform(), train_transform("tensor")
    pairs = [(q, v) for q in paths for v in range(args.views)]
    a, b = decode_each(pairs, tfm, work), decode_once(pairs, tfm, work)  # warm-up and the check
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b)), "views differ"
    print(f"identical tensors: {len(a)} views")
    c = decode_once(pairs, tensor_tfm, work)
    paths_timed = (("decode-each", decode_each, tfm), ("decode-once", decode_once, tfm),
                   ("tensor", decode_once, tensor_tfm))
    best = {name: float("inf") for name, _, _ in paths_timed}
    for _ in range(args.repeats):
        for name, fn, t in paths_timed:
            start = time.perf_counter()
            fn(pairs, t, work)
            best[name] = min(best[name], time.perf_counter() - start)
    rates = {name: len(pairs) / s for name, s in best.items()}

    encoders, dev = {}, None
    for name in args.encoders:
        encode, dtype = encoder(name, device)
        if name == "tiny":
            dev = deviation(a, c, lambda x: encode(x.to(device, dtype)))
        encoders[name] = images_per_s(encode, dtype, device, args.encoder_batch, args.repeats)
    dev = dev or deviation(a, c)
    print("tensor path against PIL bicubic: " + ", ".join(f"{k} {v:.2g}" for k, v in dev.items())
          + " (pixels: normalised units; features: relative L2 of tiny-CLIP features)")

    where = f"{device.type}" + (f" ({torch.cuda.get_device_name(device)}, fp16)" if device.type == "cuda" else ", 1 thread")
    print(f"\n{'path':<12} {'views/s per core':>17} {'vs decode-each':>15} {'vs decode-once':>15}")
    for name, r in rates.items():
        print(f"{name:<12} {r:17.0f} {r / rates['decode-each']:15.2f} {r / rates['decode-once']:15.2f}")
    if encoders:
        print(f"\nencoders on {where}, batch {args.encoder_batch}; cores to feed one = its images/s / a path's views/s")
        print(f"{'encoder':<12} {'images/s':>9} " + " ".join(f"{'cores (' + n + ')':>19}" for n in rates))
        for name, r in encoders.items():
            label = {"tiny": "tiny CLIP", "rn50": "RN50 arch"}[name]
            print(f"{label:<12} {r:9.1f} " + " ".join(f"{r / v:19.2f}" for v in rates.values()))
    print(f"\ntensor speedup over decode-each = {rates['tensor'] / rates['decode-each']:.2f}")
    print(f"tensor speedup over decode-once = {rates['tensor'] / rates['decode-once']:.2f}")
    print(f"decode-once speedup = {best['decode-each'] / best['decode-once']:.2f}")


if __name__ == "__main__":
    main()
