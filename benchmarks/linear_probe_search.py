"""The linear probe's C search per run: fits in the features' coordinates (the search before
ROW_SPACE) against fits in the row space of the training features (the default now), and with
WARM_START (an option, not the reference).

    python benchmarks/linear_probe_search.py [--dims 1024 128] [--shots 1 2 4 8 16] [--classes 10]

Synthetic features shaped like CLIP's on a few-shot split (overlapping class clusters, D = 1024
as RN50's, 128 as the tiny CLIP's), min(K, 4) validation images per class as the runs sample
them; every search runs lpclip's protocol (7-point grid, 8 bisection steps, fits cached per C)
with `trainers.linear_probe.search_c` and `LogisticProblem`, the trainer's own pieces. For each
(D, shots) it asserts that the row-space search chose the same C, scored the same validation
accuracies and predicts the same test labels as the full-space one; warm starts are reported
with whether they kept the chosen C. Last line: total full-space seconds / total row-space
seconds over all cases.
"""
import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainers.linear_probe import C_GRID, LogisticProblem, search_c  # noqa: E402


def features(seed, per_class, d, k):
    means = torch.randn(k, d, generator=torch.Generator().manual_seed(99)) * 0.3
    y = torch.arange(k).repeat_interleave(per_class)
    return means[y] + 2.0 * torch.randn(len(y), d, generator=torch.Generator().manual_seed(seed)), y


def one_search(X, y, Xv, yv, k, row_space, warm):
    problem = LogisticProblem(X, y, k, row_space=row_space)
    fits = {}

    def score(c):
        key = round(math.log10(c), 9)
        if key not in fits:
            x0 = None
            if warm and fits:
                near = fits[min(fits, key=lambda f: abs(f - key))][3]
                x0 = near if problem.loss_grad(near, c)[0] < math.log(k) else None
            fits[key] = problem.fit(c, x0=x0)
        W, b = fits[key][:2]
        return 100.0 * ((Xv @ W.t() + b).argmax(-1) == yv).float().mean().item()

    start = time.perf_counter()
    c, trace = search_c(score, C_GRID, 8)
    seconds = time.perf_counter() - start
    W, b = fits[round(math.log10(c), 9)][:2]
    return {"C": c, "trace": trace, "W": W, "b": b, "s": seconds, "iters": sum(f[2] for f in fits.values())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[1024, 128])
    p.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--classes", type=int, default=10)
    args = p.parse_args(argv)
    k = args.classes
    LogisticProblem(*features(0, 2, 8, 2), 2).fit(1.0)  # imports SciPy outside the timings
    total = {"full": 0.0, "row": 0.0, "warm": 0.0}
    print(f"{'D':>5} {'shots':>5} {'N':>5} | {'full s':>7} {'row s':>7} {'warm s':>7} | iterations full/row/warm | C")
    for d in args.dims:
        for shots in args.shots:
            X, y = features(1, shots, d, k)
            Xv, yv = features(2, min(shots, 4), d, k)
            Xt, _ = features(3, 20, d, k)
            full = one_search(X, y, Xv, yv, k, row_space=False, warm=False)
            row = one_search(X, y, Xv, yv, k, row_space=True, warm=False)
            warm = one_search(X, y, Xv, yv, k, row_space=True, warm=True)
            assert row["C"] == full["C"] and row["trace"] == full["trace"], (d, shots)
            assert torch.equal((Xt @ row["W"].t() + row["b"]).argmax(-1), (Xt @ full["W"].t() + full["b"]).argmax(-1))
            for name, r in (("full", full), ("row", row), ("warm", warm)):
                total[name] += r["s"]
            kept = "same C" if warm["C"] == full["C"] else f"warm start chose {warm['C']:.4g}"
            print(f"{d:>5} {shots:>5} {len(y):>5} | {full['s']:7.2f} {row['s']:7.2f} {warm['s']:7.2f} | "
                  f"{full['iters']}/{row['iters']}/{warm['iters']} | {full['C']:.4g} ({kept})", flush=True)
    print(f"total: full {total['full']:.1f} s, row space {total['row']:.1f} s, row space + warm starts "
          f"{total['warm']:.1f} s (same C and test predictions as full space: every case)")
    print(f"linear-probe search speedup = {total['full'] / total['row']:.2f}")


if __name__ == "__main__":
    main()
