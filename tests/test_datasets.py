"""Datasets, splits, few-shot sampling and caching, and image pipelines, on synthetic data in
the real on-disk layouts."""
import dataclasses
import json
import os
import random
import shutil
from collections import Counter

import pytest
import torch
from PIL import Image

import datasets
from datasets.base import Datum, DatasetBase, write_json_atomic
from datasets.fewshot import generate_fewshot_dataset
from datasets.transforms import build_transform, describe_transform, read_image
from engine.config import CLIP_MEAN, CLIP_STD, get_cfg_default
from engine.errors import ConfigError, DatasetError, UserError
from engine.registry import DATASET_REGISTRY
from synthetic.layouts import DTD_CATEGORIES, PETS_BREEDS, write_dtd, write_eurosat, write_oxford_pets

EUROSAT_NAMES = [
    "Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road", "Industrial Buildings",
    "Pasture Land", "Permanent Crop Land", "Residential Buildings", "River", "Sea or Lake",
]
PER_CLASS = 20  # -> 10 train / 4 val / 6 test per class in the split files


@pytest.fixture(scope="session")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    write_eurosat(root, per_class=PER_CLASS)
    write_dtd(root, per_class=PER_CLASS)
    write_oxford_pets(root, per_class=PER_CLASS)
    return root


def private_copy(src, dst):
    """Images are hard-linked (tests only delete them), text files copied (tests edit them)."""
    def link_or_copy(a, b):
        return os.link(a, b) if a.endswith(".jpg") else shutil.copy2(a, b)
    shutil.copytree(src, dst, copy_function=link_or_copy)
    return dst


@pytest.fixture
def root(pristine, tmp_path):
    """A private copy of all three synthetic datasets."""
    return private_copy(pristine, tmp_path / "data")


def make_cfg(root, name, shots=-1, seed=1, subsample="all", split_seed=1):
    cfg = get_cfg_default()
    cfg.DATASET.SPLIT_SEED = split_seed
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    return cfg


def build(root, name, shots=-1, seed=1, subsample="all", split_seed=1):
    random.seed(seed)  # what the engine's set_random_seed does before building the data
    return DATASET_REGISTRY.get(name)(make_cfg(root, name, shots, seed, subsample, split_seed))


def rel(d, base):
    return os.path.relpath(d.impath, base).replace(os.sep, "/")


def load_json(path):
    with open(path) as f:
        return json.load(f)


def dump_json(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f)


def per_label(items):
    return Counter(d.label for d in items)


# ---------------------------------------------------------------------------------------------
# Class names, labels, splits


def test_registry_has_reference_names():
    for name in ("EuroSAT", "DescribableTextures", "OxfordPets"):
        assert name in DATASET_REGISTRY
    with pytest.raises(UserError, match="EuroSAT"):
        DATASET_REGISTRY.get("eurosat")


def test_eurosat_names_labels_and_split_from_json(root, capsys):
    ds = datasets.build_dataset(make_cfg(root, "EuroSAT"))
    out = capsys.readouterr().out
    split_path = root / "eurosat" / "split_zhou_EuroSAT.json"
    assert "Loading dataset: EuroSAT" in out and f"Reading split from {split_path}" in out

    assert ds.classnames == EUROSAT_NAMES
    assert ds.num_classes == 10 and ds.lab2cname[3] == "Highway or Road"
    assert ds.dataset_dir == str(root / "eurosat")
    folders = sorted(os.listdir(root / "eurosat" / "2750"))
    split = load_json(split_path)
    image_dir = root / "eurosat" / "2750"
    for key, items in (("train", ds.train_x), ("val", ds.val), ("test", ds.test)):
        # same entries, same order as the file, absolute paths under the image folder
        assert [[rel(d, image_dir), d.label, d.classname] for d in items] == split[key]
        for d in items:
            folder = rel(d, image_dir).split("/")[0]
            assert d.label == folders.index(folder) and d.classname == EUROSAT_NAMES[d.label]
            assert os.path.isabs(d.impath) and d.domain == 0
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (100, 40, 60)
    assert set(per_label(ds.val).values()) == {4}


