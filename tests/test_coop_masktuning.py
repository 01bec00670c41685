"""CoOpMaskTuning: CoOp's context and R-AMT's masks trained in the same steps."""
import os

import pytest
import torch
import torch.nn.functional as F

import clip
import train
from engine.checkpoint import set_random_seed
from runs import results, run
from test_masktuning import images, mask_some
from trainers.coop_masktuning import CoOpMaskTuning
from trainers.common.masks import gdr_gradient
from trainers.masktuning import kl_soft_target

CFG = "configs/trainers/CoOpMaskTuning/vit_b16.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from synthetic.layouts import write_eurosat

    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=16)
    return str(root)


def args(root, out, clip_path, *opts, epochs=1):
    return [str(a) for a in ["--root", root, "--seed", 1, "--trainer", "CoOpMaskTuning",
                             "--dataset-config-file", "configs/datasets/eurosat.yaml", "--config-file", CFG,
                             "--output-dir", out, "DATASET.NUM_SHOTS", 4, "MODEL.BACKBONE.NAME", clip_path,
                             "OPTIM.MAX_EPOCH", epochs, "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False,
                             *opts]]


def make(root, out, clip_path, *opts):
    set_random_seed(1)  # as train.py: the few-shot subset this draws is cached for later runs
    return CoOpMaskTuning(train.setup_cfg(train.parse_args(args(root, out, clip_path, *opts))))


