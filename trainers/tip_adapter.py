"""Tip-Adapter (Zhang et al., ECCV 2022): a training-free cache model on top of zero-shot CLIP.

    logits = 100 * f @ W^T + alpha * exp(-beta * (1 - f @ keys^T)) @ values

with keys the L2-normalised mean of TRAINER.TIP.AUGMENT_EPOCH (10) augmented views of each
few-shot training image, values their one-hot labels, W the zero-shot text classifier (the math
and the reference facts are in trainers/common/tip_cache.py). `fit()` builds the cache and searches
(beta, alpha) on the grid TRAINER.TIP.SEARCH_SCALE / SEARCH_STEP; nothing is trained.

Deviations from the reference, each a key (reference value in brackets):
- TRAINER.TIP.SEARCH_SPLIT "val": the search runs on the few-shot validation split (min(K, 4)
  images per class, CoOp's protocol) ["val", but the reference's val is the FULL validation split
  of CoOp's split files, which this framework does not load]; "test" searches on the test split,
  as the reference does for ImageNet. For ImageNet the validation split IS the test split here
  (as in CoOp), so "val" searches on the test images too; results.json records that
  (extras.search_on_test).
- TRAINER.TIP.SEARCH_HP False keeps INIT_BETA / INIT_ALPHA [the reference crashes].
- The cache is built when first needed (fit, or training for Tip-Adapter-F), not when the run
  starts, so --eval-only runs never encode training views; a checkpoint carries the whole cache.
Evaluating a checkpoint on another class set: value columns follow the class names (base ->
new), or ImageNet's class indices (ImageNet -> ImageNet-A/R); a class the cache has no image of
gets a zero column, i.e. its logit is zero-shot CLIP's, so on new classes only Tip-Adapter is
exactly zero-shot CLIP. The cache keeps the size it was built with (any number of images).
"""
from yacs.config import CfgNode as CN

from engine.errors import ConfigError, UserError
from engine.registry import TRAINER_REGISTRY
from engine.trainer import Trainer

from .common.tip_cache import (TipCache, build_cache, count_correct, remap_value_columns, search_grid, search_hp,
                        text_classifier, tip_templates)

SEARCH_SPLITS = ("val", "test")