def test_dtd_and_pets_class_names(root):
    dtd = build(root, "DescribableTextures")
    assert dtd.classnames == list(DTD_CATEGORIES)
    pets = build(root, "OxfordPets")
    assert pets.classnames == list(PETS_BREEDS)  # lower-cased, underscores kept
    # the class name comes from file names such as Abyssinian_12.jpg and american_bulldog_3.jpg
    stems = {d.classname: os.path.basename(d.impath).rsplit("_", 1)[0] for d in pets.test}
    assert stems["abyssinian"] == "Abyssinian" and stems["american_pit_bull_terrier"] == "american_pit_bull_terrier"


# ---------------------------------------------------------------------------------------------
# Few-shot sampling


@pytest.fixture(scope="session")
def eurosat40(tmp_path_factory):
    """EuroSAT with 20 train / 8 val / 12 test images per class."""
    root = tmp_path_factory.mktemp("eurosat40")
    write_eurosat(root, per_class=40)
    return root


@pytest.mark.parametrize("shots", [1, 2, 4, 8, 16, 32])
def test_fewshot_counts_per_class(eurosat40, tmp_path, shots):
    root = private_copy(eurosat40, tmp_path / "data")
    full = build(root, "EuroSAT")
    ds = build(root, "EuroSAT", shots=shots)
    assert per_label(ds.train_x) == {y: min(shots, 20) for y in range(10)}  # fewer than K: all of them
    assert per_label(ds.val) == {y: min(shots, 4) for y in range(10)}  # val: min(K, 4) of 8
    assert len(set(ds.train_x)) == len(ds.train_x) and set(ds.train_x) <= set(full.train_x)
    assert set(ds.val) <= set(full.val)
    assert ds.test == full.test and ds.classnames == EUROSAT_NAMES


def test_fewshot_equals_reference_algorithm(root):
    """CoOp: random.seed(SEED); per label in first-appearance order random.sample(items, K) on
    train, then min(K, 4) on val. The split's train list is shuffled first so that
    first-appearance order differs from sorted label order."""
    split_path = root / "oxford_pets" / "split_zhou_OxfordPets.json"
    split = load_json(split_path)
    random.Random(5).shuffle(split["train"])
    dump_json(split, split_path)
    full = build(root, "OxfordPets")
    assert [d.label for d in full.train_x][:8] != sorted(d.label for d in full.train_x)[:8]

    def by_label(items):
        groups = {}
        for d in items:
            groups.setdefault(d.label, []).append(d)
        return groups

    for seed, shots in ((1, 4), (2, 4), (3, 2)):
        random.seed(seed)
        expected_train = [d for items in by_label(full.train_x).values() for d in random.sample(items, shots)]
        expected_val = [d for items in by_label(full.val).values() for d in random.sample(items, min(shots, 4))]
        ds = build(root, "OxfordPets", shots=shots, seed=seed)
        assert ds.train_x == expected_train
        assert ds.val == expected_val


def test_same_seed_same_selection_other_seed_differs(root, tmp_path):
    other = private_copy(root, tmp_path / "other")
    base = root / "eurosat" / "2750"
    a = build(root, "EuroSAT", shots=4, seed=1)
    b = build(other, "EuroSAT", shots=4, seed=1)  # separate copy, so no shared cache
    c = build(root, "EuroSAT", shots=4, seed=2)
    assert [rel(d, base) for d in a.train_x] == [rel(d, other / "eurosat" / "2750") for d in b.train_x]
    assert [rel(d, base) for d in a.train_x] != [rel(d, base) for d in c.train_x]


