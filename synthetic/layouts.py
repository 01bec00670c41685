"""Synthetic datasets written in the real on-disk layouts, with real-format annotation files and
CoOp-format split files, so the real loading code runs on them.

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


WRITERS = {"EuroSAT": write_eurosat, "DescribableTextures": write_dtd, "OxfordPets": write_oxford_pets}


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
