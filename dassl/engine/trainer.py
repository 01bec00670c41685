"""Dassl's trainer classes on this project's engine.

A Dassl trainer file subclasses `TrainerX` and implements build_model() (load CLIP, build the
learnable part, `register_model(name, model, optim, sched)`), forward_backward(batch) (one step on
a batch dict, calling `model_backward_and_update(loss)` and `update_lr()` after the epoch's last
batch) and usually parse_batch_train(batch) / load_model(directory, epoch). Those files run here
unchanged; the lifecycle is the engine's (`engine.trainer.Trainer`):

  * the engine's build stages (`setup`, `build_data`, `build_source`, `after_source`), then
    Dassl's order: build_data_loader() (Dassl's loaders over that dataset), build_model(), the
    evaluator;
  * train(): before_train (resume from OUTPUT_DIR or RESUME, TensorBoard) -> per epoch
    before_epoch, run_epoch, after_epoch (best-val selection, checkpoints, the per-epoch resume
    snapshot with RNG states) -> after_train (`Finish training`, the final test, results.json);
  * checkpoints have Dassl's layout and hold plain data (the LR scheduler's state is one number);
  * test() runs parse_batch_test / model_inference over Dassl's loaders and prints the engine's
    `=> result` block.

Dassl's log lines are kept (`epoch [e/E] batch [b/B] ... lr ... eta`), including a quirk: files call
update_lr() inside their last forward_backward of an epoch, so the lr printed on the last batch of
an epoch is already the next epoch's.
"""
import contextlib
import datetime
import inspect
import sys
import time

import torch
from tqdm import tqdm
from yacs.config import CfgNode as CN

from engine.errors import ConfigError
from engine.trainer import Trainer as _EngineTrainer

from ..config import merging_nodes
from ..data import DataManager
from ..evaluation import EVALUATOR_REGISTRY
from ..utils import AverageMeter, MetricMeter, tolist_if_not
from .devices import reference_code

__all__ = ["TrainerBase", "SimpleTrainer", "TrainerX"]


class _EngineArguments(type):
    """train.py builds every trainer as `cls(cfg, models=...)`; Dassl trainer files define
    `__init__(self, cfg)`. Keyword arguments the class's own __init__ does not take are handed to
    the engine's constructor instead."""

    def __call__(cls, cfg, *args, **kwargs):
        params = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        own = {k: v for k, v in kwargs.items() if takes_any or k in params}
        obj = cls.__new__(cls)
        obj.__dict__["_engine_kwargs"] = {k: v for k, v in kwargs.items() if k not in own}
        obj.__init__(cfg, *args, **own)
        return obj


def _phase(trainer, name):
    timer = getattr(trainer, "timer", None)
    return timer(name) if timer is not None else contextlib.nullcontext()


