"""SUN397: `<root>/sun397/SUN397/<letter>/<class>[/<sub>]/*.jpg`, split `split_zhou_SUN397.json`;
fallback from Partitions.zip (`ClassName.txt`, `Training_01.txt`, `Testing_01.txt`)."""
import os

from engine.errors import DatasetError
from engine.registry import DATASET_REGISTRY

from .base import Datum, SplitJsonDataset, read_lines, split_trainval


def sun_classname(class_path):
    """'a/apartment_building/outdoor' -> 'outdoor apartment_building': the letter folder is
    dropped and the rest reversed, so that qualifiers such as indoor/outdoor come first."""
    return " ".join(class_path.split("/")[1:][::-1])


@DATASET_REGISTRY.register()
class SUN397(SplitJsonDataset):
    stem = "sun397"
    folder = "sun397"
    image_folder = "SUN397"
    split_file = "split_zhou_SUN397.json"
    anchor = "sun397"
    layout = """
        sun397/
          SUN397/a/abbey/sun_aaalbzqrimafwbiv.jpg ...
          SUN397/a/apartment_building/outdoor/sun_aaaulhwrhqgejnyt.jpg ...   (SUN397.tar.gz)
          ClassName.txt, Training_01.txt, Testing_01.txt   (Partitions.zip)
          split_zhou_SUN397.json   (CoOp's split; made from partition 1, trainval 80/20, if absent)
    """

    def generate_split(self):
        lines = read_lines(os.path.join(self.dataset_dir, "ClassName.txt"))
        cname2lab = {line.lstrip("/"): i for i, (_, line) in enumerate(lines)}
        trainval = self.read_data(cname2lab, "Training_01.txt")
        test = self.read_data(cname2lab, "Testing_01.txt")
        train, val = split_trainval(trainval)
        return train, val, test

    def read_data(self, cname2lab, filename):
        """Lines '/a/abbey/sun_x.jpg'; the class is the folder path."""
        path = os.path.join(self.dataset_dir, filename)
        items = []
        for lineno, line in read_lines(path):
            imname = line.lstrip("/")
            class_path = os.path.dirname(imname)
            if class_path not in cname2lab:
                raise DatasetError(f"{path}:{lineno}: class {class_path!r} is not in ClassName.txt")
            items.append(Datum(impath=os.path.join(self.image_dir, imname), label=cname2lab[class_path],
                               classname=sun_classname(class_path)))
        return items
