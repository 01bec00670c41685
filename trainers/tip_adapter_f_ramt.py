"""Tip-Adapter-F + R-AMT: the fine-tuned cache model on the image encoder masked by a
MaskTuning run (MASK.INIT_MASKS)."""
from .common.learned_masks import with_learned_masks
from .tip_adapter_f import TipAdapterF

TipAdapterF_RAMT = with_learned_masks(TipAdapterF, "TipAdapterF_RAMT", __name__)
