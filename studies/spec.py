"""The study file: what to run, as data (configs/studies/*.yaml; docs/studies.md).

    name: taskres_paper                # default: the file name
    protocol: few-shot                 # few-shot | base-to-new | dg | cross-dataset
    root: $DATA                        # dataset root ($VARS expanded; --root wins)
    output: output                     # output root (--output wins)
    datasets: [caltech101, dtd]        # configs/datasets stems
    shots: [1, 2, 4, 8, 16]
    seeds: [1, 2, 3]
    backbones: [RN50, ViT-B/16]        # optional; default: each config's own backbone
    opts: {FEATURES.MODE: cached}      # overrides for every run
    grid: {OPTIM.LR: [1e-3, 2e-3]}     # extra keys: every combination runs
    methods:
      - METHOD                         # a registered method, run with its recipe
      - {name: METHOD-CSC, trainer: METHOD, recipe: METHOD, opts: {TRAINER.X.CSC: True}}
      - {name: ZS, trainer: ZEROSHOT_METHOD, config: configs/trainers/ZEROSHOT_METHOD/rn50.yaml,
         eval_only: true, shots: [0], seeds: null}
      - {name: M*, trainer: METHOD, enhanced_base: produce}   # a need (engine.describe): produce | PATH
    targets: [imagenetv2, imagenet_sketch]   # dg, cross-dataset: evaluated with the source-trained models
    slurm: {timeout_min: 240, gpus_per_node: 1, groups: {imagenet: {timeout_min: 1440}}}

A method's keys include one per product its trainer needs (`python -m engine.describe METHOD`:
needs), set to none, a path template ({dataset} {dataset_name} {tag} {shots} {strong_base}), or
`produce`: the product is made by a run of its producer method, with the producer's recipe or
the config file `enhance_config` names. An evaluation-only method (engine.describe) is run with
--eval-only unless `eval_only` says otherwise.

Relative `root`, `output` and `strong_base` are relative to the folder `study.py` runs in (as
for the shell scripts); config files are relative to the repository root.
"""
import difflib
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import yaml

from engine.describe import method as registered_method
from engine.describe import methods as registered_methods
from engine.errors import UserError
from engine.recipes import REPO

PROTOCOLS = ("few-shot", "base-to-new", "dg", "cross-dataset")
TRANSFER_PROTOCOLS = ("dg", "cross-dataset")  # a source-trained model evaluated on target datasets
# The cross-dataset targets of the conditional-prompt paper: the 10 datasets besides the ImageNet source
CROSS_DATASET_TARGETS = ["caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
                         "sun397", "dtd", "eurosat", "ucf101"]
STUDY_KEYS = ("name", "protocol", "root", "output", "strong_base", "datasets", "shots", "seeds", "backbones",
              "opts", "grid", "methods", "targets", "slurm", "description")
METHOD_KEYS = ("name", "trainer", "recipe", "config", "opts", "grid", "shots", "seeds", "eval_only",
               "enhance_config", "folder", "dg_config")  # and each registered need's name
SLURM_OWN_KEYS = ("groups", "array_parallelism", "max_requeues", "cluster")
DEFAULT_SHOTS = {"few-shot": [1, 2, 4, 8, 16], "base-to-new": [16], "dg": [16], "cross-dataset": [16]}


class StudyError(UserError):
    pass


@dataclass
class Method:
    name: str
    trainer: str
    recipe: str = ""  # the registered method whose recipe (its config folder) is used, or "" with a config
    config: str = ""
    opts: Dict[str, str] = field(default_factory=dict)
    grid: Dict[str, List[str]] = field(default_factory=dict)
    shots: Optional[List[int]] = None  # None: the study's
    seeds: Optional[List[Optional[int]]] = None
    eval_only: bool = False
    needs: Dict[str, str] = field(default_factory=dict)  # need name -> none | produce | a path template
    enhance_config: str = ""  # the producers' config file ("" = the producer's recipe)
    folder: str = ""  # run folder template; "" = the default layout
    dg_config: str = ""


@dataclass
class Study:
    path: str
    name: str
    protocol: str
    root: str
    output: str
    strong_base: str
    datasets: List[str]
    shots: List[int]
    seeds: List[Optional[int]]
    backbones: List[Optional[str]]
    opts: Dict[str, str]
    grid: Dict[str, List[str]]
    methods: List[Method]
    targets: List[str] = field(default_factory=list)
    slurm: Dict = field(default_factory=dict)

    @property
    def state_dir(self):
        """Where the study keeps its own files (group lists, worker logs, submitit folders)."""
        return os.path.join(self.output, ".study", self.name)


