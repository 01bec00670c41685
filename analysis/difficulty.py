"""Transfer difficulty vs learned residual magnitude (the task-residual paper's analysis).

For each dataset:

* relative transfer difficulty  d = (1/K) / a_zs
  chance accuracy over zero-shot CLIP accuracy, both as fractions (K = number of classes);
  a harder transfer has a zero-shot classifier closer to chance, so d is larger;
* residual magnitude, from the run's checkpoint (base t, residual x, scale α):
  absolute  m = (1/K) Σ_k ||α·x_k||₂         (the default on the y axis)
  relative  r = (1/K) Σ_k ||α·x_k||₂ / ||t_k||₂  (--metric relative)
  each computed per seed and then averaged over the seeds.

One point per dataset, labelled, with the Pearson correlation between d and the plotted
magnitude in the title. The CSV holds both magnitudes.

    python -m analysis.difficulty output --zeroshot output/ZEROSHOT_METHOD/rn50 --out difficulty.png \\
        [--csv difficulty.csv] [--shots 16] [--base regular] [--metric absolute|relative]

K is read from the checkpoint (rows of the residual). The zero-shot accuracy of a dataset is the
mean of its zero-shot runs (the last zero-shot method in name order where several ran, unless
--zs-trainer). The runs analysed are those of the methods with a residual-scale axis `alpha`
(`python -m engine.describe METHOD`: axes), whose checkpoints hold base and residual.
"""
import argparse
import math
import sys
from collections import defaultdict

import numpy as np

from .output import new_figure, save_figure, write_csv
from .runs import (display_name, find_runs, load_taskres, residual_magnitudes, residual_methods,
                   zero_shot_accuracies, zero_shot_trainers)

CSV_FIELDS = [
    "dataset", "display_name", "num_classes", "shots", "base", "alpha", "config", "backbone", "seeds",
    "n_runs", "zeroshot_trainer", "zeroshot_accuracy", "chance", "transfer_difficulty",
    "residual_norm_mean", "residual_norm_std", "relative_residual_norm_mean",
    "relative_residual_norm_std", "taskres_accuracy_mean", "taskres_accuracy_std",
]
METRICS = {
    "absolute": ("residual_norm", "mean residual magnitude  mean_k ||α·x_k||₂"),
    "relative": ("relative_residual_norm", "mean relative residual magnitude  mean_k ||α·x_k||₂ / ||t_k||₂"),
}


class AnalysisError(Exception):
    """A problem with the inputs, reported to the user in one message."""


