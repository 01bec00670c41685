"""Every method's grid in one process: cached vs online, against the encoder's lower bound.

    python benchmarks/methods_one_process.py [--max-epoch 5] [--epochs-scale 1] [--per-class 40]
                                             [--modes cached online] [--arch tiny|rn50] [--work DIR]

What it measures (the requirement: "one process, one dataset, 5 shot counts x 3 seeds, zero-shot
+ linear probe + CoOp + CLIP-Adapter + Tip-Adapter + Tip-Adapter-F + TaskRes, FEATURES.MODE
cached: total time <= 2x a single encoder pass over the test set plus V passes over the union
of training images; reported against the same grid online"):

  R  the reference cost, measured directly in its own process: the engine's own encoding path
     (engine.features.encode_views, the loop the feature store fills itself with: DataLoader
     workers decode and augment, the same model and transforms, seeded views) over the unique
     test images once (test transform) plus FEATURES.NUM_VIEWS (V) seeded augmented views of
     the union of the few-shot training images of all 15 (shots, seed) pairs (the default train
     transform, RandomResizedCrop scale 0.08-1, which CoOp, CLIP-Adapter and TaskRes use).
     Wall seconds; the best of --repeats measurements. Model loading is not part of R.
  T  the whole grid in ONE process (a fresh one per mode): one shared engine.models.ModelCache,
     an empty feature store (FEATURES.CACHE_DIR under the work folder), the methods one after
     the other as scripts/all_methods.sh orders its sweeps, each (shots, seed) run through
     `train.run(args, models=cache)` with the recipe sweep.py --recipe gives it
     (each method's recipe in configs/trainers/<Name>/): ZeroshotCLIP (configs/trainers/ZeroshotCLIP/rn50.yaml, --eval-only,
     ONE run: it has no shots and no seed, as in scripts/all_methods.sh), then LinearProbe, CoOp,
     CLIP_Adapter, TipAdapter, TipAdapterF, TaskRes at shots 1 2 4 8 16 x seeds 1 2 3 (15 runs
     each, 91 runs in all). T is the wall time from the first run's start to the last run's end
     (the one CLIP load included; Python start-up and imports not).
  warm: the cached grid once more, in a fresh process, on the store the measured cached grid
     filled: the same runs with nothing to encode, so T - T(warm) is what filling the store cost
     and T(warm) is the floor that encoding does not explain (per-run costs, training, searches).
     --no-warm skips it.
  The same grid, same epochs, in FEATURES.MODE online (the reference: augment and encode every
  batch, nothing shared but the loaded model and the text classifiers).

Epochs: the recipes' epochs (TaskRes 100/200, CoOp 50/100/200, CLIP-Adapter 200, Tip-Adapter-F
100 on EuroSAT) make the online grid take hours on a CPU, so every trainable method's
OPTIM.MAX_EPOCH is scaled by --epochs-scale and then capped at --max-epoch (0: no cap),
identically in both modes; the epochs used are printed. Closed-form methods (linear probe,
Tip-Adapter) and zero-shot have no epochs. Every run also gets TRAIN.TENSORBOARD False and
TRAIN.RESUME_FREQ 0 (no TensorBoard events, no per-epoch resume snapshot), as taskres_grid.py.

How to read the output: one row per method with its seconds in each mode, the images its runs
encoded (results.json `encoder`: in cached mode only the store's misses, so a method that shares
the store encodes nothing new) and its mean accuracy; then T, R, T/R against the bound 2, the
online/cached ratio, and where the cached time went (encoder seconds vs per-run phases from
results.json `timing`: build, prepare, train, test, and what lies outside the trainer). With
the tiny CLIP the encoder is so cheap (R of a few seconds) that the costs of 91 runs that are
not encoding (T(warm)) weigh as much as the encoding; `--arch rn50` (RN50's architecture, random
weights: ~7 images/s on 2 CPU cores) is the setting where encoding dominates (run it with
`--modes cached --repeats 1`: online RN50 takes hours). The work folder is kept (summary.json
holds every number, <part>.log every run's output).

Before each timed part it waits (up to --max-wait seconds) until the 1-minute load average is
below --max-load, so that other jobs on a shared machine do not distort the times, and prints
the load it measured under and the CPU seconds other processes used during each part (the
machine's busy time from /proc/stat minus this benchmark's own process tree): near zero means the
part ran undisturbed. A part during which others took more than --max-other of one core is run
again from scratch (fresh output folders, empty store), at most --attempts times; the least
disturbed attempt is reported.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

SHOTS = [1, 2, 4, 8, 16]
SEEDS = [1, 2, 3]
METHODS = ["ZeroshotCLIP", "LinearProbe", "CoOp", "CLIP_Adapter", "TipAdapter", "TipAdapterF", "TaskRes"]
DATASET_CONFIG = "configs/datasets/eurosat.yaml"
ZEROSHOT_CONFIG = "configs/trainers/ZeroshotCLIP/rn50.yaml"
# The config whose transforms and test batch size R uses: CoOp's (the first method in the grid
# that fills the training views; CLIP-Adapter and TaskRes use the same transforms).
REFERENCE_CONFIG = "configs/trainers/CoOp/rn50.yaml"


# ---- set-up ----------------------------------------------------------------------------------------
def make_backbone(arch, path):
    if arch == "tiny":
        from synthetic.tiny_clip import pretrained_tiny_clip_path
        return pretrained_tiny_clip_path()
    import open_clip
    import torch

    from synthetic.tiny_clip import save_openai_checkpoint, to_openai_state_dict
    if not os.path.isfile(path):
        torch.manual_seed(0)
        save_openai_checkpoint(to_openai_state_dict(open_clip.create_model("RN50", pretrained=None)), path)
    return path


def common_opts(args, mode, cache):
    return ["MODEL.BACKBONE.NAME", args.backbone, "DATALOADER.NUM_WORKERS", str(args.workers),
            "TRAIN.TENSORBOARD", "False", "TRAIN.RESUME_FREQ", "0", "FEATURES.MODE", mode,
            "FEATURES.NUM_VIEWS", str(args.views), "FEATURES.CACHE_DIR", cache]


def wait_for_load(max_load, max_wait, what):
    """Wait until the 1-minute load average is below max_load (at most max_wait s); returns it."""
    start = time.time()
    load = os.getloadavg()[0]
    while load > max_load and time.time() - start < max_wait:
        print(f"  load {load:.2f} > {max_load} before {what}; waiting ...", flush=True)
        time.sleep(30)
        load = os.getloadavg()[0]
    note = "" if load <= max_load else f" (still above {max_load} after {max_wait}s: times may be inflated)"
    print(f"  1-minute load before {what}: {load:.2f}{note}", flush=True)
    return load


# ---- the grid (runs in its own process) ------------------------------------------------------------
def new_epochs(recipe_epochs, scale, cap):
    e = max(1, round(recipe_epochs * scale))
    return min(e, cap) if cap > 0 else e


def plan_method(method, args, mode, out_root, cache):
    """[(run folder, train.py argv, recipe epochs or None, epochs used or None)] for one method."""
    import sweep
    import train
    import trainers  # noqa: F401  (registers every trainer)
    from engine.registry import TRAINER_REGISTRY

    common = common_opts(args, mode, cache)
    out = os.path.join(out_root, method)
    if method == "ZeroshotCLIP":
        argv = ["--root", args.data, "--trainer", method, "--dataset-config-file", DATASET_CONFIG,
                "--config-file", ZEROSHOT_CONFIG, "--output-dir", out, "--eval-only", *common]
        return [(out, argv, None, None)]
    sw_argv = ["--shots", *map(str, args.shots), "--seeds", *map(str, args.seeds), "--recipe",
               "--root", args.data, "--trainer", method, "--dataset-config-file", DATASET_CONFIG,
               "--output-dir", out, *common]
    # What sweep.main does before its loop.
    sweep_args, rest = sweep.build_parser().parse_known_args(sw_argv)
    base = train.parse_args(rest)
    flags, _ = train.split_argv(rest, train.build_parser())
    base.argv = sweep.strip_flags(flags, {"--config-file", "--seed", "--output-dir"})
    closed_form = TRAINER_REGISTRY.get(method).closed_form
    runs = []
    for run_out, argv in sweep.plan(sweep_args, base):
        if closed_form:
            runs.append((run_out, argv, None, None))
            continue
        recipe_epochs = int(train.setup_cfg(train.parse_args(argv)).OPTIM.MAX_EPOCH)
        epochs = new_epochs(recipe_epochs, args.epochs_scale, args.max_epoch)
        runs.append((run_out, argv + ["OPTIM.MAX_EPOCH", str(epochs)], recipe_epochs, epochs))
    return runs


def run_grid(args):
    import torch

    import sweep
    import train
    from engine.models import ModelCache

    mode, work = args.internal, args.work
    tag = f"{mode}{args.attempt_tag}"
    out_root = os.path.join(work, f"out-{tag}")
    # "warm": the cached grid again, on the store the measured cached grid filled (nothing to encode).
    feature_mode, cache = ("cached", args.store) if mode == "warm" else (mode, os.path.join(work, f"store-{tag}"))
    plans = {m: plan_method(m, args, feature_mode, out_root, cache) for m in METHODS}
    models = ModelCache()  # one for the whole grid, as a sweep owns one
    per_method, runs_out, prefilled = {}, [], {}
    start = time.perf_counter()
    for method in METHODS:
        t0 = time.perf_counter()
        for i, (out, argv, recipe_epochs, epochs) in enumerate(plans[method]):
            print(f"=== {mode} {method} {out}", flush=True)
            trainer = train.run(train.parse_args(argv), models=models)
            runs_out.append((method, out, recipe_epochs, epochs))
            if i == 0 and not args.no_prefill:  # as sweep.py: the method's group filled in one pass
                t1 = time.perf_counter()
                stats = trainer.source.stats() if hasattr(trainer.source, "stats") else {}
                n = sweep.prefill_group(argv, trainer, [a for _, a, _, _ in plans[method][1:]])
                after = trainer.source.stats() if hasattr(trainer.source, "stats") else {}
                prefilled[method] = {"images": n, "seconds": round(time.perf_counter() - t1, 3),
                                     "encoder_seconds": (after.get("seconds") or 0) - (stats.get("seconds") or 0)}
        per_method[method] = time.perf_counter() - t0
    total = time.perf_counter() - start
    runs = []
    for method, out, recipe_epochs, epochs in runs_out:
        with open(os.path.join(out, "results.json")) as f:
            res = json.load(f)
        runs.append({"method": method, "out": out, "shots": res.get("num_shots"), "seed": res.get("seed"),
                     "accuracy": res.get("accuracy"), "timing": res.get("timing", {}),
                     "encoder": res.get("encoder", {}), "recipe_epochs": recipe_epochs, "epochs": epochs})
    result = {"mode": mode, "total_s": total, "per_method_s": per_method, "runs": runs, "prefill": prefilled,
              "models_loaded": len(models), "threads": torch.get_num_threads()}
    with open(args.json_out, "w") as f:
        json.dump(result, f, indent=1)


# ---- R: the reference cost (runs in its own process) -----------------------------------------------
def run_reference(args):
    import torch

    import clip
    import train
    from datasets import build_dataset
    from datasets.transforms import build_transform
    from engine.checkpoint import set_random_seed
    from engine.features import EncoderStats, encode_views
    from engine.models import load_clip_model
    from engine.trainer import select_device

    base = ["--root", args.data, "--trainer", "CoOp", "--dataset-config-file", DATASET_CONFIG,
            "--config-file", REFERENCE_CONFIG, *common_opts(args, "cached", os.path.join(args.work, "unused"))]
    train_items, val_items, test_items = {}, {}, None
    for k in args.shots:
        for s in args.seeds:
            cfg = train.setup_cfg(train.parse_args(base + ["--seed", str(s), "DATASET.NUM_SHOTS", str(k),
                                                           "VERBOSE", "False"]))
            set_random_seed(s)  # as train.run: the few-shot draw follows the seed
            ds = build_dataset(cfg)
            train_items.update({d.impath: d for d in ds.train_x})
            val_items.update({d.impath: d for d in (ds.val or [])})
            test_items = ds.test
    device = select_device(cfg)
    model = load_clip_model(cfg.MODEL.BACKBONE.NAME, device, "fp16", "fp16", cfg.MODEL.BACKBONE.CACHE_DIR)
    res = model.input_resolution
    if tuple(cfg.INPUT.SIZE) != (res, res):  # as Trainer._fit_input_size
        cfg = cfg.clone()
        cfg.defrost()
        cfg.INPUT.SIZE = (res, res)
        cfg.freeze()
    tfm_train, tfm_test = build_transform(cfg, is_train=True), build_transform(cfg, is_train=False)

    def encode(images):
        if images.is_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        return clip.encode_image(model, images)

    test_pairs = [(d.impath, 0) for d in test_items]
    train_pairs = [(p, v) for p in train_items for v in range(args.views)]
    encode_views(test_pairs[:8], tfm_test, False, encode, cfg, device, EncoderStats())  # warm-up, untimed
    walls, stats = [], None
    for _ in range(args.repeats):
        st = EncoderStats()
        t0 = time.perf_counter()
        encode_views(test_pairs, tfm_test, False, encode, cfg, device, st)
        encode_views(train_pairs, tfm_train, True, encode, cfg, device, st)
        walls.append(time.perf_counter() - t0)
        if stats is None or walls[-1] == min(walls):
            stats = st.stats()
    result = {"R_s": min(walls), "walls": walls, "encoder": stats, "n_test": len(test_pairs),
              "n_train": len(train_items), "n_val": len(val_items), "views": args.views,
              "images": len(test_pairs) + len(train_pairs), "batch_size": int(cfg.DATALOADER.TEST.BATCH_SIZE),
              "device": str(device)}
    with open(args.json_out, "w") as f:
        json.dump(result, f, indent=1)


# ---- driver ----------------------------------------------------------------------------------------
def busy_cpu_seconds():
    """CPU seconds the whole machine has been busy (all cores; /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_children_cpu_seconds():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def sub(args, what, tag=""):
    """Run this script with --internal WHAT in a fresh process; its JSON result, plus the CPU
    seconds other processes used meanwhile (machine busy time minus this process tree's)."""
    json_out = os.path.join(args.work, f"{what}{tag}.json")
    log = os.path.join(args.work, f"{what}{tag}.log")
    cmd = [sys.executable, os.path.abspath(__file__), "--internal", what, "--json-out", json_out, "--attempt-tag", tag,
           "--work", args.work, "--data", args.data, "--backbone", args.backbone,
           "--per-class", str(args.per_class), "--views", str(args.views), "--workers", str(args.workers),
           "--max-epoch", str(args.max_epoch), "--epochs-scale", str(args.epochs_scale),
           "--repeats", str(args.repeats), "--store", args.store or "",
           "--shots", *map(str, args.shots), "--seeds", *map(str, args.seeds)] + (["--no-prefill"] if args.no_prefill else [])
    t0, busy0, own0 = time.time(), busy_cpu_seconds(), own_children_cpu_seconds()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    busy1, own1 = busy_cpu_seconds(), own_children_cpu_seconds()
    if rc:
        raise SystemExit(f"{what} failed (exit {rc}); see {log}")
    with open(json_out) as f:
        out = json.load(f)
    out["process_s"] = time.time() - t0
    out["own_cpu_s"] = own1 - own0
    out["other_cpu_s"] = None if busy0 is None else max(0.0, (busy1 - busy0) - (own1 - own0))
    out["log"] = log
    return out


def measure(args, what, label):
    """Wait for a quiet machine, run `what`; run it again (fresh folders, empty store) while other
    processes took more than --max-other of one core meanwhile, at most --attempts times in all.
    Returns (the least disturbed attempt, the load before it)."""
    best = None
    for attempt in range(1, args.attempts + 1):
        load = wait_for_load(args.max_load, args.max_wait, label)
        out = sub(args, what, "" if attempt == 1 else f"-{attempt}")
        other = out["other_cpu_s"] or 0.0
        share = other / max(out["process_s"], 1e-9)
        out["attempt"], out["load_before"] = attempt, load
        print(f"  {label}, attempt {attempt}: {out.get('total_s', out.get('R_s')):.2f} s; other processes used "
              f"{other:.1f} CPU s meanwhile ({share:.0%} of one core; log {out['log']})", flush=True)
        if best is None or share < (best["other_cpu_s"] or 0.0) / max(best["process_s"], 1e-9):
            best = out
        if share <= args.max_other:
            break
    return best, best["load_before"]


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def report(args, ref, grids, loads):
    modes = list(grids)
    print()
    print(f"Data: synthetic EuroSAT, {args.per_class} images per class ({ref['n_train']} train images in the "
          f"union of the grid's few-shot sets, {ref['n_val']} few-shot val, {ref['n_test']} test); backbone "
          f"{args.arch}; V = FEATURES.NUM_VIEWS = {args.views}; DATALOADER.NUM_WORKERS {args.workers}; "
          f"{os.cpu_count()} CPU cores; device {ref['device']}")
    print("1-minute load before each timed part: " + ", ".join(f"{k} {v:.2f}" for k, v in loads.items()))
    parts = [("R", ref)] + list(grids.items())
    print("CPU seconds used by other processes during each part (machine busy time minus this benchmark's; "
          "near 0 = undisturbed): " + ", ".join(
              f"{k} {p['other_cpu_s']:.1f} of {p['process_s']:.0f} s wall (attempt {p['attempt']})" for k, p in parts
              if p.get("other_cpu_s") is not None))
    first = grids[modes[0]]
    epochs = {}
    for r in first["runs"]:
        if r["epochs"] is not None:
            epochs.setdefault(r["method"], {})[r["shots"]] = (r["recipe_epochs"], r["epochs"])
    print(f"Epochs (recipe -> used; --epochs-scale {args.epochs_scale}, --max-epoch {args.max_epoch}), "
          f"the same in every mode:")
    for m, by_shot in epochs.items():
        print(f"  {m}: " + ", ".join(f"{k} shots {a}->{b}" for k, (a, b) in sorted(by_shot.items())))
    for mode in modes[1:]:
        same = [(r["method"], r["shots"], r["seed"], r["epochs"]) for r in grids[mode]["runs"]] == \
               [(r["method"], r["shots"], r["seed"], r["epochs"]) for r in first["runs"]]
        if not same:
            print(f"  WARNING: the {mode} grid ran other runs or epochs than the {modes[0]} grid")

    print()
    head = f"{'method':<13} {'runs':>4}"
    for mode in modes:
        head += f" {mode + ' s':>10} {'enc img':>8} {'acc %':>6}"
    if "cached" in grids and "online" in grids:
        head += f" {'onl/cach':>8}"
    print(head)
    print("-" * len(head))
    for m in METHODS:
        n = sum(1 for r in first["runs"] if r["method"] == m)
        line = f"{m:<13} {n:>4}"
        for mode in modes:
            g = grids[mode]
            rs = [r for r in g["runs"] if r["method"] == m]
            imgs = sum(r["encoder"].get("images", 0) or 0 for r in rs) + prefill_images(g, m)
            line += f" {g['per_method_s'][m]:>10.1f} {imgs:>8,} {mean([r['accuracy'] for r in rs]):>6.2f}"
        if "cached" in grids and "online" in grids:
            line += f" {grids['online']['per_method_s'][m] / grids['cached']['per_method_s'][m]:>7.1f}x"
        print(line)
    print("-" * len(head))
    line = f"{'total':<13} {len(first['runs']):>4}"
    for mode in modes:
        g = grids[mode]
        imgs = sum(r["encoder"].get("images", 0) or 0 for r in g["runs"]) + prefill_images(g)
        line += f" {g['total_s']:>10.1f} {imgs:>8,} {mean([r['accuracy'] for r in g['runs']]):>6.2f}"
    if "cached" in grids and "online" in grids:
        line += f" {grids['online']['total_s'] / grids['cached']['total_s']:>7.1f}x"
    print(line)

    print()
    R = ref["R_s"]
    print(f"R = one encoder pass over the {ref['n_test']} test images + {args.views} views of the {ref['n_train']} "
          f"training images = {ref['images']:,} images: {R:.2f} s wall (best of {len(ref['walls'])}: "
          + ", ".join(f"{w:.2f}" for w in ref["walls"]) + f"; encoder compute {ref['encoder']['seconds']:.2f} s, "
          f"{ref['encoder']['images_per_s']} images/s, batch {ref['batch_size']})")
    for mode in modes:
        T = grids[mode]["total_s"]
        verdict = "meets" if T <= 2 * R else "misses"
        print(f"T ({mode}) = {T:.1f} s -> T/R = {T / R:.2f} ({verdict} the bound T <= 2R = {2 * R:.1f} s)")
    if "cached" in grids and "online" in grids:
        print(f"online / cached = {grids['online']['total_s'] / grids['cached']['total_s']:.2f}x")
    if "cached" in grids and "warm" in grids:
        fill = grids["cached"]["total_s"] - grids["warm"]["total_s"]
        print(f"filling the store (encoding, decoding and augmenting, store writes) = T(cached) - T(warm) = "
              f"{fill:.1f} s = {fill / R:.2f} R; everything else (per-run costs, training, searches) = "
              f"T(warm) = {grids['warm']['total_s']:.1f} s = {grids['warm']['total_s'] / R:.2f} R")

    for mode in modes:
        g = grids[mode]
        enc_s = sum(r["encoder"].get("seconds", 0) or 0 for r in g["runs"]) + sum(
            p.get("encoder_seconds", 0) for p in g.get("prefill", {}).values())
        enc_i = sum(r["encoder"].get("images", 0) or 0 for r in g["runs"]) + prefill_images(g)
        phases = {}
        for r in g["runs"]:
            for k, v in r["timing"].items():
                phases[k] = phases.get(k, 0.0) + v
        inside = sum(phases.values())
        print(f"\nWhere the {mode} time went ({g['total_s']:.1f} s, {len(g['runs'])} runs, "
              f"{g['models_loaded']} CLIP model(s) loaded, {g['threads']} torch threads):")
        print(f"  encoder: {enc_i:,} images in {enc_s:.1f} s of encoder compute (results.json `encoder`; "
              f"R's images: {ref['images']:,})")
        print("  run phases (results.json `timing`, summed; encoding is inside them): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(phases.items(), key=lambda kv: -kv[1])))
        print(f"  outside the trainer's phases (config, run lock, log, results, untimed hooks): "
              f"{g['total_s'] - inside:.1f} s = {(g['total_s'] - inside) / len(g['runs']):.2f} s per run")
        if mode == "cached":
            by_method = {}
            for r in g["runs"]:
                by_method[r["method"]] = by_method.get(r["method"], 0) + (r["encoder"].get("images", 0) or 0)
            print("  store misses by method (images each method encoded; the rest came from the store): "
                  + ", ".join(f"{m} {n:,}" for m, n in by_method.items()))
            if g.get("prefill"):
                print("  of which the group pre-fill after each method's first run (images, seconds): "
                      + ", ".join(f"{m} {p['images']:,} {p['seconds']:.1f} s" for m, p in g["prefill"].items()))


def prefill_images(grid, method=None):
    return sum(p["images"] for m, p in grid.get("prefill", {}).items() if method in (None, m))


def r_prime(ref, grids):
    """R': one encoder pass over every distinct (image, view, transform) the cached grid encoded,
    at R's measured rate (R seconds for R's images)."""
    g = grids["cached"]
    images = sum(r["encoder"].get("images", 0) or 0 for r in g["runs"]) + prefill_images(g)
    return ref["R_s"] * images / ref["images"], images


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["tiny", "rn50"], default="tiny",
                   help="tiny: the pretrained tiny CLIP (default); rn50: RN50's architecture, random weights")
    p.add_argument("--max-epoch", type=int, default=5,
                   help="cap on OPTIM.MAX_EPOCH of every trainable method, both modes (0: no cap)")
    p.add_argument("--epochs-scale", type=float, default=1.0,
                   help="multiply every trainable method's recipe epochs by this (before the cap)")
    p.add_argument("--modes", nargs="+", choices=["cached", "online"], default=["cached", "online"])
    p.add_argument("--per-class", type=int, default=40, help="synthetic images per class (50%% train, 20%% val)")
    p.add_argument("--views", type=int, default=10, help="FEATURES.NUM_VIEWS (V)")
    p.add_argument("--workers", type=int, default=2, help="DATALOADER.NUM_WORKERS")
    p.add_argument("--shots", type=int, nargs="+", default=SHOTS)
    p.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    p.add_argument("--repeats", type=int, default=2, help="measurements of R (the best counts)")
    p.add_argument("--max-load", type=float, default=1.5, help="wait until the 1-minute load is below this")
    p.add_argument("--max-wait", type=int, default=600, help="wait at most this many seconds for the load")
    p.add_argument("--no-warm", action="store_true",
                   help="skip the second cached grid on the filled store (the cost without any encoding)")
    p.add_argument("--max-other", type=float, default=0.1,
                   help="redo a part when other processes used more than this share of one core meanwhile")
    p.add_argument("--attempts", type=int, default=3, help="at most this many tries per part (the least "
                   "disturbed one is reported)")
    p.add_argument("--work", default="", help="work folder (default: a new temporary folder)")
    p.add_argument("--no-prefill", action="store_true",
                   help="no group pre-fill: each run encodes its own store misses (the grid before sweep.py's pre-fill)")
    # Internal: one measurement in this process (the driver runs each in a fresh one).
    p.add_argument("--internal", choices=["reference", "cached", "warm", "online"], help=argparse.SUPPRESS)
    p.add_argument("--store", default="", help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    p.add_argument("--attempt-tag", default="", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--backbone", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.internal == "reference":
        return run_reference(args)
    if args.internal:
        return run_grid(args)

    args.work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="methods-bench-"))
    os.makedirs(args.work, exist_ok=True)
    if os.listdir(args.work):
        leftovers = [d for d in os.listdir(args.work) if d.startswith(("out-", "store-"))]
        if leftovers:
            raise SystemExit(f"{args.work} already holds {', '.join(leftovers)}: pass an empty --work folder "
                             f"(finished runs would be skipped and a filled store would be reused)")
    from synthetic.layouts import write_eurosat

    args.data = os.path.join(args.work, "data")
    write_eurosat(args.data, per_class=args.per_class)
    args.backbone = make_backbone(args.arch, os.path.join(args.work, "rn50-random.pt"))
    print(f"work folder {args.work}; backbone {args.backbone}; modes {' '.join(args.modes)}; "
          f"max-epoch {args.max_epoch}, epochs-scale {args.epochs_scale}", flush=True)

    loads = {}
    ref, loads["R"] = measure(args, "reference", "R")
    grids = {}
    for mode in args.modes:
        grids[mode], loads[mode] = measure(args, mode, f"the {mode} grid")
        if mode == "cached" and not args.no_warm:
            attempt = grids[mode]["attempt"]
            args.store = os.path.join(args.work, "store-cached" + ("" if attempt == 1 else f"-{attempt}"))
            grids["warm"], loads["warm"] = measure(args, "warm", "the cached grid again on its filled store")
    report(args, ref, grids, loads)
    with open(os.path.join(args.work, "summary.json"), "w") as f:
        json.dump({"args": {k: v for k, v in vars(args).items() if k != "internal"}, "loads": loads,
                   "reference": ref, "grids": grids}, f, indent=1)
    print(f"\nAll numbers: {args.work}/summary.json")
    if "cached" in grids:
        rp, images = r_prime(ref, grids)
        print(f"R' = {rp:.2f} s ({images:,} distinct images at R's rate); T(cached) = {grids['cached']['total_s']:.1f} s")
        print(f"T/R' = {grids['cached']['total_s'] / rp:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
