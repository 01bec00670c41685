"""sweep.py: a grid in one process, each run written as train.py would, CLIP loaded once."""
import json
import os

import pytest

import clip
import sweep
from engine.recipes import recipe


@pytest.fixture()
def data_root(tmp_path):
    from synthetic.layouts import write_eurosat

    write_eurosat(str(tmp_path / "data"), per_class=12)
    return str(tmp_path / "data")


def test_sweep_runs_grid_in_one_process_and_skips_finished(data_root, tiny_clip_path, tmp_path, monkeypatch):
    loads = []
    real_load = clip.load
    monkeypatch.setattr(clip, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    out = str(tmp_path / "out")
    argv = ["--shots", "1", "2", "--seeds", "1", "2", "--alphas", "0.5", "1.0", "--root", data_root,
            "--trainer", "TaskRes", "--dataset-config-file", "configs/datasets/eurosat.yaml",
            "--config-file", "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml", "--output-dir", out,
            "MODEL.BACKBONE.NAME", tiny_clip_path, "OPTIM.MAX_EPOCH", "2", "DATALOADER.NUM_WORKERS", "0",
            "TRAIN.TENSORBOARD", "False", "FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", str(tmp_path / "cache")]
    assert sweep.main(argv) == 0
    runs = [os.path.join(out, f"adam_lr2e-3_B256_ep100_{k}shots", f"base_regular_alpha{a}", f"seed{s}")
            for k in (1, 2) for a in (0.5, 1.0) for s in (1, 2)]
    for run in runs:
        res = json.load(open(os.path.join(run, "results.json")))
        assert os.path.isfile(os.path.join(run, "log.txt"))
        assert os.path.isfile(os.path.join(run, "prompt_learner", "model.pth.tar-2"))
        assert res["num_shots"] == int(run.split("_")[-3][0]) and res["seed"] == int(run[-1])
    assert len(loads) == 1  # one CLIP for eight runs
    os.remove(os.path.join(runs[0], "results.json"))  # an unfinished run
    mtimes = {r: os.path.getmtime(os.path.join(r, "log.txt")) for r in runs[1:]}
    assert sweep.main(argv) == 0
    assert os.path.isfile(os.path.join(runs[0], "results.json"))
    assert all(os.path.getmtime(os.path.join(r, "log.txt")) == m for r, m in mtimes.items())


def test_taskres_recipe_table_per_dataset_and_shots():
    r = recipe("TaskRes", "EuroSAT", 4)
    assert (r.config, r.opts) == ("configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml",
                                  {"TRAINER.TaskRes.RESIDUAL_SCALE": 0.5})
    assert recipe("TaskRes", "imagenet", 16).cfg == "adam_lr2e-4_B256_ep200"
    assert recipe("TaskRes", "OxfordFlowers", 8).opts["TRAINER.TaskRes.RESIDUAL_SCALE"] == 1.0
    for stem in ("caltech101", "dtd", "eurosat"):  # every recipe names an existing config file
        for k in (1, 2, 4, 8, 16):
            assert os.path.isfile(recipe("TaskRes", stem, k).config)
