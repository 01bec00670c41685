"""Tip-Adapter-F (Zhang et al., ECCV 2022): Tip-Adapter whose cache keys are fine-tuned.

The keys start as Tip-Adapter's cache keys (trainers/common/tip_cache.py) and are the only trained
parameters: values, the text classifier and CLIP stay fixed, and during training the logits use
TRAINER.TIP.INIT_BETA / INIT_ALPHA. The reference trains with AdamW (lr 1e-3, eps 1e-4, weight
decay 0.01), a cosine schedule stepped after every batch down to 0 over all epochs' batches,
batch 256 of freshly augmented images, 20 epochs (EuroSAT 100); after every epoch it evaluates
with the init (beta, alpha), keeps the best epoch, reloads it, searches (beta, alpha) again with
the trained keys, and reports max(best epoch's accuracy, accuracy with the searched pair).

Deviations from the reference, each a key (reference value in brackets):
- TRAINER.TIP.EPOCH_SELECTION "val": the epoch is picked on the validation split ["test": the
  epoch is picked on the test split, and the deployed (beta, alpha) is whichever of the init and
  the searched pair scores higher on test, which is what max(...) reports]; "last" keeps the
  last epoch.
- TRAINER.TIP.SEARCH_SPLIT: as for Tip-Adapter (few-shot val; ImageNet's val is its test split).
- Trained keys are fp32 (the reference trains fp16 weights; TRAINER.TIP.ADAM_EPS 1e-4 is its
  fp16 workaround, kept).
- In FEATURES.MODE cached, each epoch draws one of FEATURES.NUM_VIEWS stored augmented views per
  image instead of a fresh augmentation (online mode is the reference).
The deployed model (searched beta and alpha included) is saved as model-best.pth.tar (or, with
EPOCH_SELECTION last, over model.pth.tar-<last epoch>), so `--eval-only --model-dir DIR`
reproduces the logged accuracy.
"""
import math
import os

import torch

from engine.errors import ConfigError
from engine.optim import build_optimizer
from engine.registry import TRAINER_REGISTRY

from .tip_adapter import TipAdapter
from .common.tip_cache import count_correct

EPOCH_SELECTIONS = ("val", "test", "last")
BEST_FILE = "model-best.pth.tar"


