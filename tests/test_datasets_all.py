"""All 15 datasets on synthetic data in their real layouts: class names, label order, splits and
their fallbacks, few-shot counts, base/new, the ImageNet family's class indices, CoOp pickle
caches and the error messages."""
import json
import os
import pickle
import random
import shutil
import sys
import types
from collections import Counter

import pytest
import torch
import yaml

import datasets
from datasets.base import Datum
from datasets.fewshot import generate_fewshot_dataset
from datasets.imagenet_variants import IMAGENET_A_INDICES, IMAGENET_R_INDICES
from engine.config import get_cfg_default
from engine.errors import DatasetError
from engine.registry import DATASET_REGISTRY
from synthetic import layouts
from synthetic.layouts import write_dataset

ALL = list(layouts.WRITERS)
OWN_DATA = {"imagefolder.yaml": "ImageFolder", "imagelist.yaml": "ImageList"}  # tests/test_custom_dataset.py
IMAGENET_FAMILY = ["ImageNet", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"]
SPLIT_JSON = ["Caltech101", "OxfordFlowers", "StanfordCars", "Food101", "SUN397", "UCF101"]
PER_CLASS = 10  # -> 5 train / 2 val / 3 test per class

# What each dataset reports, in label order (hard-coded: the rules under test, not the code).
EXPECTED_NAMES = {
    # sorted folders (upper case first), four renames, two folders ignored
    "Caltech101": ["face", "leopard", "motorbike", "accordion", "airplane", "anchor", "yin_yang"],
    "OxfordFlowers": list(layouts.FLOWERS_NAMES),  # cat_to_name.json, label = imagelabels - 1
    "StanfordCars": ["2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Acura TL Sedan",
                     "2008 Acura TL Type-S", "2012 Acura TSX Sedan", "2007 Audi S4 Sedan"],  # year first
    "Food101": list(layouts.FOOD_CLASSES),
    "FGVCAircraft": ["707-320", "A300B4", "727-200", "BAE 146-200", "Cessna 172", "F-16A/B"],  # variants.txt order
    "SUN397": ["abbey", "airplane_cabin", "outdoor apartment_building", "shop bakery", "bedroom", "campsite"],
    "UCF101": ["Apply_Eye_Makeup", "Apply_Lipstick", "Archery", "Baby_Crawling", "Balance_Beam", "Yo_Yo"],
}
# (registry name, folder, image folder, anchor)
LAYOUTS = [
    ("ImageNet", "imagenet", "images", "imagenet"),
    ("Caltech101", "caltech-101", "101_ObjectCategories", "caltech101"),
    ("OxfordPets", "oxford_pets", "images", "oxfordpets"),
    ("StanfordCars", "stanford_cars", "cars_train", "stanfordcars"),
    ("OxfordFlowers", "oxford_flowers", "jpg", "oxfordflowers"),
    ("Food101", "food-101", "images", "food101"),
    ("FGVCAircraft", "fgvc_aircraft", "images", "fgvcaircraft"),
    ("SUN397", "sun397", "SUN397", "sun397"),
    ("DescribableTextures", "dtd", "images", "dtd"),
    ("EuroSAT", "eurosat", "2750", "eurosat"),
    ("UCF101", "ucf101", "UCF-101-midframes", "ucf101"),
    ("ImageNetV2", "imagenetv2", "imagenetv2-matched-frequency-format-val", "imagenetv2"),
    ("ImageNetSketch", "imagenet-sketch", "images", "imagenetsketch"),
    ("ImageNetA", "imagenet-adversarial", "imagenet-a", "imageneta"),
    ("ImageNetR", "imagenet-rendition", "imagenet-r", "imagenetr"),
]


@pytest.fixture(scope="session")
def pristine15(synthetic_datasets_root):
    return synthetic_datasets_root  # per_class 10 for the datasets tested here


def private_copy(src, dst):
    """Images hard-linked (tests only delete them), everything else copied (tests edit it)."""
    def link_or_copy(a, b):
        return os.link(a, b) if a.lower().endswith((".jpg", ".jpeg")) else shutil.copy2(a, b)
    shutil.copytree(src, dst, copy_function=link_or_copy)
    return dst


@pytest.fixture
def root(pristine15, tmp_path):
    return private_copy(pristine15, tmp_path / "data")


def cfg_for(root, name, shots=-1, seed=1, subsample="all"):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS = str(root), name, shots
    cfg.DATASET.SUBSAMPLE_CLASSES, cfg.SEED, cfg.VERBOSE = subsample, seed, False
    return cfg


def build(root, name, shots=-1, seed=1, subsample="all"):
    random.seed(seed)  # as train.py does before building the data
    return DATASET_REGISTRY.get(name)(cfg_for(root, name, shots, seed, subsample))


def per_label(items):
    return Counter(d.label for d in items)


def load_json(path):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# Every dataset, through its config file


def test_every_config_file_builds_its_dataset(pristine15, tmp_path):
    root = private_copy(pristine15, tmp_path / "data")
    configs = sorted(set(os.listdir("configs/datasets")) - set(OWN_DATA))
    assert len(configs) == 15
    for fname in configs:
        cfg = get_cfg_default()
        cfg.merge_from_file(os.path.join("configs/datasets", fname))
        cfg.DATASET.ROOT, cfg.DATASET.NUM_SHOTS, cfg.SEED, cfg.VERBOSE = str(root), 2, 1, False
        random.seed(1)
        ds = datasets.build_dataset(cfg)
        assert ds.train_x and ds.test, fname
        assert len(ds.classnames) == ds.num_classes and all(0 <= d.label < ds.num_classes for d in ds.test)
        assert all(d.classname == ds.classnames[d.label] and os.path.isfile(d.impath) for d in ds.train_x + ds.test)
        if cfg.DATASET.NAME in IMAGENET_FAMILY:
            assert hasattr(ds, "class_indices_1k")


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_class_names_labels_and_split_sizes(root, name):
    ds = build(root, name)
    assert ds.classnames == EXPECTED_NAMES[name]
    n = len(EXPECTED_NAMES[name])
    if name == "StanfordCars":  # train/val from cars_train (80/20 of 10), test = cars_test (5)
        assert per_label(ds.train_x) == {y: 8 for y in range(n)} and per_label(ds.test) == {y: 5 for y in range(n)}
    else:
        assert per_label(ds.train_x) == {y: 5 for y in range(n)} and per_label(ds.test) == {y: 3 for y in range(n)}
    assert per_label(ds.val) == {y: 2 for y in range(n)}
    for d in ds.train_x + ds.val + ds.test:
        assert d.classname == ds.classnames[d.label] and os.path.isfile(d.impath)


def test_caltech_ignores_background_and_faces_easy(root):
    ds = build(root, "Caltech101")
    folders = {os.path.basename(os.path.dirname(d.impath)) for d in ds.train_x + ds.val + ds.test}
    assert folders == set(layouts.CALTECH_CLASSES)


def test_stanford_cars_paths_relative_to_dataset_dir(root):
    split = load_json(root / "stanford_cars" / "split_zhou_StanfordCars.json")
    assert split["train"][0][0].startswith("cars_train/") and split["test"][0][0].startswith("cars_test/")
    ds = build(root, "StanfordCars")
    assert ds.test[0].impath == str(root / "stanford_cars" / split["test"][0][0])


# ---------------------------------------------------------------------------------------------
# Fallback splits from the raw annotation files


@pytest.fixture(scope="session")
def pristine_nosplit(tmp_path_factory):
    root = tmp_path_factory.mktemp("nosplit")
    for name in SPLIT_JSON:
        write_dataset(name, root, per_class=PER_CLASS, with_split=False)
    return root


@pytest.mark.parametrize("name", SPLIT_JSON)
def test_fallback_split_from_annotations(pristine_nosplit, tmp_path, name, capsys):
    root = private_copy(pristine_nosplit, tmp_path / "data")
    ds = build(root, name, seed=2)
    out = capsys.readouterr().out
    assert "Saved split" not in out and f"WARNING: {name}: the split file" in out
    assert ds.classnames == EXPECTED_NAMES[name]
    n = len(EXPECTED_NAMES[name])
    counts = (per_label(ds.train_x), per_label(ds.val), per_label(ds.test))
    if name in ("Caltech101", "OxfordFlowers", "Food101"):  # 50/20/30 per class
        assert counts == ({y: 5 for y in range(n)}, {y: 2 for y in range(n)}, {y: 3 for y in range(n)})
    elif name == "StanfordCars":  # cars_train 80/20, test from cars_test
        assert counts == ({y: 8 for y in range(n)}, {y: 2 for y in range(n)}, {y: 5 for y in range(n)})
    else:  # SUN397, UCF101: the official trainval list (7 per class) split 80/20, official test
        assert counts == ({y: 6 for y in range(n)}, {y: 1 for y in range(n)}, {y: 3 for y in range(n)})
    assert not os.path.exists(os.path.join(ds.dataset_dir, f"split_zhou_{name}.json"))
    assert ds.split_origin == "generated seed=1"
    again = build(root, name, seed=3)  # made again, the same whatever the run seed
    assert again.train_x == ds.train_x and again.val == ds.val and again.test == ds.test


def test_flowers_fallback_equals_reference_algorithm(pristine_nosplit, tmp_path):
    """Per label in first-appearance order of imagelabels.mat: shuffle, cut 50/20/30."""
    from scipy.io import loadmat
    root = private_copy(pristine_nosplit, tmp_path / "data")
    ds = build(root, "OxfordFlowers", seed=5)  # the split is seeded by DATASET.SPLIT_SEED (1), not SEED
    labels = loadmat(root / "oxford_flowers" / "imagelabels.mat")["labels"][0]
    tracker = {}
    for i, y in enumerate(labels):
        tracker.setdefault(int(y), []).append(str(root / "oxford_flowers" / "jpg" / f"image_{i + 1:05d}.jpg"))
    assert list(tracker) != sorted(tracker)  # the order matters here
    random.seed(1)
    train = []
    for y, ims in tracker.items():
        random.shuffle(ims)
        train += [(im, y - 1) for im in ims[:5]]
    assert [(d.impath, d.label) for d in ds.train_x] == train


def test_fgvc_reads_official_lists_and_saves_no_split(root):
    ds = build(root, "FGVCAircraft")
    base = root / "fgvc_aircraft"
    for key, items in (("train", ds.train_x), ("val", ds.val), ("test", ds.test)):
        lines = (base / f"images_variant_{key}.txt").read_text().splitlines()
        assert [f"{os.path.basename(d.impath)[:-4]} {d.classname}" for d in items] == lines
    assert not [f for f in os.listdir(base) if f.endswith(".json")]
    assert ds.split_origin == "official"


def test_ucf_and_sun_name_rules_on_raw_lists(pristine_nosplit, tmp_path):
    root = private_copy(pristine_nosplit, tmp_path / "data")
    ucf = build(root, "UCF101")
    assert "\r" not in "".join(d.impath for d in ucf.test)  # CRLF lists
    assert all(os.path.basename(os.path.dirname(d.impath)) == d.classname for d in ucf.test)
    sun = build(root, "SUN397")
    d = next(d for d in sun.test if d.classname == "outdoor apartment_building")
    assert "/SUN397/a/apartment_building/outdoor/" in d.impath


def test_fallback_errors_name_the_file_and_section(pristine_nosplit, tmp_path):
    root = private_copy(pristine_nosplit, tmp_path / "data")
    os.remove(root / "stanford_cars" / "cars_test_annos_withlabels.mat")
    with pytest.raises(DatasetError, match="cars_test_annos_withlabels.mat") as e:
        build(root, "StanfordCars")
    assert "DATASETS.md#stanfordcars" in str(e.value) and "annotation file not found" in str(e.value)
    (root / "sun397" / "Training_01.txt").write_text("/z/zebra_room/sun_x.jpg\n")
    with pytest.raises(DatasetError, match="Training_01.txt:1: class 'z/zebra_room'") as e:
        build(root, "SUN397")
    assert "DATASETS.md#sun397" in str(e.value)
    os.remove(root / "oxford_flowers" / "cat_to_name.json")
    with pytest.raises(DatasetError, match="cat_to_name.json"):
        build(root, "OxfordFlowers")


# ---------------------------------------------------------------------------------------------
# Few-shot subsets and base/new


TRAINABLE = [n for n in ALL if n not in IMAGENET_FAMILY[1:]]


@pytest.mark.parametrize("name", TRAINABLE)
@pytest.mark.parametrize("shots", [1, 4])
def test_fewshot_counts(root, name, shots):
    full = build(root, name)
    ds = build(root, name, shots=shots)
    n_train, n_val = per_label(full.train_x), per_label(full.val)
    assert per_label(ds.train_x) == {y: min(shots, n) for y, n in n_train.items()}
    if name == "ImageNet":  # val is the test set, never reduced
        assert ds.val is ds.test and len(ds.test) == len(full.test)
    else:
        assert per_label(ds.val) == {y: min(shots, 4, n) for y, n in n_val.items()}
    assert set(ds.train_x) <= set(full.train_x) and ds.test == full.test


@pytest.mark.parametrize("name", TRAINABLE)
def test_fewshot_cache_round_trip(root, name, capsys):
    first = build(root, name, shots=2, seed=4)
    random.seed(999)  # a loaded cache does not depend on the random state
    again = DATASET_REGISTRY.get(name)(cfg_for(root, name, shots=2, seed=4))
    assert again.train_x == first.train_x and again.val == first.val
    cache = os.path.join(first.dataset_dir, "split_fewshot", "shot_2-seed_4.json")
    assert f"Loading preprocessed few-shot data from {cache}" in capsys.readouterr().out
    assert not any(os.path.isabs(e[0]) for e in load_json(cache)["train"])


def test_subsample_base_new(root):
    base, new = build(root, "FGVCAircraft", subsample="base"), build(root, "FGVCAircraft", subsample="new")
    names = EXPECTED_NAMES["FGVCAircraft"]
    assert base.classnames == names[:3] and new.classnames == names[3:]
    assert {d.label for d in new.test} == {0, 1, 2}

    # ImageNet: halves of the 1000-class list, whatever has images
    b, n = build(root, "ImageNet", shots=2, subsample="base"), build(root, "ImageNet", shots=2, subsample="new")
    assert b.num_classes == 500 and b.class_indices_1k == list(range(500))
    assert n.num_classes == 500 and n.class_indices_1k == list(range(500, 1000))
    assert {d.label for d in n.test} == {657 - 500} and n.classnames[157] == "missile"
    assert {d.label for d in b.train_x} == {0, 1, 6, 11, 15}
    a_new = build(root, "ImageNetA", subsample="new")
    assert a_new.class_indices_1k == IMAGENET_A_INDICES[100:] and a_new.num_classes == 100


# ---------------------------------------------------------------------------------------------
# ImageNet


def test_imagenet_labels_index_classnames_txt(root):
    ds = build(root, "ImageNet")
    assert ds.num_classes == 1000 and ds.class_indices_1k is None
    assert ds.classnames[0] == "imagenet class 0" and ds.classnames[744] == ds.classnames[657] == "missile"
    for d in ds.train_x + ds.test:
        assert d.label == int(os.path.basename(os.path.dirname(d.impath))[1:])  # wnid n00000657 -> 657
    assert {d.label for d in ds.train_x} == set(layouts.IMAGENET_PRESENT)
    assert ds.val is ds.test
    names = [os.path.basename(d.impath) for d in ds.train_x if d.label == 6]
    assert names == sorted(names)


def test_imagenet_fewshot_independent_of_listing_order(root, tmp_path, monkeypatch):
    """CoOp keeps os.listdir order, so users drew different subsets (CoOp #88); sorting makes the
    subset a function of the seed and the files only."""
    other = private_copy(root, tmp_path / "other")
    a = build(root, "ImageNet", shots=2, seed=3)
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: list(reversed(real_listdir(p))))
    b = build(other, "ImageNet", shots=2, seed=3)
    monkeypatch.undo()
    rel = lambda ds, r: [os.path.relpath(d.impath, r) for d in ds.train_x]  # noqa: E731
    assert rel(a, root) == rel(b, other)
    cache = load_json(root / "imagenet" / "split_fewshot" / "shot_2-seed_3.json")
    assert set(cache) == {"train"} and cache["train"][0][0].startswith("train/n00000000/")


