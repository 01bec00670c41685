"""EuroSAT (RGB): `<root>/eurosat/2750/<Class>/*.jpg`, split `split_zhou_EuroSAT.json`."""
from engine.registry import DATASET_REGISTRY

from .base import SplitJsonDataset, read_and_split_data

# CoOp's prompt-friendly names for the folder names.
NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@DATASET_REGISTRY.register()
class EuroSAT(SplitJsonDataset):
    stem = "eurosat"
    template = "a centered satellite photo of {}."
    folder = "eurosat"
    image_folder = "2750"
    split_file = "split_zhou_EuroSAT.json"
    anchor = "eurosat"
    layout = """
        eurosat/
          2750/
            AnnualCrop/AnnualCrop_1.jpg ...
            Forest/Forest_1.jpg ...
            ... (10 class folders, from EuroSAT.zip)
          split_zhou_EuroSAT.json   (CoOp's split; a random 50/20/30 split is made if absent)
    """

    def generate_split(self):
        return read_and_split_data(self.image_dir, new_cnames=NEW_CNAMES)
