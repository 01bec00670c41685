"""scripts/all_methods.sh offline with no local backbone: the first sweep that cannot load the
weights stops the comparison (no download tried again for each run and method), and the
script's own failure summary is the last thing it prints."""
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_unloadable_weights_stop_the_comparison_with_its_summary(tmp_path):
    from synthetic.layouts import write_eurosat

    data = tmp_path / "data"
    write_eurosat(str(data), per_class=6)
    env = dict(os.environ, DATA=str(data), DATASETS="eurosat", SHOTS="1", SEEDS="1 2",
               METHODS="ZeroshotCLIP TaskRes CoOp", OUTPUT=str(tmp_path / "out"),
               CLIP_CACHE_DIR=str(tmp_path / "no-clip"), HF_HOME=str(tmp_path / "hf"),
               HF_HUB_CACHE=str(tmp_path / "hf" / "hub"), HF_HUB_OFFLINE="1",
               # the legacy URL through a proxy that refuses at once: offline, without a network
               https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    env.pop("BACKBONE", None)
    proc = subprocess.run(["bash", "scripts/all_methods.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 1
    # one try for the zero-shot evaluation, one for TaskRes's first run; its second seed and CoOp never start
    assert proc.stderr.count("Could not get the CLIP weights for 'RN50'") == 2
    assert "1 more run(s) on it not started" in proc.stderr
    assert "=== eurosat: CoOp" not in proc.stdout
    assert not os.path.exists(tmp_path / "out" / "eurosat" / "TaskRes" / "adam_lr2e-3_B256_ep100_1shots"
                              / "base_regular_alpha0.5" / "seed2")
    last = proc.stderr.strip().splitlines()[-2:]
    assert last[0].startswith("error: stopped at eurosat/TaskRes: its weights cannot be loaded")
    assert last[1] == "error: 2 part(s) failed: eurosat/ZeroshotCLIP eurosat/TaskRes (rerun to resume)"
