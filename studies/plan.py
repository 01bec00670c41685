"""A study expanded into runs, and the runs grouped for the feature store.

Every run is a `train.py` command line and a run folder. The folders follow the shell scripts,
so a run finished by `train_regular.sh` is a finished run of a study and the other way round:

    few-shot     <output>/<dataset>/<Trainer>/<cfg>_<K>shots[/<variant>][/<tag>]/seed<S>
    zero-shot    <output>/<Trainer>/<cfg>/<dataset>                    (eval_only, shots 0, seeds null)
    base-to-new  <output>/base2new/train_base/<dataset>/shots_<K>/<Trainer>/<cfg>[/...]/seed<S>
                 and the new-class evaluation in .../test_new/... (the base-to-new scripts)
    dg           the source's few-shot folders, evaluated into
                 <output>/<target>/<Trainer>/<dg cfg or cfg_Kshots>[/<variant>][/<tag>]/seed<S>
    cross-dataset  the source's few-shot folders, evaluated into (scripts/xd_test.sh)
                 <output>/evaluation/<Trainer>/<cfg>_<K>shots[/<variant>][/<tag>]/<target>/seed<S>
    product      <output>/<need>/<dataset>/<tag>_<K>shots, installed to
                 <strong_base>/<DATASET.NAME>/<tag>_<K>shots/model.pth.tar (train_enhance.sh)

(engine/layout.py). `<variant>` is the method's run_variant (its axis values and the products it
takes); `<cfg>` carries `-<backbone>` when a study backbone replaces the config's (main.sh's
rule) and `<tag>` joins KEYvalue for each grid key that is not an axis (sweep.py's rule). A
method's `folder` template replaces the layout of its training runs ({output} {dataset}
{trainer} {method} {cfg} {shots} {seed} {variant} {tag} placeholders, and one per variant fact
and axis of the registered methods, e.g. {alpha}; empty path parts are dropped).

Groups: runs that share (dataset, backbone, image transforms) form one group, executed by one
worker in one process, so the group's images are encoded once (FEATURES.MODE cached) and its
CLIP is loaded once. A run that needs another run (an evaluation needs its trained model, a
run taking another method's product needs the producing run) comes after it in its group, or its group
waits for the other group (its stage is later).
"""
import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import train
from engine import layout
from engine.config import merge_opts
from engine.describe import method as registered_method
from engine.describe import methods as registered_methods
from engine.errors import UserError
from engine.layout import backbone_tag, base_tag, grid_tag  # noqa: F401  (the study's names for them)
from engine.recipes import REPO, RecipeError, recipe

from .spec import TRANSFER_PROTOCOLS, StudyError, _value, repo_path


@dataclass
class Run:
    out: str  # absolute run folder: the run's identity
    argv: List[str]  # train.py arguments
    method: str  # the study's method name (table rows)
    trainer: str
    dataset: str  # configs/datasets stem the run evaluates on
    shots: int
    seed: Optional[int]
    variant: str = ""  # grid keys and alpha, for table rows ("" = the method's only variant)
    role: str = ""  # "" few-shot | base | new (base-to-new) | source | <target stem> (dg, cross-dataset) | produce
    needs: List[str] = field(default_factory=list)  # run folders that must be finished first
    needs_done: List[str] = field(default_factory=list)  # their done_path files (set when grouping)
    install: Optional[List[str]] = None  # [produced file, destination]: copied when the run ends
    backbone: str = ""  # the effective MODEL.BACKBONE.NAME (set when grouping)
    group: str = ""

    @property
    def done_path(self):
        return self.install[1] if self.install else layout.results_path(self.out)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


@dataclass
class Group:
    id: str
    dataset: str
    backbone: str
    transform: str
    runs: List[Run] = field(default_factory=list)
    stage: int = 0
    needs: List[str] = field(default_factory=list)  # group ids
    estimate: Dict = field(default_factory=dict)

    @property
    def weight(self):
        """Sort key for `largest first`: the estimated encoder and training work."""
        return (self.estimate.get("work") or 0, len(self.runs))


