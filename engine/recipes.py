"""Per-method recipe tables (configs/recipes.yaml): (dataset, shots) -> config file + overrides.

    python -m engine.recipes TaskRes oxford_flowers 16            # all fields, KEY=value lines
    python -m engine.recipes TaskRes oxford_flowers 16 --get cfg  # one field (for shell scripts)

Datasets are named by their configs/datasets stem (oxford_flowers) or DATASET.NAME
(OxfordFlowers). Fields: `config` (the yaml path), `cfg` (its name without folder and .yaml)
and every override key (TRAINER.TaskRes.RESIDUAL_SCALE).
"""
import argparse
import os
import sys
from dataclasses import dataclass, field

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES_FILE = os.path.join(REPO, "configs", "recipes.yaml")


class RecipeError(ValueError):
    pass


@dataclass
class Recipe:
    config: str  # relative to the repository root
    opts: dict = field(default_factory=dict)

    @property
    def cfg(self):
        return os.path.splitext(os.path.basename(self.config))[0]

    def opts_list(self):
        return [str(t) for k, v in self.opts.items() for t in (k, v)]


def load_table(path=RECIPES_FILE):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def dataset_stem(name):
    """configs/datasets stem for a stem or a DATASET.NAME."""
    folder = os.path.join(REPO, "configs", "datasets")
    if os.path.isfile(os.path.join(folder, f"{name}.yaml")):
        return name
    for fname in sorted(os.listdir(folder)):
        with open(os.path.join(folder, fname), encoding="utf-8") as f:
            if ((yaml.safe_load(f) or {}).get("DATASET") or {}).get("NAME") == name:
                return os.path.splitext(fname)[0]
    return name


def methods(table=None):
    return sorted((table or load_table()).keys())


def recipe(method, dataset, shots, table=None):
    table = table or load_table()
    if method not in table:
        raise RecipeError(f"No recipe table for {method!r} in {RECIPES_FILE}; tables: {', '.join(methods(table))}")
    entry = table[method]
    stem = dataset_stem(dataset)
    values, opts = dict(entry.get("vars") or {}), dict(entry.get("opts") or {})
    for rule in entry.get("rules") or []:
        when = rule.get("when") or {}
        if "dataset" in when and stem not in when["dataset"]:
            continue
        if "shots" in when and int(shots) not in [int(s) for s in when["shots"]]:
            continue
        values.update(rule.get("vars") or {})
        opts.update(rule.get("opts") or {})
    try:
        config = entry["config"].format(**values)
    except KeyError as e:
        raise RecipeError(f"{method} has no recipe for dataset {stem!r} at {shots} shots: its config "
                          f"{entry['config']!r} needs a value for {e} that no rule of {RECIPES_FILE} gives "
                          f"for it. Pass --config-file instead, or add a rule.") from None
    return Recipe(config, opts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method")
    p.add_argument("dataset")
    p.add_argument("shots", type=int)
    p.add_argument("--get", help="print one field: config, cfg or an override key")
    args = p.parse_args(argv)
    try:
        r = recipe(args.method, args.dataset, args.shots)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fields = {"config": r.config, "cfg": r.cfg, **{k: v for k, v in r.opts.items()}}
    if args.get:
        if args.get not in fields:
            print(f"error: no field {args.get!r}; fields: {', '.join(fields)}", file=sys.stderr)
            return 2
        print(fields[args.get])
    else:
        for k, v in fields.items():
            print(f"{k}={v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
