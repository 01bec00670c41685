"""OpenAI CLIP weight files: names, where to get them, checksummed download and the caches.

The legacy URLs are the ones the original `clip` package uses; the path segment before the file
name is the file's SHA-256, so a cached file can be verified without any other metadata. Users of
CoOp forks already have these files under ~/.cache/clip, which is why that is the default cache.
Those URLs answer 404 since October 2025; open_clip hosts the same weights on the Hugging Face
hub, so an OpenAI name is looked up in the CLIP cache, then on the hub, then at the legacy URL
(`fetch_openai`).
"""
import contextlib
import hashlib
import importlib
import logging
import os
import re
import urllib.error
import urllib.request
import warnings

from open_clip import pretrained as oc_pretrained
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

# OpenAI name -> open_clip model name, whose `openai` tag points at the hub copy.
OPEN_CLIP_NAMES = {name: name.replace("/", "-").replace("@336px", "-336")
                   for name in _OPENAI_MODELS}


def _hub_repo(arch):
    hub = (oc_pretrained.get_pretrained_cfg(arch, "openai") or {}).get("hf_hub", "")
    return hub.rstrip("/") or None


# OpenAI name -> Hugging Face repo holding open_clip's copy (e.g. timm/resnet50_clip.openai); taken
# from open_clip's own table so that a newer open_clip's locations win. None: no hub copy.
HUB_IDS = {name: _hub_repo(arch) for name, arch in OPEN_CLIP_NAMES.items()}

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


class Unavailable(Exception):
    """One source could not give the weights; the message says why, in a few words."""


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
    target = os.path.join(root, os.path.basename(url.rstrip("/")))
    path, stale_reason = cached_file(url, root)
    if path:
        return path
    if stale_reason:
        warnings.warn(f"{target} exists but {stale_reason}; downloading it again.", stacklevel=2)
    try:
        return _fetch_url(url, target)
    except Unavailable as e:
        msg = str(e)
        if stale_reason:
            msg += f" A file is cached at {target}, but {stale_reason}."
        raise WeightsError(msg + " " + _manual_hint(url, target)) from e


def cached_file(url, root):
    """(path, None) for a verified copy of `url` in `root`; (None, why) for a copy that fails
    the check; (None, None) when there is none."""
    expected = url_sha256(url)
    target = os.path.join(root, os.path.basename(url.rstrip("/")))
    if os.path.isfile(target):
        actual = sha256_file(target)
        if actual == expected:
            return target, None
        return None, f"the cached file has SHA-256 {actual}, expected {expected}"
    if os.path.exists(target):
        raise WeightsError(f"{target} exists but is not a regular file; remove it so that {url} "
                           "can be downloaded there.")
    return None, None


def _fetch_url(url, target):
    """Download `url` to `target`, checking the SHA-256 in the URL; `Unavailable` if impossible."""
    expected = url_sha256(url)
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
    except OSError as e:
        raise Unavailable(f"Cannot create the CLIP cache folder {os.path.dirname(target)} "
                          f"({e}).") from e
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
                raise Unavailable(f"Downloaded {url} but its SHA-256 is {actual}, expected "
                                  f"{expected}; the download was discarded.")
    except urllib.error.HTTPError as e:
        raise Unavailable(f"Could not download CLIP weights from {url} (HTTP {e.code} "
                          f"{e.reason}).") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise Unavailable(f"Could not download CLIP weights from {url} ({reason}).") from e
    return target


# ---------------------------------------------------------------------------------------------
# The Hugging Face hub, through open_clip's download machinery

def hub_cache_dir(cache_dir=None):
    """Where hub files are looked up: `cache_dir` if given, else huggingface_hub's cache
    ($HF_HUB_CACHE, default ~/.cache/huggingface/hub), which is what open_clip uses."""
    if cache_dir:
        return os.path.expanduser(cache_dir)
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def _user_offline():
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


@contextlib.contextmanager
def hub_offline():
    """Cache-only hub lookups for the duration. huggingface_hub reads this flag on every request;
    without it, a missing network costs a minute of retries per file before the cache is used."""
    from huggingface_hub import constants
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    # open_clip logs its own copy of the failure we report; the attempt is expected to fail.
    old_disable = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old
        logging.disable(old_disable)


