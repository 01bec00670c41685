"""Class-separable synthetic images.

Each class name gets a fixed appearance (background hue, stripe hue, stripe orientation and
frequency) derived from a hash of the name, so the same class looks the same in every dataset
layout and to the tiny CLIP that was pretrained on it. Per-image jitter (hue shift, stripe phase,
pixel noise) keeps images of one class distinct. The cues survive random resized crops.
"""
import colorsys
import hashlib

import numpy as np
from PIL import Image

ORIENTATIONS = (0.0, 45.0, 90.0, 135.0)


def class_style(classname):
    h = hashlib.sha256(classname.encode("utf-8")).digest()
    return {
        "hue": h[0] / 255.0,
        "stripe_hue": h[1] / 255.0,
        "angle": ORIENTATIONS[h[2] % len(ORIENTATIONS)],
        "freq": 2 + h[3] % 4,  # stripes per image side
    }


def _rgb(hue, sat, val):
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, val), dtype=np.float32)


def class_image(classname, rng, size=64):
    """One image of `classname`; `rng` is a numpy Generator (or an int seed)."""
    rng = np.random.default_rng(rng)
    s = class_style(classname)
    bg = _rgb(s["hue"] + rng.normal(0, 0.02), 0.8, 0.9)
    fg = _rgb(s["stripe_hue"] + rng.normal(0, 0.02), 0.6, 0.4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a = np.deg2rad(s["angle"] + rng.normal(0, 5))
    wave = np.sin(2 * np.pi * s["freq"] * (xx * np.cos(a) + yy * np.sin(a)) + rng.uniform(0, 2 * np.pi))
    mask = (wave > 0).astype(np.float32)[..., None]
    img = bg * (1 - mask) + fg * mask + rng.normal(0, 0.04, (size, size, 3)).astype(np.float32)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="RGB")


def save_image(img, path):
    """Save by extension (.jpg/.png); parent folders must exist."""
    img.save(path, quality=95) if str(path).lower().endswith((".jpg", ".jpeg")) else img.save(path)
