"""One R-AMT training step on ViT-B/16: this framework's way against the naive way.

    python benchmarks/masktuning_step.py [--batch 2] [--threads 2] [--classes 10] [--device cuda] [--repeat 3]

Both compute the GDR gradient of every mask score for the same batch, masks and uniform draws:

  ours    one encoder with masks attached (trainers/common/masks.py); the teacher = the same encoder
          with masks off, under no_grad; ONE student forward; the CE and KL gradients as one
          batched backward pass over two stacked logit cotangents ("ours-2vjp": two backward
          passes over the retained graph instead). "ours (store teacher)": MASK.TEACHER store,
          the teacher's features read from the feature store (fp16, encoded beforehand, not
          timed), so the step has no teacher pass at all. "ours (amp)": the batched step with
          both forwards under autocast (bf16 on the CPU, fp16 on CUDA); its gradients are
          compared with the fp32 ones (relative error, share of equal keep/drop decisions).
  naive   what the original implementation runs: a second fp32 copy of the encoder as the
          teacher, in the graph and with gradients on its weights; loss_b.backward(retain_graph)
          then loss_a.backward(), cloning the KL gradients in between.

The ViT-B/16 architecture (open_clip, OpenAI layout) gets random weights: no download. Some
masks are switched to 0 first, so that student and teacher differ and the KL gradient is not
zero. The script asserts that both of ours give the naive gradients, and prints the time and
the peak memory of each step (CPU: Linux VmHWM, reset before each, with glibc's mmap threshold
fixed so that freed blocks go back to the system; CUDA: peak allocated device memory), then the
size of a ViT-B/16 AMT checkpoint: bit-packed masks against fp32 scores (and the Adam state the
original also saves). A couple of minutes on a CPU.
"""
import argparse
import copy
import gc
import io
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainers.common.masks import MaskSet, gdr_gradient  # noqa: E402
from trainers.masktuning import kl_soft_target, logit_cotangents, mask_gradients  # noqa: E402


def vit_b16_visual():
    import open_clip
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    cfg = open_clip.get_model_config("ViT-B-16")
    vision = CLIPVisionCfg(**cfg["vision_cfg"])
    visual = _build_vision_tower(cfg["embed_dim"], vision, quick_gelu=True).eval()
    for p in visual.parameters():
        p.requires_grad_(False)
    return visual


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # MiB
    return float("nan")


