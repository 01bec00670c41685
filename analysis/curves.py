"""Few-shot curves: test accuracy against shots per class (log2 axis), one line per method,
mean ± std over seeds (population std, as parse_test_res.py), drawn as error bars.

    python -m analysis.curves output --dataset all --out curves.png [--csv curves.csv]
    python -m analysis.curves output --dataset caltech101 --out caltech101.png
    python -m analysis.curves output --dataset average --out average.png

--dataset all: one panel per dataset plus an "Average" panel; average: that panel only; a
dataset name: its panel only. Methods are told apart by their table labels (the trainer, or the
label its method gives a variant such as an enhanced base, with the backbone when it is not
RN50); --by-alpha splits them by residual scale as well (the paper's recipe uses α=1.0 for Flowers102 and 0.5
elsewhere, so that split is off by default). Zero-shot runs found under the roots are drawn as a
dashed horizontal line.

The average over datasets of a method at K shots is drawn only when the method has K-shot
results on every dataset of the figure: it is the mean of the per-dataset means, and its error
bar is the std over seeds of the per-seed averages, over the seeds that every dataset has.

Every row carries the selection tier its runs recorded (engine.selection: none, fewshot-val,
full-val, test, or unknown for runs written before tiers were recorded): runs of one method at
different tiers are separate rows, never averaged together, and the average over datasets is
drawn only where a method has one tier on every dataset. Rows selected on test are oracles:
drawn dotted, "(oracle)" in the legend. --selection keeps only the tiers named;
--metric draws another recorded metric (ece, classwise_ece, nll, confidence, macro_f1).
"""
import argparse
import ast
import math
import os
import sys
from collections import defaultdict

import numpy as np

from engine.config import load_yaml
from engine.errors import ConfigError
from engine.recipes import REPO, RecipeError, recipe
from engine.record import RESULT_NEUTRAL_KEYS, flatten

from .output import new_figure, save_figure, write_csv
from engine.selection import UNKNOWN

from .runs import DATASET_NAMES, display_name, find_runs, parse_selection, zero_shot_accuracies

AVERAGE = "average"
CSV_FIELDS = ["dataset", "method", "selection", "shots", "n", "mean", "std", "seeds"]


class AnalysisError(Exception):
    """A problem with the inputs, reported to the user in one message."""


# Recorded config keys that never tell two methods apart: the result-neutral ones and the grid's.
_GRID_KEYS = RESULT_NEUTRAL_KEYS | {"SEED", "DATASET.NUM_SHOTS"}
# Keys a label names in its own way (the backbone suffix), never as a config difference.
_LABELLED_KEYS = {"MODEL.BACKBONE.NAME"}


def subsample(run):
    """The class subset a run was trained or evaluated on: all, base or new."""
    extras = run.results.get("extras") if isinstance(run.results.get("extras"), dict) else {}
    value = extras.get("subsample_classes")
    if value is None:
        value = ((run.results.get("config") or {}).get("DATASET") or {}).get("SUBSAMPLE_CLASSES", "all")
    return value or "all"


def few_shot_runs(runs):
    """The runs a few-shot curve or table is made of, one rule for analysis.compare and
    analysis.curves: few-shot training runs on all classes; not zero-shot, not an evaluation of a
    checkpoint trained elsewhere (DG, base-to-new), not a producer's run (MethodFacts.produces:
    another method's input, not a result)."""
    return [r for r in runs if r.shots is not None and r.dataset and not r.is_zero_shot and not r.eval_only
            and not r.is_product and subsample(r) == "all"]


def _same(a, b):
    """Config values equal as yacs reads them: "(224, 224)" in a yaml is the recorded [224, 224]."""
    def norm(v):
        if isinstance(v, str):
            try:
                v = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                return v
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        return v
    return norm(a) == norm(b)


def follows_recipe(run, config=None):
    """True when a run is its method's recipe (engine/recipes.py) for its dataset and shot count:
    the recipe's config file, none of that file's result-affecting values changed, the recipe's
    overrides in place. A recipe picks other settings per shot count (e.g. 100 epochs for 1-4
    shots, 200 for 8 and 16), so its runs are one method, not one per setting."""
    extras = run.results.get("extras") if isinstance(run.results.get("extras"), dict) else {}
    used = extras.get("config_file")
    if not isinstance(used, str) or not run.trainer or not run.dataset or not run.shots:
        return False
    try:
        r = recipe(run.trainer, run.dataset, run.shots)
        wanted = flatten(load_yaml(r.config if os.path.isabs(r.config) else os.path.join(REPO, r.config)))
    except (RecipeError, ConfigError, OSError, ValueError, KeyError):
        return False  # no recipe for this method or dataset
    if os.path.basename(used) != os.path.basename(r.config):
        return False
    config = config if config is not None else flatten(run.results.get("config"))
    wanted.update(r.opts)
    return all(_same(config[k], v) for k, v in wanted.items()
               if k in config and k not in _GRID_KEYS and k not in _LABELLED_KEYS)