def _network_errors():
    """Transport-level failures of whichever HTTP client huggingface_hub uses."""
    errors = [OSError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "RequestException")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def hub_unreachable(repo_id):
    """None if the hub answers (any HTTP status), else why not. One request, no retries: it
    decides whether a download is worth attempting."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, "open_clip_config.json"), timeout=10)
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (407, 500, 502, 503, 504):  # a proxy or the hub failing: downloads would retry
            return f"HTTP {status}"
        return None  # any other answer, even 404, means the hub can be asked
    except _network_errors() as e:
        text = str(e).strip().splitlines()
        return text[0] if text else type(e).__name__
    return None


def _missing(err):
    """Whether a failed cache-only attempt failed because a file is absent (not because a cached
    file is broken)."""
    while err is not None:
        if isinstance(err, FileNotFoundError):
            return True
        err = err.__cause__ or err.__context__
    return False


def through_hub(fetch, repo_id, cache_dir=None):
    """Run `fetch()` (an open_clip call that may download from the hub) without its retries.

    First from the cache alone, with no network. If that fails, and neither HF_HUB_OFFLINE is set
    nor the hub is unreachable (one probe), `fetch()` runs again online and its errors propagate.
    Raises `Unavailable` saying why nothing was tried online.
    """
    try:
        with hub_offline():
            return fetch()
    except (OSError, RuntimeError, ValueError) as e:
        cached_error = e
    where = f"not in the Hugging Face cache {hub_cache_dir(cache_dir)}"
    if not _missing(cached_error):
        where = f"the cached copy could not be used ({first_line(cached_error)})"
    if _user_offline():
        raise Unavailable(f"{where}, and HF_HUB_OFFLINE is set")
    reason = hub_unreachable(repo_id)
    if reason:
        raise Unavailable(f"{where}, and the hub cannot be reached ({reason})")
    return fetch()


def first_line(err):
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def sentence(err):
    """The first line of an error, ending in a full stop (messages are built from several)."""
    text = first_line(err).rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


def fetch_hub_file(repo_id, cache_dir=None):
    """Local path of open_clip's weights file in hub repo `repo_id` (open_clip_model.safetensors,
    else open_clip_pytorch_model.bin), downloaded by open_clip into the hub cache if needed."""
    if not oc_pretrained.has_hf_hub():
        raise Unavailable("huggingface_hub is not installed (pip install huggingface_hub)")
    cache = os.path.expanduser(cache_dir) if cache_dir else None

    def fetch():
        return oc_pretrained.download_pretrained({"hf_hub": repo_id + "/"}, cache_dir=cache)

    try:
        return through_hub(fetch, repo_id, cache_dir)
    except (OSError, RuntimeError, ValueError) as e:
        raise Unavailable(f"download failed ({first_line(e)})") from e


def hub_download_hint(repo_id, cache_dir=None, pattern="open_clip_*"):
    """How to fill the hub cache by hand; `pattern` None: the whole repo."""
    folder = "models--" + repo_id.replace("/", "--")
    include = f" --include \"{pattern}\"" if pattern else ""
    return (f"on a machine with network access run `hf download {repo_id}{include}` and copy the "
            f"folder {folder} from its Hugging Face cache (~/.cache/huggingface/hub) into "
            f"{hub_cache_dir(cache_dir)}")


# ---------------------------------------------------------------------------------------------
# OpenAI names: every source in turn

def fetch_openai(name, cache_dir=None):
    """(path, weights_id, source) for OpenAI model `name`: the first of
      1. a verified file in the CLIP cache (`cache_dir`, else $CLIP_CACHE_DIR or ~/.cache/clip);
      2. open_clip's copy on the Hugging Face hub (hub cache: `cache_dir`, else huggingface_hub's);
      3. the legacy OpenAI URL, downloaded into the CLIP cache.
    weights_id is the SHA-256 of the file used. Raises one `WeightsError` naming every source.
    """
    url = MODEL_URLS[name]
    root = os.path.expanduser(cache_dir or default_cache_dir())
    target = os.path.join(root, os.path.basename(url.rstrip("/")))
    expected = url_sha256(url)
    tried = []

    path, stale = cached_file(url, root)
    if path:
        return path, expected, "CLIP cache"
    if stale:
        warnings.warn(f"Ignoring {target}: {stale}.", stacklevel=3)
    tried.append(f"the CLIP cache: {target} ({stale or 'no such file'})")

    repo = HUB_IDS.get(name)
    if repo:
        try:
            path = fetch_hub_file(repo, cache_dir)
            return path, sha256_file(path), f"Hugging Face hub copy {repo}"
        except Unavailable as e:
            tried.append(f"the Hugging Face hub copy {repo} through open_clip: {e}")

    try:
        return _fetch_url(url, target), expected, "OpenAI URL"
    except Unavailable as e:
        tried.append(f"the legacy OpenAI URL: {e}")

    steps = "\n".join(f"  {i}. {t}" for i, t in enumerate(tried, 1))
    fix = (f"copy {os.path.basename(target)} (SHA-256 {expected}; e.g. from ~/.cache/clip on "
           f"another machine) to {target}")
    if repo:
        fix += ", or " + hub_download_hint(repo, cache_dir)
    raise WeightsError(
        f"Could not get the CLIP weights for {name!r}. Tried, in order:\n{steps}\n"
        f"To fix it, {fix}. The CLIP cache folder can be changed with MODEL.BACKBONE.CACHE_DIR "
        "or $CLIP_CACHE_DIR; MODEL.BACKBONE.CACHE_DIR also replaces the Hugging Face cache.")
