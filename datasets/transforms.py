"""Image pipelines built from `INPUT.*`, in Dassl's fixed order and with Dassl's log lines.

Train: [Resize(SIZE) when no crop is chosen] -> random_translation -> random_crop ->
random_resized_crop -> random_flip -> colorjitter -> randomgrayscale -> gaussian_blur ->
ToTensor -> cutout -> normalize -> gaussian_noise -> instance_norm.
Test: Resize(max(SIZE)) on the smaller edge -> CenterCrop(SIZE) -> ToTensor -> normalize ->
instance_norm (center_crop is implied at test time and has no train step, as in Dassl).

`describe_transform` names a pipeline completely (sizes, interpolation, statistics), so it can
key caches of encoded images.

INPUT.TRANSFORM_BACKEND "tensor" (not the reference) runs the training pipeline's crops, resizes
and flips on uint8 CHW tensors (torchvision v2 kernels, antialias) instead of PIL images: the same
random draws in the same order (the crop boxes and flips of a seeded view are the PIL path's), only
the resampling differs. Its pipeline reads JPEGs with torchvision's decoder (`TensorCompose.read`); it
accepts PIL images too. The test pipeline is always PIL.
"""
import difflib
import random

import torch
from PIL import Image
from torchvision import io as tvio
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from engine.errors import ConfigError, DatasetError

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

SUPPORTED_TRANSFORMS = (
    "random_flip", "random_resized_crop", "normalize", "instance_norm", "random_crop",
    "random_translation", "center_crop", "cutout", "gaussian_noise", "colorjitter",
    "randomgrayscale", "gaussian_blur",
)
# Dassl accepts these too; none of the CLIP methods use them.
UNSUPPORTED_DASSL_TRANSFORMS = (
    "imagenet_policy", "cifar10_policy", "svhn_policy", "randaugment", "randaugment_fixmatch", "randaugment2",
)
TRANSFORM_BACKENDS = ("pil", "tensor")
# What the tensor backend runs: crops, resizes and flips on uint8, then the float-tensor steps.
TENSOR_BACKEND_TRANSFORMS = (
    "random_flip", "random_resized_crop", "random_crop", "normalize", "instance_norm", "cutout",
    "gaussian_noise", "center_crop",
)


def read_image(path):
    """The image at `path` as PIL RGB (file handle closed)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"Image not found: {path}. The dataset looks incomplete; see DATASETS.md.") from None
    except OSError as e:  # unreadable or truncated file
        raise DatasetError(f"Cannot read image {path} ({e}). Re-extract the dataset; see DATASETS.md.") from None


def read_image_tensor(path):
    """The image at `path` as a uint8 RGB tensor [3, H, W]: JPEGs through torchvision's decoder,
    other formats through PIL (`read_image`)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DatasetError(f"Image not found: {path}. The dataset looks incomplete; see DATASETS.md.") from None
    if not data.startswith(b"\xff\xd8"):
        return v2.functional.pil_to_tensor(read_image(path))
    try:
        return tvio.decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=tvio.ImageReadMode.RGB)
    except RuntimeError as e:  # truncated or damaged JPEG
        raise DatasetError(f"Cannot read image {path} ({e}). Re-extract the dataset; see DATASETS.md.") from None


class TensorCompose(T.Compose):
    """The tensor backend's pipeline: takes a uint8 tensor (or a PIL image) and reads with
    torchvision's JPEG decoder."""

    read = staticmethod(read_image_tensor)


def build_transform(cfg, is_train=True, choices=None):
    """torchvision Compose for training or testing, printing one line per step (None when
    INPUT.NO_TRANSFORM, as in Dassl)."""
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None
    steps = _steps(cfg, is_train, choices)
    print("Building transform_train" if is_train else "Building transform_test")
    for line, _, _ in steps:
        print(line)
    compose = TensorCompose if is_train and _backend(cfg) == "tensor" else T.Compose
    return compose([tfm for _, _, tfm in steps])