@pytest.mark.parametrize("damage, message", [
    ("flat_val", "loose files"),
    ("unknown_folder", "not classes of classnames.txt"),
    ("half", "only one of train/ and val/"),
    ("no_classnames", "class-name file not found"),
    ("unsorted", "not sorted by wnid"),
])
def test_imagenet_damage_is_reported(root, damage, message):
    base = root / "imagenet"
    if damage == "flat_val":
        val = base / "images" / "val"
        for wnid in os.listdir(val):
            for f in os.listdir(val / wnid):
                os.rename(val / wnid / f, val / f)
            os.rmdir(val / wnid)
    elif damage == "unknown_folder":
        (base / "images" / "train" / "n99999999").mkdir()
    elif damage == "half":
        shutil.rmtree(base / "images" / "val" / "n00000011")
    elif damage == "no_classnames":
        os.remove(base / "classnames.txt")
    else:
        lines = (base / "classnames.txt").read_text().splitlines()
        (base / "classnames.txt").write_text("\n".join(lines[1:] + lines[:1]) + "\n")
    with pytest.raises(DatasetError, match=message) as e:
        build(root, "ImageNet")
    assert "DATASETS.md#imagenet" in str(e.value) and "images/" in str(e.value)


# ---------------------------------------------------------------------------------------------
# ImageNet variants and the 1000-class index lists


