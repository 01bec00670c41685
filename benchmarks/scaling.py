"""Grid time and peak memory against the number of classes, shots and methods, cached vs online.

    python benchmarks/scaling.py [--classes 10 100 1000] [--shots 1 4 16] [--modes cached online]
                                 [--methods TaskRes=configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml]
                                 [--epochs 2] [--per-class 0] [--arch tiny|rn50] [--work DIR]

For each class count, a synthetic dataset in EuroSAT's layout (`class_image` pictures of
"class <i>" names; --per-class images a class, 0 = twice the largest shot count + test images,
the split file 50/20/30), then for each method and mode one `sweep.py` process over the shot
counts (seed 1, --epochs epochs, an empty feature store of its own, so cached includes filling
the store). Measured: the sweep process's wall time (CLIP load included) and its peak resident
memory (ru_maxrss), and per run its phase seconds and `peak_memory_mb` from results.json.
Written to --work: scaling.csv (one row per run), scaling.json, and scaling.png when matplotlib is
installed; a text table is printed. The last line is the online/cached grid-time ratio at the
largest class count (when both modes ran).
"""
import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TASKRES = "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml"


def backbone(arch, work):
    if arch == "tiny":
        from synthetic.tiny_clip import pretrained_tiny_clip_path

        return pretrained_tiny_clip_path()
    import open_clip

    from synthetic.tiny_clip import save_openai_checkpoint, to_openai_state_dict

    path = os.path.join(work, "rn50-random.pt")
    if not os.path.exists(path):
        save_openai_checkpoint(to_openai_state_dict(open_clip.create_model("RN50", pretrained=None)), path)
    return path


def dataset(work, classes, per_class):
    from synthetic.layouts import write_eurosat

    root = os.path.join(work, f"data-{classes}")
    if not os.path.exists(os.path.join(root, "eurosat", "split_zhou_EuroSAT.json")):
        write_eurosat(root, classes=tuple(f"class {i}" for i in range(classes)), per_class=per_class)
    return root


def child(out, argv):
    """Run one sweep in this process; write its wall time and peak RSS to `out`."""
    import sweep

    start = time.perf_counter()
    code = sweep.main(argv)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(out, "w") as f:
        json.dump({"code": code, "seconds": time.perf_counter() - start, "peak_rss_mb": rss_mb}, f)