# ---------------------------------------------------------------------------------------------
# names


def _template(text, fields, where):
    try:
        return layout.fill_template(text, fields, f"{where}: folder template {text!r}", collapse=True)
    except UserError as e:
        raise StudyError(str(e)) from None


def placeholder_defaults():
    """"" for every variant fact and axis of the registered methods (a template may name them)."""
    fields = {}
    for name in registered_methods():
        cls = registered_method(name)
        fields.update(dict.fromkeys(cls.variant_log, ""))
        fields.update(dict.fromkeys((a.name for a in cls.axes), ""))
    return fields


def dataset_config(stem):
    return os.path.join(REPO, "configs", "datasets", f"{stem}.yaml")


def dataset_class_name(stem):
    import yaml

    with open(dataset_config(stem), encoding="utf-8") as f:
        return ((yaml.safe_load(f) or {}).get("DATASET") or {}).get("NAME") or stem


# ---------------------------------------------------------------------------------------------
# configs of runs (cached: thousands of runs share a few dozen configs)


class ConfigCache:
    PER_RUN = {"--seed", "--output-dir", "--model-dir"}

    def __init__(self):
        self._cfgs = {}

    def get(self, argv):
        key = tuple(_strip(argv, self.PER_RUN))
        if key not in self._cfgs:
            try:
                self._cfgs[key] = train.setup_cfg(train.parse_args(list(key)))
            except SystemExit:
                raise StudyError(f"invalid train.py arguments: {' '.join(key)}") from None
        return self._cfgs[key]


def _strip(argv, names):
    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
        elif tok in names:
            skip = True
        else:
            out.append(tok)
    return out


# ---------------------------------------------------------------------------------------------
# expansion


def _recipe_config(name, where, dataset, shots):
    """(config path relative to the repo, {KEY: value}) of a registered method's recipe."""
    try:
        r = recipe(name, dataset, shots)
    except RecipeError as e:
        raise StudyError(str(e)) from None
    if not os.path.isfile(repo_path(r.config)):
        raise StudyError(f"{where}: the {name} recipe for {dataset} {shots}-shot names {r.config}, which does "
                         f"not exist")
    return r.config, {k: _value(v) for k, v in r.opts.items()}


def _method_config(method, dataset, shots):
    """(config path relative to the repo or absolute, {KEY: value}) from the method's recipe or
    its config."""
    if method.recipe:
        return _recipe_config(method.recipe, f"method {method.name!r}", dataset, shots)
    return method.config, {}


def _combos(*grids):
    keys, values = [], []
    for grid in grids:
        for k, v in grid.items():
            if k in keys:  # the method's grid replaces the study's for the same key
                values[keys.index(k)] = v
            else:
                keys.append(k)
                values.append(v)
    return [list(zip(keys, vals)) for vals in itertools.product(*values)] or [[]]