def describe_transform(cfg, is_train=True, choices=None):
    """Stable identity of the pipeline `build_transform` returns (prints nothing)."""
    if cfg.INPUT.NO_TRANSFORM:
        return "none"
    tensor = is_train and _backend(cfg) == "tensor"
    return ("train: " if is_train else "test: ") + ("torchvision decode -> " if tensor else "") + " -> ".join(key for _, key, _ in _steps(cfg, is_train, choices))


def _check_choices(choices):
    for c in choices:
        if c in SUPPORTED_TRANSFORMS:
            continue
        valid = ", ".join(SUPPORTED_TRANSFORMS)
        if c in UNSUPPORTED_DASSL_TRANSFORMS:
            raise ConfigError(
                f"INPUT.TRANSFORMS: the Dassl augmentation {c!r} is not implemented here. Valid: {valid}.")
        close = difflib.get_close_matches(str(c), SUPPORTED_TRANSFORMS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"INPUT.TRANSFORMS: unknown transform {c!r}.{hint} Valid: {valid}.")


def _backend(cfg):
    backend = cfg.INPUT.TRANSFORM_BACKEND
    if backend not in TRANSFORM_BACKENDS:
        raise ConfigError(f"INPUT.TRANSFORM_BACKEND must be one of {', '.join(TRANSFORM_BACKENDS)}; got {backend!r}.")
    return backend


def _steps(cfg, is_train, choices=None):
    """[(printed line, identity key, transform)] in Dassl's order."""
    inp = cfg.INPUT
    choices = list(inp.TRANSFORMS if choices is None else choices)
    _check_choices(choices)
    if inp.INTERPOLATION not in INTERPOLATION_MODES:
        raise ConfigError(
            f"INPUT.INTERPOLATION must be one of {', '.join(INTERPOLATION_MODES)}; got {inp.INTERPOLATION!r}.")
    if is_train and _backend(cfg) == "tensor":
        return _tensor_train_steps(cfg, choices)
    interp = INTERPOLATION_MODES[inp.INTERPOLATION]
    size = tuple(int(s) for s in inp.SIZE)
    hw = f"{size[0]}x{size[1]}"
    normalize = _normalize_step(inp)
    to_tensor = ("+ to torch tensor of range [0, 1]", "to_tensor", T.ToTensor())
    steps = []
    add = steps.append

    if not is_train:
        add((f"+ resize the smaller edge to {max(size)}", f"resize_smaller_edge({max(size)},{inp.INTERPOLATION})",
             T.Resize(max(size), interpolation=interp)))
        add((f"+ {hw} center crop", f"center_crop({hw})", T.CenterCrop(size)))
        add(to_tensor)
        if "normalize" in choices:
            add(normalize)
        if "instance_norm" in choices:
            add(("+ instance normalization", "instance_norm", InstanceNormalization()))
        return steps

    if "random_crop" not in choices and "random_resized_crop" not in choices:
        add((f"+ resize to {hw}", f"resize({hw},{inp.INTERPOLATION})", T.Resize(size, interpolation=interp)))
    if "random_translation" in choices:
        add(("+ random translation", f"random_translation({hw},p=0.5)", Random2DTranslation(size[0], size[1])))
    if "random_crop" in choices:
        pad = inp.CROP_PADDING
        add((f"+ random crop (padding = {pad})", f"random_crop({hw},padding={pad})", T.RandomCrop(size, padding=pad)))
    if "random_resized_crop" in choices:
        scale = tuple(float(s) for s in inp.RRCROP_SCALE)
        add((f"+ random resized crop (size={size}, scale={inp.RRCROP_SCALE})",
             f"random_resized_crop({hw},scale={scale},{inp.INTERPOLATION})",
             T.RandomResizedCrop(size, scale=scale, interpolation=interp)))
    if "random_flip" in choices:
        add(("+ random flip", "random_flip(p=0.5)", T.RandomHorizontalFlip()))
    if "colorjitter" in choices:
        b, c, s, h = inp.COLORJITTER_B, inp.COLORJITTER_C, inp.COLORJITTER_S, inp.COLORJITTER_H
        add((f"+ color jitter (brightness={b}, contrast={c}, saturation={s}, hue={h})",
             f"colorjitter({b},{c},{s},{h})", T.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h)))
    if "randomgrayscale" in choices:
        add(("+ random gray scale", f"random_grayscale(p={inp.RGS_P})", T.RandomGrayscale(p=inp.RGS_P)))
    if "gaussian_blur" in choices:
        add((f"+ gaussian blur (kernel={inp.GB_K})", f"gaussian_blur(kernel={inp.GB_K},p={inp.GB_P})",
             T.RandomApply([T.GaussianBlur(inp.GB_K)], p=inp.GB_P)))
    add(to_tensor)
    return steps + _float_steps(inp, choices)