def reset_peak():
    """Reset the process's peak RSS (Linux); returns the current RSS in MiB."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status("VmRSS")


def measure(fn, device):
    if device.type == "cuda":
        gc.collect()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
    else:
        base = reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _status("VmHWM")
    return out, seconds, cpu, peak - base


def main(argv=None):
    if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ and argv is None:
        # glibc keeps freed memory of earlier steps (its mmap threshold grows after a free), so
        # a later step would look free; a fixed threshold returns large blocks to the system.
        os.execve(sys.executable, [sys.executable] + sys.argv,
                  dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20)))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--masked", type=float, default=0.03, help="fraction of mask entries set to 0 first")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=3, help="steps timed per variant; the fastest is reported")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print("Building ViT-B/16 (random weights) ...", flush=True)
    visual = vit_b16_visual().to(device)
    text = F.normalize(torch.randn(args.classes, visual.output_dim), dim=-1).to(device)
    scale = 100.0
    images = torch.randn(args.batch, 3, 224, 224).to(device)
    labels = torch.randint(args.classes, (args.batch,)).to(device)
    pristine = copy.deepcopy(visual)  # template for the naive teacher, made before masking

    masks = MaskSet.attach(visual, mask_mlp=False)
    scores = masks.scores()
    with torch.no_grad():
        for s in scores:
            s.masked_fill_(torch.rand_like(s) < args.masked, 0.0)
    us = [torch.rand_like(s) for s in scores]
    print(f"{len(scores)} mask tensors, {masks.num_entries():,} entries; batch {args.batch}, "
          f"{args.classes} classes, lambda {args.lam}, {torch.get_num_threads()} threads", flush=True)

    def logits_of(encoder, x):
        return scale * F.normalize(encoder(x).float(), dim=-1) @ text.t()

    with torch.no_grad(), masks.off(), parametrize.cached():  # what the feature store holds
        stored = visual(images).to(torch.float16)

    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def ours(batched, store=False, amp=False):
        def step():
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                if store:
                    teacher = scale * F.normalize(stored.float(), dim=-1) @ text.t()
                else:
                    with torch.no_grad(), masks.off(), parametrize.cached():
                        teacher = logits_of(visual, images)
                with parametrize.cached():
                    logits = logits_of(visual, images)
            _, c_ce, _, c_kl = logit_cotangents(logits, labels, teacher)
            g_ce, g_kl = mask_gradients(logits, scores, c_ce, c_kl, batched=batched)
            return [gdr_gradient(a, b, args.lam, u) for a, b, u in zip(g_ce, g_kl, us)], g_ce, g_kl
        return step

    def naive():
        teacher_encoder = copy.deepcopy(pristine)
        for q in teacher_encoder.parameters():  # the original never freezes its teacher
            q.requires_grad_(True)
        logits = logits_of(visual, images)
        teacher = logits_of(teacher_encoder, images)
        loss_a = F.cross_entropy(logits, labels)
        loss_b = kl_soft_target(logits, teacher)
        for s in scores:
            s.grad = None
        loss_b.backward(retain_graph=True)
        g_kl = [s.grad.clone() for s in scores]
        for s in scores:
            s.grad = None
        loss_a.backward()
        g_ce = [s.grad.clone() for s in scores]
        for s in scores:
            s.grad = None
        out = [gdr_gradient(a, b, args.lam, u) for a, b, u in zip(g_ce, g_kl, us)]
        del teacher_encoder
        return out, g_ce, g_kl

    with torch.no_grad():  # warm-up (lazy initialisation), not timed
        logits_of(visual, images)
    rows = []
    results = {}
    for name, fn in (("naive (reference)", naive), ("ours (batched VJP)", ours(True)),
                     ("ours (two VJPs)", ours(False)), ("ours (store teacher)", ours(True, store=True)),
                     ("ours (amp)", ours(True, amp=True))):
        print(f"Running {name} ...", flush=True)
        runs = [measure(fn, device) for _ in range(args.repeat)]  # the best of a few: less load noise
        out, peak = runs[0][0], runs[0][3]
        seconds, cpu = min(r[1] for r in runs), min(r[2] for r in runs)
        del runs
        results[name] = out
        rows.append((name, seconds, cpu, peak))

    ref_final, ref_ce, ref_kl = results["naive (reference)"]
    assert any(g.abs().max() > 0 for g in ref_kl), "the KL gradient is zero: nothing to compare"
    for name in ("ours (batched VJP)", "ours (two VJPs)"):
        final, g_ce, g_kl = results[name]
        for a, b, label in ((g_ce, ref_ce, "CE"), (g_kl, ref_kl, "KL")):
            for x, y, n in zip(a, b, masks.names):
                tol = 1e-4 * float(y.abs().max()) + 1e-12
                assert torch.allclose(x, y, rtol=1e-3, atol=tol), (name, label, n, float((x - y).abs().max()), tol)
        # 1[P > U] is a step: where P and U nearly tie, rounding-level differences in the
        # gradients may flip it. Every other element must agree.
        flipped = total = 0
        for x, y, a, b, u, n in zip(final, ref_final, ref_ce, ref_kl, us, masks.names):
            p_ref = (torch.sign(a) * (a + b) / (a.abs() + b.abs() + 1e-8) + 1) / 2
            differ = ~torch.isclose(x, y, rtol=1e-3, atol=1e-4 * float(y.abs().max()) + 1e-12)
            assert bool(((p_ref - u).abs()[differ] < 1e-3).all()), (name, "GDR", n)
            flipped += int(differ.sum())
            total += differ.numel()
        print(f"{name}: CE and KL gradients equal the naive ones (rtol 1e-3); GDR gradients too, except "
              f"{flipped} of {total:,} elements whose keep/drop draw ties within 1e-3 (|P - U| < 1e-3)")
    final, g_ce, g_kl = results["ours (store teacher)"]
    for x, y, n in zip(g_ce, ref_ce, masks.names):
        assert torch.allclose(x, y, rtol=1e-3, atol=1e-4 * float(y.abs().max()) + 1e-12), ("store", "CE", n)
    kl_err = max(float((x - y).abs().max() / (y.abs().max() + 1e-30)) for x, y in zip(g_kl, ref_kl))
    kept = sum(int(((x != 0) == (y != 0)).sum()) for x, y in zip(final, ref_final))
    print(f"ours (store teacher): CE gradients equal the naive ones; KL gradients differ by at most "
          f"{kl_err:.2e} of their largest element (the teacher's features rounded to fp16); "
          f"{100.0 * kept / total:.4f}% of keep/drop decisions as the naive step")
    final, g_ce, g_kl = results["ours (amp)"]
    errs = [max(float((x - y).abs().max() / (y.abs().max() + 1e-30)) for x, y in zip(a, b))
            for a, b in ((g_ce, ref_ce), (g_kl, ref_kl))]
    kept = sum(int(((x != 0) == (y != 0)).sum()) for x, y in zip(final, ref_final))
    print(f"ours (amp, {str(amp_dtype).replace('torch.', '')} autocast): CE / KL gradients differ from fp32 by at most "
          f"{errs[0]:.2e} / {errs[1]:.2e} of their largest element; {100.0 * kept / total:.4f}% of keep/drop "
          f"decisions as the naive step")

    memory = "peak CUDA (MiB)" if device.type == "cuda" else "peak RSS (MiB)"
    print(f"\n{'step':22s} {'wall s':>8s} {'CPU s':>8s} {memory:>15s}")
    for name, seconds, cpu, peak in rows:
        print(f"{name:22s} {seconds:8.2f} {cpu:8.2f} {peak:15.0f}")
    print("(peak memory: growth over the memory in use before the step; the three gradient lists each "
          "step returns take 331 MiB of it)")

    def size(obj):
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.tell() / 2**20

    packed = size({"state_dict": masks.packed()})
    real = size({"state_dict": masks.state_dict()})
    adam = size({"state_dict": masks.state_dict(),
                 "optimizer": {"exp_avg": [torch.zeros_like(s) for s in scores],
                               "exp_avg_sq": [torch.zeros_like(s) for s in scores]}})
    print(f"\nViT-B/16 AMT checkpoint ({masks.num_entries():,} masks): bit-packed {packed:.2f} MiB, "
          f"fp32 scores {real:.1f} MiB, fp32 scores + Adam moments {adam:.1f} MiB")


if __name__ == "__main__":
    main()