class Planner:
    def __init__(self, study):
        self.study = study
        self.cfgs = ConfigCache()
        self.runs = {}  # out -> Run, in plan order

    def add(self, run):
        old = self.runs.get(run.out)
        if old is not None:
            if old.argv == run.argv:
                return old
            raise StudyError(f"two runs of the study write the same folder {run.out}:\n  {old.method}: "
                             f"{' '.join(old.argv)}\n  {run.method}: {' '.join(run.argv)}\n"
                             "Give one of the methods a folder template (folder:) or another name/grid.")
        self.runs[run.out] = run
        return run

    def common_argv(self, method, dataset, config, seed):
        s = self.study
        argv = ["--root", s.root or "<DATA>"]
        if seed is not None:
            argv += ["--seed", str(seed)]
        return argv + ["--trainer", method.trainer, "--dataset-config-file", dataset_config(dataset),
                       "--config-file", repo_path(config)]

    def expand(self):
        s = self.study
        sources = s.datasets
        for method, dataset, backbone in itertools.product(s.methods, sources, s.backbones):
            for shots in (method.shots or s.shots):
                for seed in (method.seeds if method.seeds is not None else s.seeds):
                    for combo in _combos(s.grid, method.grid):
                        self.expand_one(method, dataset, backbone, shots, seed, combo)
        return list(self.runs.values())

    def expand_one(self, method, dataset, backbone, shots, seed, combo):
        s = self.study
        cls = registered_method(method.trainer)
        config, recipe_opts = _method_config(method, dataset, shots)
        opts = dict(recipe_opts)
        opts.update(s.opts)
        opts.update(method.opts)
        axis_keys = {a.key for a in cls.axes}
        tag = grid_tag([(k, v) for k, v in combo if k not in axis_keys])
        base_argv = self.common_argv(method, dataset, config, seed)
        cfg0 = self.cfgs.get(base_argv + _pairs(opts))
        cfg_name = layout.config_name(config)
        if backbone and backbone != cfg0.MODEL.BACKBONE.NAME:
            opts["MODEL.BACKBONE.NAME"] = backbone
            cfg_name = f"{cfg_name}-{backbone_tag(backbone)}"
        backbone_name = backbone or cfg0.MODEL.BACKBONE.NAME
        # An axis always has a value, passed last and named in the folder (the method's variant);
        # one from the grid names the table variant too (<axis><value>).
        grid = dict(combo)
        axis_values, grid_axes = [], []
        for axis in cls.axes:
            default = axis.value(cfg0)
            value = str(type(default)(grid.get(axis.key, opts.get(axis.key, default))))
            opts.pop(axis.key, None)
            axis_values.append((axis.key, value))
            if axis.key in grid:
                grid_axes.append(f"{axis.name}{value}")
        extra = [(k, v) for k, v in combo if k not in axis_keys] + axis_values
        flags, needs, need_opts = [], [], []
        for need in cls.needs:
            path = "none"
            if method.needs.get(need.name, "none") != "none":
                path, producer = self.product(method, need, dataset, backbone_name, shots)
                if producer is not None:
                    needs.append(producer.out)
            flags += [need.flag, path]
            need_opts += [need.key, path]
        cfg = cfg0.clone()
        cfg.defrost()
        merge_opts(cfg, [t for kv in axis_values for t in kv] + need_opts)
        run_variant = cls.run_variant(cfg)
        shot_opts = ["DATASET.NUM_SHOTS", str(shots)] if shots > 0 else []
        variant = "/".join(grid_axes + ([tag] if tag else []))
        fields = dict(output=s.output, dataset=dataset, trainer=method.trainer, method=method.name, cfg=cfg_name,
                      shots=shots, seed="" if seed is None else seed, tag=tag)
        fields.update(placeholder_defaults())
        fields.update({a.name: v for a, (_, v) in zip(cls.axes, axis_values)})
        fields.update(cls.variant_facts(run_variant) if run_variant else {})
        fields["variant"] = layout.join(run_variant, tag)
        if method.folder:
            out = os.path.abspath(_template(method.folder, fields, f"method {method.name!r}"))
        elif s.protocol == "base-to-new":
            out = layout.base_to_new_folder(s.output, dataset, shots, method.trainer, cfg_name, run_variant, tag, seed)
        elif method.eval_only:
            out = layout.evaluation_folder(s.output, method.trainer, cfg_name, shots, dataset, run_variant, tag, seed)
        else:
            out = layout.run_folder(os.path.join(s.output, dataset, method.trainer), cfg_name, shots, seed,
                                    run_variant, tag)
        tail = _pairs(opts) + shot_opts + _pairs(dict(extra))
        subsample = ["DATASET.SUBSAMPLE_CLASSES", "base"] if s.protocol == "base-to-new" else []
        argv = base_argv + ["--output-dir", out] + flags + (["--eval-only"] if method.eval_only else []) \
            + tail + subsample
        role = {"base-to-new": "base", "dg": "source", "cross-dataset": "source"}.get(s.protocol, "")
        run = self.add(Run(out=out, argv=argv, method=method.name, trainer=method.trainer, dataset=dataset,
                           shots=shots, seed=seed, variant=variant, role=role, needs=needs))
        if s.protocol == "base-to-new":
            self.new_classes(run, method)
        elif s.protocol in TRANSFER_PROTOCOLS:
            for target in s.targets:
                self.dg_eval(run, method, target, config, opts, extra, cfg_name, shots)

    def new_classes(self, run, method):
        """Base-to-new, step 2: the base-trained model evaluated on the new classes."""
        out = layout.new_classes_folder(run.out)
        argv = _strip(run.argv, {"--output-dir"})
        argv = [t for t in argv if t != "--eval-only"]
        argv = argv[:-2] + ["--output-dir", out, "--eval-only"] + (
            [] if method.eval_only else ["--model-dir", run.out]) + ["DATASET.SUBSAMPLE_CLASSES", "new"]
        self.add(Run(out=out, argv=argv, method=run.method, trainer=run.trainer, dataset=run.dataset,
                     shots=run.shots, seed=run.seed, variant=run.variant, role="new",
                     needs=[] if method.eval_only else [run.out]))

    def dg_eval(self, run, method, target, config, opts, extra, cfg_name, shots):
        """DG: the source-trained model evaluated on a target dataset (test_dg.sh, eval.sh)."""
        s = self.study
        source_root = os.path.join(s.output, run.dataset)
        eval_cfg = method.dg_config or config
        eval_name = os.path.splitext(os.path.basename(method.dg_config))[0] if method.dg_config else None
        rel = os.path.relpath(run.out, source_root)
        if s.protocol == "cross-dataset" and method.eval_only and os.path.basename(run.out) == run.dataset:
            out = os.path.join(os.path.dirname(run.out), target)  # the zero-shot layout, on the target
        elif rel.startswith(".."):
            out = os.path.join(run.out, f"dg_{target}")
        elif s.protocol == "cross-dataset":  # beside the few-shot runs on the target, never in their folders
            parts = rel.split(os.sep)
            out = os.path.join(s.output, "evaluation", *parts[:-1], target, parts[-1])
        else:
            parts = rel.split(os.sep)
            if eval_name and f"{cfg_name}_{shots}shots" in parts:
                parts[parts.index(f"{cfg_name}_{shots}shots")] = eval_name
            out = os.path.join(s.output, target, *parts)
        argv = self.common_argv(method, target, eval_cfg, run.seed) + ["--output-dir", out, "--eval-only"]
        if not method.eval_only:
            argv += ["--model-dir", run.out]
        argv += _pairs(opts) + _pairs(dict(extra))
        if s.protocol == "cross-dataset" and not method.eval_only:
            argv += ["TEST.CROSS_DATASET", "True"]  # per-class entries fall back to zero-shot on the target
        self.add(Run(out=out, argv=argv, method=run.method, trainer=run.trainer, dataset=target, shots=run.shots,
                     seed=run.seed, variant=run.variant, role=target,
                     needs=[] if method.eval_only else [run.out]))

    def product(self, method, need, dataset, backbone, shots):
        """(the path a need's flag takes, the run producing it or None)."""
        s = self.study
        tag = base_tag(backbone)
        setting = method.needs[need.name]
        if setting != "produce":
            fields = dict(dataset=dataset, dataset_name=dataset_class_name(dataset), tag=tag, shots=shots,
                          strong_base=s.strong_base)
            return os.path.abspath(_template(setting, fields, f"method {method.name!r}")), None
        producer_cls = registered_method(need.producer)
        target = layout.product_path(s.strong_base, dataset_class_name(dataset), tag, shots)
        out = layout.producer_folder(s.output, need.name, dataset, tag, shots)
        if method.enhance_config:
            config, producer_opts = method.enhance_config, {}
        else:
            config, producer_opts = _recipe_config(need.producer, f"method {method.name!r}", dataset, shots)
        argv = ["--root", s.root or "<DATA>", "--seed", "1", "--trainer", need.producer,
                "--dataset-config-file", dataset_config(dataset), "--config-file", repo_path(config),
                "--output-dir", out] + _pairs(producer_opts) + ["DATASET.NUM_SHOTS", str(shots)]
        cfg = self.cfgs.get(argv)
        if backbone != cfg.MODEL.BACKBONE.NAME:
            argv += ["MODEL.BACKBONE.NAME", backbone]
        argv += _pairs(s.opts)
        producer = self.add(Run(out=out, argv=argv, method=f"{method.name} ({need.name.replace('_', ' ')})",
                                trainer=need.producer, dataset=dataset, shots=shots, seed=1, role="produce",
                                install=[os.path.join(out, producer_cls.product_file), target]))
        return target, producer


