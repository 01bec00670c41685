"""Run a study: datasets x methods x shots x seeds x keys x backbones, on one GPU, several GPUs or
Slurm, then compare the results.

    python study.py plan   configs/studies/taskres_paper.yaml          # runs, groups, encoder work
    python study.py run    configs/studies/taskres_paper.yaml          # here, one run after the other
    python study.py run    FILE --backend gpus [--devices 0,1,2,3]     # one worker per GPU
    python study.py run    FILE --backend slurm                        # submitit job arrays
    python study.py status FILE [--failed]                             # done/running/failed/pending
    python study.py table  FILE [--csv table.csv]                      # mean +- std over seeds

The study file (docs/studies.md) names the datasets, methods (registered methods
with their recipes, or config files + overrides), shots, seeds, extra key grids, backbones and
the protocol (few-shot, base-to-new, dg). Each run is a train.py run in the folder the shell
scripts use, so `train_regular.sh` and a study see the same finished runs. Runs are skipped when
finished and resume when interrupted, so `run` can be repeated at any time; a failing run is
recorded in its folder and the study goes on.
"""
import argparse
import os
import sys

from engine.errors import UserError
from studies.spec import load_study, require_root

BACKENDS = ("local", "gpus", "slurm")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{plan,run,status,table}")

    def common(sp):
        sp.add_argument("file", help="study file (yaml), e.g. configs/studies/taskres_paper.yaml")
        sp.add_argument("--root", help="dataset root (default: the file's root:, else $DATA)")
        sp.add_argument("--output", help="output root (default: the file's output:, else output)")
        sp.add_argument("--datasets", nargs="+", metavar="D", help="only these datasets of the study")
        sp.add_argument("--methods", nargs="+", metavar="M", help="only these methods of the study")

    sp = sub.add_parser("plan", help="expand the study: runs, groups and the encoder work per group")
    common(sp)
    sp.add_argument("--runs", action="store_true", help="also list every run folder and its train.py arguments")
    sp.add_argument("--nominal", action="store_true",
                    help="count images with the published split sizes instead of reading the datasets")
    sp = sub.add_parser("run", help="run (or resume) the study")
    common(sp)
    sp.add_argument("--backend", choices=BACKENDS, default="local")
    sp.add_argument("--devices", help="gpus backend: comma-separated devices, e.g. 0,1 or cpu,cpu "
                                      "(default: every visible GPU)")
    sp.add_argument("--cluster", help="slurm backend: submitit cluster (slurm, or local for submitit's local "
                                      "executor; default: slurm, which needs sbatch on this machine)")
    sp.add_argument("--detach", action="store_true",
                    help="slurm backend: submit the groups that can start and exit (run again for later stages)")
    sp = sub.add_parser("status", help="done / running / failed / pending runs per group")
    common(sp)
    sp.add_argument("--failed", action="store_true", help="list every failed run with the end of its log")
    sp = sub.add_parser("table", help="comparison table over the finished runs (markdown and CSV)")
    common(sp)
    sp.add_argument("--csv", help="write the CSV here ('-': print it) instead of <output>/.study/<name>/table.csv")
    sp.add_argument("--selection", metavar="TIERS", help="only runs selected at these tiers, e.g. none,fewshot-val")
    sp.add_argument("--metric", default="accuracy", help="accuracy (default), macro_f1, ece, classwise_ece, confidence, nll")
    return p


def _select(study, args):
    if args.datasets:
        unknown = [d for d in args.datasets if d not in study.datasets]
        if unknown:
            raise UserError(f"--datasets: {', '.join(unknown)} not in the study ({', '.join(study.datasets)})")
        study.datasets = [d for d in study.datasets if d in args.datasets]
    if args.methods:
        names = [m.name for m in study.methods]
        unknown = [m for m in args.methods if m not in names]
        if unknown:
            raise UserError(f"--methods: {', '.join(unknown)} not in the study ({', '.join(names)})")
        study.methods = [m for m in study.methods if m.name in args.methods]
    return study


def _n(x):
    return "?" if x is None else f"{x:,}"


