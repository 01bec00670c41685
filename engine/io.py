"""Atomic file writes and the stdout tee to log.txt.

Every file the framework writes goes through `atomic_write`: the bytes land in a temporary file
in the same folder, are flushed to disk, and replace the target with `os.replace`, so a run killed
at any moment leaves the old file or the new one, never a torn one. A temporary file is named
for its writer (`.<name>.<host>-<pid>.<random>.tmp`), so one left by a killed writer is
recognised and removed by `clean_orphans` on the next run. A write that fails for lack of room
or permission (full disk, quota, file-size limit, read-only file system) is a `StorageError`:
one line saying what, where, and how much space it needed.
"""
import contextlib
import errno
import io
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time

import torch

from .errors import UserError


_UMASK = os.umask(0)
os.umask(_UMASK)


_HOST = socket.gethostname().replace(".", "_").replace("-", "_") or "host"
_ORPHAN = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp$")
_NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
FOREIGN_ORPHAN_AGE_S = 24 * 3600  # another host's temporary file: removed once this old


class StorageError(UserError):
    """A file that cannot be written: no space, over a quota or size limit, or no permission."""


def _storage_error(e, path, size=None):
    """A StorageError for OSError `e` when it is about room or permission, else None."""
    if e.errno not in _NO_ROOM:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    need = f"; it needs {size / 2**20:.1f} MiB" if size is not None else ""
    try:
        free = f", {shutil.disk_usage(folder).free / 2**20:.1f} MiB free there"
    except OSError:
        free = ""
    return StorageError(f"Cannot write {path}: {e.strerror or os.strerror(e.errno)}{need}{free}. Free some "
                        "space, raise the limit, or choose another folder.")


@contextlib.contextmanager
def atomic_write(path, mode="wb", fsync=True, size=None):
    """Write `path` all at once (see the module docstring); `size`, when known, is named in the
    message of a write that fails for lack of room."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.{_HOST}-{os.getpid()}.",
                                   suffix=".tmp")
    except OSError as e:
        raise (_storage_error(e, path, size) or e) from None
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        room = _storage_error(e, path, size) if isinstance(e, OSError) else None
        if room is not None:
            raise room from None
        raise


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    return True


def clean_orphans(folder, recursive=False):
    """Remove temporary files of `atomic_write`s whose writer died (killed mid-write): on this
    host, when their process is gone; another host's once they are FOREIGN_ORPHAN_AGE_S old.
    Returns how many were removed."""
    removed = 0
    walk = os.walk(folder) if recursive else [(folder, None, os.listdir(folder) if os.path.isdir(folder) else [])]
    for top, _, names in walk:
        for name in names:
            m = _ORPHAN.match(name)
            if not m:
                continue
            path = os.path.join(top, name)
            if m["host"] == _HOST:
                orphan = not _pid_alive(int(m["pid"]))
            else:
                try:
                    orphan = time.time() - os.path.getmtime(path) > FOREIGN_ORPHAN_AGE_S
                except OSError:
                    orphan = False
            if orphan:
                with contextlib.suppress(OSError):
                    os.remove(path)
                    removed += 1
    return removed


def save_torch(obj, path, fsync=True):
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_write(path, "wb", fsync=fsync, size=buf.getbuffer().nbytes) as f:
        f.write(buf.getbuffer())


def save_json(obj, path):
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def save_text(text, path):
    with atomic_write(path, "w") as f:
        f.write(text)


class Tee:
    """Mirror writes to the console and to a log file (what Dassl's setup_logger does)."""

    def __init__(self, stream, path):
        self.stream = stream
        # Line-buffered: a run killed by SIGKILL (a scheduler, the OOM killer) keeps its log.
        self.file = open(path, "a", encoding="utf-8", buffering=1)
        self.path = path

    def write(self, msg):
        self.stream.write(msg)
        if self.file is None:
            return
        try:
            self.file.write(msg)
        except OSError as e:  # a full disk must not stop the run: the console keeps the log
            self._lost(e)

    def flush(self):
        self.stream.flush()
        if self.file is not None:
            try:
                self.file.flush()
            except OSError as e:
                self._lost(e)

    def _lost(self, e):
        self.stream.write(f"\nNote: {self.path} can no longer be written ({e.strerror}); the rest of this "
                          "log goes to the console only\n")
        with contextlib.suppress(OSError):
            self.file.close()
        self.file = None

    def isatty(self):
        return False

    def close(self):
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()


def log_file_path(output_dir):
    """log.txt, or log.txt-<timestamp> when log.txt exists (Dassl's rule, kept for tooling)."""
    path = os.path.join(output_dir, "log.txt")
    if os.path.exists(path):
        path += time.strftime("-%Y-%m-%d-%H-%M-%S")
    return path


@contextlib.contextmanager
def tee_stdout(output_dir):
    os.makedirs(output_dir, exist_ok=True)
    tee = Tee(sys.stdout, log_file_path(output_dir))
    old = sys.stdout
    sys.stdout = tee
    try:
        yield tee.path
    finally:
        sys.stdout = old
        tee.close()
