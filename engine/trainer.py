"""Trainer lifecycle (the role of Dassl's SimpleTrainer/TrainerX).

A method file subclasses `Trainer` and implements:
    build_model()        load CLIP (`self.load_clip()`), build the learnable part and
                         `self.register_model(name, module)` for what is trained and saved
    forward(inputs)      logits for a batch of inputs (image features, or pixels when
                         `consumes = "pixels"`)
and may override `forward_backward(inputs, labels)` (one optimisation step; the default is
cross-entropy on `forward`), `encode_images(images)`, `check_cfg(cfg)`, `extend_cfg(cfg)`
(classmethod adding its config node) and `adapt_loaded_state(name, state_dict)`.

Everything else lives here: data, the epoch loop, the per-epoch LR schedule, logging in
Dassl's format, checkpoints and resume, evaluation and results.json.
"""
import datetime
import os
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F

import clip

from . import checkpoint as ckpt
from .config import check_cfg as check_common_cfg
from .data import DataManager
from .errors import UserError
from .evaluator import Classification, batch_accuracy
from .features import build_source
from .io import save_json
from .optim import build_optimizer
from .schedule import EpochScheduler


# A sweep (sweep.py) runs many configs that differ only in shots/seed/alpha in one process;
# it turns this on so they share one loaded CLIP (and with it the cached text features).
SHARE_MODELS = False
SHARED_MODELS = {}


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


