"""parse_test_res.py on synthetic run folders with Dassl-style logs."""
import json
import math
import os

import pytest

import parse_test_res as ptr

HEADER = """\
***************
** Arguments **
***************
backbone: 
config_file: configs/trainers/TaskRes/adam_lr2e-3_B256_ep200.yaml
dataset_config_file: configs/datasets/caltech101.yaml
enhanced_base: none
eval_only: {eval_only}
opts: ['DATASET.NUM_SHOTS', '16', 'TRAINER.TaskRes.RESIDUAL_SCALE', '0.5']
output_dir: {out}
root: /data/datasets
seed: {seed}
trainer: TaskRes
************
** Config **
************
DATALOADER:
  NUM_WORKERS: 8
  TEST:
    BATCH_SIZE: 500
  TRAIN_X:
    BATCH_SIZE: 256
OPTIM:
  LR: 0.002
  MAX_EPOCH: 200
  WARMUP_CONS_LR: 1e-05
Collecting env info ...
** System info **
PyTorch version: 2.3.0
Loading trainer: TaskRes
Loading dataset: Caltech101
Reading split from /data/datasets/caltech-101/split_zhou_Caltech101.json
Loading preprocessed few-shot data from /data/datasets/caltech-101/split_fewshot/shot_16-seed_{seed}.pkl
Building transform_train
+ random resized crop (size=(224, 224), scale=(0.08, 1.0))
+ random flip
+ to torch tensor of range [0, 1]
+ normalization (mean=[0.48145466, 0.4578275, 0.40821073], std=[0.26862954, 0.26130258, 0.27577711])
Loading CLIP (backbone: RN50)
Building custom CLIP
>> Use regular base!
>> DCT scale factor:  0.5
Turning off gradients in both the image and the text encoder
Loading evaluator: Classification
"""

TRAINING = """\
Initialize tensorboard (log_dir={out}/tensorboard)
epoch [1/200] batch [5/7] time 0.091 (0.410) data 0.000 (0.231) loss 1.2031 (1.4019) acc 65.6250 (61.2500) lr 1.0000e-05 eta 0:24:31
epoch [1/200] batch [7/7] time 0.090 (0.322) data 0.000 (0.166) loss 1.1002 (1.3012) acc 68.7500 (63.1000) lr 1.0000e-05 eta 0:20:02
=> result
* total: 200
* correct: 100
* accuracy: 50.0%
* error: 50.0%
* macro_f1: 49.0%
epoch [200/200] batch [7/7] time 0.089 (0.091) data 0.000 (0.001) loss 0.3010 (0.2987) acc 93.7500 (94.1000) lr 1.2337e-07 eta 0:00:00
Checkpoint saved to {out}/prompt_learner/model.pth.tar-200
"""

RESULT = """\
Deploy the last-epoch model
Evaluate on the *test* set
=> result
* total: 1,000
* correct: {correct:,}
* accuracy: {acc:.1f}%
* error: {err:.1f}%
* macro_f1: {f1:.1f}%
Elapsed: 0:12:34
"""


def train_log(out, seed, acc, f1=None, finished=True):
    text = HEADER.format(out=out, seed=seed, eval_only=False) + TRAINING.format(out=out)
    if finished:
        text += "Finish training\n" + RESULT.format(
            correct=round(acc * 10), acc=acc, err=100 - acc, f1=acc - 0.2 if f1 is None else f1)
    return text


def eval_log(out, seed, acc):
    text = HEADER.format(out=out, seed=seed, eval_only=True)
    text += "Loading weights to prompt_learner from \"m/seed1/prompt_learner/model.pth.tar-200\" (epoch = 200)\n"
    return text + RESULT.format(correct=round(acc * 10), acc=acc, err=100 - acc, f1=acc - 0.2)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def make_exp(root, accs, name="log.txt", maker=train_log):
    os.makedirs(root, exist_ok=True)
    for i, acc in enumerate(accs, start=1):
        d = os.path.join(root, f"seed{i}")
        write(os.path.join(d, name), maker(d, i, acc))
    return root


def mean_std(values):
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def run(capsys, *argv):
    code = ptr.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


ACCS = [89.1, 88.5, 90.0]  # mean 89.2, population std sqrt(0.38) = 0.6164


def test_three_seeds_exact_output(tmp_path, capsys):
    exp = make_exp(str(tmp_path / "exp"), ACCS)
    code, out, err = run(capsys, exp)
    assert code == 0
    assert err == []
    m, s = mean_std(ACCS)
    assert (f"{m:.2f}", f"{s:.2f}") == ("89.20", "0.62")
    assert out == [
        f"Parsing files in {exp}",
        f"file: {exp}/seed1/log.txt. accuracy: 89.10%. ",
        f"file: {exp}/seed2/log.txt. accuracy: 88.50%. ",
        f"file: {exp}/seed3/log.txt. accuracy: 90.00%. ",
        "===",
        f"Summary of directory: {exp}",
        "* accuracy: 89.20% +- 0.62%",
        "===",
    ]