def pearson(x, y):
    """Pearson correlation of two sequences; nan with fewer than 2 points or a constant one."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else float("nan")


def select_taskres(runs, shots, base="regular", alpha=None, backbone=None):
    """{dataset: [runs]} of residual-learning training runs at `shots` with the given base."""
    by = defaultdict(list)
    for run in runs:
        if run.trainer not in residual_methods() or run.shots != shots or not run.dataset:
            continue
        if base != "any" and (run.base or "regular") != base:
            continue
        if alpha is not None and (run.alpha is None or not math.isclose(run.alpha, alpha)):
            continue
        if backbone is not None and run.backbone != backbone:
            continue
        by[run.dataset].append(run)
    for dataset, group in by.items():
        kinds = sorted({(r.base, r.alpha, r.config, r.backbone) for r in group}, key=str)
        if len(kinds) > 1:
            listed = "; ".join(f"base={b} alpha={a} config={c} backbone={bb}" for b, a, c, bb in kinds)
            raise AnalysisError(f"{dataset} at {shots} shots has runs of several experiments ({listed}); "
                                f"choose one with --base, --alpha or --backbone")
    return dict(by)


def collect(runs, zs_runs, shots=16, base="regular", alpha=None, backbone=None, zs_trainer=None, warn=True):
    """One row (see CSV_FIELDS) per dataset with residual checkpoints and a zero-shot result."""
    unique = {run.path: run for run in list(runs) + list(zs_runs)}  # a run under both roots counts once
    zero_shot = zero_shot_accuracies(unique.values(), zs_trainer)
    rows = []
    for dataset, group in sorted(select_taskres(runs, shots, base, alpha, backbone).items()):
        if dataset not in zero_shot:
            if warn:
                print(f"skip {dataset}: no zero-shot result (run scripts/taskres/zeroshot_all.sh)", file=sys.stderr)
            continue
        mags, rels, accs, seeds, classes = [], [], [], [], set()
        for run in group:
            if run.alpha is None:
                if warn:
                    print(f"skip {run.path}: residual scale alpha unknown", file=sys.stderr)
                continue
            try:
                weights = load_taskres(run)
            except (FileNotFoundError, ValueError) as e:
                if warn:
                    print(f"skip {run.path}: {e}", file=sys.stderr)
                continue
            m = residual_magnitudes(weights, run.alpha)
            mags.append(m["absolute"])
            rels.append(m["relative"])
            accs.append(run.accuracy)
            seeds.append(run.seed)
            classes.add(weights.num_classes)
        if not mags:
            continue
        if len(classes) > 1:
            raise AnalysisError(f"{dataset}: checkpoints with different numbers of classes {sorted(classes)}")
        k = classes.pop()
        zs_trainer_used, zs_acc = zero_shot[dataset]
        chance = 1.0 / k
        first = group[0]
        rows.append({
            "dataset": dataset, "display_name": display_name(dataset), "num_classes": k, "shots": shots,
            "base": first.base or "regular", "alpha": first.alpha, "config": first.config,
            "backbone": first.backbone,
            "seeds": " ".join(str(s) for s in sorted(seeds, key=lambda s: (s is None, s))),
            "n_runs": len(mags), "zeroshot_trainer": zs_trainer_used, "zeroshot_accuracy": zs_acc,
            "chance": chance, "transfer_difficulty": chance / (zs_acc / 100.0),
            "residual_norm_mean": float(np.mean(mags)), "residual_norm_std": float(np.std(mags)),
            "relative_residual_norm_mean": float(np.mean(rels)), "relative_residual_norm_std": float(np.std(rels)),
            "taskres_accuracy_mean": float(np.mean(accs)), "taskres_accuracy_std": float(np.std(accs)),
        })
    return rows


def plot(rows, path, metric="absolute", logx=False):
    """Scatter of the rows; returns the Pearson r of difficulty and the plotted magnitude (linear values)."""
    key, ylabel = METRICS[metric]
    x = [r["transfer_difficulty"] for r in rows]
    y = [r[f"{key}_mean"] for r in rows]
    yerr = [r[f"{key}_std"] for r in rows]
    r = pearson(x, y)
    fig = new_figure(6.4, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    ax.errorbar(x, y, yerr=yerr, fmt="o", capsize=3, color="tab:blue", ecolor="0.6")
    # labels alternate above and below the points, in order of x, so that neighbours overlap less
    for rank, i in enumerate(np.argsort(x, kind="stable")):
        ax.annotate(rows[i]["display_name"], (x[i], y[i]), textcoords="offset points",
                    xytext=(4, 4 if rank % 2 == 0 else -11), fontsize=8)
    if len(rows) >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.geomspace(min(x), max(x), 50) if logx else np.linspace(min(x), max(x), 50)
        ax.plot(xs, slope * xs + intercept, "--", color="0.5", linewidth=1, label="least-squares line")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel("relative transfer difficulty  (1/K) / zero-shot accuracy" + ("  (log scale)" if logx else ""))
    ax.set_ylabel(ylabel)
    shots = rows[0]["shots"] if rows else "?"
    bases = sorted({row["base"] for row in rows})
    r_text = "n/a" if math.isnan(r) else f"{r:.3f}"
    ax.set_title(f"Residual magnitude vs transfer difficulty ({shots} shots, {'/'.join(bases)} base)\n"
                 f"Pearson r = {r_text}  (n = {len(rows)} datasets; bars: std over seeds)", fontsize=10)
    ax.grid(True, alpha=0.3)
    save_figure(fig, path)
    return r


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m analysis.difficulty",
        description="Relative transfer difficulty (chance / zero-shot accuracy) against the magnitude "
                    "of the learned task residual, one point per dataset (mean over seeds).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="magnitudes: absolute = mean over classes of ||alpha*x_k||_2; relative = mean over classes "
               "of ||alpha*x_k||_2 / ||t_k||_2 (t: base). Both are in the CSV.")
    p.add_argument("roots", nargs="+", metavar="RUN_ROOT", help="folders searched for residual-learning runs")
    p.add_argument("--zeroshot", nargs="+", default=[], metavar="ZS_ROOT",
                   help="folders searched for zero-shot runs (evaluation-only methods); zero-shot "
                        "runs under RUN_ROOT count too")
    p.add_argument("--out", required=True, help="figure file (.png, .pdf, .svg)")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--shots", type=int, default=16, help="shots of the residual-learning runs (default 16)")
    p.add_argument("--base", choices=("regular", "enhanced", "any"), default="regular",
                   help="base of the residual-learning runs (default regular)")
    p.add_argument("--alpha", type=float, help="only runs with this residual scale")
    p.add_argument("--backbone", help="only runs with this backbone (e.g. RN50)")
    p.add_argument("--metric", choices=sorted(METRICS), default="absolute",
                   help="magnitude on the y axis (default absolute)")
    p.add_argument("--logx", action="store_true",
                   help="logarithmic x axis (the correlation is still computed on the linear values)")
    p.add_argument("--zs-trainer", choices=zero_shot_trainers(),
                   help="zero-shot trainer to use (default: the last in name order where several ran)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        runs = find_runs(args.roots)
        zs_runs = find_runs(args.zeroshot) if args.zeroshot else []
        if not any(r.is_zero_shot for r in list(runs) + list(zs_runs)):
            raise AnalysisError("no zero-shot runs found; pass --zeroshot with their output folder "
                                "(made by scripts/taskres/zeroshot_all.sh)")
        rows = collect(runs, zs_runs, args.shots, args.base, args.alpha, args.backbone, args.zs_trainer)
        if not rows:
            raise AnalysisError(f"no dataset has both residual {args.base}-base checkpoints at {args.shots} "
                                f"shots and a zero-shot result")
    except (AnalysisError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    r = plot(rows, args.out, args.metric, args.logx)
    if args.csv:
        write_csv(rows, CSV_FIELDS, args.csv)
    for row in rows:
        print(f"{row['dataset']:<16} K={row['num_classes']:<5} zero-shot {row['zeroshot_accuracy']:6.2f}%  "
              f"difficulty {row['transfer_difficulty']:.4f}  |αx| {row['residual_norm_mean']:.4f}  "
              f"|αx|/|t| {row['relative_residual_norm_mean']:.4f}  (n={row['n_runs']})")
    other = "relative" if args.metric == "absolute" else "absolute"
    r_other = pearson([row["transfer_difficulty"] for row in rows],
                      [row[f"{METRICS[other][0]}_mean"] for row in rows])
    print(f"Pearson r ({args.metric} magnitude) = {r:.4f}; ({other}) = {r_other:.4f}"
          + ("" if not (math.isnan(r) or math.isnan(r_other)) else f" ({undefined_r(rows)})"))
    print(f"Wrote {args.out}" + (f" and {args.csv}" if args.csv else ""))
    return 0


def undefined_r(rows):
    """Why a Pearson r is nan: fewer than two datasets, or values that do not vary."""
    if len(rows) < 2:
        return (f"nan: a correlation across datasets needs at least two, and only {len(rows)} has both residual "
                f"checkpoints and a zero-shot result; add the runs of other datasets to the roots")
    return "nan: the difficulty or the magnitude is the same on every dataset, so nothing varies to correlate"


if __name__ == "__main__":
    sys.exit(main())
