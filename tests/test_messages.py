"""What a user sees: help text, typos, bad files and folders, reference runs in the figures, and
results that do not depend on what the feature store already held."""
import os
import subprocess
import sys

import pytest
import torch

import train
from synthetic.layouts import write_eurosat

RECIPE = "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=10)
    return str(root)


def args(root, out, clip_path, *opts, seed=2):
    return [str(a) for a in ["--root", root, "--seed", seed, "--trainer", "TaskRes", "--dataset-config-file",
                             "configs/datasets/eurosat.yaml", "--config-file", RECIPE, "--output-dir", out,
                             "DATASET.NUM_SHOTS", 4, "MODEL.BACKBONE.NAME", clip_path, "OPTIM.MAX_EPOCH", 4,
                             "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False, *opts]]


def test_help_keeps_the_examples_line_breaks():
    for script, line in (("train.py", "\n        --dataset-config-file configs/datasets/eurosat.yaml \\\n"),
                         ("sweep.py", "\n        --root DATA --trainer TaskRes")):
        out = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True).stdout
        assert line in out, script


@pytest.mark.parametrize("opts,message", [
    (["OPTIM.LRR", "1"], "Did you mean OPTIM.LR?"),
    (["TRAINER.TaskRes.RESIDUAL_SCAL", "1"], "Did you mean TRAINER.TaskRes.RESIDUAL_SCALE?"),
])
def test_config_key_typos_get_a_suggestion(opts, message, data_root, tiny_clip_path, tmp_path, capsys):
    assert train.main(args(data_root, str(tmp_path / "o"), tiny_clip_path, *opts)) == 2
    assert message in capsys.readouterr().err


def test_malformed_yaml_and_relative_paths_are_explained(data_root, tiny_clip_path, tmp_path, capsys,
                                                       monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("OPTIM: [\n")
    argv = args(data_root, str(tmp_path / "o"), tiny_clip_path)
    argv[argv.index(RECIPE)] = str(bad)
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert f"config file {bad} is not valid YAML" in err and "Traceback" not in err
    monkeypatch.chdir(tmp_path)  # the configs/ paths are relative to the repository
    assert train.main(args(data_root, str(tmp_path / "o2"), tiny_clip_path, "OPTIM.MAX_EPOCH", 0)) == 0
    assert "is not in the current folder" in capsys.readouterr().out
    argv = args(data_root, str(tmp_path / "o3"), tiny_clip_path)
    argv[argv.index(RECIPE)] = "configs/trainers/TaskRes/nope.yaml"
    assert train.main(argv) == 2
    assert "relative paths are read from the current folder" in capsys.readouterr().err


def test_unwritable_output_folder_is_one_message(data_root, tiny_clip_path, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert train.main(args(data_root, str(blocker / "run"), tiny_clip_path)) == 2
    err = capsys.readouterr().err
    assert "Cannot write to the output folder" in err and "Traceback" not in err


def test_cached_result_does_not_depend_on_what_the_store_held(data_root, tiny_clip_path, tmp_path):
    """Encoding never draws from the training RNG: an empty store, a store filled by another run
    and a store filled by another process give bit-identical checkpoints."""
    def residual(out):
        path = os.path.join(out, "prompt_learner", "model.pth.tar-4")
        return torch.load(path, weights_only=True)["state_dict"]["text_feature_residuals"]

    store = ("FEATURES.MODE", "cached", "FEATURES.CACHE_DIR")
    empty = str(tmp_path / "empty")
    assert train.main(args(data_root, empty, tiny_clip_path, *store, tmp_path / "s1")) == 0
    filled = str(tmp_path / "filled")
    assert train.main(args(data_root, str(tmp_path / "seed1"), tiny_clip_path, *store, tmp_path / "s2", seed=1)) == 0
    assert train.main(args(data_root, filled, tiny_clip_path, *store, tmp_path / "s2")) == 0
    other = str(tmp_path / "other")
    code = ("import sys; sys.path.insert(0, '.'); import train; "
            f"sys.exit(train.main({args(data_root, str(tmp_path / 'p'), tiny_clip_path, *store, tmp_path / 's3')!r}))")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
    assert train.main(args(data_root, other, tiny_clip_path, *store, tmp_path / "s3")) == 0
    assert torch.equal(residual(empty), residual(filled)) and torch.equal(residual(empty), residual(other))


def test_figures_read_reference_runs(tmp_path):
    from analysis.runs import find_runs, load_taskres
    from synthetic.reference_runs import make_taskres_reference_run

    base, residual = torch.randn(10, 8), 0.01 * torch.randn(10, 8)
    make_taskres_reference_run(str(tmp_path / "ref" / "seed1"), base, residual, accuracy=82.0, epochs=5, total=100)
    runs = find_runs(str(tmp_path / "ref"))
    assert len(runs) == 1 and runs[0].accuracy == 82.0 and runs[0].trainer == "TaskRes"
    weights = load_taskres(runs[0])
    assert torch.allclose(weights.residual.float(), residual) and weights.epoch == 5
