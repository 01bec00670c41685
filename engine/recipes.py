"""A method's recipe: (dataset, shots) -> the config file and overrides its paper uses.

A recipe lives in the method's own config folder, `configs/trainers/<Name>/` (a method without
one, such as a combination, names another with `config_folder`); no table is shared between
methods. The folder's runnable configs are its yaml files except `recipe.yaml`
and names starting with `_` (bases that others include with `_BASE_`). In order:

1. `recipe.yaml` when the folder has one: `config` (a file name in the folder, with {var}
   placeholders; {dataset} is the configs/datasets stem and {shots} the shot count unless
   `vars` sets them), `vars` (placeholder defaults), `opts` (KEY: value overrides) and
   `rules`, applied in order; a rule whose `when` matches (`dataset`: stems, `shots`: a list)
   updates vars and opts, so a later rule wins;
2. else `<dataset stem>.yaml` (per-dataset configs need no rule);
3. else `default.yaml`, the config of a folder of per-dataset configs for any other dataset
   (your own data, DATASETS.md#your-own-data);
4. else the folder's only config.

    python -m engine.describe TaskRes oxford_flowers 16 --get cfg   # the command-line view
"""
import os
from dataclasses import dataclass, field

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs", "trainers")
RECIPE_FILE = "recipe.yaml"
DEFAULT_FILE = "default.yaml"


class RecipeError(ValueError):
    pass


@dataclass
class Recipe:
    config: str  # relative to the repository root when inside it, else absolute
    opts: dict = field(default_factory=dict)

    @property
    def cfg(self):
        return os.path.splitext(os.path.basename(self.config))[0]

    def opts_list(self):
        return [str(t) for k, v in self.opts.items() for t in (k, v)]


def dataset_stem(name):
    """configs/datasets stem for a stem (found without importing the datasets) or a
    DATASET.NAME (the dataset class's `stem`)."""
    if os.path.isfile(os.path.join(REPO, "configs", "datasets", f"{name}.yaml")):
        return name
    from datasets.catalog import stem_of

    return stem_of(name)


def runnable_configs(folder):
    """The yaml files of a method's config folder that run on their own, sorted."""
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder)
                  if f.endswith(".yaml") and f != RECIPE_FILE and not f.startswith("_"))


def _shown(path):
    rel = os.path.relpath(path, REPO)
    return path if rel.startswith("..") else rel


def recipe(method, dataset, shots, folder=None):
    """The Recipe of `method` (a registered name, or any name with `folder` given) for a dataset
    (configs/datasets stem or DATASET.NAME) and shot count."""
    folder = folder or method_folder(method)
    stem = dataset_stem(dataset)
    path = os.path.join(folder, RECIPE_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            entry = yaml.safe_load(f) or {}
        return _from_rules(entry, folder, stem, shots, path)
    configs = runnable_configs(folder)
    for name in (f"{stem}.yaml", DEFAULT_FILE):
        if name in configs:
            return Recipe(_shown(os.path.join(folder, name)))
    if len(configs) == 1:
        return Recipe(_shown(os.path.join(folder, configs[0])))
    where = _shown(folder)
    if not configs:
        raise RecipeError(f"{method} has no recipe: {where}/ holds no config file. Pass --config-file, or add "
                          f"one yaml (or a {RECIPE_FILE}) there.")
    raise RecipeError(f"{method} has no recipe for dataset {stem!r}: {where}/ holds {len(configs)} configs "
                      f"({', '.join(configs)}), none named {stem}.yaml or {DEFAULT_FILE}, and no {RECIPE_FILE} to "
                      f"choose among them. Pass --config-file, or add {stem}.yaml, {DEFAULT_FILE} or a {RECIPE_FILE}.")


def _from_rules(entry, folder, stem, shots, path):
    values = {"dataset": stem, "shots": int(shots), **(entry.get("vars") or {})}
    opts = dict(entry.get("opts") or {})
    for rule in entry.get("rules") or []:
        when = rule.get("when") or {}
        if "dataset" in when and stem not in when["dataset"]:
            continue
        if "shots" in when and int(shots) not in [int(s) for s in when["shots"]]:
            continue
        values.update(rule.get("vars") or {})
        opts.update(rule.get("opts") or {})
    if not entry.get("config"):
        raise RecipeError(f"{_shown(path)} has no `config:` (the config file name, with {{var}} placeholders)")
    try:
        name = entry["config"].format(**values)
    except KeyError as e:
        raise RecipeError(f"{_shown(path)} has no recipe for dataset {stem!r} at {shots} shots: its config "
                          f"{entry['config']!r} needs a value for {e} that no rule gives for it. Pass "
                          "--config-file instead, or add a rule.") from None
    config = os.path.join(folder, name)
    if not os.path.isfile(config):
        raise RecipeError(f"{_shown(path)}: the recipe for {stem} {shots}-shot names {_shown(config)}, which "
                          "does not exist")
    return Recipe(_shown(config), opts)


SELECTION_FILE = "_selection.yaml"


def selection_opts(method, protocol, folder=None):
    """[KEY, value, ...]: the overrides that make `method` select by `protocol` (SELECTION.PROTOCOL),
    from its folder's _selection.yaml ({protocol: {KEY: value}}). A method without that file
    chooses nothing on data, so every protocol is its recipe as it is; a file without the
    protocol is a RecipeError naming the ones it has."""
    if not protocol:
        return []
    path = os.path.join(folder or method_folder(method), SELECTION_FILE)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        table = yaml.safe_load(f) or {}
    if protocol not in table:
        raise RecipeError(f"{method} has no {protocol!r} selection protocol: {_shown(path)} lists "
                          f"{', '.join(sorted(table)) or 'none'}")
    return [str(t) for k, v in (table[protocol] or {}).items() for t in (k, v)]


def method_folder(method):
    """configs/trainers/<method>/, or, for a method without a folder of its own, the folder its
    class's `config_folder` names. A folder of its own is found without importing any method
    (shell scripts look recipes up once per run)."""
    own = os.path.join(CONFIGS, method)
    if os.path.isdir(own):
        return own
    from .registry import TRAINER_REGISTRY

    cls = TRAINER_REGISTRY.get(method) if method in TRAINER_REGISTRY else None
    name = getattr(cls, "config_folder", "") or method
    return name if os.path.isabs(name) else os.path.join(CONFIGS, name)
