"""Config tree with Dassl-compatible keys and yacs semantics.

Merge order (as in CoOp/TaskRes `train.py`): defaults -> every trainer's `extend_cfg` ->
dataset yaml -> method yaml -> CLI flags -> trailing `KEY VALUE` opts. yacs gives the
semantics the reference yaml files rely on: `ast.literal_eval` of string values
(`1e-5` -> float, `(224, 224)` -> tuple), an error on unknown keys and on type mismatches.
This project's own yaml files may start from another one with `_BASE_` (load_yaml); a file
whose name starts with `_` in a method's config folder is such a base, not a config to run.
"""
import difflib
import os

import yaml
from yacs.config import CfgNode as CN

from .errors import ConfigError
from .registry import TRAINER_REGISTRY

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


BASE_KEY = "_BASE_"


def load_yaml(path, _chain=()):
    """The mapping in a yaml file, on top of its `_BASE_` chain (as in detectron2): a top-level
    `_BASE_: other.yaml` (relative to the including file) is loaded first, and the file's own
    values replace the base's, key by key through nested mappings. Only this project's files use
    `_BASE_` (yacs' own merge_from_file does not follow it); reference yaml files have none and
    load as yacs loads them."""
    path = os.path.abspath(path)
    chain = _chain + (path,)
    if path in _chain:
        raise ConfigError(f"{BASE_KEY} cycle: {' -> '.join(chain[chain.index(path):])}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, not a {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: {BASE_KEY} must be the path of one yaml file, got {base!r}")
    base_path = os.path.join(os.path.dirname(path), os.path.expanduser(base))
    if not os.path.isfile(base_path):
        raise ConfigError(f"{path}: {BASE_KEY} file not found: {base} (looked for {os.path.normpath(base_path)})")
    return _merge_mappings(load_yaml(base_path, chain), data)


