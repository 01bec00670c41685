r"""Train or evaluate a method: the CoOp/TaskRes `train.py` command line.

    python train.py --root DATA --seed 1 --trainer TaskRes \
        --dataset-config-file configs/datasets/eurosat.yaml \
        --config-file configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml \
        --output-dir output/eurosat/seed1 DATASET.NUM_SHOTS 16 TRAINER.TaskRes.RESIDUAL_SCALE 0.5

Flags may come before or after the trailing `KEY VALUE` config overrides.
"""
import argparse
import os
import platform
import re
import sys
import traceback

import torch

from engine import checkpoint, interrupt
from engine.config import get_cfg_all_trainers, merge_file, merge_opts
from engine.describe import declared
from engine.errors import ConfigError, UserError
from engine.io import tee_stdout
from engine.recipes import RecipeError, selection_opts
from engine.registry import TRAINER_REGISTRY
from engine.run_guard import check_fingerprint
from engine.run_lock import run_lock


def registered_epilog():
    """The registered trainers and datasets, for --help (read from the registries)."""
    import datasets

    def block(title, names):
        lines = [[]]
        for name in names:  # whole names per line
            if lines[-1] and len(", ".join(lines[-1] + [name])) > 96:
                lines.append([])
            lines[-1].append(name)
        return f"{title}\n  " + ",\n  ".join(", ".join(line) for line in lines)

    return "\n".join((
        block("trainers (--trainer):", TRAINER_REGISTRY.names()),
        block("datasets (--dataset-config-file configs/datasets/<stem>.yaml; stem (DATASET.NAME)):",
              [f"{i.stem} ({i.name})" for i in sorted(datasets.all_info(), key=lambda i: i.stem)]),
        "Own images: configs/datasets/imagefolder.yaml (class folders) or imagelist.yaml (CSV/JSON); "
        "DATASETS.md#your-own-data."))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=registered_epilog())
    p.add_argument("--root", type=str, default="", help="path to the dataset root (DATASET.ROOT)")
    p.add_argument("--output-dir", type=str, default="", help="output directory (OUTPUT_DIR)")
    p.add_argument("--resume", type=str, default="", help="checkpoint directory to resume from (RESUME)")
    p.add_argument("--seed", type=int, default=-1, help="only a non-negative value fixes the seed (0 included)")
    p.add_argument("--source-domains", type=str, nargs="+", help="source domains (DA/DG)")
    p.add_argument("--target-domains", type=str, nargs="+", help="target domains (DA/DG)")
    p.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods (INPUT.TRANSFORMS)")
    p.add_argument("--config-file", type=str, default="", help="method config file")
    p.add_argument("--dataset-config-file", type=str, default="", help="dataset config file")
    p.add_argument("--trainer", type=str, default="", help="name of the trainer (TRAINER.NAME)")
    p.add_argument("--backbone", type=str, default="", help="MODEL.BACKBONE.NAME: CLIP name, file, or model:tag")
    p.add_argument("--head", type=str, default="", help="name of the head (MODEL.HEAD.NAME)")
    p.add_argument("--eval-only", action="store_true", help="evaluation only")
    p.add_argument("--model-dir", type=str, default="", help="load a model from this directory for eval-only")
    p.add_argument("--load-epoch", type=int,
                   help="load model.pth.tar-<epoch> (default: the deployed model: model-best.pth.tar when the run "
                        "kept one, i.e. TEST.FINAL_MODEL best_val, else the last saved epoch)")
    p.add_argument("--no-train", action="store_true", help="build the trainer, do not train")
    p.add_argument("--overwrite", action="store_true",
                   help="discard a previous run in --output-dir made with another config (default: stop)")
    for need in method_needs():  # e.g. TaskRes's --enhanced-base
        p.add_argument(need.flag, type=str, default="none", dest=_dest(need),
                       help=f"{need.key}: path to a {need.producer} product ({need.name}) or 'none'")
    p.add_argument("opts", nargs="*", default=[], help="KEY VALUE config overrides, e.g. DATASET.NUM_SHOTS 16")
    return p


def method_needs():
    """The products of other methods that some method's runs take, with their flags."""
    return list(declared("needs", lambda need: need.flag).values())


def _dest(need):
    return need.flag.lstrip("-").replace("-", "_")


CFG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Za-z0-9_]+)+$")  # e.g. DATASET.NUM_SHOTS


def split_argv(argv, parser):
    """Separate `--flag [value]` tokens from KEY VALUE opts, wherever the flags appear.

    The reference declares opts with argparse.REMAINDER, so a flag after the first opt is
    swallowed into opts; here flags are recognised anywhere and the rest are opts.
    """
    takes_value = {}
    for action in parser._actions:
        for s in action.option_strings:
            takes_value[s] = action.nargs
    flags, opts, i = [], [], 0
    while i < len(argv):
        tok = argv[i]
        name = tok.split("=", 1)[0]
        if name in takes_value:
            flags.append(tok)
            nargs = takes_value[name]
            i += 1
            if "=" in tok or nargs == 0:
                continue
            if nargs == "+":
                while i < len(argv) and not argv[i].startswith("--") and not CFG_KEY.match(argv[i]):
                    flags.append(argv[i])
                    i += 1
            elif i < len(argv):
                flags.append(argv[i])
                i += 1
        elif tok.startswith("--") and not _is_number(tok):
            flags.append(tok)  # unknown flag: let argparse report it
            i += 1
        else:
            opts.append(tok)
            i += 1
    return flags, opts