def test_generate_fewshot_dataset_repeat_and_passthrough():
    items = [Datum(f"/x/{i}.jpg", label=i % 2) for i in range(6)]  # 3 per label
    assert generate_fewshot_dataset(items, num_shots=-1) is items
    assert len(generate_fewshot_dataset(items, num_shots=5)) == 6  # fewer than K: all, no repeat
    random.seed(0)
    rep = generate_fewshot_dataset(items, num_shots=5, repeat=True)
    assert per_label(rep) == {0: 5, 1: 5}
    two = generate_fewshot_dataset(items, items, num_shots=1)
    assert len(two) == 2 and all(len(x) == 2 for x in two)


# ---------------------------------------------------------------------------------------------
# Few-shot cache


def test_fewshot_cache_round_trip_is_portable(root, tmp_path, capsys):
    first = build(root, "EuroSAT", shots=4, seed=1)
    cache = root / "eurosat" / "split_fewshot" / "shot_4-seed_1.json"
    out = capsys.readouterr().out
    assert "Creating a 4-shot dataset" in out and f"Saving preprocessed few-shot data to {cache}" in out
    assert os.listdir(cache.parent) == [cache.name]  # no temp files left behind

    data = load_json(cache)
    base = root / "eurosat" / "2750"
    assert data["train"] == [[rel(d, base), d.label, d.classname] for d in first.train_x]
    assert data["val"] == [[rel(d, base), d.label, d.classname] for d in first.val]
    assert all(not os.path.isabs(p) and str(root) not in p for p, _, _ in data["train"] + data["val"])

    random.seed(999)  # a loaded cache does not depend on the random state
    second = DATASET_REGISTRY.get("EuroSAT")(make_cfg(root, "EuroSAT", shots=4, seed=1))
    out = capsys.readouterr().out
    assert f"Loading preprocessed few-shot data from {cache}" in out and "Creating a" not in out
    assert second.train_x == first.train_x and second.val == first.val

    moved = tmp_path / "moved"
    os.rename(root, moved)
    third = build(moved, "EuroSAT", shots=4, seed=1)
    assert [rel(d, moved / "eurosat" / "2750") for d in third.train_x] == [p for p, _, _ in data["train"]]
    assert all(d.impath.startswith(str(moved)) for d in third.train_x)


def _cache_after_first_build(root):
    build(root, "EuroSAT", shots=4, seed=1)
    return root / "eurosat" / "split_fewshot" / "shot_4-seed_1.json"


def test_stale_cache_changed_label(root):
    cache = _cache_after_first_build(root)
    data = load_json(cache)
    path = data["train"][0][0]
    data["train"][0][1] = (data["train"][0][1] + 1) % 10
    dump_json(data, cache)
    with pytest.raises(DatasetError) as e:
        build(root, "EuroSAT", shots=4, seed=1)
    msg = str(e.value)
    assert str(cache) in msg and f"Delete {cache}" in msg and path in msg and "label" in msg


def test_stale_cache_missing_image(root):
    cache = _cache_after_first_build(root)
    path = load_json(cache)["train"][2][0]
    split_path = root / "eurosat" / "split_zhou_EuroSAT.json"
    split = load_json(split_path)
    split["train"] = [e for e in split["train"] if e[0] != path]  # the split no longer has it either
    dump_json(split, split_path)
    os.remove(root / "eurosat" / "2750" / path)
    with pytest.raises(DatasetError, match="does not exist") as e:
        build(root, "EuroSAT", shots=4, seed=1)
    assert path in str(e.value) and f"Delete {cache}" in str(e.value)


def test_stale_cache_after_split_changed(root):
    _cache_after_first_build(root)
    split_path = root / "eurosat" / "split_zhou_EuroSAT.json"
    split = load_json(split_path)
    for e in split["train"] + split["val"] + split["test"]:
        e[2] = e[2].upper()  # a different split file with other class names
    dump_json(split, split_path)
    with pytest.raises(DatasetError, match="in the split") as e:
        build(root, "EuroSAT", shots=4, seed=1)
    assert "ANNUAL CROP LAND" in str(e.value)


