"""Your own data (datasets/custom.py): an ImageFolder tree and a CSV / JSON list, built from
generated class-separable images, trained end to end with the tiny CLIP by every kind of method,
through train.py, sweep.py and study.py; the generated split is seeded and reproducible; the
user's mistakes are one-line errors."""
import csv
import json
import os
import random
import shutil
from collections import Counter

import numpy as np
import pytest
import yaml

import datasets
import study
import sweep
import train
from engine.config import get_cfg_default, merge_file
from engine.recipes import recipe
from runs import results
from synthetic.images import class_image, save_image

# Class names the tiny CLIP was pretrained on (synthetic EuroSAT), as folder names with underscores.
CLASSES = ("Annual Crop Land", "Forest", "Highway or Road", "River", "Sea or Lake")
PER_CLASS = 20  # generated split: 10 train, 4 val, 6 test per class
CHANCE = 100.0 / len(CLASSES)


# The same images under names the tiny CLIP never saw: zero-shot is at chance, so what beats it learned.
UNKNOWN_NAMES = dict(zip(CLASSES, ("glorp", "zintar", "vexil", "quamb", "drosk")))


def write_tree(top, classes=CLASSES, per_class=PER_CLASS, seed=0, folder=lambda c: c.replace(" ", "_")):
    rng = np.random.default_rng(seed)
    for c in classes:
        os.makedirs(os.path.join(top, folder(c)), exist_ok=True)
        for i in range(per_class):
            save_image(class_image(c, rng), os.path.join(top, folder(c), f"img_{i:03d}.jpg"))
    return str(top)