def test_index_lists():
    for idx in (IMAGENET_A_INDICES, IMAGENET_R_INDICES):
        assert len(idx) == 200 and idx == sorted(set(idx)) and 0 <= idx[0] and idx[-1] < 1000
    assert IMAGENET_A_INDICES[:5] == [6, 11, 13, 15, 17] and IMAGENET_A_INDICES[-3:] == [986, 987, 988]
    assert IMAGENET_R_INDICES[:5] == [1, 2, 4, 6, 8] and IMAGENET_R_INDICES[-3:] == [981, 983, 988]
    assert 657 in IMAGENET_R_INDICES and 744 not in IMAGENET_R_INDICES  # "missile": the first one


@pytest.mark.parametrize("name, indices", [("ImageNetA", IMAGENET_A_INDICES), ("ImageNetR", IMAGENET_R_INDICES)])
def test_200_class_variants_slice_a_1000_class_classifier(root, name, indices):
    ds = build(root, name, shots=4)  # NUM_SHOTS is ignored: a test set
    assert ds.num_classes == 200 and ds.class_indices_1k == indices and ds.val is None
    assert ds.train_x == ds.test
    weights = torch.arange(1000).float()[:, None].repeat(1, 3)  # row i "is" ImageNet class i
    sliced = weights[ds.class_indices_1k]
    assert sliced.shape == (200, 3)
    for d in ds.test:
        wnid_index = int(os.path.basename(os.path.dirname(d.impath))[1:])
        assert sliced[d.label, 0].item() == wnid_index  # the row of the image's own class
        assert d.classname == layouts.imagenet_name(wnid_index)
    assert not [d for d in ds.test if "README" in d.impath]


