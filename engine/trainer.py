"""Trainer lifecycle (the role of Dassl's SimpleTrainer/TrainerX).

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
`adapt_loaded_state(name, state_dict)` and `run_extras()` (method values for results.json).

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
    closed_form         True: `fit()` replaces the epoch loop
    ignored_load_keys   state-dict keys a checkpoint may lack or carry without error (CoOp
                        drops its token prefix/suffix buffers); everything else loads strictly
    per_class_keys      state-dict entries with one row per class: loading a checkpoint trained
                        on other classes (base -> new) keeps the rows of classes it saw and
                        takes the freshly built rows (the zero-shot classifier) for the others

Everything else lives here: data, the epoch loop, the per-epoch LR schedule, precision,
gradient accumulation, logging in Dassl's format, checkpoints and resume, evaluation and the
run record (results.json).
"""
import contextlib
import datetime
import os
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F

import clip

from . import checkpoint as ckpt
from . import record
from .classes import remap_class_rows
from .config import check_cfg as check_common_cfg
from .data import DataManager
from .errors import ConfigError, UserError
from .evaluator import Classification, batch_accuracy
from .features import build_source
from .io import save_json
from .models import load_clip_model
from .optim import build_optimizer
from .schedule import EpochScheduler

FIT_FILE = "model-fit.pth.tar"  # closed-form methods: the fitted model (no epochs)
PRECISIONS = ("fp16", "fp32", "amp")


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


