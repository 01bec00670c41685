"""ImageNet variants for domain generalization, evaluated with an ImageNet-trained model.

V2 and Sketch have all 1000 classes (`class_indices_1k = None`). A and R have 200: their
labels are positions in their sorted 200 wnids, and `class_indices_1k[label]` is the row of a
1000-class ImageNet classifier, so a trainer slices `weights[class_indices_1k]` ([1000, D] ->
[200, D]). The index lists are integers into the 1000 classes, not class-name look-ups: CLIP's
1000 names hold duplicates ("missile" at 657 and 744, "sunglasses" at 836 and 837).

Each variant needs ImageNet's classnames.txt in its own folder. NUM_SHOTS is ignored: these are
test sets (train_x = test = all images, no val), as in CoOp.
"""
import os

from engine.registry import DATASET_REGISTRY

from .imagenet import ImageNet, ImageNetFamily

# The 200 ImageNet-1k classes of ImageNet-R and ImageNet-A, ascending.
IMAGENET_R_INDICES = [
    1, 2, 4, 6, 8, 9, 11, 13, 22, 23, 26, 29, 31, 39, 47, 63, 71, 76, 79, 84, 90, 94, 96, 97, 99, 100, 105, 107,
    113, 122, 125, 130, 132, 144, 145, 147, 148, 150, 151, 155, 160, 161, 162, 163, 171, 172, 178, 187, 195, 199,
    203, 207, 208, 219, 231, 232, 234, 235, 242, 245, 247, 250, 251, 254, 259, 260, 263, 265, 267, 269, 276, 277,
    281, 288, 289, 291, 292, 293, 296, 299, 301, 308, 309, 310, 311, 314, 315, 319, 323, 327, 330, 334, 335, 337,
    338, 340, 341, 344, 347, 353, 355, 361, 362, 365, 366, 367, 368, 372, 388, 390, 393, 397, 401, 407, 413, 414,
    425, 428, 430, 435, 437, 441, 447, 448, 457, 462, 463, 469, 470, 471, 472, 476, 483, 487, 515, 546, 555, 558,
    570, 579, 583, 587, 593, 594, 596, 609, 613, 617, 621, 629, 637, 657, 658, 701, 717, 724, 763, 768, 774, 776,
    779, 780, 787, 805, 812, 815, 820, 824, 833, 847, 852, 866, 875, 883, 889, 895, 907, 928, 931, 932, 933, 934,
    936, 937, 943, 945, 947, 948, 949, 951, 953, 954, 957, 963, 965, 967, 980, 981, 983, 988,
]
IMAGENET_A_INDICES = [
    6, 11, 13, 15, 17, 22, 23, 27, 30, 37, 39, 42, 47, 50, 57, 70, 71, 76, 79, 89, 90, 94, 96, 97, 99, 105, 107,
    108, 110, 113, 124, 125, 130, 132, 143, 144, 150, 151, 207, 234, 235, 254, 277, 283, 287, 291, 295, 298, 301,
    306, 307, 308, 309, 310, 311, 313, 314, 315, 317, 319, 323, 324, 326, 327, 330, 334, 335, 336, 347, 361, 363,
    372, 378, 386, 397, 400, 401, 402, 404, 407, 411, 416, 417, 420, 425, 428, 430, 437, 438, 445, 456, 457, 461,
    462, 470, 472, 483, 486, 488, 492, 496, 514, 516, 528, 530, 539, 542, 543, 549, 552, 557, 561, 562, 569, 572,
    573, 575, 579, 589, 606, 607, 609, 614, 626, 627, 640, 641, 642, 643, 658, 668, 677, 682, 684, 687, 701, 704,
    719, 736, 746, 749, 752, 758, 763, 765, 768, 773, 774, 776, 779, 780, 786, 792, 797, 802, 803, 804, 813, 815,
    820, 823, 831, 833, 835, 839, 845, 847, 850, 859, 862, 870, 879, 880, 888, 890, 897, 900, 907, 913, 924, 932,
    933, 934, 937, 943, 945, 947, 951, 954, 956, 957, 959, 971, 972, 980, 981, 984, 986, 987, 988,
]


class ImageNetVariant(ImageNetFamily):
    template = ImageNet.template  # evaluated with ImageNet-trained models, so prompted as ImageNet
    evaluation_only = True  # no few-shot subsets, nothing to export
    subset = None  # 1k indices of the variant's classes; None = all of classnames.txt
    numbered_folders = False  # V2: folder "i" holds class i

    def __init__(self, cfg):
        self.locate(cfg)
        self.require_dirs(self.dataset_dir, self.image_dir)
        entries = self.read_classnames()
        rows = list(range(len(entries))) if self.subset is None else list(self.subset)
        if rows and rows[-1] >= len(entries):
            raise self.error(f"{os.path.join(self.dataset_dir, 'classnames.txt')} has {len(entries)} lines; "
                             "it must be ImageNet's full 1000-line file")
        names = [entries[i][1] for i in rows]
        if self.numbered_folders:
            folder_to_label = {str(i): label for label, i in enumerate(rows)}
        else:
            folder_to_label = {entries[i][0]: label for label, i in enumerate(rows)}
        groups = self.class_folders(self.image_dir, folder_to_label)
        self.report_missing(groups, names, self.image_dir)
        data = self.to_items(groups, names)
        self.finish(cfg, data, data, names, self.subset)


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetVariant):
    stem = "imagenetv2"
    display_name = "ImageNet-V2"
    folder = "imagenetv2"
    image_folder = "imagenetv2-matched-frequency-format-val"
    numbered_folders = True
    anchor = "imagenetv2"
    layout = """
        imagenetv2/
          imagenetv2-matched-frequency-format-val/
            0/<hash>.jpeg ...
            ... (folders 0..999 = ImageNet labels)
          classnames.txt   (ImageNet's, copied)
    """


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetVariant):
    stem = "imagenet_sketch"
    display_name = "ImageNet-Sketch"
    folder = "imagenet-sketch"
    image_folder = "images"
    anchor = "imagenetsketch"
    layout = """
        imagenet-sketch/
          images/n01440764/sketch_0.JPEG ...   (1000 wnid folders; the zip's sketch/ folder, renamed)
          classnames.txt   (ImageNet's, copied)
    """


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetVariant):
    stem = "imagenet_a"
    display_name = "ImageNet-A"
    folder = "imagenet-adversarial"
    image_folder = "imagenet-a"
    subset = IMAGENET_A_INDICES
    anchor = "imageneta"
    layout = """
        imagenet-adversarial/
          imagenet-a/n01498041/<name>.jpg ...
            ... (200 wnid folders; README.txt is skipped)
          classnames.txt   (ImageNet's full 1000-line file, copied)
    """


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetVariant):
    stem = "imagenet_r"
    display_name = "ImageNet-R"
    folder = "imagenet-rendition"
    image_folder = "imagenet-r"
    subset = IMAGENET_R_INDICES
    anchor = "imagenetr"
    layout = """
        imagenet-rendition/
          imagenet-r/n01443537/<name>.jpg ...
            ... (200 wnid folders; README.txt is skipped)
          classnames.txt   (ImageNet's full 1000-line file, copied)
    """
