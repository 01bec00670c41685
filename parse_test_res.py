"""Average test results over seeds (the reference script's command line and output).

    python parse_test_res.py DIRECTORY [--ci95] [--test-log] [--multi-exp] [--keyword accuracy]
                                       [--from-log] [--table] [--base2new]

DIRECTORY holds one folder per run (usually seed1, seed2, seed3). For every run the value of
`* <keyword>: X%` after the end-signal line of its log is printed, then the mean and the
population standard deviation (or the 95% confidence interval with --ci95).

Examples:
    python parse_test_res.py output/caltech101/TaskRes/adam_lr2e-3_B256_ep200_16shots/base_regular_alpha0.5
    python parse_test_res.py output/imagenetv2/TaskRes/generalization_rn50 --test-log
    python parse_test_res.py output/caltech101/TaskRes --multi-exp
    python parse_test_res.py output --table
    python parse_test_res.py output/base2new --base2new

Differences from the reference script, none of which changes the output of a complete run folder
whose only log is log.txt and which has no results.json:
  * a run folder without a log or without a result is reported (`skip ...`, on stderr) and left
    out, instead of stopping everything with an assertion;
  * when a rerun wrote `log.txt-YYYY-MM-DD-HH-MM-SS` next to an older log.txt, the newest log is
    read (the logger only uses a timestamped name when log.txt already exists);
  * a `results.json` next to the log supplies the full-precision value (the log prints one
    decimal); --from-log turns this off;
  * --table prints one mean +- std row per experiment for a whole tree of runs;
  * --base2new pairs every experiment under DIRECTORY/train_base with the same path under
    DIRECTORY/test_new (the base-to-new layout) and prints base, new and their harmonic mean, computed
    from the seed-averaged accuracies, plus the average over all pairs;
  * the exit status is 1 when nothing could be parsed, 2 when DIRECTORY is not a folder;
  * every run's selection tier (what its hyperparameters, epoch or checkpoint were chosen on:
    none, fewshot-val, full-val, test; "unknown" for runs without one in results.json) is read:
    --table prints it as a last column ("mixed: ..." when seeds differ, with a note on stderr),
    a folder whose seeds differ in tier gets that note too, and --selection keeps only the tiers
    named (e.g. --selection none,fewshot-val for the fair comparison).
"""
import argparse
import os
import re
import sys
from dataclasses import dataclass
from typing import List

import numpy as np

from analysis.logs import (LOG_NAME, RESULTS_JSON, TEST_END_SIGNAL, TRAIN_END_SIGNAL, RunResult,  # noqa: F401
                           RunSkipped, end_signal, find_log, parse_log, parse_run)
from analysis.runs import parse_selection

_SEED_DIR = re.compile(r"^seed\d+$")


@dataclass
class Summary:
    directory: str
    keyword: str
    runs: List[RunResult]
    skipped: List[str]  # "skip <dir>: <reason>" messages
    mean: float = float("nan")
    spread: float = float("nan")  # population std, or the 95% CI half-width

    @property
    def n(self):
        return len(self.runs)


def listdir_nohidden(path, sort=True):
    names = [n for n in os.listdir(path) if not n.startswith(".")]
    return sorted(names) if sort else names


def compute_ci95(values):
    return 1.96 * np.std(values) / np.sqrt(len(values))


def collect(directory, keyword="accuracy", test_log=False, ci95=False, from_log=False, tiers=None):
    """Parse every non-hidden subfolder of `directory` as one run; plain files are ignored.
    `tiers`: keep only the runs selected at these tiers."""
    runs, skipped = [], []
    for name in listdir_nohidden(directory):
        run_dir = os.path.join(directory, name)
        if not os.path.isdir(run_dir):
            continue
        try:
            found = parse_run(run_dir, keyword, test_log, from_log)
        except RunSkipped as e:
            skipped.append(f"skip {run_dir}: {e}")
            continue
        if tiers is None or found.selection in tiers:
            runs.append(found)
    summary = Summary(directory=directory, keyword=keyword, runs=runs, skipped=skipped)
    if runs:
        values = [r.value for r in runs]
        summary.mean = float(np.mean(values))
        summary.spread = float(compute_ci95(values) if ci95 else np.std(values))
    return summary


def selection_cell(summary):
    """The tier of an experiment's runs, or "mixed: a, b" when its seeds were selected differently."""
    found = sorted({r.selection for r in summary.runs})
    return found[0] if len(found) == 1 else "mixed: " + ", ".join(found)


def _report_notes(summary, err):
    for line in summary.skipped:
        print(line, file=err)
    for run in summary.runs:
        for note in run.notes:
            print(f"note: {note}", file=err)
    if summary.runs and selection_cell(summary).startswith("mixed"):
        print(f"note: {summary.directory}: its runs were selected at different tiers "
              f"({selection_cell(summary)[7:]}); their mean mixes them", file=err)