def _normalize_step(inp, inplace=False):
    mean, std = [float(m) for m in inp.PIXEL_MEAN], [float(s) for s in inp.PIXEL_STD]
    return (f"+ normalization (mean={inp.PIXEL_MEAN}, std={inp.PIXEL_STD})",
            f"normalize(mean={mean},std={std})", T.Normalize(mean=mean, std=std, inplace=inplace))


def _float_steps(inp, choices, fresh=False):
    """The training steps after the image became a float tensor in [0, 1] (both backends);
    `fresh`: that tensor is the pipeline's own (not a caller's), so normalising in place is safe."""
    steps = []
    add = steps.append
    if "cutout" in choices:
        n, length = inp.CUTOUT_N, inp.CUTOUT_LEN
        add((f"+ cutout (n_holes={n}, length={length})", f"cutout({n},{length})", Cutout(n, length)))
    if "normalize" in choices:
        add(_normalize_step(inp, inplace=fresh))
    if "gaussian_noise" in choices:
        add((f"+ gaussian noise (mean={inp.GN_MEAN}, std={inp.GN_STD})",
             f"gaussian_noise({inp.GN_MEAN},{inp.GN_STD},p=0.5)", GaussianNoise(inp.GN_MEAN, inp.GN_STD)))
    if "instance_norm" in choices:
        add(("+ instance normalization", "instance_norm", InstanceNormalization()))
    return steps


def _tensor_train_steps(cfg, choices):
    """The training pipeline on uint8 tensors: the PIL pipeline's crop, resize and flip steps with
    the same random draws (RandomCrop and RandomHorizontalFlip are torchvision's own classes, which
    take tensors; the resized crop draws its box with RandomResizedCrop.get_params), resampled by
    torchvision v2's tensor kernels with antialias."""
    inp = cfg.INPUT
    other = [c for c in choices if c not in TENSOR_BACKEND_TRANSFORMS]
    if other:
        raise ConfigError(
            f"INPUT.TRANSFORM_BACKEND tensor does not run {', '.join(other)}; use the pil backend, or only "
            f"{', '.join(TENSOR_BACKEND_TRANSFORMS)}.")
    interp = INTERPOLATION_MODES[inp.INTERPOLATION]
    size = tuple(int(s) for s in inp.SIZE)
    hw = f"{size[0]}x{size[1]}"
    tag = f"{inp.INTERPOLATION},uint8 tensor,antialias"
    steps = [("+ uint8 tensor backend (torchvision kernels, antialias)", "uint8_tensor", ToUint8Tensor())]
    add = steps.append
    if "random_crop" not in choices and "random_resized_crop" not in choices:
        add((f"+ resize to {hw}", f"resize({hw},{tag})", TensorResize(size, interp)))
    if "random_crop" in choices:
        pad = inp.CROP_PADDING
        add((f"+ random crop (padding = {pad})", f"random_crop({hw},padding={pad},uint8 tensor)",
             T.RandomCrop(size, padding=pad)))
    if "random_resized_crop" in choices:
        scale = tuple(float(s) for s in inp.RRCROP_SCALE)
        add((f"+ random resized crop (size={size}, scale={inp.RRCROP_SCALE})",
             f"random_resized_crop({hw},scale={scale},{tag})", TensorRandomResizedCrop(size, scale, interp)))
    if "random_flip" in choices:
        add(("+ random flip", "random_flip(p=0.5)", T.RandomHorizontalFlip()))
    add(("+ to float tensor of range [0, 1]", "uint8_to_float", ToFloat()))
    return steps + _float_steps(inp, choices, fresh=True)


