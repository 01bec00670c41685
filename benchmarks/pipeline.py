"""The image pipeline's views/s: one decode per (image, view) against one decode per image.

    python benchmarks/pipeline.py [--images 40] [--views 10] [--repeats 3] [--work DIR]

Writes --images photo-sized JPEGs (500x375, quality 90) with photo-like detail (smooth noise at
several scales, hard-edged shapes, fine grain: a flat synthetic image would decode unrealistically
fast), then builds --views seeded training views of each (the recipes' train transform: random
resized crop 224 bicubic, flip, CLIP's normalisation) two ways, on one thread, no loader workers:

  decode-each  the path before decode-once: every (image, view) pair reads and decodes its file
               (`read_image` + `engine.features.seeded_view`, the old `_SeededViews.__getitem__`)
  decode-once  `engine.features._SeededViews`, the dataset the feature store fills itself with

and asserts that every view tensor is identical between the two (same seeds, same pixels).
The best of --repeats alternating measurements; the last line is the ratio.
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


def train_transform():
    cfg = get_cfg_default()
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--views", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default="")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # views/s per core, as one loader worker produces them
    work = args.work or tempfile.mkdtemp(prefix="pipeline-bench-")
    os.makedirs(work, exist_ok=True)
    paths = write_images(work, args.images)
    kib = sum(os.path.getsize(q) for q in paths) / len(paths) / 1024
    print(f"{len(paths)} JPEGs {WIDTH}x{HEIGHT} quality 90 (mean {kib:.0f} KiB) in {work}; {args.views} views each")
    tfm = train_transform()
    pairs = [(q, v) for q in paths for v in range(args.views)]
    a, b = decode_each(pairs, tfm, work), decode_once(pairs, tfm, work)  # warm-up and the check
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b)), "views differ"
    print(f"identical tensors: {len(a)} views")
    best = {"decode-each": float("inf"), "decode-once": float("inf")}
    for _ in range(args.repeats):
        for name, fn in (("decode-each", decode_each), ("decode-once", decode_once)):
            start = time.perf_counter()
            fn(pairs, tfm, work)
            best[name] = min(best[name], time.perf_counter() - start)
    for name, s in best.items():
        print(f"{name}: {s:.3f} s, {len(pairs) / s:.0f} views/s on one core")
    print(f"decode-once speedup = {best['decode-each'] / best['decode-once']:.2f}")


if __name__ == "__main__":
    main()