def test_corrupt_cache(root):
    cache = _cache_after_first_build(root)
    cache.write_text('{"train": [["a.jpg", 0]')
    with pytest.raises(DatasetError, match="not valid JSON") as e:
        build(root, "EuroSAT", shots=4, seed=1)
    assert f"Delete {cache}" in str(e.value)


# ---------------------------------------------------------------------------------------------
# Missing or incomplete data


@pytest.mark.parametrize("name, folder, image_folder, anchor", [
    ("EuroSAT", "eurosat", "2750", "eurosat"),
    ("DescribableTextures", "dtd", "images", "dtd"),
    ("OxfordPets", "oxford_pets", "images", "oxfordpets"),
])
def test_missing_dataset_folder(tmp_path, name, folder, image_folder, anchor):
    with pytest.raises(DatasetError) as e:
        build(tmp_path, name)
    msg = str(e.value)
    assert name in msg and str(tmp_path / folder) in msg
    assert f"{folder}/" in msg and f"{image_folder}/" in msg and f"DATASETS.md#{anchor}" in msg

    (tmp_path / folder).mkdir()  # folder present, images not extracted
    with pytest.raises(DatasetError, match="folder not found") as e:
        build(tmp_path, name)
    assert str(tmp_path / folder / image_folder) in str(e.value)


def test_half_extracted_dataset(root):
    split = load_json(root / "dtd" / "split_zhou_DescribableTextures.json")
    shutil.rmtree(root / "dtd" / "images" / "bumpy")
    with pytest.raises(DatasetError) as e:
        build(root, "DescribableTextures", shots=2)
    msg = str(e.value)
    n_bumpy = sum(1 for k in split for p, _, _ in split[k] if p.startswith("bumpy/"))
    assert f"{n_bumpy} of {PER_CLASS * 8} images" in msg and "bumpy/bumpy_" in msg
    assert "DATASETS.md#dtd" in msg
    assert not (root / "dtd" / "split_fewshot").exists()  # nothing sampled from a broken split


def test_corrupt_split_json(root):
    (root / "eurosat" / "split_zhou_EuroSAT.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON") as e:
        build(root, "EuroSAT")
    assert "DATASETS.md#eurosat" in str(e.value)


# ---------------------------------------------------------------------------------------------
# Fallback split generation


