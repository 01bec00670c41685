"""Dassl's data package: DataManager, DatasetWrapper, and (in submodules) datasets, transforms
and samplers."""
from .data_manager import DataManager, DatasetWrapper, build_data_loader
from .datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset

__all__ = ["DATASET_REGISTRY", "DataManager", "DatasetBase", "DatasetWrapper", "Datum", "build_data_loader",
           "build_dataset"]
