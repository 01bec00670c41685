"""Dassl's evaluator registry and builder."""
from dassl.utils.registry import Registry

from .evaluator import Classification, EvaluatorBase

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator", "EvaluatorBase", "Classification"]

EVALUATOR_REGISTRY = Registry("evaluator")
EVALUATOR_REGISTRY.register(Classification)


def build_evaluator(cfg, **kwargs):
    """The evaluator named by TEST.EVALUATOR, built as `Evaluator(cfg, **kwargs)`."""
    if cfg.VERBOSE:
        print(f"Loading evaluator: {cfg.TEST.EVALUATOR}")
    return EVALUATOR_REGISTRY.get(cfg.TEST.EVALUATOR)(cfg, **kwargs)