@pytest.mark.parametrize("name", ["ImageNetV2", "ImageNetSketch"])
def test_1000_class_variants(root, name):
    ds = build(root, name)
    assert ds.num_classes == 1000 and ds.class_indices_1k is None and ds.val is None
    assert ds.train_x == ds.test and {d.label for d in ds.test} == set(layouts.IMAGENET_PRESENT)
    folder = (lambda d: int(os.path.basename(os.path.dirname(d.impath)))) if name == "ImageNetV2" else \
        (lambda d: int(os.path.basename(os.path.dirname(d.impath))[1:]))
    assert all(d.label == folder(d) for d in ds.test)


def test_variant_errors(root):
    os.rename(root / "imagenet-adversarial" / "imagenet-a" / "n00000006",
              root / "imagenet-adversarial" / "imagenet-a" / "n00000001")  # not an ImageNet-A class
    with pytest.raises(DatasetError, match="not classes of classnames.txt") as e:
        build(root, "ImageNetA")
    assert "DATASETS.md#imageneta" in str(e.value)
    lines = (root / "imagenet-rendition" / "classnames.txt").read_text().splitlines()
    (root / "imagenet-rendition" / "classnames.txt").write_text("\n".join(lines[:900]) + "\n")
    with pytest.raises(DatasetError, match="full 1000-line"):
        build(root, "ImageNetR")
    shutil.rmtree(root / "imagenetv2" / "imagenetv2-matched-frequency-format-val")
    with pytest.raises(DatasetError, match="folder not found") as e:
        build(root, "ImageNetV2")
    assert "imagenetv2-matched-frequency-format-val/" in str(e.value)