def _pairs(opts):
    return [t for k, v in opts.items() for t in (k, str(v))]


# ---------------------------------------------------------------------------------------------
# grouping


def _group_key(cfg):
    from datasets.transforms import describe_transform

    from engine.recipes import dataset_stem

    transform = describe_transform(cfg, True) + " | " + describe_transform(cfg, False)
    return dataset_stem(cfg.DATASET.NAME), cfg.MODEL.BACKBONE.NAME, transform


def group_runs(runs, cfgs):
    """Groups in execution order (stage, then largest first), runs ordered so that a run comes
    after the runs it needs."""
    groups, by_out = {}, {}
    for run in runs:
        cfg = cfgs.get(run.argv)
        dataset, backbone, transform = _group_key(cfg)
        run.backbone = backbone
        digest = hashlib.sha256(f"{dataset}|{backbone}|{transform}".encode()).hexdigest()[:6]
        gid = f"{dataset}-{backbone_tag(backbone) or 'default'}-{digest}"
        g = groups.setdefault(gid, Group(id=gid, dataset=dataset, backbone=backbone, transform=transform))
        run.group = gid
        g.runs.append(run)
        by_out[run.out] = run
    for run in runs:
        run.needs_done = [by_out[n].done_path for n in run.needs if n in by_out]
        for need in run.needs:
            if need not in by_out:
                raise StudyError(f"{run.out} needs {need}, which is not a run of the study")
            dep = by_out[need].group
            if dep != run.group and dep not in groups[run.group].needs:
                groups[run.group].needs.append(dep)
    _stages(groups)
    for g in groups.values():
        g.runs = _topological(g.runs, by_out)
    return groups


