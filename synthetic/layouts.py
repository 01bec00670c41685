"""Synthetic datasets written in the real on-disk layouts, with real-format annotation files and
CoOp-format split files, so the real loading code runs on them. `write_dataset(name, root)`
writes any of the 15 datasets registered under `name`.

Each image is drawn by `class_image(<the class name the dataset reports>)`, the names the tiny
test CLIP was pretrained on. Per class, the split file holds round(50%) train, round(20%) val
and the rest test (ordered as CoOp's files: grouped by class within each split). Every file is
written through a hidden temp file + rename; hidden names are also what a dataset's folder
listing skips, so an interrupted write never looks like an image. Existing files are
overwritten, nothing is deleted.
"""
import json
import os
import uuid

import numpy as np
from scipy.io import savemat

from datasets.eurosat import NEW_CNAMES as EUROSAT_CNAMES

from .images import class_image, save_image

EUROSAT_FOLDERS = tuple(EUROSAT_CNAMES)
DTD_CATEGORIES = ("banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked")
PETS_BREEDS = ("abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle",
               "bengal", "birman", "bombay")
# Cat image names are capitalised in the real dataset (Abyssinian_1.jpg), dog names are not.
PETS_CATS = ("abyssinian", "bengal", "birman", "bombay", "british_shorthair", "egyptian_mau", "maine_coon",
             "persian", "ragdoll", "russian_blue", "siamese", "sphynx")
PETS_DOGS = ("american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "boxer", "chihuahua",
             "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees", "havanese",
             "japanese_chin", "keeshond", "leonberger", "miniature_pinscher", "newfoundland", "pomeranian", "pug",
             "saint_bernard", "samoyed", "scottish_terrier", "shiba_inu", "staffordshire_bull_terrier",
             "wheaten_terrier", "yorkshire_terrier")

P_TRAIN, P_VAL = 0.5, 0.2


def write_eurosat(root, classes=EUROSAT_FOLDERS, per_class=20, with_split=True, seed=0):
    """`<root>/eurosat/2750/<Folder>/<Folder>_<i>.jpg` (+ split_zhou_EuroSAT.json)."""
    dataset_dir = os.path.join(root, "eurosat")
    groups = _write_class_folders(os.path.join(dataset_dir, "2750"), classes, per_class, seed,
                                  cname=lambda f: EUROSAT_CNAMES.get(f, f), stem=lambda f, i: f"{f}_{i}")
    if with_split:
        _write_split(os.path.join(dataset_dir, "split_zhou_EuroSAT.json"), groups, seed)
    return dataset_dir


def write_dtd(root, classes=DTD_CATEGORIES, per_class=20, with_split=True, seed=0):
    """`<root>/dtd/images/<category>/<category>_<iiii>.jpg` (+ split_zhou_DescribableTextures.json)."""
    dataset_dir = os.path.join(root, "dtd")
    groups = _write_class_folders(os.path.join(dataset_dir, "images"), classes, per_class, seed,
                                  cname=lambda c: c, stem=lambda c, i: f"{c}_{i:04d}")
    if with_split:
        _write_split(os.path.join(dataset_dir, "split_zhou_DescribableTextures.json"), groups, seed)
    return dataset_dir


