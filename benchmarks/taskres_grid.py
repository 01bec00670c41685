"""Online vs cached TaskRes grids (5 shot counts x 3 seeds) on one synthetic dataset.

    python benchmarks/taskres_grid.py [--arch rn50|tiny] [--epochs 2] [--views 10] [--per-class 40]

Writes a synthetic EuroSAT in its real layout and a CLIP checkpoint (RN50's architecture with
random weights by default; `tiny` = the pretrained tiny CLIP, whose accuracies mean something),
then measures, each in a fresh process (wall time and peak RSS):
  (a) the grid in online mode (the reference: augment + encode every batch) at --epochs,
      and once more at 2x --epochs, to extrapolate linearly to the reference epochs (100 for 1/2/4
      shots, 200 for 8/16);
  (b) the same grid in cached mode at the reference epochs, from an empty feature store;
  (c) the lower bound: one encoder pass over the unique test images plus --views passes over the
      unique training images of the grid, nothing else;
  (d) one online run (16 shots, seed 1, --epochs), for the memory target;
and prints times, the ratios a/b and b/c, and the mean accuracy difference online - cached.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

SHOTS = [1, 2, 4, 8, 16]
SEEDS = [1, 2, 3]
REF_EPOCHS = {1: 100, 2: 100, 4: 100, 8: 200, 16: 200}


def make_backbone(arch, path):
    import open_clip
    import torch

    from synthetic.tiny_clip import pretrained_tiny_clip_path, save_openai_checkpoint, to_openai_state_dict

    if arch == "tiny":
        return pretrained_tiny_clip_path()
    torch.manual_seed(0)
    model = open_clip.create_model("RN50", pretrained=None)
    save_openai_checkpoint(to_openai_state_dict(model), path)
    return path


def common_opts(backbone, workers):
    return ["MODEL.BACKBONE.NAME", backbone, "DATALOADER.NUM_WORKERS", str(workers), "TRAIN.TENSORBOARD", "False",
            "TRAIN.RESUME_FREQ", "0"]


def sweep_cmd(data, out, backbone, mode, epochs, views, cache, workers, shots=SHOTS, seeds=SEEDS):
    cmd = [sys.executable, os.path.join(ROOT, "sweep.py"), "--shots", *map(str, shots), "--seeds", *map(str, seeds),
           "--root", data, "--trainer", "TaskRes", "--dataset-config-file", "configs/datasets/eurosat.yaml",
           "--config-file", "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml",
           "--output-dir", out + "/{shots}shots/seed{seed}", "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5",
           "FEATURES.MODE", mode, "FEATURES.NUM_VIEWS", str(views), "FEATURES.CACHE_DIR", cache,
           *common_opts(backbone, workers)]
    if epochs is not None:
        cmd += ["OPTIM.MAX_EPOCH", str(epochs)]
    return cmd


def measure(cmd):
    """Wall seconds and peak RSS (MiB) of a command run in its own process."""
    wrapper = ("import resource,subprocess,sys,time,json;t=time.time();"
               "r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
               "print(json.dumps({'rc':r.returncode,'s':time.time()-t,"
               "'mib':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024}))")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=ROOT, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    if res["rc"]:
        raise SystemExit(f"benchmark step failed: {' '.join(cmd)}")
    return res


def accuracies(out):
    accs = {}
    for k in SHOTS:
        for s in SEEDS:
            with open(os.path.join(out, f"{k}shots", f"seed{s}", "results.json")) as f:
                accs[(k, s)] = json.load(f)["accuracy"]
    return accs


def lower_bound(data, backbone, views, workers):
    """Encode the unique test images once and the grid's unique train images `views` times."""
    import torch

    import clip
    from datasets import build_dataset
    from datasets.transforms import build_transform
    from engine.checkpoint import set_random_seed
    from engine.data import ImageDataset
    from train import parse_args, setup_cfg

    base = ["--root", data, "--trainer", "TaskRes", "--dataset-config-file", "configs/datasets/eurosat.yaml",
            "--config-file", "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml", *common_opts(backbone, workers)]
    unique, test = {}, None
    for k in SHOTS:
        for s in SEEDS:
            cfg = setup_cfg(parse_args(base + ["--seed", str(s), "DATASET.NUM_SHOTS", str(k), "VERBOSE", "False"]))
            set_random_seed(s)
            ds = build_dataset(cfg)
            unique.update({d.impath: d for d in ds.train_x})
            test = ds.test
    model = clip.load(backbone)
    t0 = time.time()
    for items, train, reps in ((test, False, 1), (list(unique.values()), True, views)):
        loader = torch.utils.data.DataLoader(ImageDataset(items * reps, build_transform(cfg, train)),
                                             batch_size=500, num_workers=min(workers, os.cpu_count()))
        with torch.no_grad():
            for images, _, _ in loader:
                clip.encode_image(model, images)
    return time.time() - t0, len(test), len(unique)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["rn50", "tiny"], default="rn50")
    p.add_argument("--epochs", type=int, default=1, help="online epochs measured (and 2x that), then extrapolated")
    p.add_argument("--views", type=int, default=10)
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--work-dir", default="")
    args = p.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="taskres-bench-")
    from synthetic.layouts import write_eurosat

    data = os.path.join(work, "data")
    write_eurosat(data, per_class=args.per_class)
    backbone = make_backbone(args.arch, os.path.join(work, "backbone.pt"))
    clip_load = __import__("clip").load(backbone)
    del clip_load  # warm the file cache and fail early on a bad checkpoint

    print(f"work dir {work}; backbone {args.arch}; views {args.views}")
    e1, e2 = args.epochs, 2 * args.epochs
    a1 = measure(sweep_cmd(data, f"{work}/online_e{e1}", backbone, "online", e1, args.views, f"{work}/c0", args.workers))
    a2 = measure(sweep_cmd(data, f"{work}/online_e{e2}", backbone, "online", e2, args.views, f"{work}/c0", args.workers))
    # Online cost is linear in epochs: per-run cost = fixed + epochs * per-epoch; per-epoch cost
    # scales with shots, so extrapolate with the grid's total epoch count.
    runs = len(SHOTS) * len(SEEDS)
    slope = (a2["s"] - a1["s"]) / (runs * (e2 - e1))  # seconds per extra epoch of an average run
    # Per-epoch cost grows with the number of images: fit per shots from the two grids is noisy,
    # so scale the measured slope by each run's share of images.
    imgs = {k: 10 * k for k in SHOTS}
    mean_imgs = sum(imgs.values()) / len(SHOTS)
    a_ref = a1["s"] + sum(slope * imgs[k] / mean_imgs * (REF_EPOCHS[k] - e1) for k in SHOTS for _ in SEEDS)
    b = measure(sweep_cmd(data, f"{work}/cached", backbone, "cached", None, args.views, f"{work}/cache",
                          args.workers))
    # Same epochs as (a) for the accuracy comparison; the store is warm, so this only trains.
    measure(sweep_cmd(data, f"{work}/cached_e{e1}", backbone, "cached", e1, args.views, f"{work}/cache", args.workers))
    # Peak memory of one online run hardly depends on its epochs; measure it at --epochs.
    one = measure(sweep_cmd(data, f"{work}/one", backbone, "online", e1, args.views, f"{work}/c0", args.workers,
                            shots=[16], seeds=[1]))
    c_s, n_test, n_train = lower_bound(data, backbone, args.views, args.workers)

    acc_online, acc_cached = accuracies(f"{work}/online_e{e1}"), accuracies(f"{work}/cached_e{e1}")
    diff = sum(acc_online.values()) / len(acc_online) - sum(acc_cached.values()) / len(acc_cached)
    acc_ref = sum(accuracies(f"{work}/cached").values()) / len(SHOTS) / len(SEEDS)
    print(f"unique images: {n_test} test, {n_train} train")
    print(f"(a) online grid, {e1} epoch(s): {a1['s']:.1f}s; {e2}: {a2['s']:.1f}s; "
          f"extrapolated to reference epochs: {a_ref:.1f}s ({a_ref / 3600:.2f} h)")
    print(f"(b) cached grid, reference epochs, empty store: {b['s']:.1f}s (mean accuracy {acc_ref:.2f}%)")
    print(f"(c) lower bound (test once + {args.views} views of train): {c_s:.1f}s")
    print(f"a/b (reference epochs) = {a_ref / b['s']:.1f}x; b/c = {b['s'] / c_s:.2f}x")
    print(f"accuracy online - cached at {e1} epoch(s): {diff:+.2f} points "
          f"(online {sum(acc_online.values()) / 15:.2f}%, cached {sum(acc_cached.values()) / 15:.2f}%)")
    print(f"peak memory: cached grid {b['mib']:.0f} MiB; one online run (16 shots) {one['mib']:.0f} MiB "
          f"-> {b['mib'] / one['mib']:.2f}x")


if __name__ == "__main__":
    main()
