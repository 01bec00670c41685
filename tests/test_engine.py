"""Engine pieces against closed forms and the reference formats."""
import math
import os

import pytest
import torch

import train
from engine.config import get_cfg_default, merge_opts
from engine.errors import ConfigError, UserError
from engine.evaluator import Classification, macro_f1
from engine.io import atomic_write, save_json
from engine.registry import Registry
from engine.schedule import EpochScheduler, lr_at_epoch


def taskres_optim(lr=2e-3, epochs=100):
    cfg = get_cfg_default()
    cfg.OPTIM.NAME = "adam"
    cfg.OPTIM.LR = lr
    cfg.OPTIM.MAX_EPOCH = epochs
    cfg.OPTIM.LR_SCHEDULER = "cosine"
    cfg.OPTIM.WARMUP_EPOCH = 1
    cfg.OPTIM.WARMUP_TYPE = "constant"
    cfg.OPTIM.WARMUP_CONS_LR = 1e-5
    return cfg.OPTIM


@pytest.mark.parametrize("lr,epochs,last", [(2e-3, 100, 1.9733e-6), (2e-3, 200, 4.9344e-7),
                                            (2e-4, 100, 1.9733e-7), (2e-4, 200, 4.9344e-8)])
def test_schedule_matches_reference_closed_form(lr, epochs, last):
    o = taskres_optim(lr, epochs)
    assert lr_at_epoch(o, 0) == 1e-5
    assert lr_at_epoch(o, 1) == pytest.approx(lr)
    for e in range(1, epochs):
        assert lr_at_epoch(o, e) == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * (e - 1) / epochs)), rel=1e-12)
    assert lr_at_epoch(o, epochs - 1) == pytest.approx(last, rel=1e-4)


def test_schedule_equals_torch_cosine_after_warmup():
    """The chained reference schedulers: a constant warmup epoch, then torch's cosine from its start."""
    o = taskres_optim(2e-3, 20)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2e-3)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20.0)
    torch_lrs = []
    for _ in range(19):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        cos.step()
    assert [lr_at_epoch(o, e) for e in range(1, 20)] == pytest.approx(torch_lrs, rel=1e-9)


def test_epoch_scheduler_drives_optimizer_and_resumes():
    o = taskres_optim(2e-3, 10)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=123.0)
    s = EpochScheduler(opt, o)
    assert opt.param_groups[0]["lr"] == 1e-5
    for _ in range(3):
        s.step()
    state = s.state_dict()
    opt2 = torch.optim.Adam([p], lr=1.0)
    s2 = EpochScheduler(opt2, o)
    s2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(lr_at_epoch(o, 3))


def test_other_schedules():
    cfg = get_cfg_default()
    o = cfg.OPTIM
    o.LR, o.MAX_EPOCH, o.LR_SCHEDULER, o.STEPSIZE, o.GAMMA = 1.0, 10, "single_step", (4,), 0.1
    assert [lr_at_epoch(o, e) for e in (0, 3, 4, 8)] == pytest.approx([1, 1, 0.1, 0.01])
    o.LR_SCHEDULER, o.STEPSIZE = "multi_step", (2, 5)
    assert [lr_at_epoch(o, e) for e in (1, 2, 5)] == pytest.approx([1, 0.1, 0.01])
    o.WARMUP_EPOCH, o.WARMUP_TYPE, o.WARMUP_MIN_LR = 2, "linear", 1e-4
    assert [lr_at_epoch(o, e) for e in (0, 1)] == pytest.approx([1e-4, 0.5])
    o.LR_SCHEDULER = "poly"
    with pytest.raises(ConfigError, match="cosine"):
        lr_at_epoch(o, 3)


def full_cfg():
    import trainers  # noqa: F401
    from engine.registry import TRAINER_REGISTRY

    cfg = get_cfg_default()
    for _, t in TRAINER_REGISTRY.items():
        t.extend_cfg(cfg)
    return cfg


def test_reference_recipe_loads_with_yacs_semantics():
    cfg = full_cfg()
    cfg.merge_from_file("configs/datasets/eurosat.yaml")
    cfg.merge_from_file("configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml")
    assert cfg.DATASET.NAME == "EuroSAT"
    assert cfg.INPUT.SIZE == (224, 224)
    assert cfg.OPTIM.WARMUP_CONS_LR == 1e-5 and isinstance(cfg.OPTIM.WARMUP_CONS_LR, float)
    assert cfg.OPTIM.WEIGHT_DECAY == 5e-4 and cfg.OPTIM.LR == 0.002 and cfg.OPTIM.MAX_EPOCH == 100


