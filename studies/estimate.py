"""How much encoder work a group is: the numbers `study.py plan` prints, and the weight that
puts the largest groups first.

Per group: the evaluation images (test, plus val where it is a separate split) are encoded once;
training images are encoded as V augmented views each in FEATURES.MODE cached (once for the
group: the union of the few-shot subsets, at most the whole training split), and once per epoch
per run in online mode. Sizes come from the datasets on disk when the study has a root, else
from the published split sizes of the 11 few-shot datasets (marked nominal); datasets with
neither are left out ("?").
"""
import contextlib
import io
import math

from engine.errors import UserError

# Published split sizes (classes, train, val, test) of the reference split files; ImageNet's val is
# its test set.
NOMINAL = {
    "imagenet": (1000, 1_280_000, 0, 50_000), "caltech101": (100, 4128, 1649, 2465),
    "oxford_pets": (37, 2944, 736, 3669), "stanford_cars": (196, 6509, 1635, 8041),
    "oxford_flowers": (102, 4093, 1633, 2463), "food101": (101, 50_500, 20_200, 30_300),
    "fgvc_aircraft": (100, 3334, 3333, 3333), "sun397": (397, 15_880, 3970, 19_850),
    "dtd": (47, 2820, 1128, 1692), "eurosat": (10, 13_500, 5400, 8100), "ucf101": (101, 7639, 1898, 3783),
}


def _subsample(n, how):
    half = math.ceil(n / 2)
    return {"base": half, "new": n - half}.get(how, n)


def _measure(cfg, root):
    """(classes, train, val, test) of the dataset on disk (all classes, no few-shot cut)."""
    from datasets import build_dataset

    c = cfg.clone()
    c.defrost()
    c.DATASET.ROOT = root
    c.DATASET.NUM_SHOTS = -1
    c.DATASET.SUBSAMPLE_CLASSES = "all"
    c.VERBOSE = False
    with contextlib.redirect_stdout(io.StringIO()):
        d = build_dataset(c)
    val = d.val or []
    val_n = 0 if val is d.test or val == d.test else len(val)
    return d.num_classes, len(d.train_x), val_n, len(d.test or [])


def group_estimate(group, cfgs, sizes):
    """{"eval": images, "train": images, "work": ..., "nominal": bool} or None without sizes."""
    if sizes is None:
        return None
    classes, train_total, val, test = sizes
    eval_images, online, cached, steps = test + val, 0, 0, 0
    subsets, views = set(), 0
    for run in group.runs:
        cfg = cfgs.get(run.argv)
        if "--eval-only" in run.argv:
            continue
        n_cls = _subsample(classes, cfg.DATASET.SUBSAMPLE_CLASSES)
        per_run = min(train_total, n_cls * run.shots) if run.shots > 0 else train_total
        epochs = max(int(cfg.OPTIM.MAX_EPOCH), 1)
        steps += per_run * epochs
        if cfg.FEATURES.MODE == "cached":
            key = (run.shots, run.seed, cfg.DATASET.SUBSAMPLE_CLASSES)
            if key not in subsets:  # another shot count or seed: another subset (overlaps not counted)
                subsets.add(key)
                views = max(views, int(cfg.FEATURES.NUM_VIEWS))
                cached += per_run
        else:
            online += per_run * epochs
    train_images = min(cached, train_total) * views + online
    return {"eval": eval_images, "train": train_images, "work": eval_images + train_images + steps}


def estimate_groups(groups, cfgs, study, from_disk=True):
    cache = {}
    for g in groups.values():
        if g.dataset not in cache:
            sizes, source = None, "?"
            if from_disk and study.root:
                try:
                    sizes, source = _measure(cfgs.get(g.runs[0].argv), study.root), "disk"
                except UserError as e:
                    source = f"? ({str(e).splitlines()[0]})"
            if sizes is None and g.dataset in NOMINAL:
                sizes, source = NOMINAL[g.dataset], "nominal"
            cache[g.dataset] = sizes, source
        sizes, source = cache[g.dataset]
        g.estimate = group_estimate(g, cfgs, sizes) or {"work": 0}
        g.estimate["source"] = source