def test_one_step_gives_coop_and_gdr_gradients(data_root, tiny_clip_path, tmp_path, monkeypatch):
    tr = make(data_root, str(tmp_path), tiny_clip_path, "MASK.GDR_LAMBDA", 1.0)
    mask_some(tr.masks, 0.1)
    captured = {}
    for name in ("shared", "prompt_learner"):
        optim = tr._optims[name]
        params = [p for g in optim.param_groups for p in g["params"]]
        monkeypatch.setattr(optim, "step", lambda *a, n=name, ps=params, **k: captured.setdefault(
            n, [p.grad.clone() for p in ps]))
    tr.set_model_mode("train")
    x, labels = images(8, seed=3), torch.arange(8) % 10
    torch.manual_seed(7)
    tr.forward_backward(x, labels)
    # by hand: one student (masked encoder, prompts with grad); the teacher an untouched CLIP's
    # image encoder with the same prompts, detached; CE (+ the score regulariser) and KL
    scores, ctx = tr.masks.scores(), tr.prompt_learner.ctx
    text = tr.classifier()
    logits = tr.logit_scale * F.normalize(tr.visual(x).float(), dim=-1) @ text.t()
    with torch.no_grad():
        zero_shot_visual = clip.load(tiny_clip_path).visual
        teacher = tr.logit_scale * F.normalize(zero_shot_visual(x).float(), dim=-1) @ text.detach().t()
    loss_ce = F.cross_entropy(logits, labels) + 1e-4 * sum(s.norm() for s in scores)  # MASK_LOSS of the recipe
    g_kl = torch.autograd.grad(kl_soft_target(logits, teacher), scores, retain_graph=True)
    *g_ce, g_ctx = torch.autograd.grad(loss_ce, scores + [ctx])
    assert torch.allclose(captured["prompt_learner"][0], g_ctx, rtol=1e-4, atol=1e-7 * float(g_ctx.abs().max()))
    torch.manual_seed(7)
    us = [torch.rand_like(s) for s in scores]
    dropped = 0
    for got, a, b, u in zip(captured["shared"], g_ce, g_kl, us):
        expected = gdr_gradient(a, b, 1.0, u)
        p = (torch.sign(a) * (a + b) / (a.abs() + b.abs() + 1e-8) + 1) / 2
        close = torch.isclose(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
        assert bool((close | ((p - u).abs() < 1e-4)).all())
        dropped += int(((got == 0) & (a != 0)).sum())
    assert dropped > 0  # the rule did drop conflicting elements


@pytest.fixture(scope="module")
def joint(data_root, tiny_clip_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("joint")
    out = str(base / "run")
    # 50 steps: a context from words, since a random one needs far more steps (as in CoOp), at
    # CoOp's own LR: 0.02 diverged on some seeds (seed 1: 40% against zero-shot 58%; 0.002: 90-96%
    # over seeds 1-3)
    run(args(data_root, out, tiny_clip_path, "OPTIM.LR", 1e-3, "TRAINER.CoOpMaskTuning.PROMPT_LR", 0.002,
             "TRAINER.COOP.CTX_INIT", "a_photo_of_a", "DATALOADER.TRAIN_X.BATCH_SIZE", 8,
             "MASK.GDR_LAMBDA", 1.0, epochs=10))
    zs = str(base / "zs")
    run(["--root", data_root, "--trainer", "ZeroshotCLIP", "--dataset-config-file", "configs/datasets/eurosat.yaml",
         "--config-file", "configs/trainers/ZeroshotCLIP/rn50.yaml", "--output-dir", zs, "--eval-only",
         "MODEL.BACKBONE.NAME", tiny_clip_path, "DATALOADER.NUM_WORKERS", "0"])
    return base, out, results(zs)["accuracy"]


def test_joint_training_learns_both_masks_and_context(joint):
    _, out, zero_shot = joint
    res = results(out)
    assert res["accuracy"] >= zero_shot + 5.0, (zero_shot, res["accuracy"])
    assert res["extras"]["masked_entries"] > 0 and res["extras"]["n_ctx"] == 4
    assert sorted(os.listdir(out + "/shared")) == ["checkpoint", "model.pth.tar-10"]
    packed = torch.load(out + "/shared/model.pth.tar-10", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.uint8 for v in packed.values())  # masks stay bit-packed
    ctx = torch.load(out + "/prompt_learner/model.pth.tar-10", weights_only=True)["state_dict"]["ctx"]
    assert ctx.shape[0] == 4  # "a photo of a"


def test_joint_eval_only_reproduces_the_run(joint, data_root, tiny_clip_path):
    base, out, _ = joint
    again = str(base / "eval")
    run(args(data_root, again, tiny_clip_path, "TRAINER.COOP.CTX_INIT", "a_photo_of_a")
        + ["--eval-only", "--model-dir", out, "--load-epoch", "10"])
    assert results(again)["correct"] == results(out)["correct"]
    run(args(data_root, str(base / "nomodel"), tiny_clip_path) + ["--eval-only"], expect=2)


def test_joint_checkpoint_with_other_prompt_settings_is_explained(joint, data_root, tiny_clip_path, capsys):
    base, out, _ = joint
    run(args(data_root, str(base / "other"), tiny_clip_path) + ["--eval-only", "--model-dir", out,
                                                                 "--load-epoch", "10"], expect=2)
    assert "TRAINER.COOP.N_CTX 4" in capsys.readouterr().err


def test_joint_with_the_store_teacher(data_root, tiny_clip_path, tmp_path):
    cache = str(tmp_path / "cache")
    opts = ("MASK.TEACHER", "store", "FEATURES.NUM_VIEWS", 2, "FEATURES.CACHE_DIR", cache,
            "DATALOADER.TRAIN_X.BATCH_SIZE", 8, "TRAINER.COOP.CTX_INIT", "a_photo_of_a", "MASK.GDR_LAMBDA", 1.0)
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    run(args(data_root, first, tiny_clip_path, *opts))
    run(args(data_root, second, tiny_clip_path, *opts))
    assert results(first)["extras"]["teacher_encoder"]["images"] == 4 * 10 * 2
    assert results(second)["extras"]["teacher_encoder"]["images"] == 0
    a = torch.load(first + "/prompt_learner/model.pth.tar-1", weights_only=True)["state_dict"]["ctx"]
    b = torch.load(second + "/prompt_learner/model.pth.tar-1", weights_only=True)["state_dict"]["ctx"]
    assert torch.equal(a, b) and results(first)["accuracy"] == results(second)["accuracy"]
