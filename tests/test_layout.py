"""engine/layout.py: the run-folder layout and the one "finished" rule, also from the shell."""
import os
import subprocess
import sys

import pytest

from engine import layout
from engine.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_folders():
    assert layout.run_folder("out", "rn50", 4, 2, "base_regular_alpha0.5", "LR1e-3") == \
        os.path.join("out", "rn50_4shots", "base_regular_alpha0.5", "LR1e-3", "seed2")
    assert layout.run_folder("out", "rn50", 4, 1) == os.path.join("out", "rn50_4shots", "seed1")
    assert layout.evaluation_folder("o", "ZS", "rn50", 0, "dtd") == os.path.join("o", "ZS", "rn50", "dtd")
    assert layout.new_classes_folder(os.path.join("o", "base2new", "train_base", "x")) == \
        os.path.join("o", "base2new", "test_new", "x")
    assert layout.product_path("sb", "DescribableTextures", "rn50", 16) == \
        os.path.join("sb", "DescribableTextures", "rn50_16shots", "model.pth.tar")
    assert layout.grid_tag([("OPTIM.LR", "1e-3"), ("OPTIM.MAX_EPOCH", "10")]) == "LR1e-3_MAX_EPOCH10"
    assert (layout.backbone_tag("ViT-B/16"), layout.base_tag("ViT-B/16")) == ("ViT-B-16", "vitb16")


def test_templates():
    assert layout.fill_template("/o/{a}//{b}", {"a": "x", "b": ""}, "t", collapse=True) == "/o/x"
    with pytest.raises(UserError, match=r"t uses an unknown placeholder 'c'; known: \{a\}"):
        layout.fill_template("{c}", {"a": 1}, "t")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "engine.layout", *args], cwd=REPO, capture_output=True,
                          text=True)


def test_finished_from_results_or_a_finished_log(tmp_path):
    run = tmp_path / "seed1"
    run.mkdir()
    (run / "log.txt").write_text("epoch 1\nFinish training\n")
    assert not layout.finished(str(run), logs=True)
    (run / "log.txt-2024-01-01-00-00-00").write_text("Finish training\n=> result\n* accuracy: 50.0%\n")
    assert layout.finished(str(run), logs=True) and not layout.finished(str(run))
    assert cli("finished", str(run), "--logs").returncode == 0 and cli("finished", str(run)).returncode == 1
    (run / "results.json").write_text("{}")
    assert layout.finished(str(run)) and cli("finished", str(run)).returncode == 0
    assert layout.find_log(str(run)).endswith("log.txt-2024-01-01-00-00-00")
    assert cli("base-tag", "RN50").stdout == "rn50\n"
