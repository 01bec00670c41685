"""Run a grid of runs for one dataset and backbone in one process, for any trainer.

    python sweep.py --shots 1 2 4 8 16 --seeds 1 2 3 --recipe \\
        --root DATA --trainer TaskRes --dataset-config-file configs/datasets/eurosat.yaml \\
        --output-dir output/eurosat/TaskRes FEATURES.MODE cached

    python sweep.py --shots 1 2 --seeds 1 2 --set OPTIM.LR=1e-3,2e-3 --set OPTIM.MAX_EPOCH=10,20 \\
        --root DATA --trainer TaskRes --dataset-config-file configs/datasets/eurosat.yaml \\
        --config-file configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml --output-dir output/lr

Every run writes its own folder, log.txt, checkpoint and results.json exactly as `train.py`
would; the CLIP models (one per backbone and precision), the text classifiers and (in
FEATURES.MODE cached) the image features are loaded or computed once and shared read-only.

Grid axes: --shots, --seeds, --set KEY=v1,v2,... (any config key, repeatable), the sweep axes
the methods declare (`python -m engine.describe METHOD`: each axis a flag such as --alphas,
taking values of one config key) and --recipe (the method's recipe in its config folder: the
config file and overrides per dataset and shot count; --paper-recipe is the same).
Run folders: <output-dir>/<cfg>_<K>shots[/<variant>][/<set tag>]/seed<S> (the reference
scripts' layout, engine/layout.py: the variant is the method's, naming its axis values; the set
tag joins KEYvalue for each --set key, e.g. LR0.001), or an --output-dir template with {cfg}
{shots} {seed} {trainer} {set} and one {<axis>} placeholder per axis (e.g. {alpha}).
Finished runs (results.json) are skipped; unfinished ones resume. A failing run is reported and
the others go on, except for weights that cannot be loaded (offline, no local copy): the runs on
that backbone are not started, since each would try the same download again.
Exit status: 0 every run finished, 1 some failed, 2 bad arguments, 3 stopped by weights that
cannot be loaded (scripts/all_methods.sh then stops too).
In FEATURES.MODE cached, after the first run the store is filled for the others in one pass
(`prefill_group`: what each later run will read, encoded with one DataLoader in the batches the
run would have used, so the stored values are the same as without it).
"""
import argparse
import itertools
import random
import sys
import time
import traceback

import numpy as np
import torch

import train
from datasets import build_dataset
from datasets.fewshot import drawn_unsaved
from engine import layout
from engine.checkpoint import set_random_seed
from engine.features import CachedSource, prefill
from engine.config import merge_opts
from engine.describe import MethodFacts, declared, method
from engine.errors import UserError, WeightsError
from engine.models import ModelCache
from engine.recipes import RecipeError, dataset_stem, recipe
from engine.run_lock import RunLockedError

set_tag = layout.set_tag


def method_axes():
    """The sweep axes of every registered method, one per flag."""
    return declared("axes", _flag)


def _flag(axis):
    return axis.flag or f"--{axis.name}s"


def _dest(flag):
    return "axis_" + flag.lstrip("-").replace("-", "_")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="python sweep.py --shots K [K ...] --seeds S [S ...] [options] TRAIN.PY ARGS",
                                allow_abbrev=False)  # train.py's --seed is not --seeds
    p.add_argument("--shots", type=int, nargs="+", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=V1,V2",
                   help="a config key and its values (repeatable; every combination runs)")
    for flag, axis in method_axes().items():
        p.add_argument(flag, dest=_dest(flag), nargs="+", metavar=flag.lstrip("-").upper(),
                       help=axis.help or f"{axis.key} values")
    p.add_argument("--recipe", "--paper-recipe", dest="recipe", action="store_true",
                   help="the trainer's recipe (its config folder): config file and overrides per "
                        "dataset and shot count; axis flags, --set and trailing overrides still win")
    return p


def parse_sets(items):
    """[(KEY, [v1, v2, ...])] from KEY=v1,v2 strings."""
    out = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise UserError(f"--set takes KEY=v1,v2,...; got {item!r}")
        out.append((key, values.split(",")))
    return out


def _axis_values(sweep, axis, cfg0, recipe_value):
    """The values of one axis, typed as its config key's default: the flag's, else the recipe's,
    else the config's."""
    default = axis.value(cfg0)
    texts = getattr(sweep, _dest(_flag(axis)), None)
    if not texts:
        texts = [recipe_value] if recipe_value is not None else [default]
    try:
        return [type(default)(v) for v in texts]
    except (TypeError, ValueError):
        raise UserError(f"{_flag(axis)} takes {type(default).__name__} values; got {' '.join(map(str, texts))}") from None