def write_oxford_pets(root, classes=PETS_BREEDS, per_class=20, with_split=True, seed=0):
    """`<root>/oxford_pets/images/<Breed>_<i>.jpg`, `annotations/{trainval,test}.txt` (lines
    "<image name> <class id> <species 1=cat 2=dog> <breed id>"; class ids number the given
    breeds 1.. in alphabetical order) and, with `with_split`, split_zhou_OxfordPets.json. Per
    breed the train and val parts of the split make up trainval.txt, the test part test.txt."""
    dataset_dir = os.path.join(root, "oxford_pets")
    image_dir = os.path.join(dataset_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    breeds = sorted(b.lower() for b in classes)
    groups, trainval_lines, test_lines = [], [], []
    for label, breed in enumerate(breeds):
        cat = breed in PETS_CATS
        stem = "_".join(w.capitalize() for w in breed.split("_")) if cat else breed
        family = PETS_CATS if cat else PETS_DOGS
        breed_id = family.index(breed) + 1 if breed in family else label + 1
        names = [f"{stem}_{i}" for i in range(1, per_class + 1)]
        for name in names:
            _save_image_atomic(class_image(breed, rng), os.path.join(image_dir, name + ".jpg"))
        train, val, test = _split_indices(per_class, rng)
        line = "{} " + f"{label + 1} {1 if cat else 2} {breed_id}"
        trainval_lines += [line.format(names[i]) for i in sorted(train + val)]
        test_lines += [line.format(names[i]) for i in sorted(test)]
        groups.append((label, breed, [n + ".jpg" for n in names], (train, val, test)))
    _write_text_atomic(os.path.join(dataset_dir, "annotations", "trainval.txt"), "\n".join(trainval_lines) + "\n")
    _write_text_atomic(os.path.join(dataset_dir, "annotations", "test.txt"), "\n".join(test_lines) + "\n")
    if with_split:
        _write_split(os.path.join(dataset_dir, "split_zhou_OxfordPets.json"), groups, seed)
    return dataset_dir


# Folder name -> the class name CoOp reports (four renames; two folders are not classes).
CALTECH_CLASSES = {"accordion": "accordion", "airplanes": "airplane", "anchor": "anchor", "Faces": "face",
                   "Leopards": "leopard", "Motorbikes": "motorbike", "yin_yang": "yin_yang"}
CALTECH_IGNORED = ("BACKGROUND_Google", "Faces_easy")
FLOWERS_NAMES = ("pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
                 "tiger lily")
CARS_NAMES = ("AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012", "Acura TL Type-S 2008",
              "Acura TSX Sedan 2012", "Audi S4 Sedan 2007")
FOOD_CLASSES = ("apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beignets", "bibimbap")
# variants.txt order (labels follow the file, not sorted order); names with spaces and a slash.
FGVC_VARIANTS = ("707-320", "A300B4", "727-200", "BAE 146-200", "Cessna 172", "F-16A/B")
SUN_CLASSES = ("a/abbey", "a/airplane_cabin", "a/apartment_building/outdoor", "b/bakery/shop", "b/bedroom",
               "c/campsite")
UCF_ACTIONS = ("ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam", "YoYo")
# Synthetic ImageNet: 1000 fake wnids n00000000..n00000999 (sorted, so wnid i is label i) with
# CLIP's duplicated names at their real positions; images only for a few classes, chosen to
# cover ImageNet-A only (15), ImageNet-R only (1, 657), both (6, 11) and neither (0).
IMAGENET_CLASSES = 1000
IMAGENET_DUPLICATES = {657: "missile", 744: "missile", 836: "sunglasses", 837: "sunglasses"}
IMAGENET_PRESENT = (0, 1, 6, 11, 15, 657)
IMAGENET_A_PRESENT = (6, 11, 15)
IMAGENET_R_PRESENT = (1, 6, 11, 657)


def imagenet_wnid(i):
    return f"n{i:08d}"


def imagenet_name(i):
    return IMAGENET_DUPLICATES.get(i, f"imagenet class {i}")


def write_caltech101(root, classes=tuple(CALTECH_CLASSES), per_class=10, with_split=True, seed=0):
    """`<root>/caltech-101/101_ObjectCategories/<folder>/image_<iiii>.jpg`, plus the two folders CoOp
    ignores (BACKGROUND_Google, Faces_easy), and split_zhou_Caltech101.json."""
    dataset_dir = os.path.join(root, "caltech-101")
    image_dir = os.path.join(dataset_dir, "101_ObjectCategories")
    groups = _write_class_folders(image_dir, classes, per_class, seed, cname=lambda f: CALTECH_CLASSES.get(f, f),
                                  stem=lambda f, i: f"image_{i:04d}")
    _write_class_folders(image_dir, CALTECH_IGNORED, 3, seed + 1, cname=lambda f: f, stem=lambda f, i: f"image_{i:04d}")
    if with_split:
        _write_split(os.path.join(dataset_dir, "split_zhou_Caltech101.json"), groups, seed)
    return dataset_dir


def write_oxford_flowers(root, classes=FLOWERS_NAMES, per_class=10, with_split=True, seed=0):
    """`<root>/oxford_flowers/jpg/image_<iiiii>.jpg` with the classes interleaved,
    `imagelabels.mat` ({"labels": 1 x N, 1-based}), `cat_to_name.json` and the split."""
    dataset_dir = os.path.join(root, "oxford_flowers")
    os.makedirs(os.path.join(dataset_dir, "jpg"), exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(1, len(classes) + 1), per_class))
    rels = {y: [] for y in range(1, len(classes) + 1)}
    for i, y in enumerate(labels):
        rel = f"image_{i + 1:05d}.jpg"
        _save_image_atomic(class_image(classes[y - 1], rng), os.path.join(dataset_dir, "jpg", rel))
        rels[int(y)].append(rel)
    _write_mat(os.path.join(dataset_dir, "imagelabels.mat"), {"labels": labels[None].astype(np.uint8)})
    _write_text_atomic(os.path.join(dataset_dir, "cat_to_name.json"),
                       json.dumps({str(y): c for y, c in enumerate(classes, 1)}))
    if with_split:
        groups = [(y - 1, classes[y - 1], rels[y], None) for y in sorted(rels)]
        _write_split(os.path.join(dataset_dir, "split_zhou_OxfordFlowers.json"), groups, seed)
    return dataset_dir


