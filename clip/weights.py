"""OpenAI CLIP weight files: names, URLs, checksummed download and the local cache.

The URLs are the ones the original `clip` package uses; the path segment before the file name is
the file's SHA-256, so a cached file can be verified without any other metadata. Users of CoOp
forks already have these files under ~/.cache/clip, which is why that is the default cache.
"""
import hashlib
import os
import re
import urllib.error
import urllib.request
import warnings

from tqdm import tqdm

from engine.errors import WeightsError
from engine.io import atomic_write

_URL_ROOT = "https://openaipublic.azureedge.net/clip/models"

# name -> (sha256, file name)
_OPENAI_MODELS = {
    "RN50": ("afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", "RN50.pt"),
    "RN101": ("8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599", "RN101.pt"),
    "RN50x4": ("7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd", "RN50x4.pt"),
    "RN50x16": ("52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", "RN50x16.pt"),
    "RN50x64": ("be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c", "RN50x64.pt"),
    "ViT-B/32": ("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt"),
    "ViT-B/16": ("5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16.pt"),
    "ViT-L/14": ("b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14.pt"),
    "ViT-L/14@336px": ("3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
                       "ViT-L-14-336px.pt"),
}

MODEL_URLS = {name: f"{_URL_ROOT}/{sha}/{fname}" for name, (sha, fname) in _OPENAI_MODELS.items()}

_CHUNK = 1 << 20  # 1 MiB: hashing a 900 MB checkpoint must not load it into memory


def available_models():
    """Names accepted by `clip.load` without a path or an open_clip `model:pretrained` pair."""
    return list(_OPENAI_MODELS)


def default_cache_dir():
    """`$CLIP_CACHE_DIR` if set, else ~/.cache/clip (where the original `clip` package puts them)."""
    env = os.environ.get("CLIP_CACHE_DIR")
    return os.path.expanduser(env) if env else os.path.expanduser("~/.cache/clip")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def url_sha256(url):
    """The SHA-256 a weights URL promises: the path segment before the file name."""
    parts = url.rstrip("/").split("/")
    sha = parts[-2].lower() if len(parts) >= 2 else ""
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise WeightsError(f"Cannot read the expected SHA-256 from URL {url!r}: it must end in "
                           "/<sha256>/<file name>.")
    return sha


def _manual_hint(url, target):
    return (f"Download {url} by other means and place it at {target} "
            "(its SHA-256 must match the one in the URL). The cache folder can be changed with "
            "MODEL.BACKBONE.CACHE_DIR or the CLIP_CACHE_DIR environment variable.")


def download(url, root=None):
    """Return a local path for `url`, downloading into `root` unless a verified copy is there.

    The expected SHA-256 is the URL path segment before the file name. A cached file that fails
    the check is downloaded again (with a warning); a download that fails the check is discarded
    and raises `WeightsError`.
    """
    root = os.path.expanduser(root or default_cache_dir())
    expected = url_sha256(url)
    target = os.path.join(root, os.path.basename(url.rstrip("/")))

    stale_reason = None
    if os.path.isfile(target):
        actual = sha256_file(target)
        if actual == expected:
            return target
        stale_reason = f"the cached file has SHA-256 {actual}, expected {expected}"
        warnings.warn(f"{target} exists but {stale_reason}; downloading it again.", stacklevel=2)
    elif os.path.exists(target):
        raise WeightsError(f"{target} exists but is not a regular file; remove it so that {url} "
                           "can be downloaded there.")

    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"Cannot create the CLIP cache folder {root} ({e}). "
                           + _manual_hint(url, target)) from e

    try:
        # atomic_write removes its temp file when the block raises, so a failed or corrupt
        # download never lands at `target`.
        with atomic_write(target, "wb") as out:
            h = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=60) as src:
                total = src.headers.get("Content-Length")
                with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                          unit_divisor=1024, desc=os.path.basename(target)) as bar:
                    for chunk in iter(lambda: src.read(_CHUNK), b""):
                        out.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
            actual = h.hexdigest()
            if actual != expected:
                raise WeightsError(f"Downloaded {url} but its SHA-256 is {actual}, expected "
                                   f"{expected}. The download was discarded; try again, or: "
                                   + _manual_hint(url, target))
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        msg = f"Could not download CLIP weights from {url} ({reason})."
        if stale_reason:
            msg += f" A file is cached at {target}, but {stale_reason}."
        raise WeightsError(msg + " " + _manual_hint(url, target)) from e
    return target
