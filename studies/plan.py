"""A study expanded into runs, and the runs grouped for the feature store.

Every run is a `train.py` command line and a run folder. The folders follow the shell scripts,
so a run finished by `train_regular.sh` is a finished run of a study and the other way round:

    few-shot     <output>/<dataset>/<Trainer>/<cfg>_<K>shots[/base_<regular|enhanced>_alpha<A>][/<tag>]/seed<S>
    zero-shot    <output>/<Trainer>/<cfg>/<dataset>                    (eval_only, shots 0, seeds null)
    base-to-new  <output>/base2new/train_base/<dataset>/shots_<K>/<Trainer>/<cfg>[/...]/seed<S>
                 and the new-class evaluation in .../test_new/... (CoCoOp's scripts)
    dg           the source's few-shot folders, evaluated into
                 <output>/<target>/<Trainer>/<dg cfg or cfg_Kshots>[/base_..._alpha<A>][/<tag>]/seed<S>
    enhanced base <output>/enhanced_base/<dataset>/<tag>_<K>shots, installed to
                 <strong_base>/<DATASET.NAME>/<tag>_<K>shots/model.pth.tar (train_enhance.sh)

`<cfg>` carries `-<backbone>` when a study backbone replaces the config's (main.sh's rule) and
`<tag>` joins KEYvalue for each grid key (sweep.py's rule). A method's `folder` template replaces
the layout of its training runs ({output} {dataset} {trainer} {method} {cfg} {shots} {seed}
{variant} {tag} {base} {alpha} placeholders; empty path parts are dropped).

Groups: runs that share (dataset, backbone, image transforms) form one group, executed by one
worker in one process, so the group's images are encoded once (FEATURES.MODE cached) and its
CLIP is loaded once. A run that needs another run (an evaluation needs its trained model, a
TaskRes run on an enhanced base needs the base) comes after it in its group, or its group
waits for the other group (its stage is later).
"""
import hashlib
import itertools
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import train
from engine.recipes import REPO, RecipeError, recipe

from .spec import StudyError, _value, repo_path

RESULTS = "results.json"
TASKRES_ALPHA = "TRAINER.TaskRes.RESIDUAL_SCALE"
STRONG_BASE_FILE = "strong_base.pth.tar"


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
    role: str = ""  # "" few-shot | base | new (base-to-new) | source | <target stem> (dg) | produce
    needs: List[str] = field(default_factory=list)  # run folders that must be finished first
    needs_done: List[str] = field(default_factory=list)  # their done_path files (set when grouping)
    install: Optional[List[str]] = None  # [produced file, destination]: copied when the run ends
    backbone: str = ""  # the effective MODEL.BACKBONE.NAME (set when grouping)
    group: str = ""

    @property
    def done_path(self):
        return self.install[1] if self.install else os.path.join(self.out, RESULTS)

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


def backbone_tag(name):
    """main.sh's folder tag for a backbone override (ViT-B/16 -> ViT-B-16; a file -> its stem)."""
    if os.path.isfile(name) or ("/" in name and "." in name):
        name = os.path.splitext(os.path.basename(name))[0]
    return re.sub(r"[^A-Za-z0-9._:+-]", "-", name).strip("-")


def base_tag(name):
    """enhance_base.sh's strong_base tag: lowercase without '/' and '-' (RN50 -> rn50); a
    weights file is named by its stem."""
    if os.path.isfile(name):
        name = os.path.splitext(os.path.basename(name))[0]
    return name.lower().replace("/", "").replace("-", "")


def _short(key):
    return key.rsplit(".", 1)[-1]


def grid_tag(combo):
    return "_".join(f"{_short(k)}{v}" for k, v in combo)


def _join(*parts):
    parts = [str(p) for p in parts if p not in ("", None)]
    return os.path.join(*parts) if parts else ""


def _template(text, fields, where):
    try:
        path = text.format(**fields)
    except (KeyError, IndexError) as e:
        raise StudyError(f"{where}: folder template {text!r} uses an unknown placeholder {e}; known: "
                         f"{', '.join('{' + k + '}' for k in fields)}") from None
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    return ("/" if path.startswith("/") else "") + "/".join(parts)


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


