"""Dassl's evaluators: `Classification` is this project's evaluator (same numbers, same
`=> result` block) with Dassl's constructor."""
from engine.evaluator import Classification as _Classification

__all__ = ["EvaluatorBase", "Classification"]


class EvaluatorBase:
    """Base of custom evaluators: reset(), process(model_output, ground_truth), evaluate() -> dict
    whose first value is the one `test()` returns."""

    def __init__(self, cfg):
        self.cfg = cfg

    def reset(self):
        raise NotImplementedError

    def process(self, mo, gt):
        raise NotImplementedError

    def evaluate(self):
        raise NotImplementedError


class Classification(_Classification):
    """Accuracy, error and macro-F1 (plus per-class accuracy with TEST.PER_CLASS_RESULT)."""

    def __init__(self, cfg, lab2cname=None, **kwargs):
        self.cfg = cfg
        super().__init__(lab2cname, cfg.TEST.PER_CLASS_RESULT)