def _unknown(keys, allowed, where):
    bad = [k for k in keys if k not in allowed]
    if bad:
        hints = []
        for k in bad:
            close = difflib.get_close_matches(str(k), allowed, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise StudyError(f"{where}: unknown key {', '.join(hints)}; known keys: {', '.join(allowed)}")


def _list(value, what, where, cast=None, allow_none=False):
    if value is None and allow_none:
        return [None]
    if not isinstance(value, (list, tuple)):
        value = [value]
    if not value:
        raise StudyError(f"{where}: {what} is empty")
    if cast is None:
        return list(value)
    try:
        return [cast(v) for v in value]
    except (TypeError, ValueError):
        raise StudyError(f"{where}: {what} must be a list of {cast.__name__}s, got {value!r}") from None


def _shots(value, where):
    shots = _list(value, "shots", where, int)
    if any(k < 0 for k in shots):
        raise StudyError(f"{where}: shots must be 0 (zero-shot) or more, got {shots}")
    return shots


def _value(v):
    """A yaml value as the string train.py's KEY VALUE overrides take (yacs literal_eval)."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (list, tuple)):
        return repr(list(v))
    return str(v)


def _opts(value, where):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StudyError(f"{where}: opts must be a mapping KEY: value, got {value!r}")
    return {str(k): _value(v) for k, v in value.items()}


def _grid(value, where):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StudyError(f"{where}: grid must be a mapping KEY: [values], got {value!r}")
    return {str(k): [_value(x) for x in _list(v, f"grid {k}", where)] for k, v in value.items()}


def expand_path(value, what, required=False):
    """$VARS and ~ expanded; an unset variable is an error naming it."""
    if value in (None, ""):
        if required:
            raise StudyError(f"no {what} given")
        return ""
    text = os.path.expanduser(os.path.expandvars(str(value)))
    if "$" in text:
        raise StudyError(f"{what} {value!r} uses an environment variable that is not set; set it or pass "
                         f"--{what} on the command line")
    return os.path.abspath(text)


def repo_path(path):
    """A config file: as given if it exists, else relative to the repository root."""
    if os.path.isabs(path) or os.path.isfile(path):
        return os.path.abspath(path)
    return os.path.join(REPO, path)


def need_names():
    """{need name: [methods taking it]} over the registered methods."""
    names = {}
    for name in registered_methods():
        for need in registered_method(name).needs:
            names.setdefault(need.name, []).append(name)
    return names


def _method(entry, i, tables):
    where = f"methods[{i}]"
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry and "trainer" not in entry:
        raise StudyError(f"{where}: a method is a registered method's name or a mapping with name/trainer, "
                         f"got {entry!r}")
    takers = need_names()
    _unknown(entry, METHOD_KEYS + tuple(takers), where)
    name = str(entry.get("name") or entry["trainer"])
    where = f"method {name!r}"
    trainer = str(entry.get("trainer") or name)
    if trainer not in registered_methods():
        raise StudyError(f"{where}: unknown trainer {trainer!r}; registered trainers: {', '.join(registered_methods())}")
    config = str(entry.get("config") or "")
    recipe = str(entry.get("recipe") or "")
    if config and recipe:
        raise StudyError(f"{where}: give either recipe (a registered method's recipe) or config, not both")
    if not config and not recipe:
        if trainer in tables or name in tables:
            recipe = trainer if trainer in tables else name
        else:
            raise StudyError(f"{where}: no recipe for {trainer!r}: it is not a registered method "
                             f"(methods: {', '.join(sorted(tables))}); give recipe: METHOD or config: FILE")
    if recipe and recipe not in tables:
        raise StudyError(f"{where}: no recipe {recipe!r}: not a registered method; "
                         f"methods: {', '.join(sorted(tables))}")
    if config and not os.path.isfile(repo_path(config)):
        raise StudyError(f"{where}: config file {config} not found")
    needs = {}
    for need in takers:
        value = str(entry.get(need, "none") or "none")
        if value != "none" and trainer not in takers[need]:
            raise StudyError(f"{where}: {need} is a setting of {', '.join(takers[need])} (trainer is {trainer})")
        if value != "none":
            needs[need] = value
    eval_only = entry.get("eval_only")
    if eval_only is None:
        eval_only = trainer in tables and registered_method(trainer).evaluation_only
    return Method(
        name=name, trainer=trainer, recipe=recipe, config=config,
        opts=_opts(entry.get("opts"), where), grid=_grid(entry.get("grid"), where),
        shots=_shots(entry["shots"], where) if "shots" in entry else None,
        seeds=(_list(entry["seeds"], "seeds", where, int, allow_none=True) if "seeds" in entry else None),
        eval_only=bool(eval_only), needs=needs, enhance_config=str(entry.get("enhance_config") or ""),
        folder=str(entry.get("folder") or ""), dg_config=str(entry.get("dg_config") or ""))


def load_study(path, root=None, output=None):
    """The Study of a yaml file; `root` / `output` override the file's."""
    if not os.path.isfile(path):
        raise StudyError(f"study file {path} not found (examples: configs/studies/)")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise StudyError(f"study file {path} is not valid yaml: {e}") from None
    if not isinstance(data, dict):
        raise StudyError(f"study file {path} must be a mapping of keys ({', '.join(STUDY_KEYS)})")
    where = f"study file {path}"
    _unknown(data, STUDY_KEYS, where)
    protocol = str(data.get("protocol", "few-shot"))
    if protocol not in PROTOCOLS:
        raise StudyError(f"{where}: protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if "datasets" not in data:
        raise StudyError(f"{where}: no datasets (configs/datasets stems, e.g. [caltech101, dtd])")
    datasets = _list(data["datasets"], "datasets", where, str)
    for d in datasets + [str(t) for t in (data.get("targets") or [])]:
        if not os.path.isfile(os.path.join(REPO, "configs", "datasets", f"{d}.yaml")):
            known = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(REPO, "configs", "datasets")))
            raise StudyError(f"{where}: unknown dataset {d!r}; configs/datasets has {', '.join(known)}")
    targets = _list(data["targets"], "targets", where, str) if data.get("targets") else []
    if protocol == "cross-dataset" and not targets:
        targets = [t for t in CROSS_DATASET_TARGETS if t not in datasets]
    if protocol == "dg" and not targets:
        raise StudyError(f"{where}: protocol dg needs targets (e.g. [imagenetv2, imagenet_sketch, imagenet_a, "
                         f"imagenet_r])")
    if targets and protocol not in TRANSFER_PROTOCOLS:
        raise StudyError(f"{where}: targets are for protocols {' and '.join(TRANSFER_PROTOCOLS)}")
    if not data.get("methods"):
        raise StudyError(f"{where}: no methods")
    tables = set(registered_methods())
    methods = [_method(m, i, tables) for i, m in enumerate(_list(data["methods"], "methods", where))]
    names = [m.name for m in methods]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise StudyError(f"{where}: method names must be unique (they label the tables): {', '.join(dup)}")
    slurm = data.get("slurm") or {}
    if not isinstance(slurm, dict):
        raise StudyError(f"{where}: slurm must be a mapping of submitit parameters")
    name = str(data.get("name") or os.path.splitext(os.path.basename(path))[0])
    if not name or os.sep in name or name.startswith("."):
        raise StudyError(f"{where}: name {name!r} must be a plain folder name")
    root_value = root if root else data.get("root", "$DATA" if os.environ.get("DATA") else "")
    try:
        root_path = expand_path(root_value, "root")
    except StudyError:
        root_path = ""  # checked when runs start; `plan` and `status` work without data
    return Study(
        path=os.path.abspath(path), name=name, protocol=protocol, root=root_path,
        output=expand_path(output or data.get("output") or "output", "output", required=True),
        strong_base=expand_path(data.get("strong_base") or "strong_base", "strong_base"),
        datasets=datasets, shots=_shots(data.get("shots", DEFAULT_SHOTS[protocol]), where),
        seeds=_list(data.get("seeds", [1, 2, 3]), "seeds", where, int, allow_none=True),
        backbones=_list(data["backbones"], "backbones", where, str) if data.get("backbones") else [None],
        opts=_opts(data.get("opts"), where), grid=_grid(data.get("grid"), where), methods=methods,
        targets=targets, slurm=dict(slurm))


def require_root(study):
    if not study.root:
        raise StudyError("no dataset root: set root: in the study file, export DATA=/path/to/datasets, "
                         "or pass --root")
    if not os.path.isdir(study.root):
        raise StudyError(f"dataset root {study.root} is not a folder")
    return study.root
