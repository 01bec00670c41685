"""Run a grid of shots x seeds (x alpha) for one dataset and backbone in one process.

    python sweep.py --shots 1 2 4 8 16 --seeds 1 2 3 --paper-recipe \
        --root DATA --trainer TaskRes --dataset-config-file configs/datasets/eurosat.yaml \
        --output-dir output/eurosat/TaskRes FEATURES.MODE cached

Every run writes its own folder, log.txt, checkpoint and results.json exactly as
`train.py` would; the CLIP model, the text classifiers and (in FEATURES.MODE cached) the image
features are loaded or computed once and shared. Run folders follow scripts/taskres/main.sh:
<output-dir>/<cfg>_<K>shots/base_<regular|enhanced>_alpha<A>/seed<S>, or pass an --output-dir
with {cfg} {shots} {seed} {alpha} placeholders. Finished runs (results.json) are skipped;
unfinished ones resume. A failing run is reported and the others go on.
"""
import argparse
import os
import sys
import time
import traceback

import yaml

import train
from engine import trainer as engine_trainer
from engine.errors import UserError


def paper_recipe(dataset_name, shots):
    """The TaskRes paper's per-dataset settings (taskres-reference §3.1)."""
    lr = "2e-4" if dataset_name == "ImageNet" else "2e-3"
    epochs = 100 if shots <= 4 else 200
    alpha = 1.0 if dataset_name == "OxfordFlowers" else 0.5
    return f"configs/trainers/TaskRes/adam_lr{lr}_B256_ep{epochs}.yaml", alpha


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="python sweep.py --shots K [K ...] --seeds S [S ...] [options] TRAIN.PY ARGS")
    p.add_argument("--shots", type=int, nargs="+", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--alphas", type=float, nargs="+", help="TaskRes RESIDUAL_SCALE values")
    p.add_argument("--paper-recipe", action="store_true",
                   help="TaskRes paper config per shot count (ep100 for 1/2/4, ep200 for 8/16; lr 2e-4 on "
                        "ImageNet) and its alpha (1.0 for OxfordFlowers, else 0.5) unless --alphas is given")
    return p


def dataset_name(path):
    with open(path) as f:
        return (yaml.safe_load(f) or {}).get("DATASET", {}).get("NAME", "")


def plan(sweep, base):
    """(run label, train.py argv) for each grid point."""
    name = dataset_name(base.dataset_config_file) if base.dataset_config_file else ""
    is_taskres = base.trainer.startswith("TaskRes") and base.trainer != "TaskResEnhancedBase"
    runs = []
    for shots in sweep.shots:
        config = base.config_file
        alphas = sweep.alphas
        if sweep.paper_recipe:
            config, paper_alpha = paper_recipe(name, shots)
            alphas = alphas or [paper_alpha]
        if not config:
            raise UserError("pass --config-file (or --paper-recipe for TaskRes)")
        if is_taskres and not alphas:
            alphas = [float(train.setup_cfg(base).TRAINER.TaskRes.RESIDUAL_SCALE)]
        alphas = alphas if is_taskres else [None]
        cfg_name = os.path.splitext(os.path.basename(config))[0]
        for alpha in alphas or [None]:
            for seed in sweep.seeds:
                out = run_dir(base, cfg_name, shots, seed, alpha)
                argv = list(base.argv) + ["--config-file", config, "--seed", str(seed), "--output-dir", out,
                                          "DATASET.NUM_SHOTS", str(shots)]
                if alpha is not None:
                    argv += ["TRAINER.TaskRes.RESIDUAL_SCALE", str(alpha)]  # the last value wins
                runs.append((out, argv))
    return runs


def run_dir(base, cfg_name, shots, seed, alpha):
    root = base.output_dir or "output"
    fields = dict(cfg=cfg_name, shots=shots, seed=seed, alpha=alpha)
    if "{" in root:
        return root.format(**fields)
    parts = [root, f"{cfg_name}_{shots}shots"]
    if alpha is not None:
        kind = "regular" if base.enhanced_base == "none" else "enhanced"
        parts.append(f"base_{kind}_alpha{alpha}")
    return os.path.join(*parts, f"seed{seed}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    sweep, rest = build_parser().parse_known_args(argv)
    base = train.parse_args(rest)
    # Keep the user's train.py arguments except those each run sets itself.
    flags, opts = train.split_argv(rest, train.build_parser())
    base.argv = strip_flags(flags, {"--config-file", "--seed", "--output-dir"}) + opts
    try:
        runs = plan(sweep, base)
    except UserError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    engine_trainer.SHARE_MODELS = True
    failed, start = [], time.time()
    for i, (out, run_argv) in enumerate(runs, 1):
        if os.path.isfile(os.path.join(out, "results.json")):
            print(f"[{i}/{len(runs)}] {out}: finished, skipped")
            continue
        print(f"[{i}/{len(runs)}] {out}")
        try:
            train.run(train.parse_args(run_argv))
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