class Trainer:
    consumes = "features"  # or "pixels"
    # Precision of the frozen image encoder on CUDA when FEATURES.IMAGE_ENCODER_PREC is "".
    reference_image_encoder_prec = "fp16"

    @classmethod
    def extend_cfg(cls, cfg):
        """Add this trainer's config node (called for every registered trainer)."""

    def check_cfg(self, cfg):
        """Trainer-specific config checks; raise ConfigError."""

    def __init__(self, cfg):
        check_common_cfg(cfg)
        self.check_cfg(cfg)
        self.cfg = cfg
        self.device = select_device(cfg)
        self._models, self._optims, self._scheds = OrderedDict(), OrderedDict(), OrderedDict()
        self.start_epoch = self.epoch = 0
        self.max_epoch = int(cfg.OPTIM.MAX_EPOCH)
        self.output_dir = cfg.OUTPUT_DIR
        self.writer = None
        self.best_result = -float("inf")
        self.dm = DataManager(cfg, self.device)
        self.build_model()
        self._set_image_encoder_precision()
        encode = self.encode_images if self.consumes == "features" else None
        self.source = build_source(self.cfg, self.dm, encode, self.device, *self._feature_identity())
        print("Loading evaluator: Classification")
        self.evaluator = Classification(self.dm.lab2cname, self.cfg.TEST.PER_CLASS_RESULT)

    # ---- model helpers for method files ------------------------------------------------------
    def load_clip(self):
        cfg = self.cfg
        if not cfg.MODEL.BACKBONE.NAME:
            raise UserError("MODEL.BACKBONE.NAME is empty: set a CLIP name (e.g. RN50), a checkpoint path, "
                            "or an open_clip model:pretrained pair, in the config file or with --backbone")
        prec = "fp16" if self.device.type == "cuda" else "fp32"
        key = (cfg.MODEL.BACKBONE.NAME, str(self.device), prec, cfg.MODEL.BACKBONE.CACHE_DIR)
        model = SHARED_MODELS.get(key) if SHARE_MODELS else None
        if model is None:
            model = clip.load(cfg.MODEL.BACKBONE.NAME, device=self.device, precision=prec,
                              cache_dir=cfg.MODEL.BACKBONE.CACHE_DIR or None)
            if SHARE_MODELS:
                SHARED_MODELS[key] = model
        self.clip_model = model
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

    def _set_image_encoder_precision(self):
        model = getattr(self, "clip_model", None)
        if model is None or self.device.type != "cuda":
            return
        prec = self.cfg.FEATURES.IMAGE_ENCODER_PREC or self.reference_image_encoder_prec
        if prec == "fp32":
            model.visual.float()
        # Convolutions (ResNet stems, ViT patch embedding) run faster on NHWC tensors on GPUs.
        model.visual.to(memory_format=torch.channels_last)

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
        unless given. Only registered modules are saved, loaded and switched to train mode."""
        if name in self._models:
            raise KeyError(f"model {name!r} registered twice")
        if optim is None:
            trainable = params if params is not None else [p for p in module.parameters() if p.requires_grad]
            optim = build_optimizer(trainable, self.cfg.OPTIM)
        if sched is None:
            sched = EpochScheduler(optim, self.cfg.OPTIM)
        self._models[name], self._optims[name], self._scheds[name] = module, optim, sched

    def get_current_lr(self):
        return next(iter(self._optims.values())).param_groups[0]["lr"]

    def set_model_mode(self, mode):
        for m in self._models.values():
            m.train(mode == "train")

    def model_backward_and_update(self, loss):
        if not torch.isfinite(loss):
            raise FloatingPointError("Loss is infinite or NaN!")
        for o in self._optims.values():
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in self._optims.values():
            o.step()

    def forward_backward(self, inputs, labels):
        logits = self.forward(inputs)
        loss = F.cross_entropy(logits, labels)
        self.model_backward_and_update(loss)
        return {"loss": loss.item(), "acc": batch_accuracy(logits, labels)}

    def model_inference(self, inputs):
        return self.forward(inputs)

    # ---- training loop -----------------------------------------------------------------------
    def train(self):
        self.before_train()
        for self.epoch in range(self.start_epoch, self.max_epoch):
            self.run_epoch()
            self.after_epoch()
        self.after_train()

    def before_train(self):
        directory = self.cfg.RESUME or self.output_dir
        self.start_epoch = self.resume_model_if_exist(directory)
        if self.cfg.TRAIN.TENSORBOARD:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("TensorBoard is not installed; training curves are only in log.txt")
            else:
                log_dir = os.path.join(self.output_dir, "tensorboard")
                print(f"Initialize tensorboard (log_dir={log_dir})")
                self.writer = SummaryWriter(log_dir=log_dir)
        self.time_start = time.time()

    def run_epoch(self):
        self.set_model_mode("train")
        meters = OrderedDict()
        batch_time, data_time = AverageMeter(), AverageMeter()
        num_batches = self.source.num_train_batches()
        print_freq = self.cfg.TRAIN.PRINT_FREQ
        end = time.time()
        for self.batch_idx, (inputs, labels) in enumerate(self.source.train_batches()):
            data_time.update(time.time() - end)
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
        for inputs, labels in self.source.eval_batches(split):
            self.evaluator.process(self.model_inference(inputs), labels)
        results = self.evaluator.evaluate()
        if self.writer is not None:
            for k, v in results.items():
                self.writer.add_scalar(f"{split}/{k}", v, self.epoch)
        if write:
            self.write_results(split)
        return next(iter(results.values()))

    def write_results(self, split):
        cfg = self.cfg
        out = dict(self.evaluator.summary)
        out.update(split=split, trainer=cfg.TRAINER.NAME, dataset=cfg.DATASET.NAME,
                   num_shots=cfg.DATASET.NUM_SHOTS, seed=cfg.SEED, backbone=cfg.MODEL.BACKBONE.NAME,
                   epoch=getattr(self, "model_epoch", 0))
        save_json(out, os.path.join(self.output_dir, "results.json"))

    # ---- checkpoints -------------------------------------------------------------------------
    def save_model(self, epoch, directory, val_result=None, model_name="", with_rng=False, quiet=False):
        for name, module in self._models.items():
            state = {
                "state_dict": ckpt.strip_module(module.state_dict()),
                "epoch": epoch + 1,
                "optimizer": self._optims[name].state_dict(),
                "scheduler": self._scheds[name].state_dict(),
                "val_result": val_result,
            }
            state.update(self.checkpoint_extras(name))
            if with_rng:
                state["rng"] = ckpt.rng_state()
            filename = model_name or f"model.pth.tar-{epoch + 1}"
            # The rolling snapshot is rewritten every epoch; skip fsync there (a process crash
            # keeps the rename atomic; only a power loss could lose the latest snapshot).
            path = ckpt.save_checkpoint(state, directory, name, filename, fsync=not with_rng)
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
            self._models[name].load_state_dict(state["state_dict"])
            print("Loaded model weights")
            self._optims[name].load_state_dict(state["optimizer"])
            print("Loaded optimizer")
            self._scheds[name].load_state_dict(state["scheduler"])
            print("Loaded scheduler")
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
        filename = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name, module in self._models.items():
            path = os.path.join(directory, name, filename)
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
            state_dict = self.adapt_loaded_state(name, ckpt.strip_module(state["state_dict"]))
            self.model_epoch = state.get("epoch", 0)
            print(f'Loading weights to {name} from "{path}" (epoch = {self.model_epoch})')
            self._load_state(name, module, state_dict, path)

    @staticmethod
    def _load_state(name, module, state_dict, path):
        own = module.state_dict()
        missing = [k for k in own if k not in state_dict]
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
        module.load_state_dict(state_dict)
