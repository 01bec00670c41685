"""The demo, then the "Next" commands it prints, in order, as a new user runs them: each exits 0,
and analysis.compare and analysis.curves group the runs alike (the recipe sweep as one row, the
demo's 100-epoch 16-shot runs as another, the repeated 4-shot seed counted once)."""
import csv
import json
import os
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv):
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_the_demo_next_commands_run_in_sequence(tmp_path, tiny_clip_path):
    out = tmp_path / "demo"
    demo = run([sys.executable, "-m", "synthetic.demo", "--out", str(out)]).stdout
    lines = demo.splitlines()
    # per-seed numbers beside the mean
    accs = [json.load(open(out / "eurosat" / "TaskRes" / "adam_lr2e-3_B256_ep100_16shots" / "base_regular_alpha0.5"
                           / f"seed{s}" / "results.json"))["accuracy"] for s in (1, 2, 3)]
    per_seed = [line for line in lines if line.startswith("Per seed: ")]
    assert per_seed and per_seed[0].startswith(
        "Per seed: " + ", ".join(f"seed {s} {a:.2f}%" for s, a in zip((1, 2, 3), accs)))

    commands = lines[lines.index("Next, with the same data and tiny CLIP:") + 1:]
    commands = [shlex.split(c) for c in commands if c.startswith("  python ")]
    assert [c[1] if c[1] != "-m" else c[2] for c in commands] == ["train.py", "sweep.py", "analysis.compare"]
    for argv in commands[:2]:
        run([sys.executable] + argv[1:])
    table = tmp_path / "table.csv"
    compare = run([sys.executable] + commands[2][1:] + ["--csv", str(table)])
    assert "4 shots is already counted from" in compare.stderr and "one run per seed" in compare.stderr

    few_shot = [r for r in rows(table) if r["table"] == "few-shot" and r["dataset"] == "eurosat"
                and int(r["shots"]) > 0]
    by_method = {}
    for r in few_shot:
        by_method.setdefault(r["method"], {})[int(r["shots"])] = int(r["n"])
    backbone = f" [{os.path.basename(tiny_clip_path)}]"
    # the recipe sweep (100 epochs for 1-4 shots, 200 for 8 and 16) is one method; the 4-shot
    # seed 1 of the single run equals the sweep's and counts once
    assert by_method[f"TaskRes{backbone}"] == {1: 3, 2: 3, 4: 3, 8: 3, 16: 3}
    # the demo's own runs: 100 epochs at 16 shots, not the recipe's 200
    assert by_method[f"TaskRes{backbone} [OPTIM.MAX_EPOCH=100]"] == {16: 3}
    assert len(by_method) == 2

    curves_csv = tmp_path / "curves.csv"
    run([sys.executable, "-m", "analysis.curves", str(out), "--out", str(tmp_path / "curves.png"),
         "--csv", str(curves_csv)])
    curve_cells = {(r["method"], int(r["shots"]), r["mean"]) for r in rows(curves_csv) if r["dataset"] == "eurosat"}
    assert curve_cells == {(r["method"], int(r["shots"]), r["mean"]) for r in few_shot}
