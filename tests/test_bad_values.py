"""Nothing silently wrong: bad values, a lost run record, checkpoints that cannot mean what they
would score, and config files that are code each stop with one clear line (or, for an unfinished
run, say so and record it) instead of a traceback or a plausible-looking result."""
import json
import os

import pytest
import torch
import yaml

import study
import train
from engine.evaluator import Classification
from engine.recipes import recipe
from engine.errors import UserError
from runs import results, run_killed
from synthetic.layouts import write_dtd, write_eurosat

RECIPE = "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=8)
    write_dtd(str(root), classes=("banded", "braided", "bubbly", "cracked", "dotted"), per_class=8)
    return str(root)


def args(root, out, clip_path, *opts, dataset="eurosat"):
    return [str(a) for a in ["--root", root, "--seed", 1, "--trainer", "TaskRes", "--dataset-config-file",
                             f"configs/datasets/{dataset}.yaml", "--config-file", RECIPE, "--output-dir", out,
                             "DATASET.NUM_SHOTS", 2, "MODEL.BACKBONE.NAME", clip_path, "OPTIM.MAX_EPOCH", 2,
                             "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False, *opts]]


def refused(argv, capsys):
    """train.py's stderr for ARGV, which must exit 2 with one line and no traceback."""
    capsys.readouterr()
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ln.strip()]) == 1, err
    return err


@pytest.fixture(scope="module")
def finished(data_root, tiny_clip_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("finished") / "run")
    assert train.main(args(data_root, out, tiny_clip_path)) == 0
    return out


# ---- bad values -------------------------------------------------------------------------------
@pytest.mark.parametrize("opts,message", [
    (["DATASET.NUM_SHOTS", -4], "DATASET.NUM_SHOTS must be"),
    (["OPTIM.MAX_EPOCH", -3], "OPTIM.MAX_EPOCH must be >= 0"),
    (["OPTIM.LR", -0.1], "OPTIM.LR must be >= 0"),
    (["DATALOADER.TRAIN_X.BATCH_SIZE", 0], "DATALOADER.TRAIN_X.BATCH_SIZE must be >= 1"),
    (["DATALOADER.TEST.BATCH_SIZE", 0], "DATALOADER.TEST.BATCH_SIZE must be >= 1"),
    (["FEATURES.MODE", "cached", "FEATURES.NUM_VIEWS", 0], "FEATURES.NUM_VIEWS must be >= 1"),
])
def test_bad_values_stop_with_one_line(opts, message, data_root, tiny_clip_path, tmp_path, capsys):
    out = str(tmp_path / "run")
    err = refused(args(data_root, out, tiny_clip_path, "FEATURES.CACHE_DIR", str(tmp_path / "store"), *opts), capsys)
    assert message in err
    assert not os.path.exists(os.path.join(out, "results.json"))


def test_prompt_lr_of_the_joint_trainer_is_checked(data_root, tiny_clip_path, tmp_path, capsys):
    argv = args(data_root, str(tmp_path / "run"), tiny_clip_path, "TRAINER.CoOpMaskTuning.PROMPT_LR", -1.0)
    argv[argv.index("TaskRes")] = "CoOpMaskTuning"
    argv[argv.index(RECIPE)] = recipe("CoOpMaskTuning", "eurosat", 2).config
    assert "TRAINER.CoOpMaskTuning.PROMPT_LR must be >= 0" in refused(argv, capsys)


def write_study(path, **fields):
    data = {"name": "tiny", "datasets": ["eurosat"], "shots": [2], "seeds": [1], "methods": ["TaskRes"]}
    data.update(fields)
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return str(path)