def test_ci95(tmp_path, capsys):
    exp = make_exp(str(tmp_path / "exp"), ACCS)
    code, out, _ = run(capsys, exp, "--ci95")
    assert code == 0
    _, s = mean_std(ACCS)
    ci = 1.96 * s / math.sqrt(3)
    assert f"{ci:.2f}" == "0.70"
    assert out[-2] == "* accuracy: 89.20% +- 0.70%"


def test_keyword_macro_f1(tmp_path, capsys):
    exp = make_exp(str(tmp_path / "exp"), ACCS)
    code, out, _ = run(capsys, exp, "--keyword", "macro_f1")
    assert code == 0
    f1 = [a - 0.2 for a in ACCS]
    m, s = mean_std(f1)
    assert out[1] == f"file: {exp}/seed1/log.txt. macro_f1: 88.90%. "
    assert out[-2] == f"* macro_f1: {m:.2f}% +- {s:.2f}%" == "* macro_f1: 89.00% +- 0.62%"


def test_keyword_error(tmp_path, capsys):
    exp = make_exp(str(tmp_path / "exp"), ACCS)
    code, out, _ = run(capsys, exp, "--keyword", "error")
    assert code == 0
    assert out[-2] == "* error: 10.80% +- 0.62%"


def test_only_values_after_end_signal_and_last_match(tmp_path, capsys):
    # The decoy result block before "Finish training" (50.0%) must be ignored; after the signal
    # the last match wins.
    exp = str(tmp_path / "exp")
    d = os.path.join(exp, "seed1")
    text = train_log(d, 1, 70.0) + "=> result\n* accuracy: 71.5%\n"
    write(os.path.join(d, "log.txt"), text)
    code, out, _ = run(capsys, exp)
    assert code == 0
    assert out[1] == f"file: {d}/log.txt. accuracy: 71.50%. "
    assert out[-2] == "* accuracy: 71.50% +- 0.00%"


def test_test_log_for_eval_only_runs(tmp_path, capsys):
    exp = make_exp(str(tmp_path / "dg"), [60.2, 61.0, 60.6], maker=eval_log)
    code, out, err = run(capsys, exp)
    assert code == 1
    assert any("--test-log" in line for line in err)
    assert err[0] == f'skip {exp}/seed1: no "* accuracy:" result after "Finish training" in log.txt'

    code, out, err = run(capsys, exp, "--test-log")
    assert code == 0
    assert err == []
    m, s = mean_std([60.2, 61.0, 60.6])
    assert out[1:4] == [
        f"file: {exp}/seed1/log.txt. accuracy: 60.20%. ",
        f"file: {exp}/seed2/log.txt. accuracy: 61.00%. ",
        f"file: {exp}/seed3/log.txt. accuracy: 60.60%. ",
    ]
    assert out[-2] == f"* accuracy: {m:.2f}% +- {s:.2f}%" == "* accuracy: 60.60% +- 0.33%"


def test_multi_exp(tmp_path, capsys):
    root = tmp_path / "caltech101"
    a = make_exp(str(root / "base_enhanced_alpha0.5"), [90.0, 90.4, 90.2])
    b = make_exp(str(root / "base_regular_alpha0.5"), ACCS)
    code, out, err = run(capsys, root, "--multi-exp")
    assert code == 0
    assert err == []
    assert out == [
        f"Parsing files in {a}",
        f"file: {a}/seed1/log.txt. accuracy: 90.00%. ",
        f"file: {a}/seed2/log.txt. accuracy: 90.40%. ",
        f"file: {a}/seed3/log.txt. accuracy: 90.20%. ",
        "===",
        f"Summary of directory: {a}",
        "* accuracy: 90.20% +- 0.16%",
        "===",
        f"Parsing files in {b}",
        f"file: {b}/seed1/log.txt. accuracy: 89.10%. ",
        f"file: {b}/seed2/log.txt. accuracy: 88.50%. ",
        f"file: {b}/seed3/log.txt. accuracy: 90.00%. ",
        "===",
        f"Summary of directory: {b}",
        "* accuracy: 89.20% +- 0.62%",
        "===",
        "Average performance",
        "* accuracy: 89.70%",
    ]


def test_multi_exp_skips_experiment_without_results(tmp_path, capsys):
    root = tmp_path / "root"
    make_exp(str(root / "a"), [80.0, 82.0])
    os.makedirs(root / "b" / "seed1")
    code, out, err = run(capsys, root, "--multi-exp")
    assert code == 0
    assert f"skip experiment {root}/b: no results" in err
    assert out[-2:] == ["Average performance", "* accuracy: 81.00%"]


