"""What a method says about itself, for every tool (sweeps, studies, tables, shell scripts).

A method's facts live on its trainer class (the attributes of `MethodFacts`, which
`engine.trainer.Trainer` inherits) and in its config folder (the recipe, engine/recipes.py);
no tool holds a method's name. From Python: `describe(name, dataset, shots)`; from the shell:

    python -m engine.describe TaskRes                           # the method's facts, KEY=value lines
    python -m engine.describe TaskRes oxford_flowers 16         # ... and its recipe there: config, cfg,
                                                                # then the overrides (the only keys with a dot)
    python -m engine.describe TaskRes oxford_flowers 16 --get cfg   # one field (a fact or the recipe's)
    python -m engine.describe --list                            # every registered method
"""
import argparse
import sys
from typing import NamedTuple

from .errors import UserError
from .recipes import RecipeError, recipe
from .registry import TRAINER_REGISTRY


class Axis(NamedTuple):
    """A sweep axis that names run folders (TaskRes: alpha -> base_regular_alpha0.5)."""
    name: str  # in folder names and table variants
    key: str  # the config key it sets
    flag: str = ""  # the sweep.py flag taking its values (e.g. --alphas)
    help: str = ""

    def value(self, cfg):
        """Its value in a config."""
        node = cfg
        for part in self.key.split("."):
            node = getattr(node, part)
        return node


class Need(NamedTuple):
    """Another method's product that a run may take (TaskRes: the enhanced base)."""
    name: str  # the product (a study method's key: `enhanced_base: produce | PATH`)
    key: str  # the config key holding its path ("none": not used)
    flag: str  # the train.py flag setting that key (--enhanced-base; "": set the key itself)
    producer: str  # the registered method whose runs make it


class MethodFacts:
    """Class attributes a method may set (defaults: a trained method with one result per run)."""
    label = ""  # its name in tables ("" = the registered name)
    evaluation_only = False  # nothing to train: scripts and studies only evaluate it (--eval-only)
    axes = ()  # Axis: sweep axes that name its run folders
    needs = ()  # Need: products of other methods its runs may take
    produces = ""  # the product its runs make for another method ("" = a result; a producer is no table row)
    product_file = ""  # the file in a producer's run folder that holds the product
    config_folder = ""  # the folder under configs/trainers/ of a method without one of its own
    # {fact: regex with one group}: log lines naming the facts of run_variant, for runs that
    # wrote no results.json (the reference code's)
    variant_log = {}

    @classmethod
    def run_variant(cls, cfg):
        """The run-folder part between `<cfg>_<K>shots` and `seed<S>` for this config ("" = none)."""
        return ""

    @classmethod
    def variant_facts(cls, part):
        """{fact: text} read back from a run-folder part that run_variant wrote ({} = not one)."""
        return {}

    @classmethod
    def table_label(cls, extras):
        """Its row label in tables, from a run's results.json extras."""
        return cls.label or cls.__name__


def method(name):
    """The registered trainer class (a clear error for an unknown name)."""
    return TRAINER_REGISTRY.get(name)


def methods():
    """Every registered method name, sorted."""
    return TRAINER_REGISTRY.names()


def declared(attr, flag_of):
    """{flag: item} over the Axis or Need items (`attr`: "axes" or "needs") every registered
    method declares, keyed by `flag_of(item)` (items without a flag left out; the first method,
    in name order, declaring a flag wins): the command-line flags tools build from them."""
    found = {}
    for _, cls in TRAINER_REGISTRY.items():
        for item in getattr(cls, attr):
            flag = flag_of(item)
            if flag:
                found.setdefault(flag, item)
    return found


def describe(name, dataset=None, shots=None):
    """{field: value}: the method's facts, plus its recipe (config, cfg, overrides) when a
    dataset and shot count are given."""
    cls = method(name)
    facts = {
        "name": name,
        "label": cls.label or name,
        "evaluation_only": bool(cls.evaluation_only),
        "closed_form": bool(getattr(cls, "closed_form", False)),
        "consumes": getattr(cls, "consumes", "features"),
        "produces": cls.produces,
        "axes": " ".join(f"{a.name}={a.key}" for a in cls.axes),
        "needs": " ".join(f"{n.name}={n.flag}" for n in cls.needs),
        "module": cls.__module__,
    }
    if dataset is not None and shots is not None:
        facts.update(_recipe_fields(recipe(name, dataset, shots)))
    return facts


def _recipe_fields(r):
    return {"config": r.config, "cfg": r.cfg, **r.opts}


def _shell(key, value):
    """A fact as shell scripts test it (true/false); a config override (a key with a dot) as
    train.py's KEY VALUE reads it back (False, not false: yacs literal-evaluates values)."""
    return str(value).lower() if isinstance(value, bool) and "." not in key else str(value)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", nargs="?")
    p.add_argument("dataset", nargs="?", help="configs/datasets stem or DATASET.NAME")
    p.add_argument("shots", nargs="?", type=int)
    p.add_argument("--get", help="print one field (config, cfg, label, evaluation_only, an override key, ...)")
    p.add_argument("--list", action="store_true", help="print every registered method, one per line")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(methods()))
        return 0
    if not args.method or (args.dataset is None) != (args.shots is None):
        p.error("give METHOD, or METHOD DATASET SHOTS, or --list")
    try:
        if args.get and args.dataset is not None and (args.get in ("config", "cfg") or "." in args.get):
            facts = _recipe_fields(recipe(args.method, args.dataset, args.shots))  # no method imported
        else:
            facts = describe(args.method, args.dataset, args.shots)
    except (UserError, RecipeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.get:
        if args.get not in facts:
            print(f"error: no field {args.get!r}; fields: {', '.join(facts)}", file=sys.stderr)
            return 2
        print(_shell(args.get, facts[args.get]))
        return 0
    for k, v in facts.items():
        print(f"{k}={_shell(k, v)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
