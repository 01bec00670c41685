"""Atomic file writes and the stdout tee to log.txt.

Every file the framework writes goes through `atomic_write`: the bytes land in a temporary file
in the same folder, are flushed to disk, and replace the target with `os.replace`, so a run killed
at any moment leaves the old file or the new one, never a torn one.
"""
import contextlib
import io
import json
import os
import sys
import tempfile
import time

import torch


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path, mode="wb", fsync=True):
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def save_torch(obj, path, fsync=True):
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_write(path, "wb", fsync=fsync) as f:
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
        self.file.write(msg)

    def flush(self):
        self.stream.flush()
        self.file.flush()

    def isatty(self):
        return False

    def close(self):
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
