"""analysis.compare: the method comparison table (few-shot and base-to-new) from results.json."""
import json
import os

import pytest

from analysis import compare


def write_run(root, name, trainer, dataset, shots, seed, acc, subsample="all", **extras):
    folder = os.path.join(root, name)
    os.makedirs(folder)
    extras = dict(extras, subsample_classes=subsample)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump({"accuracy": acc, "split": "test", "trainer": trainer, "dataset": dataset, "num_shots": shots,
                   "seed": seed, "backbone": "RN50", "extras": extras}, f)


@pytest.fixture()
def tree(tmp_path):
    root = str(tmp_path / "out")
    for ds, offset in (("EuroSAT", 0.0), ("DescribableTextures", 10.0)):
        write_run(root, f"{ds}/zs", "ZeroshotCLIP", ds, -1, 1, 40.0 + offset)
        for k in (1, 16):
            for s, noise in ((1, -1.0), (2, 1.0)):
                write_run(root, f"{ds}/coop{k}/seed{s}", "CoOp", ds, k, s, 50.0 + k + offset + noise)
                write_run(root, f"{ds}/tr{k}/seed{s}", "TaskRes", ds, k, s, 55.0 + k + offset + noise,
                          base="regular", alpha=0.5)
        # An evaluation of a trained checkpoint is not a training run.
        write_run(root, f"{ds}/eval", "CoOp", ds, 16, 1, 1.0, eval_only=True, model_dir="x")
        for s in (1, 2):
            write_run(root, f"{ds}/b2n/base/seed{s}", "CoCoOp", ds, 16, s, 80.0 + s, subsample="base")
            write_run(root, f"{ds}/b2n/new/seed{s}", "CoCoOp", ds, 16, s, 60.0 + s, subsample="new",
                      eval_only=True, model_dir="b")
    return root


def test_few_shot_and_base_to_new_tables(tree, tmp_path, capsys):
    md, csv = str(tmp_path / "t.md"), str(tmp_path / "t.csv")
    assert compare.main([tree, "--out", md, "--csv", csv, "--figure", str(tmp_path / "f.png")]) == 0
    text = open(md).read()
    eurosat = text[text.index("### EuroSAT"):text.index("### Average")]
    assert "| CoOp | unknown | 51.00 ± 1.00 | 66.00 ± 1.00 |" in eurosat  # 50 + shots, seeds at -1 / +1
    assert "| TaskRes | unknown | 56.00 ± 1.00 | 71.00 ± 1.00 |" in eurosat
    assert "| ZeroshotCLIP | none | 40.00 | 40.00 |" in eurosat  # zero-shot first, in every column
    assert eurosat.index("ZeroshotCLIP") < eurosat.index("CoOp")
    average = text[text.index("### Average over 2 datasets"):text.index("### Base-to-new")]
    assert "| CoOp | unknown | 56.00 ± 1.00 | 71.00 ± 1.00 |" in average and "| ZeroshotCLIP | none | 45.00 | 45.00 |" in average
    # base 81.5, new 61.5 (seed means); HM = 2ab/(a+b)
    hm = 2 * 81.5 * 61.5 / (81.5 + 61.5)
    assert f"| EuroSAT | CoCoOp | unknown | 16 | 81.50 | 61.50 | {hm:.2f} |" in text
    assert f"| Average | CoCoOp | unknown | 16 | 81.50 | 61.50 | {hm:.2f} |" in text
    assert "1.00 |" not in eurosat.replace("± 1.00 |", "")  # the eval-only folder (1%) is not a run
    rows = open(csv).read().splitlines()
    assert rows[0] == ",".join(compare.CSV_FIELDS) and any(r.startswith("base-to-new hm,") for r in rows)
    assert os.path.getsize(tmp_path / "f.png") > 0


def test_no_runs_is_one_clear_error(tmp_path, capsys):
    os.makedirs(tmp_path / "empty")
    assert compare.main([str(tmp_path / "empty")]) == 1
    assert "no finished runs" in capsys.readouterr().err