def _merge_mappings(base, override):
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge_mappings(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


SELECTION_PROTOCOLS = ("", "none", "fewshot-val", "full-val", "test")  # "" and engine.selection.TIERS


def get_cfg_default():
    c = CN()
    c.VERSION = 1
    c.OUTPUT_DIR = "./output"
    c.RESUME = ""
    c.SEED = -1
    c.USE_CUDA = True
    c.VERBOSE = True

    c.INPUT = CN()
    c.INPUT.SIZE = (224, 224)
    c.INPUT.INTERPOLATION = "bilinear"
    # Not in Dassl: "tensor" runs the training crops, resizes and flips on uint8 tensors
    # (torchvision v2, antialias; same crop boxes and flips, other resampling: its own store
    # namespace); "pil" is the reference.
    c.INPUT.TRANSFORM_BACKEND = "pil"
    c.INPUT.TRANSFORMS = ()
    c.INPUT.NO_TRANSFORM = False
    c.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
    c.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
    c.INPUT.CROP_PADDING = 4
    c.INPUT.RRCROP_SCALE = (0.08, 1.0)
    c.INPUT.CUTOUT_N = 1
    c.INPUT.CUTOUT_LEN = 16
    c.INPUT.GN_MEAN = 0.0
    c.INPUT.GN_STD = 0.15
    c.INPUT.RANDAUGMENT_N = 2
    c.INPUT.RANDAUGMENT_M = 10
    c.INPUT.COLORJITTER_B = 0.4
    c.INPUT.COLORJITTER_C = 0.4
    c.INPUT.COLORJITTER_S = 0.4
    c.INPUT.COLORJITTER_H = 0.1
    c.INPUT.RGS_P = 0.2
    c.INPUT.GB_P = 0.5
    c.INPUT.GB_K = 21

    c.DATASET = CN()
    c.DATASET.ROOT = ""
    c.DATASET.NAME = ""
    c.DATASET.SOURCE_DOMAINS = ()
    c.DATASET.TARGET_DOMAINS = ()
    c.DATASET.NUM_LABELED = -1
    c.DATASET.NUM_SHOTS = -1
    c.DATASET.VAL_PERCENT = 0.1
    c.DATASET.STL10_FOLD = -1
    c.DATASET.CIFAR_C_TYPE = ""
    c.DATASET.CIFAR_C_LEVEL = 1
    c.DATASET.ALL_AS_UNLABELED = False
    # Added by CoOp's extend_cfg; kept here because every dataset reads it.
    c.DATASET.SUBSAMPLE_CLASSES = "all"
    # Not in Dassl: where few-shot subsets are cached; "" = beside the data (CoOp's
    # split_fewshot/), or a per-user cache when the dataset folder is read-only.
    c.DATASET.SPLIT_CACHE_DIR = ""
    # Not in CoOp: a few-shot validation split (min(K, 4) per class) carved from the training
    # images outside the few-shot set, for choices that must not see test (ImageNet's val is its
    # test split). False = CoOp's val (the dataset's own val split at min(K, 4) per class).
    c.DATASET.VAL_FROM_TRAIN = False
    # Not in Dassl: the prompt template ("a photo of a {}."); "" = the dataset's own (the
    # reference prompt of a benchmark). Methods read it through trainers.common.templates.
    c.DATASET.TEMPLATE = ""
    # Not in Dassl: the seed of a train/val/test split made here when none is given (a benchmark
    # folder without its split file, own data without split folders or column). Kept apart from
    # SEED so that every seed of a study shares one test set.
    c.DATASET.SPLIT_SEED = 1
    # Own data (datasets/custom.py; DATASETS.md#your-own-data): ImageFolder and ImageList.
    c.DATASET.CUSTOM = CN()
    c.DATASET.CUSTOM.PATH = ""  # ImageFolder: the tree ("" = DATASET.ROOT); ImageList: the CSV/JSON file
    c.DATASET.CUSTOM.CLASSNAMES = ""  # optional file of '<folder or label> <class name>' lines
    c.DATASET.CUSTOM.TRAIN_FRACTION = 0.5  # per class, for a generated split (CoOp's 50/20/30)
    c.DATASET.CUSTOM.VAL_FRACTION = 0.2  # ... the rest is test; of train when only val is missing

    c.DATALOADER = CN()
    c.DATALOADER.NUM_WORKERS = 4
    c.DATALOADER.K_TRANSFORMS = 1
    c.DATALOADER.RETURN_IMG0 = False
    c.DATALOADER.TRAIN_X = CN()
    c.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
    c.DATALOADER.TRAIN_X.BATCH_SIZE = 32
    c.DATALOADER.TRAIN_X.N_DOMAIN = 0
    c.DATALOADER.TRAIN_X.N_INS = 16
    c.DATALOADER.TRAIN_U = CN()
    c.DATALOADER.TRAIN_U.SAME_AS_X = True
    c.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
    c.DATALOADER.TRAIN_U.BATCH_SIZE = 32
    c.DATALOADER.TRAIN_U.N_DOMAIN = 0
    c.DATALOADER.TRAIN_U.N_INS = 16
    c.DATALOADER.TEST = CN()
    c.DATALOADER.TEST.SAMPLER = "SequentialSampler"
    c.DATALOADER.TEST.BATCH_SIZE = 32

    c.MODEL = CN()
    c.MODEL.INIT_WEIGHTS = ""
    c.MODEL.BACKBONE = CN()
    # A CLIP name (RN50, ViT-B/16, ...), a path to a checkpoint file, or "model:pretrained" for open_clip.
    c.MODEL.BACKBONE.NAME = ""
    c.MODEL.BACKBONE.PRETRAINED = True
    # Where OpenAI weights are downloaded and looked up; "" -> $CLIP_CACHE_DIR or ~/.cache/clip.
    c.MODEL.BACKBONE.CACHE_DIR = ""
    # False: after loading, torch's CPU generator is where the reference's model build (a random
    # CLIP init before the weights are copied in) leaves it, so a seed gives the reference's run.
    # True: loading leaves the generator untouched.
    c.MODEL.BACKBONE.ISOLATED_RNG = False
    c.MODEL.HEAD = CN()
    c.MODEL.HEAD.NAME = ""
    c.MODEL.HEAD.HIDDEN_LAYERS = ()
    c.MODEL.HEAD.ACTIVATION = "relu"
    c.MODEL.HEAD.BN = True
    c.MODEL.HEAD.DROPOUT = 0.0

    c.OPTIM = CN()
    c.OPTIM.NAME = "adam"
    c.OPTIM.LR = 0.0003
    c.OPTIM.WEIGHT_DECAY = 5e-4
    c.OPTIM.MOMENTUM = 0.9
    c.OPTIM.SGD_DAMPNING = 0
    c.OPTIM.SGD_NESTEROV = False
    c.OPTIM.RMSPROP_ALPHA = 0.99
    c.OPTIM.ADAM_BETA1 = 0.9
    c.OPTIM.ADAM_BETA2 = 0.999
    c.OPTIM.STAGED_LR = False
    c.OPTIM.NEW_LAYERS = ()
    c.OPTIM.BASE_LR_MULT = 0.1
    c.OPTIM.LR_SCHEDULER = "single_step"
    c.OPTIM.STEPSIZE = (-1,)
    c.OPTIM.GAMMA = 0.1
    c.OPTIM.MAX_EPOCH = 10
    c.OPTIM.WARMUP_EPOCH = -1
    c.OPTIM.WARMUP_TYPE = "linear"
    c.OPTIM.WARMUP_CONS_LR = 1e-5
    c.OPTIM.WARMUP_MIN_LR = 1e-5
    c.OPTIM.WARMUP_RECOUNT = True

    c.TRAIN = CN()
    c.TRAIN.CHECKPOINT_FREQ = 0
    c.TRAIN.PRINT_FREQ = 10
    c.TRAIN.COUNT_ITER = "train_x"
    # Not in Dassl: a rolling resume snapshot every N epochs (0 = off, the reference), removed
    # when the run finishes, so a killed run continues where it stopped. A periodic checkpoint
    # (CHECKPOINT_FREQ) before the last epoch is always followed by one: it is a resume point.
    c.TRAIN.RESUME_FREQ = 1
    # Not in Dassl (which always writes it): TensorBoard events under OUTPUT_DIR/tensorboard.
    c.TRAIN.TENSORBOARD = True
    # Not in Dassl: micro-batches per optimizer step (1 = the reference: one step per batch).
    c.TRAIN.GRAD_ACCUM_STEPS = 1
    # TF32 matmuls and convolutions on CUDA (Ampere and later), as the reference TaskRes
    # train.py enables them; False for full fp32 arithmetic.
    c.TRAIN.ALLOW_TF32 = True

    c.TEST = CN()
    c.TEST.EVALUATOR = "Classification"
    c.TEST.PER_CLASS_RESULT = False
    c.TEST.COMPUTE_CMAT = False
    c.TEST.NO_TEST = False
    c.TEST.SPLIT = "test"
    c.TEST.FINAL_MODEL = "last_step"
    # Not in Dassl: SaLS post-hoc calibration (engine.calibration): each sample's logits mapped
    # into the range of its zero-shot CLIP logits at evaluation; accuracy unchanged.
    c.TEST.SALS = False
    # Not in Dassl: cross-dataset transfer (scripts/xd_test.sh, the cross-dataset study protocol):
    # a checkpoint sharing no class with the dataset is evaluated anyway, its per-class entries
    # falling back to the zero-shot rows (what transfers is what is not tied to a class). False:
    # such an evaluation is refused, since it would be zero-shot CLIP under the method's name.
    c.TEST.CROSS_DATASET = False

    # Not in Dassl: which selection protocol a run asks for (engine.selection): "" = the method's
    # own recipe; "none", "fewshot-val" or "test" apply the overrides the method's
    # configs/trainers/<Name>/_selection.yaml lists for it (engine.recipes.selection_opts). The
    # tier a run reports is still derived from what it did, and checked against this.
    c.SELECTION = CN()
    c.SELECTION.PROTOCOL = ""

    # Where image features come from for trainers that consume features (engine/features.py).
    c.FEATURES = CN()
    c.FEATURES.MODE = "online"  # "online" = the reference: augment and encode every batch
    c.FEATURES.NUM_VIEWS = 10  # augmented views per training image in "cached" mode
    c.FEATURES.CACHE_DIR = ""  # "" -> $FEATURE_CACHE_DIR or ~/.cache/taskres-features
    # Precision of the frozen image encoder on CUDA: "" = what the method's reference does
    # (TaskRes casts CLIP to fp32 after building its base; zero-shot CLIP stays fp16),
    # "fp16" or "fp32" to force one. CPU always runs fp32.
    c.FEATURES.IMAGE_ENCODER_PREC = ""

    c.TRAINER = CN()
    c.TRAINER.NAME = ""
    return c


def get_cfg_all_trainers():
    """The defaults with every registered trainer's nodes, as the reference train.py builds them:
    the method may be named by a yaml file or a KEY VALUE override, so its keys must exist before
    it is known. A run records only its own (engine.record.recorded_config)."""
    cfg = get_cfg_default()
    for _, trainer in TRAINER_REGISTRY.items():
        trainer.extend_cfg(cfg)
    return cfg


# Dassl default keys that nothing in this framework reads (semi-supervised, domain-adaptation
# and backbone/head options of Dassl's own models). Reference yaml files leave them at their
# defaults and load; a config that changes one gets an error instead of silently no effect.
INERT_KEYS = (
    "DATASET.SOURCE_DOMAINS", "DATASET.TARGET_DOMAINS", "DATASET.NUM_LABELED", "DATASET.VAL_PERCENT",
    "DATASET.STL10_FOLD", "DATASET.CIFAR_C_TYPE", "DATASET.CIFAR_C_LEVEL", "DATASET.ALL_AS_UNLABELED",
    "DATALOADER.K_TRANSFORMS", "DATALOADER.RETURN_IMG0", "DATALOADER.TRAIN_X.SAMPLER",
    "DATALOADER.TRAIN_X.N_DOMAIN", "DATALOADER.TRAIN_X.N_INS", "DATALOADER.TRAIN_U.SAME_AS_X",
    "DATALOADER.TRAIN_U.SAMPLER", "DATALOADER.TRAIN_U.BATCH_SIZE", "DATALOADER.TRAIN_U.N_DOMAIN",
    "DATALOADER.TRAIN_U.N_INS", "DATALOADER.TEST.SAMPLER", "MODEL.BACKBONE.PRETRAINED", "MODEL.HEAD.NAME",
    "MODEL.HEAD.HIDDEN_LAYERS", "MODEL.HEAD.ACTIVATION", "MODEL.HEAD.BN", "MODEL.HEAD.DROPOUT",
    "OPTIM.STAGED_LR", "OPTIM.NEW_LAYERS", "OPTIM.BASE_LR_MULT", "TRAIN.COUNT_ITER", "TEST.EVALUATOR",
    "TEST.COMPUTE_CMAT", "INPUT.RANDAUGMENT_N", "INPUT.RANDAUGMENT_M",
)


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def check_inert_keys(cfg, defaults=None):
    defaults = defaults or get_cfg_default()
    changed = [k for k in INERT_KEYS if _get(cfg, k) != _get(defaults, k)]
    if changed:
        raise ConfigError(
            "These Dassl config keys have no effect in this framework, but the config changes them: "
            + ", ".join(f"{k} = {_get(cfg, k)!r} (default {_get(defaults, k)!r})" for k in changed)
            + ". Remove them from the yaml file or the command line.")


def check_cfg(cfg):
    """Checks shared by every trainer; trainer-specific ones live in the trainer's check_cfg."""
    check_inert_keys(cfg)
    if int(cfg.DATASET.NUM_SHOTS) < -1:
        raise ConfigError(f"DATASET.NUM_SHOTS must be a number of images per class (>= 1), or -1 for all of "
                          f"them, got {cfg.DATASET.NUM_SHOTS}")
    for key, low in (("OPTIM.MAX_EPOCH", 0), ("DATALOADER.TRAIN_X.BATCH_SIZE", 1), ("DATALOADER.TEST.BATCH_SIZE", 1),
                     ("FEATURES.NUM_VIEWS", 1)):
        if int(_get(cfg, key)) < low:
            raise ConfigError(f"{key} must be >= {low}, got {_get(cfg, key)}")
    if not float(cfg.OPTIM.LR) >= 0:  # also NaN
        raise ConfigError(f"OPTIM.LR must be >= 0, got {cfg.OPTIM.LR}")
    if int(cfg.TRAIN.GRAD_ACCUM_STEPS) < 1:
        raise ConfigError(f"TRAIN.GRAD_ACCUM_STEPS must be >= 1, got {cfg.TRAIN.GRAD_ACCUM_STEPS}")
    if cfg.FEATURES.MODE not in ("online", "cached"):
        raise ConfigError(f"FEATURES.MODE must be 'online' or 'cached', got {cfg.FEATURES.MODE!r}")
    if cfg.SELECTION.PROTOCOL not in SELECTION_PROTOCOLS:
        raise ConfigError(f"SELECTION.PROTOCOL must be one of {', '.join(repr(p) for p in SELECTION_PROTOCOLS)}, "
                          f"got {cfg.SELECTION.PROTOCOL!r}")
    if cfg.TEST.FINAL_MODEL not in ("last_step", "best_val"):
        raise ConfigError(f"TEST.FINAL_MODEL must be 'last_step' or 'best_val', got {cfg.TEST.FINAL_MODEL!r}")
    if cfg.FEATURES.IMAGE_ENCODER_PREC not in ("", "fp16", "fp32"):
        raise ConfigError(f"FEATURES.IMAGE_ENCODER_PREC must be '', 'fp16' or 'fp32', got {cfg.FEATURES.IMAGE_ENCODER_PREC!r}")


CONFIG_EXTENSIONS = (".yaml", ".yml")


def merge_file(cfg, path, what):
    if not path:
        return
    if os.path.splitext(path)[1].lower() not in CONFIG_EXTENSIONS:
        # yacs would execute a .py config as code; only yaml is ever read here.
        raise ConfigError(f"{what} {path} is not a .yaml or .yml file; only yaml config files are read "
                          "(yacs-style .py configs are code and are never run)")
    if not os.path.isfile(path):
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        in_repo = os.path.join(repo, path)
        if not os.path.isabs(path) and os.path.isfile(in_repo):
            print(f"Note: {what} {path} is not in the current folder {os.getcwd()}; using {in_repo}")
            path = in_repo
        else:
            where = "" if os.path.isabs(path) else f" (relative paths are read from the current folder, {os.getcwd()})"
            raise ConfigError(f"{what} not found: {path}{where}")
    try:
        cfg.merge_from_other_cfg(CN(load_yaml(path)))
    except (KeyError, AssertionError, ValueError) as e:
        raise ConfigError(f"Cannot merge {what} {path}: {_yacs_reason(e, cfg)}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]} "
                          f"({' '.join(str(e).split())[:200]})") from None


def merge_opts(cfg, opts):
    if len(opts) % 2:
        raise ConfigError(
            f"Config overrides come in KEY VALUE pairs; got an odd number of tokens: {' '.join(opts)}")
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError, ValueError) as e:
        raise ConfigError(f"Cannot apply config overrides: {_yacs_reason(e, cfg)}") from None


def _yacs_reason(e, cfg=None):
    msg = " ".join(str(a) for a in e.args)
    if "Non-existent" in msg:
        hint = ""
        key = msg.rsplit(":", 1)[-1].strip()
        if cfg is not None and key:
            close = difflib.get_close_matches(key, _all_keys(cfg), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]}?" if close else ""
        return (f"unknown config key ({msg}).{hint} Check the spelling against engine/config.py or the "
                "trainer's extend_cfg.")
    return msg


def _all_keys(cfg, prefix=""):
    out = []
    for k, v in cfg.items():
        if isinstance(v, CN):
            out += _all_keys(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out
