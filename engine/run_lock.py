"""The locks that keep two processes from writing one run folder.

- `run_lock(folder)`: what every train.py run holds, an advisory `flock` on `.run.lock`: the
  kernel drops it when the process dies, however it dies, so a lock left by a killed run is
  simply taken over; a second live process gets one clear message. The lock file is opened
  without following links and must be a regular file of this user (it is rewritten: a planted
  symlink must not redirect that write). Holding it, the run removes temporary files that killed
  writers left in the folder (`engine.io.clean_orphans`).
- `acquire(folder)` / `release(path)`: what a study worker holds around a run and its install
  (`.study.lock`), which must also hold across hosts (Slurm nodes on a shared file system,
  where flock is not reliable) and show as "running" in `study.py status`: a file naming its
  holder (host, pid, job id), touched every 30 s by a `Heartbeat` while the run is alive. It is
  stale when its process is gone (same host), when it belongs to an earlier incarnation of the
  same job (a requeued Slurm job), or when it has not been touched for 3 minutes (another
  host); a stale lock is taken over.
"""
import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import threading
import time
import uuid

from .errors import UserError
from .io import clean_orphans

LOCK_FILE = ".run.lock"
STUDY_LOCK = ".study.lock"
HEARTBEAT_S = 30
STALE_S = 180


class RunLockedError(UserError):
    """Another live process is writing this run folder."""


@contextlib.contextmanager
def run_lock(folder):
    path = os.path.join(folder, LOCK_FILE)
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{path} is a symbolic link; a run folder's lock must be a regular file. Remove "
                            "it and run again.") from None
        raise UserError(f"Cannot write to the output folder {folder} ({e.strerror}). Choose a writable "
                        "--output-dir.") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise UserError(f"{path} is not a regular file of this user; remove it and run again.")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            raise RunLockedError(f"{folder} is being written by {holder}. Wait for it to finish, or use "
                                 "another --output-dir.") from None
        info = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        clean_orphans(folder, recursive=True)
        yield
    finally:
        os.close(fd)  # releases the lock


def job_id():
    """The executing job: a Slurm array task or job, a submitit local job, or ''."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID") or ""


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
    path = os.path.join(out, STUDY_LOCK)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "job": job_id(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
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

