"""Food-101: `<root>/food-101/images/<class>/*.jpg`, split `split_zhou_Food101.json` (CoOp's own
50/20/30 split, not the official train/test lists in meta/)."""
from engine.registry import DATASET_REGISTRY

from .base import SplitJsonDataset, read_and_split_data


@DATASET_REGISTRY.register()
class Food101(SplitJsonDataset):
    stem = "food101"
    template = "a photo of {}, a type of food."
    folder = "food-101"
    image_folder = "images"
    split_file = "split_zhou_Food101.json"
    anchor = "food101"
    layout = """
        food-101/
          images/
            apple_pie/1005649.jpg ...
            baby_back_ribs/1005293.jpg ...
            ... (101 class folders, from food-101.tar.gz)
          split_zhou_Food101.json   (CoOp's split; a random 50/20/30 split is made if absent)
    """

    def generate_split(self):
        return read_and_split_data(self.image_dir)
