"""Dassl's metrics: `compute_accuracy`."""
from .accuracy import compute_accuracy

__all__ = ["compute_accuracy"]