class TrainerBase(_EngineTrainer, metaclass=_EngineArguments):
    """Dassl's model registry and optimisation helpers."""

    consumes = "pixels"

    @classmethod
    def extend_cfg(cls, cfg):
        """Dassl projects add their config nodes in train.py's `extend_cfg(cfg)`; a trainer file
        copied here may carry that function at module level. train.py calls this classmethod for
        every registered trainer; it runs the module-level function of the module that defines
        the class, once per config, merging the nodes it re-creates into existing ones
        (dassl.config.merging_nodes), so it never removes keys another trainer declared."""
        if "DASSL" not in cfg:
            cfg.DASSL = CN()
            # Opt-in: run a copied file's own .cuda() / .to("cuda") calls on the run's device
            # (dassl/engine/devices.py) when that is not CUDA.
            cfg.DASSL.MAP_CUDA = False
        fn = getattr(sys.modules.get(cls.__module__), "extend_cfg", None)
        if not callable(fn) or getattr(fn, "__func__", None) is TrainerBase.extend_cfg.__func__:
            return
        done = cfg.__dict__.setdefault("_dassl_extended", set())  # yacs keeps its own flags there too
        if cls.__module__ in done:
            return
        done.add(cls.__module__)
        with merging_nodes(cfg, inspect.getsourcefile(fn) or cls.__module__):
            fn(cfg)

    # ---- registered models ---------------------------------------------------------------------
    def register_model(self, name="model", model=None, optim=None, sched=None):
        """Register a module (saved, loaded, switched between train and eval) with its optimizer
        and LR scheduler (either may be None)."""
        if self.__dict__.get("_models") is None:
            raise AttributeError("Cannot assign model before super().__init__() call")
        if name in self._models:
            raise KeyError(f"Found duplicate model names: {name!r}")
        if model is None:
            raise ValueError(f"register_model({name!r}) needs a model")
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def needs_trained_weights(self):
        # Dassl semantics: --eval-only without --model-dir prints that load_model() is skipped
        # and evaluates the model as built.
        return False

    def get_model_names(self, names=None):
        real = list(self._models.keys())
        if names is None:
            return real
        names = tolist_if_not(names)
        for name in names:
            if name not in real:
                raise KeyError(f"No model registered as {name!r} (registered: {', '.join(real)})")
        return names

    def set_model_mode(self, mode="train", names=None):
        for name in self.get_model_names(names):
            if mode == "train":
                self._models[name].train()
            elif mode in ("test", "eval"):
                self._models[name].eval()
            else:
                raise KeyError(f"mode must be 'train', 'test' or 'eval', got {mode!r}")

    def update_lr(self, names=None):
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def detect_anomaly(self, loss):
        if not torch.isfinite(loss).all():
            raise FloatingPointError("Loss is infinite or NaN!")

    def model_zero_grad(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss):
        self.detect_anomaly(loss)
        loss.backward()

    def model_update(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].step()

    def model_backward_and_update(self, loss, names=None):
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)

    def get_current_lr(self, names=None):
        name = self.get_model_names(names)[0]
        optim = self._optims[name]
        return optim.param_groups[0]["lr"] if optim is not None else 0.0

    # ---- TensorBoard -------------------------------------------------------------------------
    @property
    def _writer(self):
        return self.writer

    def init_writer(self, log_dir):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            print(f"Initialize tensorboard (log_dir={log_dir})")
            self.writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self):
        if self.writer is not None:
            self.writer.close()

    def write_scalar(self, tag, scalar_value, global_step=None):
        if self.writer is not None:
            self.writer.add_scalar(tag, scalar_value, global_step)

    # ---- checkpoints -------------------------------------------------------------------------
    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name="", with_rng=False,
                   quiet=False):
        """OUTPUT_DIR/<name>/<model_name or model.pth.tar-<epoch + 1>> for every registered model;
        with `is_best`, also model-best.pth.tar."""
        super().save_model(epoch, directory, val_result=val_result, model_name=model_name, with_rng=with_rng,
                           quiet=quiet)
        if is_best:
            super().save_model(epoch, directory, val_result=val_result, model_name="model-best.pth.tar",
                               quiet=quiet)

    # ---- the loop ----------------------------------------------------------------------------
    def train(self, start_epoch=None, max_epoch=None):
        if start_epoch is not None:
            self.start_epoch = start_epoch
        if max_epoch is not None:
            self.max_epoch = max_epoch
        with reference_code(self):
            self.before_train()
            with _phase(self, "train"):
                for self.epoch in range(self.start_epoch, self.max_epoch):
                    self.before_epoch()
                    self.run_epoch()
                    self.after_epoch()
            self.after_train()

    def before_epoch(self):
        pass

    def run_epoch(self):
        raise NotImplementedError

    def forward_backward(self, batch):
        raise NotImplementedError

    def parse_batch_train(self, batch):
        raise NotImplementedError

    def parse_batch_test(self, batch):
        raise NotImplementedError

    def model_inference(self, input):
        raise NotImplementedError


