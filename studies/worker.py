"""The unit of work of every backend: the runs of one group, in this process.

    python -m studies.worker GROUP.json      # what a `gpus` worker process runs

`run_group(runs)` runs each run with `train.run` and one ModelCache, so the group loads its CLIP
once and (FEATURES.MODE cached) encodes its images once: after the first run of each method,
the store is filled for the group's later runs of that method in one pass (sweep.prefill_group).
For each run:

- finished (results.json, or the installed file of a producing run): skipped;
- a run it needs is not finished: recorded as blocked, skipped;
- another live process holds the run's lock (`.study.lock` in the run folder, or train.py's own
  `.run.lock` for a run started outside the study): skipped as busy;
- otherwise it runs; `train.py` resumes from the run folder's checkpoint (the rolling snapshot
  is written every epoch with TRAIN.RESUME_FREQ 1, the default), so a killed worker loses at
  most the epoch it was in;
- a run that raises is recorded in `study_status.json` in its folder (the error, its traceback
  and the last lines of its log, written atomically) and the group goes on.

The study lock (engine/run_lock.py) names its holder and is kept alive by a heartbeat while
the run lives; a stale one is taken over.
"""
import datetime
import json
import os
import shutil
import signal
import socket
import sys
import time
import traceback

from engine import layout
from engine.errors import UserError
from engine.io import atomic_write, save_json
from engine.run_lock import Heartbeat, RunLockedError, acquire, job_id, release

STATUS = "study_status.json"
TAIL_LINES = 20




def _now():
    return datetime.datetime.now().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# one run


def log_tail(out, n=TAIL_LINES):
    path = layout.find_log(out)
    if path is None:
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.rstrip("\n") for line in f.readlines()[-n:]]


def write_status(out, state, **fields):
    save_json({"state": state, "time": _now(), "host": socket.gethostname(), "pid": os.getpid(),
               "job": job_id(), **fields}, os.path.join(out, STATUS))


def install(src, dst):
    """Copy a produced file (the enhanced base) to where other runs read it, atomically."""
    if not os.path.isfile(src):
        raise UserError(f"the run finished but wrote no {src}")
    with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    print(f"Installed: {dst} (from {src})")


def run_one(run, models, heartbeat=None, after=None):
    """'skipped' | 'blocked' | 'busy' | 'done' | 'failed'. `after(trainer)` follows a run that ran."""
    import train

    if os.path.exists(run.done_path):
        return "skipped"
    needed = run.needs_done or [layout.results_path(n) for n in run.needs]
    missing = [n for n in needed if not os.path.exists(n)]
    if missing:
        os.makedirs(run.out, exist_ok=True)
        write_status(run.out, "blocked", error=f"needs {missing[0]}, which has not finished"
                     + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        return "blocked"
    lock = acquire(run.out)
    if lock is None:
        return "busy"
    if heartbeat is not None:
        heartbeat.path = lock
    start = time.time()
    try:
        if not layout.finished(run.out):
            try:
                trainer = train.run(train.parse_args(run.argv), models=models)
                if after is not None:
                    after(trainer)
            except RunLockedError as e:  # a process outside the study (a shell script) runs it
                print(f"{run.out}: running elsewhere, skipped ({e})")
                return "busy"
        if run.install:
            install(*run.install)
        write_status(run.out, "done", seconds=round(time.time() - start, 1))
        return "done"
    except Exception as e:  # noqa: BLE001 - one broken run must not stop the study
        error = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        tb = traceback.format_exc()
        print(f"Error in {run.out}: {error}", file=sys.stderr)
        if not isinstance(e, UserError):
            print(tb, file=sys.stderr)
        write_status(run.out, "failed", error=error.strip().splitlines()[-1] if error.strip() else type(e).__name__,
                     message=error, traceback=tb.splitlines()[-TAIL_LINES:], log_tail=log_tail(run.out),
                     seconds=round(time.time() - start, 1))
        return "failed"
    finally:
        if heartbeat is not None:
            heartbeat.path = None
        release(lock)


def run_group(runs, models=None, on_run=None):
    """Run a group's runs in order in this process; {state: count}. `on_run(run, state, s)` is
    called after each run (progress displays)."""
    from engine.models import ModelCache

    models = models if models is not None else ModelCache()
    heartbeat = Heartbeat()
    counts, filled = {}, set()
    try:
        for i, run in enumerate(runs):
            start = time.time()
            if on_run is not None:
                on_run(run, "start", 0.0)
            state = run_one(run, models, heartbeat, after=lambda trainer: _prefill(run, trainer, runs[i + 1:], filled))
            counts[state] = counts.get(state, 0) + 1
            if on_run is not None:
                on_run(run, state, time.time() - start)
    finally:
        heartbeat.stop()
    return counts


def _prefill(run, trainer, later, filled):
    """After the first run of each method in the group: the store filled for the group's later
    runs of the same method and store namespaces in one pass (sweep.prefill_group)."""
    import sweep

    if run.trainer in filled:
        return
    filled.add(run.trainer)
    try:
        sweep.prefill_group(run.argv, trainer, [r.argv for r in later
                                                if r.trainer == run.trainer and not layout.finished(r.out)])
    except Exception:  # noqa: BLE001 - the runs then fill the store themselves
        traceback.print_exc()
        print("The store pre-fill failed; each run encodes what it misses")


def main(argv=None):
    from .plan import load_group

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m studies.worker GROUP.json", file=sys.stderr)
        return 2
    gid, runs = load_group(argv[0])
    # SIGTERM (the gpus backend stopping, a scheduler's kill) unwinds like Ctrl-C: the run's log
    # is flushed and its locks released; train.py resumes it next time.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    print(f"[worker {socket.gethostname()}:{os.getpid()}] group {gid}: {len(runs)} runs "
          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<all>')})", flush=True)
    counts = run_group(runs)
    print(f"[worker] group {gid} finished: {json.dumps(counts)}", flush=True)
    return 1 if counts.get("failed") or counts.get("blocked") else 0


if __name__ == "__main__":
    sys.exit(main())
