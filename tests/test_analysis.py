"""analysis/: run discovery, TaskRes checkpoint magnitudes, the transfer-difficulty study and the
few-shot curves, on synthetic run folders with known values."""
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from analysis import curves, difficulty
from analysis.runs import (find_checkpoint, find_runs, load_taskres, read_run, residual_magnitudes,
                           zero_shot_accuracies)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASS_NAMES = {"dtd": "DescribableTextures", "eurosat": "EuroSAT", "oxford_flowers": "OxfordFlowers",
               "caltech101": "Caltech101", "imagenetv2": "ImageNetV2"}
RESULT_LOG = "Finish training\nDeploy the last-epoch model\nEvaluate on the *test* set\n=> result\n" \
             "* total: 100\n* correct: 50\n* accuracy: {acc:.1f}%\n* error: {err:.1f}%\n* macro_f1: 40.0%\n"


def taskres_dir(root, dataset, shots, seed, base="regular", alpha=0.5, cfg="adam_lr2e-3_B256_ep200"):
    return root / dataset / "TaskRes" / f"{cfg}_{shots}shots" / f"base_{base}_alpha{alpha}" / f"seed{seed}"


def write_results(folder, acc, trainer="TaskRes", dataset="dtd", shots=16, seed=1):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.txt").write_text(RESULT_LOG.format(acc=acc, err=100 - acc))
    (folder / "results.json").write_text(json.dumps({
        "total": 100, "correct": 50, "accuracy": acc, "error": 100 - acc, "macro_f1": 40.0, "split": "test",
        "trainer": trainer, "dataset": CLASS_NAMES.get(dataset, dataset), "num_shots": shots, "seed": seed,
        "backbone": "RN50", "epoch": 200}))


def write_checkpoint(folder, base, residual, epoch=200, pointer=True):
    pl = folder / "prompt_learner"
    pl.mkdir(parents=True, exist_ok=True)
    state = {"state_dict": {"base_text_features": base, "text_feature_residuals": residual}, "epoch": epoch,
             "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros_like(residual)}},
                           "param_groups": [{"lr": 0.002, "params": [0]}]},
             "scheduler": {"last_epoch": epoch, "base_lrs": [0.002]}, "val_result": None}
    torch.save(state, pl / f"model.pth.tar-{epoch}")
    if pointer:
        (pl / "checkpoint").write_text(f"model.pth.tar-{epoch}\n")


def rows_with_norms(norms, dim=8, shift=0):
    """[K, dim] rows with the given L2 norms (each along one rotating unit direction)."""
    out = torch.zeros(len(norms), dim)
    for k, n in enumerate(norms):
        out[k, (k + shift) % dim] = n
    return out


def png_ok(path):
    data = open(path, "rb").read()
    return data[:8] == PNG_MAGIC and len(data) > 1000


def no_temp_files(folder):
    return not [n for n in os.listdir(folder) if n.startswith(".")]


# ---------------------------------------------------------------- runs.py


def test_read_run_from_results_and_path(tmp_path):
    run_folder = taskres_dir(tmp_path, "dtd", 16, 2, base="enhanced", alpha=0.5)
    write_results(run_folder, 61.25, seed=2)
    run = read_run(run_folder)
    assert (run.trainer, run.dataset, run.shots, run.seed) == ("TaskRes", "dtd", 16, 2)
    assert (run.base, run.alpha, run.config, run.backbone) == ("enhanced", 0.5, "adam_lr2e-3_B256_ep200", "RN50")
    assert run.accuracy == 61.25 and run.source.endswith("results.json")
    assert run.method() == "TaskRes (enhanced base)" and run.method(with_alpha=True) == "TaskRes (enhanced base), α=0.5"


def test_read_run_reference_log_only(tmp_path):
    folder = tmp_path / "output" / "FINAL" / "debug" / "caltech101" / "adam_lr2e-3_B256_ep200_16shots" / "seed1"
    folder.mkdir(parents=True)
    (folder / "log.txt").write_text(
        "Loading trainer: TaskRes\nLoading dataset: Caltech101\nLoading CLIP (backbone: RN50)\n"
        "Building custom CLIP\n>> Use regular base!\n>> DCT scale factor:  0.5\nepoch [200/200] batch [1/1]\n"
        "* accuracy: 12.0%\n" + RESULT_LOG.format(acc=88.4, err=11.6))
    run = read_run(folder)
    assert (run.trainer, run.dataset, run.shots, run.seed) == ("TaskRes", "caltech101", 16, 1)
    assert (run.base, run.alpha, run.backbone, run.config) == ("regular", 0.5, "RN50", "adam_lr2e-3_B256_ep200")
    assert run.accuracy == pytest.approx(88.4) and run.source.endswith("log.txt")


