"""CLIP-LoRA (Zanella and Ben Ayed, CVPR Workshops 2024): low-rank adapters on the query, key and
value projections of every attention layer of both CLIP encoders, trained with cross-entropy on
the few-shot images.

Model. The text encoder turns one prompt per class, "a photo of a {}." (class names with "_" ->
" "), into the classifier at every training step (its LoRA weights are trained too); the image
encoder, also adapted, runs on the augmented pixels (random resized crop, scale 0.08-1, bicubic;
flip). logits = 100 * cos(image feature, text feature). LoRA: rank 2, alpha 1, dropout 0.25 on the
input of each low-rank branch, B initialised at zero (training starts at zero-shot CLIP with that
one prompt); the layers are trainers/common/lora.py's.

Recipe (the released code's, for every dataset and shot count, no validation): AdamW, lr 2e-4,
weight decay 1e-2, betas (0.9, 0.999); 500 x K iterations (K = shots) of batch 32, the loader's
last partial batch included; the learning rate follows a cosine over the iterations down to
1e-6; fp16 autocast with a loss scaler (PREC amp); the model after the last iteration is tested.
Nothing is chosen on data, so results.json's selection tier is "none".

Deviations and choices (config keys under TRAINER.CLIP_LoRA; the reference's values are the
defaults):
- SCALING "sqrt_rank": delta = alpha / sqrt(r) * B A x, what the released code computes (its
  alpha / r line is commented out); "rank" gives the LoRA paper's alpha / r.
- N_ITERS: iterations per shot (total = N_ITERS x DATASET.NUM_SHOTS). An epoch is one pass over the
  few-shot images; the run stops after the total, partway through its last epoch, and that epoch
  names the final checkpoint. OPTIM.MAX_EPOCH caps the passes (for a quick look; the cosine then
  spans the iterations actually run); the recipe's 8000 never binds (with two classes or more, 500
  x K iterations of batch 32 take at most 8000 passes). N_ITERS 0: OPTIM.MAX_EPOCH whole passes.
  Training on all images (DATASET.NUM_SHOTS < 1) needs N_ITERS 0; evaluating needs nothing.
- ENCODER "both" | "text" | "vision": where LoRA goes (the reference's --encoder). With one
  encoder frozen, its side is computed without gradients (text: once, as the reference does).
- RESNET_VISION "attnpool" (default) | "none": the released code supports ViT only. On a ResNet
  CLIP the image encoder's one attention layer, the attention pool (its q, k, v projections), gets
  LoRA; "none" adapts the text encoder only. BatchNorm stays in eval mode (the reference puts the
  whole model in train mode, which on a ResNet would update the running statistics).
- TARGETS: a subset of q, k, v (the reference's --params; its "o" is not offered).
- TEMPLATE: the prompt; LOGIT_SCALE: 100 as the reference hard-codes (released CLIP's
  exp(logit_scale) is 100 too).
- The reference keeps q, k, v as separate fp32 layers copied from the fp16 weights and runs
  everything under autocast; here the frozen weights are fp32 under PREC amp (autocast computes in
  fp16 either way). PREC fp16 (half frozen weights, no autocast, no loss scaler) and fp32 are
  options. Evaluation merges the deltas into the weights, as the reference's eval mode does.
- LoRA's A matrices are drawn from the global random stream (text layers, then image layers; q, k,
  v per layer), not in the reference's order (which also draws throw-away nn.Linear inits).

Checkpoints hold the LoRA matrices only (`lora/model.pth.tar-<epoch>`): A_t, B_t per layer, named
text<i> / visual<i> by the layer's order in its encoder. The weights are class-agnostic, so
base-to-new evaluation and other class sets use the adapted encoders with their own class names.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

import clip
from engine.errors import ConfigError
from engine.evaluator import batch_accuracy
from engine.optim import build_optimizer
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer

from .common.iterations import IterationBudget, IterationCosine
from .common.lora import SCALINGS, TARGETS, QKVLoRA, attach_lora

MODEL_NAME = "lora"
ENCODERS = ("both", "text", "vision")


def lora_classnames(classnames):
    return [c.replace("_", " ") for c in classnames]


@TRAINER_REGISTRY.register()
class CLIP_LoRA(Trainer):
    consumes = "pixels"
    cfg_node = "CLIP_LoRA"
    label = "CLIP-LoRA"

    @classmethod
    def extend_cfg(cls, cfg):
        cfg.TRAINER.CLIP_LoRA = CN()
        cfg.TRAINER.CLIP_LoRA.PREC = "amp"  # the reference: fp16 autocast + GradScaler
        cfg.TRAINER.CLIP_LoRA.RANK = 2
        cfg.TRAINER.CLIP_LoRA.ALPHA = 1.0
        cfg.TRAINER.CLIP_LoRA.DROPOUT = 0.25
        cfg.TRAINER.CLIP_LoRA.SCALING = "sqrt_rank"  # alpha / sqrt(r) (released code); "rank": alpha / r
        cfg.TRAINER.CLIP_LoRA.TARGETS = ["q", "k", "v"]
        cfg.TRAINER.CLIP_LoRA.ENCODER = "both"
        cfg.TRAINER.CLIP_LoRA.RESNET_VISION = "attnpool"
        cfg.TRAINER.CLIP_LoRA.N_ITERS = 500  # per shot; 0: OPTIM.MAX_EPOCH whole passes
        cfg.TRAINER.CLIP_LoRA.ETA_MIN = 1e-6  # the cosine's floor
        cfg.TRAINER.CLIP_LoRA.TEMPLATE = "a photo of a {}."
        cfg.TRAINER.CLIP_LoRA.LOGIT_SCALE = 100.0

    def check_cfg(self, cfg):
        c = cfg.TRAINER.CLIP_LoRA
        if int(c.RANK) < 1:
            raise ConfigError(f"TRAINER.CLIP_LoRA.RANK must be >= 1, got {c.RANK}")
        if not 0.0 <= float(c.DROPOUT) < 1.0:
            raise ConfigError(f"TRAINER.CLIP_LoRA.DROPOUT must be in [0, 1), got {c.DROPOUT}")
        if c.SCALING not in SCALINGS:
            raise ConfigError(f"TRAINER.CLIP_LoRA.SCALING must be one of {', '.join(SCALINGS)}, got {c.SCALING!r}")
        if not c.TARGETS or any(t not in TARGETS for t in c.TARGETS):
            raise ConfigError(f"TRAINER.CLIP_LoRA.TARGETS must be a non-empty subset of {list(TARGETS)}, "
                              f"got {list(c.TARGETS)}")
        if c.ENCODER not in ENCODERS:
            raise ConfigError(f"TRAINER.CLIP_LoRA.ENCODER must be one of {', '.join(ENCODERS)}, got {c.ENCODER!r}")
        if c.RESNET_VISION not in ("attnpool", "none"):
            raise ConfigError(f"TRAINER.CLIP_LoRA.RESNET_VISION must be 'attnpool' or 'none', got {c.RESNET_VISION!r}")
        if int(c.N_ITERS) < 0:
            raise ConfigError(f"TRAINER.CLIP_LoRA.N_ITERS must be >= 0, got {c.N_ITERS}")
        if "{}" not in c.TEMPLATE:
            raise ConfigError(f"TRAINER.CLIP_LoRA.TEMPLATE must hold {{}} for the class name, got {c.TEMPLATE!r}")

    # ---- model -----------------------------------------------------------------------------
    def build_model(self):
        c = self.cfg.TRAINER.CLIP_LoRA
        clip_model = self.load_clip(private=True)  # LoRA layers go into this copy only

        def make_lora(dim):
            return QKVLoRA(dim, tuple(c.TARGETS), int(c.RANK), float(c.ALPHA), float(c.DROPOUT), c.SCALING)

        self.text_encoder = clip.TextEncoder(clip_model)
        layers = {}
        if c.ENCODER in ("both", "text"):
            layers.update(attach_lora(self.text_encoder.transformer, "text", make_lora))
        if c.ENCODER in ("both", "vision"):
            layers.update(attach_lora(clip_model.visual, "visual", make_lora,
                                      attention_pool=c.RESNET_VISION == "attnpool"))
        self.text_adapted = any(k.startswith("text") for k in layers)
        self.visual_adapted = any(k.startswith("visual") for k in layers)
        if not layers:
            raise ConfigError(f"No attention layer to adapt in {self.cfg.MODEL.BACKBONE.NAME} with ENCODER "
                              f"{c.ENCODER!r} and RESNET_VISION {c.RESNET_VISION!r}")
        self.lora = nn.ModuleDict(layers).to(self.device)
        self.clip_model = clip_model
        self._image_dtype = clip.visual_dtype(clip_model)
        names = lora_classnames(self.dm.classnames)
        self.tokens = clip.tokenize([c.TEMPLATE.format(n) for n in names]).to(self.device)
        self.note_templates([c.TEMPLATE])  # one template, encoded afresh by the adapted text encoder
        print(f"Prompts: {[c.TEMPLATE.format(n) for n in names[:5]]}{' ...' if len(names) > 5 else ''}")
        print(f"LoRA (rank {c.RANK}, alpha {c.ALPHA}, scale {next(iter(layers.values())).scale:.4g}, dropout "
              f"{c.DROPOUT}) on {'/'.join(c.TARGETS)} of {sum(k.startswith('text') for k in layers)} text and "
              f"{sum(k.startswith('visual') for k in layers)} image attention layers: "
              f"{sum(p.numel() for p in self.lora.parameters()):,} parameters")
        self._frozen_text = None
        optim = build_optimizer(self.lora.parameters(), self.cfg.OPTIM)
        self.schedule = IterationCosine(optim, float(self.cfg.OPTIM.LR), 0, float(c.ETA_MIN))
        self.register_model(MODEL_NAME, self.lora, optim=optim, sched=self.schedule)

    def build_source(self):
        super().build_source()
        c = self.cfg.TRAINER.CLIP_LoRA
        n_iters = int(c.N_ITERS)
        budget = IterationBudget(self.source, self.dm, self.cfg, self.device, 0, lambda: self.epoch)
        cap = self.max_epoch * budget.per_epoch
        shots = int(self.cfg.DATASET.NUM_SHOTS)
        # (All images, NUM_SHOTS < 1: no per-shot budget; evaluating is fine, before_train refuses.)
        budget.total = min(n_iters * shots, cap) if n_iters > 0 and shots > 0 else cap
        self.source = budget
        self.max_epoch = budget.epochs
        self.schedule.total = budget.total
        self.schedule.at(0)
        print(f"Training {budget.total:,} iterations: {budget.epochs:,} passes of {budget.per_epoch} batches "
              f"over {len(self.dm.dataset.train_x)} images")

    def before_train(self):
        shots = self.cfg.DATASET.NUM_SHOTS
        if int(self.cfg.TRAINER.CLIP_LoRA.N_ITERS) > 0 and int(shots) < 1:
            raise ConfigError(f"TRAINER.CLIP_LoRA.N_ITERS counts iterations per shot, but DATASET.NUM_SHOTS is {shots}: "
                              "set the shots, or N_ITERS 0 to train OPTIM.MAX_EPOCH passes")
        super().before_train()

    # ---- forward -----------------------------------------------------------------------------
    def text_features(self):
        """Normalised class text features [K, D]: through the adapted text encoder (with its graph
        while training), or once, without gradients, when the text encoder is frozen."""
        if not self.text_adapted:
            if self._frozen_text is None:
                with torch.no_grad():
                    self._frozen_text = F.normalize(self.text_encoder.encode(self.tokens).float(), dim=-1)
            return self._frozen_text
        return F.normalize(self.text_encoder.encode(self.tokens).float(), dim=-1)

    def image_features(self, images):
        images = images.to(self.device, self._image_dtype)
        if images.is_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.visual_adapted):
            return self.clip_model.encode_image(images)

    def forward(self, images, text=None):
        text = self.text_features() if text is None else text
        feats = F.normalize(self.image_features(images).float(), dim=-1)
        return float(self.cfg.TRAINER.CLIP_LoRA.LOGIT_SCALE) * feats @ text.t()

    def forward_backward(self, images, labels):
        self.schedule.at(self.source.first_iteration(self.epoch) + self.batch_idx)
        logits = self.forward(images)
        loss = F.cross_entropy(logits, labels)
        self.model_backward_and_update(loss)
        return {"loss": loss.item(), "acc": batch_accuracy(logits, labels)}

    @torch.no_grad()
    def test(self, split=None, write=True):
        self.set_model_mode("eval")  # merged LoRA weights, no dropout, for the classifier too
        with self.autocast():
            self._eval_text = self.text_features()
        try:
            return super().test(split, write)
        finally:
            self._eval_text = None

    def model_inference(self, images):
        return self.forward(images, self._eval_text)

    def run_extras(self):
        c = self.cfg.TRAINER.CLIP_LoRA
        return {"lora_params": sum(p.numel() for p in self.lora.parameters()),
                "lora_layers": {"text": sum(k.startswith("text") for k in self.lora),
                                "visual": sum(k.startswith("visual") for k in self.lora)},
                "lora_scale": next(iter(self.lora.values())).scale, "scaling": c.SCALING,
                "iterations": self.source.total, "passes": self.source.epochs,
                "batches_per_pass": self.source.per_epoch, "template": c.TEMPLATE}