def grid(args, root, method, config, mode, clip_path, tag):
    out = os.path.join(args.work, tag)
    argv = ["--shots", *map(str, args.shots), "--seeds", "1", "--root", root, "--trainer", method,
            "--dataset-config-file", "configs/datasets/eurosat.yaml", "--config-file", config,
            "--output-dir", out, "MODEL.BACKBONE.NAME", clip_path, "OPTIM.MAX_EPOCH", str(args.epochs),
            "DATALOADER.NUM_WORKERS", "0", "TRAIN.TENSORBOARD", "False", "FEATURES.MODE", mode,
            "FEATURES.CACHE_DIR", os.path.join(args.work, f"store-{tag}")]
    stats = os.path.join(args.work, f"{tag}.json")
    with open(os.path.join(args.work, f"{tag}.log"), "w") as log:
        subprocess.run([sys.executable, os.path.abspath(__file__), "--child", stats, "--", *argv],
                       cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    with open(stats) as f:
        total = json.load(f)
    runs = []
    for folder, _, files in os.walk(out):
        if "results.json" in files:
            with open(os.path.join(folder, "results.json")) as f:
                res = json.load(f)
            runs.append({"shots": res["config"]["DATASET"]["NUM_SHOTS"], "run_seconds": sum(res["timing"].values()),
                         "run_peak_mb": res["peak_memory_mb"], "accuracy": res["accuracy"]})
    return total, sorted(runs, key=lambda r: r["shots"])


def draw(rows, grids, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_t, ax_m, ax_s) = plt.subplots(1, 3, figsize=(15, 4))
    for (method, mode), points in sorted(grids.items()):
        xs = [p["classes"] for p in points]
        ax_t.plot(xs, [p["grid_seconds"] for p in points], marker="o", label=f"{method} {mode}")
        ax_m.plot(xs, [p["peak_rss_mb"] for p in points], marker="o", label=f"{method} {mode}")
    for ax, label in ((ax_t, "grid seconds"), (ax_m, "peak memory (MB)")):
        ax.set_xscale("log")
        ax.set_xlabel("classes")
        ax.set_ylabel(label)
        ax.legend()
    lines = {}
    for r in rows:
        lines.setdefault((r["method"], r["mode"], r["classes"]), []).append((r["shots"], r["run_seconds"]))
    for (method, mode, classes), pts in sorted(lines.items()):
        ax_s.plot(*zip(*sorted(pts)), marker="o", linestyle="-" if mode == "cached" else "--",
                  label=f"{method} {mode} {classes} classes")
    ax_s.set_xscale("log", base=2)
    ax_s.set_yscale("log")
    ax_s.set_xlabel("shots (runs in sweep order: the first fills the store)")
    ax_s.set_ylabel("run seconds")
    ax_s.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def redraw(work):
    with open(os.path.join(work, "scaling.csv")) as f:
        kinds = {"method": str, "mode": str, "classes": int, "shots": int}
        rows = [{k: kinds.get(k, float)(v) for k, v in r.items()} for r in csv.DictReader(f)]
    with open(os.path.join(work, "scaling.json")) as f:
        grids = {tuple(k.split(" ")): v for k, v in json.load(f).items()}
    print("drawn" if draw(rows, grids, os.path.join(work, "scaling.png")) else "matplotlib not installed")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        return child(argv[1], argv[3:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--shots", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--modes", nargs="+", default=["cached", "online"], choices=["cached", "online"])
    p.add_argument("--methods", nargs="+", default=[f"TaskRes={TASKRES}"], metavar="NAME=CONFIG")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--per-class", type=int, default=0)
    p.add_argument("--arch", choices=["tiny", "rn50"], default="tiny")
    p.add_argument("--work", default="")
    p.add_argument("--draw-only", action="store_true", help="draw --work's scaling.csv/json again")
    args = p.parse_args(argv)
    if args.draw_only:
        return redraw(args.work)
    args.work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="scaling-bench-"))
    os.makedirs(args.work, exist_ok=True)
    per_class = args.per_class or 2 * max(args.shots) + 4  # 50% train: every shot count fits
    clip_path = backbone(args.arch, args.work)
    rows, grids = [], {}
    for classes in args.classes:
        root = dataset(args.work, classes, per_class)
        for spec in args.methods:
            method, config = spec.split("=", 1)
            for mode in args.modes:
                tag = f"{method}-{mode}-{classes}"
                total, runs = grid(args, root, method, config, mode, clip_path, tag)
                grids.setdefault((method, mode), []).append(
                    {"classes": classes, "grid_seconds": total["seconds"], "peak_rss_mb": total["peak_rss_mb"]})
                for r in runs:
                    rows.append({"classes": classes, "method": method, "mode": mode, **r,
                                 "grid_seconds": round(total["seconds"], 2), "grid_peak_rss_mb": round(total["peak_rss_mb"], 1)})
                print(f"{tag}: {total['seconds']:.1f} s, peak {total['peak_rss_mb']:.0f} MB", flush=True)
    with open(os.path.join(args.work, "scaling.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(args.work, "scaling.json"), "w") as f:
        json.dump({f"{m} {mode}": pts for (m, mode), pts in grids.items()}, f, indent=1)
    figure = os.path.join(args.work, "scaling.png")
    drew = draw(rows, grids, figure)
    print(f"\n{args.arch} CLIP, shots {args.shots}, seed 1, {args.epochs} epochs, {per_class} images a class "
          f"(results in {args.work}{', figure scaling.png' if drew else '; matplotlib not installed: no figure'})")
    print(f"{'classes':>7} {'method':<10} {'mode':<7} {'shots':>5} {'run s':>8} {'run peak MB':>12} "
          f"{'acc %':>6} {'grid s':>8} {'grid peak MB':>13}")
    for r in rows:
        print(f"{r['classes']:7d} {r['method']:<10} {r['mode']:<7} {r['shots']:5d} {r['run_seconds']:8.2f} "
              f"{r['run_peak_mb']:12.0f} {r['accuracy']:6.1f} {r['grid_seconds']:8.1f} {r['grid_peak_rss_mb']:13.0f}")
    largest = max(args.classes)
    ratios = [(m, {mode: pt["grid_seconds"] for (mm, mode), pts in grids.items() if mm == m
                   for pt in pts if pt["classes"] == largest}) for m in dict.fromkeys(m for m, _ in grids)]
    for m, t in ratios:
        if "cached" in t and "online" in t:
            print(f"{m} online/cached grid time at {largest} classes = {t['online'] / t['cached']:.2f}")


if __name__ == "__main__":
    main()
