"""Prompt templates used by the reference TaskRes / CoOp code: one custom template per dataset,
and the 7 ImageNet templates selected by CLIP's authors."""

CUSTOM_TEMPLATES = {
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


def custom_template(dataset_name):
    # Datasets outside the reference table fall back to CLIP's generic prompt.
    return CUSTOM_TEMPLATES.get(dataset_name, "a photo of a {}.")
