"""Shared fixtures."""
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