def parse_function(directory, keyword="accuracy", test_log=False, ci95=False, from_log=False,
                   out=None, err=None):
    """Print the per-run lines and the summary of one experiment folder; return the Summary."""
    out = out or sys.stdout
    err = err or sys.stderr
    print(f"Parsing files in {directory}", file=out)
    summary = collect(directory, keyword, test_log, ci95, from_log)
    for run in summary.runs:
        print(f"file: {run.source}. {keyword}: {run.value:.2f}%. ", file=out)
    out.flush()
    _report_notes(summary, err)
    if summary.runs:
        print("===", file=out)
        print(f"Summary of directory: {directory}", file=out)
        print(f"* {keyword}: {summary.mean:.2f}% +- {summary.spread:.2f}%", file=out)
        print("===", file=out)
    return summary


def _no_results_message(directory, keyword, test_log):
    msg = f"error: no results found in {directory}"
    if find_log(directory) is not None:
        msg += (f" ({directory} has its own log, so it looks like a single run: "
                f"pass the folder that contains the run folders)")
    elif not test_log:
        msg += (f' (looked for "* {keyword}:" after "{TRAIN_END_SIGNAL}"; '
                f"for evaluation-only runs add --test-log)")
    return msg


def _looks_like_run(path):
    return (_SEED_DIR.match(os.path.basename(path)) is not None or find_log(path) is not None
            or os.path.isfile(os.path.join(path, RESULTS_JSON)))


def find_experiments(root):
    """Folders under `root` (itself included) with at least one run folder: a folder that has a
    log or a results.json, or that is named seed<N> (so unfinished runs are reported too)."""
    found = []
    for current, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if any(_looks_like_run(os.path.join(current, d)) for d in dirnames):
            found.append(current)
            dirnames[:] = []  # the run folders themselves hold no experiments
    return found


def print_table(root, keyword="accuracy", test_log=False, ci95=False, from_log=False, out=None, err=None,
                tiers=None):
    """One row (mean, spread, number of runs, selection tier) per experiment under root; return the rows."""
    out = out or sys.stdout
    err = err or sys.stderr
    summaries = []
    for exp in find_experiments(root):
        summary = collect(exp, keyword, test_log, ci95, from_log, tiers)
        _report_notes(summary, err)
        if summary.runs:
            summaries.append(summary)
    if not summaries:
        return summaries
    names = [os.path.relpath(s.directory, root) for s in summaries]
    spread_name = "ci95" if ci95 else "std"
    width = max(len("experiment"), *(len(n) for n in names))
    vwidth = max(len(keyword), 6)
    print(f"{'experiment':<{width}}  {'n':>3}  {keyword:>{vwidth}}  {spread_name:>6}  selection", file=out)
    for name, s in zip(names, summaries):
        print(f"{name:<{width}}  {s.n:>3}  {s.mean:>{vwidth}.2f}  {s.spread:>6.2f}  {selection_cell(s)}", file=out)
    return summaries


def harmonic_mean(base, new):
    return 2 * base * new / (base + new) if base + new > 0 else 0.0


def print_base_to_new(root, keyword="accuracy", ci95=False, from_log=False, out=None, err=None):
    """Rows (name, base, new, hm) for each experiment present under both train_base/ and
    test_new/ (the new-class runs are evaluation-only: their logs are read after "=> result")."""
    out = out or sys.stdout
    err = err or sys.stderr
    base_root, new_root = os.path.join(root, "train_base"), os.path.join(root, "test_new")
    for folder in (base_root, new_root):
        if not os.path.isdir(folder):
            print(f"error: {folder} is not a folder (expected the base-to-new layout: "
                  f"{root}/train_base/... and {root}/test_new/...)", file=err)
            return None
    rows = []
    for exp in find_experiments(base_root):
        name = os.path.relpath(exp, base_root)
        other = os.path.join(new_root, name)
        if not os.path.isdir(other):
            print(f"skip {name}: no {other}", file=err)
            continue
        base = collect(exp, keyword, False, ci95, from_log)
        if not base.runs:  # a method evaluated without training (zero-shot CLIP) on the base classes
            base = collect(exp, keyword, True, ci95, from_log)
        new = collect(other, keyword, True, ci95, from_log)
        _report_notes(base, err)
        _report_notes(new, err)
        if base.runs and new.runs:
            rows.append((name, base.mean, new.mean, harmonic_mean(base.mean, new.mean)))
    if not rows:
        return rows
    width = max(len("experiment"), *(len(r[0]) for r in rows), len("average"))
    print(f"{'experiment':<{width}}  {'base':>6}  {'new':>6}  {'HM':>6}", file=out)
    for name, b, n, h in rows:
        print(f"{name:<{width}}  {b:>6.2f}  {n:>6.2f}  {h:>6.2f}", file=out)
    if len(rows) > 1:
        b, n = float(np.mean([r[1] for r in rows])), float(np.mean([r[2] for r in rows]))
        print(f"{'average':<{width}}  {b:>6.2f}  {n:>6.2f}  {harmonic_mean(b, n):>6.2f}", file=out)
    return rows


