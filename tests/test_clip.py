"""clip/: weights download and cache, loading every file kind through the real path, the
tokenizer, the split-open text encoder, and the pretrained tiny CLIP's zero-shot behaviour."""
import functools
import hashlib
import http.server
import os
import re
import socket
import threading

import open_clip
import pytest
import torch
import torch.nn.functional as F

import clip
from engine.errors import ConfigError, UserError, WeightsError
from synthetic import tiny_clip as tc


# ---------------------------------------------------------------------------------------------
# helpers

@pytest.fixture(scope="module")
def vit_sd():
    """Random tiny ViT CLIP state dict (cheap; the pretrained one is the session fixture)."""
    return tc.tiny_clip_state_dict("vit", seed=1)


def quiet_load(name, capsys=None, **kw):
    model = clip.load(name, **kw)
    if capsys is not None:
        capsys.readouterr()
    return model


class _Server:
    """Static files from `folder` on 127.0.0.1, in a thread."""

    def __init__(self, folder):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.requests = 0
        self.httpd.on_request = self._count
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _count(self):
        self.requests += 1

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def stop(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.on_request()
        super().do_GET()

    def log_message(self, *args):
        pass


def closed_port_url(path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"


@pytest.fixture
def served(tmp_path, vit_sd):
    """A server publishing a tiny CLIP under /<its sha256>/tiny.pt."""
    weights = tmp_path / "weights.pt"
    tc.save_openai_checkpoint(vit_sd, weights)
    sha = clip.sha256_file(weights)
    (tmp_path / "www" / sha).mkdir(parents=True)
    os.link(weights, tmp_path / "www" / sha / "tiny.pt")
    server = _Server(tmp_path / "www")
    yield server, sha, weights
    server.stop()


# ---------------------------------------------------------------------------------------------
# names and URLs

def test_available_models_and_urls():
    names = clip.available_models()
    assert names == ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16",
                     "ViT-L/14", "ViT-L/14@336px"]
    for name in names:
        url = clip.MODEL_URLS[name]
        assert re.fullmatch(r"https://openaipublic\.azureedge\.net/clip/models/[0-9a-f]{64}/[\w@-]+\.pt", url)
    assert clip.MODEL_URLS["RN50"].endswith(
        "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt")
    assert clip.MODEL_URLS["ViT-L/14@336px"].endswith("/ViT-L-14-336px.pt")


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("CLIP_CACHE_DIR", raising=False)
    assert clip.default_cache_dir() == os.path.expanduser("~/.cache/clip")
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path))
    assert clip.default_cache_dir() == str(tmp_path)


# ---------------------------------------------------------------------------------------------
# download and cache

def test_download_verifies_then_reuses_cache_offline(served, tmp_path):
    server, sha, weights = served
    root = tmp_path / "cache"
    url = server.url(f"{sha}/tiny.pt")
    path = clip.download(url, str(root))
    assert path == str(root / "tiny.pt")
    assert clip.sha256_file(path) == sha
    assert os.listdir(root) == ["tiny.pt"]  # no temp file left behind
    server.stop()
    assert clip.download(url, str(root)) == path  # served from the cache, no network


def test_download_bad_checksum_raises_and_keeps_nothing(served, tmp_path):
    server, sha, _ = served
    wrong = hashlib.sha256(b"something else").hexdigest()
    os.rename(tmp_path / "www" / sha, tmp_path / "www" / wrong)
    root = tmp_path / "cache"
    url = server.url(f"{wrong}/tiny.pt")
    with pytest.raises(WeightsError) as e:
        clip.download(url, str(root))
    assert url in str(e.value) and wrong in str(e.value) and sha in str(e.value)
    assert os.listdir(root) == []


def test_corrupt_cached_file_is_downloaded_again(served, tmp_path):
    server, sha, _ = served
    root = tmp_path / "cache"
    root.mkdir()
    (root / "tiny.pt").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="downloading it again"):
        path = clip.download(server.url(f"{sha}/tiny.pt"), str(root))
    assert clip.sha256_file(path) == sha and server.requests == 1


