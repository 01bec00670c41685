"""Where CLIP weights come from: the CLIP cache, open_clip's Hugging Face hub copy (the OpenAI URLs
answer 404 since October 2025), the legacy URL; and failing fast, with one whole message, offline.

No test touches the network: the hub is a local server (one that serves files like the hub, or
one that hangs up on every connection and counts them), and hub caches are temporary folders.
"""
import functools
import hashlib
import http.server
import os
import re
import socket
import threading
import time

import open_clip
import pytest
import torch
from huggingface_hub import constants as hf_constants
from safetensors.torch import save_file

import clip
from clip import weights
from engine.errors import WeightsError
from synthetic import tiny_clip as tc

NAME = "ViT-B/32"           # the OpenAI name the tests redirect to the tiny CLIP
REPO = "tiny/vit_clip.openai"  # its hub copy
COMMIT = "0123456789abcdef0123456789abcdef01234567"


# ---------------------------------------------------------------------------------------------
# a hub that hangs up, a hub that serves, a legacy URL server

class DeadHub:
    """Accepts each connection and closes it at once (a hub that never answers); counts them."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.connections = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # timeout: look at the stop flag again
                continue
            self.connections += 1
            conn.close()

    def stop(self):
        self._stop.set()
        self.thread.join()
        self.sock.close()


class _HubHandler(http.server.BaseHTTPRequestHandler):
    """/<org>/<repo>/resolve/<revision>/<file>, with the headers huggingface_hub reads."""

    def _file(self):
        m = re.fullmatch(r"/(.+)/resolve/[^/]+/([^/?]+)", self.path)
        return self.server.files.get((m.group(1), m.group(2))) if m else None

    def _head(self, data):
        self.server.requests.append((self.command, self.path))
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return True

    def do_HEAD(self):
        self._head(self._file())

    def do_GET(self):
        data = self._file()
        if self._head(data):
            self.wfile.write(data)

    def log_message(self, *args):
        pass


class _BusyHandler(http.server.BaseHTTPRequestHandler):
    """A hub (or proxy) answering 503 to everything."""

    def do_HEAD(self):
        self.server.requests.append((self.command, self.path))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


class LiveHub:
    def __init__(self, handler=_HubHandler):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.files, self.httpd.requests = {}, []
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def publish(self, repo, filename, path):
        with open(path, "rb") as f:
            self.httpd.files[(repo, filename)] = f.read()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def legacy(tmp_path):
    """A static server standing in for openaipublic.azureedge.net (404 for what it lacks)."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def point_hub_at(monkeypatch, url, cache):
    """huggingface_hub reads these at call time: endpoint, URL template, default cache, offline."""
    monkeypatch.setattr(hf_constants, "ENDPOINT", url)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def dead_hub(tmp_path, monkeypatch):
    hub = DeadHub()
    point_hub_at(monkeypatch, hub.url, tmp_path / "hf")
    yield hub
    hub.stop()


@pytest.fixture
def live_hub(tmp_path, monkeypatch):
    hub = LiveHub()
    point_hub_at(monkeypatch, hub.url, tmp_path / "hf")
    yield hub
    hub.stop()


# ---------------------------------------------------------------------------------------------
# the tiny CLIP in both formats

@pytest.fixture(scope="module")
def tiny_sd():
    return tc.tiny_clip_state_dict("vit", seed=5)


def write_hub_format(sd, path):
    """open_clip's hub copy of OpenAI weights: the fp32 state dict of open_clip's CLIP model
    (OpenAI's fp16 tensors upcast, no input_resolution/context_length/vocab_size scalars)."""
    model = clip.build_model(sd, "fp32")
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if str(path).endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return str(path)


