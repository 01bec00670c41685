"""Oxford Flowers 102: `<root>/oxford_flowers/jpg/image_%05d.jpg`, split
`split_zhou_OxfordFlowers.json`; fallback from `imagelabels.mat` + `cat_to_name.json`."""
import os
import random
from collections import defaultdict

from engine.errors import DatasetError
from engine.registry import DATASET_REGISTRY

from .base import Datum, SplitJsonDataset, read_json
from .matfiles import load_mat


@DATASET_REGISTRY.register()
class OxfordFlowers(SplitJsonDataset):
    stem = "oxford_flowers"
    display_name = "Flowers102"
    template = "a photo of a {}, a type of flower."
    folder = "oxford_flowers"
    image_folder = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    anchor = "oxfordflowers"
    layout = """
        oxford_flowers/
          jpg/image_00001.jpg ... image_08189.jpg   (102flowers.tgz)
          imagelabels.mat                            (1-based label per image)
          cat_to_name.json                           ({"1": "pink primrose", ...})
          split_zhou_OxfordFlowers.json   (CoOp's split; a random 50/20/30 split per class is made if absent)
    """

    def generate_split(self, p_trn=0.5, p_val=0.2):
        """imagelabels.mat gives the label of image_<i>; per label (first-appearance order) the
        images are shuffled and cut 50/20/30; the name is cat_to_name[str(label)]."""
        labels = load_mat(os.path.join(self.dataset_dir, "imagelabels.mat"), "labels").ravel()
        names_path = os.path.join(self.dataset_dir, "cat_to_name.json")
        if not os.path.isfile(names_path):
            raise DatasetError(f"class-name file not found: {names_path}")
        lab2cname = read_json(names_path, "Class-name file")
        tracker = defaultdict(list)
        for i, label in enumerate(labels):
            tracker[int(label)].append(os.path.join(self.image_dir, f"image_{i + 1:05d}.jpg"))
        print(f"Splitting data into {p_trn:.0%} train, {p_val:.0%} val, and {1 - p_trn - p_val:.0%} test")
        train, val, test = [], [], []
        for label, impaths in tracker.items():
            if str(label) not in lab2cname:
                raise DatasetError(f"{names_path} has no name for label {label}")
            random.shuffle(impaths)
            n_train, n_val = round(len(impaths) * p_trn), round(len(impaths) * p_val)
            if min(n_train, n_val, len(impaths) - n_train - n_val) <= 0:
                raise DatasetError(f"label {label} has {len(impaths)} images: too few for a 50/20/30 split")
            cname = lab2cname[str(label)]
            for part, ims in ((train, impaths[:n_train]), (val, impaths[n_train:n_train + n_val]),
                              (test, impaths[n_train + n_val:])):
                part.extend(Datum(impath=im, label=label - 1, classname=cname) for im in ims)
        return train, val, test