@TRAINER_REGISTRY.register()
class TipAdapter(Trainer):
    cfg_node = "TIP"
    closed_form = True
    model_name = "tip_adapter"
    display_name = "Tip-Adapter"
    learnable_keys = False
    class_dims = {"cache_values": 1}  # one value column per class; adapt_loaded_state matches them by name

    @classmethod
    def extend_cfg(cls, cfg):
        if "TIP" in cfg.TRAINER:
            return
        tip = cfg.TRAINER.TIP = CN()
        tip.PREC = "fp16"  # the reference runs CLIP in fp16 on CUDA
        tip.AUGMENT_EPOCH = 10  # augmented views averaged into each cache key
        # Defaults: the reference's ImageNet / OxfordPets settings; configs/trainers/TipAdapter
        # holds every dataset's.
        tip.INIT_BETA = 1.0
        tip.INIT_ALPHA = 1.17
        tip.SEARCH_HP = True
        tip.SEARCH_SCALE = (7.0, 3.0)  # (beta max, alpha max), both excluded from the grid
        tip.SEARCH_STEP = (200, 20)  # grid points (beta, alpha)
        tip.SEARCH_SPLIT = "val"  # "val" or "test"
        tip.LOGIT_SCALE = 100.0  # hard-coded 100 in the reference

    def check_cfg(self, cfg):
        tip = cfg.TRAINER.TIP
        if tip.SEARCH_SPLIT not in SEARCH_SPLITS:
            raise ConfigError(f"TRAINER.TIP.SEARCH_SPLIT must be one of {', '.join(SEARCH_SPLITS)}, "
                              f"got {tip.SEARCH_SPLIT!r}")
        if int(tip.AUGMENT_EPOCH) < 1:
            raise ConfigError(f"TRAINER.TIP.AUGMENT_EPOCH must be >= 1, got {tip.AUGMENT_EPOCH}")
        if len(tip.SEARCH_SCALE) != 2 or len(tip.SEARCH_STEP) != 2:
            raise ConfigError("TRAINER.TIP.SEARCH_SCALE and SEARCH_STEP hold two values each (beta, alpha), got "
                              f"{list(tip.SEARCH_SCALE)} and {list(tip.SEARCH_STEP)}")
        if any(int(s) < 1 or int(s) != s for s in tip.SEARCH_STEP):
            raise ConfigError(f"TRAINER.TIP.SEARCH_STEP must be two positive integers, got {list(tip.SEARCH_STEP)}")

    # ---- model ---------------------------------------------------------------------------------
    def build_model(self):
        tip = self.cfg.TRAINER.TIP
        clip_model = self.load_clip()
        templates = tip_templates(self.cfg)
        more = f" and {len(templates) - 1} more" if len(templates) > 1 else ""
        print(f"Getting textual features as CLIP's classifier (templates: {templates[0]!r}{more})")
        self.text_weights = text_classifier(self, clip_model, self.dm.classnames, templates).to(self.device)
        self.logit_scale = float(tip.LOGIT_SCALE)
        self.cache = TipCache(len(self.dm.dataset.train_x), int(clip_model.embed_dim), self.dm.num_classes,
                              tip.INIT_BETA, tip.INIT_ALPHA, self.learnable_keys).to(self.device)
        self.register_cache()
        self._loaded_classnames = None

    def register_cache(self):
        self.register_model(self.model_name, self.cache)

    def forward(self, features):
        return self.cache(features, self.text_weights, self.logit_scale)

    def build_cache(self):
        """Keys and values from TRAINER.TIP.AUGMENT_EPOCH augmented views of the training images."""
        views = int(self.cfg.TRAINER.TIP.AUGMENT_EPOCH)
        if not self.dm.dataset.train_x:
            raise UserError(f"{self.cfg.DATASET.NAME} has no training images to build the Tip-Adapter cache from; "
                            f"evaluate a trained cache with --eval-only --model-dir DIR instead")
        print(f"Constructing cache model by few-shot visual features and labels ({views} augmented views per image)")
        feats, labels = self.source.split_features("train", views=views)
        keys, values = build_cache(feats, labels, self.dm.num_classes)
        self.cache.fill(keys, values)
        self.record["cache_size"] = int(keys.shape[0])
        self.record["augment_epoch"] = views

    # ---- hyper-parameter search -----------------------------------------------------------------
    def search_split(self):
        """(split name, features, labels, whether those are test images) for the search."""
        split = self.cfg.TRAINER.TIP.SEARCH_SPLIT
        items = self.dm.split(split)
        if not items:
            raise UserError(f"{self.cfg.DATASET.NAME} has no {split} images to search beta and alpha on; set "
                            f"TRAINER.TIP.SEARCH_SPLIT to the other split, or TRAINER.TIP.SEARCH_HP False")
        on_test = self.dm.selection_tier(split) == "test"
        if on_test and split == "val":
            print("Note: the validation split of this dataset is its test split (as in CoOp); "
                  "beta and alpha are searched on test images")
        feats, labels = self.source.split_features(split)
        return split, feats, labels, on_test

    def search(self, keys):
        """Search (beta, alpha) with the given keys; returns the chosen pair (the init values
        when TRAINER.TIP.SEARCH_HP is False) and records it."""
        tip = self.cfg.TRAINER.TIP
        beta, alpha = float(tip.INIT_BETA), float(tip.INIT_ALPHA)
        self.record.update(init_beta=beta, init_alpha=alpha, search_hp=bool(tip.SEARCH_HP))
        if not tip.SEARCH_HP:
            print(f"TRAINER.TIP.SEARCH_HP is off: beta {beta}, alpha {alpha}")
            return beta, alpha
        split, feats, labels, on_test = self.search_split()
        values = self.cache.cache_values
        n = max(1, len(labels))
        zero_shot = count_correct(feats, labels, self.text_weights, keys, values, beta, 0.0, self.logit_scale)
        init = count_correct(feats, labels, self.text_weights, keys, values, beta, alpha, self.logit_scale)
        print(f"\n**** Zero-shot CLIP's {split} accuracy: {100.0 * zero_shot / n:.2f}. ****")
        print(f"**** {self.display_name}'s {split} accuracy (beta {beta}, alpha {alpha}): "
              f"{100.0 * init / n:.2f}. ****\n")
        print(f"-------- Searching hyperparameters on the {split} set. --------")
        betas = search_grid(float(tip.SEARCH_SCALE[0]), int(tip.SEARCH_STEP[0]))
        alphas = search_grid(float(tip.SEARCH_SCALE[1]), int(tip.SEARCH_STEP[1]))
        result = search_hp(feats, labels, self.text_weights, keys, values, betas, alphas, self.logit_scale)
        self.chose("beta", result.beta, split)
        self.chose("alpha", result.alpha, split)
        self.record.update(search_split=split, search_on_test=on_test, search_accuracy=result.accuracy,
                           search_grid=[len(betas), len(alphas)])
        return result.beta, result.alpha

    def fit(self):
        self.build_cache()
        beta, alpha = self.search(self.cache.cache_keys)
        self.cache.set_hp(beta, alpha)
        print(f"{self.display_name}: beta {beta:.4f}, alpha {alpha:.4f}")

    def run_extras(self):
        return {"beta": float(self.cache.beta), "alpha": float(self.cache.alpha), "logit_scale": self.logit_scale,
                "search_split": self.cfg.TRAINER.TIP.SEARCH_SPLIT}

    # ---- checkpoints on other images or classes ------------------------------------------------
    def check_loaded(self, name, checkpoint):
        self._loaded_classnames = checkpoint.get("classnames")

    def adapt_loaded_state(self, name, state_dict):
        """A cache built on other images keeps its size; value columns follow the class names."""
        if "cache_values" not in state_dict or "cache_keys" not in state_dict:
            return state_dict  # not a Tip-Adapter cache: the engine names the missing keys
        values = state_dict["cache_values"]
        current = list(self.dm.classnames)
        remapped, unseen = remap_value_columns(values, self._loaded_classnames, current)
        if remapped is None:
            raise UserError(f"The checkpoint's cache has {values.shape[1]} classes and no class names, but "
                            f"{self.cfg.DATASET.NAME} has {len(current)}: cannot tell which column is which class")
        if unseen:
            print(f"{len(unseen)} of {len(current)} classes have no image in the cache; their logits are "
                  f"zero-shot CLIP's")
            self.record["unseen_classes_zeroshot"] = len(unseen)
        state_dict = dict(state_dict, cache_values=remapped)
        self.cache.reshape(state_dict["cache_keys"].shape, remapped.shape)
        return state_dict