def test_eurosat_fallback_split(tmp_path, capsys):
    """Without CoOp's split file: a random 50/20/30 split seeded by DATASET.SPLIT_SEED, announced,
    recorded as generated, never written (least of all under the official name), the same for
    every run seed, and its few-shot subsets kept apart from the official split's."""
    write_eurosat(tmp_path, per_class=10, with_split=False)
    split_path = tmp_path / "eurosat" / "split_zhou_EuroSAT.json"
    assert not split_path.exists()
    ds = build(tmp_path, "EuroSAT", seed=1, split_seed=3)
    out = capsys.readouterr().out
    assert "Splitting into 50% train, 20% val, and 30% test" in out and "Saved split" not in out
    assert "WARNING: EuroSAT: the split file" in out and "RANDOM split" in out and "DATASETS.md#eurosat" in out
    assert sorted(os.listdir(tmp_path / "eurosat")) == ["2750"]
    assert ds.provenance == {"split_origin": "generated seed=3"}
    assert ds.classnames == EUROSAT_NAMES
    for items, n in ((ds.train_x, 5), (ds.val, 2), (ds.test, 3)):
        assert per_label(items) == {y: n for y in range(10)}

    # CoOp's read_and_split_data, by hand: sorted classes, shuffle each class, cut 50/20/30
    image_dir = tmp_path / "eurosat" / "2750"
    random.seed(3)
    expected = {"train": [], "val": [], "test": []}
    for label, folder in enumerate(sorted(os.listdir(image_dir))):
        ims = [f"{folder}/{f}" for f in sorted(os.listdir(image_dir / folder))]
        random.shuffle(ims)
        for key, part in (("train", ims[:5]), ("val", ims[5:7]), ("test", ims[7:])):
            expected[key] += [[p, label, EUROSAT_NAMES[label]] for p in part]
    got = {key: [[rel(d, image_dir), d.label, d.classname] for d in items]
           for key, items in (("train", ds.train_x), ("val", ds.val), ("test", ds.test))}
    assert got == expected

    random.seed(4)
    state = random.getstate()
    again = build(tmp_path, "EuroSAT", seed=4, split_seed=3, shots=2)  # another run seed: the same split
    assert set(d.impath for d in again.train_x) <= set(d.impath for d in ds.train_x) and again.test == ds.test
    assert again.provenance == {"split_origin": "generated seed=3", "fewshot_origin": "sampled"}
    assert os.listdir(tmp_path / "eurosat" / "split_fewshot") == ["generated_seed3"]
    assert build(tmp_path, "EuroSAT", seed=4, split_seed=3, shots=2).provenance["fewshot_origin"] == "cache"
    other = build(tmp_path, "EuroSAT", split_seed=5)
    assert other.test != ds.test and sorted(d.impath for d in other.test + other.train_x + other.val) == sorted(
        d.impath for d in ds.test + ds.train_x + ds.val)
    # The split's draw leaves the run's random stream where it was (few-shot sampling follows it).
    random.setstate(state)
    DATASET_REGISTRY.get("EuroSAT")(make_cfg(tmp_path, "EuroSAT", split_seed=7))
    assert random.getstate() == state


