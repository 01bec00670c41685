"""CoOp + R-AMT: CoOp on the image encoder masked by a MaskTuning run (MASK.INIT_MASKS)."""
from .coop import CoOp
from .common.learned_masks import with_learned_masks

CoOp_RAMT = with_learned_masks(CoOp, "CoOp_RAMT", __name__)
