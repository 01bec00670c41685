"""CoOp + R-AMT trained together: CoOp's prompt context and mask tuning's binary image-encoder
masks learn in the same steps, on pixels.

The student is CLIP with masked image weights and CoOp's prompts:
    logits = exp(logit_scale) * cos(f_masked(x), g(prompts))
Each step runs the text encoder once (with the context's graph) and the masked image encoder
once. The context takes the plain cross-entropy gradient (CoOp); the masks take the GDR
gradient of mask tuning (trainers/masktuning.py), whose teacher is the same model with the
masks off and the same prompts (detached): the regulariser then asks only what the masks change
about the image features, not what the prompts change. MASK.TEACHER store reads the teacher's
image features from the feature store as in MaskTuning.

Two optimizers: the masks follow OPTIM (the mask recipe: Adam, lr 8e-5), the context follows
TRAINER.CoOpMaskTuning.PROMPT_OPTIM / PROMPT_LR / PROMPT_WEIGHT_DECAY (CoOp's SGD, lr 0.002,
weight decay 5e-4), both on OPTIM's schedule (cosine over MAX_EPOCH). Checkpoints: `shared`
(bit-packed masks, as MaskTuning) and `prompt_learner` (CoOp's layout; the masks-off model with
this context is plain CoOp).

The original mask tuning code has no combination, and the paper does not say how its CoOp +
R-AMT row was trained; the sequential form (masks first, then CoOp on the masked encoder) is
trainer CoOp_RAMT (trainers/coop_ramt.py).
"""
from yacs.config import CfgNode as CN

from engine.errors import ConfigError
from engine.optim import OPTIMIZERS, build_optimizer
from engine.registry import TRAINER_REGISTRY
from engine.schedule import EpochScheduler
from engine.trainer import Trainer

from .coop import COOP_DEFAULTS, PromptClassifier, add_node, check_coop_cfg
from .masktuning import MaskTuning


@TRAINER_REGISTRY.register()
class CoOpMaskTuning(PromptClassifier, MaskTuning):
    @classmethod
    def extend_cfg(cls, cfg):
        MaskTuning.extend_cfg(cfg)
        add_node(cfg, "COOP", COOP_DEFAULTS)
        cfg.TRAINER.CoOpMaskTuning = CN()
        cfg.TRAINER.CoOpMaskTuning.PROMPT_OPTIM = "sgd"  # CoOp's optimizer for the context
        cfg.TRAINER.CoOpMaskTuning.PROMPT_LR = 0.002
        cfg.TRAINER.CoOpMaskTuning.PROMPT_WEIGHT_DECAY = 5e-4

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        check_coop_cfg(cfg)
        if cfg.TRAINER.CoOpMaskTuning.PROMPT_OPTIM not in OPTIMIZERS:
            raise ConfigError(f"TRAINER.CoOpMaskTuning.PROMPT_OPTIM must be one of {', '.join(OPTIMIZERS)}, "
                              f"got {cfg.TRAINER.CoOpMaskTuning.PROMPT_OPTIM!r}")
        if not float(cfg.TRAINER.CoOpMaskTuning.PROMPT_LR) >= 0:
            raise ConfigError(f"TRAINER.CoOpMaskTuning.PROMPT_LR must be >= 0, got {cfg.TRAINER.CoOpMaskTuning.PROMPT_LR}")

    def build_model(self):
        super().build_model()  # the masks (model `shared`) on a private CLIP, then the prompts
        node = self.cfg.TRAINER.CoOpMaskTuning
        optim_cfg = self.cfg.OPTIM.clone()
        optim_cfg.defrost()
        optim_cfg.NAME, optim_cfg.LR = node.PROMPT_OPTIM, float(node.PROMPT_LR)
        optim_cfg.WEIGHT_DECAY = float(node.PROMPT_WEIGHT_DECAY)
        optim = build_optimizer([self.prompt_learner.ctx], optim_cfg)
        self.register_model("prompt_learner", self.prompt_learner, optim=optim,
                            sched=EpochScheduler(optim, optim_cfg))

    def build_classifier(self, text_encoder):
        """CoOp's prompts on the same (private) CLIP instead of the fixed template classifier."""
        print("Building CoOp's prompts")
        self.build_prompts(self.clip_model)

    def ce_only_params(self):
        return [self.prompt_learner.ctx]

    def needs_trained_weights(self):
        return Trainer.needs_trained_weights(self)  # MASK.INIT_MASKS gives masks, never a context

    def run_extras(self):
        extras = {**super().run_extras(), **self.prompt_extras()}
        extras["teacher"] = "masks off, same prompts (detached); " + extras["teacher"]
        extras["prompt_lr"] = float(self.cfg.TRAINER.CoOpMaskTuning.PROMPT_LR)
        return extras
