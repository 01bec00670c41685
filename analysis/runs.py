"""Finished runs on disk: where they are, what they are, and the learned residuals they hold.

A run folder is a folder with a `results.json` or a log (`log.txt`, `log.txt-<time>`); the search
does not descend into it. Its accuracy comes from `results.json` (full precision), or else from
the last `* accuracy: X%` after `=> result` in its newest log. Folders without a result
(unfinished runs) are left out.

Metadata comes from `results.json` first (trainer, dataset, num_shots, seed, backbone, the
method's extras), then from the folder names that the scripts write (engine/layout.py):

    <dataset>/<Trainer>/<cfg>_<K>shots/<variant>/seed<S>   (main.sh)
    <Trainer>/<cfg>/<dataset>                              (zeroshot.sh)
    <target>/<Trainer>/<cfg>/<variant>/seed<S>             (test_dg.sh)

and last from the log (`Loading trainer:`, `Loading dataset:`, and the method's own lines for
its variant facts, MethodFacts.variant_log), so that runs of the reference code are read too.
A variant folder is read back by its method (MethodFacts.variant_facts).

    python -m analysis.runs RUN_ROOT [RUN_ROOT ...]     # list what is found
"""
import argparse
import json
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

from datasets import all_info
from engine.checkpoint import load_checkpoint
from engine.describe import method as registered_method
from engine.describe import methods as registered_methods
from engine.errors import UserError
from engine.layout import RESULTS_FILE, has_log
from engine.selection import TIERS, UNKNOWN, tier_of

from .logs import TEST_END_SIGNAL, find_log, parse_log

# The papers' order of datasets, which figures and tables follow; other datasets come after, by stem.
PAPER_ORDER = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
               "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101", "imagenetv2", "imagenet_sketch",
               "imagenet_a", "imagenet_r")
_INFO = sorted(all_info(), key=lambda i: (PAPER_ORDER.index(i.stem) if i.stem in PAPER_ORDER else len(PAPER_ORDER),
                                          i.stem))
# configs/datasets/<stem>.yaml -> DATASET.NAME, and the names used in the figures (the papers' spelling).
DATASET_NAMES = {i.stem: i.name for i in _INFO}
STEMS = {name: stem for stem, name in DATASET_NAMES.items()}
DISPLAY_NAMES = {i.stem: i.display_name for i in _INFO}
RESULTS_JSON = RESULTS_FILE
SKIP_DIRS = {"prompt_learner", "tensorboard"}

_SHOTS_DIR = re.compile(r"^(?P<cfg>.+)_(?P<shots>\d+)shots$")
_SEED_DIR = re.compile(r"^seed(?P<seed>\d+)$")
_CKPT_FILE = re.compile(r"^model\.pth\.tar-(?P<epoch>\d+)$")
_LOG_PATTERNS = {
    "trainer": re.compile(r"^Loading trainer: (\S+)"),
    "dataset": re.compile(r"^Loading dataset: (\S+)"),
    "backbone": re.compile(r"^Loading CLIP \(backbone: ([^)]+)\)"),
}


def _facts(trainer):
    """The registered class of a trainer name, or None."""
    return registered_method(trainer) if trainer in registered_methods() else None


def zero_shot_trainers():
    """The evaluation-only methods, in name order (the later one is preferred where both ran)."""
    return tuple(n for n in registered_methods() if registered_method(n).evaluation_only)


def residual_methods():
    """The methods whose axis `alpha` scales a learned residual (their checkpoints hold base and residual)."""
    return tuple(n for n in registered_methods() if any(a.name == "alpha" for a in registered_method(n).axes))


def producers():
    """{product name: producer method} over the registered methods."""
    return {registered_method(n).produces: n for n in registered_methods() if registered_method(n).produces}


@dataclass
class Run:
    path: str
    accuracy: float  # percent
    source: str  # the file the accuracy was read from
    trainer: Optional[str] = None
    dataset: Optional[str] = None  # configs/datasets stem (caltech101), or the raw name if unknown
    shots: Optional[int] = None  # None: zero-shot, full data or evaluation-only
    seed: Optional[int] = None
    backbone: Optional[str] = None
    base: Optional[str] = None  # variant fact: the base a residual was learned on ("regular", "enhanced")
    alpha: Optional[float] = None  # variant fact: the residual scale
    config: Optional[str] = None  # trainer config name, e.g. adam_lr2e-3_B256_ep200
    results: Dict = field(default_factory=dict)
    eval_only: bool = False  # an evaluation of a checkpoint (recorded by train.py), not a training run

    @property
    def is_zero_shot(self):
        cls = _facts(self.trainer)
        return cls is not None and bool(cls.evaluation_only)

    @property
    def selection(self):
        """The selection tier (engine.selection) the run recorded; "unknown" for runs written
        before tiers were recorded (zero-shot runs choose nothing, so they are "none")."""
        tier = tier_of(self.results)
        return "none" if tier == UNKNOWN and self.is_zero_shot else tier

    def value(self, metric="accuracy"):
        """The run's `metric` in results.json (accuracy also from the log); None when not recorded."""
        if metric == "accuracy":
            return self.accuracy
        return _number(self.results.get(metric))

    @property
    def template(self):
        """The prompt template kind its text classifier was built from (engine.record.text_templates:
        "single", "ensemble-N", "learned"); None for a method without one or an older record."""
        return (self.results.get("extras") or {}).get("zero_shot_template")

    @property
    def is_product(self):
        """A producer's run: it makes another method's input, not a result of its own."""
        cls = _facts(self.trainer)
        return cls is not None and bool(cls.produces)

    def method(self, with_alpha=False):
        return method_label(self, with_alpha)