def _is_number(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def parse_args(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    flags, opts = split_argv(argv, parser)
    args = parser.parse_args(flags)
    args.opts = opts
    return args


def setup_cfg(args):
    cfg = get_cfg_all_trainers()
    merge_file(cfg, args.dataset_config_file, "dataset config file")
    merge_file(cfg, args.config_file, "config file")
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None and args.seed >= 0:  # the reference's `if args.seed:` drops seed 0
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head
    for need in method_needs():
        value = getattr(args, _dest(need), "none")
        if value != "none":
            merge_opts(cfg, [need.key, value])
    merge_opts(cfg, args.opts)
    if cfg.SELECTION.PROTOCOL:  # the method's overrides for it, under the command line's own
        try:
            protocol = selection_opts(cfg.TRAINER.NAME, cfg.SELECTION.PROTOCOL)
        except RecipeError as e:
            raise ConfigError(str(e)) from None
        merge_opts(cfg, protocol)
        merge_opts(cfg, args.opts)
    cfg.freeze()
    return cfg


def print_args(args, cfg):
    print("***************\n** Arguments **\n***************")
    for key in sorted(vars(args)):
        print(f"{key}: {getattr(args, key)}")
    print("************\n** Config **\n************")
    print(cfg)
    print("Collecting env info ...")
    print("** System info **")
    print(f"Python {platform.python_version()} on {platform.platform()}; PyTorch {torch.__version__}; "
          f"CUDA available: {torch.cuda.is_available()}")


def run(args, models=None):
    """One run; `models` is a ModelCache shared by the runs of a sweep (None: own model)."""
    interrupt.install()  # a Ctrl-C that Python would drop (engine/interrupt.py) stops the run too
    cfg = setup_cfg(args)
    if not cfg.TRAINER.NAME:
        raise UserError(f"No trainer given: pass --trainer (one of {', '.join(TRAINER_REGISTRY.names())})")
    trainer_cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    if args.eval_only and args.model_dir and not os.path.isdir(args.model_dir):
        raise UserError(f"--model-dir {args.model_dir}: folder not found. Give the --output-dir of a training run: "
                        "its deployed model is loaded, or model.pth.tar-N with --load-epoch N.")
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        checkpoint.set_random_seed(cfg.SEED)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = bool(cfg.TRAIN.ALLOW_TF32)
        torch.backends.cudnn.allow_tf32 = bool(cfg.TRAIN.ALLOW_TF32)
    with run_lock(cfg.OUTPUT_DIR):
        check_fingerprint(cfg, trainer_cls, eval_only=args.eval_only, overwrite=args.overwrite)
        with tee_stdout(cfg.OUTPUT_DIR) as log_path:
            try:
                return build_and_run(args, cfg, trainer_cls, models)
            except UserError as e:
                _append(log_path, f"\nError: {e}\n")  # the console gets it from main()
                raise
            except KeyboardInterrupt:
                _append(log_path, "\nInterrupted: rerun the same command to resume from the last finished epoch.\n")
                raise
            except Exception:  # noqa: BLE001 - any crash leaves its traceback in log.txt, then propagates
                _append(log_path, "\n" + traceback.format_exc())
                raise


def _append(path, text):
    sys.stdout.flush()  # the tee's buffered lines first, so that this is the log's last word
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def build_and_run(args, cfg, trainer_cls, models=None):
    print_args(args, cfg)
    print(f"Loading trainer: {cfg.TRAINER.NAME}")
    trainer = trainer_cls(cfg, models=models)
    trainer.record.update(config_file=args.config_file or None, eval_only=bool(args.eval_only),
                          model_dir=args.model_dir or None)
    if args.eval_only:
        if not args.model_dir and trainer.needs_trained_weights():
            raise UserError(
                f"--eval-only without --model-dir would evaluate an untrained {cfg.TRAINER.NAME} "
                f"({', '.join(trainer.get_model_names())}). Pass --model-dir with the output folder of a "
                "training run (and --load-epoch N for model.pth.tar-N), or MODEL.INIT_WEIGHTS; to score "
                "the untrained model on purpose, train for zero epochs (OPTIM.MAX_EPOCH 0, no --eval-only).")
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return trainer
    if not args.no_train:
        trainer.train()
    return trainer


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except UserError as e:
        print(f"\nError: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = f" (--output-dir {args.output_dir})" if args.output_dir else ""
        print(f"\nInterrupted. Rerun the same command{where} to resume from the last finished epoch.",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
