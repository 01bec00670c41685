"""A small synthetic study on 2 CPU workers vs 1: the wall-clock ratio of the gpus backend.

    python benchmarks/study_workers.py [--datasets eurosat dtd oxford_pets caltech101] [--shots 1 2]
                                       [--seeds 1 2] [--epochs 20] [--mode cached|online]

Writes the synthetic datasets in their real layouts and uses the pretrained tiny CLIP, then runs
the same study (TaskRes, one group per dataset) twice from scratch, each time with a fresh
output folder and an empty feature store, as `study.py run --backend gpus --devices cpu` (one
worker) and `--devices cpu,cpu` (two workers). Each worker gets cores / workers threads
(OMP_NUM_THREADS), so both measurements use the whole machine; the ratio shows what
independent workers gain over one process using every core (process start-up, per-run fixed
costs and single-threaded Python work parallelise; big matrix products already used both
cores). A third measurement, one worker with one thread, shows how much of the gain comes from
torch's threads doing badly on small matrices. Prints the times, the ratios and whether the
accuracies agree.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def write_data(root, datasets, per_class):
    from studies.plan import dataset_class_name
    from synthetic.layouts import write_dataset

    for stem in datasets:
        write_dataset(dataset_class_name(stem), root, per_class=per_class)


def run_study(tmp, tag, data, clip_path, args, devices, threads=None):
    out, cache = os.path.join(tmp, f"out-{tag}"), os.path.join(tmp, f"cache-{tag}")
    study = {"name": f"bench-{tag}", "root": data, "output": out, "datasets": args.datasets, "shots": args.shots,
             "seeds": args.seeds, "methods": ["TaskRes"],
             "opts": {"MODEL.BACKBONE.NAME": clip_path, "OPTIM.MAX_EPOCH": args.epochs,
                      "DATALOADER.NUM_WORKERS": 0, "TRAIN.TENSORBOARD": False, "FEATURES.MODE": args.mode,
                      "FEATURES.CACHE_DIR": cache}}
    path = os.path.join(tmp, f"{tag}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(study, f)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.time()
    subprocess.run([sys.executable, os.path.join(ROOT, "study.py"), "run", path, "--backend", "gpus",
                    "--devices", devices], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.time() - start
    accs = {}
    for dirpath, _, files in os.walk(out):
        if "results.json" in files:
            with open(os.path.join(dirpath, "results.json")) as f:
                accs[os.path.relpath(dirpath, out)] = json.load(f)["accuracy"]
    return seconds, accs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["eurosat", "dtd", "oxford_pets", "caltech101"])
    p.add_argument("--shots", nargs="+", type=int, default=[1, 2])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--mode", choices=("cached", "online"), default="cached")
    p.add_argument("--per-class", type=int, default=12)
    args = p.parse_args(argv)

    from synthetic.tiny_clip import pretrained_tiny_clip_path

    clip_path = pretrained_tiny_clip_path()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        write_data(data, args.datasets, args.per_class)
        n = len(args.datasets) * len(args.shots) * len(args.seeds)
        print(f"{n} runs in {len(args.datasets)} groups ({', '.join(args.datasets)}), {args.epochs} epochs, "
              f"FEATURES.MODE {args.mode}, {os.cpu_count()} CPU cores", flush=True)
        one, accs1 = run_study(tmp, "one", data, clip_path, args, "cpu")
        print(f"1 worker : {one:7.1f} s", flush=True)
        two, accs2 = run_study(tmp, "two", data, clip_path, args, "cpu,cpu")
        print(f"2 workers: {two:7.1f} s", flush=True)
        single, _ = run_study(tmp, "single", data, clip_path, args, "cpu", threads=1)
        print(f"1 worker, 1 thread: {single:7.1f} s (context: what threading gives one worker)", flush=True)
    print(f"ratio 1 worker / 2 workers: {one / two:.2f}x (1 worker with 1 thread / 2 workers: {single / two:.2f}x)")
    same = accs1 == accs2 and len(accs1) == n
    print(f"accuracies of the {len(accs1)} runs {'agree' if same else 'differ'} between the two")
    if not same:
        diffs = [k for k in accs1 if accs1.get(k) != accs2.get(k)]
        print("  differing: " + ", ".join(diffs[:5]))


if __name__ == "__main__":
    main()
