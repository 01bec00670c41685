"""Regularized mask tuning (R-AMT, Zheng et al., ICCV 2023): learn binary masks on the frozen
CLIP image encoder's weights, with gradient dropout regularity (GDR) towards zero-shot CLIP.

Model. A fixed text classifier (one hand-written template per dataset, class names lower-cased
with "_" -> " ", encoded once in fp32 and L2-normalised) and CLIP's image encoder whose weights
W are replaced by W * 1[m > MASK.THRESHOLD]: the patch embedding and every attention
in/out-projection of a ViT ("AMT", MASK.MASK_MLP False), also the MLPs with MASK.MASK_MLP True
("R-MT"); every convolution and the attention-pool projections of a ResNet (BatchNorm stays in
eval mode). Scores m start at MASK.SCALE (1e-2) > threshold (5e-3), so training starts from
zero-shot CLIP exactly; a straight-through estimator trains them (trainers/common/masks.py). The masks
live on this run's private copy of CLIP; switching them off gives the zero-shot teacher from the
same weights. logits = exp(logit_scale) * cos(f(x), T).

One training step (as the original code computes it):
  g_ce = d/dm [CE(s, y) + MASK.LOSS_WEIGHT * sum_tensors ||m||_2]   (regulariser: MASK.MASK_LOSS)
  g_kl = d/dm [mean_b sum_c -softmax(q / T) log_softmax(s / T) T^2],  q = a * t + (1 - a) * s
         (t: teacher logits, masks off, no grad; T = MASK.GDR_T, a = MASK.FUSE_ALPHA)
  P = (sign(g_ce) (g_ce + g_kl) / (|g_ce| + |g_kl| + 1e-8) + 1) / 2,  U ~ U[0, 1) per element
  grad = ((1 - lambda) + lambda * 1[P > U]) * g_ce,  lambda = MASK.GDR_LAMBDA;  Adam step.
The KL term is never minimised; it only decides how often a CE gradient element is dropped.
Both gradients come from ONE student forward: they are vector-Jacobian products of the same
graph with the two logit cotangents, taken in one batched backward pass
(torch.autograd.grad(is_grads_batched=True)). The teacher runs under no_grad on the same batch.

Differences from the original code (config keys; the original behaviour stays reachable where
it is meaningful):
- MASK.GDR False trained nothing there (no backward, no step). Here it trains plain AMT,
  exactly as MASK.GDR_LAMBDA 0; with lambda 0 neither the teacher nor the KL gradient is
  computed (the update is identical; the step saves the teacher forward and half the backward).
  GDR's uniforms U (torch.rand_like per score tensor, on the scores' device, at the step) are
  still drawn, as the original draws them at every lambda; the teacher forward draws nothing
  (CLIP has no active dropout), so a lambda 0 run consumes the random stream of a lambda 1 run.
- The teacher is the same encoder with masks off, under no_grad (the original keeps a second
  fp32 copy whose gradients it computes and accumulates, unused); its logits are the same up
  to floating-point rounding.
- Checkpoints hold the binary masks bit-packed (3.6 MB for ViT-B/16 AMT) and no optimizer
  state; only the rolling resume snapshot holds real scores and Adam's moments. The original
  stores bytes plus the Adam state; its checkpoints load here too.
- TRAINER.MaskTuning.PREC: fp32 (default) is the original; fp16 runs the frozen weights in half
  precision on CUDA (masks, scores and the GDR arithmetic stay fp32); amp autocasts.
- TEST.NO_TEST True (the original configs) still tests once after training, as the original
  trainer does on its last epoch; here the test comes after "Finish training" so logs parse.
- MASK.INIT_MASKS: a MaskTuning checkpoint (or run folder) whose masks initialise this run.
- MASK.TEACHER "forward" (default, the original): the teacher runs on every batch. "store":
  training images are seeded views (each epoch draws one of FEATURES.NUM_VIEWS views per image,
  as FEATURES.MODE cached does for other methods) and the teacher's logits come from the
  zero-shot features of those views in the feature store (FEATURES.CACHE_DIR), encoded once by
  the masks-off encoder in this run's precision and shared by every later run (other lambdas,
  seeds with the same images, TaskRes/CoOp cached runs with the same encoder precision). Stored
  features are fp16, so these teacher logits differ from a teacher forward by that rounding; the
  student sees V fixed views per image instead of a fresh augmentation every epoch.

Combinations (the paper's CoOp + R-AMT and Tip-Adapter + R-AMT; no code for them in the
original): trainers/coop_ramt.py, tip_adapter_ramt.py and tip_adapter_f_ramt.py run those
methods unchanged on a private CLIP whose image encoder has the masks of MASK.INIT_MASKS folded
in (trainers/common/learned_masks.py).
"""
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize
from yacs.config import CfgNode as CN

