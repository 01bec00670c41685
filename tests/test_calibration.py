"""Calibration metrics (engine.calibration) against a case computed by hand, in results.json and
the log; SaLS keeps every prediction and lowers the ECE of an over-confident classifier."""
import math

import pytest
import torch

from engine.calibration import CalibrationMeter, sals
from engine.evaluator import Classification
from runs import results, run

# Four samples, three classes; no probability sits on a bin edge (a multiple of 1/15).
PROBS = [[0.70, 0.25, 0.05],  # label 0: top-1 0.70 (bin 10), right
         [0.50, 0.35, 0.15],  # label 1: top-1 0.50 (bin 7), wrong
         [0.10, 0.15, 0.75],  # label 2: top-1 0.75 (bin 11), right
         [0.72, 0.18, 0.10]]  # label 1: top-1 0.72 (bin 10), wrong
LABELS = [0, 1, 2, 1]


def hand_case():
    return torch.tensor(PROBS, dtype=torch.float64).log(), torch.tensor(LABELS)


def test_metrics_equal_a_hand_computation():
    # ECE: bin 10 holds 0.70 (right) and 0.72 (wrong): |1 - 1.42|; bin 7: |0 - 0.50|; bin 11: |1 - 0.75|
    # -> (0.42 + 0.50 + 0.25) / 4 = 0.2925.
    # Class-wise, per class k the bins of p_k against [label == k]:
    #   class 0: 0.70, 0.72 (bin 10; one is class 0) -> 0.42; 0.50 -> 0.50; 0.10 -> 0.10; = 1.02 / 4
    #   class 1: 0.25 -> 0.25; 0.35 (class 1) -> 0.65; 0.15 and 0.18 (bin 2; one is class 1) -> 0.67; = 1.57 / 4
    #   class 2: 0.05 + 0.15 + |1 - 0.75| + 0.10 = 0.55 / 4
    #   mean (0.255 + 0.3925 + 0.1375) / 3 = 0.261666...
    meter = CalibrationMeter()
    meter.update(*hand_case())
    m = meter.result()
    assert m["ece"] == pytest.approx(29.25, abs=1e-9)
    assert m["classwise_ece"] == pytest.approx(100 * 0.785 / 3, abs=1e-9)
    assert m["confidence"] == pytest.approx(100 * 2.67 / 4, abs=1e-9)
    assert m["nll"] == pytest.approx(-(math.log(0.70) + math.log(0.35) + math.log(0.75) + math.log(0.18)) / 4,
                                     abs=1e-12)


def test_batches_sum_to_the_whole_split():
    logits, labels = hand_case()
    whole, parts = CalibrationMeter(), CalibrationMeter()
    whole.update(logits, labels)
    parts.update(logits[:1], labels[:1])
    parts.update(logits[1:], labels[1:])
    for k, v in whole.result().items():
        assert parts.result()[k] == pytest.approx(v, abs=1e-12)


def test_result_block_keeps_the_parsed_lines_first(capsys):
    ev = Classification()
    ev.process(*hand_case())
    ev.evaluate()
    lines = capsys.readouterr().out.splitlines()
    assert lines[:6] == ["=> result", "* total: 4", "* correct: 2", "* accuracy: 50.0%", "* error: 50.0%",
                         "* macro_f1: 50.0%"]
    assert lines[6:] == ["* ece: 29.25%", "* classwise_ece: 26.17%", "* confidence: 66.75%", "* nll: 0.8522"]
    assert ev.summary["ece"] == pytest.approx(29.25) and ev.summary["nll"] == pytest.approx(0.852244, abs=1e-6)


def test_sals_keeps_predictions_and_lowers_an_over_confident_ece():
    g = torch.Generator().manual_seed(0)
    n, k = 2000, 10
    labels = torch.randint(0, k, (n,), generator=g)
    # zero-shot: soft logits whose range is small; adapted: the same ranking 70% right, at huge margins
    zero_shot = torch.randn(n, k, generator=g)
    zero_shot[torch.arange(n), labels] += 1.0
    pred = torch.where(torch.rand(n, generator=g) < 0.7, labels, torch.randint(0, k, (n,), generator=g))
    adapted = torch.randn(n, k, generator=g)
    adapted[torch.arange(n), pred] += 40.0
    rescaled = sals(adapted, zero_shot)
    assert torch.equal(rescaled.argmax(1), adapted.argmax(1))
    assert torch.allclose(rescaled.min(1).values, zero_shot.min(1).values, atol=1e-5)
    assert torch.allclose(rescaled.max(1).values, zero_shot.max(1).values, atol=1e-5)
    before, after = CalibrationMeter(), CalibrationMeter()
    before.update(adapted, labels)
    after.update(rescaled, labels)
    assert before.result()["ece"] > 25.0  # ~100% confident, 70% right
    assert after.result()["ece"] < before.result()["ece"] / 2


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_path):
    from synthetic.layouts import write_eurosat

    root = tmp_path_factory.mktemp("calibration")
    write_eurosat(str(root / "data"), per_class=10)
    return {"root": str(root / "data"), "cache": str(root / "features"), "clip": tiny_clip_path, "tmp": root}


def run_taskres(env, name, *opts):
    out = env["tmp"] / name
    run(["--root", env["root"], "--seed", "1", "--trainer", "TaskRes", "--dataset-config-file",
         "configs/datasets/eurosat.yaml", "--config-file", "configs/trainers/TaskRes/adam_lr2e-4_B256_ep200.yaml",
         "--output-dir", str(out), "DATASET.NUM_SHOTS", 2, "MODEL.BACKBONE.NAME", env["clip"],
         "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False, "FEATURES.MODE", "cached",
         "FEATURES.CACHE_DIR", env["cache"], "OPTIM.MAX_EPOCH", 3, "OPTIM.LR", 0.01, *opts])
    return out


def test_a_run_records_calibration_and_sals_keeps_its_accuracy(env):
    plain = run_taskres(env, "plain")
    rescaled = run_taskres(env, "sals", "TEST.SALS", True)
    a, b = results(plain), results(rescaled)
    for key in ("ece", "classwise_ece", "nll", "confidence"):
        assert isinstance(a[key], float) and isinstance(b[key], float)
    assert 0.0 <= a["ece"] <= 100.0 and a["nll"] > 0.0
    assert b["accuracy"] == a["accuracy"] and b["correct"] == a["correct"]
    assert b["ece"] != a["ece"] and b["extras"]["sals"] is True
    log = (plain / "log.txt").read_text()
    assert f"* ece: {a['ece']:.2f}%" in log


def test_sals_on_a_pixel_method_is_one_line_before_training(env, capsys):
    from engine.recipes import recipe

    r = recipe("MaskTuning", "eurosat", 2)
    out = env["tmp"] / "mask_sals"
    run(["--root", env["root"], "--trainer", "MaskTuning", "--dataset-config-file", "configs/datasets/eurosat.yaml",
         "--config-file", r.config, "--output-dir", str(out), *r.opts_list(), "DATASET.NUM_SHOTS", 2,
         "MODEL.BACKBONE.NAME", env["clip"], "TEST.SALS", True], expect=2)
    assert "TEST.SALS needs zero-shot logits" in capsys.readouterr().err
    assert not (out / "results.json").exists()
