"""What other code reads about a dataset: stem, figure name and prompt template, by DATASET.NAME or stem."""
import os

import pytest
import yaml

import datasets
from datasets.base import SplitJsonDataset
from engine.errors import UserError
from engine.registry import DATASET_REGISTRY
from trainers import templates

# The reference TaskRes/CoOp CUSTOM_TEMPLATES: the prompts every published number was made with.
REFERENCE_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}


def test_custom_templates_are_the_reference_prompts():
    assert {n: templates.custom_template(n) for n in REFERENCE_TEMPLATES} == REFERENCE_TEMPLATES
    own = {"ImageFolder": "a photo of a {}.", "ImageList": "a photo of a {}."}  # own data: CLIP's generic prompt
    assert templates.CUSTOM_TEMPLATES == {**REFERENCE_TEMPLATES, **own}
    # Only DATASET.NAMEs are looked up, as in the reference table; anything else is CLIP's generic prompt.
    assert templates.custom_template("eurosat") == templates.custom_template("NoSuchSet") == "a photo of a {}."


def test_a_run_s_template_key_replaces_the_dataset_s_own():
    from engine.config import get_cfg_default
    from engine.errors import ConfigError

    cfg = get_cfg_default()
    cfg.DATASET.NAME = "EuroSAT"
    assert templates.custom_template(cfg) == REFERENCE_TEMPLATES["EuroSAT"]  # "" = the reference prompt
    cfg.DATASET.TEMPLATE = "a satellite image of {}."
    assert templates.custom_template(cfg) == "a satellite image of {}."
    cfg.DATASET.TEMPLATE = "a satellite image."
    with pytest.raises(ConfigError, match="must hold one {}"):
        templates.custom_template(cfg)


def test_every_dataset_config_names_a_dataset_with_that_stem():
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "datasets")
    stems = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml"))
    for stem in stems:
        with open(os.path.join(folder, stem + ".yaml"), encoding="utf-8") as f:
            name = yaml.safe_load(f)["DATASET"]["NAME"]
        assert datasets.info(name) == datasets.info(stem)
        assert (datasets.stem_of(name), datasets.name_of(stem)) == (stem, name)
        assert datasets.stem_of(stem) == stem and datasets.name_of(name) == name
    assert sorted(i.stem for i in datasets.all_info()) == stems


def test_unknown_names():
    assert datasets.find("NoSuchSet") is None
    assert (datasets.stem_of("NoSuchSet"), datasets.name_of("no_such_set")) == ("NoSuchSet", "no_such_set")
    with pytest.raises(UserError, match="Unknown dataset 'eurosat_rgb'.*Available: Caltech101"):
        datasets.info("eurosat_rgb")


def test_display_names_default_to_the_registered_name():
    assert datasets.info("oxford_flowers").display_name == "Flowers102"
    assert datasets.info("EuroSAT").display_name == "EuroSAT"


def test_imagenet_variants_use_imagenets_template():
    for name in ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"):
        assert datasets.info(name).template == datasets.info("ImageNet").template


@pytest.fixture
def registered():
    """Registers classes for one test and removes them afterwards."""
    added = []

    def register(cls):
        added.append(cls.__name__)
        return DATASET_REGISTRY.register(cls)

    yield register
    for name in added:
        DATASET_REGISTRY._items.pop(name)


def test_a_new_dataset_needs_no_table_elsewhere(registered):
    @registered
    class MySatellites(SplitJsonDataset):
        stem = "my_satellites"
        template = "a satellite photo of {}."

    @registered
    class Bare:  # a registered class that does not derive from DatasetBase
        pass

    assert datasets.info("my_satellites") == datasets.DatasetInfo(
        name="MySatellites", stem="my_satellites", display_name="MySatellites", template="a satellite photo of {}.")
    assert templates.custom_template("MySatellites") == "a satellite photo of {}."
    assert datasets.info("Bare") == datasets.DatasetInfo("Bare", "Bare", "Bare", "a photo of a {}.")
