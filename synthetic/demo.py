"""The offline demo: TaskRes on synthetic EuroSAT with a tiny CLIP, end to end.

    python -m synthetic.demo [--out output/demo] [--epochs 100] [--shots 16] [--online]

Nothing is downloaded. It builds (once, cached) a tiny CLIP in OpenAI's checkpoint format,
writes a synthetic EuroSAT in CoOp's layout, evaluates zero-shot CLIP, trains TaskRes with the
reference recipe (configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml, alpha 0.5) for seeds
1-3 as scripts/taskres/main.sh would, and averages the seeds with parse_test_res.py (each seed's
accuracy is printed beside the mean: on its 120 test images seeds can tie).
By default the image features come from the feature store (FEATURES.MODE cached, under
<out>/features), which takes about a minute on two CPU cores; --online augments and encodes
every batch as the reference does (several minutes). Run folders are named by what ran
(another --epochs or --online gets its own folder). At the end it prints the train.py, sweep.py
and figure commands that reuse its data and tiny CLIP. The real-data command differs only in
--root and MODEL.BACKBONE.NAME (see README.md).
"""
import argparse
import json
import os
import sys
import time

import parse_test_res
import train
from synthetic.layouts import write_eurosat
from synthetic.tiny_clip import pretrained_tiny_clip_path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/demo")
    p.add_argument("--epochs", type=int, default=100, help="MAX_EPOCH (the recipe's 100 by default)")
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--online", action="store_true", help="encode augmented images every step (the reference)")
    args = p.parse_args(argv)
    start = time.time()
    print("Preparing the tiny CLIP (a few seconds of contrastive pretraining, cached after the first run)")
    backbone = pretrained_tiny_clip_path()
    data = os.path.join(args.out, "data")
    if not os.path.isdir(os.path.join(data, "eurosat")):
        write_eurosat(data, per_class=40)
    store = os.path.join(args.out, "features")
    features = [] if args.online else ["FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", store]
    common = ["--root", data, "--dataset-config-file", "configs/datasets/eurosat.yaml",
              "MODEL.BACKBONE.NAME", backbone, "DATALOADER.NUM_WORKERS", str(args.workers)] + features
    zs_dir = os.path.join(args.out, "ZeroshotCLIP", "eurosat")
    code = train.main(common + ["--trainer", "ZeroshotCLIP", "--config-file", "configs/trainers/ZeroshotCLIP/rn50.yaml",
                                "--output-dir", zs_dir, "--eval-only"])
    if code:
        return code
    tag = "adam_lr2e-3_B256_ep100" + ("" if args.epochs == 100 else f"-ep{args.epochs}") \
        + ("-online" if args.online else "")
    runs = os.path.join(args.out, "eurosat", "TaskRes", f"{tag}_{args.shots}shots", "base_regular_alpha0.5")
    for seed in (1, 2, 3):
        out = os.path.join(runs, f"seed{seed}")
        if os.path.isfile(os.path.join(out, "results.json")):
            print(f"{out}: finished, skipped")
            continue
        code = train.main(common + ["--seed", str(seed), "--trainer", "TaskRes",
                                    "--config-file", "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml",
                                    "--output-dir", out, "DATASET.NUM_SHOTS", str(args.shots),
                                    "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5", "OPTIM.MAX_EPOCH", str(args.epochs)])
        if code:
            return code
    print("\n=== Seeds averaged by parse_test_res.py ===")
    parse_test_res.main([runs])
    print_per_seed(runs)
    with open(os.path.join(zs_dir, "results.json")) as f:
        zs = json.load(f)["accuracy"]
    print(f"\nZero-shot CLIP: {zs:.1f}%  (chance 10%)")
    print(f"Outputs in {os.path.abspath(args.out)}; total {time.time() - start:.0f}s")
    opts = f"MODEL.BACKBONE.NAME {backbone}" + ("" if args.online else f" FEATURES.MODE cached FEATURES.CACHE_DIR {store}")
    out = args.out
    print("\nNext, with the same data and tiny CLIP:")
    print(f"  python train.py --root {data} --seed 1 --trainer TaskRes --dataset-config-file configs/datasets/eurosat.yaml "
          f"--config-file configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml --output-dir {out}/one_run "
          f"DATASET.NUM_SHOTS 4 TRAINER.TaskRes.RESIDUAL_SCALE 0.5 {opts}")
    print(f"  python sweep.py --shots 1 2 4 8 16 --seeds 1 2 3 --recipe --root {data} --trainer TaskRes "
          f"--dataset-config-file configs/datasets/eurosat.yaml --output-dir {out}/sweep/eurosat/TaskRes {opts}")
    print(f"  python -m analysis.compare {out} --out {out}/table.md --figure {out}/curves.png")
    return 0


def print_per_seed(runs):
    """Each seed's accuracy beside the mean: on a small test set seeds can tie (one image is
    a step of 100/N points), which a std of 0.00 alone reads as broken seeding."""
    records = []
    for seed in (1, 2, 3):
        with open(os.path.join(runs, f"seed{seed}", "results.json")) as f:
            records.append((seed, json.load(f)))
    accs = [r["accuracy"] for _, r in records]
    total = records[0][1].get("total")
    step = f"; {total} test images, so accuracies move in steps of {100 / total:.2f} points and seeds can tie" \
        if total else ""
    print("Per seed: " + ", ".join(f"seed {s} {r['accuracy']:.2f}%" for s, r in records)
          + f" (mean {sum(accs) / len(accs):.2f}%{step})")


if __name__ == "__main__":
    sys.exit(main())
