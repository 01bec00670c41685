"""The comparison table of a study's finished runs, from their results.json (study.py table).

Few-shot and base-to-new tables are analysis/compare.py's (mean ± std over seeds, population
std as parse_test_res.py; base, new and HM = 2BN/(B+N) from the seed means), fed with exactly
the study's run folders, so runs of other studies in the same output tree stay out. The DG
and cross-dataset tables are made here, as the conditional-prompt paper reports them: a row per
study method, a column for the source and each target, and the targets' average. Every row
names its selection tier (a target evaluation inherits the source checkpoint's); seeds of one
method selected at different tiers are separate rows.
"""
import numpy as np

from engine.layout import finished

from . import compare
from .runs import backbone_suffix, display_name, read_run, split_suffix

CSV_FIELDS = compare.CSV_FIELDS


def _finished(runs):
    """[(plan Run, analysis Run)] of the finished, non-producing runs."""
    out = []
    for run in runs:
        if run.role == "produce" or not finished(run.out):
            continue
        found = read_run(run.out)
        if found is not None:
            out.append((run, found))
    return out


def _cell(values):
    return "–" if not values else compare._cell(float(np.mean(values)), float(np.std(values)), len(values))


TRANSFER_TITLES = {"dg": "Domain generalization", "cross-dataset": "Cross-dataset transfer"}


def transfer_table(study, finished, metric="accuracy"):
    """(markdown, csv rows): per (method, selection tier of its source runs, shots), the
    source's and every target's `metric`, and the targets' average (DG and cross-dataset)."""
    tier_of_source = {}
    for run, found in finished:
        if run.role == "source":
            tier_of_source[(run.method, run.variant, run.shots, run.seed)] = found.selection
    cells = {}
    for run, found in finished:
        if found.value(metric) is None:
            continue
        tier = tier_of_source.get((run.method, run.variant, run.shots, run.seed), found.selection)
        cells.setdefault((run.method, run.variant, tier, run.shots), {}).setdefault(run.dataset, []).append(
            found.value(metric))
    columns = study.datasets + study.targets
    source = "Source: " if study.protocol == "cross-dataset" else ""
    names = [f"{source}{display_name(d)}" for d in study.datasets] + [display_name(t) for t in study.targets]
    lines = [f"### {TRANSFER_TITLES[study.protocol]}", "", "| Method | Selection | Shots | " + " | ".join(names)
             + " | Targets avg |", "|---|---|---:|" + "---:|" * (len(columns) + 1)]
    rows = []
    for (method, variant, tier, shots), per in sorted(cells.items(), key=str):
        label = method + (f" ({variant})" if variant else "")
        means = [np.mean(per[t]) for t in study.targets if per.get(t)]
        avg = f"{np.mean(means):.2f}" if len(means) == len(study.targets) else "–"
        lines.append(f"| {label} | {tier} | {shots} | " + " | ".join(_cell(per.get(d, [])) for d in columns)
                     + f" | {avg} |")
        for d in columns:
            v = per.get(d, [])
            if v:
                rows.append({"table": study.protocol, "dataset": d, "method": label, "selection": tier,
                             "shots": shots, "n": len(v), "mean": float(np.mean(v)), "std": float(np.std(v)),
                             "seeds": ""})
        if len(means) == len(study.targets):
            rows.append({"table": study.protocol, "dataset": "targets average", "method": label, "selection": tier,
                         "shots": shots, "n": 1, "mean": float(np.mean(means)), "std": None, "seeds": ""})
    return "\n".join(lines) + "\n", rows


def study_table(study, runs, tiers=None, metric="accuracy"):
    """(markdown, csv rows, finished count, expected count); `tiers`: only runs selected at these
    (a target evaluation counts with its inherited tier)."""
    expected = [r for r in runs if r.role != "produce"]
    finished = _finished(runs)
    if tiers is not None:
        finished = [(run, found) for run, found in finished if found.selection in tiers]
    if study.protocol in TRANSFER_TITLES:
        text, rows = transfer_table(study, finished, metric)
        return text, rows, len(finished), len(expected)
    found = [f for _, f in finished]
    # The study's method names are the table labels (its `name:`, with the grid variant and a
    # backbone other than RN50), not the trainers' own labels.
    names = {f.path: run.method + (f" ({run.variant})" if run.variant else "") + backbone_suffix(f.backbone)
             + split_suffix(f) for run, f in finished}
    rows, datasets = compare.few_shot_tables(found, label=lambda r: names[r.path], metric=metric)
    b2n = compare.base_to_new_rows(found, metric)
    text = ""
    if rows:
        text += f"## Few-shot classification ({compare.metric_title(metric)}, mean ± std over seeds)\n\n" + \
            compare.markdown_few_shot(rows, datasets)
    if b2n:
        text += ("\n" if text else "") + compare.markdown_base_to_new(b2n)
    return text or "(no finished runs yet)\n", compare.csv_rows(rows, b2n), len(finished), len(expected)
