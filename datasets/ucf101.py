"""UCF101 (middle frames): `<root>/ucf101/UCF-101-midframes/<Renamed_Action>/<video>.jpg`, split
`split_zhou_UCF101.json`; fallback from ucfTrainTestlist (split 1)."""
import os
import re

from engine.errors import DatasetError
from engine.registry import DATASET_REGISTRY

from .base import Datum, SplitJsonDataset, read_lines, split_trainval


def split_camel(action):
    """'ApplyEyeMakeup' -> 'Apply_Eye_Makeup' (class name and image folder name)."""
    return "_".join(re.findall("[A-Z][^A-Z]*", action))


@DATASET_REGISTRY.register()
class UCF101(SplitJsonDataset):
    stem = "ucf101"
    template = "a photo of a person doing {}."
    folder = "ucf101"
    image_folder = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    anchor = "ucf101"
    layout = """
        ucf101/
          UCF-101-midframes/
            Apply_Eye_Makeup/v_ApplyEyeMakeup_g01_c01.jpg ...
            ... (101 action folders, one middle frame per video)
          ucfTrainTestlist/classInd.txt, trainlist01.txt, testlist01.txt   (only for the fallback)
          split_zhou_UCF101.json   (CoOp's split; made from split 1, trainval 80/20, if absent)
    """

    def generate_split(self):
        lists = os.path.join(self.dataset_dir, "ucfTrainTestlist")
        cname2lab = {}
        for lineno, line in read_lines(os.path.join(lists, "classInd.txt")):
            fields = line.split(" ")
            if len(fields) != 2 or not fields[0].isdigit():
                raise DatasetError(f"{lists}/classInd.txt:{lineno}: expected '<index> <Action>', got {line!r}")
            cname2lab[fields[1]] = int(fields[0]) - 1
        trainval = self.read_data(cname2lab, os.path.join(lists, "trainlist01.txt"))
        test = self.read_data(cname2lab, os.path.join(lists, "testlist01.txt"))
        train, val = split_trainval(trainval)
        return train, val, test

    def read_data(self, cname2lab, path):
        """Lines 'Action/v_Action_g08_c01.avi[ <index>]'; the frame is the .avi name as .jpg."""
        items = []
        for lineno, line in read_lines(path):
            action, _, filename = line.split(" ")[0].partition("/")
            if action not in cname2lab:
                raise DatasetError(f"{path}:{lineno}: action {action!r} is not in classInd.txt")
            renamed = split_camel(action)
            items.append(Datum(impath=os.path.join(self.image_dir, renamed, filename.replace(".avi", ".jpg")),
                               label=cname2lab[action], classname=renamed))
        return items