class ToUint8Tensor:
    """A PIL image as a uint8 tensor [3, H, W]; a tensor passes through."""

    def __call__(self, img):
        return img if isinstance(img, torch.Tensor) else v2.functional.pil_to_tensor(img)

    def __repr__(self):
        return f"{type(self).__name__}()"


class TensorResize:
    """Resize a uint8 tensor to `size` (h, w), antialiased."""

    def __init__(self, size, interpolation):
        self.size, self.interpolation = list(size), interpolation

    def __call__(self, img):
        return v2.functional.resize(img, self.size, interpolation=self.interpolation, antialias=True)

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size}, interpolation={self.interpolation.value})"


class TensorRandomResizedCrop:
    """RandomResizedCrop on a uint8 tensor: the box is drawn by torchvision's
    `RandomResizedCrop.get_params` (the PIL path's draws), the crop resampled antialiased."""

    def __init__(self, size, scale, interpolation, ratio=(3.0 / 4.0, 4.0 / 3.0)):
        self.size, self.scale, self.ratio, self.interpolation = list(size), scale, ratio, interpolation

    def __call__(self, img):
        i, j, h, w = T.RandomResizedCrop.get_params(img, self.scale, self.ratio)
        return v2.functional.resized_crop(img, i, j, h, w, self.size, interpolation=self.interpolation,
                                          antialias=True)

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size}, scale={self.scale}, interpolation={self.interpolation.value})"


class ToFloat:
    """uint8 [0, 255] -> float32 [0, 1], as ToTensor scales."""

    def __call__(self, img):
        return v2.functional.to_dtype(img, torch.float32, scale=True)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Random2DTranslation:
    """With probability p, enlarge by 1.125 and crop back at a random offset; else resize."""

    def __init__(self, height, width, p=0.5, interpolation=InterpolationMode.BILINEAR):
        self.height, self.width, self.p, self.interpolation = height, width, p, interpolation

    def __call__(self, img):
        F = T.functional
        if random.uniform(0, 1) > self.p:
            return F.resize(img, [self.height, self.width], interpolation=self.interpolation)
        new_w, new_h = int(round(self.width * 1.125)), int(round(self.height * 1.125))
        img = F.resize(img, [new_h, new_w], interpolation=self.interpolation)
        x1 = int(round(random.uniform(0, new_w - self.width)))
        y1 = int(round(random.uniform(0, new_h - self.height)))
        return F.crop(img, y1, x1, self.height, self.width)

    def __repr__(self):
        return f"{type(self).__name__}(height={self.height}, width={self.width}, p={self.p})"


class Cutout:
    """Zero `n_holes` squares of side `length` (centres may lie near the border) of a CHW tensor."""

    def __init__(self, n_holes=1, length=16):
        self.n_holes, self.length = n_holes, length

    def __call__(self, img):
        h, w = img.shape[-2:]
        mask = torch.ones(h, w, dtype=img.dtype)
        for _ in range(self.n_holes):
            y, x = int(torch.randint(h, ())), int(torch.randint(w, ()))
            half = self.length // 2
            mask[max(0, y - half):min(h, y + half), max(0, x - half):min(w, x + half)] = 0
        return img * mask

    def __repr__(self):
        return f"{type(self).__name__}(n_holes={self.n_holes}, length={self.length})"


class GaussianNoise:
    """With probability p, add N(mean, std) noise to a tensor."""

    def __init__(self, mean=0.0, std=0.15, p=0.5):
        self.mean, self.std, self.p = mean, std, p

    def __call__(self, img):
        if random.uniform(0, 1) > self.p:
            return img
        return img + torch.randn_like(img) * self.std + self.mean

    def __repr__(self):
        return f"{type(self).__name__}(mean={self.mean}, std={self.std}, p={self.p})"


class InstanceNormalization:
    """Per-image, per-channel standardisation of a CHW tensor."""

    def __init__(self, eps=1e-8):
        self.eps = eps

    def __call__(self, img):
        flat = img.reshape(img.shape[0], -1)
        return (img - flat.mean(1).view(-1, 1, 1)) / (flat.std(1).view(-1, 1, 1) + self.eps)

    def __repr__(self):
        return f"{type(self).__name__}(eps={self.eps})"