# ---------------------------------------------------------------------------------------------
# CoOp's pickled few-shot caches


class FakeDassl:
    """Installs a stand-in for dassl.data.datasets.base_dataset (with Dassl's Datum attribute
    layout) so that a test can write the pickles CoOp writes."""

    def __init__(self, monkeypatch):
        class Datum:
            def __init__(self, impath="", label=0, domain=0, classname=""):
                self._impath, self._label, self._domain, self._classname = impath, label, domain, classname

        mod = types.ModuleType("dassl.data.datasets.base_dataset")
        Datum.__module__, Datum.__qualname__ = mod.__name__, "Datum"
        mod.Datum = Datum
        self.Datum = Datum
        for name in ("dassl", "dassl.data", "dassl.data.datasets"):
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
        self.monkeypatch = monkeypatch

    def write(self, path, data):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump({k: [self.Datum(d.impath, d.label, 0, d.classname) for d in v] for k, v in data.items()},
                        f, protocol=pickle.HIGHEST_PROTOCOL)

    def uninstall(self):
        self.monkeypatch.undo()
        assert "dassl" not in sys.modules


def moved_to(items, old_root, new_root):
    return [Datum(str(d.impath).replace(str(new_root), str(old_root)), d.label, classname=d.classname) for d in items]


def test_coop_pickle_is_read_rerooted_and_converted(root, monkeypatch, capsys):
    full = build(root, "Caltech101")
    random.seed(7)  # CoOp's draw, by the reference algorithm
    train = generate_fewshot_dataset(full.train_x, num_shots=2)
    val = generate_fewshot_dataset(full.val, num_shots=2)
    pkl = root / "caltech-101" / "split_fewshot" / "shot_2-seed_1.pkl"
    dassl = FakeDassl(monkeypatch)
    dassl.write(pkl, {"train": moved_to(train, "/data0/dataset", root), "val": moved_to(val, "/data0/dataset", root)})
    dassl.uninstall()  # reading needs no dassl
    capsys.readouterr()

    ds = build(root, "Caltech101", shots=2, seed=1)
    out = capsys.readouterr().out
    assert f"Re-rooted the pickled paths from /data0/dataset/caltech-101 to {root / 'caltech-101'}" in out
    assert ds.train_x == train and ds.val == val
    assert ds.provenance == {"split_origin": "official", "fewshot_origin": "coop-pkl"}
    cache = root / "caltech-101" / "split_fewshot" / "shot_2-seed_1.json"
    image_dir = root / "caltech-101" / "101_ObjectCategories"
    assert load_json(cache)["train"][0][0] == os.path.relpath(train[0].impath, image_dir)
    assert load_json(cache)["converted_from"] == "shot_2-seed_1.pkl"
    assert pkl.is_file()  # kept

    again = build(root, "Caltech101", shots=2, seed=1)  # the JSON wins from now on
    assert f"Loading preprocessed few-shot data from {cache}" in capsys.readouterr().out
    assert again.train_x == train
    assert again.provenance["fewshot_origin"] == "coop-pkl"  # the converted JSON still says where it came from


