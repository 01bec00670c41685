"""FGVC-Aircraft: `<root>/fgvc_aircraft/images/<id>.jpg` (the `data/` folder of fgvc-aircraft-2013b,
renamed). No split JSON: the official `images_variant_{train,val,test}.txt` are the split."""
import os

from engine.errors import DatasetError
from engine.registry import DATASET_REGISTRY

from .base import Datum, SplitJsonDataset, read_lines


@DATASET_REGISTRY.register()
class FGVCAircraft(SplitJsonDataset):
    stem = "fgvc_aircraft"
    template = "a photo of a {}, a type of aircraft."
    folder = "fgvc_aircraft"
    image_folder = "images"
    split_file = ""  # the official lists are read every time, as in CoOp
    anchor = "fgvcaircraft"
    layout = """
        fgvc_aircraft/   (fgvc-aircraft-2013b/data/, renamed)
          images/0034309.jpg ...
          variants.txt                     (one variant per line; label = line number - 1)
          images_variant_train.txt, images_variant_val.txt, images_variant_test.txt
    """

    def generate_split(self):
        classnames = [line for _, line in read_lines(os.path.join(self.dataset_dir, "variants.txt"))]
        cname2lab = {c: i for i, c in enumerate(classnames)}
        return tuple(self.read_data(cname2lab, f"images_variant_{s}.txt") for s in ("train", "val", "test"))

    def read_data(self, cname2lab, filename):
        """Lines '<image id> <variant name, may contain spaces>'."""
        path = os.path.join(self.dataset_dir, filename)
        items = []
        for lineno, line in read_lines(path):
            imid, _, classname = line.partition(" ")
            if classname not in cname2lab:
                raise DatasetError(f"{path}:{lineno}: variant {classname!r} is not in variants.txt")
            items.append(Datum(impath=os.path.join(self.image_dir, imid + ".jpg"), label=cname2lab[classname],
                               classname=classname))
        return items
