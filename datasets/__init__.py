"""Datasets in CoOp's on-disk layouts, registered under their reference names, and your own
images (custom.py: ImageFolder, ImageList).

Importing this package registers every dataset (the registry key is the class name, e.g.
`EuroSAT`, as in `DATASET.NAME`). `info(name)` gives a dataset's stem, figure name and prompt
template by DATASET.NAME or configs/datasets stem (catalog.py).
"""
from engine.registry import DATASET_REGISTRY

from . import (  # noqa: F401  (registration)
    caltech101, custom, dtd, eurosat, fgvc_aircraft, food101, imagenet, imagenet_variants, oxford_flowers, oxford_pets,
    stanford_cars, sun397, ucf101,
)
from .base import Datum, DatasetBase  # noqa: F401
from .catalog import DatasetInfo, all_info, check_template, find, info, name_of, stem_of  # noqa: F401


def build_dataset(cfg):
    """`DATASET.NAME` -> the dataset object, as Dassl's build_dataset."""
    cls = DATASET_REGISTRY.get(cfg.DATASET.NAME)
    if cfg.DATASET.TEMPLATE:
        check_template(cfg.DATASET.TEMPLATE)
    if cfg.VERBOSE:
        print(f"Loading dataset: {cfg.DATASET.NAME}")
    return cls(cfg)
