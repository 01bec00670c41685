"""Download, verify and unpack the datasets into CoOp's layouts; print the manual steps for the
rest; export and import few-shot subsets.

    python prepare_datasets.py --root DATA [names...|all] [--dry-run] [--keep-archives]
    python prepare_datasets.py --root DATA ImageNet --export-fewshot DIR [--shots 1 2 4 8 16] [--seeds 1 2 3]
    python prepare_datasets.py --root DATA ImageNet --import-fewshot DIR

Downloads go to `<root>/.downloads/<file>.part` and are renamed when complete and verified, so
an interrupted run continues where it stopped (HTTP Range; a server that ignores Range makes
it start the file again). Archives are unpacked into a hidden folder inside the dataset folder
and their members renamed into place, so a dataset folder never holds half an archive. What is
already in place is skipped, which makes a second run a no-op.

The URL table (datasets/sources.py) can be overridden per file name, for mirrors and for tests:
`prepare(..., overrides={...})` or a JSON file named by $PREPARE_DATASETS_OVERRIDES, e.g.
`{"EuroSAT.zip": {"urls": ["http://mirror/EuroSAT.zip"], "md5": "..."}}`.
"""
import argparse
import dataclasses
import hashlib
import http.client
import json
import os
import random
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile

from engine.errors import DatasetError, UserError

from .base import write_json_atomic
from .sources import GDRIVE, SOURCES

DOWNLOADS = ".downloads"
MANIFEST = "manifest.json"
OVERRIDES_ENV = "PREPARE_DATASETS_OVERRIDES"
RESUME_ATTEMPTS = 3


class FetchError(Exception):
    """A file could not be downloaded or verified; the message says why."""


class NeedsManual(Exception):
    """No URL is known (or none worked) and the file must be fetched by hand."""


# ---------------------------------------------------------------------------------------------
# Names and the URL table


def resolve_names(names):
    """Registry names, folder names or config names (any case); "all" or nothing = all 15."""
    if not names or any(n.lower() == "all" for n in names):
        return list(SOURCES)
    aliases = {}
    for src in SOURCES.values():
        for alias in (src.name, src.folder, src.anchor, src.folder.replace("-", "_")):
            aliases[alias.lower()] = src.name
    aliases.update({"imagenet_sketch": "ImageNetSketch", "imagenet_a": "ImageNetA", "imagenet_r": "ImageNetR"})
    out = []
    for n in names:
        if n.lower() not in aliases:
            raise UserError(f"Unknown dataset {n!r}. Known: {', '.join(SOURCES)} (or 'all').")
        if aliases[n.lower()] not in out:
            out.append(aliases[n.lower()])
    return out


def load_overrides(overrides=None):
    """{file name: {"urls": [...], "md5": "..."}} from the argument, else from $PREPARE_DATASETS_OVERRIDES."""
    if overrides is not None:
        return overrides
    path = os.environ.get(OVERRIDES_ENV)
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"${OVERRIDES_ENV}={path} cannot be read as JSON ({e}).") from None


def apply_overrides(res, overrides):
    o = overrides.get(res.filename)
    if not o:
        return res
    return dataclasses.replace(res, urls=tuple(o.get("urls", res.urls)), md5=o.get("md5", res.md5))


# ---------------------------------------------------------------------------------------------
# Downloading and verifying


def file_hashes(path):
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


class Manifest:
    """Size and checksums of every file fetched, so a later run can tell a good file from a
    damaged one even where no checksum is published."""

    def __init__(self, downloads):
        self.path = os.path.join(downloads, MANIFEST)
        try:
            with open(self.path, encoding="utf-8") as f:
                self.data = json.load(f)
        except FileNotFoundError:
            self.data = {}
        except ValueError:
            self.data = {}  # a damaged manifest only loses the recorded checksums

    def record(self, filename, **entry):
        self.data[filename] = entry
        write_json_atomic(self.data, self.path)


def verify(path, res, manifest):
    """Raise FetchError when the file does not match its published md5 or the recorded sha256."""
    md5, sha256 = file_hashes(path)
    size = os.path.getsize(path)
    if res.md5 and md5 != res.md5:
        raise FetchError(f"{res.filename}: md5 {md5} does not match the published {res.md5}")
    known = manifest.data.get(res.filename, {})
    if not res.md5 and known.get("sha256") and known["sha256"] != sha256:
        raise FetchError(f"{res.filename}: sha256 {sha256} differs from the {known['sha256']} recorded when it "
                         f"was first downloaded")
    return {"size": size, "md5": md5, "sha256": sha256}


