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


def opt(argv, flag):
    """The value after `flag` in a recorded argument list."""
    return argv[argv.index(flag) + 1]


def results(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def run_killed(args, epochs_done, monkeypatch, trainer_class=None):
    """train.py ARGS stopped by an exception right after epoch `epochs_done` (1-based) ended and
    was saved: the run folder a killed process leaves, for resume tests."""
    import pytest

    from engine.trainer import Trainer

    class Killed(Exception):
        pass

    cls = trainer_class or Trainer
    original = cls.after_epoch

    def after_epoch_then_die(self):
        original(self)
        if self.epoch + 1 == epochs_done:
            raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(cls, "after_epoch", after_epoch_then_die)
        with pytest.raises(Killed):
            train.main([str(a) for a in args])
