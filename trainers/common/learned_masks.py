"""A method run on the image encoder masked by a MaskTuning run: the paper's CoOp + R-AMT and
Tip-Adapter + R-AMT (trainers/coop_ramt.py, tip_adapter_ramt.py, tip_adapter_f_ramt.py).

Sequential: the masks are learned first (MaskTuning, against zero-shot CLIP's hand-written
classifier, which is what GDR regularises towards), then multiplied into a private copy of CLIP
that the method loads. The method itself is unchanged, keeps its speed (the masked encoder is
frozen, so its features can come from the feature store, apart from the unmasked encoder's:
`backbone_id` carries the masks' digest) and one set of masks serves every method. The paper
does not say whether it trained both at once; the original code has no combination at all.
"""
from engine.describe import Need
from engine.errors import ConfigError
from engine.registry import TRAINER_REGISTRY

from .masks import fold_masks


# The masks a MaskTuning run learned: its output folder (or one of its checkpoint files).
MASKS = Need("init_masks", "MASK.INIT_MASKS", "", "MaskTuning")


def with_learned_masks(base, name, module):
    """Register trainer `name`: `base` on the encoder masked by MASK.INIT_MASKS (a MaskTuning
    run folder or one of its shared/model.pth.tar-<epoch> files)."""

    def check_cfg(self, cfg):
        base.check_cfg(self, cfg)
        if not cfg.MASK.INIT_MASKS:
            raise ConfigError(f"{name} runs {base.__name__} on learned masks: set MASK.INIT_MASKS to the "
                              "output folder (or a shared/model.pth.tar-<epoch> file) of a MaskTuning run")

    def load_clip(self, private=False):
        model = base.load_clip(self, private=True)
        path = self.cfg.MASK.INIT_MASKS
        zeros = fold_masks(model, path, float(self.cfg.MASK.THRESHOLD))
        print(f"Image encoder masked with {path}: {zeros:,} weights set to 0")
        self.record["init_masks"] = path
        return model

    doc = f"{base.__name__} on the image encoder masked by a MaskTuning run (MASK.INIT_MASKS)."
    # Its recipe is the base method's: the same configs, on the masked encoder. MASK is
    # MaskTuning's node: these two keys are all of it that the masked encoder depends on.
    nodes = base.config_nodes + ("MASK.INIT_MASKS", "MASK.THRESHOLD")
    cls = type(name, (base,), {"check_cfg": check_cfg, "load_clip": load_clip, "config_nodes": nodes,
                               "__doc__": doc, "__module__": module,
                               "config_folder": base.config_folder or base.__name__, "needs": base.needs + (MASKS,)})
    return TRAINER_REGISTRY.register(cls)
