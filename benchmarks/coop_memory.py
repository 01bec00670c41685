"""CoOp's training step on many classes: time and memory of the text side, reference vs ours.

    python benchmarks/coop_memory.py                        # RN50 text tower, 1000 classes, CPU
    python benchmarks/coop_memory.py --ref-classes 1000     # the reference at full size (~36 GB fp32)
    python benchmarks/coop_memory.py --device cuda          # on a GPU (peak = max_memory_allocated)

One step = CoOp's prompts for every class -> text encoder -> logits of a batch of 32 random image
features -> cross-entropy -> backward -> SGD step on the context (16 generic tokens, class token
at the end). The text tower is RN50's (width 512, 12 layers, 8 heads, 77 positions) with random
weights: time and memory do not depend on the weights. Class names are 1-4 random common words
(1-8 BPE tokens), close to ImageNet's CLIP names.

Variants (TRAINER.COOP keys):
    reference        TEXT_TRUNCATE False, TEXT_SHARED_PREFIX False, TEXT_CHUNK 0: all classes x 77
                     positions in one batch with gradients, as CoOp
    truncate         only up to the longest prompt's EOT position
    truncate+shared  ... and the 17 shared positions (SOS + context) once, not once per class
    default          ... and chunks of TEXT_CHUNK classes under activation checkpointing

Each variant runs in a fresh process. Memory: "held" = bytes autograd keeps for the backward
after the forward pass (exact, from saved-tensor hooks); "peak" = the process's peak RSS above
its RSS before the first step (CPU) or torch.cuda.max_memory_allocated above the model (CUDA).
The reference needs ~30 GB at 1000 classes in fp32, more than a small CPU machine has, so by
default every variant is measured at --ref-classes, and only those named in --full (default:
"default") again at --classes; the others are scaled linearly to --classes (their work and
activations are linear in the class count; `positions` may grow slightly with more names).
"""
import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

VARIANTS = {
    "reference": (False, False, 0),
    "truncate": (True, False, 0),
    "truncate+shared": (True, True, 0),
    "default": (True, True, 256),
}
WORDS = ("red fox golden retriever tabby cat great white shark sea lion fire engine grand piano space "
         "shuttle mountain bike wooden spoon coral reef garden snake paper towel water bottle black bear "
         "hermit crab steel drum ice cream electric guitar polar bear barn owl rock python traffic light "
         "Chesapeake Bay wild boar airliner toucan hummingbird lampshade").split()


def classnames(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) + f" {i}" for i in range(n)]


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def measure(variant, n_classes, device, steps, threads):
    import open_clip
    import torch
    import torch.nn.functional as F

    import clip
    from trainers.coop import PromptLearner
    from trainers.common.prompt_text import PromptTextEncoder

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device(device)
    model = open_clip.create_model("RN50", pretrained=None).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    text = clip.TextEncoder(model)
    learner = PromptLearner(text, classnames(n_classes), n_ctx=16).to(device)
    encoder = PromptTextEncoder(text, learner.tokenized_prompts, *VARIANTS[variant])
    optim = torch.optim.SGD(learner.parameters(), lr=0.002, momentum=0.9)
    feats = torch.randn(32, model.visual.output_dim, device=device)
    labels = torch.randint(n_classes, (32,), device=device)

    frozen = {q.untyped_storage().data_ptr() for q in model.parameters()}
    held = {}

    def pack(t):  # unique storages, weights excluded: what the backward keeps alive
        storage = t.untyped_storage()
        if storage.data_ptr() not in frozen:
            held[storage.data_ptr()] = storage.nbytes()
        return t

    def step(count_held=False):
        optim.zero_grad(set_to_none=True)
        prefix, rest = learner.parts(encoder.length)
        if count_held:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                t = encoder(prefix, rest)[0]
        else:
            t = encoder(prefix, rest)[0]
        logits = 100.0 * F.normalize(feats, dim=-1) @ F.normalize(t, dim=-1).t()
        F.cross_entropy(logits, labels).backward()
        optim.step()

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_mb()
    step(count_held=True)
    times = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return {"variant": variant, "classes": n_classes, "positions": encoder.length,
            "step_s": sorted(times)[len(times) // 2], "held_mb": sum(held.values()) / 2 ** 20, "peak_mb": peak}


def run_child(args, variant, n_classes):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", variant, "--classes", str(n_classes),
           "--device", args.device, "--steps", str(args.steps), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"{variant} at {n_classes} classes failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--ref-classes", type=int, default=100,
                   help="classes at which the reference is measured (scaled linearly to --classes)")
    p.add_argument("--full", default="default",
                   help="variants also measured at --classes (comma-separated); the others are scaled")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=2, help="timed steps (median), after one untimed step")
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2)))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.classes, args.device, args.steps, args.threads)))
        return
    rows = []
    full = [v.strip() for v in args.full.split(",")]
    if args.ref_classes != args.classes:
        small = [run_child(args, variant, args.ref_classes) for variant in VARIANTS]
        for row in small:  # everything at the small size, measured side by side
            print(json.dumps(row), flush=True)
        rows += small
        scale = args.classes / args.ref_classes
        for row in small:
            if row["variant"] not in full:
                rows.append(dict(row, classes=args.classes, step_s=row["step_s"] * scale,
                                 held_mb=row["held_mb"] * scale, peak_mb=row["peak_mb"] * scale,
                                 variant=row["variant"] + " (scaled)"))
    for variant in VARIANTS if args.ref_classes == args.classes else full:
        rows.append(run_child(args, variant, args.classes))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nCoOp step, RN50 text tower (random weights), {args.device}, {args.threads} thread(s), batch 32, "
          "16 generic context tokens")
    w = max(len(r["variant"]) for r in rows)
    print(f"| {'variant':<{w}} | classes | positions | step (s) | held for backward (MB) | peak (MB) |")
    print(f"|{'-' * (w + 2)}|---------|-----------|----------|------------------------|-----------|")
    for r in rows:
        print(f"| {r['variant']:<{w}} | {r['classes']:>7} | {r['positions']:>9} | {r['step_s']:>8.2f} | "
              f"{r['held_mb']:>22,.0f} | {r['peak_mb']:>9,.0f} |")


if __name__ == "__main__":
    main()