def _method_config(method, dataset, shots):
    """(config path relative to the repo or absolute, {KEY: value}) from the recipe table or the
    method's config."""
    if method.recipe:
        try:
            r = recipe(method.recipe, dataset, shots)
        except RecipeError as e:
            raise StudyError(str(e)) from None
        if not os.path.isfile(repo_path(r.config)):
            raise StudyError(f"method {method.name!r}: the {method.recipe} recipe for {dataset} {shots}-shot "
                             f"names {r.config}, which does not exist")
        return r.config, {k: _value(v) for k, v in r.opts.items()}
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
        config, recipe_opts = _method_config(method, dataset, shots)
        opts = dict(recipe_opts)
        opts.update(s.opts)
        opts.update(method.opts)
        alpha_in_grid = any(k == TASKRES_ALPHA for k, _ in combo)
        tag = grid_tag([(k, v) for k, v in combo if k != TASKRES_ALPHA])
        base_argv = self.common_argv(method, dataset, config, seed)
        cfg0 = self.cfgs.get(base_argv + _pairs(opts))
        cfg_name = os.path.splitext(os.path.basename(config))[0]
        if backbone and backbone != cfg0.MODEL.BACKBONE.NAME:
            opts["MODEL.BACKBONE.NAME"] = backbone
            cfg_name = f"{cfg_name}-{backbone_tag(backbone)}"
        backbone_name = backbone or cfg0.MODEL.BACKBONE.NAME
        extra = [(k, v) for k, v in combo]
        is_taskres = method.trainer == "TaskRes"
        alpha = base = None
        flags = []
        needs = []
        if is_taskres:
            alpha_value = dict(combo).get(TASKRES_ALPHA, opts.get(TASKRES_ALPHA))
            if alpha_value is None:
                alpha_value = cfg0.TRAINER.TaskRes.RESIDUAL_SCALE
            alpha = str(float(alpha_value))
            opts.pop(TASKRES_ALPHA, None)
            extra = [(k, v) for k, v in extra if k != TASKRES_ALPHA] + [(TASKRES_ALPHA, alpha)]
            base = "regular"
            enhanced = "none"
            if method.enhanced_base != "none":
                base = "enhanced"
                enhanced, producer = self.enhanced_base(method, dataset, backbone_name, shots)
                if producer is not None:
                    needs.append(producer.out)
            flags = ["--enhanced-base", enhanced]
        shot_opts = ["DATASET.NUM_SHOTS", str(shots)] if shots > 0 else []
        variant = "/".join(p for p in (f"alpha{alpha}" if alpha_in_grid else "", tag) if p)
        fields = dict(output=s.output, dataset=dataset, trainer=method.trainer, method=method.name, cfg=cfg_name,
                      shots=shots, seed="" if seed is None else seed, tag=tag, base=base or "",
                      alpha=alpha or "",
                      variant=_join(f"base_{base}_alpha{alpha}" if is_taskres else "", tag))
        seed_part = "" if seed is None else f"seed{seed}"
        if method.folder:
            out = _template(method.folder, fields, f"method {method.name!r}")
            out = os.path.abspath(out)
        elif s.protocol == "base-to-new":
            out = _join(s.output, "base2new", "train_base", dataset, f"shots_{shots}", method.trainer, cfg_name,
                        fields["variant"], seed_part)
        elif method.eval_only:
            out = _join(s.output, method.trainer, cfg_name + (f"_{shots}shots" if shots > 0 else ""), dataset,
                        fields["variant"], seed_part)
        else:
            out = _join(s.output, dataset, method.trainer, f"{cfg_name}_{shots}shots", fields["variant"], seed_part)
        tail = _pairs(opts) + shot_opts + _pairs(dict(extra))
        subsample = ["DATASET.SUBSAMPLE_CLASSES", "base"] if s.protocol == "base-to-new" else []
        argv = base_argv + ["--output-dir", out] + flags + (["--eval-only"] if method.eval_only else []) \
            + tail + subsample
        role = {"base-to-new": "base", "dg": "source"}.get(s.protocol, "")
        run = self.add(Run(out=out, argv=argv, method=method.name, trainer=method.trainer, dataset=dataset,
                           shots=shots, seed=seed, variant=variant, role=role, needs=needs))
        if s.protocol == "base-to-new":
            self.new_classes(run, method)
        elif s.protocol == "dg":
            for target in s.targets:
                self.dg_eval(run, method, target, config, opts, extra, cfg_name, shots)

    def new_classes(self, run, method):
        """Base-to-new, step 2: the base-trained model evaluated on the new classes."""
        marker = f"{os.sep}train_base{os.sep}"
        out = run.out.replace(marker, f"{os.sep}test_new{os.sep}", 1) if marker in run.out \
            else os.path.join(run.out, "test_new")
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
        if rel.startswith(".."):
            out = os.path.join(run.out, f"dg_{target}")
        else:
            parts = rel.split(os.sep)
            if eval_name and f"{cfg_name}_{shots}shots" in parts:
                parts[parts.index(f"{cfg_name}_{shots}shots")] = eval_name
            out = os.path.join(s.output, target, *parts)
        argv = self.common_argv(method, target, eval_cfg, run.seed) + ["--output-dir", out, "--eval-only"]
        if not method.eval_only:
            argv += ["--model-dir", run.out]
        argv += _pairs(opts) + _pairs(dict(extra))
        self.add(Run(out=out, argv=argv, method=run.method, trainer=run.trainer, dataset=target, shots=run.shots,
                     seed=run.seed, variant=run.variant, role=target,
                     needs=[] if method.eval_only else [run.out]))

    def enhanced_base(self, method, dataset, backbone, shots):
        """(the --enhanced-base path, the run producing it or None)."""
        s = self.study
        tag = base_tag(backbone)
        if method.enhanced_base != "produce":
            fields = dict(dataset=dataset, dataset_name=dataset_class_name(dataset), tag=tag, shots=shots,
                          strong_base=s.strong_base)
            return os.path.abspath(_template(method.enhanced_base, fields, f"method {method.name!r}")), None
        target = os.path.join(s.strong_base, dataset_class_name(dataset), f"{tag}_{shots}shots", "model.pth.tar")
        out = os.path.join(s.output, "enhanced_base", dataset, f"{tag}_{shots}shots")
        argv = ["--root", s.root or "<DATA>", "--seed", "1", "--trainer", "TaskResEnhancedBase",
                "--dataset-config-file", dataset_config(dataset), "--config-file", repo_path(method.enhance_config),
                "--output-dir", out, "DATASET.NUM_SHOTS", str(shots)]
        cfg = self.cfgs.get(argv)
        if backbone != cfg.MODEL.BACKBONE.NAME:
            argv += ["MODEL.BACKBONE.NAME", backbone]
        argv += _pairs(s.opts)
        producer = self.add(Run(out=out, argv=argv, method=f"{method.name} (enhanced base)",
                                trainer="TaskResEnhancedBase", dataset=dataset, shots=shots, seed=1, role="produce",
                                install=[os.path.join(out, STRONG_BASE_FILE), target]))
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
