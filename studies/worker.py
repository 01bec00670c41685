"""The unit of work of every backend: the runs of one group, in this process.

    python -m studies.worker GROUP.json      # what a `gpus` worker process runs

`run_group(runs)` runs each run with `train.run` and one ModelCache, so the group loads its CLIP
once and (FEATURES.MODE cached) encodes its images once. For each run:

- finished (results.json, or the installed file of a producing run): skipped;
- a run it needs is not finished: recorded as blocked, skipped;
- another live process holds the run's lock (`.study.lock` in the run folder, or train.py's own
  `.run.lock` for a run started outside the study): skipped as busy;
- otherwise it runs; `train.py` resumes from the run folder's checkpoint (the rolling snapshot
  is written every epoch with TRAIN.RESUME_FREQ 1, the default), so a killed worker loses at
  most the epoch it was in;
- a run that raises is recorded in `study_status.json` in its folder (the error, its traceback
  and the last lines of its log, written atomically) and the group goes on.

The lock names its holder (host, pid, job id) and is touched every 30 s while the run is
alive. A lock is stale when its process is gone (same host), when it belongs to an earlier
incarnation of the same job (a requeued Slurm job), or when it has not been touched for 3
minutes (another host); a stale lock is taken over.
"""
import datetime
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
import uuid

from engine import layout
from engine.errors import UserError
from engine.io import atomic_write, save_json
from engine.run_guard import RunLockedError

LOCK = ".study.lock"
STATUS = "study_status.json"
HEARTBEAT_S = 30
STALE_S = 180
TAIL_LINES = 20


def job_id():
    """The executing job: a Slurm array task or job, a submitit local job, or ''."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID") or ""


def _now():
    return datetime.datetime.now().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# locks


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def lock_alive(path, holder=None):
    """True when the lock at `path` is held by a live process (see the module docstring)."""
    holder = holder if holder is not None else read_json(path)
    try:
        age = time.time() - os.path.getmtime(path)
    except FileNotFoundError:
        return False
    if holder is None:
        return age < STALE_S  # being written right now, or damaged: trust its age
    if holder.get("host") == socket.gethostname():
        pid = int(holder.get("pid") or 0)
        if pid == os.getpid() or pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    if holder.get("job") and holder.get("job") == job_id():
        return False  # an earlier run of this very job (requeued after preemption or timeout)
    return age < STALE_S


def acquire(out):
    """The lock file's path, or None when a live process holds it."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, LOCK)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "job": job_id(), "since": _now()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_json(path)
            if lock_alive(path, holder):
                return None
            _remove_stale(path, holder)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return path
    return None


def _remove_stale(path, holder):
    """Move the stale lock aside; if what was moved is not the lock judged stale (another
    process replaced it meanwhile), put it back."""
    aside = f"{path}.{uuid.uuid4().hex}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if read_json(aside) != holder:
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    os.remove(aside)


def release(path):
    if path:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


class Heartbeat:
    """Touches the current run's lock every HEARTBEAT_S seconds from a daemon thread."""

    def __init__(self):
        self.path = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="study-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self):
        while not self._stop.wait(HEARTBEAT_S):
            path = self.path
            if path:
                try:
                    os.utime(path)
                except FileNotFoundError:
                    pass

    def stop(self):
        self._stop.set()


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


def run_one(run, models, heartbeat=None):
    """'skipped' | 'blocked' | 'busy' | 'done' | 'failed'."""
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
                train.run(train.parse_args(run.argv), models=models)
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
    counts = {}
    try:
        for run in runs:
            start = time.time()
            if on_run is not None:
                on_run(run, "start", 0.0)
            state = run_one(run, models, heartbeat)
            counts[state] = counts.get(state, 0) + 1
            if on_run is not None:
                on_run(run, state, time.time() - start)
    finally:
        heartbeat.stop()
    return counts


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
