"""Comparison tables across methods, from the runs' results.json.

    python -m analysis.compare output [more roots] --out table.md [--csv table.csv] [--figure curves.png]

Few-shot: one table per dataset (plus the average over datasets when there are several):
a row per method, a column per shot count, `mean ± std` over seeds; zero-shot CLIP appears as a
row with the same value in every column. Base-to-new (runs with DATASET.SUBSAMPLE_CLASSES base
and new): base, new and their harmonic mean per method and dataset, computed from the
seed-averaged accuracies as the conditional-prompt paper reports them, plus the average over datasets.
Methods are told apart by what the runs recorded (trainer, the method's variant, backbone), never
by folder names; runs of one method with other settings by the config keys in which runs of the
same shot count differ, except that the runs following the method's recipe stay one row
(analysis/curves.py: variant_labels). A seed found twice in one cell counts once, from the folder
that sorts first, with a note; a folder left out (no final result, an unusable results.json) is
named on stderr with the reason. Every row names the selection tier its runs recorded
(engine.selection: none, fewshot-val, full-val, test; "unknown" for runs written before tiers
were recorded): runs of one method at different tiers are separate rows and are never averaged
together. `--selection none,fewshot-val` keeps only those tiers (the fair table); `--metric ece`
(or classwise_ece, nll, confidence, macro_f1) tabulates another recorded metric. A zero-shot row
names its prompt template (single, or an ensemble of N); so does every method row built on CLIP's
text classifier when the table mixes template kinds (template_labels).
"""
import argparse
import sys
from collections import defaultdict

import numpy as np

from engine.record import LEARNED

from .curves import (AVERAGE, AnalysisError, add_selection_args, average_table, curve_table, dataset_order,
                     plot, select_runs, subsample)
from .output import write_csv
from .runs import display_name, find_runs, parse_selection

CSV_FIELDS = ["table", "dataset", "method", "selection", "shots", "n", "mean", "std", "seeds"]


def _cell(mean, std, n):
    if n == 0:
        return "–"
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def template_name(kind):
    return {"single": "single template", LEARNED: "learned prompt"}.get(kind, kind)


def zero_shot_label(run):
    """A zero-shot row's label: the method and the prompt template its results.json recorded."""
    return f"{run.method()} ({template_name(run.template)})" if run.template else run.method()


def template_labels(runs, label=None):
    """`label(run)` (default: the method's label) naming the prompt template the run's text
    classifier was built from: always for zero-shot runs, for the others only when the table's
    runs use more than one fixed template kind (a single hand-written prompt next to an ensemble),
    so that a reader sees which zero-shot row each method builds on. A method whose kind differs
    by dataset keeps one label naming the exceptions, e.g. "<method> (single template; ImageNet:
    ensemble-8)", so that its average over datasets stays one row."""
    base = label or (lambda r: r.method())
    runs = [r for r in runs if not r.is_product]
    mixed = len({r.template for r in runs if r.template and r.template != LEARNED}) > 1
    kinds = defaultdict(lambda: defaultdict(set))  # label -> dataset -> template kinds
    for run in runs:
        if run.template:
            kinds[base(run)][run.dataset].add(run.template)

    def described(name, run):
        per = kinds[name]
        if any(len(k) > 1 for k in per.values()):  # one method, several templates on one dataset
            return template_name(run.template)
        by_kind = defaultdict(list)
        for dataset, (kind,) in per.items():
            by_kind[kind].append(dataset)
        main = min(by_kind, key=lambda k: (-len(by_kind[k]), k != "single", k))  # most datasets
        others = [f"{', '.join(display_name(d) for d in sorted(by_kind[k], key=dataset_order))}: {template_name(k)}"
                  for k in sorted(by_kind) if k != main]
        return "; ".join([template_name(main)] + others)

    def named(run):
        name = base(run)
        if run.template is None or not (mixed or run.is_zero_shot):
            return name
        return f"{name} ({described(name, run)})"
    return named