def method_label(run, with_alpha=False):
    """The method's table label (MethodFacts.table_label over the run's extras and variant
    facts), the trainer name for an unregistered one; `, α=0.5` with with_alpha; ` [ViT-B/16]`
    for a backbone other than RN50."""
    label = run.trainer or "unknown"
    cls = _facts(run.trainer)
    if cls is not None:
        extras = dict(run.results.get("extras") or {}) if isinstance(run.results.get("extras"), dict) else {}
        extras.update({k: v for k, v in (("base", run.base), ("alpha", run.alpha)) if v is not None})
        label = cls.table_label(extras)
    if with_alpha and run.alpha is not None:
        label += f", α={run.alpha:g}"
    return label + backbone_suffix(run.backbone) + split_suffix(run)


def split_suffix(run):
    """` [split: generated seed=1]` for a run whose train/val/test split was not the official one
    (a benchmark folder without its split file: not comparable with published numbers), else ""."""
    extras = run.results.get("extras") if isinstance(run.results.get("extras"), dict) else {}
    origin = extras.get("split_origin")
    return f" [split: {origin}]" if isinstance(origin, str) and origin.startswith("generated") else ""


def backbone_suffix(backbone):
    """` [ViT-B/16]` for a backbone other than RN50 (a checkpoint path: its file name), else ""."""
    if not backbone or backbone == "RN50":
        return ""
    return f" [{os.path.basename(backbone) if os.sep in backbone else backbone}]"


def parse_selection(text):
    """--selection "none,fewshot-val" -> the set of tiers; an unknown name raises ValueError."""
    wanted = {t.strip() for t in text.split(",") if t.strip()}
    bad = wanted - set(TIERS) - {UNKNOWN}
    if bad:
        raise ValueError(f"unknown selection tier {', '.join(sorted(bad))}; choose from {', '.join(TIERS + (UNKNOWN,))}")
    return wanted


def dataset_stem(name):
    """`Caltech101` or `caltech101` -> `caltech101`; an unknown name is returned unchanged."""
    if name in DATASET_NAMES:
        return name
    return STEMS.get(name, name)


def display_name(stem):
    return DISPLAY_NAMES.get(stem, stem)


# ---------------------------------------------------------------- reading one folder


def _read_results(run_dir):
    path = os.path.join(run_dir, RESULTS_JSON)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        print(f"warning: cannot read {path} ({e}); using the log", file=sys.stderr)
        return None
    if not isinstance(data, dict):
        print(f"warning: {path} holds a {type(data).__name__}, not a record; using the log", file=sys.stderr)
        return None
    wrong = [f"{key} is {data[key]!r}" for key, ok in _RESULT_TYPES.items() if key in data and not ok(data[key])]
    if wrong:  # a damaged or hand-edited record: its numbers cannot be trusted, the log's can
        print(f"warning: {path} has values of the wrong type ({'; '.join(wrong)}); using the log",
              file=sys.stderr)
        return None
    return data


def _int_or_none(value):
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


# What train.py writes into results.json, by key: a record that breaks it is not read.
_RESULT_TYPES = {
    "accuracy": lambda v: _number(v) is not None, "num_shots": _int_or_none, "seed": _int_or_none,
    "trainer": lambda v: isinstance(v, str), "dataset": lambda v: isinstance(v, str),
    "backbone": lambda v: v is None or isinstance(v, str), "split": lambda v: isinstance(v, str),
    "config": lambda v: v is None or isinstance(v, dict), "extras": lambda v: v is None or isinstance(v, dict),
}


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _scan_log(log, patterns=None):
    """First match of each pattern (default _LOG_PATTERNS) in a log (the header lines)."""
    patterns = _LOG_PATTERNS if patterns is None else patterns
    found = {}
    if log is None:
        return found
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            for key, regex in patterns.items():
                if key not in found:
                    match = regex.match(line)
                    if match:
                        found[key] = match.group(1)
            if len(found) == len(patterns):
                break
    return found