def test_parse_test_res_base_to_new(tmp_path, capsys):
    import parse_test_res

    root = tmp_path / "base2new"
    for part, accs in (("train_base", (80.0, 82.0)), ("test_new", (60.0, 64.0))):
        for ds in ("eurosat", "dtd"):
            for seed, acc in zip((1, 2), accs):
                folder = root / part / ds / "shots_16" / "CoCoOp" / "cfg" / f"seed{seed}"
                folder.mkdir(parents=True)
                signal = "=> result" if part == "test_new" else "Finish training\n=> result"
                (folder / "log.txt").write_text(f"{signal}\n* accuracy: {acc:.1f}%\n")
    assert parse_test_res.main([str(root), "--base2new"]) == 0
    out = capsys.readouterr().out.splitlines()
    hm = 2 * 81.0 * 62.0 / (81.0 + 62.0)
    assert out[0].split() == ["experiment", "base", "new", "HM"]
    assert out[1].split() == ["dtd/shots_16/CoCoOp/cfg", "81.00", "62.00", f"{hm:.2f}"]
    assert out[-1].split() == ["average", "81.00", "62.00", f"{hm:.2f}"]
    assert parse_test_res.main([str(tmp_path), "--base2new"]) == 2


def test_runs_with_other_settings_are_told_apart_by_their_recorded_config(tmp_path):
    from analysis.curves import curve_table
    from analysis.runs import find_runs

    root = str(tmp_path / "out")
    for name, epochs in (("demo", 20), ("readme", 100)):
        for seed in (1, 2):
            folder = os.path.join(root, name, f"seed{seed}")
            os.makedirs(folder)
            config = {"SEED": seed, "OUTPUT_DIR": folder, "OPTIM": {"MAX_EPOCH": epochs, "LR": 0.002}}
            if name == "demo":  # an older record: every method's nodes, not only its own
                config["TRAINER"] = {"COOP": {"N_CTX": 16}}
            with open(os.path.join(folder, "results.json"), "w") as f:
                json.dump({"accuracy": 50.0 + epochs / 10 + seed, "split": "test", "trainer": "TaskRes",
                           "dataset": "EuroSAT", "num_shots": 16, "seed": seed, "config": config,
                           "extras": {"base": "regular", "alpha": 0.5}}, f)
    rows = curve_table(find_runs(root))
    assert sorted((r["method"], r["mean"]) for r in rows) == [
        ("TaskRes [OPTIM.MAX_EPOCH=100]", 61.5), ("TaskRes [OPTIM.MAX_EPOCH=20]", 53.5)]


@pytest.mark.slow
def test_all_methods_script_builds_the_comparison(tmp_path, tiny_clip_path):
    import subprocess

    from synthetic.layouts import write_eurosat

    write_eurosat(str(tmp_path / "data"), per_class=12)
    env = dict(os.environ, DATA=str(tmp_path / "data"), DATASETS="eurosat", SHOTS="1 2", SEEDS="1",
               BACKBONE=tiny_clip_path, OUTPUT=str(tmp_path / "out"),
               EXTRA_OPTS=f"OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0 TRAIN.TENSORBOARD False "
                          f"FEATURES.CACHE_DIR {tmp_path / 'store'}")
    subprocess.run(["bash", "scripts/all_methods.sh"], env=env, check=True, capture_output=True)
    text = open(tmp_path / "out" / "comparison.md").read()
    for method in ("ZeroshotCLIP", "LinearProbe", "CoOp", "CoCoOp", "CLIP_Adapter", "TipAdapter", "TipAdapterF",
                   "TaskRes (enhanced base)", "TaskRes ["):
        assert f"| {method}" in text, method
    assert "TaskResEnhancedBase" not in text
    assert os.path.getsize(tmp_path / "out" / "curves.png") > 0


@pytest.mark.slow
def test_base_to_new_scripts_for_every_method_build_the_hm_table(tmp_path, tiny_clip_path):
    import subprocess

    import parse_test_res
    from synthetic.layouts import write_eurosat

    write_eurosat(str(tmp_path / "data"), per_class=8)
    env = dict(os.environ, DATA=str(tmp_path / "data"), OUTPUT=str(tmp_path / "out"), SHOTS="2",
               BACKBONE=tiny_clip_path,
               EXTRA_OPTS=f"OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0 TRAIN.TENSORBOARD False "
                          f"FEATURES.MODE cached FEATURES.CACHE_DIR {tmp_path / 'store'}")
    methods = ("ZeroshotCLIP", "TaskRes", "CoOp", "CoCoOp", "MaskTuning", "CoOpMaskTuning")
    for method in methods:
        for phase in ("train", "test"):
            subprocess.run(["bash", "scripts/base2new.sh", phase, method, "eurosat", "1"], env=env, check=True,
                           capture_output=True)
    assert compare.main([str(tmp_path / "out"), "--out", str(tmp_path / "t.md")]) == 0
    text = open(tmp_path / "t.md").read()
    for method in methods:
        assert f"| EuroSAT | {method} [" in text, method
    assert parse_test_res.main([str(tmp_path / "out" / "base2new"), "--base2new"]) == 0