def test_coop_pickle_imagenet_train_only(root, monkeypatch):
    full = build(root, "ImageNet")
    random.seed(3)
    train = generate_fewshot_dataset(full.train_x, num_shots=2)
    dassl = FakeDassl(monkeypatch)
    dassl.write(root / "imagenet" / "split_fewshot" / "shot_2-seed_3.pkl", {"train": train})
    dassl.uninstall()
    random.seed(12345)  # nothing is drawn: the pickle is the selection
    ds = DATASET_REGISTRY.get("ImageNet")(cfg_for(root, "ImageNet", shots=2, seed=3))
    assert ds.train_x == train and ds.val is ds.test


@pytest.mark.parametrize("damage, message", [
    ("label", "has label"),
    ("missing", "does not exist"),
    ("foreign", "not in the current train split"),
])
def test_coop_pickle_that_does_not_match_is_refused(root, monkeypatch, damage, message):
    full = build(root, "Food101")
    random.seed(1)
    train = generate_fewshot_dataset(full.train_x, num_shots=2)
    val = generate_fewshot_dataset(full.val, num_shots=2)
    d = train[0]
    if damage == "label":
        train[0] = Datum(d.impath, (d.label + 1) % 6, classname=d.classname)
    elif damage == "missing":  # e.g. a cache from a different copy of the dataset
        train[0] = Datum(os.path.join(os.path.dirname(d.impath), "9999999.jpg"), d.label, classname=d.classname)
    else:
        train[0] = full.val[-1]
    pkl = root / "food-101" / "split_fewshot" / "shot_2-seed_1.pkl"
    dassl = FakeDassl(monkeypatch)
    dassl.write(pkl, {"train": train, "val": val})
    dassl.uninstall()
    with pytest.raises(DatasetError, match=message) as e:
        build(root, "Food101", shots=2, seed=1)
    assert str(pkl) in str(e.value)
    assert not (root / "food-101" / "split_fewshot" / "shot_2-seed_1.json").exists()


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_other_globals_is_refused(root, tmp_path):
    marker = tmp_path / "ran"
    pkl = root / "eurosat" / "split_fewshot" / "shot_1-seed_1.pkl"
    os.makedirs(pkl.parent)
    with open(pkl, "wb") as f:
        pickle.dump({"train": [Evil(marker)], "val": []}, f)
    with pytest.raises(DatasetError, match="only dassl.data.datasets.base_dataset.Datum is accepted"):
        build(root, "EuroSAT", shots=1, seed=1)
    assert not marker.exists()