def plan(sweep, base):
    """(run folder, train.py argv) for each grid point."""
    cfg0 = train.setup_cfg(base)
    trainer = cfg0.TRAINER.NAME
    cls = method(trainer) if trainer else MethodFacts  # train.py reports the missing trainer
    dataset = dataset_stem(cfg0.DATASET.NAME) if cfg0.DATASET.NAME else ""
    sets = parse_sets(sweep.sets)
    combos = list(itertools.product(*[[(k, v) for v in values] for k, values in sets])) or [()]
    runs = []
    for shots in sweep.shots:
        config, opts, recipe_opts = base.config_file, [], {}
        if sweep.recipe:
            try:
                r = recipe(trainer, dataset, shots)
            except RecipeError as e:
                raise UserError(str(e)) from None
            config = r.config
            # An axis is always named in the folder, so its recipe value becomes the axis value.
            recipe_opts = {a.key: r.opts.pop(a.key) for a in cls.axes if a.key in r.opts}
            opts = r.opts_list()
        if not config:
            raise UserError("pass --config-file (or --recipe for a trainer with a recipe table)")
        values = [_axis_values(sweep, a, cfg0, recipe_opts.get(a.key)) for a in cls.axes]
        cfg_name = layout.config_name(config)
        for point in itertools.product(*values):
            axis_opts = [t for a, v in zip(cls.axes, point) for t in (a.key, str(v))]
            variant = _variant(cls, cfg0, axis_opts)
            fields = {a.name: v for a, v in zip(cls.axes, point)}
            for combo in combos:
                for seed in sweep.seeds:
                    out = run_dir(base, trainer, cfg_name, shots, seed, fields, combo, variant)
                    argv = list(base.argv) + ["--config-file", config, "--seed", str(seed), "--output-dir", out]
                    # yacs keeps the last value: the recipe's overrides, then the user's own,
                    # then the grid's values, then the axes'.
                    argv += opts + list(base.opts) + ["DATASET.NUM_SHOTS", str(shots)]
                    for key, value in combo:
                        argv += [key, value]
                    runs.append((out, argv + axis_opts))
    return runs


def headline(sweep, base, runs):
    """The sweep's first line: the grid, and the value each method axis runs with and where it
    came from (a residual scale is the config's 1.0 unless --alphas, the recipe or an override says)."""
    cfg0 = train.setup_cfg(base)
    cls = method(cfg0.TRAINER.NAME) if cfg0.TRAINER.NAME else MethodFacts
    line = (f"Sweep of {cfg0.TRAINER.NAME or '?'} on {cfg0.DATASET.NAME or '?'}: {len(runs)} runs "
            f"(shots {' '.join(map(str, sweep.shots))} x seeds {' '.join(map(str, sweep.seeds))}"
            + "".join(f" x {key} {' '.join(values)}" for key, values in parse_sets(sweep.sets)) + ")")
    for axis in cls.axes:
        values = []
        for _, argv in runs:  # an axis value is passed last: its last occurrence in the argv
            value = argv[len(argv) - argv[::-1].index(axis.key)]
            values += [value] if value not in values else []
        flag = _flag(axis)
        source = (f"from {flag}" if getattr(sweep, _dest(flag), None) else
                  "the recipe's" if sweep.recipe else f"{axis.key} of the config and overrides; {flag} sets it")
        line += f"; {axis.name} {', '.join(values)} ({source})"
    return line


def _variant(cls, cfg0, axis_opts):
    """The method's folder part for these axis values."""
    cfg = cfg0.clone()
    cfg.defrost()
    merge_opts(cfg, axis_opts)
    return cls.run_variant(cfg)