def test_find_runs_skips_unfinished_and_reads_newest_log(tmp_path):
    exp = tmp_path / "eurosat" / "TaskRes" / "adam_lr2e-3_B256_ep100_4shots" / "base_regular_alpha0.5"
    (exp / "seed1").mkdir(parents=True)
    (exp / "seed1" / "log.txt").write_text("epoch [3/100]\n")  # killed
    (exp / "seed2").mkdir()
    (exp / "seed2" / "log.txt").write_text("epoch [3/100]\n")
    (exp / "seed2" / "log.txt-2024-01-01-00-00-00").write_text(RESULT_LOG.format(acc=70.0, err=30.0))
    (exp / "seed3").mkdir()
    (exp / "seed3" / "results.json").write_text("{not json")
    (exp / "seed3" / "log.txt").write_text(RESULT_LOG.format(acc=72.5, err=27.5))
    zs = tmp_path / "ZeroshotCLIP2" / "rn50" / "eurosat"
    write_results(zs, 37.5, trainer="ZeroshotCLIP2", dataset="eurosat", shots=-1, seed=-1)
    runs = find_runs([tmp_path])
    assert [(r.trainer, r.shots, r.seed, r.accuracy) for r in runs] == [
        ("ZeroshotCLIP2", None, None, 37.5), ("TaskRes", 4, 2, 70.0), ("TaskRes", 4, 3, 72.5)]
    assert runs[0].is_zero_shot and runs[0].config == "rn50" and runs[0].dataset == "eurosat"
    assert zero_shot_accuracies(runs) == {"eurosat": ("ZeroshotCLIP2", 37.5)}
    with pytest.raises(FileNotFoundError):
        find_runs([tmp_path / "nowhere"])


def test_dg_evaluation_run_has_no_shots(tmp_path):
    folder = tmp_path / "imagenetv2" / "TaskRes" / "generalization_rn50" / "base_regular_alpha0.5" / "seed3"
    write_results(folder, 55.0, dataset="imagenetv2", shots=-1, seed=3)
    run = read_run(folder)
    assert (run.dataset, run.shots, run.seed, run.base, run.alpha, run.config) == (
        "imagenetv2", None, 3, "regular", 0.5, "generalization_rn50")


def test_checkpoint_and_magnitudes(tmp_path):
    base = rows_with_norms([2.0, 2.0, 4.0, 4.0])
    residual = rows_with_norms([1.0, 2.0, 3.0, 4.0], shift=3)
    folder = tmp_path / "run"
    write_checkpoint(folder, base, residual, epoch=100)
    write_checkpoint(folder, base, 2 * residual, epoch=200, pointer=False)
    # the pointer names epoch 100
    assert find_checkpoint(folder) == str(folder / "prompt_learner" / "model.pth.tar-100")
    weights = load_taskres(folder)
    assert weights.num_classes == 4 and weights.epoch == 100
    m = residual_magnitudes(weights, 0.5)
    assert m["absolute"] == pytest.approx(0.5 * (1 + 2 + 3 + 4) / 4)
    assert m["relative"] == pytest.approx(0.5 * (1 / 2 + 2 / 2 + 3 / 4 + 4 / 4) / 4)
    # a pointer to another file (the rolling resume snapshot): the largest epoch is used
    (folder / "prompt_learner" / "checkpoint").write_text("resume.pth.tar\n")
    assert find_checkpoint(folder).endswith("model.pth.tar-200")
    assert residual_magnitudes(load_taskres(folder), 1.0)["absolute"] == pytest.approx(5.0)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(ValueError, match="not a TaskRes checkpoint"):
        load_taskres(other)
    with pytest.raises(FileNotFoundError):
        load_taskres(tmp_path / "empty_dir_that_is_missing")


# ---------------------------------------------------------------- difficulty


# dataset -> (residual norms per class, base norms per class, alpha, zero-shot accuracy %)
DIFFICULTY = {
    "dtd": ([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 4.0, 4.0], 0.5, 40.0),
    "eurosat": ([2.0] * 5, [4.0] * 5, 0.5, 50.0),
    "oxford_flowers": ([k / 8 for k in range(1, 11)], [1.0] * 10, 1.0, 64.0),  # exact in fp32
}
SEED_SCALES = {1: 1.0, 2: 2.0, 3: 4.0}


