"""Caltech101: `<root>/caltech-101/101_ObjectCategories/<class>/*.jpg`, split `split_zhou_Caltech101.json`."""
from engine.registry import DATASET_REGISTRY

from .base import SplitJsonDataset, read_and_split_data

# Not object classes: the clutter folder and a duplicate of Faces with easier crops.
IGNORED = ("BACKGROUND_Google", "Faces_easy")
# CoOp's prompt-friendly names for four plural or capitalised folder names.
NEW_CNAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@DATASET_REGISTRY.register()
class Caltech101(SplitJsonDataset):
    stem = "caltech101"
    folder = "caltech-101"
    image_folder = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    anchor = "caltech101"
    layout = """
        caltech-101/
          101_ObjectCategories/
            accordion/image_0001.jpg ...
            airplanes/image_0001.jpg ...
            ... (102 folders; BACKGROUND_Google and Faces_easy are not used)
          split_zhou_Caltech101.json   (CoOp's split; a random 50/20/30 split is made if absent)
    """

    def generate_split(self):
        return read_and_split_data(self.image_dir, ignored=IGNORED, new_cnames=NEW_CNAMES)