class Trainer:
    consumes = "features"  # or "pixels"
    cfg_node = None  # TRAINER.<cfg_node>.PREC is the method's precision
    config_nodes = _OwnNode()
    ignored_keys = ()
    closed_form = False
    ignored_load_keys = ()
    per_class_keys = ()
    # Precision of the frozen image encoder on CUDA with PREC fp16 when
    # FEATURES.IMAGE_ENCODER_PREC is "" (TaskRes casts its image encoder to fp32).
    reference_image_encoder_prec = "fp16"

    @classmethod
    def extend_cfg(cls, cfg):
        """Add this trainer's config node (called for every registered trainer)."""

    def check_cfg(self, cfg):
        """Trainer-specific config checks; raise ConfigError."""

    def __init__(self, cfg, models=None):
        """`models`: a ModelCache shared by the runs of a sweep (None: load a private model)."""
        check_common_cfg(cfg)
        self.check_cfg(cfg)
        self.cfg = cfg
        self.model_cache = models
        self.device = select_device(cfg)
        self.prec = self._method_precision(cfg)
        self._models, self._optims, self._scheds = OrderedDict(), OrderedDict(), OrderedDict()
        self.start_epoch = self.epoch = 0
        self.max_epoch = int(cfg.OPTIM.MAX_EPOCH)
        self.output_dir = cfg.OUTPUT_DIR
        self.writer = None
        self.best_result = -float("inf")
        self.grad_scaler = None  # PREC amp on CUDA (not `scaler`: Dassl files keep their own under that name)
        self._accum = 0
        self.record = {}  # method values for results.json; see run_extras()
        self.timer = record.PhaseTimer()
        with self.timer("build"):
            self.dm = DataManager(cfg, self.device)
            self.build_model()
            self._init_weights(cfg.MODEL.INIT_WEIGHTS)
            encode = self.encode_images if self.consumes == "features" else None
            if encode is not None and getattr(self, "private_clip", False) and cfg.FEATURES.MODE == "cached":
                # Its encoder is not the released weights: stored features would be wrong for others.
                print("FEATURES.MODE cached: this method modifies its own copy of the encoder, so its "
                      "features are encoded for this run only, not stored")
                encode_cfg = cfg.clone()
                encode_cfg.defrost()
                encode_cfg.FEATURES.MODE = "online"
                self.source = build_source(encode_cfg, self.dm, encode, self.device)
            else:
                self.source = build_source(self.cfg, self.dm, encode, self.device, *self._feature_identity(),
                                           pixel_views=self.pixel_views())
        with self.timer("prepare"):
            self.after_source()
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

    def run_extras(self):
        """Hook: plain values describing this run's method (alpha, base, ...) for results.json."""
        return {}

    # ---- precision ---------------------------------------------------------------------------
    def _method_precision(self, cfg):
        node = cfg.TRAINER.get(self.cfg_node) if self.cfg_node else None
        prec = node.get("PREC", "fp16") if node is not None else "fp16"
        if prec not in PRECISIONS:
            raise ConfigError(f"TRAINER.{self.cfg_node}.PREC must be one of {', '.join(PRECISIONS)}, got {prec!r}")
        return prec

    def autocast(self):
        """The forward context of a step or an evaluation batch: autocast under PREC amp (fp16
        on CUDA, bf16 on the CPU, where fp16 autocast is not supported), else nothing."""
        if self.prec != "amp":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

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
                                          cfg.MODEL.BACKBONE.CACHE_DIR, self.model_cache, private)
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
        return getattr(model, "backbone_id", self.cfg.MODEL.BACKBONE.NAME), f"{self.device.type}-{dtype}"

    def encode_images(self, images):
        if images.is_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
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

    def _init_weights(self, path):
        """MODEL.INIT_WEIGHTS: copy the entries of a checkpoint (or raw state dict) whose name and
        shape match into the registered modules, as Dassl's load_pretrained_weights does."""
        if not path:
            return
        state = ckpt.load_checkpoint(path, self.device)
        state = ckpt.strip_module(state.get("state_dict", state) if isinstance(state, dict) else {})
        for name, module in self._models.items():
            own = module.state_dict()
            matched = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
            if not matched:
                raise UserError(f"MODEL.INIT_WEIGHTS {path}: no entry matches {name} by name and shape "
                                f"(file keys: {', '.join(sorted(state)) or 'none'}; model keys: {', '.join(own)})")
            own.update(matched)
            module.load_state_dict(own)
            discarded = sorted(set(state) - set(matched))
            print(f"Initial weights of {name} loaded from {path} ({len(matched)} tensors)"
                  + (f"; discarded: {', '.join(discarded)}" if discarded else ""))

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
        """zero_grad -> backward -> step, with the GradScaler under PREC amp on CUDA and
        TRAIN.GRAD_ACCUM_STEPS micro-batches per step (the last batch of an epoch always steps)."""
        if not torch.isfinite(loss):
            raise FloatingPointError("Loss is infinite or NaN!")
        optims = [o for o in self._optims.values() if o is not None]
        steps = max(1, int(self.cfg.TRAIN.GRAD_ACCUM_STEPS))
        if self._accum == 0:
            for o in optims:
                o.zero_grad(set_to_none=True)
        if steps > 1:
            loss = loss / steps
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
        else:
            loss.backward()
        self._accum += 1
        last = getattr(self, "num_batches", None) is not None and self.batch_idx + 1 == self.num_batches
        if self._accum < steps and not last:
            return
        self._accum = 0
        for o in optims:
            if self.grad_scaler is not None:
                self.grad_scaler.step(o)
            else:
                o.step()
        if self.grad_scaler is not None:
            self.grad_scaler.update()

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
        if self.prec == "amp" and self.device.type == "cuda":
            self.grad_scaler = torch.amp.GradScaler("cuda")
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
        self._accum = 0
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
        last = self.epoch + 1 == self.max_epoch
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            result = self.test(split="val", write=False)
            if result > self.best_result:
                self.best_result = result
                self.save_model(self.epoch, self.output_dir, val_result=result, model_name="model-best.pth.tar")
        self.model_epoch = self.epoch + 1
        if last or (freq > 0 and (self.epoch + 1) % freq == 0):
            self.save_model(self.epoch, self.output_dir)
        elif self.cfg.TRAIN.RESUME_FREQ > 0 and (self.epoch + 1) % self.cfg.TRAIN.RESUME_FREQ == 0:
            self.save_model(self.epoch, self.output_dir, model_name=ckpt.RESUME_FILE, with_rng=True,
                            quiet=True)

    def after_train(self):
        print("Finish training")
        if not self.cfg.TEST.NO_TEST:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                print("Deploy the last-epoch model")
            self.test()
        self.close_training()

    def close_training(self):
        """The end of every training: the resume snapshots go (the run is complete), the
        elapsed time is printed, the TensorBoard writer is closed."""
        for name in self._models:
            path = os.path.join(self.output_dir, name, ckpt.RESUME_FILE)
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
        with self.timer("test"):
            for inputs, labels in self.source.eval_batches(split):
                with self.autocast():
                    logits = self.model_inference(inputs)
                self.evaluator.process(logits.float(), labels)
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
                   epoch=getattr(self, "model_epoch", 0))
        extras = {"num_trainable_params": self.num_trainable_params(), "precision": self.prec,
                  "features_mode": cfg.FEATURES.MODE, "subsample_classes": cfg.DATASET.SUBSAMPLE_CLASSES}
        if getattr(self.dm, "shot_counts", None):
            extras["train_images_per_class"] = self.dm.shot_counts
        extras.update(self.record)
        extras.update(self.run_extras())
        out["extras"] = record.plain(extras)
        out["timing"] = self.timer.seconds()
        out["encoder"] = self.source.stats() if hasattr(self.source, "stats") else {}
        out["peak_memory_mb"] = record.peak_memory_mb(self.device)
        out["versions"] = record.versions()
        out["config"] = record.config_dict(cfg, type(self))
        save_json(out, os.path.join(self.output_dir, "results.json"))

    # ---- checkpoints -------------------------------------------------------------------------
    def save_model(self, epoch, directory, val_result=None, model_name="", with_rng=False, quiet=False):
        for name in self._models:
            self._save_one(name, epoch, directory, val_result, model_name, with_rng, quiet)

    def checkpoint_weights(self, name, with_rng):
        """Hook: (state dict, optimizer state) that a checkpoint of model `name` holds; the
        resume snapshot (`with_rng`) must keep all an exact resume needs."""
        optim = self._optims[name]
        return ckpt.strip_module(self._models[name].state_dict()), optim.state_dict() if optim is not None else None

    def _save_one(self, name, epoch, directory, val_result, model_name, with_rng, quiet):
        sched = self._scheds[name]
        weights, optim_state = self.checkpoint_weights(name, with_rng)
        state = {
            "state_dict": weights,
            "epoch": epoch + 1,
            "optimizer": optim_state,
            "scheduler": sched.state_dict() if sched is not None else None,
            "val_result": val_result,
            # Which classes the per-class rows belong to (base-to-new evaluation).
            "classnames": list(self.dm.classnames),
        }
        if self.grad_scaler is not None:
            state["scaler"] = self.grad_scaler.state_dict()
        state.update(self.checkpoint_extras(name))
        if with_rng:
            state["rng"] = ckpt.rng_state()
        if self.best_result > -float("inf"):
            state["best_result"] = float(self.best_result)  # TEST.FINAL_MODEL best_val after resume
        filename = model_name or f"model.pth.tar-{epoch + 1}"
        # The rolling snapshot is rewritten every epoch; skip fsync there (a process crash
        # keeps the rename atomic; only a power loss could lose the latest snapshot).
        path = ckpt.save_checkpoint(state, directory, name, filename, fsync=not with_rng,
                                    pointer=filename != "model-best.pth.tar")
        if not quiet:
            print(f"Checkpoint saved to {path}")

    def resume_model_if_exist(self, directory):
        paths = {name: ckpt.read_pointer(directory, name) for name in self._models}
        if not paths or any(p is None for p in paths.values()):
            print("No checkpoint found, train from scratch")
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        start = 0
        for name, path in paths.items():
            print(f'Loading checkpoint from "{path}"')
            state = ckpt.load_checkpoint(path, self.device)
            self._load_state(name, self._models[name], ckpt.strip_module(state["state_dict"]), path)
            print("Loaded model weights")
            if self._optims[name] is not None and state.get("optimizer"):
                self._optims[name].load_state_dict(state["optimizer"])
                print("Loaded optimizer")
            if self._scheds[name] is not None and state.get("scheduler"):
                self._scheds[name].load_state_dict(state["scheduler"])
                print("Loaded scheduler")
            elif self._scheds[name] is not None and "epoch" in state:
                # A Dassl-written checkpoint pickles its scheduler object, which is not read: the
                # per-epoch schedule only needs the number of finished epochs.
                self._scheds[name].load_state_dict({"last_epoch": int(state["epoch"])})
                print(f"Scheduler set to epoch {state['epoch']}")
            if self.grad_scaler is not None and state.get("scaler"):
                self.grad_scaler.load_state_dict(state["scaler"])
            if state.get("best_result") is not None:
                self.best_result = float(state["best_result"])
            if "rng" in state:
                ckpt.set_rng_state(state["rng"])
            start = self.model_epoch = state["epoch"]
        print(f"Previous epoch: {start}")
        return start

    def adapt_loaded_state(self, name, state_dict):
        """Hook: reshape a loaded state dict for this run (e.g. slice classes)."""
        return state_dict

    def checkpoint_extras(self, name):
        """Hook: plain values saved beside the state dict (e.g. settings needed to reuse it)."""
        return {}

    def check_loaded(self, name, checkpoint):
        """Hook: compare a loaded checkpoint's extras with this run's config."""

    def load_model(self, directory, epoch=None):
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        for name, module in self._models.items():
            filename = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
            path = os.path.join(directory, name, filename)
            if epoch is None and not os.path.isfile(path):
                # No best-val model: a closed-form fit, or whatever the `checkpoint` file names.
                path = ckpt.read_pointer(directory, name) or path
            if not os.path.isfile(path):
                hint = ""
                folder = os.path.join(directory, name)
                if os.path.isdir(folder):
                    found = sorted(f for f in os.listdir(folder) if f.startswith("model"))
                    hint = f" Files there: {', '.join(found) or 'none'}."
                    if epoch is None:
                        hint += " Pass --load-epoch N to load model.pth.tar-N."
                raise UserError(f'Model not found at "{path}".{hint}')
            state = ckpt.load_checkpoint(path, self.device)
            self.check_loaded(name, state)
            state_dict = ckpt.strip_module(state["state_dict"])
            state_dict = self._remap_classes(name, module, state_dict, state.get("classnames"))
            state_dict = self.adapt_loaded_state(name, state_dict)
            self.model_epoch = state.get("epoch", 0)
            print(f'Loading weights to {name} from "{path}" (epoch = {self.model_epoch})')
            self._load_state(name, module, state_dict, path)

    def _remap_classes(self, name, module, state_dict, trained_classnames):
        """A checkpoint trained on other classes (base -> new): rows of `per_class_keys` follow
        the class names; classes never trained on keep the freshly built rows (zero-shot)."""
        current = list(self.dm.classnames)
        if not self.per_class_keys or trained_classnames is None or list(trained_classnames) == current:
            return state_dict
        if getattr(self.dm.dataset, "class_indices_1k", None) is not None:
            return state_dict  # ImageNet-A/R: the method slices the 1000 ImageNet rows itself
        state_dict, unseen = remap_class_rows(state_dict, module.state_dict(), self.per_class_keys,
                                              list(trained_classnames), current)
        print(f"{len(unseen)} of {len(current)} classes were not seen in training; their rows of "
              f"{', '.join(self.per_class_keys)} come from the zero-shot classifier")
        self.record["unseen_classes_zeroshot"] = len(unseen)
        return state_dict

    def decode_state(self, name, state_dict, path):
        """Hook: turn a stored state dict into the module's tensors (e.g. bit-packed masks into
        scores). Every load goes through it: resume, --eval-only, best-val restore."""
        return state_dict

    def _load_state(self, name, module, state_dict, path):
        state_dict = self.decode_state(name, state_dict, path)
        own = module.state_dict()
        ignored = set(self.ignored_load_keys)
        state_dict = {k: v for k, v in state_dict.items() if k not in ignored}
        missing = [k for k in own if k not in state_dict and k not in ignored]
        unexpected = [k for k in state_dict if k not in own]
        shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or shapes:
            raise UserError(
                f"Checkpoint {path} does not fit {name}: "
                + "; ".join(filter(None, [missing and f"missing keys {missing}",
                                          unexpected and f"unexpected keys {unexpected}",
                                          shapes and "shape mismatch " + ", ".join(shapes)]))
                + ". Was it trained on another dataset (class count) or backbone?")
        module.load_state_dict(state_dict, strict=not ignored)
