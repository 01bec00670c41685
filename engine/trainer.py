"""Trainer lifecycle (the role of Dassl's SimpleTrainer/TrainerX): build stages, the epoch
loop, evaluation and the run record (results.json). Checkpoints are `engine.checkpointing`'s,
precision and the optimizer step `engine.precision`'s.

A method file subclasses `Trainer` and implements:
    build_model()        load CLIP (`self.load_clip()`), build the learnable part and
                         `self.register_model(name, module)` for what is trained and saved
    forward(inputs)      logits for a batch of inputs (image features, or pixels when
                         `consumes = "pixels"`)
and may override `forward_backward(inputs, labels)` (one optimisation step; the default is
cross-entropy on `forward`), `encode_images(images)`, `check_cfg(cfg)`, `extend_cfg(cfg)`
(classmethod adding its config node), `after_source()` (runs once the feature source exists,
before training, resuming or evaluation: build a cache from `self.source.split_features(...)`,
initialise a probe), `fit()` (closed-form methods: set `closed_form = True`, no epochs run),
`run_extras()` (method values for results.json) and the checkpoint hooks of
`engine.checkpointing` (`check_loaded`, `adapt_loaded_state`, `decode_state`,
`checkpoint_weights`, `checkpoint_extras`).

Class attributes a method may set:
    cfg_node            name of its TRAINER.<X> node; its PREC (fp16 / fp32 / amp) is applied
                        here: fp16 = half encoders on CUDA, amp = autocast + GradScaler around
                        every step, fp32 = fp32 encoders; trainable parameters stay fp32
    config_nodes        the config it reads beyond the common keys and what its extend_cfg adds:
                        TRAINER.<X> nodes by name ("COOP"), other nodes or keys by path
                        ("MASK.INIT_MASKS"); default (cfg_node,). The three are all a run
                        records (run_config.json, results.json) and compares on a rerun
    ignored_keys        keys it has only so that reference yaml files load, e.g.
                        "TRAINER.TaskRes.N_CTX": neither recorded nor compared
    consumes            "features" (default) or "pixels"
    feature_kind        "embedding" (default) or "pre-projection": which image features
    closed_form         True: `fit()` replaces the epoch loop
    ignored_load_keys   state-dict keys a checkpoint may lack or carry without error (CoOp
                        drops its token prefix/suffix buffers); everything else loads strictly
    per_class_keys      state-dict entries with one row per class: loading a checkpoint trained
                        on other classes (base -> new) keeps the rows of classes it saw and
                        takes the freshly built rows (the zero-shot classifier) for the others;
                        a 1000-row ImageNet checkpoint keeps the rows of an ImageNet subset
    class_dims          {key: class dimension} of per-class entries laid out otherwise (sliced
                        for ImageNet subsets only; the method matches them by name itself)

What tools need to know about a method (its table label, sweep axes, run-folder variant,
products, evaluation-only) are the `engine.describe.MethodFacts` attributes; its recipe lives
in its config folder (engine/recipes.py).

Construction runs the build stages in order: `setup`, `build_data`, `build_model`,
`load_init_weights`, `build_source`, `after_source`, `build_evaluator` (the Dassl layer runs
them in its own order).
"""
import datetime
import os
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F

import clip

from . import calibration
from . import checkpoint as ckpt
from . import precision
from . import record
from .checkpointing import FIT_FILE, STAGED, Checkpointing
from .config import check_cfg as check_common_cfg
from .data import DataManager
from .describe import MethodFacts
from .errors import UserError
from .evaluator import Classification, batch_accuracy
from .features import build_source
from .io import save_json
from .models import load_clip_model
from .optim import build_optimizer
from .precision import PRECISIONS  # noqa: F401  (re-exported)
from .selection import Selection, meets as selection_meets
from .schedule import EpochScheduler


def select_device(cfg):
    if cfg.USE_CUDA and torch.cuda.is_available():
        return torch.device("cuda")
    if cfg.USE_CUDA and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class AverageMeter:
    def __init__(self):
        self.val = self.sum = self.count = 0.0

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n

    @property
    def avg(self):
        return self.sum / max(self.count, 1)


class _OwnNode:
    """`Trainer.config_nodes` unless a method sets it: its own TRAINER.<cfg_node>."""

    def __get__(self, obj, owner):
        return (owner.cfg_node,) if owner.cfg_node else ()


