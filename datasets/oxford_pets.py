"""Oxford-IIIT Pets: `<root>/oxford_pets/images/*.jpg` + `annotations/{trainval,test}.txt`,
split `split_zhou_OxfordPets.json`."""
import os

from engine.errors import DatasetError
from engine.registry import DATASET_REGISTRY

from .base import Datum, SplitJsonDataset, split_trainval


@DATASET_REGISTRY.register()
class OxfordPets(SplitJsonDataset):
    stem = "oxford_pets"
    template = "a photo of a {}, a type of pet."
    folder = "oxford_pets"
    image_folder = "images"
    split_file = "split_zhou_OxfordPets.json"
    anchor = "oxfordpets"
    layout = """
        oxford_pets/
          images/Abyssinian_1.jpg ... american_bulldog_10.jpg ...   (images.tar.gz)
          annotations/trainval.txt, test.txt ...                   (annotations.tar.gz)
          split_zhou_OxfordPets.json   (CoOp's split; made from trainval.txt 80/20 + test.txt if absent)
    """

    def generate_split(self):
        trainval = self.read_annotations("trainval.txt")
        test = self.read_annotations("test.txt")
        train, val = split_trainval(trainval)
        return train, val, test

    def read_annotations(self, filename):
        """Lines "<image name> <class id, 1-based> <species> <breed id>"; the class name is the
        image name without its trailing _<n>, lower-cased (Abyssinian_12 -> abyssinian)."""
        path = os.path.join(self.dataset_dir, "annotations", filename)
        if not os.path.isfile(path):
            raise DatasetError(f"annotation file not found: {path}")
        items = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                fields = line.split()
                if len(fields) != 4 or not fields[1].isdigit():
                    raise DatasetError(
                        f"{path}:{lineno}: expected '<image name> <class id> <species> <breed id>', got {line!r}")
                imname, class_id = fields[0], int(fields[1])
                breed = "_".join(imname.split("_")[:-1]).lower()
                items.append(Datum(impath=os.path.join(self.image_dir, imname + ".jpg"), label=class_id - 1,
                                   classname=breed))
        return items