class TransferBroken(FetchError):
    """The connection ended before the whole file arrived; what did arrive is kept for resuming."""


def http_download(url, part, log, timeout=60):
    """Fetch `url` into `part`, continuing an existing partial file with an HTTP Range request.
    Returns when the server has sent everything; raises TransferBroken on a short transfer."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"User-Agent": "prepare_datasets (CoOp-layout dataset preparation)"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            return  # nothing beyond what we have; the checksum decides whether it is complete
        raise FetchError(f"HTTP {e.code} from {url}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise FetchError(f"cannot reach {url} ({getattr(e, 'reason', e)})") from None
    with resp:
        content_range = resp.headers.get("Content-Range", "")
        if have and resp.status == 206 and content_range.startswith(f"bytes {have}-"):
            log(f"    resuming at {have:,} bytes")
            mode = "ab"
        else:
            if have:
                log("    the server does not resume; starting again")
            mode, have = "wb", 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        done, shown, last = have, -1, time.monotonic()
        try:
            with open(part, mode) as f:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    f.write(chunk)
                    done += len(chunk)
                    step = done * 10 // total if total else -1
                    if (total and step > shown) or time.monotonic() - last > 30:
                        shown, last = step, time.monotonic()
                        log(f"    {done:,} / {total:,} bytes" if total else f"    {done:,} bytes")
        except (OSError, ValueError, http.client.HTTPException) as e:  # connection reset, IncompleteRead
            raise TransferBroken(f"transfer from {url} broke off at {done:,} bytes ({e})") from None
    if total is not None and os.path.getsize(part) < total:
        raise TransferBroken(f"transfer from {url} ended at {os.path.getsize(part):,} of {total:,} bytes")


def http_fetch(url, part, res, manifest, log):
    """Download with up to RESUME_ATTEMPTS resumptions after broken connections, then verify.
    A wrong checksum after resuming means the old partial data may be stale: the file is
    fetched once more from scratch. Returns the manifest entry; a bad file is removed."""
    resumed = os.path.exists(part)
    for attempt in range(RESUME_ATTEMPTS):
        try:
            http_download(url, part, log)
            break
        except TransferBroken as e:
            if attempt == RESUME_ATTEMPTS - 1:
                raise FetchError(f"{e}; run again to resume") from None
            log(f"    {e}; resuming")
            resumed = True
    for last_try in (not resumed, True):
        try:
            return verify(part, res, manifest)
        except FetchError:
            os.remove(part)
            if last_try:
                raise
            log("    checksum mismatch after resuming; downloading the whole file again")
            http_download(url, part, log)


def gdrive_download(file_id, dest, log):
    try:
        import gdown
    except ImportError:
        raise FetchError("Google Drive files need gdown: pip install gdown") from None
    log(f"    from Google Drive id {file_id} (gdown)")
    try:
        gdown.download(id=file_id, output=dest, quiet=False, resume=True)
    except (gdown.exceptions.DownloadError, OSError, ValueError) as e:
        raise FetchError(f"gdown could not fetch Google Drive id {file_id} ({e}); restricted networks "
                         "often block Drive, see DATASETS.md#google-drive") from None
    if not os.path.isfile(dest):
        raise FetchError(f"gdown returned without writing {dest}")


def describe_url(url):
    return f"https://drive.google.com/uc?id={url[len(GDRIVE):]}" if url.startswith(GDRIVE) else url


def fetch(res, downloads, manifest, log):
    """The verified local file for `res`: one already in `downloads` (placed by hand or left by an
    earlier run), else downloaded from the first URL that works."""
    dest = os.path.join(downloads, res.filename)
    if os.path.isfile(dest):
        log(f"  {res.filename}: found in {downloads}, verifying")
        try:
            # torchvision checks ImageNet's md5 itself while unpacking; one pass over 138 GB is enough
            entry = {"size": os.path.getsize(dest)} if res.extractor.startswith("imagenet") else \
                verify(dest, res, manifest)
        except FetchError as e:
            raise FetchError(f"{e}. Delete {dest} (or replace it with a good copy) and run again.") from None
        manifest.record(res.filename, url=manifest.data.get(res.filename, {}).get("url", "(placed by hand)"), **entry)
        return dest
    if not res.urls:
        raise NeedsManual()
    errors = []
    for url in res.urls:
        log(f"  {res.filename}: downloading {describe_url(url)}")
        try:
            if url.startswith(GDRIVE):
                gdrive_download(url[len(GDRIVE):], dest, log)
                try:
                    entry = verify(dest, res, manifest)
                except FetchError:
                    os.remove(dest)
                    raise
            else:
                entry = http_fetch(url, dest + ".part", res, manifest, log)
                os.replace(dest + ".part", dest)
        except FetchError as e:
            errors.append(str(e))
            log(f"    failed: {e}")
            continue
        manifest.record(res.filename, url=url, **entry)
        return dest
    raise FetchError("; ".join(errors))


# ---------------------------------------------------------------------------------------------
# Installing into the layout


def unpack(archive, into):
    try:
        _unpack(archive, into)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise FetchError(f"cannot unpack {os.path.basename(archive)} ({e}); delete it from "
                         f"{os.path.dirname(archive)} and run again") from None


def _unpack(archive, into):
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)  # zipfile drops absolute and ".." components
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            if hasattr(tarfile, "data_filter"):
                t.extractall(into, filter="data")  # refuses links and paths leaving `into`
            else:  # Python before 3.11.4: the same refusal, by hand
                for m in t.getmembers():
                    if m.issym() or m.islnk() or os.path.isabs(m.name) or ".." in m.name.split("/"):
                        raise FetchError(f"{os.path.basename(archive)}: refusing member {m.name!r}")
                t.extractall(into)
    else:
        raise FetchError(f"{os.path.basename(archive)} is neither a zip nor a tar archive")


def find_member(staging, member):
    path = os.path.join(staging, member)
    if os.path.exists(path):
        return path
    base = os.path.basename(member)  # archives re-packed with an extra top folder
    for dirpath, dirnames, filenames in os.walk(staging):
        if base in dirnames or base in filenames:
            return os.path.join(dirpath, base)
    return None


def install(res, path, dataset_dir, log):
    os.makedirs(dataset_dir, exist_ok=True)
    if res.extractor:
        return EXTRACTORS[res.extractor](res, path, dataset_dir, log)
    if not res.members:
        target = os.path.join(dataset_dir, res.target or res.filename)
        tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
        log(f"  {res.filename}: installed as {target}")
        return
    staging = os.path.join(dataset_dir, f".unpack-{res.filename}")
    if os.path.exists(staging):
        shutil.rmtree(staging)  # left by an interrupted run
    log(f"  {res.filename}: unpacking")
    try:
        unpack(path, staging)
        for inner in res.inner:
            inner_path = find_member(staging, inner)
            if inner_path is None:
                raise FetchError(f"{res.filename} has no {inner}; it may be a different release")
            unpack(inner_path, staging)
        for member, dst in res.members:
            target = os.path.join(dataset_dir, dst)
            if os.path.exists(target):
                continue
            src = find_member(staging, member)
            if src is None:
                raise FetchError(f"{res.filename} has no {member}; it may be a different release")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(src, target)
            log(f"    -> {target}")
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)


def _imagenet_extract(split):
    """ImageNet's archives through torchvision's parsers: train is a tar of per-class tars; val is
    flat and sorted into wnid folders with the devkit's ground truth."""

    def run(res, path, dataset_dir, log):
        from torchvision.datasets import imagenet as tv

        downloads = os.path.dirname(path)
        staging = os.path.join(dataset_dir, f".unpack-{split}")
        if os.path.exists(staging):
            shutil.rmtree(staging)
        log(f"  {res.filename}: unpacking with torchvision (this takes a while)")
        try:
            if split == "train":
                tv.parse_train_archive(downloads, file=res.filename, folder=staging)
            else:
                devkit = "ILSVRC2012_devkit_t12.tar.gz"
                if not os.path.isfile(os.path.join(downloads, devkit)):
                    raise NeedsManual()
                tv.parse_devkit_archive(downloads, file=devkit)
                tv.parse_val_archive(downloads, file=res.filename, folder=staging)
            target = os.path.join(dataset_dir, res.target)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(staging, target)
            log(f"    -> {target}")
        except (RuntimeError, OSError, tarfile.TarError) as e:
            raise FetchError(f"torchvision could not unpack {res.filename} ({e})") from None
        finally:
            if os.path.exists(staging):
                shutil.rmtree(staging)

    return run


