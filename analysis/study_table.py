"""The comparison table of a study's finished runs, from their results.json (study.py table).

Few-shot and base-to-new tables are analysis/compare.py's (mean ± std over seeds, population
std as parse_test_res.py; base, new and HM = 2BN/(B+N) from the seed means), fed with exactly
the study's run folders, so runs of other studies in the same output tree stay out. The DG
table is made here: a row per study method, a column for the source and each target, and the
targets' average.
"""
import numpy as np

from engine.layout import finished

from . import compare
from .runs import backbone_suffix, read_run

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


def dg_table(study, finished):
    """(markdown, csv rows): per (method, shots), the source's and every target's accuracy."""
    cells = {}
    for run, found in finished:
        cells.setdefault((run.method, run.variant, run.shots), {}).setdefault(run.dataset, []).append(found.accuracy)
    columns = study.datasets + study.targets
    lines = ["### Domain generalization", "", "| Method | Shots | " + " | ".join(columns) + " | Targets avg |",
             "|---|---:|" + "---:|" * (len(columns) + 1)]
    rows = []
    for (method, variant, shots), per in cells.items():
        label = method + (f" ({variant})" if variant else "")
        means = [np.mean(per[t]) for t in study.targets if per.get(t)]
        avg = f"{np.mean(means):.2f}" if len(means) == len(study.targets) else "–"
        lines.append(f"| {label} | {shots} | " + " | ".join(_cell(per.get(d, [])) for d in columns) + f" | {avg} |")
        for d in columns:
            v = per.get(d, [])
            if v:
                rows.append({"table": "dg", "dataset": d, "method": label, "shots": shots, "n": len(v),
                             "mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": ""})
    return "\n".join(lines) + "\n", rows


def study_table(study, runs):
    """(markdown, csv rows, finished count, expected count)."""
    expected = [r for r in runs if r.role != "produce"]
    finished = _finished(runs)
    if study.protocol == "dg":
        text, rows = dg_table(study, finished)
        return text, rows, len(finished), len(expected)
    found = [f for _, f in finished]
    # The study's method names are the table labels (its `name:`, with the grid variant and a
    # backbone other than RN50), not the trainers' own labels.
    names = {f.path: run.method + (f" ({run.variant})" if run.variant else "") + backbone_suffix(f.backbone)
             for run, f in finished}
    rows, datasets = compare.few_shot_tables(found, label=lambda r: names[r.path])
    b2n = compare.base_to_new_rows(found)
    text = ""
    if rows:
        text += "## Few-shot classification (accuracy %, mean ± std over seeds)\n\n" + \
            compare.markdown_few_shot(rows, datasets)
    if b2n:
        text += ("\n" if text else "") + compare.markdown_base_to_new(b2n)
    return text or "(no finished runs yet)\n", compare.csv_rows(rows, b2n), len(finished), len(expected)
