"""After model loading, torch's CPU generator is where the reference's model build leaves it.

The reference (`load_clip_to_cpu` -> `clip.build_model`) builds a randomly initialised CLIP on the
CPU and copies the weights in; those draws shift every later seeded draw of a run. The reference
here is that path: this project's OpenAI-API `clip.build_model` on the file's state dict.
"""
import pytest
import torch

import clip as project_clip
from clip import clip as openai_clip
from engine import models
from engine.models import ModelCache, load_clip_model

CPU = torch.device("cpu")


def _reference_state(path, seed):
    torch.manual_seed(seed)
    openai_clip.build_model(project_clip.read_state_dict(path))
    return torch.get_rng_state()


def _state_after_load(path, seed, **kwargs):
    torch.manual_seed(seed)
    load_clip_model(path, CPU, "fp32", "fp32", **kwargs)
    return torch.get_rng_state()


@pytest.fixture(params=["vit", "rn"])
def clip_file(request, tiny_clip_path, tiny_clip_rn_path):
    return tiny_clip_path if request.param == "vit" else tiny_clip_rn_path


def test_fresh_load_leaves_the_reference_state(clip_file):
    torch.manual_seed(1)
    assert not torch.equal(torch.get_rng_state(), _reference_state(clip_file, 1))  # the build draws
    for seed in (1, 2):
        assert torch.equal(_state_after_load(clip_file, seed), _reference_state(clip_file, seed))


def test_shared_model_cache_leaves_the_reference_state(clip_file):
    cache = ModelCache()
    expected = _reference_state(clip_file, 3)
    for private in (False, False, True):  # the first run loads, the others reuse the sweep's model
        assert torch.equal(_state_after_load(clip_file, 3, cache=cache, private=private), expected)
    assert len(cache) == 1


def test_the_state_reached_is_remembered(clip_file, monkeypatch):
    _state_after_load(clip_file, 4)
    builds = []
    monkeypatch.setattr(project_clip, "build_random", lambda sig: builds.append(sig))
    assert torch.equal(_state_after_load(clip_file, 4), _reference_state(clip_file, 4))
    assert builds == []


def test_isolated_rng_leaves_the_generator_untouched(clip_file):
    torch.manual_seed(5)
    before = torch.get_rng_state()
    load_clip_model(clip_file, CPU, "fp32", "fp32", isolated_rng=True)
    assert torch.equal(torch.get_rng_state(), before)
    cache = ModelCache()
    for _ in range(2):
        torch.manual_seed(5)
        load_clip_model(clip_file, CPU, "fp32", "fp32", cache=cache, isolated_rng=True)
        assert torch.equal(torch.get_rng_state(), before)


def test_loading_itself_draws_nothing(clip_file, monkeypatch):
    # The replay is the only step that moves the generator: a cached model and a fresh load agree.
    monkeypatch.setattr(models, "advance_like_reference_build", lambda sig: None)
    assert torch.equal(_state_after_load(clip_file, 6), _state_after_load(clip_file, 6, cache=ModelCache()))
    torch.manual_seed(6)
    assert torch.equal(_state_after_load(clip_file, 6), torch.get_rng_state())


TINY_OPEN_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
                  "text_cfg": {"context_length": 77, "vocab_size": 1000, "width": 64, "heads": 1, "layers": 2}}


def test_open_clip_names_replay_their_architectures_init(monkeypatch):
    """An open_clip "model:pretrained" name: the reference path (`clip._download` converts it,
    `clip.build_model` builds open_clip's CLIP from the stored config) draws that config's init."""
    import open_clip
    from open_clip.model import CLIP as OpenClipCLIP

    import clip.model as clip_model

    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "tiny-test", TINY_OPEN_CLIP)
    trained = open_clip.create_model("tiny-test")  # stands for the downloaded weights
    monkeypatch.setattr(clip_model, "_load_open_clip", lambda *a: (trained, "open_clip:tiny-test:tag"))
    torch.manual_seed(7)
    OpenClipCLIP(**TINY_OPEN_CLIP, cast_dtype=torch.float16)
    expected = torch.get_rng_state()
    for cache in (None, ModelCache()):
        torch.manual_seed(7)
        model = load_clip_model("tiny-test:tag", CPU, "fp32", "fp32", cache=cache)
        assert model.arch_signature == ("open_clip", "tiny-test")
        assert torch.equal(torch.get_rng_state(), expected)


@pytest.mark.parametrize("isolated", [False, True])
def test_trainer_load_clip_follows_the_config_key(tiny_clip_rn_path, isolated):
    import types

    from engine.config import get_cfg_default
    from engine.trainer import Trainer

    cfg = get_cfg_default()
    assert cfg.MODEL.BACKBONE.ISOLATED_RNG is False  # the reference's behaviour by default
    cfg.MODEL.BACKBONE.NAME = tiny_clip_rn_path
    cfg.MODEL.BACKBONE.ISOLATED_RNG = isolated
    trainer = types.SimpleNamespace(cfg=cfg, prec="fp32", device=CPU, model_cache=None,
                                    reference_image_encoder_prec="fp32", _fit_input_size=lambda res: None)
    torch.manual_seed(8)
    untouched = torch.get_rng_state()
    Trainer.load_clip(trainer)
    expected = untouched if isolated else _reference_state(tiny_clip_rn_path, 8)
    assert torch.equal(torch.get_rng_state(), expected)
