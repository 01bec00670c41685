"""study.py run: a Slurm backend without Slurm stops instead of running the study here, and runs
held by another live process count as busy, not failed."""
import json
import os
import socket
import subprocess
import sys

import yaml

import study
from studies.plan import plan_study
from studies.spec import load_study


def write_study(path, output, **fields):
    data = {"name": "tiny", "root": str(path.parent), "output": str(output), "datasets": ["eurosat"],
            "shots": [2], "seeds": [1, 2], "methods": ["TaskRes"]}
    data.update(fields)
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_slurm_backend_without_sbatch_stops_and_names_the_local_ways(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no sbatch, no srun
    path = write_study(tmp_path / "s.yaml", tmp_path / "out")
    assert study.main(["run", path, "--backend", "slurm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sbatch" in err[0] and "--cluster local" in err[0] and "--backend local" in err[0]
    assert not os.path.exists(tmp_path / "out")  # nothing ran, nothing was submitted


def test_runs_held_by_a_live_process_are_busy_not_failed(tmp_path, capsys):
    path = write_study(tmp_path / "s.yaml", tmp_path / "out")
    runs, _ = plan_study(load_study(path))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        for run in runs:  # what a second `study.py run` writes while it runs them
            os.makedirs(run.out)
            with open(os.path.join(run.out, ".study.lock"), "w") as f:
                json.dump({"host": socket.gethostname(), "pid": holder.pid, "job": "", "since": ""}, f)
        assert study.main(["run", path]) == 0
    finally:
        holder.kill()
        holder.wait()
    out = capsys.readouterr().out
    bars = [line for line in out.splitlines() if line.startswith("[study] [")]
    assert bars[-1].split("|")[0].rstrip().endswith("0/2 done, 0 failed, 2 busy (run by another process)")
    assert "0 done, 2 running, 0 failed, 0 pending" in out
    assert not any(os.path.exists(os.path.join(r.out, "results.json")) for r in runs)
