"""Where each run of a study stands, read from its folder (no central database to get stale).

    done     results.json (or, for a run that produces a file, the installed file)
    running  a live lock (.study.lock: its process is alive, or it was touched recently)
    failed   study_status.json says failed or blocked, and nobody is running it now
    pending  anything else; `partial` when the folder already holds a log (it will resume)
"""
import os

from engine import layout

from engine.run_lock import STUDY_LOCK as LOCK
from engine.run_lock import lock_alive, read_json

from .worker import STATUS

STATES = ("done", "running", "failed", "pending")


def run_state(run):
    """(state, detail dict)."""
    if os.path.exists(run.done_path):
        return "done", {}
    lock = os.path.join(run.out, LOCK)
    if os.path.exists(lock):
        holder = read_json(lock)
        if lock_alive(lock, holder):
            return "running", holder or {}
    status = read_json(os.path.join(run.out, STATUS))
    if status and status.get("state") in ("failed", "blocked"):
        return "failed", status
    partial = layout.find_log(run.out) is not None
    return "pending", {"partial": partial}


def run_states(runs):
    counts = {}
    for run in runs:
        state, _ = run_state(run)
        counts[state] = counts.get(state, 0) + 1
    return counts


def group_status(groups):
    """[(group, {state: count}, first failure (run, detail) or None, partial count)]."""
    rows = []
    for g in groups:
        counts, failure, partial = dict.fromkeys(STATES, 0), None, 0
        for run in g.runs:
            state, detail = run_state(run)
            counts[state] += 1
            if state == "failed" and failure is None:
                failure = (run, detail)
            if state == "pending" and detail.get("partial"):
                partial += 1
        rows.append((g, counts, failure, partial))
    return rows


def format_status(study, groups, show_failed=False):
    rows = group_status(groups)
    totals = dict.fromkeys(STATES, 0)
    lines = [f"Study {study.name} ({study.protocol}): {sum(len(g.runs) for g in groups)} runs in "
             f"{len(groups)} groups; output {study.output}", ""]
    w = max([len("group")] + [len(g.id) for g in groups])
    header = f"{'group':<{w}} {'stage':>5} {'runs':>5} {'done':>5} {'running':>7} {'failed':>6} {'pending':>7}"
    lines += [header, "-" * len(header)]
    failures = []
    for g, counts, failure, partial in rows:
        for k in STATES:
            totals[k] += counts[k]
        pending = f"{counts['pending']}" + (f" ({partial} partial)" if partial else "")
        lines.append(f"{g.id:<{w}} {g.stage:>5} {len(g.runs):>5} {counts['done']:>5} {counts['running']:>7} "
                     f"{counts['failed']:>6} {pending:>7}")
        if failure is not None:
            run, detail = failure
            lines.append(f"    failed: {os.path.relpath(run.out)}: {detail.get('error', '?')}")
        if show_failed:
            failures += [(r, d) for r in g.runs for s, d in [run_state(r)] if s == "failed"]
    lines.append("-" * len(header))
    lines.append(f"{'total':<{w}} {'':>5} {sum(len(g.runs) for g in groups):>5} {totals['done']:>5} "
                 f"{totals['running']:>7} {totals['failed']:>6} {totals['pending']:>7}")
    if show_failed and failures:
        lines += ["", "Failed runs:"]
        for run, detail in failures:
            lines.append(f"  {run.out}")
            lines.append(f"    {detail.get('error', '?')}")
            for line in detail.get("log_tail", [])[-5:]:
                lines.append(f"    | {line}")
    return "\n".join(lines), totals
