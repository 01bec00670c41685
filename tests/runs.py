"""Helpers the method tests share: a train.py run in this process, and a run's results.json."""
import json
import os

import train


def run(args, expect=0):
    """`python train.py ARGS` in this process (values stringified); asserts its exit code."""
    code = train.main([str(a) for a in args])
    assert code == expect
    return code


def run_direct(args, models=None):
    """train.run on parsed ARGS: errors propagate as exceptions; `models` a shared ModelCache."""
    return train.run(train.parse_args([str(a) for a in args]), models=models)


def results(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)