@pytest.fixture
def difficulty_runs(tmp_path):
    runs = tmp_path / "output"
    for dataset, (res, base, alpha, _) in DIFFICULTY.items():
        for seed, s in SEED_SCALES.items():
            folder = taskres_dir(runs, dataset, 16, seed, alpha=alpha)
            write_results(folder, 70.0 + seed, dataset=dataset, seed=seed)
            write_checkpoint(folder, rows_with_norms(base), s * rows_with_norms(res, shift=1))
    # runs that must not count: enhanced base, other shots, a DG evaluation (no checkpoint)
    enhanced = taskres_dir(runs, "dtd", 16, 1, base="enhanced")
    write_results(enhanced, 75.0)
    write_checkpoint(enhanced, rows_with_norms([1.0] * 4), rows_with_norms([100.0] * 4))
    eight = taskres_dir(runs, "dtd", 8, 1)
    write_results(eight, 65.0, shots=8)
    write_checkpoint(eight, rows_with_norms([1.0] * 4), rows_with_norms([100.0] * 4))
    write_results(runs / "imagenetv2" / "TaskRes" / "generalization_rn50" / "base_regular_alpha0.5" / "seed1",
                  50.0, dataset="imagenetv2", shots=-1)
    zs = tmp_path / "zs"
    for dataset, (*_, acc) in DIFFICULTY.items():
        write_results(zs / "ZeroshotCLIP2" / "rn50" / dataset, acc, "ZeroshotCLIP2", dataset, -1, -1)
    write_results(zs / "ZeroshotCLIP" / "rn50" / "dtd", 10.0, "ZeroshotCLIP", "dtd", -1, -1)
    return runs, zs


def expected_difficulty():
    rows = {}
    scales = np.array(list(SEED_SCALES.values()))
    for dataset, (res, base, alpha, zs) in DIFFICULTY.items():
        k = len(res)
        absolute = alpha * scales * np.mean(res)
        relative = alpha * scales * np.mean(np.array(res) / np.array(base))
        rows[dataset] = {"num_classes": k, "chance": 1 / k, "transfer_difficulty": (1 / k) / (zs / 100),
                         "zeroshot_accuracy": zs, "residual_norm_mean": absolute.mean(),
                         "residual_norm_std": absolute.std(), "relative_residual_norm_mean": relative.mean(),
                         "relative_residual_norm_std": relative.std(), "taskres_accuracy_mean": 72.0,
                         "taskres_accuracy_std": np.std([71.0, 72.0, 73.0])}
    return rows


def test_difficulty_csv_matches_closed_forms(difficulty_runs, tmp_path, capsys):
    runs, zs = difficulty_runs
    out, table = tmp_path / "fig" / "difficulty.png", tmp_path / "fig" / "difficulty.csv"
    rc = difficulty.main([str(runs), "--zeroshot", str(zs), "--out", str(out), "--csv", str(table)])
    assert rc == 0, capsys.readouterr().err
    assert png_ok(out) and no_temp_files(out.parent)
    with open(table) as f:
        got = {row["dataset"]: row for row in csv.DictReader(f)}
    assert list(got) == ["dtd", "eurosat", "oxford_flowers"]
    expected = expected_difficulty()
    for dataset, exp in expected.items():
        row = got[dataset]
        assert row["n_runs"] == "3" and row["seeds"] == "1 2 3" and row["shots"] == "16"
        assert row["zeroshot_trainer"] == "ZeroshotCLIP2" and row["base"] == "regular"
        assert int(row["num_classes"]) == exp.pop("num_classes")
        for key, value in exp.items():
            assert float(row[key]) == pytest.approx(value, rel=1e-12), (dataset, key)
    x = [expected[d]["transfer_difficulty"] for d in expected]
    r_abs = np.corrcoef(x, [expected[d]["residual_norm_mean"] for d in expected])[0, 1]
    r_rel = np.corrcoef(x, [expected[d]["relative_residual_norm_mean"] for d in expected])[0, 1]
    assert difficulty.pearson(x, [expected[d]["residual_norm_mean"] for d in expected]) == pytest.approx(r_abs)
    stdout = capsys.readouterr().out
    assert f"Pearson r (absolute magnitude) = {r_abs:.4f}; (relative) = {r_rel:.4f}" in stdout


