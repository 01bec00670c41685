"""Dassl's image pipelines: this project's `build_transform` (Dassl's order and log lines)."""
from datasets.transforms import INTERPOLATION_MODES, SUPPORTED_TRANSFORMS, build_transform

__all__ = ["AVAI_CHOICES", "INTERPOLATION_MODES", "build_transform"]

# The INPUT.TRANSFORMS names implemented here (Dassl's AutoAugment/RandAugment policies are not).
AVAI_CHOICES = list(SUPPORTED_TRANSFORMS)
