"""engine.precision: PREC parsing and the optimizer step (accumulation, loss scale, gradient rule)."""
import pytest
import torch

from engine import precision
from engine.errors import ConfigError
from engine.precision import GradientSteps


def test_prec_is_checked():
    from yacs.config import CfgNode as CN

    cfg = CN({"TRAINER": CN({"X": CN({"PREC": "bf16"})})})
    with pytest.raises(ConfigError, match="TRAINER.X.PREC must be one of fp16, fp32, amp"):
        precision.method_precision(cfg, "X")
    assert precision.method_precision(cfg, None) == "fp16"
    assert precision.grad_scaler("amp", torch.device("cpu")) is None


def sgd(*params):
    return torch.optim.SGD(list(params), lr=1.0)


def run_steps(steps, micro, scaler=None, rule=None):
    """Parameters after the method-computed gradients `micro` ([(g, *companions)] per micro-batch)."""
    p = torch.nn.Parameter(torch.zeros(3))
    o = sgd(p)
    acc = GradientSteps(steps)
    scale = precision.loss_scale(scaler, p.device)
    for i, (g, *companions) in enumerate(micro):
        acc.add([(p, g * scale, *[c * scale for c in companions])])
        if acc.due(last_batch=i + 1 == len(micro)):
            acc.step([o], scaler, rule)
    return p.detach(), p.grad


def test_explicit_gradients_are_summed_over_micro_batches_and_cleared():
    g1, g2 = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, -2.0, 1.0])
    p, grad = run_steps(2, [(g1,), (g2,)])
    assert torch.equal(p, -(g1 / 2 + g2 / 2))
    assert grad is None
    p, _ = run_steps(1, [(g1,), (g2,)])  # one step per micro-batch
    assert torch.equal(p, -(g1 + g2))


def test_rule_sees_unscaled_sums_and_its_result_is_stepped():
    seen = []

    def rule(g, kl):
        seen.append((g.clone(), kl.clone()))
        return g * (kl > 0)

    g, kl = torch.tensor([1.0, -2.0, 4.0]), torch.tensor([1.0, 1.0, -1.0])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    p, _ = run_steps(2, [(g, kl), (g, kl)], scaler, rule)
    assert torch.equal(seen[0][0], g) and torch.equal(seen[0][1], kl)
    assert torch.equal(p, -torch.tensor([1.0, -2.0, 0.0]))
    unscaled, _ = run_steps(2, [(g, kl), (g, kl)], None, rule)
    assert torch.equal(p, unscaled)


def test_overflow_skips_the_step_under_the_scaler_and_raises_without():
    bad = torch.tensor([1.0, float("inf"), 0.0])
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    p, _ = run_steps(1, [(bad,)], scaler, rule=lambda g: g)
    assert torch.equal(p, torch.zeros(3)) and scaler.get_scale() == 2.0
    with pytest.raises(FloatingPointError, match="Gradients are infinite or NaN"):
        run_steps(1, [(bad,)])


def test_gdr_on_unscaled_gradients_equals_gdr_on_scaled_ones():
    """Mask tuning's rule once ran on the scaled gradients (eps scaled too): with a power-of-two
    scale, unscaling first gives the same bits."""
    from trainers.common.masks import gdr_keep

    torch.manual_seed(0)
    g, kl = torch.randn(1000) * 1e-3, torch.randn(1000) * 1e-3
    scale = 2.0 ** 16
    u = torch.rand(1000)
    before = (g * scale) * gdr_keep(g * scale, kl * scale, 0.7, u, eps=1e-8 * scale) * (1.0 / scale)
    assert torch.equal(before, g * gdr_keep(g, kl, 0.7, u))
