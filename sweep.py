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

Grid axes: --shots, --seeds, --set KEY=v1,v2,... (any config key, repeatable), --alphas
(TaskRes's residual scale) and --recipe (the trainer's table in configs/recipes.yaml: the
config file and overrides per dataset and shot count; --paper-recipe is the same).
Run folders: <output-dir>/<cfg>_<K>shots[/base_<regular|enhanced>_alpha<A>][/<set tag>]/seed<S>
(the TaskRes scripts' layout; the set tag joins KEYvalue for each --set key, e.g. LR0.001), or
an --output-dir template with {cfg} {shots} {seed} {alpha} {trainer} {set} placeholders.
Finished runs (results.json) are skipped; unfinished ones resume. A failing run is reported and
the others go on.
"""
import argparse
import itertools
import os
import sys
import time
import traceback

import train
from engine.errors import UserError
from engine.models import ModelCache
from engine.recipes import RecipeError, dataset_stem, recipe
from engine.run_guard import RunLockedError


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="python sweep.py --shots K [K ...] --seeds S [S ...] [options] TRAIN.PY ARGS",
                                allow_abbrev=False)  # train.py's --seed is not --seeds
    p.add_argument("--shots", type=int, nargs="+", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=V1,V2",
                   help="a config key and its values (repeatable; every combination runs)")
    p.add_argument("--alphas", type=float, nargs="+", help="TaskRes RESIDUAL_SCALE values")
    p.add_argument("--recipe", "--paper-recipe", dest="recipe", action="store_true",
                   help="the trainer's recipe table (configs/recipes.yaml): config file and overrides per "
                        "dataset and shot count; --alphas, --set and trailing overrides still win")
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


def _short(key):
    return key.rsplit(".", 1)[-1]


def set_tag(combo):
    return "_".join(f"{_short(k)}{v}" for k, v in combo)


def plan(sweep, base):
    """(run folder, train.py argv) for each grid point."""
    cfg0 = train.setup_cfg(base)
    trainer = cfg0.TRAINER.NAME
    dataset = dataset_stem(cfg0.DATASET.NAME) if cfg0.DATASET.NAME else ""
    is_taskres = trainer == "TaskRes"
    sets = parse_sets(sweep.sets)
    combos = list(itertools.product(*[[(k, v) for v in values] for k, values in sets])) or [()]
    runs = []
    for shots in sweep.shots:
        config, opts = base.config_file, []
        alphas = sweep.alphas
        if sweep.recipe:
            try:
                r = recipe(trainer, dataset, shots)
            except RecipeError as e:
                raise UserError(str(e)) from None
            config = r.config
            recipe_alpha = r.opts.pop("TRAINER.TaskRes.RESIDUAL_SCALE", None) if is_taskres else None
            opts = r.opts_list()
            if recipe_alpha is not None and not alphas:
                alphas = [float(recipe_alpha)]
        if not config:
            raise UserError("pass --config-file (or --recipe for a trainer with a recipe table)")
        if is_taskres and not alphas:
            alphas = [float(cfg0.TRAINER.TaskRes.RESIDUAL_SCALE)]
        cfg_name = os.path.splitext(os.path.basename(config))[0]
        for alpha in (alphas if is_taskres else [None]):
            for combo in combos:
                for seed in sweep.seeds:
                    out = run_dir(base, trainer, cfg_name, shots, seed, alpha, combo)
                    argv = list(base.argv) + ["--config-file", config, "--seed", str(seed), "--output-dir", out]
                    # yacs keeps the last value: the recipe's overrides, then the user's own,
                    # then the grid's values.
                    argv += opts + list(base.opts) + ["DATASET.NUM_SHOTS", str(shots)]
                    for key, value in combo:
                        argv += [key, value]
                    if alpha is not None:
                        argv += ["TRAINER.TaskRes.RESIDUAL_SCALE", str(alpha)]
                    runs.append((out, argv))
    return runs


def run_dir(base, trainer, cfg_name, shots, seed, alpha, combo=()):
    root = base.output_dir or "output"
    tag = set_tag(combo)
    fields = dict(cfg=cfg_name, shots=shots, seed=seed, alpha=alpha, trainer=trainer, set=tag)
    if "{" in root:
        try:
            return root.format(**fields)
        except KeyError as e:
            raise UserError(f"--output-dir template uses an unknown placeholder {e}; "
                            f"known: {', '.join('{' + k + '}' for k in fields)}") from None
    parts = [root, f"{cfg_name}_{shots}shots"]
    if alpha is not None:
        kind = "regular" if base.enhanced_base == "none" else "enhanced"
        parts.append(f"base_{kind}_alpha{alpha}")
    if tag:
        parts.append(tag)
    return os.path.join(*parts, f"seed{seed}")


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
    models = ModelCache()  # owned by this sweep; dropped when it ends
    failed, start = [], time.time()
    for i, (out, run_argv) in enumerate(runs, 1):
        if os.path.isfile(os.path.join(out, "results.json")):
            print(f"[{i}/{len(runs)}] {out}: finished, skipped")
            continue
        print(f"[{i}/{len(runs)}] {out}")
        try:
            train.run(train.parse_args(run_argv), models=models)
        except RunLockedError as e:
            print(f"[{i}/{len(runs)}] {out}: running elsewhere, skipped ({e})")
        except UserError as e:
            print(f"Error in {out}: {e}", file=sys.stderr)
            failed.append(out)
        except Exception:  # noqa: BLE001 - one broken run must not stop the grid
            traceback.print_exc()
            failed.append(out)
    print(f"Sweep done in {time.time() - start:.1f}s: {len(runs) - len(failed)}/{len(runs)} runs finished")
    for out in failed:
        print(f"  failed: {out}")
    return 1 if failed else 0


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