@pytest.mark.parametrize("fields,message", [
    ({"methods": [{"name": "X", "trainer": "NoSuchTrainer", "config": RECIPE}]},
     "unknown trainer 'NoSuchTrainer'; registered trainers: "),
    ({"shots": [-4]}, "shots must be 0 (zero-shot) or more, got [-4]"),
    ({"methods": [{"name": "TaskRes", "shots": [2, -1]}]}, "shots must be 0 (zero-shot) or more"),
])
def test_study_plan_refuses_unknown_trainers_and_negative_shots(fields, message, tmp_path, capsys):
    path = write_study(tmp_path / "s.yaml", output=str(tmp_path / "out"), **fields)
    assert study.main(["plan", path, "--nominal"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if "trainer" in message:
        assert "TaskRes" in err and "CoOp" in err  # the registered ones are named


# ---- config files that are code ---------------------------------------------------------------
def evil_config(tmp_path):
    marker = tmp_path / "EXECUTED"
    path = tmp_path / "evil.py"
    path.write_text(f"open({str(marker)!r}, 'w').write('ran')\ncfg = None\n")
    return str(path), marker


def test_a_python_config_file_is_refused_unread(data_root, tiny_clip_path, tmp_path, capsys):
    evil, marker = evil_config(tmp_path)
    argv = args(data_root, str(tmp_path / "run"), tiny_clip_path)
    argv[argv.index(RECIPE)] = evil
    assert "is not a .yaml or .yml file" in refused(argv, capsys)
    argv = args(data_root, str(tmp_path / "run"), tiny_clip_path)
    argv[argv.index("configs/datasets/eurosat.yaml")] = evil
    assert "dataset config file" in refused(argv, capsys)
    assert not marker.exists()


def test_a_study_naming_a_python_config_is_refused_at_plan_time(tmp_path, capsys):
    evil, marker = evil_config(tmp_path)
    path = write_study(tmp_path / "s.yaml", output=str(tmp_path / "out"),
                       methods=[{"name": "Evil", "trainer": "TaskRes", "config": evil}])
    assert study.main(["plan", path, "--nominal"]) == 2
    err = capsys.readouterr().err
    assert "is not a .yaml or .yml file" in err and "Traceback" not in err
    assert not marker.exists()


# ---- a lost run record ------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["deleted", "corrupted", "not a mapping"])
def test_a_run_without_a_readable_record_is_refused(damage, finished, data_root, tiny_clip_path, tmp_path, capsys):
    import shutil

    out = str(tmp_path / "run")
    shutil.copytree(finished, out)
    record = os.path.join(out, "run_config.json")
    if damage == "deleted":
        os.remove(record)
    else:
        with open(record, "w") as f:
            f.write('{"OPTIM.LR": 0.0' if damage == "corrupted" else "[1, 2]")
    before = results(out)
    other = args(data_root, out, tiny_clip_path, "OPTIM.LR", 0.5, "DATASET.NUM_SHOTS", 1)
    err = refused(other, capsys)
    assert "run_config.json" in err and "--overwrite" in err
    assert ("is missing" if damage == "deleted" else "not a mapping" if damage == "not a mapping"
            else "cannot be read") in err
    assert results(out) == before  # not re-scored
    assert train.main(other + ["--overwrite"]) == 0
    assert results(out)["num_shots"] == 1 and results(out)["config"]["OPTIM"]["LR"] == 0.5
    assert json.load(open(record))["OPTIM.LR"] == 0.5


# ---- evaluation -------------------------------------------------------------------------------
def test_a_checkpoint_of_other_classes_only_is_refused(data_root, tiny_clip_path, tmp_path, capsys):
    """TaskRes trained on DTD, evaluated on EuroSAT: no class in common, so every per-class row
    would be the zero-shot one and the score zero-shot CLIP's, written as TaskRes."""
    dtd = str(tmp_path / "dtd")
    assert train.main(args(data_root, dtd, tiny_clip_path, dataset="dtd")) == 0
    err = refused(args(data_root, str(tmp_path / "eval"), tiny_clip_path, "--eval-only", "--model-dir", dtd), capsys)
    assert "trained on classes none of which EuroSAT has" in err and "text_feature_residuals" in err
    assert not os.path.exists(os.path.join(str(tmp_path / "eval"), "results.json"))


def test_a_checkpoint_holding_nan_is_refused_naming_its_module(finished, data_root, tiny_clip_path, tmp_path, capsys):
    broken = str(tmp_path / "broken")
    os.makedirs(os.path.join(broken, "prompt_learner"))
    state = torch.load(os.path.join(finished, "prompt_learner", "model.pth.tar-2"), weights_only=True)
    state["state_dict"]["text_feature_residuals"].fill_(float("nan"))
    torch.save(state, os.path.join(broken, "prompt_learner", "model.pth.tar-2"))
    err = refused(args(data_root, str(tmp_path / "eval"), tiny_clip_path, "--eval-only", "--model-dir", broken,
                       "--load-epoch", 2), capsys)
    assert "prompt_learner holds NaN or infinite values in text_feature_residuals" in err


def test_nan_logits_are_an_error_not_a_score():
    evaluator = Classification()
    logits = torch.randn(4, 10)
    evaluator.process(logits, torch.arange(4))
    logits[1, 3] = float("nan")
    evaluator.process(logits, torch.arange(4))
    with pytest.raises(UserError, match="1 of 8 evaluated images got NaN or infinite logits"):
        evaluator.evaluate()


def test_eval_only_of_an_unfinished_run_says_so_and_records_it(finished, data_root, tiny_clip_path, tmp_path,
                                                              monkeypatch, capsys):
    part = str(tmp_path / "part")
    run_killed(args(data_root, part, tiny_clip_path, "OPTIM.MAX_EPOCH", 3), 1, monkeypatch)
    evaluated = str(tmp_path / "eval")
    capsys.readouterr()
    assert train.main(args(data_root, evaluated, tiny_clip_path, "OPTIM.MAX_EPOCH", 3, "--eval-only",
                           "--model-dir", part)) == 0
    assert f"{part} is an unfinished run (it stopped after epoch 1" in capsys.readouterr().out
    assert results(evaluated)["finished"] is False and results(evaluated)["epoch"] == 1
    # A finished run's model is recorded as such, and so is a training run's own result.
    again = str(tmp_path / "eval_finished")
    assert train.main(args(data_root, again, tiny_clip_path, "--eval-only", "--model-dir", finished)) == 0
    assert results(again)["finished"] is True and results(finished)["finished"] is True