def put_in_hub_cache(cache, repo, filename, src):
    """The Hugging Face cache layout hf_hub_download reads offline:
    models--org--name/{blobs/<etag>, snapshots/<commit>/<file> -> blob, refs/main}."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    data = open(src, "rb").read()
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    snap = folder / "snapshots" / COMMIT / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(blob, snap.parent), snap)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    return str(snap)


@pytest.fixture
def tiny_openai(tmp_path, tiny_sd, monkeypatch, legacy):
    """NAME redirected to the tiny CLIP: legacy URL on the local server (not published: 404),
    hub copy at REPO; CLIP cache at $CLIP_CACHE_DIR (empty). Returns (OpenAI-format file, sha)."""
    pt = tc.save_openai_checkpoint(tiny_sd, tmp_path / "tiny-openai.pt")
    sha = clip.sha256_file(pt)
    _, base = legacy
    monkeypatch.setitem(clip.MODEL_URLS, NAME, f"{base}/{sha}/ViT-B-32.pt")
    monkeypatch.setitem(weights.HUB_IDS, NAME, REPO)
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path / "clip-cache"))
    return pt, sha


def publish_legacy(legacy, pt, sha):
    root, _ = legacy
    (root / sha).mkdir()
    os.link(pt, root / sha / "ViT-B-32.pt")


def features(model):
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 224, 224, generator=gen)
    tokens = clip.tokenize(["a photo of a dog.", "a centered satellite photo of Forest.", "x"])
    with torch.no_grad():
        return clip.encode_image(model, images), model.encode_text(tokens)


# ---------------------------------------------------------------------------------------------
# 1. OpenAI names: cache, then hub, then legacy URL

@pytest.mark.parametrize("filename", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
def test_hub_copy_gives_the_same_model_as_the_openai_file(tmp_path, tiny_sd, tiny_openai, dead_hub,
                                                         filename, capsys):
    pt, sha = tiny_openai
    hub_file = write_hub_format(tiny_sd, tmp_path / filename)
    put_in_hub_cache(tmp_path / "hf", REPO, filename, hub_file)
    # It is the layout open_clip's own loader reads (strict, same keys as its CLIP model).
    reference = clip.build_model(tiny_sd, "fp32")
    open_clip.load_checkpoint(reference, hub_file, strict=True)

    from_hub = clip.load(NAME)
    out = capsys.readouterr().out
    assert f"Using the Hugging Face hub copy {REPO} of {NAME}" in out
    assert dead_hub.connections == 0  # found in the cache without asking the network
    from_file = clip.load(pt)
    for a, b in zip(features(from_hub), features(from_file)):
        assert torch.equal(a, b)
    assert all(torch.equal(p, q) for p, q in zip(from_hub.state_dict().values(),
                                                  from_file.state_dict().values()))
    # With CUDA's fp16 weights too (built here on the CPU): same tensors, same dtypes.
    half_hub = clip.build_model(clip.read_state_dict(hub_file), "fp16").state_dict()
    half_file = clip.build_model(clip.read_state_dict(pt), "fp16").state_dict()
    assert half_hub.keys() == half_file.keys()
    assert all(half_hub[k].dtype == half_file[k].dtype and torch.equal(half_hub[k], half_file[k])
               for k in half_hub)
    # The id names the file that gave the weights: the hub file's SHA-256, as if loaded by path.
    assert from_hub.backbone_id == clip.sha256_file(hub_file) == clip.load(hub_file).backbone_id
    assert from_file.backbone_id == sha


def test_verified_cache_file_comes_first(tmp_path, tiny_sd, tiny_openai, dead_hub, capsys):
    pt, sha = tiny_openai
    os.makedirs(tmp_path / "clip-cache")
    os.link(pt, tmp_path / "clip-cache" / "ViT-B-32.pt")
    put_in_hub_cache(tmp_path / "hf", REPO, "open_clip_model.safetensors",
                     write_hub_format(tiny_sd, tmp_path / "open_clip_model.safetensors"))
    model = clip.load(NAME)
    assert "Hugging Face" not in capsys.readouterr().out
    assert model.backbone_id == sha and dead_hub.connections == 0


def test_hub_download_through_open_clip_when_the_legacy_url_is_gone(tmp_path, tiny_sd, tiny_openai,
                                                                    live_hub, legacy, capsys):
    pt, sha = tiny_openai  # the legacy URL answers 404, as OpenAI's do now
    hub_file = write_hub_format(tiny_sd, tmp_path / "open_clip_model.safetensors")
    live_hub.publish(REPO, "open_clip_model.safetensors", hub_file)
    model = clip.load(NAME)
    assert "Using the Hugging Face hub copy" in capsys.readouterr().out
    assert model.backbone_id == clip.sha256_file(hub_file)
    assert any("open_clip_model.safetensors" in path for _, path in live_hub.httpd.requests)
    cached = list((tmp_path / "hf").rglob("open_clip_model.safetensors"))
    assert len(cached) == 1 and "models--tiny--vit_clip.openai" in str(cached[0])
    for a, b in zip(features(model), features(clip.load(pt))):
        assert torch.equal(a, b)


def test_legacy_url_is_the_last_resort(tmp_path, tiny_openai, dead_hub, legacy, capsys):
    pt, sha = tiny_openai
    publish_legacy(legacy, pt, sha)
    model = clip.load(NAME)
    assert model.backbone_id == sha
    assert clip.sha256_file(tmp_path / "clip-cache" / "ViT-B-32.pt") == sha
    assert dead_hub.connections <= 1  # one reachability probe, no retries


def test_stale_cache_file_is_ignored_with_a_warning(tmp_path, tiny_sd, tiny_openai, dead_hub):
    os.makedirs(tmp_path / "clip-cache")
    (tmp_path / "clip-cache" / "ViT-B-32.pt").write_bytes(b"truncated")
    hub_file = write_hub_format(tiny_sd, tmp_path / "open_clip_model.safetensors")
    put_in_hub_cache(tmp_path / "hf", REPO, "open_clip_model.safetensors", hub_file)
    with pytest.warns(UserWarning, match="Ignoring .*ViT-B-32.pt.*SHA-256"):
        model = clip.load(NAME)
    assert model.backbone_id == clip.sha256_file(hub_file)


def test_explicit_cache_dir_holds_both_kinds(tmp_path, tiny_sd, tiny_openai, dead_hub, capsys):
    """MODEL.BACKBONE.CACHE_DIR: OpenAI files directly, hub copies in the hub's layout."""
    folder = tmp_path / "backbones"
    hub_file = write_hub_format(tiny_sd, tmp_path / "open_clip_model.safetensors")
    put_in_hub_cache(folder, REPO, "open_clip_model.safetensors", hub_file)
    model = clip.load(NAME, cache_dir=str(folder))
    assert model.backbone_id == clip.sha256_file(hub_file) and dead_hub.connections == 0