EXTRACTORS = {
    "keep": lambda res, path, dataset_dir, log: None,  # stays in .downloads for a later step
    "imagenet_train": _imagenet_extract("train"),
    "imagenet_val": _imagenet_extract("val"),
}


def flatten_nested(dataset_dir, folder, log):
    """cars_train/cars_train/*.jpg (as some mirrors ship it) -> cars_train/*.jpg."""
    outer = os.path.join(dataset_dir, folder)
    inner = os.path.join(outer, folder)
    if not os.path.isdir(inner) or [n for n in os.listdir(outer) if not n.startswith(".")] != [folder]:
        return
    tmp = os.path.join(dataset_dir, f".flatten-{folder}")
    os.replace(inner, tmp)
    os.rmdir(outer)
    os.replace(tmp, outer)
    log(f"  flattened {inner} into {outer}")


# ---------------------------------------------------------------------------------------------
# One dataset


def installed(res, dataset_dir):
    return all(os.path.exists(os.path.join(dataset_dir, p)) for p in res.provides())


def prepare_one(src, root, *, dry_run=False, keep_archives=False, overrides=None, log=print):
    """Returns "ready", "pending" (dry run: would download), "manual" (steps printed) or
    "failed" (a download or check failed; the steps to do it by hand are printed too)."""
    dataset_dir = os.path.join(root, src.folder)
    downloads = os.path.join(root, DOWNLOADS)
    resources = [apply_overrides(r, overrides or {}) for r in src.resources]
    log(f"== {src.name} -> {dataset_dir} (DATASETS.md#{src.anchor})")
    if not dry_run:
        for folder in src.flatten:
            flatten_nested(dataset_dir, folder, log)
    manual, failed, pending = [], [], []
    manifest = None
    for res in resources:
        if installed(res, dataset_dir):
            log(f"  {res.filename}: in place")
            continue
        if dry_run:
            if os.path.isfile(os.path.join(downloads, res.filename)):
                log(f"  {res.filename}: would verify and install the copy in {downloads}")
            elif res.urls:
                urls = " or ".join(describe_url(u) for u in res.urls)
                size = f"~{res.approx_size}" if res.approx_size else "size not published"
                log(f"  {res.filename}: would download {urls} ({size}"
                    f"{', md5 ' + res.md5 if res.md5 else ''}){' [optional]' if res.optional else ''}")
            else:
                manual.append(res)
                continue
            pending.append(res)
            continue
        if manifest is None:
            os.makedirs(downloads, exist_ok=True)
            manifest = Manifest(downloads)
        try:
            path = fetch(res, downloads, manifest, log)
            install(res, path, dataset_dir, log)
        except NeedsManual:
            manual.append(res)
            continue
        except FetchError as e:
            manual.append(res)
            failed.append(res)
            log(f"  {res.filename}: {'(optional, only the fallback split needs it) ' if res.optional else ''}{e}")
            continue
        if (res.members or res.extractor.startswith("imagenet")) and not keep_archives:
            os.remove(path)
    steps = {}  # text -> files it covers (ImageNet's three archives share one text)
    for res in manual:
        text = res.manual or (
            f"Download {' or '.join(describe_url(u) for u in res.urls)} by hand and save it as "
            f"{os.path.join(downloads, res.filename)}; run this command again to verify and install it.")
        steps.setdefault(text, []).append(res)
    for text, covered in steps.items():
        optional = "optional, " if all(r.optional for r in covered) else ""
        log(f"  MANUAL ({optional}{', '.join(r.filename for r in covered)}):")
        for line in text.format(dataset_dir=dataset_dir, downloads=downloads).splitlines():
            log(f"    {line}")
    if any(not r.optional for r in failed):
        return "failed"
    if any(not r.optional for r in manual):
        return "manual"
    return "pending" if any(not r.optional for r in pending) else "ready"