def test_difficulty_on_one_dataset_says_why_r_is_undefined(difficulty_runs, tmp_path, capsys):
    runs, zs = difficulty_runs
    assert difficulty.main([str(runs / "eurosat"), "--zeroshot", str(zs), "--out", str(tmp_path / "one.png")]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("Pearson r")][0]
    assert line == ("Pearson r (absolute magnitude) = nan; (relative) = nan (nan: a correlation across datasets "
                    "needs at least two, and only 1 has both residual checkpoints and a zero-shot result; add the "
                    "runs of other datasets to the roots)")


def test_difficulty_options(difficulty_runs, tmp_path, capsys):
    runs, zs = difficulty_runs
    out = tmp_path / "rel.png"
    table = tmp_path / "rel.csv"
    assert difficulty.main([str(runs), "--zeroshot", str(zs), "--out", str(out), "--csv", str(table),
                            "--metric", "relative", "--zs-trainer", "ZeroshotCLIP"]) == 0
    assert png_ok(out)
    with open(table) as f:
        (row,) = list(csv.DictReader(f))  # only dtd has a ZeroshotCLIP result
    assert row["dataset"] == "dtd" and float(row["zeroshot_accuracy"]) == 10.0
    assert float(row["transfer_difficulty"]) == pytest.approx(0.25 / 0.10)
    # 8 shots: the single dtd run
    assert difficulty.main([str(runs), "--zeroshot", str(zs), "--out", str(out), "--csv", str(table),
                            "--shots", "8"]) == 0
    with open(table) as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["residual_norm_mean"]) == pytest.approx(50.0)
    # enhanced base at 16 shots
    assert difficulty.main([str(runs), "--zeroshot", str(zs), "--out", str(out), "--csv", str(table),
                            "--base", "enhanced"]) == 0
    with open(table) as f:
        (row,) = list(csv.DictReader(f))
    assert row["base"] == "enhanced" and float(row["relative_residual_norm_mean"]) == pytest.approx(50.0)
    capsys.readouterr()
    # no zero-shot runs
    assert difficulty.main([str(runs), "--out", str(out)]) == 1
    assert "no zero-shot runs" in capsys.readouterr().err
    # two alphas for one dataset: ask to choose
    extra = taskres_dir(runs, "eurosat", 16, 1, alpha=1.0)
    write_results(extra, 70.0, dataset="eurosat")
    write_checkpoint(extra, rows_with_norms([1.0] * 5), rows_with_norms([1.0] * 5))
    assert difficulty.main([str(runs), "--zeroshot", str(zs), "--out", str(out)]) == 1
    assert "choose one with --base, --alpha" in capsys.readouterr().err
    assert difficulty.main([str(runs), "--zeroshot", str(zs), "--out", str(out), "--csv", str(table),
                            "--alpha", "1.0"]) == 0
    with open(table) as f:
        rows = list(csv.DictReader(f))
    assert [r["dataset"] for r in rows] == ["eurosat", "oxford_flowers"]