def test_missing_log_is_reported_not_fatal(tmp_path, capsys):
    exp = make_exp(str(tmp_path / "exp"), ACCS)
    os.makedirs(os.path.join(exp, "seed4", "tensorboard"))
    write(os.path.join(exp, "notes.txt"), "stray file\n")
    write(os.path.join(exp, ".hidden", "x"), "")
    code, out, err = run(capsys, exp)
    assert code == 0
    assert err == [f"skip {exp}/seed4: no log.txt"]
    assert out[-2] == "* accuracy: 89.20% +- 0.62%"


def test_unfinished_run_is_reported(tmp_path, capsys):
    exp = make_exp(str(tmp_path / "exp"), ACCS[:2])
    d = os.path.join(exp, "seed3")
    write(os.path.join(d, "log.txt"), train_log(d, 3, 0.0, finished=False))
    code, out, err = run(capsys, exp)
    assert code == 0
    assert err == [f'skip {d}: no "* accuracy:" result after "Finish training" in log.txt']
    m, s = mean_std(ACCS[:2])
    assert out[-2] == f"* accuracy: {m:.2f}% +- {s:.2f}%" == "* accuracy: 88.80% +- 0.30%"


def test_empty_dir_exits_nonzero(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run(capsys, empty)
    assert code == 1
    assert out == [f"Parsing files in {empty}"]
    assert err and err[-1].startswith(f"error: no results found in {empty}")


def test_run_dir_passed_instead_of_experiment(tmp_path, capsys):
    exp = make_exp(str(tmp_path / "exp"), ACCS)
    os.makedirs(os.path.join(exp, "seed1", "tensorboard"))
    code, _, err = run(capsys, os.path.join(exp, "seed1"))
    assert code == 1
    assert "looks like a single run" in err[-1]


def test_missing_directory(tmp_path, capsys):
    code, out, err = run(capsys, tmp_path / "nope")
    assert code == 2
    assert out == []
    assert err == [f"error: {tmp_path / 'nope'} is not a folder"]


def test_newest_timestamped_log_wins(tmp_path, capsys):
    exp = make_exp(str(tmp_path / "exp"), ACCS)
    d = os.path.join(exp, "seed1")
    # log.txt holds a stale result (89.1); two reruns wrote timestamped logs.
    write(os.path.join(d, "log.txt-2024-01-02-03-04-05"), train_log(d, 1, 91.0))
    write(os.path.join(d, "log.txt-2023-12-31-23-59-59"), train_log(d, 1, 95.0))
    # Make mtimes disagree with the names to show that the names decide.
    os.utime(os.path.join(d, "log.txt-2023-12-31-23-59-59"), (2e9, 2e9))
    code, out, _ = run(capsys, exp)
    assert code == 0
    assert out[1] == f"file: {d}/log.txt-2024-01-02-03-04-05. accuracy: 91.00%. "
    m, s = mean_std([91.0, 88.5, 90.0])
    assert out[-2] == f"* accuracy: {m:.2f}% +- {s:.2f}%"
    assert ptr.find_log(d).endswith("log.txt-2024-01-02-03-04-05")


def test_newest_log_without_result_is_not_replaced_by_stale_one(tmp_path, capsys):
    exp = make_exp(str(tmp_path / "exp"), ACCS)
    d = os.path.join(exp, "seed2")
    write(os.path.join(d, "log.txt-2024-05-06-07-08-09"), train_log(d, 2, 0.0, finished=False))
    code, out, err = run(capsys, exp)
    assert code == 0
    assert err == [
        f'skip {d}: no "* accuracy:" result after "Finish training" in log.txt-2024-05-06-07-08-09']
    assert len([line for line in out if line.startswith("file: ")]) == 2


def write_results_json(run_dir, acc, f1):
    write(os.path.join(run_dir, "results.json"),
          json.dumps({"accuracy": acc, "error": 100 - acc, "macro_f1": f1}))


def test_results_json_gives_full_precision(tmp_path, capsys):
    exp = make_exp(str(tmp_path / "exp"), ACCS)
    precise = [89.1234, 88.4567, 90.0444]
    for i, p in enumerate(precise, start=1):
        write_results_json(os.path.join(exp, f"seed{i}"), p, p - 0.2)
    code, out, err = run(capsys, exp)
    assert code == 0
    assert err == []
    m, s = mean_std(precise)
    assert out[1:4] == [
        f"file: {exp}/seed1/results.json. accuracy: 89.12%. ",
        f"file: {exp}/seed2/results.json. accuracy: 88.46%. ",
        f"file: {exp}/seed3/results.json. accuracy: 90.04%. ",
    ]
    assert out[-2] == f"* accuracy: {m:.2f}% +- {s:.2f}%" == "* accuracy: 89.21% +- 0.65%"

    # --from-log forces the one-decimal values of the logs.
    code, out, _ = run(capsys, exp, "--from-log")
    assert code == 0
    assert out[1] == f"file: {exp}/seed1/log.txt. accuracy: 89.10%. "
    assert out[-2] == "* accuracy: 89.20% +- 0.62%"

    # Other keywords come from results.json too.
    code, out, _ = run(capsys, exp, "--keyword", "macro_f1")
    m, s = mean_std([p - 0.2 for p in precise])
    assert out[-2] == f"* macro_f1: {m:.2f}% +- {s:.2f}%"


def test_results_json_from_another_run_is_ignored(tmp_path, capsys):
    exp = make_exp(str(tmp_path / "exp"), ACCS)
    d = os.path.join(exp, "seed1")
    write_results_json(d, 75.3, 75.0)  # does not round to the log's 89.1
    code, out, err = run(capsys, exp)
    assert code == 0
    assert out[1] == f"file: {d}/log.txt. accuracy: 89.10%. "
    assert len(err) == 1 and err[0].startswith("note: ") and "75.3" in err[0] and "89.1" in err[0]


def test_results_json_unreadable_falls_back_to_log(tmp_path, capsys):
    exp = make_exp(str(tmp_path / "exp"), ACCS)
    write(os.path.join(exp, "seed1", "results.json"), "{not json")
    code, out, err = run(capsys, exp)
    assert code == 0
    assert out[-2] == "* accuracy: 89.20% +- 0.62%"
    assert len(err) == 1 and "cannot read" in err[0]


def test_results_json_without_log_does_not_count(tmp_path, capsys):
    exp = str(tmp_path / "exp")
    write_results_json(os.path.join(exp, "seed1"), 80.0, 79.0)
    code, _, err = run(capsys, exp)
    assert code == 1
    assert err[0] == f"skip {exp}/seed1: no log.txt"


def test_table(tmp_path, capsys):
    root = tmp_path / "output"
    make_exp(str(root / "caltech101" / "TaskRes" / "cfg_16shots" / "base_regular_alpha0.5"), ACCS)
    make_exp(str(root / "dtd" / "TaskRes" / "cfg_16shots" / "base_regular_alpha0.5"), [70.0, 72.0])
    os.makedirs(root / "dtd" / "TaskRes" / "cfg_1shots" / "base_regular_alpha0.5" / "seed1")
    code, out, err = run(capsys, root, "--table")
    assert code == 0
    assert err == [f"skip {root}/dtd/TaskRes/cfg_1shots/base_regular_alpha0.5/seed1: no log.txt"]
    assert [line.split() for line in out] == [
        ["experiment", "n", "accuracy", "std", "selection"],
        ["caltech101/TaskRes/cfg_16shots/base_regular_alpha0.5", "3", "89.20", "0.62", "unknown"],
        ["dtd/TaskRes/cfg_16shots/base_regular_alpha0.5", "2", "71.00", "1.00", "unknown"],
    ]
    code, out, _ = run(capsys, root, "--table", "--ci95", "--keyword", "macro_f1")
    assert out[0].split() == ["experiment", "n", "macro_f1", "ci95", "selection"]
    assert out[1].split()[2:4] == ["89.00", f"{1.96 * mean_std(ACCS)[1] / math.sqrt(3):.2f}"]


def test_table_without_results(tmp_path, capsys):
    (tmp_path / "a" / "b").mkdir(parents=True)
    code, out, err = run(capsys, tmp_path, "--table")
    assert code == 1
    assert out == []
    assert err[-1].startswith("error: no experiment with results found")


def test_table_and_multi_exp_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ptr.main([str(tmp_path), "--table", "--multi-exp"])
    assert e.value.code == 2


def test_library_functions(tmp_path):
    exp = make_exp(str(tmp_path / "exp"), ACCS)
    run_ = ptr.parse_run(os.path.join(exp, "seed2"))
    assert run_.value == 88.5 and run_.source.endswith("seed2/log.txt")
    summary = ptr.collect(exp, keyword="accuracy")
    assert summary.n == 3
    assert summary.mean == pytest.approx(89.2)
    assert summary.spread == pytest.approx(math.sqrt(0.38))
    with pytest.raises(ptr.RunSkipped):
        ptr.parse_run(os.path.join(exp, "seed2"), test_log=False, keyword="top5")
    assert ptr.parse_log(os.path.join(exp, "seed1", "log.txt"), "accuracy", "=> result")[0] == 89.1
