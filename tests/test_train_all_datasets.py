"""train.py on each of the 15 datasets in its real (synthetic) layout."""
import glob
import json
import os

import pytest

import train

OWN_DATA = ("imagefolder", "imagelist")  # not in the synthetic root: tests/test_custom_dataset.py
DATASET_CONFIGS = sorted(set(os.path.basename(p)[:-5] for p in glob.glob("configs/datasets/*.yaml")) - set(OWN_DATA))


def test_all_fifteen_configs_present():
    assert len(DATASET_CONFIGS) == 15


@pytest.mark.parametrize("name", DATASET_CONFIGS)
def test_taskres_runs_on(name, synthetic_datasets_root, tiny_clip_path, tmp_path):
    out = tmp_path / name
    code = train.main(["--root", str(synthetic_datasets_root), "--seed", "1", "--trainer", "TaskRes",
                       "--dataset-config-file", f"configs/datasets/{name}.yaml",
                       "--config-file", "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml",
                       "--output-dir", str(out), "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1",
                       "MODEL.BACKBONE.NAME", tiny_clip_path, "DATALOADER.NUM_WORKERS", "0",
                       "TRAIN.TENSORBOARD", "False", "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5"])
    assert code == 0
    res = json.load(open(out / "results.json"))
    assert res["total"] > 0 and 0.0 <= res["accuracy"] <= 100.0
