"""Dassl's `setup_logger`: mirror stdout into a log file.

train.py already tees stdout into OUTPUT_DIR/log.txt for every run, so trainer files never need
this; it is here for scripts that call it themselves.
"""
import os
import sys
import time

from engine.io import Tee, log_file_path

__all__ = ["Logger", "setup_logger"]


class Logger(Tee):
    """Writes to the console and to `fpath` (appending)."""

    def __init__(self, fpath=None):
        os.makedirs(os.path.dirname(os.path.abspath(fpath)), exist_ok=True)
        super().__init__(sys.stdout, fpath)


def setup_logger(output=None):
    """`output`: a .txt/.log file, or a folder (log.txt inside). An existing file gets a
    `-YYYY-MM-DD-HH-MM-SS` suffix instead of being appended to, as in Dassl."""
    if output is None:
        return
    if output.endswith((".txt", ".log")):
        fpath = output
        if os.path.exists(fpath):
            fpath += time.strftime("-%Y-%m-%d-%H-%M-%S")
    else:
        os.makedirs(output, exist_ok=True)
        fpath = log_file_path(output)
    sys.stdout = Logger(fpath)
