"""CLIP-Adapter: the residual adapter against a hand computation, and runs through train.py on
synthetic EuroSAT with the tiny CLIP."""
import os

import pytest
import torch

import train
from runs import opt, results, run_direct as run
from trainers.clip_adapter import Adapter, mix

CFG = "configs/trainers/CLIP_Adapter/rn50.yaml"


def test_adapter_and_residual_blend_match_a_hand_computation():
    adapter = Adapter(4, reduction=2)  # 4 -> 2 -> 4, no biases
    w1 = torch.tensor([[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, -1.0, 1.0]])
    w2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.5, 0.5], [0.0, -2.0]])
    with torch.no_grad():
        adapter.fc[0].weight.copy_(w1)
        adapter.fc[2].weight.copy_(w2)
    x = [1.0, 2.0, -3.0, 0.5]
    h = [max(0.0, sum(w * v for w, v in zip(row, x))) for row in w1.tolist()]  # ReLU(W1 x)
    a = [max(0.0, sum(w * v for w, v in zip(row, h))) for row in w2.tolist()]  # ReLU(W2 h)
    ratio = 0.2
    expected = [ratio * ai + (1 - ratio) * xi for ai, xi in zip(a, x)]
    got = mix(torch.tensor([x]), adapter(torch.tensor([x])), ratio)
    assert torch.allclose(got, torch.tensor([expected]))
    assert set(adapter.state_dict()) == {"fc.0.weight", "fc.2.weight"}  # the reference's key names


# ---- runs --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_path):
    from synthetic.layouts import write_eurosat

    root = tmp_path_factory.mktemp("clip_adapter")
    write_eurosat(str(root / "data"), per_class=34)  # 17 train, 7 val, 10 test images per class
    return {"root": str(root / "data"), "cache": str(root / "features"), "clip": tiny_clip_path, "tmp": root}


def argv(env, out, *opts, trainer="CLIP_Adapter"):
    return ["--root", env["root"], "--seed", "1", "--trainer", trainer, "--dataset-config-file",
            "configs/datasets/eurosat.yaml", "--config-file", CFG, "--output-dir", str(out),
            "DATASET.NUM_SHOTS", "16", "MODEL.BACKBONE.NAME", env["clip"], "DATALOADER.NUM_WORKERS", "0",
            "TRAIN.TENSORBOARD", "False", "FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", env["cache"],
            "FEATURES.NUM_VIEWS", "2", "OPTIM.MAX_EPOCH", "15", *map(str, opts)]


@pytest.fixture(scope="module")
def zero_shot(env):
    out = env["tmp"] / "zs"
    run(argv(env, out, trainer="ZeroshotCLIP") + ["--eval-only"])
    return results(out)


@pytest.fixture(scope="module")
def trained(env):
    out = env["tmp"] / "ca16"
    trainer = run(argv(env, out))
    return out, trainer


def test_ratio_zero_is_zero_shot_clip(env, zero_shot):
    out = env["tmp"] / "ratio0"
    run(argv(env, out, "TRAINER.CLIP_ADAPTER.RATIO", "0.0", "OPTIM.MAX_EPOCH", "0"))  # untrained adapter
    assert results(out)["correct"] == zero_shot["correct"]


def test_clip_adapter_learns_beyond_zero_shot(trained, zero_shot):
    out, trainer = trained
    r = results(out)
    assert r["accuracy"] > zero_shot["accuracy"] + 10.0
    assert r["extras"]["ratio"] == 0.2 and r["extras"]["precision"] == "fp32"
    dim = trainer.clip_model.embed_dim  # the width follows the backbone (the reference: 1024)
    assert trainer.adapter.fc[0].weight.shape == (dim // 4, dim)


def test_checkpoint_layout_and_eval_only_round_trip(env, trained):
    out, _ = trained
    folder = out / "clip_adapter"
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-15"]
    state = torch.load(folder / "model.pth.tar-15", weights_only=True)
    assert set(state["state_dict"]) == {"fc.0.weight", "fc.2.weight"}
    ev = env["tmp"] / "ca16_eval"
    run(argv(env, ev) + ["--eval-only", "--model-dir", str(out), "--load-epoch", "15"])
    assert results(ev)["correct"] == results(out)["correct"]


def test_adapter_evaluates_on_another_class_set(env, trained):
    """The adapter is class-agnostic: a model trained on all classes evaluates on the new half."""
    out, _ = trained
    ev = env["tmp"] / "ca16_new"
    run(argv(env, ev, "DATASET.SUBSAMPLE_CLASSES", "new") + ["--eval-only", "--model-dir", str(out),
                                                             "--load-epoch", "15"])
    assert results(ev)["total"] == 50


def test_bad_ratio_is_one_clear_error(env, tmp_path, capsys):
    assert train.main(argv(env, tmp_path / "o", "TRAINER.CLIP_ADAPTER.RATIO", "1.5")) == 2
    assert "TRAINER.CLIP_ADAPTER.RATIO must lie in [0, 1]" in capsys.readouterr().err


def test_script_runs_three_seeds(fake):
    run_script, recorded, _, tmp = fake
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "clip_adapter",
                          "main.sh")
    proc = run_script(script, "dtd", "rn50", "4", "0.6", "data")
    assert proc.returncode == 0, proc.stderr
    runs = recorded()
    assert len(runs) == 3
    assert opt(runs[2], "--output-dir") == str(
        tmp / "output" / "dtd" / "CLIP_Adapter" / "rn50_4shots" / "ratio0.6" / "seed3")
    assert runs[0][-4:] == ["DATASET.NUM_SHOTS", "4", "TRAINER.CLIP_ADAPTER.RATIO", "0.6"]
    assert opt(runs[0], "--trainer") == "CLIP_Adapter"
