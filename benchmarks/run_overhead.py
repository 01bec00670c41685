"""A run's fixed costs against the dataset's size: building its data and reading its stored
features, at 10,000 and 100,000 files.

    python benchmarks/run_overhead.py [--files 10000 100000] [--runs 6] [--work DIR]

Writes EuroSAT's layout (`eurosat/2750/<Class>/<Class>_<i>.jpg`, 10 classes, CoOp's 50/20/30
split file) with tiny files (hard links to one 8x8 JPEG per class: the size of the files does not matter
here, their number does), then, in one process as a sweep runs them, --runs runs of shots
1/2/4/8/16 x seeds (cycled), each: the DataManager (split file, few-shot subset, image check:
the `build` phase's data part) and a fresh CachedSource reading the run's stored features (the
test split and 10 views of the few-shot training images; the store is filled beforehand with
placeholder features under the keys the runs ask for, so nothing is encoded). The first run of
each size is reported apart (it reads the split and checks every image once for the process);
the per-run figure is the mean of the others. The last line is the ratio of the per-run figures
at the largest and the smallest size.
"""
import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.config import get_cfg_default  # noqa: E402
from engine.data import DataManager  # noqa: E402
from engine.features import CachedSource, _NAMESPACES  # noqa: E402
from engine.feature_store import image_key  # noqa: E402

CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
           "PermanentCrop", "Residential", "River", "SeaLake")
VIEWS, DIM = 10, 64


def write_layout(root, files):
    import json

    from PIL import Image

    from datasets.eurosat import NEW_CNAMES

    base = os.path.join(root, "eurosat", "2750")
    os.makedirs(base, exist_ok=True)
    split = {"train": [], "val": [], "test": []}
    per_class = files // len(CLASSES)
    for label, folder in enumerate(CLASSES):
        os.makedirs(os.path.join(base, folder), exist_ok=True)
        seed_file = os.path.join(root, f"{folder}.jpg")  # one per class: a file has at most 65,000 links
        Image.new("RGB", (8, 8), (12 * label, 90, 60)).save(seed_file, quality=90)
        n_train, n_val = per_class // 2, per_class // 5
        for i in range(per_class):
            rel = f"{folder}/{folder}_{i + 1}.jpg"
            os.link(seed_file, os.path.join(base, rel))
            key = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            split[key].append([rel, label, NEW_CNAMES[folder]])
    with open(os.path.join(root, "eurosat", "split_zhou_EuroSAT.json"), "w") as f:
        json.dump(split, f)


def run_cfg(root, cache, shots, seed):
    cfg = get_cfg_default()
    cfg.DATASET.NAME, cfg.DATASET.ROOT = "EuroSAT", root
    cfg.DATASET.NUM_SHOTS, cfg.SEED = shots, seed
    cfg.FEATURES.MODE, cfg.FEATURES.CACHE_DIR, cfg.FEATURES.NUM_VIEWS = "cached", cache, VIEWS
    cfg.INPUT.SIZE = (32, 32)
    cfg.VERBOSE = False
    return cfg


def one_run(cfg, fill=False):
    """(data seconds, store-read seconds) of one run."""
    import random

    from engine.checkpoint import set_random_seed

    set_random_seed(cfg.SEED)
    t0 = time.perf_counter()
    dm = DataManager(cfg, torch.device("cpu"))
    t1 = time.perf_counter()
    source = CachedSource(cfg, dm, lambda x: torch.zeros(len(x), DIM), "cpu", "overhead-benchmark", "fp32")
    source._d = DIM
    if fill:  # placeholder features under the keys the run asks for
        for train, items, views in ((False, dm.dataset.test, [0]), (True, dm.dataset.train_x, range(VIEWS))):
            ns = source._namespace(train, DIM)
            keys = [image_key(d.impath, v) for d in items for v in views]
            missing = ns.missing(keys)
            if missing:
                ns.add(missing, torch.zeros(len(missing), DIM))
        random.random()
    t2 = time.perf_counter()
    feats, _ = source.split_features("test")
    train = source.train_feats
    t3 = time.perf_counter()
    assert feats.shape[0] == len(dm.dataset.test) and train.shape[:2] == (len(dm.dataset.train_x), VIEWS)
    return t1 - t0, t3 - t2


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, nargs="+", default=[10000, 100000])
    p.add_argument("--runs", type=int, default=6)
    p.add_argument("--work", default="")
    args = p.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="run-overhead-")
    os.environ["XDG_CACHE_HOME"] = os.path.join(work, "xdg")  # the image-check cache, private to this run
    grid = [(k, s) for s in (1, 2, 3) for k in (1, 2, 4, 8, 16)]
    per_run = {}
    for files in args.files:
        root, cache = os.path.join(work, f"data{files}"), os.path.join(work, f"store{files}")
        if not os.path.isdir(root):
            t = time.perf_counter()
            write_layout(root, files)
            print(f"{files:,} files written in {time.perf_counter() - t:.1f} s")
        for k, s in grid[:args.runs]:  # fill the store (and the few-shot files), untimed
            one_run(run_cfg(root, cache, k, s), fill=True)
        _NAMESPACES.clear()  # the measured runs start as a fresh process: nothing in memory
        times = [one_run(run_cfg(root, cache, k, s)) for k, s in grid[:args.runs]]
        first, rest = times[0], times[1:]
        data = sum(t[0] for t in rest) / len(rest)
        read = sum(t[1] for t in rest) / len(rest)
        per_run[files] = data + read
        print(f"{files:>7,} files: first run {first[0]:.3f} s data + {first[1]:.3f} s store; then per run "
              f"{data:.3f} s data + {read:.3f} s store = {data + read:.3f} s", flush=True)
    lo, hi = min(per_run), max(per_run)
    print(f"per-run overhead {hi:,} / {lo:,} files = {per_run[hi] / per_run[lo]:.2f}")


if __name__ == "__main__":
    main()
