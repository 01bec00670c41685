"""Mask tuning (R-AMT): masks on the tiny CLIPs, the GDR rule, one-graph gradients, runs through
train.py on synthetic EuroSAT, compact checkpoints, and the ViT-B/16 mask count."""
import copy
import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

import clip
import train
from engine.checkpoint import set_random_seed
from runs import results, run
from synthetic.layouts import write_eurosat
from trainers.common.masks import (MaskSet, fold_masks, gdr_gradient, gdr_keep, mask_targets, pack_mask,
                            unpack_mask)
from trainers.masktuning import (MaskTuning, kl_soft_target, logit_cotangents, mask_classnames,
                                 mask_gradients)

CFG = "configs/trainers/MaskTuning/vit_b16.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=20)
    return str(root)


def mt_args(root, out, clip_path, *opts, shots=4, epochs=1, seed=1):
    return ["--root", root, "--seed", seed, "--trainer", "MaskTuning",
            "--dataset-config-file", "configs/datasets/eurosat.yaml", "--config-file", CFG,
            "--output-dir", out, "DATASET.NUM_SHOTS", shots, "MODEL.BACKBONE.NAME", clip_path,
            "OPTIM.MAX_EPOCH", epochs, "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False, *opts]


def make_trainer(root, clip_path, out, *opts):
    cfg = train.setup_cfg(train.parse_args([str(a) for a in mt_args(root, out, clip_path, *opts)]))
    set_random_seed(1)  # as train.py: the few-shot subset this draws is cached for later runs
    return MaskTuning(cfg)


@pytest.fixture(scope="module")
def trainer(data_root, tiny_clip_path, tmp_path_factory):
    return make_trainer(data_root, tiny_clip_path, str(tmp_path_factory.mktemp("unit")))


def mask_some(masks, fraction=0.2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for s in masks.scores():
            s.masked_fill_(torch.rand(s.shape, generator=gen) < fraction, 0.0)


def images(n=4, seed=0):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


# ---- masks on the encoder ----------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["vit", "rn"])
def test_all_ones_masks_are_zero_shot_clip_and_off_restores_it(arch, tiny_clip_path, tiny_clip_rn_path):
    path = tiny_clip_path if arch == "vit" else tiny_clip_rn_path
    model, reference = clip.load(path), clip.load(path)
    masks = MaskSet.attach(model.visual, mask_mlp=False)
    x = images(2)
    with torch.no_grad():
        expected = reference.visual(x)
        assert torch.equal(model.visual(x), expected)  # bit for bit
        mask_some(masks)
        assert not torch.allclose(model.visual(x), expected)
        with masks.off():
            assert torch.equal(model.visual(x), expected)
    kinds = {type(m).__name__ for _, m, _ in mask_targets(reference.visual)}
    if arch == "rn":  # every conv and the attention-pool projections; BatchNorm untouched
        convs = [m for m in reference.visual.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(masks.names) == len(convs) + 4 and any(n.startswith("attnpool.q_proj") for n in masks.names)
        assert not model.visual.training
    else:
        assert masks.names[:3] == ["conv1.mask_real", "transformer.resblocks.0.attn.mask_real",
                                   "transformer.resblocks.0.attn.out_proj.mask_real"]
        assert "MultiheadAttention" in kinds
        mlp = MaskSet.attach(clip.load(path).visual, mask_mlp=True)
        assert len(mlp.names) == len(masks.names) + 2 * len(reference.visual.transformer.resblocks)


def test_trainer_starts_at_zero_shot_logits_exactly(trainer, tiny_clip_path):
    reference = clip.load(tiny_clip_path)
    names = mask_classnames(trainer.dm.classnames)
    assert names[0] == names[0].lower() and "_" not in "".join(names)
    tokens = clip.tokenize([f"a centered satellite photo of {c}." for c in names])
    with torch.no_grad():
        text = F.normalize(reference.encode_text(tokens).float(), dim=-1)
        x = images(3)
        expected = reference.logit_scale.exp() * F.normalize(reference.encode_image(x).float(), dim=-1) @ text.t()
        assert torch.equal(trainer.prompt_classifier, text)
        assert torch.equal(trainer.forward(x), expected)
        assert torch.equal(trainer.teacher_logits(x), expected)
    assert trainer.sparsity() == 0.0
    assert trainer.num_trainable_params() == trainer.masks.num_entries()


# ---- the GDR rule --------------------------------------------------------------------------------
def test_gdr_rule_by_hand():
    # columns: same signs | opposite, P = 0.25 | opposite, g_ce < 0, P = 0.75 | g_kl = 0 | g_ce = 0
    g_ce = torch.tensor([0.2, 0.2, 0.2, -0.3, -0.3, 0.5, 0.0], dtype=torch.float64)
    g_kl = torch.tensor([0.6, -0.6, -0.6, 0.1, 0.1, 0.0, 0.4], dtype=torch.float64)
    u = torch.tensor([0.99, 0.2, 0.3, 0.7, 0.8, 0.99, 0.1], dtype=torch.float64)
    # P = (sign(g_ce) (g_ce + g_kl) / (|g_ce| + |g_kl|) + 1) / 2:  1, .25, .25, .75, .75, 1, .5
    kept = torch.tensor([1, 1, 0, 1, 0, 1, 1], dtype=torch.float64)  # 1[P > U]
    for lam in (0.0, 0.3, 1.0):
        expected = ((1 - lam) + lam * kept) * g_ce
        got = gdr_gradient(g_ce, g_kl, lam, u, eps=0.0)
        assert torch.allclose(got, expected, atol=1e-15), (lam, got, expected)
    assert torch.equal(gdr_keep(g_ce, g_kl, 0.0, u), torch.ones_like(g_ce))  # lambda 0: plain CE
    assert gdr_gradient(g_ce, g_kl, 1.0, u)[2] == 0  # lambda 1: a dropped element is zeroed
    assert gdr_gradient(g_ce, g_kl, 0.3, u)[2] == pytest.approx(0.7 * 0.2)


def test_kl_cotangent_is_softmax_difference():
    s, t = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    labels = torch.randint(7, (5,))
    _, c_ce, _, c_kl = logit_cotangents(s, labels, t)
    assert torch.allclose(c_kl.double(), (s.softmax(-1) - t.softmax(-1)) / 5)
    assert torch.allclose(c_ce.double(), (s.softmax(-1) - F.one_hot(labels, 7)) / 5)
    assert float(kl_soft_target(s, s)) == pytest.approx(float(-(s.softmax(-1) * s.log_softmax(-1)).sum(-1).mean()))


# ---- gradients from one graph --------------------------------------------------------------------
def test_batched_gradients_equal_two_backward_passes(tiny_clip_path):
    model = clip.load(tiny_clip_path)
    masks = MaskSet.attach(model.visual)
    mask_some(masks)
    teacher_model = clip.load(tiny_clip_path)
    text = F.normalize(torch.randn(10, model.embed_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    x, labels = images(3), torch.tensor([0, 4, 7])

    def logits_of(visual):
        return 100 * F.normalize(visual(x), dim=-1) @ text.t()

    with torch.no_grad():
        teacher = logits_of(teacher_model.visual)
    scores = masks.scores()
    logits = logits_of(model.visual)
    _, c_ce, _, c_kl = logit_cotangents(logits, labels, teacher)
    g_ce, g_kl = mask_gradients(logits, scores, c_ce, c_kl, batched=True)
    # reference: the two losses, two full backward passes
    logits = logits_of(model.visual)
    F.cross_entropy(logits, labels).backward(retain_graph=True)
    ref_ce = [s.grad.clone() for s in scores]
    for s in scores:
        s.grad = None
    kl_soft_target(logits, teacher).backward()
    ref_kl = [s.grad for s in scores]
    assert any(g.abs().max() > 0 for g in ref_kl)
    # equal up to the order of floating-point sums (the batched pass vectorises them)
    for a, b in zip(g_ce + g_kl, ref_ce + ref_kl):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))
    seq_ce, seq_kl = mask_gradients(logits_of(model.visual), scores, c_ce, c_kl, batched=False)
    for a, b in zip(seq_ce + seq_kl, ref_ce + ref_kl):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def _captured_step(trainer, monkeypatch):
    """Record the gradients the optimizer is handed (its step is replaced); returns the record."""
    captured = []
    optim = trainer._optims["shared"]
    monkeypatch.setattr(optim, "step",
                        lambda *a, **k: captured.append([p.grad.clone() for p in trainer.masks.scores()]))
    return captured


def test_step_equals_naive_gdr_with_teacher_copy(data_root, tiny_clip_path, tmp_path, monkeypatch):
    tr = make_trainer(data_root, tiny_clip_path, str(tmp_path), "MASK.GDR_LAMBDA", 1.0)
    mask_some(tr.masks, 0.1)
    before = [s.detach().clone() for s in tr.masks.scores()]
    captured = _captured_step(tr, monkeypatch)
    x, labels = images(8, seed=3), torch.arange(8) % 10
    torch.manual_seed(123)
    tr.forward_backward(x, labels)
    (ours,) = captured
    # naive: a second (untouched) encoder as teacher, two backward passes, as the original runs
    naive_teacher = clip.load(tiny_clip_path).visual
    scores = tr.masks.scores()
    logits = tr.forward(x)
    with torch.no_grad():
        teacher = tr.logit_scale * F.normalize(naive_teacher(x).float(), dim=-1) @ tr.prompt_classifier.t()
    loss_b = kl_soft_target(logits, teacher)
    loss_a = F.cross_entropy(logits, labels) + 1e-4 * sum(s.norm() for s in scores)  # MASK_LOSS, config weight
    g_kl = torch.autograd.grad(loss_b, scores, retain_graph=True)
    g_ce = torch.autograd.grad(loss_a, scores)
    torch.manual_seed(123)
    us = [torch.rand_like(s) for s in scores]
    for o, a, b, u, s0 in zip(ours, g_ce, g_kl, us, before):
        expected = gdr_gradient(a, b, 1.0, u)
        p = (torch.sign(a) * (a + b) / (a.abs() + b.abs() + 1e-8) + 1) / 2
        near_tie = (p - u).abs() < 1e-4
        close = torch.isclose(o, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
        assert bool((close | near_tie).all())
        assert not torch.equal(o, a)  # some elements were dropped
    assert all(torch.equal(s, b) for s, b in zip(scores, before))  # the step is mocked


def test_lambda0_is_plain_ce_without_teacher(data_root, tiny_clip_path, tmp_path, monkeypatch):
    for opts in (("MASK.GDR_LAMBDA", 0.0), ("MASK.GDR", False)):
        tr = make_trainer(data_root, tiny_clip_path, str(tmp_path), *opts, "MASK.MASK_LOSS", False)
        mask_some(tr.masks, 0.1)
        captured = _captured_step(tr, monkeypatch)
        monkeypatch.setattr(tr, "teacher_logits", lambda x: pytest.fail("lambda 0 needs no teacher"))
        x, labels = images(4, seed=5), torch.tensor([1, 3, 5, 7])
        summary = tr.forward_backward(x, labels)
        assert "kl" not in summary
        loss = F.cross_entropy(tr.forward(x), labels)
        assert summary["loss"] == pytest.approx(loss.item(), rel=1e-6)
        expected = torch.autograd.grad(loss, tr.masks.scores())
        for a, b in zip(captured[0], expected):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-9)


def test_lambda0_consumes_the_random_stream_of_lambda1(data_root, tiny_clip_path, tmp_path):
    """The original draws GDR's uniforms (and runs the teacher) at every lambda: after an epoch
    the generator of a lambda 0 run stands where a lambda 1 run's does, so later epochs shuffle
    and augment alike."""
    states = {}
    for lam in (0.0, 1.0):
        tr = make_trainer(data_root, tiny_clip_path, str(tmp_path / str(lam)), "MASK.GDR_LAMBDA", lam)
        start = torch.get_rng_state()
        tr.train()
        states[lam] = torch.get_rng_state()
        assert not torch.equal(states[lam], start)  # the epoch drew something
    assert torch.equal(states[0.0], states[1.0])


# ---- compact checkpoints ---------------------------------------------------------------------------
def test_bit_packing_round_trip_and_original_bytes():
    mask = torch.rand(3, 5, 7) > 0.5
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (105 + 7) // 8
    assert torch.equal(unpack_mask(packed, mask.shape), mask)
    assert torch.equal(unpack_mask(bytes(packed.numpy().tobytes()), mask.shape), mask)  # the original's form
    first = torch.zeros(9, dtype=torch.bool)
    first[0] = True
    assert pack_mask(first).tolist() == [128, 0]  # row-major, most significant bit first


def test_resume_snapshot_keeps_scores_checkpoints_keep_bits(data_root, tiny_clip_path, tmp_path):
    out = str(tmp_path / "run")
    tr = make_trainer(data_root, tiny_clip_path, out, "OPTIM.MAX_EPOCH", 3, "TRAIN.CHECKPOINT_FREQ", 1)
    mask_some(tr.masks, 0.3)
    with torch.no_grad():
        for s in tr.masks.scores():
            s.add_(torch.rand_like(s) * 1e-3)
    tr.epoch = 0  # the end of epoch 1 with a periodic checkpoint: bits, plus the exact resume snapshot
    tr.save_epoch_checkpoints()
    folder = os.path.join(out, "shared")
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-1", "resume.pth.tar"]
    assert open(os.path.join(folder, "checkpoint")).read().strip() == "resume.pth.tar"
    packed = torch.load(os.path.join(folder, "model.pth.tar-1"), weights_only=True)
    assert all(v.dtype == torch.uint8 for v in packed["state_dict"].values()) and packed["optimizer"] is None
    snapshot = torch.load(os.path.join(folder, "resume.pth.tar"), weights_only=True)
    assert all(v.dtype == torch.float32 for v in snapshot["state_dict"].values())
    fresh = make_trainer(data_root, tiny_clip_path, out, "OPTIM.MAX_EPOCH", 3)
    assert fresh.resume_model_if_exist(out) == 1
    assert all(torch.equal(a, b) for a, b in zip(fresh.masks.scores(), tr.masks.scores()))
    # loading the bits gives the same binary masks
    other = make_trainer(data_root, tiny_clip_path, str(tmp_path / "o"), "OPTIM.MAX_EPOCH", 3)
    other.load_model(out, epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(other.masks.binary().values(), tr.masks.binary().values()))
    # a checkpoint of the original implementation: the same bits as Python bytes, Adam state beside
    original = tmp_path / "original" / "shared"
    original.mkdir(parents=True)
    torch.save({"state_dict": {n: pack_mask(m).numpy().tobytes() for n, m in tr.masks.binary().items()},
                "epoch": 30, "optimizer": snapshot["optimizer"], "scheduler": {"last_epoch": 30}},
               original / "model.pth.tar-30")
    other.masks.load_masks({n: torch.ones_like(m) for n, m in tr.masks.binary().items()})
    other.load_model(str(original.parent), epoch=30)
    assert all(torch.equal(a, b) for a, b in zip(other.masks.binary().values(), tr.masks.binary().values()))


def test_fold_masks_gives_the_masked_encoder(data_root, tiny_clip_path, tmp_path):
    out = str(tmp_path / "run")
    tr = make_trainer(data_root, tiny_clip_path, out)
    mask_some(tr.masks, 0.3)
    tr.save_model(0, out)  # the last epoch: bits only
    assert sorted(os.listdir(os.path.join(out, "shared"))) == ["checkpoint", "model.pth.tar-1"]
    plain = clip.load(tiny_clip_path)
    zeros = fold_masks(plain, out)
    assert zeros == sum(z for _, _, z in tr.masks.layer_stats()) and "masks=" in plain.backbone_id
    x = images(2)
    with torch.no_grad():
        assert torch.allclose(plain.visual(x), tr.visual(x), atol=1e-6)


# ---- through train.py -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def learned(data_root, tiny_clip_path, tmp_path_factory, trainer):
    zero_shot = trainer.test(write=False)  # all masks on: zero-shot CLIP
    out = str(tmp_path_factory.mktemp("mt") / "seed1")
    # lr x steps must be well above the 5e-3 a score travels to flip a mask: 30 steps at 1e-3
    run(mt_args(data_root, out, tiny_clip_path, "OPTIM.LR", 1e-3, "DATALOADER.TRAIN_X.BATCH_SIZE", 8,
                "MASK.GDR_LAMBDA", 1.0, epochs=6, shots=4))
    return zero_shot, out


def test_mask_tuning_learns_on_synthetic_eurosat(learned):
    zero_shot, out = learned
    acc = results(out)["accuracy"]
    assert acc >= zero_shot + 5.0, (zero_shot, acc)
    extras = results(out)["extras"]
    assert 0 < extras["sparsity_percent"] < 100 and extras["masked_entries"] > 0
    assert extras["mask_entries"] == extras["num_trainable_params"] and extras["gdr_lambda"] == 1.0
    assert "transformer.resblocks.0.attn" in extras["per_layer_sparsity_percent"]
    log = open(os.path.join(out, "log.txt")).read()
    assert "Sparsity:" in log and "mask_loss" in log and " kl " in log
    tail = log[log.index("Finish training"):]
    assert f"* accuracy: {acc:.1f}%" in tail


def test_eval_only_reproduces_logged_accuracy(learned, data_root, tiny_clip_path, tmp_path):
    _, out = learned
    folder = os.path.join(out, "shared")
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-6"]
    state = torch.load(os.path.join(folder, "model.pth.tar-6"), weights_only=True)
    assert all(v.dtype == torch.uint8 for v in state["state_dict"].values())
    ev = str(tmp_path / "eval")
    run(mt_args(data_root, ev, tiny_clip_path, epochs=6) + ["--eval-only", "--model-dir", out, "--load-epoch", 6])
    assert results(ev)["accuracy"] == results(out)["accuracy"]
    assert results(ev)["correct"] == results(out)["correct"]
    assert results(ev)["extras"]["masked_entries"] == results(out)["extras"]["masked_entries"]


def test_init_masks_start_from_learned_masks(learned, data_root, tiny_clip_path, tmp_path):
    _, out = learned
    ev = str(tmp_path / "init")
    run(mt_args(data_root, ev, tiny_clip_path, "MASK.INIT_MASKS", out) + ["--eval-only"])
    assert results(ev)["accuracy"] == results(out)["accuracy"]


def test_coop_and_tip_adapter_run_on_learned_masks(learned, data_root, tiny_clip_path, tmp_path, capsys):
    from engine.registry import TRAINER_REGISTRY

    _, out = learned
    common = ["--root", data_root, "--dataset-config-file", "configs/datasets/eurosat.yaml", "MODEL.BACKBONE.NAME",
              tiny_clip_path, "DATASET.NUM_SHOTS", 4, "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False]
    argv = ["--trainer", "CoOp_RAMT", "--config-file", "configs/trainers/CoOp/vit_b16.yaml",
            "--output-dir", tmp_path / "coop", *common, "MASK.INIT_MASKS", out]
    combo = TRAINER_REGISTRY.get("CoOp_RAMT")(train.setup_cfg(train.parse_args([str(a) for a in argv])))
    masked = make_trainer(data_root, tiny_clip_path, str(tmp_path / "mt"), "MASK.INIT_MASKS", out)
    assert masked.sparsity() > 0 and "masks=" in combo.clip_model.backbone_id
    x = images(2)
    with torch.no_grad():
        assert torch.allclose(combo.clip_model.visual(x), masked.visual(x), atol=1e-6)
    # without masks the combination says what it needs
    argv = ["--trainer", "TipAdapter_RAMT", "--config-file", "configs/trainers/TipAdapter/eurosat.yaml",
            "--output-dir", tmp_path / "tip", *common]
    run(argv, expect=2)
    assert "MASK.INIT_MASKS" in capsys.readouterr().err


def test_resnet_trains(data_root, tiny_clip_rn_path, tmp_path):
    out = str(tmp_path / "rn")
    # one Adam step moves a score by about the learning rate: 1e-2 flips masks (1e-2 -> < 5e-3)
    run(mt_args(data_root, out, tiny_clip_rn_path, "OPTIM.LR", 1e-2, "DATALOADER.TRAIN_X.BATCH_SIZE", 10,
                epochs=1, shots=1))
    state = torch.load(os.path.join(out, "shared", "model.pth.tar-1"), weights_only=True)
    assert any(k.startswith("attnpool.c_proj") for k in state["state_dict"])
    assert results(out)["extras"]["masked_entries"] > 0


def test_bad_mask_settings_give_one_clear_message(data_root, tiny_clip_path, tmp_path, capsys):
    for opts, message in ((("MASK.THRESHOLD_FN", "ternarizer"), "THRESHOLD_FN"),
                          (("MASK.GDR_LAMBDA", 1.5), "GDR_LAMBDA"),
                          (("MASK.TEACHER", "cache"), "MASK.TEACHER must be 'forward'"),
                          (("MASK.INIT_MASKS", str(tmp_path / "none")), "MaskTuning checkpoint")):
        run(mt_args(data_root, str(tmp_path / opts[0]), tiny_clip_path, *opts) + ["--eval-only"], expect=2)
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


# ---- configs, recipes ---------------------------------------------------------------------------------
def test_reference_recipes_and_lambda_table():
    from engine.recipes import recipe

    cfg = train.setup_cfg(train.parse_args(["--trainer", "MaskTuning", "--config-file", CFG]))
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.WEIGHT_DECAY) == ("adam", 8e-5, 30, 0.0)
    assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 32 and tuple(cfg.INPUT.RRCROP_SCALE) == (0.5, 1.0)
    assert (cfg.MASK.SCALE, cfg.MASK.THRESHOLD, cfg.MASK.MASK_MLP, cfg.MASK.LOSS_WEIGHT) == (1e-2, 5e-3, False, 1e-4)
    assert cfg.TRAINER.MaskTuning.PREC == "fp32" and cfg.MODEL.BACKBONE.NAME == "ViT-B/16"
    assert recipe("MaskTuning", "imagenet", 16).cfg == "imagenet_vit_b16"
    for dataset, shots, lam in (("caltech101", 16, 0.3), ("eurosat", 16, 0.3), ("imagenet", 16, 1.0),
                                ("sun397", 16, 1.0), ("food101", 16, 1.0), ("caltech101", 4, 1.0)):
        assert float(recipe("MaskTuning", dataset, shots).opts["MASK.GDR_LAMBDA"]) == lam, dataset


def _vit_b16_visual(device="cpu"):
    import open_clip
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    cfg = open_clip.get_model_config("ViT-B-16")
    with torch.device(device):
        return _build_vision_tower(cfg["embed_dim"], CLIPVisionCfg(**cfg["vision_cfg"]), quick_gelu=True)


def test_vit_b16_mask_count():
    """The original's count on ViT-B/16's real shapes (shapes only: meta tensors)."""
    visual = _vit_b16_visual("meta")
    assert sum(p.numel() for p in visual.parameters()) == 86_192_640
    amt = MaskSet.attach(visual, mask_mlp=False)
    assert (len(amt.names), amt.num_entries()) == (25, 28_901_376)
    rmt = MaskSet.attach(_vit_b16_visual("meta"), mask_mlp=True)
    assert (len(rmt.names), rmt.num_entries()) == (49, 85_524_480)


@pytest.mark.slow
def test_vit_b16_mask_count_random_weights():
    visual = _vit_b16_visual().eval()
    reference = copy.deepcopy(visual)
    masks = MaskSet.attach(visual, mask_mlp=False)
    assert masks.num_entries() == 28_901_376
    x = images(1)
    with torch.no_grad(), parametrize.cached():
        assert torch.equal(visual(x), reference(x))
    assert sum(len(pack_mask(m)) for m in masks.binary().values()) == 28_901_376 // 8


# ---- scripts ------------------------------------------------------------------------------------------
# Stands in for python: `-m ...` runs the real interpreter (recipe look-ups); train.py calls are
# recorded (one JSON list per line in $FAKE_CALLS) and leave a finished run in --output-dir.
FAKE_PYTHON = """#!{python}
import json, os, sys
args = sys.argv[1:]
if args[0] == "-m":
    os.execv(sys.executable, [sys.executable] + args)
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(args) + "\\n")
out = args[args.index("--output-dir") + 1]
os.makedirs(os.path.join(out, "shared"), exist_ok=True)
with open(os.path.join(out, "shared", "checkpoint"), "w") as f:
    f.write("model.pth.tar-30\\n")
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({{"accuracy": 80.0}}, f)
"""


def test_scripts_default_lambda_layout_and_base2new(tmp_path):
    import subprocess
    import sys

    tmp_path = type(tmp_path)(os.path.realpath(tmp_path))
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    (tmp_path / "data").mkdir()
    calls = tmp_path / "calls.jsonl"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def script(name, *args, **env):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHON": str(fake), "FAKE_CALLS": str(calls),
               "DATA": str(tmp_path / "data"), "SEEDS": "1 2", **env}
        done = subprocess.run(["bash", os.path.join(repo, "scripts", "masktuning", name), *args], cwd=str(tmp_path),
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        lines = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        return [json.loads(line) for line in lines]

    def opt(argv, key):
        return argv[argv.index(key) + 1]

    ran = script("train.sh", "caltech101")
    assert [opt(a, "--seed") for a in ran] == ["1", "2"]
    assert {opt(a, "MASK.GDR_LAMBDA") for a in ran} == {"0.3"} and {opt(a, "DATASET.NUM_SHOTS") for a in ran} == {"16"}
    assert opt(ran[0], "--output-dir") == str(tmp_path / "output/caltech101/MaskTuning/vit_b16_16shots/lambda0.3/seed1")
    assert opt(ran[0], "--config-file") == "configs/trainers/MaskTuning/vit_b16.yaml"
    ran = script("train.sh", "imagenet")
    assert opt(ran[0], "MASK.GDR_LAMBDA") == "1.0" and "imagenet_vit_b16" in opt(ran[0], "--config-file")
    assert opt(script("train.sh", "dtd", "0")[0], "MASK.GDR_LAMBDA") == "0"
    assert script("train.sh", "caltech101") == []  # finished seeds are skipped
    ran = script("eval.sh", "caltech101")
    assert "--eval-only" in ran[0] and opt(ran[0], "--output-dir").endswith("lambda0.3/seed1/eval")
    ran = script("base2new_train.sh", "eurosat")
    assert opt(ran[0], "DATASET.SUBSAMPLE_CLASSES") == "base" and "MASK.GDR_LAMBDA" not in ran[0]
    ran = script("base2new_eval.sh", "eurosat")
    assert opt(ran[1], "DATASET.SUBSAMPLE_CLASSES") == "new"
    assert opt(ran[1], "--model-dir").endswith("base2new/train_base/eurosat/shots_16/MaskTuning/vit_b16/seed2")
    assert opt(ran[1], "--output-dir").endswith("base2new/test_new/eurosat/shots_16/MaskTuning/vit_b16/seed2")