def write_csv(path, rows, header=("path", "label")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def tree_rows(top):
    """(relative path, label) of every image of the tree, the label as the folder names it."""
    return [(f"{c}/{f}", c) for c in sorted(os.listdir(top)) if c != "split_fewshot"
            for f in sorted(os.listdir(os.path.join(top, c)))]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("own")
    tree = write_tree(base / "tree")
    write_tree(base / "unknown", folder=UNKNOWN_NAMES.get)
    lists = base / "lists"
    shutil.copytree(tree, lists / "images")
    write_csv(lists / "images.csv", [(f"images/{p}", label) for p, label in tree_rows(tree)])
    return {"tree": tree, "lists": str(lists), "cache": str(base / "features"), "base": base}


def build(root, name="ImageFolder", shots=-1, seed=1, **keys):
    """The dataset as train.py builds it from its example yaml, with DATASET / DATASET.CUSTOM keys."""
    cfg = get_cfg_default()
    merge_file(cfg, f"configs/datasets/{name.lower()}.yaml", "dataset config file")
    cfg.DATASET.ROOT, cfg.DATASET.NUM_SHOTS, cfg.SEED, cfg.VERBOSE = str(root), shots, seed, False
    for key, value in keys.items():
        node, leaf = (cfg.DATASET.CUSTOM, key) if key in cfg.DATASET.CUSTOM else (cfg.DATASET, key)
        node[leaf] = value
    random.seed(seed)  # as train.py seeds the run before building the data
    return datasets.build_dataset(cfg)


def parts(ds):
    return [sorted(d.impath for d in split) for split in (ds.train_x, ds.val, ds.test)]


# ---------------------------------------------------------------------------------------------
# The dataset


def test_tree_classes_and_generated_split(data):
    ds = build(data["tree"])
    assert ds.classnames == list(CLASSES)  # folder names, underscores as spaces, sorted
    for split, n in ((ds.train_x, 10), (ds.val, 4), (ds.test, 6)):
        assert Counter(d.label for d in split) == {y: n for y in range(len(CLASSES))}
        assert all(ds.classnames[d.label].replace(" ", "_") == os.path.basename(os.path.dirname(d.impath))
                   for d in split)
    assert ds.provenance == {"split_origin": "generated seed=1"}
    assert sorted(sum(parts(ds), [])) == sorted(os.path.join(data["tree"], p) for p, _ in tree_rows(data["tree"]))
    # Base-to-new: the first ceil(5/2) classes, relabelled 0.., and the rest.
    base, new = build(data["tree"], SUBSAMPLE_CLASSES="base"), build(data["tree"], SUBSAMPLE_CLASSES="new")
    assert base.classnames == list(CLASSES[:3]) and new.classnames == list(CLASSES[3:])
    assert {d.label for d in new.test} == {0, 1} and all(new.classnames[d.label] == d.classname for d in new.test)


def test_generated_split_is_seeded_and_reproducible(data):
    """The same SPLIT_SEED gives the same split whatever the run seed (one test set for every seed
    of a study); another SPLIT_SEED another split; the fractions are keys."""
    first = build(data["tree"], seed=1)
    assert parts(build(data["tree"], seed=2)) == parts(first)
    other = build(data["tree"], SPLIT_SEED=2)
    assert parts(other)[2] != parts(first)[2] and other.provenance["split_origin"] == "generated seed=2"
    wide = build(data["tree"], TRAIN_FRACTION=0.6, VAL_FRACTION=0.1)
    assert [len(p) for p in parts(wide)] == [60, 10, 30]


def test_fewshot_subsets_are_drawn_per_seed_and_cached_per_split(data, tmp_path):
    tree = shutil.copytree(data["tree"], tmp_path / "tree")
    a = build(tree, shots=2, seed=1)
    assert Counter(d.label for d in a.train_x) == {y: 2 for y in range(5)} and a.provenance["fewshot_origin"] == "sampled"
    again = build(tree, shots=2, seed=1)
    assert parts(again) == parts(a) and again.provenance["fewshot_origin"] == "cache"
    assert parts(build(tree, shots=2, seed=2))[0] != parts(a)[0]
    build(tree, shots=2, seed=1, SPLIT_SEED=3)
    assert sorted(os.listdir(tree / "split_fewshot")) == ["generated_seed1_train0.5_val0.2",
                                                          "generated_seed3_train0.5_val0.2"]
    assert build(tree).classnames == list(CLASSES)  # split_fewshot/ is not a class


def test_split_folders_are_the_split(tmp_path):
    top = tmp_path / "tree"
    write_tree(top / "train", per_class=10)
    write_tree(top / "test", per_class=4, seed=1)
    ds = build(top)
    assert ds.provenance["split_origin"] == "given, val generated seed=1"
    assert [len(p) for p in parts(ds)] == [40, 10, 20]  # val: round(10 * 0.2) of each class's train
    assert all("/test/" in p for p in parts(ds)[2])
    write_tree(top / "val", per_class=3, seed=2)
    ds = build(top)
    assert ds.provenance["split_origin"] == "given" and [len(p) for p in parts(ds)] == [50, 15, 20]


def test_csv_and_json_lists_give_the_tree_s_split(data, tmp_path):
    """The same images, listed: the same classes and the same seeded split as the tree."""
    tree = build(data["tree"])
    listed = build(data["lists"], name="ImageList")
    rel = lambda ds, top: [[os.path.relpath(p, top) for p in part] for part in parts(ds)]  # noqa: E731
    assert listed.classnames == tree.classnames
    assert rel(listed, os.path.join(data["lists"], "images")) == rel(tree, data["tree"])
    rows = [{"path": p, "label": label.replace("_", " ")} for p, label in tree_rows(data["tree"])]
    shutil.copytree(data["tree"], tmp_path / "images")
    (tmp_path / "list.json").write_text(json.dumps([dict(r, path="images/" + r["path"]) for r in rows]))
    as_json = build(tmp_path, name="ImageList", PATH="list.json")
    assert as_json.classnames == tree.classnames
    assert rel(as_json, tmp_path / "images") == rel(tree, data["tree"])


def test_csv_split_column_and_class_names_file(data, tmp_path):
    rows = tree_rows(data["tree"])
    split_of = {p: ("test" if int(p[-7:-4]) < 5 else "val" if int(p[-7:-4]) < 8 else "train") for p, _ in rows}
    codes = {c: f"c{i}" for i, c in enumerate(sorted({label for _, label in rows}))}
    write_csv(tmp_path / "labels.csv", [(f"{data['tree']}/{p}", codes[c], split_of[p]) for p, c in rows],
              header=("path", "label", "split"))
    (tmp_path / "names.txt").write_text("".join(f"{codes[c]} {c.replace('_', ' ').lower()}\n"
                                                for c in reversed(sorted(codes))))
    ds = build(tmp_path, name="ImageList", PATH="labels.csv", CLASSNAMES="names.txt")
    assert ds.classnames == [c.lower() for c in reversed(CLASSES)]  # the file's order sets the labels
    assert ds.provenance["split_origin"] == "given" and [len(p) for p in parts(ds)] == [60, 15, 25]
    assert all(split_of[os.path.relpath(d.impath, data["tree"])] == "test" for d in ds.test)


# ---------------------------------------------------------------------------------------------
# Errors: one line each, through train.py


def error_of(capsys, root, config="imagefolder", *opts):
    code = train.main(["--root", str(root), "--trainer", "ZeroshotCLIP", "--dataset-config-file",
                       f"configs/datasets/{config}.yaml", "--output-dir", str(root) + "_out", "--overwrite", "--eval-only",
                       *map(str, opts)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_errors_are_one_line(tmp_path, capsys):
    top = write_tree(tmp_path / "tree", classes=CLASSES[:2], per_class=6)
    os.makedirs(tmp_path / "tree" / "Empty_Class")
    assert "class folder" in error_of(capsys, top) and "Empty_Class has no images" in error_of(capsys, top)
    os.rmdir(tmp_path / "tree" / "Empty_Class")

    assert "folder not found" in error_of(capsys, tmp_path / "nowhere")

    rows = [(p, label) for p, label in tree_rows(top)]
    write_csv(tmp_path / "tree" / "images.csv", rows + [("Forest/img_999.jpg", "Forest")])
    err = error_of(capsys, top, "imagelist")
    assert "images.csv:14: image not found:" in err and "Forest/img_999.jpg" in err

    write_csv(tmp_path / "tree" / "images.csv", rows + [("Forest/img_000.jpg", "Zebra")])
    (tmp_path / "tree" / "names.txt").write_text("Annual_Crop_Land annual crop land\nForest forest\n")
    err = error_of(capsys, top, "imagelist", "DATASET.CUSTOM.CLASSNAMES", "names.txt")
    assert "label 'Zebra' is not in" in err and "names.txt" in err

    write_csv(tmp_path / "tree" / "images.csv", [(p, str(i % 2)) for i, (p, _) in enumerate(rows)])
    assert "are numbers" in error_of(capsys, top, "imagelist")

    write_csv(tmp_path / "tree" / "images.csv", rows, header=("file", "class"))
    assert "must name the columns path,label" in error_of(capsys, top, "imagelist")

    write_tree(tmp_path / "small", classes=CLASSES[:2], per_class=3)
    assert "too few to split" in error_of(capsys, tmp_path / "small")

    assert "DATASET.TEMPLATE must hold one {}" in error_of(capsys, top, "imagefolder", "DATASET.TEMPLATE",
                                                           "a photo of a cat.")


# ---------------------------------------------------------------------------------------------
# Every kind of method, end to end (the recipe each method's config folder gives own data)

TIP_VIEWS = ["TRAINER.TIP.AUGMENT_EPOCH", 2]
FAST = {"TaskRes": [], "CoOp": ["OPTIM.MAX_EPOCH", 20], "TipAdapterF": ["OPTIM.MAX_EPOCH", 5, *TIP_VIEWS],
        "TipAdapter": TIP_VIEWS, "LinearProbe": [], "ZeroshotCLIP": []}


def run_method(data, method, out, *opts, config="imagefolder", root=None):
    r = recipe(method, f"{config}", 4)
    args = ["--root", root or data["tree"], "--seed", 1, "--trainer", method,
            "--dataset-config-file", f"configs/datasets/{config}.yaml", "--config-file", r.config,
            "--output-dir", out, *r.opts_list(), "DATASET.NUM_SHOTS", 4, "MODEL.BACKBONE.NAME", data["clip"],
            "DATALOADER.NUM_WORKERS", 0, "TRAIN.TENSORBOARD", False, "FEATURES.MODE", "cached",
            "FEATURES.CACHE_DIR", data["cache"], "FEATURES.NUM_VIEWS", 2, *FAST[method], *opts]
    if method == "ZeroshotCLIP":
        args.append("--eval-only")
    assert train.main([str(a) for a in args]) == 0
    return results(out)


@pytest.fixture(scope="module")
def runs(data, tiny_clip_path):
    data["clip"] = tiny_clip_path
    return data


@pytest.mark.parametrize("method", ["TaskRes", "TipAdapter", "LinearProbe"])
def test_feature_methods_learn_on_a_tree(runs, method):
    r = run_method(runs, method, runs["base"] / method)
    assert r["dataset"] == "ImageFolder" and r["total"] == 30
    assert r["accuracy"] > CHANCE + 40
    assert r["extras"]["split_origin"] == "generated seed=1" and r["extras"]["fewshot_origin"] in ("sampled", "cache")


def test_learning_beyond_zero_shot_under_unknown_class_names(runs):
    """Folder names the CLIP does not know: zero-shot is at chance; methods that learn from the
    few-shot images (labels from the folders) go far beyond it."""
    unknown = str(runs["base"] / "unknown")
    zs = run_method(runs, "ZeroshotCLIP", runs["base"] / "u_zs", root=unknown)
    assert zs["accuracy"] < CHANCE + 15
    for method in ("LinearProbe", "TipAdapter"):
        assert run_method(runs, method, runs["base"] / f"u_{method}", root=unknown)["accuracy"] > zs["accuracy"] + 30


@pytest.mark.slow
@pytest.mark.parametrize("method", ["CoOp", "TipAdapterF"])
def test_prompt_and_finetuned_methods_learn_on_a_tree(runs, method):
    r = run_method(runs, method, runs["base"] / method)
    assert r["accuracy"] > CHANCE + 40


def test_template_key_reaches_the_prompts(runs):
    r = run_method(runs, "ZeroshotCLIP", runs["base"] / "zs", "DATASET.TEMPLATE", "a blurry picture of {}!")
    log = (runs["base"] / "zs" / "log.txt").read_text()
    assert "'a blurry picture of Annual Crop Land!'" in log
    assert r["config"]["DATASET"]["TEMPLATE"] == "a blurry picture of {}!"  # recorded with the run
    default = run_method(runs, "ZeroshotCLIP", runs["base"] / "zs_default")
    assert "'a photo of a Annual Crop Land.'" in (runs["base"] / "zs_default" / "log.txt").read_text()
    assert default["accuracy"] > CHANCE  # the tiny CLIP knows these classes zero-shot


def test_a_csv_list_trains_end_to_end(runs):
    r = run_method(runs, "TaskRes", runs["base"] / "csv_taskres", config="imagelist", root=runs["lists"])
    assert r["dataset"] == "ImageList" and r["accuracy"] > CHANCE + 40
    assert r["extras"]["split_origin"] == "generated seed=1"


def test_sweep_and_study_run_on_own_data(runs, tmp_path):
    out = tmp_path / "sweep"
    code = sweep.main(["--shots", "2", "--seeds", "1", "2", "--recipe", "--root", runs["tree"], "--trainer", "TipAdapter",
                       "--dataset-config-file", "configs/datasets/imagefolder.yaml", "--output-dir", str(out),
                       "MODEL.BACKBONE.NAME", runs["clip"], "DATALOADER.NUM_WORKERS", "0",
                       "TRAIN.TENSORBOARD", "False", "FEATURES.MODE", "cached", "FEATURES.CACHE_DIR", runs["cache"],
                       "FEATURES.NUM_VIEWS", "2", *map(str, TIP_VIEWS)])
    assert code == 0
    assert {results(out / "default_2shots" / f"seed{s}")["extras"]["split_origin"] for s in (1, 2)} == {
        "generated seed=1"}
    spec = {"name": "own", "datasets": ["imagefolder"], "shots": [2], "seeds": [1], "methods": ["LinearProbe"],
            "root": runs["tree"], "output": str(tmp_path / "study"),
            "opts": {"MODEL.BACKBONE.NAME": runs["clip"], "DATALOADER.NUM_WORKERS": 0, "TRAIN.TENSORBOARD": False,
                     "FEATURES.MODE": "cached", "FEATURES.CACHE_DIR": runs["cache"], "FEATURES.NUM_VIEWS": 2}}
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert study.main(["run", str(path)]) == 0
    done = [os.path.join(d, "results.json") for d, _, files in os.walk(tmp_path / "study") if "results.json" in files]
    assert len(done) == 1 and json.load(open(done[0]))["accuracy"] > CHANCE
