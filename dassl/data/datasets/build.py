"""The dataset registry (this project's: the same object `datasets/` registers into) and builder."""
import datasets as _datasets
from engine.registry import DATASET_REGISTRY

__all__ = ["DATASET_REGISTRY", "build_dataset"]


def build_dataset(cfg):
    """`DATASET.NAME` -> the dataset object."""
    return _datasets.build_dataset(cfg)
