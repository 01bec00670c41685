"""sweep.py's first line names the grid and the value each method axis runs with (TaskRes's alpha:
the config's 1.0 unless asked otherwise); weights that cannot be loaded stop the runs on that
backbone after the first try (status 3), runs on other backbones still start."""
import os

import pytest

import sweep


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from synthetic.layouts import write_eurosat

    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=6)
    return str(root)


def argv(data_root, out, *more):
    return ["--shots", "1", "2", "--seeds", "1", "2", *more, "--root", data_root, "--trainer", "TaskRes",
            "--dataset-config-file", "configs/datasets/eurosat.yaml",
            "--config-file", "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml", "--output-dir", str(out),
            "DATALOADER.NUM_WORKERS", "0", "TRAIN.TENSORBOARD", "False"]


def test_missing_weights_stop_the_sweep_and_the_first_line_names_alpha(data_root, tmp_path, capsys):
    missing = str(tmp_path / "missing.pt")
    assert sweep.main(argv(data_root, tmp_path / "out") + ["MODEL.BACKBONE.NAME", missing]) == 3
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == ("Sweep of TaskRes on EuroSAT: 4 runs (shots 1 2 x seeds 1 2); alpha 1.0 "
                                   "(TRAINER.TaskRes.RESIDUAL_SCALE of the config and overrides; --alphas sets it)")
    assert out.count("Loading CLIP") == 1 and err.count(f"CLIP weights file not found: {missing}") == 1
    assert f"Sweep stopped: the weights of {missing} cannot be loaded (the error above); 3 more run(s)" in err
    assert "Sweep done in" in out and ": 0/4 runs finished" in out


def test_other_backbones_still_run_and_alphas_are_named(data_root, tmp_path, capsys):
    a, b = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    assert sweep.main(argv(data_root, tmp_path / "out", "--alphas", "0.5", "--set", f"MODEL.BACKBONE.NAME={a},{b}")) == 3
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == (f"Sweep of TaskRes on EuroSAT: 8 runs (shots 1 2 x seeds 1 2 x "
                                   f"MODEL.BACKBONE.NAME {a} {b}); alpha 0.5 (from --alphas)")
    # one try per backbone: the first run of each
    assert err.count(f"not found: {a}") == 1 and err.count(f"not found: {b}") == 1
    assert not os.path.exists(os.path.join(tmp_path, "out", "adam_lr2e-3_B256_ep100_2shots"))