def _settings(run):
    """The run's recorded config, flat; a run without a record (reference code, read from its
    log and folders) has its variant facts instead."""
    config = flatten(run.results.get("config"))
    if not config:
        config = {k: v for k, v in (("base", run.base), ("α", run.alpha)) if v is not None}
    return config


def variant_labels(runs, label):
    """{run path: label} where runs that would share a label and a seed (the same method run twice
    with other settings, e.g. the demo's 100 epochs at 16 shots next to the recipe's 200) are told
    apart by the recorded config keys in which runs of the same shot count differ. A run that is
    its method's recipe keeps the plain label (the settings a recipe changes with the shot count
    name no variant); the others get `[KEY=value, ...]`."""
    by_label = defaultdict(list)
    for run in runs:
        by_label[(run.dataset, label(run))].append(run)
    out = {}
    for (_, name), group in by_label.items():
        seen = defaultdict(int)
        for run in group:
            seen[(run.shots, run.seed)] += 1
        configs = {run.path: _settings(run) for run in group}
        keys, recipe_runs = set(), set()
        if any(n > 1 for n in seen.values()):
            by_shots = defaultdict(list)
            for run in group:
                by_shots[run.shots].append(configs[run.path])
            # A key some records lack is not a difference: older records hold every method's
            # keys, newer ones only their method's, and a key added later is at its default.
            for same_shots in by_shots.values():
                all_keys = set().union(*same_shots) - _GRID_KEYS - _LABELLED_KEYS
                keys |= {k for k in all_keys if len({repr(c[k]) for c in same_shots if k in c}) > 1}
            recipe_runs = {run.path for run in group if keys and follows_recipe(run, configs[run.path])}
        for run in group:
            extra = "" if run.path in recipe_runs else \
                ", ".join(f"{k}={configs[run.path][k]}" for k in sorted(keys) if k in configs[run.path])
            out[run.path] = f"{name} [{extra}]" if extra else name
    return out


def select_runs(runs, tiers):
    """The runs whose selection tier is in `tiers` (None: all)."""
    return [r for r in runs if tiers is None or r.selection in tiers]


def curve_table(runs, with_alpha=False, methods=None, label=None, metric="accuracy"):
    """One row per (dataset, method, selection tier, shots) over few_shot_runs(runs): n, mean, std
    over seeds of `metric`; `values` maps seed -> value; runs that did not record `metric` are left
    out. `label(run)` names the method (default: its table label). A seed found twice in a row
    (the same setting run twice, e.g. into two folders) counts once, from the run whose folder
    sorts first; a note names the other."""
    groups = defaultdict(dict)
    runs = sorted((r for r in few_shot_runs(runs) if r.value(metric) is not None), key=lambda r: r.path)
    labels = variant_labels(runs, label or (lambda r: r.method(with_alpha)))
    for run in runs:
        method = labels[run.path]
        if methods and method not in methods:
            continue
        key = (run.dataset, method, run.selection, run.shots)
        seed = run.seed if run.seed is not None else run.path
        if seed in groups[key]:
            kept, kept_path = groups[key][seed]
            value, unit = run.value(metric), "" if metric == "nll" else "%"
            same = f"the same {metric}" if kept == value else f"{kept:.2f}{unit} there, {value:.2f}{unit} here"
            print(f"note: {run.path} left out: seed {seed} of {run.dataset} / {method} / {run.shots} shots "
                  f"is already counted from {kept_path} ({same}; one run per seed)", file=sys.stderr)
            continue
        groups[key][seed] = (run.value(metric), run.path)
    rows = []
    for (dataset, method, tier, shots), by_seed in groups.items():
        values = {seed: acc for seed, (acc, _) in by_seed.items()}
        accs = list(values.values())
        rows.append({"dataset": dataset, "method": method, "selection": tier, "shots": shots, "n": len(accs),
                     "mean": float(np.mean(accs)), "std": float(np.std(accs)),
                     "seeds": " ".join(str(s) for s in sorted(values, key=str)), "values": values})
    return sorted(rows, key=lambda r: (dataset_order(r["dataset"]), r["method"], r["selection"], r["shots"]))


