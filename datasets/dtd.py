"""Describable Textures: `<root>/dtd/images/<category>/*.jpg`, split
`split_zhou_DescribableTextures.json` (CoOp's own 50/20/30 split, not DTD's folds)."""
from engine.registry import DATASET_REGISTRY

from .base import SplitJsonDataset, read_and_split_data


@DATASET_REGISTRY.register()
class DescribableTextures(SplitJsonDataset):
    stem = "dtd"
    display_name = "DTD"
    template = "{} texture."
    folder = "dtd"
    image_folder = "images"
    split_file = "split_zhou_DescribableTextures.json"
    anchor = "dtd"
    layout = """
        dtd/
          images/
            banded/banded_0002.jpg ...
            blotchy/blotchy_0003.jpg ...
            ... (47 category folders, from dtd-r1.0.1.tar.gz)
          split_zhou_DescribableTextures.json   (CoOp's split; a random 50/20/30 split is made if absent)
    """

    def generate_split(self):
        return read_and_split_data(self.image_dir)