def test_pets_fallback_split_from_annotations(tmp_path, capsys):
    write_oxford_pets(tmp_path, per_class=PER_CLASS, with_split=False)
    ann = tmp_path / "oxford_pets" / "annotations"
    lines = {k: (ann / f"{k}.txt").read_text().split("\n")[:-1] for k in ("trainval", "test")}
    ds = build(tmp_path, "OxfordPets")
    out = capsys.readouterr().out
    assert "Splitting trainval into 80% train and 20% val" in out and "Saved split" not in out

    image_dir = tmp_path / "oxford_pets" / "images"
    parsed = {k: [(f"{ln.split()[0]}.jpg", int(ln.split()[1]) - 1) for ln in v] for k, v in lines.items()}
    assert [(rel(d, image_dir), d.label) for d in ds.test] == parsed["test"]  # test.txt, in order
    assert sorted((rel(d, image_dir), d.label) for d in ds.train_x + ds.val) == sorted(parsed["trainval"])
    assert per_label(ds.val) == {y: 3 for y in range(8)}  # round(14 * 0.2)
    assert per_label(ds.train_x) == {y: 11 for y in range(8)}
    assert ds.classnames == list(PETS_BREEDS)
    assert not (tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json").exists()
    assert ds.split_origin == "generated seed=1"


def test_pets_fallback_bad_annotations(tmp_path):
    write_oxford_pets(tmp_path, per_class=10, with_split=False)
    ann = tmp_path / "oxford_pets" / "annotations" / "trainval.txt"
    ann.write_text(ann.read_text() + "broken line\n")
    with pytest.raises(DatasetError, match="trainval.txt:") as e:
        build(tmp_path, "OxfordPets")
    assert "DATASETS.md#oxfordpets" in str(e.value)
    os.remove(ann)
    with pytest.raises(DatasetError, match="annotation file not found"):
        build(tmp_path, "OxfordPets")


# ---------------------------------------------------------------------------------------------
# Base-to-new subsampling


def test_subsample_base_and_new(tmp_path, capsys):
    classes = DTD_CATEGORIES[:7]  # odd: base gets ceil(7/2) = 4
    write_dtd(tmp_path, classes=classes, per_class=10)
    full = build(tmp_path, "DescribableTextures", shots=2, seed=1)
    base = build(tmp_path, "DescribableTextures", shots=2, seed=1, subsample="base")
    assert "SUBSAMPLE BASE CLASSES!" in capsys.readouterr().out
    new = build(tmp_path, "DescribableTextures", shots=2, seed=1, subsample="new")

    assert base.classnames == list(classes[:4]) and base.num_classes == 4
    assert new.classnames == list(classes[4:]) and new.num_classes == 3
    # sampling happens before subsampling: both come from the same cached 2-shot set
    assert [d.impath for d in base.train_x] == [d.impath for d in full.train_x if d.label < 4]
    assert [d.impath for d in new.train_x] == [d.impath for d in full.train_x if d.label >= 4]
    assert [d.label for d in new.test] == [d.label - 4 for d in full.test if d.label >= 4]
    assert {d.classname for d in new.val} == set(classes[4:])

    with pytest.raises(ConfigError, match="SUBSAMPLE_CLASSES"):
        build(tmp_path, "DescribableTextures", subsample="novel")


# ---------------------------------------------------------------------------------------------
# Records


def test_datum_and_dataset_base():
    d = Datum("/nowhere/x.jpg", 2, classname="cat")  # no file check at construction
    assert d.domain == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.label = 3
    ds = DatasetBase([Datum("/a", 2, classname="c"), Datum("/b", 0, classname="a")], val=[], test=[])
    assert ds.num_classes == 3 and ds.classnames == ["a", "c"] and ds.lab2cname == {2: "c", 0: "a"}


def test_atomic_json_write_keeps_old_file(tmp_path):
    path = tmp_path / "split.json"
    write_json_atomic({"train": []}, path)
    with pytest.raises(TypeError):
        write_json_atomic({"train": [object()]}, path)  # fails half-way through serialising
    assert load_json(path) == {"train": []} and os.listdir(tmp_path) == ["split.json"]


# ---------------------------------------------------------------------------------------------
# Transforms


def coop_input_cfg():
    cfg = get_cfg_default()
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.INPUT.PIXEL_MEAN = CLIP_MEAN
    cfg.INPUT.PIXEL_STD = CLIP_STD
    return cfg


def test_coop_transforms_lines_and_shapes(capsys):
    cfg = coop_input_cfg()
    train, test = build_transform(cfg, is_train=True), build_transform(cfg, is_train=False)
    norm = f"+ normalization (mean={CLIP_MEAN}, std={CLIP_STD})"
    assert capsys.readouterr().out.splitlines() == [
        "Building transform_train",
        "+ random resized crop (size=(224, 224), scale=(0.08, 1.0))",
        "+ random flip",
        "+ to torch tensor of range [0, 1]",
        norm,
        "Building transform_test",
        "+ resize the smaller edge to 224",
        "+ 224x224 center crop",
        "+ to torch tensor of range [0, 1]",
        norm,
    ]
    for img in (Image.new("RGB", (64, 64), (10, 200, 30)), Image.new("RGB", (300, 100), (10, 200, 30))):
        for tfm in (train, test):
            x = tfm(img)
            assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    # a flat colour comes out as (value - mean) / std
    x = test(Image.new("RGB", (300, 100), (10, 200, 30)))
    want = (torch.tensor([10, 200, 30]) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(x.mean(dim=(1, 2)), want, atol=1e-4)
    resize = test.transforms[0]
    assert resize.size == 224 and resize.interpolation.value == "bicubic"  # smaller edge, aspect kept


def test_train_transform_dassl_order(capsys):
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (32, 32)
    cfg.INPUT.TRANSFORMS = ("instance_norm", "gaussian_noise", "normalize", "cutout", "gaussian_blur",
                            "randomgrayscale", "colorjitter", "random_flip", "random_crop", "random_translation")
    tfm = build_transform(cfg, is_train=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "Building transform_train",
        "+ random translation",
        "+ random crop (padding = 4)",
        "+ random flip",
        "+ color jitter (brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)",
        "+ random gray scale",
        "+ gaussian blur (kernel=21)",
        "+ to torch tensor of range [0, 1]",
        "+ cutout (n_holes=1, length=16)",
        f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})",
        "+ gaussian noise (mean=0.0, std=0.15)",
        "+ instance normalization",
    ]
    assert tfm(Image.new("RGB", (64, 48), (90, 90, 90))).shape == (3, 32, 32)

    cfg.INPUT.TRANSFORMS = ("random_flip",)  # no crop chosen -> resize to SIZE first, no normalize
    tfm = build_transform(cfg, is_train=True)
    assert capsys.readouterr().out.splitlines()[1] == "+ resize to 32x32"
    x = tfm(Image.new("RGB", (64, 48), (255, 0, 0)))
    assert x.shape == (3, 32, 32) and float(x.max()) == 1.0


