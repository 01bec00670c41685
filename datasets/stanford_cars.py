"""Stanford Cars: `<root>/stanford_cars/cars_{train,test}/*.jpg`, split `split_zhou_StanfordCars.json`
(paths relative to the dataset folder); fallback from the devkit .mat files."""
import os

from engine.errors import DatasetError
from engine.registry import DATASET_REGISTRY

from .base import Datum, SplitJsonDataset, split_trainval
from .matfiles import load_mat


def year_first(name):
    """'AM General Hummer SUV 2000' -> '2000 AM General Hummer SUV' (CoOp's class names)."""
    words = name.split(" ")
    return " ".join([words[-1]] + words[:-1])


@DATASET_REGISTRY.register()
class StanfordCars(SplitJsonDataset):
    stem = "stanford_cars"
    folder = "stanford_cars"
    split_file = "split_zhou_StanfordCars.json"
    paths_relative_to_dataset_dir = True
    required_folders = ("cars_train", "cars_test")
    anchor = "stanfordcars"
    layout = """
        stanford_cars/
          cars_train/00001.jpg ...   (not cars_train/cars_train/..., as some mirrors nest it)
          cars_test/00001.jpg ...
          devkit/cars_meta.mat, cars_train_annos.mat ...   (car_devkit.tgz)
          cars_test_annos_withlabels.mat
          split_zhou_StanfordCars.json   (CoOp's split; made from the .mat files, trainval 80/20, if absent)
    """

    def generate_split(self):
        devkit = os.path.join(self.dataset_dir, "devkit")
        meta = os.path.join(devkit, "cars_meta.mat")
        trainval = self.read_annotations("cars_train", os.path.join(devkit, "cars_train_annos.mat"), meta)
        test_annos = os.path.join(self.dataset_dir, "cars_test_annos_withlabels.mat")
        test = self.read_annotations("cars_test", test_annos, meta)
        train, val = split_trainval(trainval)
        return train, val, test

    def read_annotations(self, image_folder, anno_path, meta_path):
        """annotations[i] has `fname` and the 1-based `class`; names come from cars_meta.mat."""
        annos = load_mat(anno_path, "annotations")[0]
        names = [str(n[0]) for n in load_mat(meta_path, "class_names")[0]]
        if "class" not in (annos.dtype.names or ()):
            raise DatasetError(f"{anno_path} has no class labels; the test annotations must be "
                               "cars_test_annos_withlabels.mat, not devkit/cars_test_annos.mat")
        items = []
        for a in annos:
            label = int(a["class"][0, 0]) - 1
            if not 0 <= label < len(names):
                raise DatasetError(f"{anno_path}: class {label + 1} is not in {meta_path}")
            items.append(Datum(impath=os.path.join(self.dataset_dir, image_folder, str(a["fname"][0])),
                               label=label, classname=year_first(names[label])))
        return items