def cmd_plan(study, args):
    from studies.plan import plan_study

    runs, groups = plan_study(study, estimate=not args.nominal)
    stages = 1 + max((g.stage for g in groups), default=0)
    print(f"Study {study.name} ({study.protocol}): {len(runs)} runs in {len(groups)} groups, {stages} stage(s)")
    print(f"  output {study.output}; dataset root {study.root or '(not set)'}")
    counts = {}
    for r in runs:
        counts[r.role or "few-shot"] = counts.get(r.role or "few-shot", 0) + 1
    print("  " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    print()
    w = max([len("group")] + [len(g.id) for g in groups])
    header = f"{'group':<{w}} {'stage':>5} {'runs':>5} {'test+val':>10} {'train views':>12} {'to encode':>12}  sizes"
    print(header)
    print("-" * len(header))
    tot_eval = tot_train = 0
    for g in groups:
        e = g.estimate
        ev, tr = e.get("eval"), e.get("train")
        total = None if ev is None else ev + tr
        tot_eval += ev or 0
        tot_train += tr or 0
        print(f"{g.id:<{w}} {g.stage:>5} {len(g.runs):>5} {_n(ev):>10} {_n(tr):>12} {_n(total):>12}  "
              f"{e.get('source', '')}")
    print("-" * len(header))
    print(f"{'total':<{w}} {'':>5} {len(runs):>5} {_n(tot_eval):>10} {_n(tot_train):>12} "
          f"{_n(tot_eval + tot_train):>12}")
    print("\nImages to encode per group: test + val once, training images as FEATURES.NUM_VIEWS views each in "
          "FEATURES.MODE cached (the union of the few-shot subsets), or once per epoch per run online.")
    if args.runs:
        for g in groups:
            print(f"\n[{g.id}]")
            for r in g.runs:
                print(f"  {r.out}\n    train.py {' '.join(r.argv)}")
    return 0


def cmd_run(study, args):
    from studies import backends
    from studies.plan import plan_study
    from studies.state import run_states

    require_root(study)
    if args.backend == "slurm":  # before planning: a missing Slurm is known at once
        backends.require_slurm(args.cluster or study.slurm.get("cluster"))
    runs, groups = plan_study(study)
    todo = sum(not os.path.exists(r.done_path) for r in runs)
    print(f"[study] {study.name}: {len(runs)} runs in {len(groups)} groups, {len(runs) - todo} finished, "
          f"{todo} to run; backend {args.backend}", flush=True)
    if args.backend == "local":
        backends.run_local(study, groups)
    elif args.backend == "gpus":
        devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
        backends.run_gpus(study, groups, devices)
    else:
        backends.run_slurm(study, groups, cluster=args.cluster, detach=args.detach)
        if args.detach:
            return 0
    states = run_states(runs)
    print(f"[study] {study.name}: " + ", ".join(f"{states.get(k, 0)} {k}" for k in ("done", "running", "failed",
                                                                                    "pending")), flush=True)
    if states.get("failed"):
        print(f"[study] see the failures with: python study.py status {args.file} --failed", flush=True)
    return 1 if states.get("failed") or states.get("pending") else 0


def cmd_status(study, args):
    from studies.plan import plan_study
    from studies.state import format_status

    _, groups = plan_study(study)
    text, totals = format_status(study, groups, show_failed=args.failed)
    print(text)
    return 0


def cmd_table(study, args):
    from analysis.output import write_csv
    from engine.io import save_text
    from studies.plan import plan_study
    from analysis.study_table import CSV_FIELDS, study_table

    from analysis.runs import parse_selection

    runs, _ = plan_study(study)
    try:
        tiers = parse_selection(args.selection) if args.selection else None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text, rows, finished, expected = study_table(study, runs, tiers, args.metric)
    print(f"Study {study.name} ({study.protocol}): {finished} of {expected} runs finished\n")
    print(text)
    csv_path = args.csv or os.path.join(study.state_dir, "table.csv")
    if csv_path == "-":
        import csv
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return 0
    write_csv(rows, CSV_FIELDS, csv_path)
    md_path = os.path.splitext(csv_path)[0] + ".md"
    save_text(text, md_path)
    print(f"CSV: {csv_path}\nMarkdown: {md_path}")
    return 0


COMMANDS = {"plan": cmd_plan, "run": cmd_run, "status": cmd_status, "table": cmd_table}


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        study = _select(load_study(args.file, root=args.root, output=args.output), args)
        return COMMANDS[args.command](study, args)
    except UserError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\n[study] interrupted: rerun the same command to continue (finished runs are kept, the "
              "interrupted one resumes)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