def test_describe_transform_identity(capsys):
    cfg = coop_input_cfg()
    test_id, train_id = describe_transform(cfg, is_train=False), describe_transform(cfg, is_train=True)
    assert capsys.readouterr().out == ""
    assert test_id == describe_transform(cfg, is_train=False) and test_id != train_id
    assert "bicubic" in test_id and "224" in test_id
    cfg.INPUT.RRCROP_SCALE = (0.5, 1.0)  # train-only setting: test identity unchanged
    assert describe_transform(cfg, False) == test_id and describe_transform(cfg, True) != train_id
    for key, value in (("INTERPOLATION", "bilinear"), ("PIXEL_MEAN", [0.5, 0.5, 0.5]), ("SIZE", (336, 336))):
        other = coop_input_cfg()
        setattr(other.INPUT, key, value)
        assert describe_transform(other, False) != test_id
    cfg.INPUT.NO_TRANSFORM = True
    assert describe_transform(cfg, True) == "none" and build_transform(cfg, True) is None


def test_transform_config_errors():
    cfg = get_cfg_default()
    cfg.INPUT.TRANSFORMS = ("random_flipp",)
    with pytest.raises(ConfigError, match="random_flipp") as e:
        build_transform(cfg, is_train=True)
    assert "Did you mean 'random_flip'" in str(e.value) and "random_resized_crop" in str(e.value)
    cfg.INPUT.TRANSFORMS = ("randaugment",)
    with pytest.raises(ConfigError, match="not implemented"):
        build_transform(cfg, is_train=True)
    cfg.INPUT.TRANSFORMS = ()
    cfg.INPUT.INTERPOLATION = "lanczos"
    with pytest.raises(ConfigError, match="INTERPOLATION"):
        describe_transform(cfg, is_train=False)


def test_read_image(tmp_path):
    Image.new("L", (8, 8), 128).save(tmp_path / "gray.png")
    img = read_image(tmp_path / "gray.png")
    assert img.mode == "RGB" and img.size == (8, 8)
    with pytest.raises(DatasetError, match="not found"):
        read_image(tmp_path / "missing.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="Cannot read"):
        read_image(tmp_path / "bad.jpg")


def test_dataset_modules_import_no_cycle():
    """No module of the package imports (at any depth, lazily or not) a module that imports it back."""
    import ast

    folder = os.path.dirname(datasets.__file__)
    names = {f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py"}
    graph = {}
    for name in names:
        with open(os.path.join(folder, name + ".py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level == 1 or module.startswith("datasets"):
                    tail = module.split(".")[-1] if module not in ("", "datasets") else ""
                    deps.update([tail] if tail else [a.name for a in node.names])
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith("datasets."))
        graph[name] = deps & names

    def reaches(start, goal, seen=()):
        return any(d == goal or (d not in seen and reaches(d, goal, seen + (d,))) for d in graph[start])

    assert graph["base"] >= {"fewshot", "records"}
    assert [n for n in sorted(names) if reaches(n, n)] == []