def dataset_order(stem):
    names = list(DATASET_NAMES)
    return (names.index(stem), stem) if stem in names else (len(names), stem)


def average_table(rows, datasets, warn=True):
    """Rows with dataset "average" for each (method, selection tier, shots) that covers every
    dataset in `datasets`: a method whose datasets were selected at different tiers gets no
    average (said on stderr even without `warn`: tiers are never averaged together)."""
    by = defaultdict(dict)
    tiers = defaultdict(dict)
    for row in rows:
        by[(row["method"], row.get("selection", UNKNOWN), row["shots"])][row["dataset"]] = row
        tiers[(row["method"], row["shots"])].setdefault(row.get("selection", UNKNOWN), []).append(row["dataset"])
    out = []
    for (method, tier, shots), per_dataset in sorted(by.items()):
        missing = [d for d in datasets if d not in per_dataset]
        if missing:
            mixed = tiers[(method, shots)]
            if len(mixed) > 1 and all(any(d in v for v in mixed.values()) for d in datasets):
                if tier == min(mixed):  # once per method and shots
                    print(f"note: no average for {method} at {shots} shots: its datasets were selected at "
                          f"different tiers (" + "; ".join(f"{t}: {', '.join(sorted(ds))}"
                                                           for t, ds in sorted(mixed.items())) + ")",
                          file=sys.stderr)
            elif warn:
                print(f"note: no average for {method} at {shots} shots: missing {', '.join(missing)}",
                      file=sys.stderr)
            continue
        parts = [per_dataset[d] for d in datasets]
        common = set.intersection(*(set(p["values"]) for p in parts))
        per_seed = {s: float(np.mean([p["values"][s] for p in parts])) for s in common}
        std = float(np.std(list(per_seed.values()))) if per_seed else float("nan")
        out.append({"dataset": AVERAGE, "method": method, "selection": tier, "shots": shots, "n": len(per_seed),
                    "mean": float(np.mean([p["mean"] for p in parts])), "std": std,
                    "seeds": " ".join(str(s) for s in sorted(per_seed, key=str)), "values": per_seed})
    return out


def resolve_dataset(name, available):
    """A dataset named by its config stem, DATASET.NAME or figure name (any case)."""
    wanted = name.lower()
    for stem in available:
        if wanted in (stem.lower(), DATASET_NAMES.get(stem, stem).lower(), display_name(stem).lower()):
            return stem
    raise AnalysisError(f"no few-shot runs of dataset '{name}'; found: {', '.join(available) or 'none'}")


def legend_label(method, tier):
    """A curve's legend entry: the method, its tier when not "none", "(oracle)" when chosen on test."""
    if tier == "test":
        return f"{method} (oracle: selected on test)"
    return method if tier in ("none", None) else f"{method} [{tier}]"


def _panel(ax, title, rows, colors, zero_shot=None, metric="accuracy"):
    for method, tier in sorted({(r["method"], r.get("selection")) for r in rows}, key=str):
        pts = sorted((r["shots"], r["mean"], r["std"]) for r in rows
                     if r["method"] == method and r.get("selection") == tier)
        xs, ys, es = zip(*pts)
        es = [0.0 if math.isnan(e) else e for e in es]
        oracle = tier == "test"
        ax.errorbar(xs, ys, yerr=es, marker="x" if oracle else "o", markersize=4, capsize=3, linewidth=1.5,
                    linestyle=":" if oracle else "-", color=colors[method], label=legend_label(method, tier))
    if zero_shot is not None:
        trainer, acc = zero_shot
        ax.axhline(acc, linestyle="--", linewidth=1, color="0.35", label=f"Zero-shot CLIP ({trainer})")
    shots = sorted({r["shots"] for r in rows})
    lo, hi = min(shots + [1]), max(shots + [16])
    ticks = [2 ** i for i in range(int(math.floor(math.log2(lo))), int(math.ceil(math.log2(hi))) + 1)]
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlim(ticks[0] / 1.25, ticks[-1] * 1.25)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("shots per class")
    ax.set_ylabel(f"{metric} (nats)" if metric == "nll" else f"{metric} (%)")
    ax.grid(True, alpha=0.3)