import clip
from engine.errors import ConfigError
from engine.evaluator import batch_accuracy
from engine.features import CachedSource, ViewBatch
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer

from .common.masks import MaskSet, gdr_keep, masks_from_state, read_mask_checkpoint
from .common.templates import custom_template
from .common.text import class_prompt_features

MODEL_NAME = "shared"  # the original's model name: OUTPUT_DIR/shared/model.pth.tar-<epoch>


def mask_classnames(classnames):
    return [c.replace("_", " ").lower() for c in classnames]


def kl_soft_target(student, teacher, temperature=1.0, alpha=1.0):
    """The original KLLoss: mean_b sum_c -softmax(q / T) * log_softmax(s / T) * T^2 with the
    target q = alpha * teacher + (1 - alpha) * student (not detached)."""
    target = alpha * teacher + (1 - alpha) * student
    t = temperature
    return (-(F.softmax(target / t, dim=-1) * F.log_softmax(student / t, dim=-1)).sum(-1) * t * t).mean()


def logit_cotangents(logits, labels, teacher=None, temperature=1.0, alpha=1.0):
    """dCE/dlogits and (with a teacher) dKL/dlogits [B, C], float32: the only place where the
    two losses differ, so the encoder's backward pass can take both at once."""
    z = logits.detach().float().requires_grad_()
    with torch.enable_grad():
        ce = F.cross_entropy(z, labels)
        (c_ce,) = torch.autograd.grad(ce, z)
        if teacher is None:
            return ce.detach(), c_ce, None, None
        kl = kl_soft_target(z, teacher.detach().float(), temperature, alpha)
        (c_kl,) = torch.autograd.grad(kl, z)
    return ce.detach(), c_ce, kl.detach(), c_kl


def mask_gradients(logits, scores, c_ce, c_kl=None, batched=True, extra=()):
    """(g_ce, g_kl) per score tensor from ONE graph: one batched backward pass over the two
    stacked cotangents, or (batched False) two passes over the retained graph. With c_kl None
    only g_ce is computed (g_kl is None). `extra` parameters (trained beside the masks, e.g.
    CoOp's context) get their CE gradient appended to g_ce; the KL pass then runs separately,
    over the scores only."""
    extra = list(extra)
    if c_kl is None:
        return list(torch.autograd.grad(logits, list(scores) + extra, c_ce.to(logits.dtype))), None
    if extra:
        g_ce = torch.autograd.grad(logits, list(scores) + extra, c_ce.to(logits.dtype), retain_graph=True)
        return list(g_ce), list(torch.autograd.grad(logits, scores, c_kl.to(logits.dtype)))
    if batched:
        both = torch.autograd.grad(logits, scores, torch.stack([c_ce, c_kl]).to(logits.dtype),
                                   is_grads_batched=True)
        return [g[0] for g in both], [g[1] for g in both]
    g_ce = torch.autograd.grad(logits, scores, c_ce.to(logits.dtype), retain_graph=True)
    g_kl = torch.autograd.grad(logits, scores, c_kl.to(logits.dtype))
    return list(g_ce), list(g_kl)