def build_parser():
    parser = argparse.ArgumentParser(
        description=(
            "Average the test results of the run folders (seed1, seed2, ...) inside DIRECTORY.\n\n"
            "For each run folder the newest log is read: log.txt, or the latest\n"
            "log.txt-YYYY-MM-DD-HH-MM-SS that a rerun wrote next to it. Only '* KEYWORD: X%' lines\n"
            "after the end-signal line count, and the last one wins. If a results.json next to the\n"
            "log agrees with that value, its full-precision value is used instead of the one-decimal\n"
            "value of the log (--from-log turns this off). Folders without a log or without a\n"
            "result are reported on stderr and left out.\n\n"
            "Exit status: 0 ok, 1 nothing could be parsed, 2 DIRECTORY is not a folder."),
        epilog=(
            "examples:\n"
            "  python parse_test_res.py output/<dataset>/<METHOD>/<cfg>_16shots/<variant>\n"
            "  python parse_test_res.py output/<dataset>/<METHOD>/<cfg>_16shots --multi-exp\n"
            "  python parse_test_res.py output/<ZEROSHOT_METHOD>/<cfg> --test-log\n"
            "  python parse_test_res.py output --table --ci95"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=str, help="folder that contains the run folders")
    parser.add_argument("--ci95", action="store_true",
                        help="report the 95%% confidence interval 1.96*std/sqrt(n) instead of the std")
    parser.add_argument("--test-log", action="store_true",
                        help='logs of evaluation-only runs: start matching after "=> result" '
                             'instead of "Finish training"')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--multi-exp", action="store_true",
                      help="each subfolder is an experiment of run folders; also print the mean "
                           "of the experiment means")
    mode.add_argument("--table", action="store_true",
                      help="find every experiment under DIRECTORY (a folder with run folders: folders "
                           "with a log or results.json, or named seed<N>) and print one row per "
                           "experiment: number of runs, mean, std (or ci95)")
    mode.add_argument("--base2new", action="store_true",
                      help="DIRECTORY holds train_base/ and test_new/ trees (the base-to-new layout): print base, "
                           "new and harmonic mean per experiment and on average")
    parser.add_argument("--keyword", default="accuracy", type=str,
                        help="metric to parse: accuracy (default), error, macro_f1, ece, classwise_ece, confidence")
    parser.add_argument("--selection", metavar="TIERS",
                        help="with --table: only runs selected at these tiers, comma-separated (none, fewshot-val, "
                             "full-val, test, unknown)")
    parser.add_argument("--from-log", action="store_true",
                        help="use the values printed in the logs even where a results.json exists")
    return parser


def main(argv=None, out=None, err=None):
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    err = err or sys.stderr
    opts = dict(keyword=args.keyword, test_log=args.test_log, ci95=args.ci95, from_log=args.from_log)
    root = args.directory
    if not os.path.isdir(root):
        print(f"error: {root} is not a folder", file=err)
        return 2

    if args.base2new:
        rows = print_base_to_new(root, args.keyword, args.ci95, args.from_log, out=out, err=err)
        if rows is None:
            return 2
        if not rows:
            out.flush()
            print(f"error: no experiment has results in both {root}/train_base and {root}/test_new", file=err)
            return 1
        return 0

    if args.table:
        try:
            tiers = parse_selection(args.selection) if args.selection else None
        except ValueError as e:
            print(f"error: {e}", file=err)
            return 2
        if not print_table(root, out=out, err=err, tiers=tiers, **opts):
            out.flush()
            print(f"error: no experiment with results found under {root}"
                  + ("" if args.test_log else " (for evaluation-only runs add --test-log)"), file=err)
            return 1
        return 0

    if args.multi_exp:
        means = []
        for name in listdir_nohidden(root):
            exp = os.path.join(root, name)
            if not os.path.isdir(exp):
                continue
            summary = parse_function(exp, out=out, err=err, **opts)
            if summary.runs:
                means.append(summary.mean)
            else:
                out.flush()
                print(f"skip experiment {exp}: no results", file=err)
        if not means:
            out.flush()
            print(_no_results_message(root, args.keyword, args.test_log), file=err)
            return 1
        print("Average performance", file=out)
        print(f"* {args.keyword}: {np.mean(means):.2f}%", file=out)
        return 0

    summary = parse_function(root, out=out, err=err, **opts)
    if not summary.runs:
        out.flush()
        print(_no_results_message(root, args.keyword, args.test_log), file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