def test_json_cache_preferred_over_pickle(root, capsys):
    assert build(root, "UCF101", shots=1, seed=1).provenance["fewshot_origin"] == "sampled"
    split_dir = root / "ucf101" / "split_fewshot"
    (split_dir / "shot_1-seed_1.pkl").write_bytes(b"not a pickle")
    capsys.readouterr()
    assert build(root, "UCF101", shots=1, seed=1).provenance["fewshot_origin"] == "cache"
    assert "shot_1-seed_1.json" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Missing and half-extracted data


@pytest.mark.parametrize("name, folder, image_folder, anchor", LAYOUTS)
def test_missing_dataset_names_layout_and_section(tmp_path, name, folder, image_folder, anchor):
    with pytest.raises(DatasetError) as e:
        build(tmp_path, name)
    msg = str(e.value)
    assert msg.startswith(f"{name}: folder not found: {tmp_path / folder}")
    assert f"{folder}/" in msg and f"{image_folder}/" in msg and f"DATASETS.md#{anchor}" in msg
    assert "Expected layout under --root" in msg


@pytest.mark.parametrize("name", ["Caltech101", "OxfordFlowers", "StanfordCars", "Food101", "SUN397", "UCF101"])
def test_half_extracted_dataset(root, name):
    ds = build(root, name)
    victim = os.path.dirname(ds.test[0].impath) if name not in ("OxfordFlowers", "StanfordCars") else None
    if victim:
        shutil.rmtree(victim)
    else:
        for d in ds.test[:4]:
            os.remove(d.impath)
    with pytest.raises(DatasetError, match="images listed in split_zhou_") as e:
        build(root, name, shots=1)
    assert "The download looks incomplete" in str(e.value) and f"DATASETS.md#{ds.anchor}" in str(e.value)


def test_every_anchor_has_a_section_in_datasets_md():
    from datasets.sources import SOURCES
    with open("DATASETS.md") as f:
        text = f.read()
    anchors = {cls.anchor for _, cls in DATASET_REGISTRY.items()} | {s.anchor for s in SOURCES.values()}
    assert len(anchors) == 16  # the 15 datasets and your own data
    for anchor in anchors | {"google-drive", "few-shot-caches"}:
        assert f'<a id="{anchor}"></a>' in text, anchor


def test_registry_and_configs_agree():
    names = set()
    for fname in os.listdir("configs/datasets"):
        with open(os.path.join("configs/datasets", fname)) as f:
            names.add(yaml.safe_load(f)["DATASET"]["NAME"])
    assert names == set(ALL) | set(OWN_DATA.values()) == set(DATASET_REGISTRY.names())