@TRAINER_REGISTRY.register()
class MaskTuning(Trainer):
    consumes = "pixels"
    cfg_node = "MaskTuning"
    ignored_keys = ("MASK.MOMENTUM",)
    reference_image_encoder_prec = "fp16"  # only under PREC fp16 (the original runs fp32)

    @classmethod
    def extend_cfg(cls, cfg):
        cfg.TRAINER.MaskTuning = CN()
        # fp32 = the original; fp16: frozen weights in half precision on CUDA; amp: autocast.
        cfg.TRAINER.MaskTuning.PREC = "fp32"
        if "MASK" in cfg:
            return
        # The original's cfg.MASK block, with its defaults (its configs override several).
        cfg.MASK = CN()
        cfg.MASK.PREC = "fp32"  # precision of the text encoder that builds the classifier
        cfg.MASK.MASK_LOSS = False  # L2 regulariser on the scores
        cfg.MASK.LOSS_WEIGHT = 1e-6
        cfg.MASK.SCALE = 1e-2  # initial score
        cfg.MASK.THRESHOLD = 5e-3  # a weight is kept while its score is above this
        cfg.MASK.INIT = "1s"  # "1s": all SCALE; "uniform": U(0, SCALE)
        cfg.MASK.THRESHOLD_FN = "binarizer"  # the only working choice in the original
        cfg.MASK.MASK_MLP = True  # ViT MLPs masked too (the released configs set False)
        cfg.MASK.FUSE_ALPHA = 1.0  # KL target = a * teacher + (1 - a) * student
        cfg.MASK.MOMENTUM = 0.1  # unused (as in the original)
        cfg.MASK.GDR = True  # False: plain AMT (the original then trained nothing)
        cfg.MASK.GDR_T = 1.0  # KL temperature
        cfg.MASK.GDR_LAMBDA = 1.0  # leak: 0 = plain CE, 1 = drop conflicting elements
        # Not in the original: initial masks from a MaskTuning checkpoint file or run folder.
        cfg.MASK.INIT_MASKS = ""
        # Not in the original: "store" reads the teacher's features from the feature store.
        cfg.MASK.TEACHER = "forward"

    def check_cfg(self, cfg):
        m = cfg.MASK
        if m.THRESHOLD_FN != "binarizer":
            raise ConfigError(f"MASK.THRESHOLD_FN must be 'binarizer' (the original's 'ternarizer' refers to a "
                              f"class it never defines), got {m.THRESHOLD_FN!r}")
        if m.INIT not in ("1s", "uniform"):
            raise ConfigError(f"MASK.INIT must be '1s' or 'uniform', got {m.INIT!r}")
        if not 0.0 <= float(m.GDR_LAMBDA) <= 1.0:
            raise ConfigError(f"MASK.GDR_LAMBDA must be in [0, 1], got {m.GDR_LAMBDA}")
        if float(m.GDR_T) <= 0:
            raise ConfigError(f"MASK.GDR_T must be positive, got {m.GDR_T}")
        if m.TEACHER not in ("forward", "store"):
            raise ConfigError(f"MASK.TEACHER must be 'forward' (a teacher pass per batch, the original) or "
                              f"'store' (zero-shot features of seeded views from the feature store), got {m.TEACHER!r}")
        if m.PREC not in ("fp32", "fp16"):
            raise ConfigError(f"MASK.PREC must be 'fp32' or 'fp16', got {m.PREC!r}")

    def __init__(self, cfg, models=None):
        if cfg.TEST.NO_TEST:
            print("Note: TEST.NO_TEST is True (as in the original configs); MaskTuning tests once after "
                  "training anyway, as the original trainer does")
            cfg = cfg.clone()
            cfg.defrost()
            cfg.TEST.NO_TEST = False
            cfg.freeze()
        super().__init__(cfg, models)

    # ---- model -----------------------------------------------------------------------------
    def build_model(self):
        cfg = self.cfg.MASK
        clip_model = self.load_clip(private=True)  # masks are attached to this copy only
        text_encoder = clip.TextEncoder(clip_model)
        if cfg.PREC == "fp32" and text_encoder.dtype != torch.float32:
            for module in (clip_model.transformer, clip_model.token_embedding, clip_model.ln_final):
                module.float()
            for p in (clip_model.positional_embedding, clip_model.text_projection):
                p.data = p.data.float()
            text_encoder = clip.TextEncoder(clip_model)
        self.build_classifier(text_encoder)
        self.logit_scale = clip_model.logit_scale.detach().exp().float().to(self.device)

        self.visual = clip_model.visual
        self.masks = MaskSet.attach(self.visual, mask_mlp=bool(cfg.MASK_MLP), init=cfg.INIT,
                                    scale=float(cfg.SCALE), threshold=float(cfg.THRESHOLD))
        self._image_dtype = self.masks.frozen_weight(self.masks.names[0]).dtype
        if cfg.INIT_MASKS:
            sd, state, path = read_mask_checkpoint(cfg.INIT_MASKS)
            threshold = float(state.get("mask_threshold", cfg.THRESHOLD))
            self.masks.load_masks(masks_from_state(sd, self.masks.shapes, threshold, path), path)
            print(f"Initial masks loaded from {path}")
        entries = self.masks.num_entries()
        visual_params = sum(p.numel() for n, p in self.visual.named_parameters() if not n.endswith("mask_real"))
        print(f"Masked weights: {len(self.masks.names)} tensors, {entries:,} mask entries "
              f"({100.0 * entries / visual_params:.1f}% of the {visual_params:,} image-encoder parameters); "
              f"MLPs {'masked' if cfg.MASK_MLP else 'not masked'}")
        print(f"Init Sparsity: {self.sparsity():.4g}%")
        self.register_model(MODEL_NAME, self.masks)

    def pixel_views(self):
        return int(self.cfg.FEATURES.NUM_VIEWS) if self.cfg.MASK.TEACHER == "store" else 0

    def after_source(self):
        self.teacher_store = None
        if self.cfg.MASK.TEACHER == "store":
            # The masks-off encoder is zero-shot CLIP: its stored features are everyone's.
            self.teacher_store = CachedSource(self.cfg, self.dm, self._teacher_features, self.device,
                                              *self._feature_identity())

    def _teacher_features(self, images):
        with self.masks.off(), parametrize.cached():
            return self.encode_images(images)

    def before_train(self):
        super().before_train()
        if self.teacher_store is not None and self.gdr_lambda > 0 and self.start_epoch < self.max_epoch:
            with self.timer("prepare"):
                self.teacher_store.train_feats  # every view's zero-shot features, before epoch 1's ETA

    def build_classifier(self, text_encoder):
        """The fixed classifier: one hand-written prompt per class, encoded once."""
        names = mask_classnames(self.dm.classnames)
        template = custom_template(self.cfg)
        print(f"Prompts: {[template.format(c) for c in names[:5]]}{' ...' if len(names) > 5 else ''}")
        feats = class_prompt_features(self, text_encoder, names, [template]).float().mean(1)
        self.prompt_classifier = F.normalize(feats, dim=-1).to(self.device)

    def needs_trained_weights(self):
        """--eval-only with MASK.INIT_MASKS evaluates those masks (no --model-dir needed)."""
        return super().needs_trained_weights() and not self.cfg.MASK.INIT_MASKS

    @property
    def gdr_lambda(self):
        return float(self.cfg.MASK.GDR_LAMBDA) if self.cfg.MASK.GDR else 0.0

    def classifier(self):
        """Normalised class text features [K, D]: one hand-written prompt per class, fixed."""
        return self.prompt_classifier

    def ce_only_params(self):
        """Trainable parameters besides the masks (none here); they take the plain CE gradient."""
        return []

    def forward(self, images, text=None):
        images = images.to(self.device, self._image_dtype)
        if images.is_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.logits(self.visual(images), text)

    def logits(self, image_features, text=None):
        text = self.classifier() if text is None else text
        return self.logit_scale * F.normalize(image_features.float(), dim=-1) @ text.t()

    def teacher_logits(self, batch, text=None):
        """Zero-shot CLIP on the same batch (masks off, no graph): a forward of the same encoder,
        or (MASK.TEACHER store) the stored features of the batch's views."""
        with torch.no_grad():
            if self.teacher_store is not None:
                return self.logits(self.teacher_store.train_feats[batch.index, batch.view], text)
            with self.masks.off(), parametrize.cached():
                return self.forward(batch, text)

    # ---- one step ----------------------------------------------------------------------------
    def forward_backward(self, batch, labels):
        cfg = self.cfg.MASK
        lam = self.gdr_lambda
        text = self.classifier()  # once per step; the teacher shares it, without its graph
        teacher = self.teacher_logits(batch, text.detach()) if lam > 0 else None
        images = batch.images if isinstance(batch, ViewBatch) else batch
        with parametrize.cached():  # each masked weight computed once per forward
            logits = self.forward(images, text)
        scores = self.masks.scores()
        # Cotangents scaled as a scaled backward would (PREC amp on CUDA), so that half-precision
        # backward passes do not underflow; the engine unscales at the step.
        scale = self.loss_scale()
        ce, c_ce, kl, c_kl = logit_cotangents(logits, labels, teacher, float(cfg.GDR_T), float(cfg.FUSE_ALPHA))
        with _no_autocast(self.device):
            g_ce, g_kl = mask_gradients(logits, scores, c_ce * scale, None if c_kl is None else c_kl * scale,
                                        extra=self.ce_only_params())
        summary = {"loss": ce.item(), "acc": batch_accuracy(logits.detach(), labels)}
        if cfg.MASK_LOSS:
            weight = float(cfg.LOSS_WEIGHT)
            with torch.no_grad():
                norms = [m.norm() for m in scores]
                for g, m, n in zip(g_ce, scores, norms):
                    if n > 0:
                        g.add_(m, alpha=weight * scale / float(n))
            summary["mask_loss"] = weight * float(sum(norms))
        if kl is not None:
            summary["kl"] = kl.item()

        def gdr(g, g_kl=None):  # at the step, on the unscaled sums over its micro-batches
            # U is drawn at every lambda, as the original does, so that runs of any lambda with
            # the same seed consume the same random stream (at lambda 0 keep is exactly 1).
            return g if g_kl is None else g.mul_(gdr_keep(g, g_kl, lam, torch.rand_like(g)))

        # Each score's KL gradient rides along its CE gradient as GDR's companion; at lambda 0
        # (not computed: it cannot change the update) a zero scalar stands in for it.
        kl_of = g_kl if g_kl is not None else [torch.zeros((), device=s.device) for s in scores]
        params = scores + self.ce_only_params()
        self.apply_gradients([(p, g, *kl_of[i:i + 1]) for i, (p, g) in enumerate(zip(params, g_ce))], rule=gdr)
        return summary

    # ---- statistics, evaluation ---------------------------------------------------------------
    def sparsity(self):
        """% of mask entries that are 0 (the paper's "masked parameters")."""
        stats = self.masks.layer_stats()
        return 100.0 * sum(z for _, _, z in stats) / max(1, sum(n for _, n, _ in stats))

    def test(self, split=None, write=True):
        with parametrize.cached():  # masks folded into the weights once for the whole split
            result = super().test(split, write)
        print(f"Sparsity: {self.sparsity():.4g}%")
        return result

    def after_train(self):
        print("Mask sparsity per layer (% of entries masked):")
        for name, n, zeros in self.masks.layer_stats():
            print(f"  {name[:-len('.mask_real')]:45s} {100.0 * zeros / n:8.4f}%  ({zeros:,} of {n:,})")
        print(f"Sparsity: {self.sparsity():.4g}% of {self.masks.num_entries():,} mask entries")
        super().after_train()

    def run_extras(self):
        stats = self.masks.layer_stats()
        entries, zeros = sum(n for _, n, _ in stats), sum(z for _, _, z in stats)
        visual = sum(p.numel() for n, p in self.visual.named_parameters() if not n.endswith("mask_real"))
        return {"mask_entries": entries, "masked_entries": zeros, "sparsity_percent": 100.0 * zeros / max(1, entries),
                "masked_percent_of_image_encoder": 100.0 * zeros / max(1, visual),
                "per_layer_sparsity_percent": {n[:-len(".mask_real")]: 100.0 * z / c for n, c, z in stats},
                "gdr_lambda": self.gdr_lambda, "mask_mlp": bool(self.cfg.MASK.MASK_MLP),
                "teacher": ("zero-shot features of the batch's seeded views, from the feature store"
                            if self.teacher_store is not None else "same encoder, masks off, no_grad, same batch"),
                "teacher_encoder": self.teacher_store.stats() if self.teacher_store is not None else None}

    # ---- checkpoints ---------------------------------------------------------------------------
    def checkpoint_weights(self, name, with_rng):
        """Resume snapshots (with_rng) keep the real scores and Adam's state (exact resume);
        every other checkpoint of the masks holds the bit-packed masks only."""
        if with_rng or name != MODEL_NAME:
            return super().checkpoint_weights(name, with_rng)
        return self.masks.packed(), None

    def checkpoint_extras(self, name):
        if name != MODEL_NAME:
            return {}
        return {"mask_format": "packbits: bool mask flattened row-major, first entry in the most significant bit",
                "mask_shapes": {n: list(s) for n, s in self.masks.shapes.items()},
                "mask_threshold": float(self.cfg.MASK.THRESHOLD),
                "sparsity_percent": self.sparsity()}

    def decode_state(self, name, state_dict, path):
        """Bit-packed masks (ours, or the bytes of the original implementation) become scores."""
        if any(not (torch.is_tensor(v) and v.is_floating_point()) for v in state_dict.values()):
            print("Binary masks loaded (scores set to threshold +- margin; training resumed from such a "
                  "checkpoint restarts Adam's moments)")
            state_dict = self._models[name].decode_state(state_dict, float(self.cfg.MASK.THRESHOLD), path)
        return state_dict


class _no_autocast:
    """Backward passes run outside autocast (PyTorch's advice); a no-op when it is off."""

    def __init__(self, device):
        self.ctx = torch.autocast(device.type, enabled=False) if torch.is_autocast_enabled(device.type) else None

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            return self.ctx.__exit__(*exc)
        return False
