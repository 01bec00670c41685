"""Prompt templates used by the reference TaskRes / CoOp code: one custom template per dataset
(the dataset class's `template`, see datasets/catalog.py), and the 7 ImageNet templates selected
by CLIP's authors."""
from datasets import DatasetBase, all_info, check_template, info
from engine.registry import DATASET_REGISTRY

# DATASET.NAME -> template of the datasets registered when this module is imported; kept for
# code that reads the table (custom_template also sees datasets registered later).
CUSTOM_TEMPLATES = {i.name: i.template for i in all_info()}
GENERIC_TEMPLATE = DatasetBase.template  # CLIP's generic prompt

# Entries 73, 7, 44, 69, 35, 67, 64 of CLIP's 80 ImageNet templates. A tuple, so that no caller
# can grow it in place (the reference appends to the shared list and drifts on repeated calls).
IMAGENET_TEMPLATES_SELECT = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def dataset_name(dataset):
    """DATASET.NAME of a run's config, or `dataset` itself (a name)."""
    return dataset.DATASET.NAME if hasattr(dataset, "DATASET") else dataset


def custom_template(dataset):
    """The dataset's single prompt template. `dataset`: a run's config, whose DATASET.TEMPLATE
    (when set: own data, or another prompt on purpose) replaces the dataset's own; or a
    DATASET.NAME. Datasets outside the registry fall back to CLIP's generic prompt."""
    template = dataset.DATASET.TEMPLATE if hasattr(dataset, "DATASET") else ""
    if template:
        return check_template(template)
    name = dataset_name(dataset)
    return info(name).template if name in DATASET_REGISTRY else GENERIC_TEMPLATE