def plot(panels, path, methods, metric="accuracy"):
    """panels: [(title, rows, zero_shot or None)]; one color per method across panels."""
    cmap = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink",
            "tab:olive", "tab:cyan", "tab:gray"]
    colors = {m: cmap[i % len(cmap)] for i, m in enumerate(sorted(methods))}
    n = len(panels)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig = new_figure(4.0 * ncols, 3.4 * nrows + (0.6 if n > 1 else 0))
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    for ax, (title, rows, zs) in zip(axes, panels):
        _panel(ax, title, rows, colors, zs, metric)
    if n == 1:
        axes[0].legend(fontsize=8, loc="lower right")
    else:
        handles, labels = {}, []
        for ax in axes:
            for h, label in zip(*ax.get_legend_handles_labels()):
                if label not in handles:
                    handles[label] = h
                    labels.append(label)
        fig.legend([handles[label] for label in labels], labels, loc="lower center",
                   ncol=min(4, len(labels)), fontsize=9, frameon=False)
        fig.tight_layout(rect=(0, 0.6 / (3.4 * nrows + 0.6) + 0.02, 1, 1))
    save_figure(fig, path)


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m analysis.curves",
        description="Accuracy vs shots per class, one line per method, mean ± std over seeds.")
    p.add_argument("roots", nargs="+", metavar="RUN_ROOT", help="folders searched for finished runs")
    p.add_argument("--dataset", default="all",
                   help="a dataset (caltech101, Caltech101 or Flowers102 style), 'all' (one panel each plus "
                        "the average) or 'average' (default all)")
    p.add_argument("--out", required=True, help="figure file (.png, .pdf, .svg)")
    p.add_argument("--csv", help="also write the plotted points to this CSV file")
    p.add_argument("--by-alpha", action="store_true", help="one line per residual scale as well")
    p.add_argument("--method", action="append", metavar="LABEL",
                   help="only this method label (repeatable), as the figure's legend shows it")
    add_selection_args(p)
    return p


def add_selection_args(p):
    p.add_argument("--selection", metavar="TIERS",
                   help="only runs selected at these tiers, comma-separated (none, fewshot-val, full-val, test, "
                        "unknown); e.g. none,fewshot-val for the fair comparison")
    p.add_argument("--metric", default="accuracy",
                   help="the recorded metric shown: accuracy (default), macro_f1, ece, classwise_ece, confidence, nll")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        runs = select_runs(find_runs(args.roots), parse_selection(args.selection) if args.selection else None)
        rows = curve_table(runs, args.by_alpha, args.method, metric=args.metric)
        if not rows:
            raise AnalysisError("no few-shot runs found under " + ", ".join(args.roots))
        datasets = sorted({r["dataset"] for r in rows}, key=dataset_order)
        zero_shot = zero_shot_accuracies(runs) if args.metric == "accuracy" else {}
        panels, table = [], []
        if args.dataset.lower() not in ("all", AVERAGE):
            stem = resolve_dataset(args.dataset, datasets)
            mine = [r for r in rows if r["dataset"] == stem]
            panels.append((display_name(stem), mine, zero_shot.get(stem)))
            table = mine
        else:
            if args.dataset.lower() == "all":
                for stem in datasets:
                    mine = [r for r in rows if r["dataset"] == stem]
                    panels.append((display_name(stem), mine, zero_shot.get(stem)))
                    table += mine
            if len(datasets) > 1 or args.dataset.lower() == AVERAGE:
                avg = average_table(rows, datasets)
                if avg:
                    zs = None
                    if all(d in zero_shot for d in datasets):
                        zs = (zero_shot[datasets[0]][0], float(np.mean([zero_shot[d][1] for d in datasets])))
                    panels.append((f"Average over {len(datasets)} datasets", avg, zs))
                    table += avg
                elif args.dataset.lower() == AVERAGE:
                    raise AnalysisError("no method has results on every dataset at any shot count")
    except (AnalysisError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    plot(panels, args.out, {r["method"] for r in table}, args.metric)
    if args.csv:
        write_csv(table, CSV_FIELDS, args.csv)
    for row in table:
        print(f"{row['dataset']:<16} {row['method']:<28} {row['selection']:<12} {row['shots']:>3} shots  "
              f"{row['mean']:6.2f} +- {row['std']:5.2f}  (n={row['n']})")
    print(f"Wrote {args.out}" + (f" and {args.csv}" if args.csv else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
