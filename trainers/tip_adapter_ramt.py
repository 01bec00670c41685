"""Tip-Adapter + R-AMT: the training-free cache model on the image encoder masked by a
MaskTuning run (MASK.INIT_MASKS)."""
from .common.learned_masks import with_learned_masks
from .tip_adapter import TipAdapter

TipAdapter_RAMT = with_learned_masks(TipAdapter, "TipAdapter_RAMT", __name__)