def _variant_from_folders(parts, cls):
    """The variant facts of the innermost folder part a method reads back (the run's method
    first, then every registered one, so a run of an unknown trainer is read too)."""
    readers = ([cls] if cls is not None else []) + [registered_method(n) for n in registered_methods()]
    for part in reversed(parts):
        for reader in readers:
            facts = reader.variant_facts(part)
            if facts:
                return facts
    return {}


def read_run(run_dir):
    """The Run of a folder, or None when it holds no final result."""
    run_dir = os.path.abspath(run_dir)
    results = _read_results(run_dir) or {}
    log = find_log(run_dir)
    accuracy = _number(results.get("accuracy"))
    source = os.path.join(run_dir, RESULTS_JSON)
    if accuracy is None or results.get("split", "test") != "test":
        accuracy = None
        if log is not None:
            accuracy, _ = parse_log(log, "accuracy", TEST_END_SIGNAL)
            source = log
    if accuracy is None:
        return None

    parts = run_dir.split(os.sep)
    run = Run(path=run_dir, accuracy=float(accuracy), source=source, results=results)
    scanned = None

    def from_log(key):
        nonlocal scanned
        if scanned is None:
            scanned = _scan_log(log)
        return scanned.get(key)

    # trainer
    trainer = results.get("trainer")
    if not isinstance(trainer, str) or not trainer:
        known = set(registered_methods())
        trainer = next((p for p in reversed(parts) if p in known), None) or from_log("trainer")
        if trainer is None:  # a producer's folder is named by its product (engine/layout.py)
            trainer = next((m for product, m in producers().items() if product in parts), None)
    run.trainer = trainer
    cls = _facts(trainer)

    # dataset
    name = results.get("dataset")
    if not isinstance(name, str) or not name:
        name = next((p for p in reversed(parts) if p in DATASET_NAMES), None) or from_log("dataset")
    run.dataset = dataset_stem(name) if name else None

    # seed and shots: results.json when it has the key, else the folder names
    seed = _number(results.get("seed"))
    if seed is None and "seed" not in results:
        match = _SEED_DIR.match(parts[-1])
        seed = int(match.group("seed")) if match else None
    run.seed = int(seed) if seed is not None and seed >= 0 else None
    shots_dir = next((m for m in map(_SHOTS_DIR.match, reversed(parts)) if m), None)
    shots = _number(results.get("num_shots"))
    if shots is None and "num_shots" not in results and shots_dir:
        shots = int(shots_dir.group("shots"))
    run.shots = int(shots) if shots is not None and shots > 0 else None

    extras = results.get("extras") if isinstance(results.get("extras"), dict) else {}
    run.eval_only = bool(extras.get("eval_only", False))

    # config: the recorded config file, else the folder names
    config_file = extras.get("config_file")
    if isinstance(config_file, str) and config_file:
        run.config = os.path.splitext(os.path.basename(config_file))[0]
    elif shots_dir:
        run.config = shots_dir.group("cfg")
    elif trainer in parts and parts.index(trainer) + 1 < len(parts) - 1:
        run.config = parts[parts.index(trainer) + 1]

    backbone = results.get("backbone")
    run.backbone = backbone if isinstance(backbone, str) and backbone else from_log("backbone")

    # variant facts (base and alpha): recorded, else the folder names, else the method's log lines
    folder_facts = _variant_from_folders(parts, cls)
    if isinstance(extras.get("base"), str) and _number(extras.get("alpha")) is not None:
        run.base, run.alpha = extras["base"], float(extras["alpha"])
    elif folder_facts:
        run.base = folder_facts.get("base")
        run.alpha = float(folder_facts["alpha"]) if "alpha" in folder_facts else None
    elif cls is not None and cls.variant_log:
        logged = _scan_log(log, {k: re.compile(v) for k, v in cls.variant_log.items()})
        run.base = logged.get("base")
        try:
            run.alpha = float(logged["alpha"]) if "alpha" in logged else None
        except ValueError:
            run.alpha = None
    return run


def find_runs(roots, warn=True):
    """Every finished run under the given folders (each may itself be a run), sorted by path."""
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    runs, seen = [], set()
    for root in roots:
        root = os.path.abspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{root} is not a folder")
        for current, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
            if RESULTS_JSON not in filenames and not has_log(filenames):
                continue
            dirnames[:] = []  # a run folder holds no other runs
            if current in seen:
                continue
            seen.add(current)
            run = read_run(current)
            if run is not None:
                runs.append(run)
            elif warn:
                why = "its results.json is unusable (above)" if RESULTS_JSON in filenames else "no results.json"
                print(f"skip {current}: no final result ({why}, and no final accuracy in its log: "
                      f"unfinished or damaged)", file=sys.stderr)
    return sorted(runs, key=lambda r: r.path)