def test_offline_without_cache_says_where_to_put_the_file(tmp_path):
    sha = "0" * 64
    url = closed_port_url(f"{sha}/RN50.pt")
    root = tmp_path / "cache"
    with pytest.raises(WeightsError) as e:
        clip.download(url, str(root))
    msg = str(e.value)
    assert url in msg and str(root / "RN50.pt") in msg
    assert "MODEL.BACKBONE.CACHE_DIR" in msg and "CLIP_CACHE_DIR" in msg
    assert os.listdir(root) == []


def test_load_by_openai_name_downloads_into_cache_dir(served, tmp_path, monkeypatch, capsys):
    server, sha, weights = served
    monkeypatch.setitem(clip.MODEL_URLS, "ViT-B/32", server.url(f"{sha}/tiny.pt"))
    monkeypatch.setitem(clip.weights.HUB_IDS, "ViT-B/32", None)  # never the real hub copy
    model = clip.load("ViT-B/32", cache_dir=str(tmp_path / "c"))
    assert "Loading CLIP (backbone: ViT-B/32)" in capsys.readouterr().out
    assert model.backbone_id == sha and os.path.isfile(tmp_path / "c" / "tiny.pt")


def test_load_by_openai_name_offline(tmp_path, monkeypatch):
    url = closed_port_url(f"{'1' * 64}/RN50.pt")
    monkeypatch.setitem(clip.MODEL_URLS, "RN50", url)
    monkeypatch.setitem(clip.weights.HUB_IDS, "RN50", None)
    with pytest.raises(WeightsError, match=re.escape(str(tmp_path / "RN50.pt"))):
        clip.load("RN50", cache_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# loading files

def test_tiny_state_dict_uses_openai_names_and_dtypes(vit_sd):
    for key in ("visual.conv1.weight", "visual.proj", "text_projection", "positional_embedding",
                "token_embedding.weight", "ln_final.weight", "logit_scale",
                "transformer.resblocks.1.attn.in_proj_weight",
                "visual.transformer.resblocks.1.mlp.c_fc.weight"):
        assert key in vit_sd
    assert int(vit_sd["input_resolution"]) == 224 and int(vit_sd["context_length"]) == 77
    assert int(vit_sd["vocab_size"]) == 49408
    assert vit_sd["visual.conv1.weight"].dtype == torch.float16  # as OpenAI stores them
    assert vit_sd["ln_final.weight"].dtype == torch.float32


def test_load_vit_infers_architecture(tmp_path, vit_sd, capsys):
    path = tc.save_openai_checkpoint(vit_sd, tmp_path / "vit.pt")
    model = clip.load(path)
    assert f"Loading CLIP (backbone: {path})" in capsys.readouterr().out
    assert isinstance(model, open_clip.model.CLIP)
    assert model.input_resolution == 224 and model.embed_dim == 32
    assert model.backbone_id == clip.sha256_file(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    feats = clip.encode_image(model, torch.randn(2, 3, 224, 224, dtype=torch.float64))
    assert feats.shape == (2, 32) and feats.dtype == torch.float32


def test_load_rn_infers_architecture(tiny_clip_rn_path, capsys):
    assert "visual.attnpool.positional_embedding" in clip.read_state_dict(tiny_clip_rn_path)
    model = quiet_load(tiny_clip_rn_path, capsys)
    assert type(model.visual).__name__ == "ModifiedResNet"
    assert model.input_resolution == 224 and model.embed_dim == 32
    assert clip.encode_image(model, torch.zeros(1, 3, 224, 224)).shape == (1, 32)


def test_every_file_kind_loads_the_same_weights(tmp_path, vit_sd, monkeypatch, capsys):
    plain = tc.save_openai_checkpoint(vit_sd, tmp_path / "plain.pt")
    script = tc.save_openai_checkpoint(vit_sd, tmp_path / "script.pt", torchscript=True)
    wrapped = tmp_path / "wrapped.pth.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in vit_sd.items()}, "epoch": 3}, wrapped)

    jit_loaded = []
    real_jit_load = torch.jit.load

    def spy(path, *a, **kw):
        out = real_jit_load(path, *a, **kw)
        jit_loaded.append(os.path.basename(path))
        return out

    monkeypatch.setattr(torch.jit, "load", spy)
    tokens = clip.tokenize(["a photo of a dog.", "Forest"])
    outs = []
    for path in (plain, script, str(wrapped)):
        model = quiet_load(path, capsys)
        outs.append(model.encode_text(tokens))
    assert jit_loaded == ["script.pt"]  # the archive went through the TorchScript path
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_fp32_file_keeps_its_precision(tmp_path, capsys):
    sd = {k: v.float() if v.is_floating_point() else v for k, v in tc.tiny_clip_state_dict().items()}
    path = tc.save_openai_checkpoint(sd, tmp_path / "fp32.pt")
    model = quiet_load(path, capsys)
    assert torch.equal(model.visual.conv1.weight, sd["visual.conv1.weight"])


def test_precision_options(tmp_path, vit_sd, capsys):
    path = tc.save_openai_checkpoint(vit_sd, tmp_path / "vit.pt")
    model = clip.load(path, precision="fp16")  # CPU: falls back to fp32 with a note
    assert "fp32" in capsys.readouterr().out
    assert clip.visual_dtype(model) == torch.float32
    with pytest.raises(ConfigError, match="fp16"):
        clip.load(path, precision="half")


def test_unknown_name_suggests_and_explains(capsys):
    with pytest.raises(UserError) as e:
        clip.load("ViT-B/23")
    msg = str(e.value)
    assert "Did you mean 'ViT-B/32'" in msg and "RN50" in msg and "model:pretrained" in msg
    with pytest.raises(WeightsError, match="not found"):
        clip.load("/no/such/dir/RN50.pt")


def test_unknown_open_clip_names_fail_fast(capsys):
    with pytest.raises(UserError, match="pretrained tag 'nosuchtag'.*laion2b_s34b_b79k"):
        clip.load("ViT-B-32:nosuchtag")
    with pytest.raises(UserError, match="open_clip model 'NoSuchArch'"):
        clip.load("NoSuchArch:openai")


def test_unreadable_files_are_weights_errors(tmp_path, vit_sd, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(WeightsError, match=re.escape(str(garbage))):
        clip.load(str(garbage))
    good = tc.save_openai_checkpoint(vit_sd, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(open(good, "rb").read()[:5000])
    with pytest.raises(WeightsError, match=re.escape(str(truncated))):
        clip.load(str(truncated))
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(WeightsError, match="missing keys"):
        clip.load(str(other))


def test_checkpoint_writes_are_atomic(tmp_path, vit_sd):
    tc.save_openai_checkpoint(vit_sd, tmp_path / "a.pt", torchscript=True)
    tc.save_openai_checkpoint(vit_sd, tmp_path / "a.pt")  # replaces the archive
    assert os.listdir(tmp_path) == ["a.pt"]
    assert set(torch.load(tmp_path / "a.pt", weights_only=True)) == set(vit_sd)


# ---------------------------------------------------------------------------------------------
# tokenizer and text encoder

def test_tokenize_matches_openai_ids():
    tokens = clip.tokenize("a photo of a dog.")
    assert tokens.shape == (1, 77) and tokens.dtype == torch.long
    assert tokens[0, :8].tolist() == [49406, 320, 1125, 539, 320, 1929, 269, 49407]
    assert tokens[0, 8:].eq(0).all()
    assert torch.equal(clip.tokenize("A  Photo of a DOG."), tokens)  # cleaned and lowercased
    pets = clip.tokenize("american_pit_bull_terrier")[0]
    assert pets[:9].tolist() == [49406, 2151, 318, 7476, 318, 6029, 318, 14455, 49407]  # "_" = 318


def test_tokenize_overlong():
    text = "word " * 100
    with pytest.raises(UserError, match="context length"):
        clip.tokenize(text)
    tokens = clip.tokenize([text, "short"], truncate=True)
    assert tokens.shape == (2, 77) and tokens[0, -1] == 49407 and tokens[0].argmax() == 76


def test_text_encoder_equals_encode_text(vit_sd, tmp_path, capsys):
    model = quiet_load(tc.save_openai_checkpoint(vit_sd, tmp_path / "vit.pt"), capsys)
    enc = clip.TextEncoder(model)
    tokens = clip.tokenize(["a photo of a dog.", "a centered satellite photo of Forest.", "x"])
    assert torch.equal(enc.encode(tokens), model.encode_text(tokens))
    assert enc.dtype == torch.float32 and enc.attn_mask.shape == (77, 77)
    assert torch.isinf(enc.attn_mask[0, 1]) and enc.attn_mask[1, 0] == 0  # causal
    assert sum(p.numel() for p in enc.parameters()) > 0
    assert enc.token_embedding is model.token_embedding  # shared, not copied


def test_text_encoder_takes_learned_context(vit_sd, tmp_path, capsys):
    """CoOp-style: replace the "X X X X" placeholder embeddings with trainable vectors."""
    model = quiet_load(tc.save_openai_checkpoint(vit_sd, tmp_path / "vit.pt"), capsys)
    enc = clip.TextEncoder(model)
    tokens = clip.tokenize(["X X X X Forest.", "X X X X River."])
    ctx = torch.zeros(4, enc.token_embedding.embedding_dim, requires_grad=True)
    emb = enc.embed(tokens)
    prompts = torch.cat([emb[:, :1], ctx.expand(2, -1, -1), emb[:, 5:]], dim=1)
    out = enc(prompts, tokens)
    assert out.shape == (2, 32)
    out.sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0

    class Doubled(clip.TextEncoder):
        def project(self, x):
            return 2 * super().project(x)

    assert torch.allclose(Doubled(model).encode(tokens), 2 * enc.encode(tokens))


# ---------------------------------------------------------------------------------------------
# tiny CLIP pretraining

def test_pretraining_is_deterministic():
    sd = tc.tiny_clip_state_dict("vit", seed=2)
    names = tc.DTD_CLASSNAMES[:4]
    a = tc.pretrain_tiny_clip(sd, names, steps=2, seed=3)
    b = tc.pretrain_tiny_clip(sd, names, steps=2, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["visual.conv1.weight"], sd["visual.conv1.weight"])
    assert a["logit_scale"].exp().item() == pytest.approx(100.0)


@pytest.mark.slow
def test_pretrained_tiny_clip_zero_shot_is_half_right(tiny_clip_path, capsys):
    model = quiet_load(tiny_clip_path, capsys)
    names = tc.EUROSAT_CLASSNAMES
    x, y = tc.eval_images(names, 20, seed=2024)
    acc = tc.zero_shot_accuracy(model, names, "a centered satellite photo of {}.", x, y)
    assert 0.1 + 0.15 < acc < 0.95, acc  # chance is 0.1
    # The image features themselves separate the classes: nearest class mean from 8 shots.
    xs, ys = tc.eval_images(names, 8, seed=7)
    means = F.normalize(torch.stack([clip.encode_image(model, xs[ys == k]).mean(0)
                                     for k in range(len(names))]), dim=-1)
    feats = F.normalize(clip.encode_image(model, x), dim=-1)
    separable = (feats @ means.t()).argmax(-1).eq(y).float().mean().item()
    assert separable > max(0.8, acc + 0.15), (separable, acc)