def prepare(root, names=None, *, dry_run=False, keep_archives=False, overrides=None, log=print):
    """Prepare the named datasets under `root`; returns {name: status}."""
    root = os.path.abspath(os.path.expanduser(root))
    overrides = load_overrides(overrides)
    statuses = {}
    for name in resolve_names(names):
        statuses[name] = prepare_one(SOURCES[name], root, dry_run=dry_run, keep_archives=keep_archives,
                                     overrides=overrides, log=log)
    log("")
    for name, status in statuses.items():
        log(f"{name:20s} {status}")
    return statuses


# ---------------------------------------------------------------------------------------------
# Few-shot subsets: export and import


def build_full(name, root):
    from engine.config import get_cfg_default
    from engine.registry import DATASET_REGISTRY  # filled when the datasets package was imported

    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.VERBOSE = root, name, False
    return DATASET_REGISTRY.get(name)(cfg)


def export_fewshot(root, names, out_dir, shots, seeds, log=print):
    """Write (or convert, or reuse) the cache of every (shots, seed) and copy it to
    `out_dir/<dataset folder>/split_fewshot/`. Sampling is seeded as train.py seeds it."""
    for name in resolve_names(names):
        ds = build_full(name, root)
        _require_official_split(ds, name, "exported")
        if getattr(ds, "evaluation_only", False):
            log(f"{name}: an evaluation-only dataset has no few-shot subsets; skipped")
            continue
        for k in shots:
            for s in seeds:
                random.seed(s)
                ds.select_fewshot(ds.train_x, ds.val, k, s)
                src = ds.fewshot_cache_path(k, s)
                dst = os.path.join(out_dir, ds.folder, "split_fewshot", os.path.basename(src))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                tmp = dst + ".tmp"
                shutil.copyfile(src, tmp)
                os.replace(tmp, dst)
                log(f"{name}: exported {dst}")