def test_hf_hub_offline_is_respected(tmp_path, tiny_sd, tiny_openai, dead_hub, monkeypatch, capsys):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE is set"):
        clip.load(NAME)
    assert dead_hub.connections == 0
    hub_file = write_hub_format(tiny_sd, tmp_path / "open_clip_model.safetensors")
    put_in_hub_cache(tmp_path / "hf", REPO, "open_clip_model.safetensors", hub_file)
    assert clip.load(NAME).backbone_id == clip.sha256_file(hub_file)
    assert dead_hub.connections == 0


def test_offline_openai_name_gives_one_message_naming_every_source(tmp_path, tiny_openai, dead_hub,
                                                                   capfd):
    pt, sha = tiny_openai
    start = time.monotonic()
    with pytest.raises(WeightsError) as e:
        clip.load(NAME)
    elapsed = time.monotonic() - start
    msg = str(e.value)
    target = str(tmp_path / "clip-cache" / "ViT-B-32.pt")
    assert msg.startswith(f"Could not get the CLIP weights for {NAME!r}. Tried, in order:")
    assert f"1. the CLIP cache: {target} (no such file)" in msg
    assert f"2. the Hugging Face hub copy {REPO}" in msg and str(tmp_path / "hf") in msg
    assert "3. the legacy OpenAI URL" in msg and clip.MODEL_URLS[NAME] in msg and "HTTP 404" in msg
    assert f"copy ViT-B-32.pt (SHA-256 {sha}" in msg and f"to {target}" in msg
    assert f"hf download {REPO}" in msg and "models--tiny--vit_clip.openai" in msg
    assert "MODEL.BACKBONE.CACHE_DIR" in msg and "CLIP_CACHE_DIR" in msg and msg.endswith(".")
    assert dead_hub.connections <= 1 and elapsed < 10
    captured = capfd.readouterr()
    assert "Retry" not in captured.out + captured.err
    assert not os.listdir(tmp_path / "clip-cache")  # no partial download left behind