class IterationCosine:
    """CosineAnnealingLR(T_max = epochs x batches per epoch, eta_min 0) stepped after every
    batch, as the reference: batch i (0-based, counted over all epochs) uses
    lr * (1 + cos(pi * i / T_max)) / 2. The LR is a function of (epoch, batch), so resuming
    needs no state. The engine's per-epoch `step()` is a no-op."""

    def __init__(self, optimizer, base_lr):
        self.optimizer = optimizer
        self.base_lr = float(base_lr)

    def set(self, iteration, total):
        lr = self.base_lr * 0.5 * (1.0 + math.cos(math.pi * iteration / max(1, total)))
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@TRAINER_REGISTRY.register()
class TipAdapterF(TipAdapter):
    closed_form = False
    model_name = "tip_adapter_f"
    display_name = "Tip-Adapter-F"
    learnable_keys = True

    @classmethod
    def extend_cfg(cls, cfg):
        super().extend_cfg(cfg)
        tip = cfg.TRAINER.TIP
        if "EPOCH_SELECTION" not in tip:
            tip.EPOCH_SELECTION = "val"  # "val", "test" (the reference) or "last"
            tip.ADAM_EPS = 1e-4  # OPTIM.NAME adamw: AdamW's eps, as the reference
            tip.ITER_COSINE = True  # cosine stepped per batch (reference); False: the OPTIM schedule

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        sel = cfg.TRAINER.TIP.EPOCH_SELECTION
        if sel not in EPOCH_SELECTIONS:
            raise ConfigError(f"TRAINER.TIP.EPOCH_SELECTION must be one of {', '.join(EPOCH_SELECTIONS)}, got {sel!r}")
        if cfg.TEST.FINAL_MODEL == "best_val" and sel != "val":
            raise ConfigError(f"TEST.FINAL_MODEL best_val contradicts TRAINER.TIP.EPOCH_SELECTION {sel}: Tip-Adapter-F "
                              f"picks its epoch with TRAINER.TIP.EPOCH_SELECTION; leave TEST.FINAL_MODEL at last_step")

    def register_cache(self):
        cfg = self.cfg
        params = [self.cache.cache_keys]
        if cfg.OPTIM.NAME == "adamw":
            optim = torch.optim.AdamW(params, lr=float(cfg.OPTIM.LR), weight_decay=float(cfg.OPTIM.WEIGHT_DECAY),
                                      betas=(float(cfg.OPTIM.ADAM_BETA1), float(cfg.OPTIM.ADAM_BETA2)),
                                      eps=float(cfg.TRAINER.TIP.ADAM_EPS))
        else:
            optim = build_optimizer(params, cfg.OPTIM)
        self.iter_schedule = IterationCosine(optim, cfg.OPTIM.LR) if cfg.TRAINER.TIP.ITER_COSINE else None
        self.register_model(self.model_name, self.cache, optim=optim, sched=self.iter_schedule)

    # ---- training ------------------------------------------------------------------------------
    def before_train(self):
        self.build_cache()  # before resuming, which then overwrites the keys with the trained ones
        super().before_train()

    def forward_backward(self, inputs, labels):
        if self.iter_schedule is not None:
            self.iter_schedule.set(self.epoch * self.num_batches + self.batch_idx, self.max_epoch * self.num_batches)
        return super().forward_backward(inputs, labels)

    def after_epoch(self):
        sel = self.cfg.TRAINER.TIP.EPOCH_SELECTION
        # TEST.FINAL_MODEL best_val (allowed with EPOCH_SELECTION val) does the same in the engine.
        if sel != "last" and self.cfg.TEST.FINAL_MODEL != "best_val" and not self.cfg.TEST.NO_TEST:
            result = self.test(split=sel, write=False)
            if result > self.best_result:
                self.best_result = result
                self.save_model(self.epoch, self.output_dir, val_result=result, model_name=BEST_FILE)
        super().after_epoch()

    def after_train(self):
        print("Finish training")
        sel = self.cfg.TRAINER.TIP.EPOCH_SELECTION
        best = os.path.join(self.output_dir, self.model_name, BEST_FILE)
        if sel != "last" and os.path.isfile(best):
            print(f"Deploy the model with the best {sel} performance")
            self.load_model(self.output_dir)
            filename, epoch = BEST_FILE, self.model_epoch - 1
            # test() evaluates on test when the dataset has no val split
            self.chose("epoch", epoch + 1, sel if self.dm.dataset.val else "test")
        else:
            print("Deploy the last-epoch model")
            filename, epoch = "", self.max_epoch - 1
        self.record["best_epoch"] = epoch + 1
        init = (float(self.cache.beta), float(self.cache.alpha))
        beta, alpha = self.search(self.cache.cache_keys.detach())
        if sel == "test":
            # The reference reports max(best epoch's test accuracy with the init pair, test
            # accuracy with the searched pair): deploy the pair that gives that number.
            feats, labels = self.source.split_features("test")
            keys = self.cache.cache_keys.detach()
            scores = [count_correct(feats, labels, self.text_weights, keys, self.cache.cache_values, b, a,
                                    self.logit_scale) for b, a in (init, (beta, alpha))]
            if scores[0] >= scores[1]:
                print(f"The init beta, alpha score at least as high on test as the searched ones ({scores[0]} vs "
                      f"{scores[1]} correct); deploying the init pair, as the reference reports the maximum")
                beta, alpha = init
            self.record["deployed_hp"] = "init" if (beta, alpha) == init else "searched"
            self.chose("deployed_hp", self.record["deployed_hp"], "test")
        self.cache.set_hp(beta, alpha)
        print(f"Tip-Adapter-F: beta {beta:.4f}, alpha {alpha:.4f} (epoch {epoch + 1})")
        self.save_model(epoch, self.output_dir, val_result=None if filename == "" else self.best_result,
                        model_name=filename)
        if not self.cfg.TEST.NO_TEST:
            self.test()
        self.close_training()

    def run_extras(self):
        extras = super().run_extras()
        extras["epoch_selection"] = self.cfg.TRAINER.TIP.EPOCH_SELECTION
        return extras
