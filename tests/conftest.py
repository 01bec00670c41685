"""Session-wide fixtures shared by the test suite."""
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