def _require_official_split(ds, name, verb):
    if ds.split_origin != "official":
        raise DatasetError(f"{name}: its split file is missing (the split would be {ds.split_origin}); few-shot "
                           f"subsets are {verb} only for the official split. See DATASETS.md#{ds.anchor}.")


def import_fewshot(root, names, in_dir, log=print):
    """Check each `in_dir/<dataset folder>/split_fewshot/shot_K-seed_S.json` against the dataset on
    disk and copy it into place; an existing different cache is never overwritten."""
    from .fewshot import _load_cache

    for name in resolve_names(names):
        src_dir = os.path.join(in_dir, SOURCES[name].folder, "split_fewshot")
        if not os.path.isdir(src_dir):
            log(f"{name}: nothing to import (no {src_dir})")
            continue
        ds = build_full(name, root)
        _require_official_split(ds, name, "imported")
        for fname in sorted(os.listdir(src_dir)):
            if not (fname.startswith("shot_") and fname.endswith(".json")):
                continue
            src = os.path.join(src_dir, fname)
            dst = os.path.join(ds.split_fewshot_dir, fname)
            with open(src, "rb") as f:
                new = f.read()
            if os.path.isfile(dst):
                with open(dst, "rb") as f:
                    if f.read() == new:
                        log(f"{name}: {fname} already in place")
                        continue
                raise DatasetError(f"{name}: {dst} exists and differs from {src}; move it away to import.")
            _load_cache(ds.train_x, ds.val if ds.fewshot_val else None, src, ds.path_prefix, name)
            os.makedirs(ds.split_fewshot_dir, exist_ok=True)
            tmp = os.path.join(ds.split_fewshot_dir, f".{fname}.tmp")
            with open(tmp, "wb") as f:
                f.write(new)
            os.replace(tmp, dst)
            log(f"{name}: imported {dst}")


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(prog="prepare_datasets.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the data root (DATASET.ROOT / --root of train.py)")
    p.add_argument("names", nargs="*", help="datasets (registry, folder or config names) or 'all' (default)")
    p.add_argument("--dry-run", action="store_true", help="show what would be downloaded; change nothing")
    p.add_argument("--keep-archives", action="store_true", help="keep archives in <root>/.downloads after unpacking")
    p.add_argument("--export-fewshot", metavar="DIR", help="copy few-shot caches (made if absent) to DIR")
    p.add_argument("--import-fewshot", metavar="DIR", help="check and install few-shot caches from DIR")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = p.parse_args(argv)
    try:
        if args.export_fewshot:
            export_fewshot(args.root, args.names, args.export_fewshot, args.shots, args.seeds)
            return 0
        if args.import_fewshot:
            import_fewshot(args.root, args.names, args.import_fewshot)
            return 0
        statuses = prepare(args.root, args.names, dry_run=args.dry_run, keep_archives=args.keep_archives)
    except UserError as e:
        print(f"Error: {e}")
        return 2
    return 0 if all(s in ("ready", "pending") for s in statuses.values()) else 1