# ---------------------------------------------------------------------------------------------
# 2. open_clip `model:pretrained` names offline

def test_open_clip_tag_offline_fails_fast_with_a_whole_message(tmp_path, dead_hub, capfd):
    name = "ViT-B-32:laion2b_s34b_b79k"
    repo = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    start = time.monotonic()
    with pytest.raises(WeightsError) as e:
        clip.load(name)
    elapsed = time.monotonic() - start
    msg = str(e.value)
    assert dead_hub.connections <= 1 and elapsed < 10  # no retry loop (it used to be ~50 s)
    assert msg.startswith(f"Could not get open_clip weights {name!r}: not in the Hugging Face "
                          f"cache {tmp_path / 'hf'}, and the hub cannot be reached (")
    assert f"hf download {repo}" in msg and f"models--{repo.replace('/', '--')}" in msg
    assert "ViT-B-32:/path/to/open_clip_model.safetensors" in msg
    assert msg.endswith("MODEL.BACKBONE.CACHE_DIR sets the Hugging Face cache folder.")
    captured = capfd.readouterr()
    assert "Retry" not in captured.out + captured.err
    assert "Failed to download" not in captured.err  # open_clip's own copy of the error


def test_open_clip_tag_with_hf_hub_offline_makes_no_connection(dead_hub, monkeypatch, capfd):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError, match="and HF_HUB_OFFLINE is set. To fix it"):
        clip.load("ViT-B-16:laion2b_s34b_b88k")
    assert dead_hub.connections == 0


def test_hub_answering_503_is_not_retried(tmp_path, monkeypatch):
    hub = LiveHub(_BusyHandler)
    point_hub_at(monkeypatch, hub.url, tmp_path / "hf")
    try:
        with pytest.raises(WeightsError, match=r"the hub cannot be reached \(HTTP 503\)"):
            clip.load("ViT-B-32:laion2b_s34b_b79k")
        assert len(hub.httpd.requests) == 1
    finally:
        hub.stop()


def test_hf_hub_name_offline_fails_fast(dead_hub, capfd):
    with pytest.raises(WeightsError) as e:
        clip.load("hf-hub:timm/ViT-B-16-SigLIP")
    assert dead_hub.connections <= 1
    assert "`hf download timm/ViT-B-16-SigLIP` and copy the folder models--timm--ViT-B-16-SigLIP" \
        in str(e.value)


TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


@pytest.fixture
def tiny_open_clip_tag(tmp_path, monkeypatch):
    """A registered open_clip model 'TinyCLIP' with a tag 'tinytag' whose weights sit in REPO."""
    from open_clip import factory, pretrained
    monkeypatch.setitem(factory._MODEL_CONFIGS, "TinyCLIP", TINY_OPEN_CLIP)
    monkeypatch.setitem(pretrained._PRETRAINED, "TinyCLIP",
                        {"tinytag": pretrained._pcfg(hf_hub="tiny/open-clip-tag/")})
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**TINY_OPEN_CLIP)
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, str(path)


def test_open_clip_tag_from_the_cache_needs_no_network(tmp_path, tiny_open_clip_tag, dead_hub,
                                                       capsys):
    reference, path = tiny_open_clip_tag
    put_in_hub_cache(tmp_path / "hf", "tiny/open-clip-tag", "open_clip_model.safetensors", path)
    model = clip.load("TinyCLIP:tinytag")
    assert dead_hub.connections == 0
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 reference.state_dict().values()))
    assert model.backbone_id == "open_clip:TinyCLIP:tinytag"


def test_open_clip_tag_downloads_when_the_hub_answers(tmp_path, tiny_open_clip_tag, live_hub,
                                                      capsys):
    reference, path = tiny_open_clip_tag
    live_hub.publish("tiny/open-clip-tag", "open_clip_model.safetensors", path)
    model = clip.load("TinyCLIP:tinytag")
    assert torch.equal(model.visual.conv1.weight, reference.visual.conv1.weight)
    assert list((tmp_path / "hf").rglob("open_clip_model.safetensors"))