class Trainer(Checkpointing, MethodFacts):
    consumes = "features"  # or "pixels"
    cfg_node = None  # TRAINER.<cfg_node>.PREC is the method's precision
    config_nodes = _OwnNode()
    ignored_keys = ()
    closed_form = False
    # Precision of the frozen image encoder on CUDA with PREC fp16 when
    # FEATURES.IMAGE_ENCODER_PREC is "" (TaskRes casts its image encoder to fp32).
    reference_image_encoder_prec = "fp16"
    # The image features a feature method consumes: "embedding" (CLIP's image embedding) or
    # "pre-projection" (the input of the last image projection, `clip.image_projection`, for
    # methods that learn it). Each kind is stored under its own identity (`_feature_identity`).
    feature_kind = "embedding"

    @classmethod
    def extend_cfg(cls, cfg):
        """Add this trainer's config node (called for every registered trainer)."""

    def check_cfg(self, cfg):
        """Trainer-specific config checks; raise ConfigError."""

    def __init__(self, cfg, models=None):
        """`models`: a ModelCache shared by the runs of a sweep (None: load a private model)."""
        self.setup(cfg, models)
        with self.timer("build"):
            self.build_data()
            self.build_model()
            self.load_init_weights()
            self.build_source()
        with self.timer("prepare"):
            self.after_source()
        self.build_evaluator()

    # ---- build stages ------------------------------------------------------------------------
    def setup(self, cfg, models=None):
        """Config checks, device, precision, the model registry and the run record."""
        check_common_cfg(cfg)
        self.check_cfg(cfg)
        if cfg.TEST.SALS and self.consumes != "features" and type(self).zero_shot_logits is Trainer.zero_shot_logits:
            raise UserError(f"TEST.SALS needs zero-shot logits, which {type(self).__name__} does not provide "
                            f"(it consumes pixels); set TEST.SALS False")
        self.cfg = cfg
        self.model_cache = models
        self.device = select_device(cfg)
        self.prec = precision.method_precision(cfg, self.cfg_node)
        self._models, self._optims, self._scheds = OrderedDict(), OrderedDict(), OrderedDict()
        self.start_epoch = self.epoch = 0
        self.max_epoch = int(cfg.OPTIM.MAX_EPOCH)
        self.output_dir = cfg.OUTPUT_DIR
        self.writer = None
        self.best_result = -float("inf")
        self.grad_scaler = None  # PREC amp on CUDA (not `scaler`: Dassl files keep their own under that name)
        self._steps = precision.GradientSteps(cfg.TRAIN.GRAD_ACCUM_STEPS)
        self.record = {}  # method values for results.json; see run_extras()
        self.selection = Selection()  # what was chosen on data, and on which split; see chose()
        self.timer = record.PhaseTimer()

    def build_data(self):
        self.dm = DataManager(self.cfg, self.device)
        self.dm.on_read = self._note_read

    def _note_read(self, split):
        """A split's images were read: outside the final evaluation, that may have informed a choice."""
        if split != "train" and not getattr(self, "_final_evaluation", False):
            self.selection.read(split, self.dm.selection_tier(split))

    def build_source(self):
        """The feature source: image features (cached or encoded online), or pixels."""
        encode = self.encode_images if self.consumes == "features" else None
        if encode is not None and getattr(self, "private_clip", False) and self.cfg.FEATURES.MODE == "cached":
            # Its encoder is not the released weights: stored features would be wrong for others.
            print("FEATURES.MODE cached: this method modifies its own copy of the encoder, so its "
                  "features are encoded for this run only, not stored")
            encode_cfg = self.cfg.clone()
            encode_cfg.defrost()
            encode_cfg.FEATURES.MODE = "online"
            self.source = build_source(encode_cfg, self.dm, encode, self.device)
        else:
            self.source = build_source(self.cfg, self.dm, encode, self.device, *self._feature_identity(),
                                       pixel_views=self.pixel_views())

    def build_evaluator(self):
        print("Loading evaluator: Classification")
        self.evaluator = Classification(self.dm.lab2cname, self.cfg.TEST.PER_CLASS_RESULT)

    def after_source(self):
        """Hook: runs once the feature source exists (`self.source.split_features`)."""

    def pixel_views(self):
        """Pixel trainers: 0 (default, the reference) augments every training batch afresh; V > 0
        trains on V seeded views per image, and batches are `engine.features.ViewBatch`es that
        say which (image, view) each row is, e.g. to read its features from the store."""
        return 0

    def fit(self):
        """Closed-form methods (`closed_form = True`): fit the registered models."""
        raise NotImplementedError(f"{type(self).__name__} sets closed_form but has no fit()")

    def needs_trained_weights(self):
        """True when evaluating without a checkpoint would score an untrained model: the method
        registered learnable modules and MODEL.INIT_WEIGHTS gives none. `--eval-only` then needs
        `--model-dir` (to evaluate the untrained model on purpose, train for OPTIM.MAX_EPOCH 0)."""
        return bool(self._models) and not self.cfg.MODEL.INIT_WEIGHTS

    def chose(self, key, value, split):
        """Record a choice made on data (a hyperparameter, an epoch): `split` is the split it was
        chosen on ("train", "val" or "test"); its tier comes from what that split holds here."""
        self.selection.chose(key, value, split, self.dm.selection_tier(split))

    def zero_shot_logits(self, features):
        """Zero-shot CLIP's logits for a batch of image features (TEST.SALS): CLIP's logit scale
        times the cosine to the dataset's single hand-written prompt per class. A method that
        consumes pixels overrides this (the engine cannot tell its encoder from CLIP's)."""
        if getattr(self, "clip_model", None) is None:
            raise UserError(f"TEST.SALS needs zero-shot logits, which {type(self).__name__} does not provide "
                            f"(it loaded no CLIP); set TEST.SALS False")
        if getattr(self, "_zero_shot", None) is None:
            from datasets import info
            template = info(self.cfg.DATASET.NAME).template
            weights = calibration.zero_shot_classifier(self.clip_model, self.dm.classnames, template)
            self._zero_shot = (weights.to(self.device), float(self.clip_model.logit_scale.exp()))
            self.record.update(sals=True, sals_template=template)
        weights, scale = self._zero_shot
        features = features.float()
        return scale * (features / features.norm(dim=-1, keepdim=True)) @ weights.t()

    def note_templates(self, templates, kind=None):
        """Record the prompt templates this run's text classifier is built from (results.json
        extras `zero_shot_template`, `templates`): zero-shot numbers differ by template (a single
        hand-written prompt vs an ensemble), so every method built on them says which it used and
        the comparison table names it. The shared builders call it (trainers/common/text.py
        `class_prompt_features`, tip_cache `text_classifier`); `kind` "learned" for trained prompts."""
        self.record.update(record.text_templates(templates, kind))

    def run_extras(self):
        """Hook: plain values describing this run's method (alpha, base, ...) for results.json."""
        return {}

    # ---- precision ---------------------------------------------------------------------------
    def autocast(self):
        """The forward context of a step or an evaluation batch: autocast under PREC amp (fp16
        on CUDA, bf16 on the CPU, where fp16 autocast is not supported), else nothing."""
        return precision.autocast(self.prec, self.device)

    def loss_scale(self):
        """What a backward pass scales gradients by (the GradScaler's scale; 1.0 without one):
        a method that computes gradients itself multiplies its cotangents by it."""
        return precision.loss_scale(self.grad_scaler, self.device)

    # ---- model helpers for method files ------------------------------------------------------
    def load_clip(self, private=False):
        """The frozen CLIP in this method's precision: PREC fp16 keeps OpenAI's half weights on
        CUDA (the image tower in `reference_image_encoder_prec` unless
        FEATURES.IMAGE_ENCODER_PREC says otherwise); fp32 and amp load fp32 weights. The model
        may be shared with other runs of a sweep: never modify it; a method that casts, patches
        or masks the encoder passes `private=True` and gets its own copy."""
        cfg = self.cfg
        if not cfg.MODEL.BACKBONE.NAME:
            raise UserError("MODEL.BACKBONE.NAME is empty: set a CLIP name (e.g. RN50), a checkpoint path, "
                            "or an open_clip model:pretrained pair, in the config file or with --backbone")
        text_prec = "fp16" if self.prec == "fp16" else "fp32"
        visual_prec = cfg.FEATURES.IMAGE_ENCODER_PREC or (
            self.reference_image_encoder_prec if self.prec == "fp16" else "fp32")
        self.clip_model = load_clip_model(cfg.MODEL.BACKBONE.NAME, self.device, text_prec, visual_prec,
                                          cfg.MODEL.BACKBONE.CACHE_DIR, self.model_cache, private,
                                          cfg.MODEL.BACKBONE.ISOLATED_RNG)
        self.private_clip = private
        self._fit_input_size(self.clip_model.input_resolution)
        return self.clip_model

    def _fit_input_size(self, res):
        """Images must have the backbone's resolution (RN50x16: 384, ViT-L/14@336px: 336); every
        other size crashes in the encoder, as the reference RN50x16 recipe at 224 does."""
        size = tuple(self.cfg.INPUT.SIZE)
        if size == (res, res):
            return
        print(f"INPUT.SIZE {size} does not fit {self.cfg.MODEL.BACKBONE.NAME} (input resolution {res}); "
              f"using ({res}, {res})")
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.INPUT.SIZE = (res, res)
        cfg.freeze()
        self.cfg = cfg
        self.dm.set_cfg(cfg)

    def _feature_identity(self):
        """What the cached features depend on besides the transform: weights and encoder dtype."""
        model = getattr(self, "clip_model", None)
        if model is None:
            return "", ""
        dtype = next(model.visual.parameters()).dtype
        tag = f"{self.device.type}-{dtype}" + ("" if self.feature_kind == "embedding" else f"|{self.feature_kind}")
        return getattr(model, "backbone_id", self.cfg.MODEL.BACKBONE.NAME), tag

    def encoder_dtypes(self):
        """{"image", "text": the dtype of that tower's weights} of the loaded CLIP ({} without one),
        read from the model, so that methods' own casts count."""
        model = getattr(self, "clip_model", None)
        if model is None:
            return {}
        dtypes = {"image": next(model.visual.parameters()).dtype}
        try:
            dtypes["text"] = clip.TextEncoder(model).dtype
        except UserError:
            pass  # a text tower of another layout (open_clip's HF towers): its dtype is not recorded
        return dtypes

    def encode_images(self, images):
        if images.is_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.feature_kind == "pre-projection":
            return clip.encode_image_pre_projection(self.clip_model, images)
        return clip.encode_image(self.clip_model, images)

    def register_model(self, name, module, optim=None, sched=None, params=None):
        """Register a trainable module; builds the optimizer and the LR schedule from OPTIM
        unless given (closed-form methods get neither). Only registered modules are saved,
        loaded and switched to train mode."""
        if name in self._models:
            raise KeyError(f"model {name!r} registered twice")
        if optim is None and not self.closed_form:
            trainable = params if params is not None else [p for p in module.parameters() if p.requires_grad]
            optim = build_optimizer(trainable, self.cfg.OPTIM)
        if sched is None and optim is not None:
            sched = EpochScheduler(optim, self.cfg.OPTIM)
        self._models[name], self._optims[name], self._scheds[name] = module, optim, sched

    def get_model_names(self, names=None):
        return list(self._models) if names is None else ([names] if isinstance(names, str) else list(names))

    def num_trainable_params(self):
        return sum(p.numel() for m in self._models.values() for p in m.parameters() if p.requires_grad)

    def get_current_lr(self):
        optim = next((o for o in self._optims.values() if o is not None), None)
        return optim.param_groups[0]["lr"] if optim is not None else 0.0

    def set_model_mode(self, mode):
        for m in self._models.values():
            m.train(mode == "train")

    def model_backward_and_update(self, loss):
        """backward (loss-scaled under PREC amp on CUDA) then apply_gradients()."""
        if not torch.isfinite(loss):
            raise FloatingPointError("Loss is infinite or NaN!")
        self._steps.backward(loss, self._optimizers(), self.grad_scaler)
        self.apply_gradients()

    def apply_gradients(self, grads=None, rule=None):
        """Ends a micro-batch: once TRAIN.GRAD_ACCUM_STEPS of them (or the epoch's last batch)
        are in, steps the optimizers (through the GradScaler under PREC amp on CUDA).

        Without `grads` the step uses the `.grad` that backward accumulated. A method that
        computes its gradients itself passes `grads` = [(param, gradient, *companions)],
        loss-scaled (cotangents times `loss_scale()`); they are summed over the micro-batches
        (each divided by GRAD_ACCUM_STEPS), and at the step `rule(gradient, *companions)` gets
        them unscaled and returns the gradient to step with (e.g. a gradient rule that needs a
        second loss's gradient as companion)."""
        if grads is not None:
            self._steps.add(grads)
        last = getattr(self, "num_batches", None) is not None and self.batch_idx + 1 == self.num_batches
        if self._steps.due(last):
            self._steps.step(self._optimizers(), self.grad_scaler, rule)

    def _optimizers(self):
        return [o for o in self._optims.values() if o is not None]

    def forward_backward(self, inputs, labels):
        logits = self.forward(inputs)
        loss = F.cross_entropy(logits, labels)
        self.model_backward_and_update(loss)
        return {"loss": loss.item(), "acc": batch_accuracy(logits, labels)}

    def model_inference(self, inputs):
        return self.forward(inputs)

    # ---- training loop -----------------------------------------------------------------------
    def train(self):
        if self.closed_form:
            return self._train_closed_form()
        self.before_train()
        with self.timer("train"):
            for self.epoch in range(self.start_epoch, self.max_epoch):
                self.run_epoch()
                self.after_epoch()
        self.after_train()

    def _train_closed_form(self):
        self.time_start = time.time()
        with self.timer("train"):
            self.fit()
        self.model_epoch = 0
        self.save_model(-1, self.output_dir, model_name=FIT_FILE)
        print("Finish training")
        if not self.cfg.TEST.NO_TEST:
            self.test()
        print(f"Elapsed: {datetime.timedelta(seconds=round(time.time() - self.time_start))}")

    def before_train(self):
        self.grad_scaler = precision.grad_scaler(self.prec, self.device)
        directory = self.cfg.RESUME or self.output_dir
        self.start_epoch = self.resume_model_if_exist(directory)
        # Asked of the class: hasattr on the source would evaluate the property (and encode) here.
        if self.start_epoch < self.max_epoch and hasattr(type(self.source), "train_feats"):
            with self.timer("prepare"):
                self.source.train_feats  # encode the training views now, not inside epoch 1's ETA
        if self.cfg.TRAIN.TENSORBOARD:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("TensorBoard is not installed; training curves are only in log.txt")
            else:
                log_dir = os.path.join(self.output_dir, "tensorboard")
                print(f"Initialize tensorboard (log_dir={log_dir})")
                self.writer = SummaryWriter(log_dir=log_dir)
                self.writer.add_text("train/lr", "train/lr is the learning rate each step used. Dassl-based "
                                     "reference logs print the next epoch's rate on each line instead.")
        self.time_start = time.time()

    def run_epoch(self):
        self.set_model_mode("train")
        meters = OrderedDict()
        batch_time, data_time = AverageMeter(), AverageMeter()
        num_batches = self.num_batches = self.source.num_train_batches()
        print_freq = self.cfg.TRAIN.PRINT_FREQ
        self._steps.count = 0
        end = time.time()
        for self.batch_idx, (inputs, labels) in enumerate(self.source.train_batches()):
            data_time.update(time.time() - end)
            with self.autocast():
                summary = self.forward_backward(inputs, labels)
            batch_time.update(time.time() - end)
            for k, v in summary.items():
                meters.setdefault(k, AverageMeter()).update(v, labels.size(0))
            i = self.batch_idx + 1
            if i % print_freq == 0 or num_batches < print_freq:
                left = (num_batches - i) + (self.max_epoch - self.epoch - 1) * num_batches
                eta = str(datetime.timedelta(seconds=int(batch_time.avg * left)))
                parts = [f"epoch [{self.epoch + 1}/{self.max_epoch}]", f"batch [{i}/{num_batches}]",
                         f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
                         f"data {data_time.val:.3f} ({data_time.avg:.3f})"]
                parts += [f"{k} {m.val:.4f} ({m.avg:.4f})" for k, m in meters.items()]
                parts += [f"lr {self.get_current_lr():.4e}", f"eta {eta}"]
                print(" ".join(parts))
            if self.writer is not None:
                step = self.epoch * num_batches + self.batch_idx
                for k, m in meters.items():
                    self.writer.add_scalar(f"train/{k}", m.avg, step)
                self.writer.add_scalar("train/lr", self.get_current_lr(), step)
            end = time.time()
        for s in self._scheds.values():  # the reference steps once per epoch, after the last batch
            if s is not None:
                s.step()

    def after_epoch(self):
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            result = self.test(split="val", write=False)
            if result > self.best_result:
                self.best_result = result
                self.save_model(self.epoch, self.output_dir, val_result=result, model_name="model-best.pth.tar")
        self.model_epoch = self.epoch + 1
        self.save_epoch_checkpoints()

    def after_train(self):
        print("Finish training")
        if not self.cfg.TEST.NO_TEST:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
                self.chose("epoch", self.model_epoch, "val" if self.dm.dataset.val else "test")
            else:
                print("Deploy the last-epoch model")
            self.test()
        self.close_training()

    def close_training(self):
        """The end of every training: the resume snapshots go (the run is complete), the
        elapsed time is printed, the TensorBoard writer is closed."""
        for name in self._models:
            for filename in (ckpt.RESUME_FILE, ckpt.RESUME_FILE + STAGED):
                path = os.path.join(self.output_dir, name, filename)
                if os.path.exists(path):
                    os.remove(path)
        print(f"Elapsed: {datetime.timedelta(seconds=round(time.time() - self.time_start))}")
        if self.writer is not None:
            self.writer.close()

    # ---- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def test(self, split=None, write=True):
        self.set_model_mode("eval")
        self.evaluator.reset()
        split = split or self.cfg.TEST.SPLIT
        if split == "val" and not self.dm.dataset.val:
            split = "test"
        print(f"Evaluate on the *{split}* set")
        self._final_evaluation = write  # what it reads informs no choice (engine.selection)
        try:
            with self.timer("test"):
                for inputs, labels in self.source.eval_batches(split):
                    with self.autocast():
                        logits = self.model_inference(inputs)
                    if self.cfg.TEST.SALS:
                        logits = calibration.sals(logits.float(), self.zero_shot_logits(inputs))
                    self.evaluator.process(logits.float(), labels)
        finally:
            self._final_evaluation = False
        results = self.evaluator.evaluate()
        if self.writer is not None:
            for k, v in results.items():
                self.writer.add_scalar(f"{split}/{k}", v, self.epoch)
        if write:
            self.write_results(split)
        return next(iter(results.values()))

    def write_results(self, split):
        """results.json: the metrics, the run's identity, and the run record (method's config,
        method extras, timings, encoder throughput, peak memory, library versions)."""
        cfg = self.cfg
        out = dict(self.evaluator.summary)
        out.update(split=split, trainer=cfg.TRAINER.NAME, dataset=cfg.DATASET.NAME,
                   num_shots=cfg.DATASET.NUM_SHOTS, seed=cfg.SEED, backbone=cfg.MODEL.BACKBONE.NAME,
                   epoch=getattr(self, "model_epoch", 0), finished=self.source_finished)
        dtypes = self.encoder_dtypes()
        # "precision" is the configured PREC (what tools group by); what ran may differ (fp16 on a CPU is fp32).
        extras = {"num_trainable_params": self.num_trainable_params(), "precision": self.prec,
                  "precision_effective": precision.effective_precision(self.prec, dtypes) if dtypes else None,
                  "encoder_dtypes": {k: str(v).replace("torch.", "") for k, v in dtypes.items()} or None,
                  "features_mode": cfg.FEATURES.MODE, "subsample_classes": cfg.DATASET.SUBSAMPLE_CLASSES}
        if getattr(self.dm, "shot_counts", None):
            extras["train_images_per_class"] = self.dm.shot_counts
        extras.update(getattr(self.dm.dataset, "provenance", None) or {})  # split_origin, fewshot_origin
        extras.update(self.record)
        extras.update(self.run_extras())
        out["selection"] = record.plain(self.selection.summary())
        requested = cfg.SELECTION.PROTOCOL
        if requested:
            out["selection"]["requested"] = requested
            if not selection_meets(out["selection"]["tier"], requested):  # "unknown" never meets one
                print(f"Warning: SELECTION.PROTOCOL {requested} was asked for, but this run selected at tier "
                      f"{out['selection']['tier']} ({out['selection']['split']})")
        if out["selection"].get("unrecorded"):
            print(f"Note: the {', '.join(out['selection']['unrecorded'])} split was read before the final evaluation "
                  f"without a recorded choice; selection tier {out['selection']['tier']}")
        out["extras"] = record.plain(extras)
        out["timing"] = self.timer.seconds()
        out["encoder"] = self.source.stats() if hasattr(self.source, "stats") else {}
        out["peak_memory_mb"] = record.peak_memory_mb(self.device)
        out["versions"] = record.versions()
        out["config"] = record.config_dict(cfg, type(self))
        save_json(out, os.path.join(self.output_dir, "results.json"))
