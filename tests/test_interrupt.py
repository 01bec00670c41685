"""One Ctrl-C stops a training run at once, with exit status 130 and the resume hint in its log,
wherever it lands: also inside the fork of the DataLoader's workers at the start of an epoch,
where Python drops the KeyboardInterrupt ("Exception ignored in: _releaseLock")."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 12


def train_argv(data, clip, out):
    # Online features with two DataLoader workers: the workers are forked at every epoch's start.
    return ["--root", str(data), "--seed", "1", "--trainer", "TaskRes",
            "--dataset-config-file", "configs/datasets/eurosat.yaml",
            "--config-file", "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml", "--output-dir", str(out),
            "DATASET.NUM_SHOTS", "2", "MODEL.BACKBONE.NAME", clip, "DATALOADER.NUM_WORKERS", "2",
            "TRAIN.TENSORBOARD", "False", "OPTIM.MAX_EPOCH", str(EPOCHS)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from synthetic.layouts import write_eurosat

    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=6)
    return root


def epochs_logged(out):
    with open(os.path.join(out, "log.txt"), encoding="utf-8") as f:
        text = f.read()
    return sum(line.startswith("epoch [") for line in text.splitlines()), text


def assert_stopped(proc, out, err, at_epoch):
    assert proc.returncode == 130, err
    assert "Interrupted. Rerun the same command" in err and "Exception ignored" not in err
    epochs, log = epochs_logged(out)
    assert epochs <= at_epoch + 1  # the epoch it landed in, at most
    assert "Interrupted: rerun the same command" in log and "to resume" in log
    assert not os.path.exists(os.path.join(out, "results.json"))


def test_ctrl_c_inside_the_dataloader_fork_stops_the_run(data, tiny_clip_path, tmp_path):
    # A SIGINT raised while the parent runs its after-fork hooks is handled inside one of them,
    # exactly as a Ctrl-C that arrives during the fork system call.
    harness = textwrap.dedent("""
        import os, signal, sys
        import train
        forks = [0]
        def after_in_parent():
            forks[0] += 1
            if forks[0] == 5:  # the first worker of epoch 3
                os.kill(os.getpid(), signal.SIGINT)
        os.register_at_fork(after_in_parent=after_in_parent)
        sys.exit(train.main(sys.argv[1:]))
    """)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", harness] + train_argv(data, tiny_clip_path, out), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert_stopped(proc, out, proc.stderr, at_epoch=3)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.01, 0.1])
def test_ctrl_c_right_after_an_epoch_line_stops_the_run(data, tiny_clip_path, tmp_path, delay):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "train.py"] + train_argv(data, tiny_clip_path, out), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stdout:
        if line.startswith("epoch [3/"):
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the run and its workers
            break
    proc.stdout.read()
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert_stopped(proc, out, err, at_epoch=4)