def zero_shot_accuracies(runs, trainer=None):
    """{dataset: (trainer, mean accuracy in %)} over the zero-shot runs; where a dataset has runs
    of several zero-shot trainers the last in name order is used, unless `trainer` picks one."""
    by = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.is_zero_shot and run.dataset and (trainer is None or run.trainer == trainer):
            by[run.dataset][run.trainer].append(run.accuracy)
    out = {}
    for dataset, per_trainer in by.items():
        name = next(t for t in reversed(zero_shot_trainers()) if t in per_trainer)
        out[dataset] = (name, sum(per_trainer[name]) / len(per_trainer[name]))
    return out


# ---------------------------------------------------------------- learned residuals (base t, residual x)


@dataclass
class ResidualWeights:
    base: torch.Tensor  # [K, D] base_text_features t
    residual: torch.Tensor  # [K, D] text_feature_residuals x
    epoch: Optional[int]
    path: str

    @property
    def num_classes(self):
        return int(self.residual.shape[0])


def find_checkpoint(run_dir, name="prompt_learner"):
    """`<run>/<name>/model.pth.tar-<E>`: the file named by the `checkpoint` pointer when it is
    one of those, else the one with the largest E; None when there is none."""
    folder = os.path.join(run_dir, name)
    if not os.path.isdir(folder):
        return None
    pointer = os.path.join(folder, "checkpoint")
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8") as f:
            named = f.read().strip()
        if _CKPT_FILE.match(named) and os.path.isfile(os.path.join(folder, named)):
            return os.path.join(folder, named)
    epochs = [(int(m.group("epoch")), n) for n in os.listdir(folder) for m in [_CKPT_FILE.match(n)] if m]
    if not epochs:
        return None
    return os.path.join(folder, max(epochs)[1])


def load_taskres(run_or_path):
    """Base and residual of a residual-learning run (a Run, a run folder, or a checkpoint file)."""
    path = run_or_path.path if isinstance(run_or_path, Run) else os.fspath(run_or_path)
    if os.path.isdir(path):
        folder, path = path, find_checkpoint(path)
        if path is None:
            raise FileNotFoundError(f"no prompt_learner/model.pth.tar-<epoch> in {folder}")
    elif not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:  # the engine's reader: reference (Dassl) checkpoints pickle their scheduler
        state = load_checkpoint(path, "cpu")
    except UserError as e:
        raise ValueError(str(e)) from None
    sd = state.get("state_dict") if isinstance(state, dict) else None
    if not isinstance(sd, dict) or "text_feature_residuals" not in sd or "base_text_features" not in sd:
        raise ValueError(f"{path} is not a {' or '.join(residual_methods())} checkpoint (expected state_dict with "
                         f"base_text_features and text_feature_residuals)")
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    base, residual = sd["base_text_features"], sd["text_feature_residuals"]
    if base.shape != residual.shape or base.dim() != 2:
        raise ValueError(f"{path}: base {tuple(base.shape)} and residual {tuple(residual.shape)} "
                         f"must both be [K, D]")
    epoch = state.get("epoch")
    return ResidualWeights(base=base.detach().double(), residual=residual.detach().double(),
                          epoch=int(epoch) if isinstance(epoch, int) else None, path=path)


def residual_magnitudes(weights, alpha):
    """Per-class norms of the scaled residual: absolute ||α·x_k||₂ and relative ||α·x_k||₂/||t_k||₂,
    each averaged over the K classes."""
    scaled = float(alpha) * weights.residual
    norms = scaled.norm(dim=1)
    return {"absolute": float(norms.mean()), "relative": float((norms / weights.base.norm(dim=1)).mean())}


# ---------------------------------------------------------------- listing


def main(argv=None):
    parser = argparse.ArgumentParser(description="List the finished runs under folders and what was "
                                                 "inferred about them.")
    parser.add_argument("roots", nargs="+", metavar="RUN_ROOT")
    args = parser.parse_args(argv)
    try:
        runs = find_runs(args.roots)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not runs:
        print("error: no finished runs found", file=sys.stderr)
        return 1
    runs.sort(key=lambda r: (r.method(with_alpha=True), r.dataset or "", r.shots or 0, r.seed or 0, r.path))
    rows = [(r.method(with_alpha=True), r.dataset or "?", "-" if r.shots is None else str(r.shots),
             "-" if r.seed is None else str(r.seed), f"{r.accuracy:.2f}", r.selection, r.path) for r in runs]
    head = ("method", "dataset", "shots", "seed", "accuracy", "selection", "path")
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head[:-1])]
    for row in [head] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
