"""A new method is one file plus one config folder: written against docs/writing_a_method.md and
dropped into a copy of the project (trainers/<file>.py, configs/trainers/<Name>/ with one yaml),
it runs unchanged through every tool: train.py, sweep.py --recipe, a study (run, status, table),
scripts/base2new.sh with parse_test_res.py --base2new, and analysis.compare; its per-class
parameters give the zero-shot classifier on classes it never trained on."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The file an outside author writes: only what the page tells them to import and override.
METHOD_FILE = '''"""ClassOffset: zero-shot CLIP's text classifier plus a learned offset per class."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

import clip
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer
from trainers.templates import custom_template
from trainers.text import class_prompt_features


class Offsets(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.register_buffer("base", base)
        self.offset = nn.Parameter(torch.zeros_like(base))


@TRAINER_REGISTRY.register()
class ClassOffset(Trainer):
    cfg_node = "CLASS_OFFSET"
    per_class_keys = ("base", "offset")

    @classmethod
    def extend_cfg(cls, cfg):
        cfg.TRAINER.CLASS_OFFSET = CN()
        cfg.TRAINER.CLASS_OFFSET.PREC = "fp32"
        cfg.TRAINER.CLASS_OFFSET.SCALE = 1.0

    def build_model(self):
        clip_model = self.load_clip()
        feats = class_prompt_features(self, clip.TextEncoder(clip_model), self.dm.classnames,
                                      [custom_template(self.cfg)])
        self.offsets = Offsets(F.normalize(feats.mean(1).float(), dim=-1)).to(self.device)
        self.logit_scale = clip_model.logit_scale.detach().exp().float()
        self.register_model("offsets", self.offsets)

    def forward(self, features):
        w = self.offsets.base + self.cfg.TRAINER.CLASS_OFFSET.SCALE * self.offsets.offset
        return self.logit_scale * F.normalize(features.float(), dim=-1) @ F.normalize(w, dim=-1).t()
'''

CONFIG = """OPTIM:
  NAME: "adam"
  LR: 0.01
  MAX_EPOCH: 10
  LR_SCHEDULER: "cosine"
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: 8
  NUM_WORKERS: 0
TRAIN:
  TENSORBOARD: False
MODEL:
  BACKBONE:
    NAME: "RN50"
"""


def _copy_project(dest):
    skip = {".git", "tests", "output", "benchmarks", "docs", ".ci-venv", "venv", ".venv", "__pycache__"}
    shutil.copytree(REPO, dest, ignore=lambda d, names: [n for n in names if n in skip])


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_clip_path):
    base = tmp_path_factory.mktemp("dropin")
    repo = str(base / "repo")
    _copy_project(repo)
    with open(os.path.join(repo, "trainers", "class_offset.py"), "w") as f:
        f.write(METHOD_FILE)
    os.makedirs(os.path.join(repo, "configs", "trainers", "ClassOffset"))
    with open(os.path.join(repo, "configs", "trainers", "ClassOffset", "adam_ep10.yaml"), "w") as f:
        f.write(CONFIG)
    data = str(base / "data")
    from synthetic.layouts import write_eurosat

    write_eurosat(data, per_class=12)
    return {"repo": repo, "data": data, "out": str(base / "out"), "clip": tiny_clip_path}


def sh(project, *cmd, env=None):
    """Run a command in the copied project; returns stdout (asserting exit 0)."""
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("PYTHONPATH", None)
    proc = subprocess.run(list(cmd), cwd=project["repo"], env=full_env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def results(folder):
    with open(os.path.join(folder, "results.json")) as f:
        return json.load(f)


def quick(project):
    return ["MODEL.BACKBONE.NAME", project["clip"], "FEATURES.MODE", "cached",
            "FEATURES.CACHE_DIR", os.path.join(project["out"], "store")]


def test_train_and_sweep_with_its_recipe(project):
    out = os.path.join(project["out"], "train")
    sh(project, sys.executable, "train.py", "--root", project["data"], "--seed", "1", "--trainer", "ClassOffset",
       "--dataset-config-file", "configs/datasets/eurosat.yaml",
       "--config-file", "configs/trainers/ClassOffset/adam_ep10.yaml", "--output-dir", out,
       "DATASET.NUM_SHOTS", "4", *quick(project))
    assert results(out)["accuracy"] > 50.0  # 10 classes: chance is 10%, the untrained model 20%

    sweep = os.path.join(project["out"], "sweep")
    sh(project, sys.executable, "sweep.py", "--shots", "4", "--seeds", "1", "2", "--recipe",
       "--root", project["data"], "--trainer", "ClassOffset", "--dataset-config-file", "configs/datasets/eurosat.yaml",
       "--output-dir", sweep, *quick(project))
    for seed in (1, 2):
        assert results(os.path.join(sweep, "adam_ep10_4shots", f"seed{seed}"))["trainer"] == "ClassOffset"
    # The sweep's seed-1 run is the train.py run above.
    assert results(os.path.join(sweep, "adam_ep10_4shots", "seed1"))["accuracy"] == results(out)["accuracy"]

    table = sh(project, sys.executable, "-m", "analysis.compare", sweep)
    assert "ClassOffset" in table


def test_a_study_lists_it(project):
    study = os.path.join(project["out"], "study.yaml")
    opts = dict(zip(quick(project)[::2], quick(project)[1::2]))
    with open(study, "w") as f:
        json.dump({"name": "dropin", "root": project["data"], "output": os.path.join(project["out"], "study"),
                   "datasets": ["eurosat"], "shots": [4], "seeds": [1], "methods": ["ClassOffset"], "opts": opts}, f)
    sh(project, sys.executable, "study.py", "run", study)
    status = sh(project, sys.executable, "study.py", "status", study)
    # runs, done, running, failed, pending
    assert re.search(r"^total\s+1\s+1\s+0\s+0\s+0\s*$", status, re.M), status
    table = sh(project, sys.executable, "study.py", "table", study)
    assert "ClassOffset" in table


def test_base_to_new_gives_zero_shot_rows_on_new_classes(project):
    env = {"SHOTS": "4", "OUTPUT": os.path.join(project["out"], "b2n"), "BACKBONE": project["clip"],
           "EXTRA_OPTS": " ".join(quick(project)[2:]), "PYTHON": sys.executable}
    for phase in ("train", "test"):
        sh(project, "bash", "scripts/base2new.sh", phase, "ClassOffset", "eurosat", "1", project["data"], env=env)
    root = os.path.join(project["out"], "b2n", "base2new")
    report = sh(project, sys.executable, "parse_test_res.py", root, "--base2new")
    assert "ClassOffset" in report and "HM" in report.upper()

    [new_run] = [d for d, _, files in os.walk(os.path.join(root, "test_new")) if "results.json" in files]
    new = results(new_run)
    classes = new["extras"]["unseen_classes_zeroshot"]
    assert classes == 5  # the new half of EuroSAT's 10 classes, none seen in training
    # Every new class's row is the freshly built (zero-shot) one: the same as an untrained run.
    untrained = os.path.join(project["out"], "untrained")
    sh(project, sys.executable, "train.py", "--root", project["data"], "--seed", "1", "--trainer", "ClassOffset",
       "--dataset-config-file", "configs/datasets/eurosat.yaml",
       "--config-file", "configs/trainers/ClassOffset/adam_ep10.yaml", "--output-dir", untrained,
       "DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "new", "OPTIM.MAX_EPOCH", "0", *quick(project))
    assert results(untrained)["accuracy"] == new["accuracy"]