class SimpleTrainer(TrainerBase):
    """Dassl's SimpleTrainer: data loaders, model, evaluator; best-val selection; test()."""

    def __init__(self, cfg, **engine_kwargs):
        engine_kwargs = {**self.__dict__.pop("_engine_kwargs", {}), **engine_kwargs}
        # The engine's build stages in Dassl's order: a Dassl file's build_model needs the Dassl
        # loaders (self.dm, self.train_loader_x ...), and applies MODEL.INIT_WEIGHTS itself.
        self.setup(cfg, **engine_kwargs)
        if cfg.TEST.SALS:  # a file's logits come from its own model, not from the engine's image features
            raise ConfigError("TEST.SALS is not supported for Dassl trainer files; set TEST.SALS False")
        with self.timer("build"):
            self.build_data()
            self.build_source()
        with self.timer("prepare"):
            self.after_source()
        self.build_evaluator()  # the engine's, for its log line; Dassl's replaces it below
        self._selecting = False
        with self.timer("build"), reference_code(self):
            with DataManager.offering(self.dm):
                self.build_data_loader()
            self.build_model()
        self.evaluator = EVALUATOR_REGISTRY.get(cfg.TEST.EVALUATOR)(cfg, lab2cname=self.lab2cname)
        prec = self._file_precision(cfg)
        if prec is not None and isinstance(getattr(self, "record", None), dict):
            self.record["precision"] = prec

    @staticmethod
    def _file_precision(cfg):
        name = cfg.TRAINER.NAME
        for key in (name, name.upper()):
            node = cfg.TRAINER.get(key) if key else None
            if node is not None and hasattr(node, "get") and node.get("PREC") is not None:
                return node.get("PREC")
        return None

    def check_cfg(self, cfg):
        """Hook: raise on a config this trainer cannot run (Dassl files assert here)."""
        if cfg.FEATURES.MODE != "online":
            raise ConfigError("FEATURES.MODE 'cached' is for this project's feature trainers; Dassl trainer "
                              "files read images (set FEATURES.MODE online).")

    def build_data_loader(self):
        """self.dm, train_loader_x, train_loader_u, val_loader, test_loader, num_classes,
        num_source_domains, lab2cname. Override to pass custom transforms or a dataset wrapper."""
        dm = DataManager(self.cfg)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    def build_model(self):
        raise NotImplementedError(f"{type(self).__name__} must implement build_model() (Dassl's default "
                                  "SimpleNet backbone + head is not provided here)")

    def after_epoch(self):
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            self._selecting = True
            try:
                result = self.test(split="val")
            finally:
                self._selecting = False
            if result > self.best_result:
                self.best_result = result
                self.save_model(self.epoch, self.output_dir, val_result=result, model_name="model-best.pth.tar")
        self.model_epoch = self.epoch + 1
        self.save_epoch_checkpoints()  # the engine's: periodic, last, and the resume snapshot

    @torch.no_grad()
    def test(self, split=None):
        """Evaluate on TEST.SPLIT (or `split`); returns the first metric (accuracy). The final
        evaluation of a run also writes results.json."""
        with reference_code(self):
            return self._test(split)

    def _test(self, split):
        self.set_model_mode("eval")
        self.evaluator.reset()
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            loader = self.val_loader
        else:
            split = "test"
            loader = self.test_loader
        print(f"Evaluate on the *{split}* set")
        with _phase(self, "test"):
            for batch in tqdm(loader, desc=f"Evaluate {split}", unit="batch", leave=False):
                input, label = self.parse_batch_test(batch)
                output = self.model_inference(input)
                self.evaluator.process(output, label)
        results = self.evaluator.evaluate()
        for k, v in results.items():
            self.write_scalar(f"{split}/{k}", v, self.epoch)
        if not self._selecting and hasattr(self.evaluator, "summary"):
            self.write_results(split)
        return list(results.values())[0]

    def model_inference(self, input):
        return self.model(input)

    def parse_batch_test(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def forward_backward(self, batch):
        raise NotImplementedError(f"{type(self).__name__} must implement forward_backward(batch)")


class TrainerX(SimpleTrainer):
    """Dassl's trainer for labelled data only: one pass over train_loader_x per epoch."""

    def run_epoch(self):
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)
        print_freq = self.cfg.TRAIN.PRINT_FREQ
        end = time.time()
        for self.batch_idx, batch in enumerate(self.train_loader_x):
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)
            if (self.batch_idx + 1) % print_freq == 0 or self.num_batches < print_freq:
                remaining = (self.num_batches - self.batch_idx - 1) + (self.max_epoch - self.epoch - 1) * self.num_batches
                eta = str(datetime.timedelta(seconds=int(batch_time.avg * remaining)))
                print(" ".join([
                    f"epoch [{self.epoch + 1}/{self.max_epoch}]",
                    f"batch [{self.batch_idx + 1}/{self.num_batches}]",
                    f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
                    f"data {data_time.val:.3f} ({data_time.avg:.3f})",
                    f"{losses}",
                    f"lr {self.get_current_lr():.4e}",
                    f"eta {eta}",
                ]))
            n_iter = self.epoch * self.num_batches + self.batch_idx
            for name, meter in losses.meters.items():
                self.write_scalar("train/" + name, meter.avg, n_iter)
            self.write_scalar("train/lr", self.get_current_lr(), n_iter)
            end = time.time()

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)