def zero_shot_rows(runs, label=None, metric="accuracy"):
    """One row per (dataset, zero-shot trainer and template, tier) over the full class set."""
    by = defaultdict(list)
    for run in runs:
        if run.is_zero_shot and run.dataset and subsample(run) == "all" and run.value(metric) is not None:
            by[(run.dataset, label(run) if label else zero_shot_label(run), run.selection)].append(run.value(metric))
    return [{"dataset": d, "method": m, "selection": t, "shots": 0, "n": len(v), "mean": float(np.mean(v)),
             "std": float(np.std(v)), "seeds": "", "values": dict(enumerate(v))} for (d, m, t), v in by.items()]


def few_shot_tables(runs, label=None, metric="accuracy"):
    """(rows, datasets): curve rows (per dataset and the average) and the datasets they cover;
    `label(run)` names a run's method (default: its table label; a study: the study's names)."""
    label = template_labels(runs, label)
    rows = curve_table(runs, label=label, metric=metric)
    datasets = sorted({r["dataset"] for r in rows}, key=dataset_order)
    if len(datasets) > 1:
        rows += average_table(rows, datasets, warn=False)
    # A producer's runs make another method's input (MethodFacts.produces), not a row.
    zs = zero_shot_rows([r for r in runs if not r.is_product], label, metric)
    if len(datasets) > 1:
        by_method = defaultdict(dict)
        for row in zs:
            by_method[(row["method"], row["selection"])][row["dataset"]] = row["mean"]
        for (method, tier), per in by_method.items():
            if all(d in per for d in datasets):
                zs.append({"dataset": AVERAGE, "method": method, "selection": tier, "shots": 0, "n": 1,
                           "mean": float(np.mean([per[d] for d in datasets])), "std": 0.0, "seeds": "", "values": {}})
    return rows + zs, datasets