def test_unknown_key_and_odd_opts_are_clear_errors():
    cfg = full_cfg()
    with pytest.raises(ConfigError, match="unknown config key"):
        merge_opts(cfg, ["OPTIM.LRR", "0.1"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        merge_opts(cfg, ["OPTIM.LR"])
    merge_opts(cfg, ["TRAINER.TaskRes.RESIDUAL_SCALE", "0.5", "OPTIM.WARMUP_EPOCH", "-1"])
    assert cfg.TRAINER.TaskRes.RESIDUAL_SCALE == 0.5 and cfg.OPTIM.WARMUP_EPOCH == -1


def test_flags_anywhere_and_seed_zero():
    args = train.parse_args(["DATASET.NUM_SHOTS", "16", "--seed", "0", "--trainer", "TaskRes",
                             "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5", "--enhanced-base", "none",
                             "--transforms", "random_flip", "normalize", "OPTIM.WARMUP_EPOCH", "-1"])
    assert args.seed == 0 and args.trainer == "TaskRes" and args.transforms == ["random_flip", "normalize"]
    assert args.opts == ["DATASET.NUM_SHOTS", "16", "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5",
                         "OPTIM.WARMUP_EPOCH", "-1"]
    cfg = train.setup_cfg(args)
    assert cfg.SEED == 0 and cfg.DATASET.NUM_SHOTS == 16 and cfg.INPUT.TRANSFORMS == ["random_flip", "normalize"]


def test_registry_suggests_names():
    reg = Registry("trainer")

    @reg.register()
    class TaskRes:
        pass

    assert reg.get("TaskRes") is TaskRes
    with pytest.raises(UserError, match="Did you mean 'TaskRes'"):
        reg.get("TaskRess")
    with pytest.raises(UserError, match="Did you mean 'TaskRes'"):
        reg.get("taskres")


def test_macro_f1_closed_form():
    y_true = [0, 0, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0]
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 -> 0
    assert macro_f1(y_true, y_pred) == pytest.approx(100 * (0.5 + 0.8 + 0.0) / 3)


def test_result_block_format(capsys):
    ev = Classification({0: "a", 1: "b"}, per_class=True)
    logits = torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0]] * 250)
    labels = torch.tensor([0, 1, 1, 1] * 250)
    ev.process(logits, labels)
    res = ev.evaluate()
    out = capsys.readouterr().out.splitlines()
    assert out[:6] == ["=> result", "* total: 1,000", "* correct: 750", "* accuracy: 75.0%",
                       "* error: 25.0%", f"* macro_f1: {res['macro_f1']:.1f}%"]
    assert "* class: 1 (b)\ttotal: 750\tcorrect: 500\tacc: 66.7%" in out
    assert ev.summary["accuracy"] == 75.0


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "r.json"
    save_json({"a": 1}, path)
    with pytest.raises(RuntimeError):
        with atomic_write(path, "w") as f:
            f.write('{"a": 2')
            raise RuntimeError("killed")
    assert path.read_text().startswith('{\n  "a": 1')
    assert os.listdir(tmp_path) == ["r.json"]


def test_train_loader_drops_last_only_with_a_full_batch():
    from engine.data import make_loader

    cfg = get_cfg_default()
    cfg.DATALOADER.NUM_WORKERS = 0
    items = list(range(10))
    small = make_loader(items, None, 256, train=True, cfg=cfg, device=torch.device("cpu"))
    assert not small.drop_last and len(small) == 1  # EuroSAT 1-shot: one partial batch per epoch
    big = make_loader(list(range(600)), None, 256, train=True, cfg=cfg, device=torch.device("cpu"))
    assert big.drop_last and len(big) == 2
    test = make_loader(list(range(600)), None, 256, train=False, cfg=cfg, device=torch.device("cpu"))
    assert not test.drop_last and len(test) == 3


@pytest.mark.parametrize("scheduler", ["cosine", "single_step", "multi_step"])
def test_zero_epoch_schedule_keeps_the_base_lr(scheduler):
    """OPTIM.MAX_EPOCH 0 (scoring the untrained model) builds a schedule that never steps."""
    from engine.schedule import lr_at_epoch

    cfg = get_cfg_default()
    merge_opts(cfg, ["OPTIM.MAX_EPOCH", "0", "OPTIM.LR_SCHEDULER", scheduler, "OPTIM.LR", "0.01",
                     "OPTIM.STEPSIZE", "(5,)"])
    assert lr_at_epoch(cfg.OPTIM, 0) == 0.01