def run_dir(base, trainer, cfg_name, shots, seed, axes=None, combo=(), variant=""):
    """The run folder: the --output-dir template filled, or the layout under --output-dir."""
    root = base.output_dir or "output"
    tag = set_tag(combo)
    if "{" in root:
        fields = dict(cfg=cfg_name, shots=shots, seed=seed)
        fields.update({a.name: None for a in method_axes().values()})
        fields.update(axes or {})
        fields.update(trainer=trainer, set=tag)
        return layout.fill_template(root, fields, "--output-dir template")
    return layout.run_folder(root, cfg_name, shots, seed, variant, tag)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    sweep, rest = build_parser().parse_known_args(argv)
    base = train.parse_args(rest)
    # Keep the user's train.py flags except those each run sets itself; base.opts (the trailing
    # overrides) go after the recipe's in every run (see plan), so they win over the table.
    flags, _ = train.split_argv(rest, train.build_parser())
    base.argv = strip_flags(flags, {"--config-file", "--seed", "--output-dir"})
    try:
        runs = plan(sweep, base)
    except UserError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    print(headline(sweep, base, runs), flush=True)
    models = ModelCache()  # owned by this sweep; dropped when it ends
    failed, start, filled = [], time.time(), False
    unloadable, not_started = set(), []  # backbones whose weights cannot be loaded; runs left
    for i, (out, run_argv) in enumerate(runs, 1):
        if layout.finished(out):
            print(f"[{i}/{len(runs)}] {out}: finished, skipped")
            continue
        if unloadable and _backbone(run_argv) in unloadable:
            not_started.append(out)
            continue
        print(f"[{i}/{len(runs)}] {out}")
        try:
            trainer = train.run(train.parse_args(run_argv), models=models)
        except RunLockedError as e:
            print(f"[{i}/{len(runs)}] {out}: running elsewhere, skipped ({e})")
        except WeightsError as e:  # every later run on this backbone would try (and wait) again
            print(f"Error in {out}: {e}", file=sys.stderr)
            failed.append(out)
            unloadable.add(_backbone(run_argv))
        except UserError as e:
            print(f"Error in {out}: {e}", file=sys.stderr)
            failed.append(out)
        except Exception:  # noqa: BLE001 - one broken run must not stop the grid
            traceback.print_exc()
            failed.append(out)
        else:
            if not filled:
                filled = True
                try:
                    prefill_group(run_argv, trainer, [a for o, a in runs[i:] if not layout.finished(o)])
                except Exception:  # noqa: BLE001 - the runs then fill the store themselves
                    traceback.print_exc()
                    print("The store pre-fill failed; each run encodes what it misses")
    print(f"Sweep done in {time.time() - start:.1f}s: {len(runs) - len(failed) - len(not_started)}/{len(runs)} runs finished")
    for out in failed:
        print(f"  failed: {out}")
    if unloadable:
        print(f"Sweep stopped: the weights of {', '.join(sorted(unloadable))} cannot be loaded (the error above); "
              f"{len(not_started)} more run(s) on it not started. Make the weights available and rerun.",
              file=sys.stderr)
        return 3
    return 1 if failed else 0


def _backbone(run_argv):
    """The backbone a run loads (its effective MODEL.BACKBONE.NAME)."""
    return train.setup_cfg(train.parse_args(run_argv)).MODEL.BACKBONE.NAME


def prefill_group(first_argv, trainer, later_argvs):
    """After a group's first run (FEATURES.MODE cached): encode what the later runs will read
    from the store in one pass (engine.features.prefill), for the runs whose store namespaces
    are the first run's (same method, transforms, backbone, precision, dataset; other shots,
    seeds or training keys), each run's few-shot subsets drawn as the run will draw them (its
    seed; nothing cached, the caller's random state restored). The runs then read; the stored
    values are those they would have encoded themselves. Returns the entries encoded."""
    source = getattr(trainer, "source", None)
    if not isinstance(source, CachedSource) or not source.requests:
        return 0
    identity = _store_identity(train.setup_cfg(train.parse_args(first_argv)))
    datasets = []
    for argv in later_argvs:
        cfg = train.setup_cfg(train.parse_args(argv))
        if cfg.SEED >= 0 and _store_identity(cfg) == identity:
            datasets.append(_lookahead_dataset(cfg))
    return prefill(source, datasets, desc=f"Filling the store for {len(datasets)} runs")


def _store_identity(cfg):
    """What names a run's store namespaces and the images it asks for, but for its shots and seed."""
    node = cfg.TRAINER.get(method(cfg.TRAINER.NAME).cfg_node or "", None)
    dataset = {k: v for k, v in cfg.DATASET.items() if k != "NUM_SHOTS"}
    return repr((cfg.INPUT, cfg.FEATURES, cfg.MODEL, dataset, cfg.TRAINER.NAME, cfg.USE_CUDA,
                 node.get("PREC") if node else None, cfg.DATALOADER.TEST.BATCH_SIZE))


def _lookahead_dataset(cfg):
    """The dataset a run with `cfg` will build: few-shot subsets drawn after its seed, unsaved."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        set_random_seed(cfg.SEED)
        with drawn_unsaved():
            return build_dataset(cfg)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def strip_flags(flags, names):
    out, skip = [], False
    for tok in flags:
        if skip:
            skip = False
            continue
        name = tok.split("=", 1)[0]
        if name in names:
            skip = "=" not in tok
            continue
        out.append(tok)
    return out


if __name__ == "__main__":
    sys.exit(main())
