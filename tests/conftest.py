"""Fixtures shared by the test suite."""
import json
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="session")
def synthetic_datasets_root(tmp_path_factory):
    """All 15 datasets written once per session in their real layouts (synthetic.layouts
    defaults: a few classes, 10-20 images per class; the ImageNet family with a 1000-class
    classnames.txt and images for a few classes). Treat it as read-only: copy it before
    changing anything (tests/test_datasets_all.py:private_copy hard-links the images)."""
    from synthetic.layouts import WRITERS, write_dataset

    root = tmp_path_factory.mktemp("synthetic_datasets")
    for name in WRITERS:
        write_dataset(name, root)
    return root


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory):
    """Pretrained tiny ViT CLIP as an OpenAI-format state-dict file (str path).

    Pretrained on `synthetic.tiny_clip.PRETRAIN_CLASSNAMES` (the synthetic EuroSAT, DTD and
    OxfordPets classes). Built once and cached across sessions under $TINY_CLIP_CACHE or
    ~/.cache/taskres-tests, keyed by the recipe; falls back to a session folder if that cache
    cannot be written.
    """
    from synthetic.tiny_clip import pretrained_tiny_clip_path

    try:
        return pretrained_tiny_clip_path()
    except OSError:
        return pretrained_tiny_clip_path(cache_dir=str(tmp_path_factory.mktemp("tiny-clip")))


@pytest.fixture(scope="session")
def tiny_clip_rn_path(tmp_path_factory):
    """Randomly initialised tiny ResNet CLIP file (str path), for load-path tests."""
    from synthetic.tiny_clip import save_openai_checkpoint, tiny_clip_state_dict

    path = tmp_path_factory.mktemp("tiny-clip-rn") / "tiny-rn.pt"
    return save_openai_checkpoint(tiny_clip_state_dict("rn"), str(path))


# `-m MODULE` (the scripts' `python -m engine.describe` look-ups) runs the real interpreter. Any
# other call records its argv (one JSON list per line in $FAKE_CALLS) and, like a finished
# train.py run, writes log.txt and results.json into --output-dir.
FAKE_PYTHON = """#!{python}
import json, os, sys
args = sys.argv[1:]
if args[0] == "-m":
    os.execv(sys.executable, [sys.executable] + args)
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(args) + "\\n")
out = args[args.index("--output-dir") + 1]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "log.txt"), "a") as f:
    f.write("Finish training\\n=> result\\n* accuracy: 80.0%\\n")
tmp = os.path.join(out, "results.json.tmp")
with open(tmp, "w") as f:
    json.dump({{"accuracy": 80.0, "error": 20.0, "macro_f1": 79.0}}, f)
os.replace(tmp, os.path.join(out, "results.json"))
"""


@pytest.fixture
def fake(tmp_path):
    tmp_path = type(tmp_path)(os.path.realpath(tmp_path))  # the scripts see physical paths
    path = tmp_path / "fake_python"
    path.write_text(FAKE_PYTHON.format(python=sys.executable))
    path.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    calls = tmp_path / "calls.jsonl"

    def run(script, *args, cwd=None, **env_extra):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
               "PYTHON": str(path), "FAKE_CALLS": str(calls)}
        env.update({k: str(v) for k, v in env_extra.items()})
        return subprocess.run(["bash", script, *map(str, args)], cwd=cwd or str(tmp_path), env=env,
                              capture_output=True, text=True, timeout=60)

    def recorded():
        if not calls.exists():
            return []
        return [json.loads(line) for line in calls.read_text().splitlines()]

    return run, recorded, data, tmp_path