def write_stanford_cars(root, classes=CARS_NAMES, per_class=10, with_split=True, seed=0):
    """`<root>/stanford_cars/cars_{train,test}/<nnnnn>.jpg` (classes shuffled over the numbers), the
    devkit's `cars_meta.mat` and `cars_train_annos.mat`, `cars_test_annos_withlabels.mat`, and a
    split (paths relative to the dataset folder) whose train/val come from cars_train (80/20
    per class) and test from cars_test (per_class // 2 per class)."""
    dataset_dir = os.path.join(root, "stanford_cars")
    rng = np.random.default_rng(seed)
    reported = [" ".join(c.split(" ")[-1:] + c.split(" ")[:-1]) for c in classes]
    split = {"train": [], "val": [], "test": []}
    for part, n in (("cars_train", per_class), ("cars_test", per_class // 2)):
        os.makedirs(os.path.join(dataset_dir, part), exist_ok=True)
        labels = rng.permutation(np.repeat(np.arange(len(classes)), n))
        annos = []
        for i, y in enumerate(labels):
            fname = f"{i + 1:05d}.jpg"
            _save_image_atomic(class_image(reported[y], rng), os.path.join(dataset_dir, part, fname))
            annos.append((int(y) + 1, fname))
            if part == "cars_test":
                split["test"].append([f"{part}/{fname}", int(y), reported[y]])
        path = os.path.join(dataset_dir, "devkit", "cars_train_annos.mat") if part == "cars_train" else \
            os.path.join(dataset_dir, "cars_test_annos_withlabels.mat")
        _write_mat(path, {"annotations": _cars_annotations(annos)})
        if part == "cars_train":
            for y in range(len(classes)):
                fnames = [f for c, f in annos if c == y + 1]
                n_val = round(len(fnames) * 0.2)
                split["val"] += [[f"{part}/{f}", y, reported[y]] for f in fnames[:n_val]]
                split["train"] += [[f"{part}/{f}", y, reported[y]] for f in fnames[n_val:]]
    names = np.empty((1, len(classes)), dtype=object)
    names[0, :] = list(classes)
    _write_mat(os.path.join(dataset_dir, "devkit", "cars_meta.mat"), {"class_names": names})
    if with_split:
        _write_text_atomic(os.path.join(dataset_dir, "split_zhou_StanfordCars.json"), json.dumps(split, indent=4))
    return dataset_dir


def write_food101(root, classes=FOOD_CLASSES, per_class=10, with_split=True, seed=0):
    """`<root>/food-101/images/<class>/<id>.jpg` (+ split_zhou_Food101.json)."""
    dataset_dir = os.path.join(root, "food-101")
    groups = _write_class_folders(os.path.join(dataset_dir, "images"), classes, per_class, seed, cname=lambda c: c,
                                  stem=lambda c, i: str(1000000 + 7919 * i + len(c)))
    if with_split:
        _write_split(os.path.join(dataset_dir, "split_zhou_Food101.json"), groups, seed)
    return dataset_dir


def write_fgvc_aircraft(root, classes=FGVC_VARIANTS, per_class=10, seed=0, **_):
    """`<root>/fgvc_aircraft/images/<7 digits>.jpg`, `variants.txt` (in the given order) and
    `images_variant_{train,val,test}.txt` (lines '<id> <variant>', sorted by id), 50/20/30 per class."""
    dataset_dir = os.path.join(root, "fgvc_aircraft")
    os.makedirs(os.path.join(dataset_dir, "images"), exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.arange(1000000, 2000000), size=len(classes) * per_class, replace=False)
    lines = {"train": [], "val": [], "test": []}
    for y, variant in enumerate(classes):
        mine = [f"{i:07d}" for i in ids[y * per_class:(y + 1) * per_class]]
        for imid in mine:
            _save_image_atomic(class_image(variant, rng), os.path.join(dataset_dir, "images", imid + ".jpg"))
        for key, idxs in zip(lines, _split_indices(per_class, rng)):
            lines[key] += [f"{mine[i]} {variant}" for i in idxs]
    _write_text_atomic(os.path.join(dataset_dir, "variants.txt"), "\n".join(classes) + "\n")
    for key, ls in lines.items():
        _write_text_atomic(os.path.join(dataset_dir, f"images_variant_{key}.txt"), "\n".join(sorted(ls)) + "\n")
    return dataset_dir


def write_sun397(root, classes=SUN_CLASSES, per_class=10, with_split=True, seed=0):
    """`<root>/sun397/SUN397/<letter>/<class>[/<sub>]/sun_<16 letters>.jpg`, Partitions' ClassName.txt,
    Training_01.txt (the split's train + val) and Testing_01.txt (its test), and the split."""
    dataset_dir = os.path.join(root, "sun397")
    rng = np.random.default_rng(seed)
    groups, train_lines, test_lines = [], [], []
    for y, cls in enumerate(classes):
        name = " ".join(cls.split("/")[1:][::-1])
        os.makedirs(os.path.join(dataset_dir, "SUN397", cls), exist_ok=True)
        letters = list("abcdefghijklmnopqrstuvwxyz")
        rels = [f"{cls}/sun_{''.join(rng.choice(letters, 16))}.jpg" for _ in range(per_class)]
        for rel in rels:
            _save_image_atomic(class_image(name, rng), os.path.join(dataset_dir, "SUN397", rel))
        train, val, test = _split_indices(per_class, rng)
        train_lines += [f"/{rels[i]}" for i in sorted(train + val)]
        test_lines += [f"/{rels[i]}" for i in sorted(test)]
        groups.append((y, name, rels, (train, val, test)))
    _write_text_atomic(os.path.join(dataset_dir, "ClassName.txt"), "".join(f"/{c}\n" for c in classes))
    _write_text_atomic(os.path.join(dataset_dir, "Training_01.txt"), "\n".join(train_lines) + "\n")
    _write_text_atomic(os.path.join(dataset_dir, "Testing_01.txt"), "\n".join(test_lines) + "\n")
    if with_split:
        _write_split(os.path.join(dataset_dir, "split_zhou_SUN397.json"), groups, seed)
    return dataset_dir


def write_ucf101(root, classes=UCF_ACTIONS, per_class=10, with_split=True, seed=0):
    """`<root>/ucf101/UCF-101-midframes/<Renamed_Action>/v_<Action>_g<gg>_c<cc>.jpg`, and
    ucfTrainTestlist/ classInd.txt, trainlist01.txt (the split's train + val, with the class
    index) and testlist01.txt (its test), with CRLF line ends as in the real lists."""
    dataset_dir = os.path.join(root, "ucf101")
    rng = np.random.default_rng(seed)
    groups, train_lines, test_lines = [], [], []
    for y, action in enumerate(classes):
        renamed = "_".join(_camel_words(action))
        videos = [f"v_{action}_g{8 + i // 2:02d}_c{1 + i % 2:02d}" for i in range(per_class)]
        for v in videos:
            _save_image(rng, renamed, dataset_dir, "UCF-101-midframes", renamed, v + ".jpg")
        train, val, test = _split_indices(per_class, rng)
        train_lines += [f"{action}/{videos[i]}.avi {y + 1}" for i in sorted(train + val)]
        test_lines += [f"{action}/{videos[i]}.avi" for i in sorted(test)]
        groups.append((y, renamed, [f"{renamed}/{v}.jpg" for v in videos], (train, val, test)))
    lists = os.path.join(dataset_dir, "ucfTrainTestlist")
    _write_text_atomic(os.path.join(lists, "classInd.txt"), "".join(f"{y + 1} {a}\r\n" for y, a in enumerate(classes)))
    _write_text_atomic(os.path.join(lists, "trainlist01.txt"), "\r\n".join(train_lines) + "\r\n")
    _write_text_atomic(os.path.join(lists, "testlist01.txt"), "\r\n".join(test_lines) + "\r\n")
    if with_split:
        _write_split(os.path.join(dataset_dir, "split_zhou_UCF101.json"), groups, seed)
    return dataset_dir


def write_imagenet(root, indices=IMAGENET_PRESENT, per_class=8, val_per_class=4, seed=0, **_):
    """`<root>/imagenet/images/train/<wnid>/<wnid>_<n>.JPEG`, `images/val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG`
    (val numbers shuffled over the classes) and a full 1000-line classnames.txt."""
    dataset_dir = os.path.join(root, "imagenet")
    rng = np.random.default_rng(seed)
    val_numbers = iter(rng.permutation(len(indices) * val_per_class) + 1)
    for i in indices:
        wnid = imagenet_wnid(i)
        for n in range(per_class):
            _save_image(rng, imagenet_name(i), dataset_dir, "images", "train", wnid, f"{wnid}_{1000 + 37 * n}.JPEG")
        for _ in range(val_per_class):
            _save_image(rng, imagenet_name(i), dataset_dir, "images", "val", wnid,
                        f"ILSVRC2012_val_{next(val_numbers):08d}.JPEG")
    _write_imagenet_classnames(dataset_dir)
    return dataset_dir


def write_imagenetv2(root, indices=IMAGENET_PRESENT, per_class=4, seed=0, **_):
    """`<root>/imagenetv2/imagenetv2-matched-frequency-format-val/<label>/<hex>.jpeg` + classnames.txt."""
    dataset_dir = os.path.join(root, "imagenetv2")
    rng = np.random.default_rng(seed)
    for i in indices:
        for _ in range(per_class):
            _save_image(rng, imagenet_name(i), dataset_dir, "imagenetv2-matched-frequency-format-val", str(i),
                        f"{rng.bytes(20).hex()}.jpeg")
    _write_imagenet_classnames(dataset_dir)
    return dataset_dir


def write_imagenet_sketch(root, indices=IMAGENET_PRESENT, per_class=4, seed=0, **_):
    """`<root>/imagenet-sketch/images/<wnid>/sketch_<n>.JPEG` + classnames.txt."""
    dataset_dir = os.path.join(root, "imagenet-sketch")
    rng = np.random.default_rng(seed)
    for i in indices:
        for n in range(per_class):
            _save_image(rng, imagenet_name(i), dataset_dir, "images", imagenet_wnid(i), f"sketch_{n}.JPEG")
    _write_imagenet_classnames(dataset_dir)
    return dataset_dir


def _write_200_class_variant(root, folder, image_folder, indices, per_class, seed):
    dataset_dir = os.path.join(root, folder)
    rng = np.random.default_rng(seed)
    for i in indices:
        for n in range(per_class):
            _save_image(rng, imagenet_name(i), dataset_dir, image_folder, imagenet_wnid(i), f"{image_folder}_{n}.jpg")
    _write_text_atomic(os.path.join(dataset_dir, image_folder, "README.txt"), "Not a class folder.\n")
    _write_imagenet_classnames(dataset_dir)
    return dataset_dir


def write_imagenet_a(root, indices=IMAGENET_A_PRESENT, per_class=4, seed=0, **_):
    """`<root>/imagenet-adversarial/imagenet-a/<wnid>/*.jpg` + README.txt + classnames.txt; the wnids
    must be at ImageNet-A positions of the 1000-class list."""
    return _write_200_class_variant(root, "imagenet-adversarial", "imagenet-a", indices, per_class, seed)


def write_imagenet_r(root, indices=IMAGENET_R_PRESENT, per_class=4, seed=0, **_):
    """`<root>/imagenet-rendition/imagenet-r/<wnid>/*.jpg` + README.txt + classnames.txt."""
    return _write_200_class_variant(root, "imagenet-rendition", "imagenet-r", indices, per_class, seed)


WRITERS = {
    "EuroSAT": write_eurosat, "DescribableTextures": write_dtd, "OxfordPets": write_oxford_pets,
    "Caltech101": write_caltech101, "OxfordFlowers": write_oxford_flowers, "StanfordCars": write_stanford_cars,
    "Food101": write_food101, "FGVCAircraft": write_fgvc_aircraft, "SUN397": write_sun397, "UCF101": write_ucf101,
    "ImageNet": write_imagenet, "ImageNetV2": write_imagenetv2, "ImageNetSketch": write_imagenet_sketch,
    "ImageNetA": write_imagenet_a, "ImageNetR": write_imagenet_r,
}


def write_dataset(name, root, **kwargs):
    """Write the synthetic copy of the dataset registered as `name`; returns its folder."""
    return WRITERS[name](root, **kwargs)


# ---------------------------------------------------------------------------------------------


def _write_class_folders(image_dir, classes, per_class, seed, cname, stem):
    """Images in <image_dir>/<folder>/; returns [(label, classname, relpaths, None)] where the
    label is the folder's position in sorted order (CoOp's rule for class folders)."""
    rng = np.random.default_rng(seed)
    groups = []
    for label, folder in enumerate(sorted(classes)):
        os.makedirs(os.path.join(image_dir, folder), exist_ok=True)
        rels = [f"{folder}/{stem(folder, i)}.jpg" for i in range(1, per_class + 1)]
        for rel in rels:
            _save_image_atomic(class_image(cname(folder), rng), os.path.join(image_dir, rel))
        groups.append((label, cname(folder), rels, None))
    return groups


def _split_indices(n, rng):
    """Random per-class (train, val, test) index lists of sizes round(50%), round(20%), rest."""
    n_train, n_val = round(n * P_TRAIN), round(n * P_VAL)
    if min(n_train, n_val, n - n_train - n_val) <= 0:
        raise ValueError(f"per_class={n} is too small for non-empty train/val/test parts")
    order = [int(i) for i in rng.permutation(n)]
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]


def _write_split(path, groups, seed):
    rng = np.random.default_rng([seed, 1])
    split = {"train": [], "val": [], "test": []}
    for label, classname, rels, parts in groups:
        parts = parts or _split_indices(len(rels), rng)
        for key, idxs in zip(("train", "val", "test"), parts):
            split[key] += [[rels[i], label, classname] for i in idxs]
    _write_text_atomic(path, json.dumps(split, indent=4, separators=(",", ": ")))


def _tmp_name(path, suffix=""):
    folder, base = os.path.split(path)
    return os.path.join(folder, f".{base}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


def _save_image_atomic(img, path):
    tmp = _tmp_name(path, os.path.splitext(path)[1])  # save_image picks the format by extension
    save_image(img, tmp)
    os.replace(tmp, path)


def _write_text_atomic(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _tmp_name(path)
    with open(tmp, "x", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _save_image(rng, classname, *parts):
    path = os.path.join(*parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _save_image_atomic(class_image(classname, rng), path)


def _write_mat(path, variables):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _tmp_name(path, ".mat")
    savemat(tmp, variables)
    os.replace(tmp, path)


def _cars_annotations(annos):
    """A MATLAB struct array like the devkit's: bbox_x1..bbox_y2, class (1-based), fname."""
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    out = np.zeros((1, len(annos)), dtype=[(f, "O") for f in fields])
    for i, (cls, fname) in enumerate(annos):
        out[0, i] = tuple(np.array([[v]], dtype=np.uint16) for v in (1, 2, 60, 60, cls)) + (np.array([fname]),)
    return out


def _camel_words(action):
    words, current = [], ""
    for ch in action:
        if ch.isupper() and current:
            words.append(current)
            current = ""
        current += ch
    return words + [current]


def _write_imagenet_classnames(dataset_dir):
    _write_text_atomic(os.path.join(dataset_dir, "classnames.txt"),
                       "".join(f"{imagenet_wnid(i)} {imagenet_name(i)}\n" for i in range(IMAGENET_CLASSES)))