def _stages(groups):
    state = {}

    def visit(gid, path):
        if state.get(gid) == "done":
            return groups[gid].stage
        if gid in path:
            raise StudyError(f"groups depend on each other in a cycle: {' -> '.join(path + [gid])}")
        stage = 0
        for dep in groups[gid].needs:
            stage = max(stage, visit(dep, path + [gid]) + 1)
        groups[gid].stage = stage
        state[gid] = "done"
        return stage

    for gid in groups:
        visit(gid, [])


def _topological(runs, by_out):
    depth = {}

    def d(run):
        if run.out not in depth:
            depth[run.out] = 1 + max((d(by_out[n]) for n in run.needs), default=-1)
        return depth[run.out]

    order = {r.out: i for i, r in enumerate(runs)}
    return sorted(runs, key=lambda r: (d(r), order[r.out]))


def ordered_groups(groups):
    return sorted(groups.values(), key=lambda g: (g.stage, tuple(-w for w in g.weight), g.id))


def plan_study(study, estimate=False):
    """(runs in plan order, groups in execution order). Group sizes come from the datasets on
    disk with `estimate`, else from the published split sizes (estimate.NOMINAL)."""
    planner = Planner(study)
    runs = planner.expand()
    groups = group_runs(runs, planner.cfgs)
    from .estimate import estimate_groups
    estimate_groups(groups, planner.cfgs, study, from_disk=estimate)
    return runs, ordered_groups(groups)


def save_group(group, path):
    from engine.io import save_json

    save_json({"id": group.id, "runs": [r.to_dict() for r in group.runs]}, path)


def load_group(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data["id"], [Run.from_dict(r) for r in data["runs"]]