@pytest.mark.slow  # a fresh interpreter importing torch and matplotlib
def test_difficulty_module_entry_point(difficulty_runs, tmp_path):
    runs, zs = difficulty_runs
    out = tmp_path / "cli.png"
    r = subprocess.run([sys.executable, "-m", "analysis.difficulty", str(runs), "--zeroshot", str(zs),
                        "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert png_ok(out) and "Pearson r" in r.stdout


# ---------------------------------------------------------------- curves

SHOTS = (1, 2, 4, 8, 16)
OFFSETS = {"dtd": {1: -1.0, 2: 0.0, 3: 2.0}, "eurosat": {1: 0.0, 2: 0.0, 3: 3.0}}
BASE_ACC = {"dtd": 50.0, "eurosat": 70.0}


def accuracy(dataset, base, shots, seed):
    return BASE_ACC[dataset] + 2 * math.log2(shots) + (5.0 if base == "enhanced" else 0.0) + OFFSETS[dataset][seed]


@pytest.fixture
def curve_runs(tmp_path):
    root = tmp_path / "output"
    for dataset in OFFSETS:
        for base in ("regular", "enhanced"):
            for shots in SHOTS:
                if (dataset, base, shots) == ("eurosat", "enhanced", 16):
                    continue  # not run yet: no average for that point
                for seed in (1, 2, 3):
                    write_results(taskres_dir(root, dataset, shots, seed, base=base),
                                  accuracy(dataset, base, shots, seed), dataset=dataset, shots=shots, seed=seed)
        write_results(root / "ZeroshotCLIP2" / "rn50" / dataset, 30.0, "ZeroshotCLIP2", dataset, -1, -1)
    return root


def read_csv(path):
    with open(path) as f:
        return {(r["dataset"], r["method"], int(r["shots"])): r for r in csv.DictReader(f)}


def test_curves_all_panels_and_average(curve_runs, tmp_path, capsys):
    out, table = tmp_path / "curves.png", tmp_path / "curves.csv"
    assert curves.main([str(curve_runs), "--dataset", "all", "--out", str(out), "--csv", str(table)]) == 0
    assert png_ok(out) and no_temp_files(tmp_path)
    got = read_csv(table)
    methods = {"regular": "TaskRes", "enhanced": "TaskRes (enhanced base)"}
    for dataset in OFFSETS:
        offsets = list(OFFSETS[dataset].values())
        for base, method in methods.items():
            for shots in SHOTS:
                key = (dataset, method, shots)
                if (dataset, base, shots) == ("eurosat", "enhanced", 16):
                    assert key not in got
                    continue
                accs = [accuracy(dataset, base, shots, s) for s in (1, 2, 3)]
                assert float(got[key]["mean"]) == pytest.approx(np.mean(accs), rel=1e-12)
                assert float(got[key]["std"]) == pytest.approx(np.std(offsets), rel=1e-12)
                assert got[key]["n"] == "3" and got[key]["seeds"] == "1 2 3"
    per_seed = [np.mean([OFFSETS[d][s] for d in OFFSETS]) for s in (1, 2, 3)]
    for base, method in methods.items():
        for shots in SHOTS:
            key = ("average", method, shots)
            if (base, shots) == ("enhanced", 16):
                assert key not in got
                continue
            means = [np.mean([accuracy(d, base, shots, s) for s in (1, 2, 3)]) for d in OFFSETS]
            assert float(got[key]["mean"]) == pytest.approx(np.mean(means), rel=1e-12)
            assert float(got[key]["std"]) == pytest.approx(np.std(per_seed), rel=1e-12)
    assert "no average for TaskRes (enhanced base) at 16 shots: missing eurosat" in capsys.readouterr().err


def test_curves_single_dataset_and_average_only(curve_runs, tmp_path):
    out, table = tmp_path / "dtd.png", tmp_path / "dtd.csv"
    assert curves.main([str(curve_runs), "--dataset", "DTD", "--out", str(out), "--csv", str(table)]) == 0
    assert png_ok(out)
    got = read_csv(table)
    assert {k[0] for k in got} == {"dtd"} and len(got) == 10
    assert curves.main([str(curve_runs), "--dataset", "average", "--out", str(out), "--csv", str(table)]) == 0
    got = read_csv(table)
    assert {k[0] for k in got} == {"average"} and len(got) == 9
    assert curves.main([str(curve_runs), "--dataset", "all", "--out", str(out), "--csv", str(table),
                        "--method", "TaskRes"]) == 0
    assert {k[1] for k in read_csv(table)} == {"TaskRes"}


def test_curves_errors(curve_runs, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert curves.main([str(curve_runs), "--dataset", "sun397", "--out", str(out)]) == 1
    assert "no few-shot runs of dataset 'sun397'" in capsys.readouterr().err
    # the same seed twice under one label (two alphas): told apart by alpha, as compare does
    write_results(taskres_dir(curve_runs, "dtd", 1, 1, alpha=1.0), 10.0, dataset="dtd", shots=1, seed=1)
    table = tmp_path / "a.csv"
    assert curves.main([str(curve_runs), "--dataset", "dtd", "--out", str(out), "--csv", str(table)]) == 0
    got = read_csv(table)
    assert float(got[("dtd", "TaskRes [α=1.0]", 1)]["mean"]) == 10.0
    assert float(got[("dtd", "TaskRes [α=0.5]", 1)]["mean"]) == pytest.approx(np.mean(
        [accuracy("dtd", "regular", 1, s) for s in (1, 2, 3)]))
    assert curves.main([str(curve_runs), "--dataset", "dtd", "--by-alpha", "--out", str(out), "--csv", str(table)]) == 0
    got = read_csv(table)
    assert float(got[("dtd", "TaskRes, α=1", 1)]["mean"]) == 10.0
    assert float(got[("dtd", "TaskRes, α=0.5", 1)]["mean"]) == pytest.approx(np.mean(
        [accuracy("dtd", "regular", 1, s) for s in (1, 2, 3)]))
    assert not os.path.exists(tmp_path / "nothing.png")
    assert curves.main([str(tmp_path / "zs_only_missing"), "--out", str(tmp_path / "nothing.png")]) == 1