def markdown_few_shot(rows, datasets):
    out = []
    for dataset in datasets + ([AVERAGE] if len(datasets) > 1 else []):
        mine = [r for r in rows if r["dataset"] == dataset]
        if not mine:
            continue
        shots = sorted({r["shots"] for r in mine if r["shots"] > 0})
        title = f"Average over {len(datasets)} datasets" if dataset == AVERAGE else display_name(dataset)
        out += [f"### {title}", "", "| Method | Selection | " + " | ".join(
            f"{k} shot{'s' if k > 1 else ''}" for k in shots) + " |", "|---|---|" + "---:|" * len(shots)]
        methods = sorted({(r["method"], r.get("selection", "unknown")) for r in mine}, key=lambda m: (not any(
            r["shots"] == 0 for r in mine if r["method"] == m[0]), m))
        for method, tier in methods:
            cells = []
            for k in shots:
                hit = [r for r in mine if r["method"] == method and r.get("selection", "unknown") == tier
                       and r["shots"] in (k, 0)]
                cells.append(_cell(hit[0]["mean"], hit[0]["std"], hit[0]["n"]) if hit else "–")
            shown = f"**{tier}** (oracle)" if tier == "test" else tier
            out.append(f"| {method} | {shown} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def metric_title(metric):
    return "NLL, nats" if metric == "nll" else f"{'accuracy' if metric == 'accuracy' else metric} %"


def harmonic_mean(a, b):
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def base_to_new_rows(runs, metric="accuracy"):
    """Per (dataset, method, selection tier, shots): base and new `metric` (mean over seeds) and
    their HM. The tier is the base run's (the new-class run evaluates its checkpoint)."""
    acc = defaultdict(lambda: defaultdict(dict))
    tiers = {}
    for run in runs:
        part = subsample(run)
        if part not in ("base", "new") or not run.dataset or run.value(metric) is None:
            continue
        seed = run.seed if run.seed is not None else run.path
        key = (run.dataset, run.method(), run.shots or 0)
        acc[key][part][seed] = run.value(metric)
        tiers.setdefault(key, set()).add(run.selection)
    rows = []
    for (dataset, method, shots), parts in acc.items():
        if "base" not in parts or "new" not in parts:
            continue
        found = tiers[(dataset, method, shots)]
        tier = next(iter(found)) if len(found) == 1 else "mixed: " + ", ".join(sorted(found))
        base, new = float(np.mean(list(parts["base"].values()))), float(np.mean(list(parts["new"].values())))
        rows.append({"dataset": dataset, "method": method, "selection": tier, "shots": shots, "base": base,
                     "new": new, "hm": harmonic_mean(base, new), "n_base": len(parts["base"]),
                     "n_new": len(parts["new"])})
    datasets = sorted({r["dataset"] for r in rows}, key=dataset_order)
    if len(datasets) > 1:
        by = defaultdict(dict)
        for r in rows:
            by[(r["method"], r["selection"], r["shots"])][r["dataset"]] = r
        for (method, tier, shots), per in by.items():
            if all(d in per for d in datasets):
                base = float(np.mean([per[d]["base"] for d in datasets]))
                new = float(np.mean([per[d]["new"] for d in datasets]))
                rows.append({"dataset": AVERAGE, "method": method, "selection": tier, "shots": shots, "base": base,
                             "new": new, "hm": harmonic_mean(base, new), "n_base": 0, "n_new": 0})
    return sorted(rows, key=lambda r: (dataset_order(r["dataset"]) if r["dataset"] != AVERAGE else (99, ""),
                                       r["method"]))


def markdown_base_to_new(rows):
    out = ["### Base-to-new generalization", "", "| Dataset | Method | Selection | Shots | Base | New | HM |",
           "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        name = "Average" if r["dataset"] == AVERAGE else display_name(r["dataset"])
        out.append(f"| {name} | {r['method']} | {r['selection']} | {r['shots']} | {r['base']:.2f} | {r['new']:.2f} "
                   f"| {r['hm']:.2f} |")
    return "\n".join(out) + "\n"


def csv_rows(rows, b2n):
    """Every cell of both tables as CSV_FIELDS rows."""
    table = [dict(r, table="few-shot") for r in rows]
    for r in b2n:
        for part in ("base", "new", "hm"):
            table.append({"table": f"base-to-new {part}", "dataset": r["dataset"], "method": r["method"],
                          "selection": r["selection"], "shots": r["shots"], "n": r.get(f"n_{part}", ""), "mean": r[part], "std": None,
                          "seeds": ""})
    return table


def build_parser():
    p = argparse.ArgumentParser(prog="python -m analysis.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", metavar="RUN_ROOT", help="folders searched for finished runs")
    p.add_argument("--out", help="markdown file (default: print only)")
    p.add_argument("--csv", help="CSV file with every cell (few-shot and base-to-new)")
    p.add_argument("--figure", help="few-shot curves of every method (.png, .pdf, .svg)")
    add_selection_args(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        runs = find_runs(args.roots)
        runs = select_runs(runs, parse_selection(args.selection) if args.selection else None)
        rows, datasets = few_shot_tables(runs, metric=args.metric)
    except (AnalysisError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    b2n = base_to_new_rows(runs, args.metric)
    if not rows and not b2n:
        print("error: no finished runs under " + ", ".join(args.roots), file=sys.stderr)
        return 1
    text = f"## Few-shot classification ({metric_title(args.metric)}, mean ± std over seeds)\n\n" + \
        markdown_few_shot(rows, datasets)
    if b2n:
        text += "\n" + markdown_base_to_new(b2n)
    print(text)
    if args.out:
        from engine.io import save_text
        save_text(text, args.out)
    if args.csv:
        write_csv(csv_rows(rows, b2n), CSV_FIELDS, args.csv)
    if args.figure:
        curves = [r for r in rows if r["shots"] > 0]
        if not curves:
            print("note: no few-shot runs, no figure", file=sys.stderr)
        else:
            zs = {r["dataset"]: (r["method"], r["mean"]) for r in rows if r["shots"] == 0}
            panels = [(f"Average over {len(datasets)} datasets" if d == AVERAGE else display_name(d),
                       [r for r in curves if r["dataset"] == d], zs.get(d))
                      for d in datasets + ([AVERAGE] if len(datasets) > 1 else [])
                      if any(r["dataset"] == d for r in curves)]
            plot(panels, args.figure, {r["method"] for r in curves}, args.metric)
    written = [p for p in (args.out, args.csv, args.figure) if p]
    if written:
        print("Wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
