"""One CLIP-LoRA training step against one plain full fine-tuning step, on the RN50 and ViT-B/16
architectures.

    python benchmarks/clip_lora_step.py [--archs RN50 ViT-B-16] [--batch 32] [--classes 10] [--repeat 3]

Both steps do the same work as a CLIP-LoRA iteration: the class prompts ("a photo of a {}.") through
the text encoder, a batch of images through the image encoder, 100 * cosine logits, cross-entropy,
backward, one AdamW step (lr 2e-4, weight decay 1e-2).

  lora   LoRA (rank 2, alpha 1, dropout 0.25) on q, k, v of every attention layer of both
         encoders (RN50: the text encoder and the image encoder's attention pool), the rest frozen
         (trainers/common/lora.py); AdamW holds the LoRA matrices only.
  full   every CLIP parameter trained (BatchNorm in eval mode); AdamW over all of them.

The architectures get random weights from open_clip's builder (clip.build_random): no download.
The device is the engine's (CUDA when available, `--device cpu` to force). On CUDA the step runs
as the recipe does, under fp16 autocast with a loss scaler; on the CPU in fp32 (`--amp` for bf16
autocast). Printed per (architecture, variant): trainable parameters, the fastest of `--repeat`
steps (after one warm-up step), the memory a step adds at its peak above what is held before it
(activations, gradients) and the peak in all (with the weights and AdamW's state), then the
LoRA / full ratios. CUDA: allocated device memory; CPU: the process's resident memory (Linux),
its peak reset before each step.
"""
import argparse
import gc
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import clip  # noqa: E402
from benchmarks.masktuning_step import measure, reset_peak  # noqa: E402
from engine.config import get_cfg_default  # noqa: E402
from engine.trainer import select_device  # noqa: E402
from trainers.common.lora import QKVLoRA, attach_lora  # noqa: E402

OPEN_CLIP_NAMES = {"RN50": "RN50-quickgelu", "ViT-B-16": "ViT-B-16-quickgelu"}


def build(arch, device):
    model = clip.build_random(("open_clip", OPEN_CLIP_NAMES.get(arch, arch))).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def with_lora(model):
    text = clip.TextEncoder(model)
    layers = attach_lora(text.transformer, "text", lambda d: QKVLoRA(d, rank=2, alpha=1.0, dropout=0.25))
    layers.update(attach_lora(model.visual, "visual", lambda d: QKVLoRA(d, rank=2, alpha=1.0, dropout=0.25)))
    device = next(model.parameters()).device
    params = []
    for lora in layers.values():
        lora.to(device).train()  # dropout on; the frozen model stays in eval mode
        params += list(lora.parameters())
    return params


def full_params(model):
    params = [p for p in model.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
    return params


def make_step(model, params, tokens, images, labels, amp):
    device = images.device
    text = clip.TextEncoder(model)
    optim = torch.optim.AdamW(params, lr=2e-4, weight_decay=1e-2)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None

    def step():
        optim.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            t = F.normalize(text.encode(tokens).float(), dim=-1)
            f = F.normalize(model.encode_image(images).float(), dim=-1)
            loss = F.cross_entropy(100.0 * f @ t.t(), labels)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optim)
            scaler.update()
        else:
            loss.backward()
            optim.step()
        return float(loss.detach())
    return step


def run_variant(arch, variant, args, device):
    torch.manual_seed(0)
    model = build(arch, device)
    params = with_lora(model) if variant == "lora" else full_params(model)
    size = model.visual.image_size
    res = int(size[0] if isinstance(size, (tuple, list)) else size)
    tokens = clip.tokenize([f"a photo of a class {i}." for i in range(args.classes)]).to(device)
    images = torch.randn(args.batch, 3, res, res, device=device)
    labels = torch.randint(args.classes, (args.batch,), device=device)
    step = make_step(model, params, tokens, images, labels, args.amp)
    step()  # warm-up: allocator, optimizer state, kernels
    best, peak, total = None, 0.0, 0.0
    for _ in range(args.repeat):
        before = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else reset_peak()
        _, seconds, _, mem = measure(step, device)
        best = seconds if best is None else min(best, seconds)
        peak, total = max(peak, mem), max(total, before + mem)
    n = sum(p.numel() for p in params)
    del model, params, step
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return n, best, peak, total


def main(argv=None):
    if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ and argv is None:
        # As benchmarks/masktuning_step.py: freed large blocks go back to the system, so that the
        # peak resident memory of one step is not hidden by an earlier one.
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20)))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["RN50", "ViT-B-16"])
    p.add_argument("--batch", type=int, default=32, help="images per step (the recipe's 32)")
    p.add_argument("--classes", type=int, default=10, help="class prompts through the text encoder per step")
    p.add_argument("--repeat", type=int, default=3, help="timed steps per variant; the fastest is reported")
    p.add_argument("--device", default="", help="cuda / cpu (default: the engine's choice)")
    p.add_argument("--amp", action="store_true", help="autocast on the CPU too (bf16); always on for CUDA")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    device = torch.device(args.device) if args.device else select_device(get_cfg_default())
    args.amp = args.amp or device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device}, batch {args.batch}, {args.classes} classes, "
          f"{'autocast' if args.amp else 'fp32'}, {torch.get_num_threads()} threads", flush=True)
    rows = []
    for arch in args.archs:
        got = {}
        for variant in ("lora", "full"):
            got[variant] = run_variant(arch, variant, args, device)
            n, seconds, peak, total = got[variant]
            print(f"{arch:9s} {variant:5s} trainable {n:>12,}  step {seconds:8.3f} s  step memory {peak:9.1f} MiB  "
                  f"peak in all {total:9.1f} MiB", flush=True)
        (nl, tl, ml, al), (nf, tf, mf, af) = got["lora"], got["full"]
        rows.append(f"{arch:9s} lora/full: trainable {nl / nf:.2e}  time {tl / tf:.2f}x  step memory {ml / mf:.2f}x  "
                    f"peak in all {al / af:.2f}x")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
