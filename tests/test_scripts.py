"""scripts/taskres/*.sh, the scripts/common.sh helpers and the per-method drivers with a stand-in
interpreter, and the yaml files under configs/."""
import glob
import os

import pytest

from runs import opt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(REPO, "scripts", "taskres", "main.sh")
ZEROSHOT = os.path.join(REPO, "scripts", "taskres", "zeroshot.sh")
CFG = "adam_lr2e-3_B256_ep200"

def test_three_seeds_regular_base(fake):
    run, recorded, data, tmp = fake
    r = run(MAIN, "caltech101", CFG, "none", 16, 0.5, DATA=data)
    assert r.returncode == 0, r.stderr
    calls = recorded()
    assert len(calls) == 3
    for seed, argv in zip((1, 2, 3), calls):
        out = f"{tmp}/output/caltech101/TaskRes/{CFG}_16shots/base_regular_alpha0.5/seed{seed}"
        assert argv == [
            "train.py", "--root", str(data), "--seed", str(seed), "--trainer", "TaskRes",
            "--dataset-config-file", "configs/datasets/caltech101.yaml",
            "--config-file", f"configs/trainers/TaskRes/{CFG}.yaml",
            "--output-dir", out, "--enhanced-base", "none",
            "DATASET.NUM_SHOTS", "16", "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5",
        ]
        assert os.path.isfile(os.path.join(out, "results.json"))


def test_relative_output_from_repo_root(fake):
    run, recorded, data, tmp = fake
    r = run(MAIN, "dtd", CFG, "none", 1, 0.5, cwd=REPO, DATA=data, SEEDS="1",
            OUTPUT=tmp / "out")
    assert r.returncode == 0, r.stderr
    (argv,) = recorded()
    assert opt(argv, "--output-dir") == f"{tmp}/out/dtd/TaskRes/{CFG}_1shots/base_regular_alpha0.5/seed1"


def test_enhanced_base_gets_its_own_folder(fake):
    run, recorded, data, tmp = fake
    base = tmp / "strong_base" / "Caltech101" / "rn50_16shots"
    base.mkdir(parents=True)
    (base / "model.pth.tar").write_bytes(b"x")
    run(MAIN, "caltech101", CFG, "none", 16, 0.5, DATA=data, SEEDS="1")
    r = run(MAIN, "caltech101", CFG, "strong_base/Caltech101/rn50_16shots/model.pth.tar", 16, 0.5,
            DATA=data, SEEDS="1")
    assert r.returncode == 0, r.stderr
    regular, enhanced = recorded()  # the enhanced run was not skipped
    assert opt(regular, "--output-dir").endswith(f"{CFG}_16shots/base_regular_alpha0.5/seed1")
    assert opt(enhanced, "--output-dir").endswith(f"{CFG}_16shots/base_enhanced_alpha0.5/seed1")
    assert opt(enhanced, "--enhanced-base") == str(base / "model.pth.tar")


def test_missing_enhanced_base_file(fake):
    run, recorded, data, _ = fake
    r = run(MAIN, "caltech101", CFG, "nowhere/model.pth.tar", 16, 0.5, DATA=data)
    assert r.returncode != 0
    assert "enhanced base" in r.stderr and "not found" in r.stderr
    assert recorded() == []


def test_finished_runs_skipped_unfinished_rerun(fake):
    run, recorded, data, tmp = fake
    exp = tmp / "output" / "caltech101" / "TaskRes" / f"{CFG}_16shots" / "base_regular_alpha0.5"
    (exp / "seed1").mkdir(parents=True)
    (exp / "seed1" / "results.json").write_text('{"accuracy": 90.0}')
    (exp / "seed2").mkdir()
    (exp / "seed2" / "log.txt").write_text("epoch [200/200]\n")
    (exp / "seed2" / "log.txt-2024-01-01-00-00-00").write_text(
        "epoch [200/200]\nFinish training\nEvaluate on the *test* set\n=> result\n* accuracy: 90.0%\n")
    (exp / "seed3").mkdir()  # killed during training
    (exp / "seed3" / "log.txt").write_text("epoch [12/200] batch [5/7]\n")
    (exp / "seed4").mkdir()  # a result block but no "Finish training" (not a finished training run)
    (exp / "seed4" / "log.txt").write_text("=> result\n* accuracy: 10.0%\n")
    r = run(MAIN, "caltech101", CFG, "none", 16, 0.5, DATA=data, SEEDS="1 2 3 4 5")
    assert r.returncode == 0, r.stderr
    assert [opt(a, "--seed") for a in recorded()] == ["3", "4", "5"]
    assert f"Skip: finished run at {tmp}/output" in r.stdout
    assert "Resume:" in r.stdout

    # Everything is finished now: a second call runs nothing.
    r = run(MAIN, "caltech101", CFG, "none", 16, 0.5, DATA=data, SEEDS="1 2 3 4 5")
    assert r.returncode == 0, r.stderr
    assert len(recorded()) == 3
    assert r.stdout.count("Skip:") == 5


def test_missing_data_root(fake):
    run, recorded, _, _ = fake
    r = run(MAIN, "caltech101", CFG, "none", 16, 0.5)
    assert r.returncode != 0
    assert "DATA" in r.stderr and "6th argument" in r.stderr
    assert recorded() == []


def test_data_argument_wins_over_environment(fake):
    run, recorded, data, tmp = fake
    r = run(MAIN, "caltech101", CFG, "none", 16, 0.5, data, DATA=tmp / "elsewhere", SEEDS="2")
    assert r.returncode == 0, r.stderr
    (argv,) = recorded()
    assert opt(argv, "--root") == str(data)


def test_nonexistent_data_root(fake):
    run, recorded, _, tmp = fake
    r = run(MAIN, "caltech101", CFG, "none", 16, 0.5, tmp / "missing")
    assert r.returncode != 0 and "not a folder" in r.stderr
    assert recorded() == []


def test_usage_and_unknown_config(fake):
    run, recorded, data, _ = fake
    r = run(MAIN, "caltech101", CFG, "none", DATA=data)
    assert r.returncode != 0 and "usage:" in r.stderr
    r = run(MAIN, "caltech101", "adam_nope", "none", 16, 0.5, DATA=data)
    assert r.returncode != 0
    assert "configs/trainers/TaskRes/adam_nope.yaml not found" in r.stderr and CFG in r.stderr
    assert recorded() == []


def test_backbone_and_extra_opts(fake):
    run, recorded, data, tmp = fake
    r = run(MAIN, "imagenet", "adam_lr2e-4_B256_ep200", "none", 16, 0.5, DATA=data, SEEDS="1",
            BACKBONE="ViT-B/16", EXTRA_OPTS="TRAINER.TaskRes.PREC fp32 OPTIM.MAX_EPOCH 2")
    assert r.returncode == 0, r.stderr
    (argv,) = recorded()
    assert opt(argv, "--output-dir") == (
        f"{tmp}/output/imagenet/TaskRes/adam_lr2e-4_B256_ep200-ViT-B-16_16shots/base_regular_alpha0.5/seed1")
    assert argv[-10:] == ["DATASET.NUM_SHOTS", "16", "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5",
                          "MODEL.BACKBONE.NAME", "ViT-B/16",
                          "TRAINER.TaskRes.PREC", "fp32", "OPTIM.MAX_EPOCH", "2"]


def test_zeroshot_script(fake):
    run, recorded, data, tmp = fake
    r = run(ZEROSHOT, "oxford_pets", "rn50", data)
    assert r.returncode == 0, r.stderr
    (argv,) = recorded()
    assert argv == [
        "train.py", "--root", str(data), "--trainer", "ZeroshotCLIP2",
        "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
        "--config-file", "configs/trainers/ZeroshotCLIP/rn50.yaml",
        "--output-dir", f"{tmp}/output/ZeroshotCLIP2/rn50/oxford_pets", "--eval-only",
    ]
    r = run(ZEROSHOT, "oxford_pets", "rn50")
    assert r.returncode != 0 and "DATA" in r.stderr


# ---------------------------------------------------------------- scripts/common.sh helpers

COMMON = os.path.join(REPO, "scripts", "common.sh")


def driver(tmp, body):
    """A small driver script that sources common.sh and runs `body`."""
    path = tmp / "driver.sh"
    path.write_text(f'set -euo pipefail\n. "{COMMON}"\nusage() {{ echo "usage: driver.sh A [DATA]" >&2; }}\n'
                    + body)
    return path


def test_run_seeds_fills_the_template_and_skips_finished_seeds(fake):
    run, recorded, _, tmp = fake
    script = driver(tmp, 'run_seeds "$OUT/a b/seed{seed}" --seed {seed} --output-dir {dir} X{seed} "{seed} " LAST\n')
    r = run(script, OUT=tmp / "out", SEEDS="1 3")
    assert r.returncode == 0, r.stderr
    dirs = {s: f"{tmp}/out/a b/seed{s}" for s in ("1", "3", "4")}
    # Only whole {seed} / {dir} arguments are replaced.
    assert recorded() == [["train.py", "--seed", s, "--output-dir", dirs[s], "X{seed}", "{seed} ", "LAST"]
                          for s in ("1", "3")]
    assert r.stdout.splitlines() == [f"Run: {dirs['1']}", f"Run: {dirs['3']}"]

    r = run(script, OUT=tmp / "out", SEEDS="1 3 4")
    assert r.returncode == 0, r.stderr
    assert [opt(a, "--seed") for a in recorded()] == ["1", "3", "4"]
    assert r.stdout.splitlines() == [f"Skip: finished run at {dirs['1']}", f"Skip: finished run at {dirs['3']}",
                                     f"Run: {dirs['4']}"]

    # The first failing seed stops the loop with its status.
    r = run(script, OUT=tmp / "out", SEEDS="5 6", PYTHON="false")
    assert r.returncode == 1
    assert r.stdout.splitlines() == [f"Run: {tmp}/out/a b/seed5"]


def test_check_nargs_and_check_data(fake):
    run, recorded, data, tmp = fake
    script = driver(tmp, 'check_nargs 1 2 $# || exit 2\nDATA=${2:-${DATA:-}}\ncheck_data 2nd || exit 2\n'
                         'echo "DATA=$DATA"\n')
    for args in ((), ("a", "b", "c")):
        r = run(script, *args, DATA=data)
        assert (r.returncode, r.stdout, r.stderr) == (2, "", "usage: driver.sh A [DATA]\n")
    r = run(script, "a")
    assert r.returncode == 2
    assert r.stderr == ("error: no dataset root given: set DATA=/path/to/datasets or pass it as the 2nd argument\n"
                        "usage: driver.sh A [DATA]\n")
    r = run(script, "a", "missing")
    assert r.returncode == 2 and r.stderr == f"error: dataset root {tmp}/missing is not a folder\n"
    r = run(script, "a", DATA="data")  # relative to where the script was started
    assert r.returncode == 0 and r.stdout == f"DATA={data}\n"
    assert recorded() == []


def test_backbone_override(fake):
    run, _, _, tmp = fake
    script = driver(tmp, 'OPTS=(A 1)\nbackbone_override rn50\nprintf "%s\\n" "$CFG_TAG" "${OPTS[@]}"\n')
    assert run(script).stdout.split() == ["rn50", "A", "1"]
    assert run(script, BACKBONE="ViT-B/16").stdout.split() == [
        "rn50-ViT-B-16", "A", "1", "MODEL.BACKBONE.NAME", "ViT-B/16"]


def test_require_checkpoint_and_run_eval(fake):
    run, recorded, _, tmp = fake
    script = driver(tmp, 'require_checkpoint "$CKPT" "error: no masks in $CKPT" "  train first" || exit 2\n'
                         'run_eval "$OUT" --output-dir "$OUT" --eval-only\n')
    ckpt, out = tmp / "model" / "checkpoint", tmp / "eval"
    r = run(script, CKPT=ckpt, OUT=out)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"error: no masks in {ckpt}\n  train first\n")
    assert recorded() == []
    ckpt.parent.mkdir()
    ckpt.write_text("x")
    r = run(script, CKPT=ckpt, OUT=out)
    assert r.returncode == 0 and r.stdout == f"Run: {out}\n"
    assert recorded() == [["train.py", "--output-dir", str(out), "--eval-only"]]
    r = run(script, CKPT=ckpt, OUT=out)
    assert r.returncode == 0 and r.stdout == f"Skip: finished evaluation at {out}\n"
    assert len(recorded()) == 1


# Every per-method seed-loop driver: its arguments (without DATA), the largest argument count, and
# the folder of one run without its seed<S> (the layout users and the analysis tools rely on).
DRIVERS = [
    ("taskres/main.sh", ["dtd", CFG, "none", "4", "0.5"], 6, f"dtd/TaskRes/{CFG}_4shots/base_regular_alpha0.5"),
    ("coop/main.sh", ["dtd", "rn50_ep50", "end", "16", "4", "False"], 7,
     "dtd/CoOp/rn50_ep50_4shots/nctx16_cscFalse_ctpend"),
    ("clip_adapter/main.sh", ["dtd", "rn50", "4", "0.2"], 5, "dtd/CLIP_Adapter/rn50_4shots/ratio0.2"),
    ("linear_probe/main.sh", ["dtd", "rn50", "4"], 4, "dtd/LinearProbe/rn50_4shots"),
    ("tip_adapter/main.sh", ["TipAdapterF", "dtd", "4"], 4, "dtd/TipAdapterF/dtd_4shots/search_val_epoch_val"),
    ("masktuning/main.sh", ["dtd", "4", "0.3"], 4, "dtd/MaskTuning/vit_b16_4shots/lambda0.3"),
    ("masktuning/base2new_train.sh", ["dtd"], 2, "base2new/train_base/dtd/shots_16/MaskTuning/vit_b16"),
]


@pytest.mark.parametrize("script,args,most,layout", DRIVERS, ids=[d[0] for d in DRIVERS])
def test_drivers_usage_layout_and_skip(fake, script, args, most, layout):
    run, recorded, data, tmp = fake
    path = os.path.join(REPO, "scripts", script)
    r = run(path, *args, data, "extra", *["x"] * (most - len(args) - 1))
    assert r.returncode == 2 and r.stderr.startswith(f"usage: bash scripts/{script} "), r.stderr
    r = run(path, *args[:-1], DATA=data)
    assert r.returncode == 2 and r.stderr.startswith(f"usage: bash scripts/{script} "), r.stderr
    assert recorded() == []

    r = run(path, *args, DATA=data, SEEDS="1 2")
    assert r.returncode == 0, r.stderr
    dirs = [f"{tmp}/output/{layout}/seed{s}" for s in (1, 2)]
    assert [opt(a, "--output-dir") for a in recorded()] == dirs
    assert [(opt(a, "--seed"), opt(a, "--root")) for a in recorded()] == [("1", str(data)), ("2", str(data))]
    r = run(path, *args, data, SEEDS="1 2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"Skip: finished run at {d}" for d in dirs]
    assert len(recorded()) == 2


@pytest.mark.parametrize("script,args,model", [
    ("eval.sh", ["dtd", "0.3"], "dtd/MaskTuning/vit_b16_16shots/lambda0.3/seed1"),
    ("base2new_eval.sh", ["dtd"], "base2new/train_base/dtd/shots_16/MaskTuning/vit_b16/seed1"),
])
def test_masktuning_evals_need_trained_masks(fake, script, args, model):
    run, recorded, data, tmp = fake
    path = os.path.join(REPO, "scripts", "masktuning", script)
    r = run(path, *args, data, SEEDS="1")
    assert r.returncode == 2
    assert f"error: no trained masks in {tmp}/output/{model} (expected shared/checkpoint)" in r.stderr
    train = script.replace("eval", "train")
    assert f"  bash scripts/masktuning/{train} dtd " in r.stderr
    assert recorded() == []
    (tmp / "output" / model / "shared").mkdir(parents=True)
    (tmp / "output" / model / "shared" / "checkpoint").write_text("x")
    r = run(path, *args, data, SEEDS="1")
    assert r.returncode == 0, r.stderr
    (argv,) = recorded()
    assert opt(argv, "--model-dir") == f"{tmp}/output/{model}" and "--eval-only" in argv
    r = run(path, *args, data, SEEDS="1")
    assert r.returncode == 0 and r.stdout.startswith("Skip: finished evaluation at ")
    assert len(recorded()) == 1


RUN = os.path.join(REPO, "scripts", "run.sh")


def test_run_sh_takes_the_recipe_and_the_methods_facts(fake):
    run, recorded, data, tmp = fake
    r = run(RUN, "ZeroshotCLIP", "dtd", "recipe", "4", data, SEEDS="1")  # evaluation-only: --eval-only
    assert r.returncode == 0, r.stderr
    r = run(RUN, "CoOp", "dtd", "recipe", "4", "--variant", "v", DATA=data, SEEDS="1", BACKBONE="RN101")
    assert r.returncode == 0, r.stderr
    r = run(RUN, "LinearProbe", "dtd", "rn50", "4", data, "--", "{seed}", "X", SEEDS="2")
    assert r.returncode == 0, r.stderr
    zs, coop, lp = recorded()
    assert zs == ["train.py", "--root", str(data), "--seed", "1", "--trainer", "ZeroshotCLIP",
                  "--dataset-config-file", "configs/datasets/dtd.yaml",
                  "--config-file", "configs/trainers/ZeroshotCLIP/rn50.yaml",
                  "--output-dir", f"{tmp}/output/dtd/ZeroshotCLIP/rn50_4shots/seed1", "--eval-only",
                  "DATASET.NUM_SHOTS", "4"]
    assert coop[coop.index("--config-file"):] == [
        "--config-file", "configs/trainers/CoOp/rn50_ep100.yaml",
        "--output-dir", f"{tmp}/output/dtd/CoOp/rn50_ep100-RN101_4shots/v/seed1", "DATASET.NUM_SHOTS", "4",
        "TRAINER.COOP.N_CTX", "16", "TRAINER.COOP.CSC", "False", "TRAINER.COOP.CLASS_TOKEN_POSITION", "end",
        "MODEL.BACKBONE.NAME", "RN101"]
    assert lp[lp.index("--output-dir"):] == ["--output-dir", f"{tmp}/output/dtd/LinearProbe/rn50_4shots/seed2", "2", "X"]
    assert all(a[1:3] == ["--root", str(data)] for a in (zs, coop, lp))

    r = run(RUN, "NoSuchMethod", "dtd", "rn50", "4", data)
    assert r.returncode == 2 and "NoSuchMethod" in r.stderr
    r = run(RUN, "LinearProbe", "dtd", "rn50", DATA=data)
    assert r.returncode == 2 and r.stderr.startswith("usage: bash scripts/run.sh METHOD DATASET CFG SHOTS")
    assert len(recorded()) == 3


# ---------------------------------------------------------------- configs


def all_yaml():
    """Every runnable config: the datasets' and each method folder's (engine.recipes.runnable_configs:
    not its recipe.yaml nor the `_`-named bases that others include)."""
    from engine.recipes import CONFIGS, runnable_configs

    trainers = [os.path.join(CONFIGS, m, f) for m in os.listdir(CONFIGS)
                for f in runnable_configs(os.path.join(CONFIGS, m))]
    return sorted(glob.glob(os.path.join(REPO, "configs", "datasets", "*.yaml")) + trainers)


def test_expected_config_files_exist():
    names = {os.path.relpath(p, os.path.join(REPO, "configs")) for p in all_yaml()}
    taskres = ["adam_lr2e-3_B256_ep100", "adam_lr2e-3_B256_ep200", "adam_lr2e-4_B256_ep100",
               "adam_lr2e-4_B256_ep200", "adam_lr2e-4_B256_ep200_RN101", "adam_lr2e-4_B256_ep200_RN50x16",
               "adam_lr2e-4_B256_ep200_ViT16", "adam_lr2e-4_B256_ep200_ViT32", "generalization_rn50",
               "generalization_rn101", "generalization_vit16", "generalization_vit32"]
    for n in taskres:
        assert f"trainers/TaskRes/{n}.yaml" in names
    for folder in ("ZeroshotCLIP", "CoOp"):
        for n in ("rn50", "rn101", "vit_b32", "vit_b16"):
            assert f"trainers/{folder}/{n}.yaml" in names
    assert len([n for n in names if n.startswith("datasets/")]) == 15 + 2  # and own data: imagefolder, imagelist


@pytest.mark.parametrize("path", all_yaml(), ids=lambda p: os.path.relpath(p, REPO))
def test_yaml_merges_into_defaults(path):
    import trainers  # noqa: F401  (registers every trainer)
    from engine.config import check_inert_keys, get_cfg_default, merge_file
    from engine.registry import TRAINER_REGISTRY

    cfg = get_cfg_default()
    for _, trainer in TRAINER_REGISTRY.items():
        trainer.extend_cfg(cfg)
    merge_file(cfg, path, "config file")
    check_inert_keys(cfg)


DATASET_NAMES = {
    "imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars", "oxford_flowers": "OxfordFlowers", "food101": "Food101",
    "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397", "dtd": "DescribableTextures",
    "eurosat": "EuroSAT", "ucf101": "UCF101", "imagenetv2": "ImageNetV2",
    "imagenet_sketch": "ImageNetSketch", "imagenet_a": "ImageNetA", "imagenet_r": "ImageNetR",
    "imagefolder": "ImageFolder", "imagelist": "ImageList",
}


@pytest.mark.parametrize("stem,name", sorted(DATASET_NAMES.items()))
def test_dataset_names(stem, name):
    from engine.config import get_cfg_default

    cfg = get_cfg_default()
    cfg.merge_from_file(os.path.join(REPO, "configs", "datasets", f"{stem}.yaml"))
    assert cfg.DATASET.NAME == name


def merged(rel):
    from engine.config import get_cfg_default

    cfg = get_cfg_default()
    cfg.merge_from_file(os.path.join(REPO, "configs", rel))
    return cfg


def test_taskres_recipe_values():
    cfg = merged("trainers/TaskRes/adam_lr2e-4_B256_ep200.yaml")
    assert cfg.OPTIM.NAME == "adam"
    assert cfg.OPTIM.LR == 0.0002 and isinstance(cfg.OPTIM.LR, float)
    assert cfg.OPTIM.MAX_EPOCH == 200
    assert cfg.OPTIM.LR_SCHEDULER == "cosine"
    assert cfg.OPTIM.WARMUP_EPOCH == 1 and cfg.OPTIM.WARMUP_TYPE == "constant"
    assert cfg.OPTIM.WARMUP_CONS_LR == 1e-05 and isinstance(cfg.OPTIM.WARMUP_CONS_LR, float)
    assert cfg.INPUT.SIZE == (224, 224) and isinstance(cfg.INPUT.SIZE, tuple)
    assert cfg.INPUT.INTERPOLATION == "bicubic"
    assert list(cfg.INPUT.PIXEL_MEAN) == [0.48145466, 0.4578275, 0.40821073]
    assert list(cfg.INPUT.PIXEL_STD) == [0.26862954, 0.26130258, 0.27577711]
    assert list(cfg.INPUT.TRANSFORMS) == ["random_resized_crop", "random_flip", "normalize"]
    assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 256
    assert cfg.DATALOADER.TEST.BATCH_SIZE == 500
    assert cfg.DATALOADER.NUM_WORKERS == 8
    assert cfg.TRAIN.PRINT_FREQ == 5
    assert cfg.MODEL.BACKBONE.NAME == "RN50"


@pytest.mark.parametrize("stem,lr,epochs,backbone,test_bs,size", [
    ("adam_lr2e-3_B256_ep100", 0.002, 100, "RN50", 500, 224),
    ("adam_lr2e-3_B256_ep200", 0.002, 200, "RN50", 500, 224),
    ("adam_lr2e-4_B256_ep100", 0.0002, 100, "RN50", 500, 224),
    ("adam_lr2e-4_B256_ep200_RN101", 0.0002, 200, "RN101", 500, 224),
    ("adam_lr2e-4_B256_ep200_RN50x16", 0.0002, 200, "RN50x16", 500, 384),
    ("adam_lr2e-4_B256_ep200_ViT16", 0.0002, 200, "ViT-B/16", 500, 224),
    ("adam_lr2e-4_B256_ep200_ViT32", 0.0002, 200, "ViT-B/32", 500, 224),
    ("generalization_rn50", 0.0002, 200, "RN50", 1000, 224),
    ("generalization_rn101", 0.0002, 200, "RN101", 1000, 224),
    ("generalization_vit16", 0.0002, 200, "ViT-B/16", 1000, 224),
    ("generalization_vit32", 0.0002, 200, "ViT-B/32", 1000, 224),
])
def test_taskres_table(stem, lr, epochs, backbone, test_bs, size):
    cfg = merged(f"trainers/TaskRes/{stem}.yaml")
    assert (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.MODEL.BACKBONE.NAME) == (lr, epochs, backbone)
    assert cfg.DATALOADER.TEST.BATCH_SIZE == test_bs
    assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 256
    assert cfg.INPUT.SIZE == (size, size)
    assert cfg.OPTIM.WARMUP_CONS_LR == 1e-05


@pytest.mark.parametrize("folder", ["ZeroshotCLIP", "CoOp"])
@pytest.mark.parametrize("stem,backbone", [("rn50", "RN50"), ("rn101", "RN101"),
                                           ("vit_b32", "ViT-B/32"), ("vit_b16", "ViT-B/16")])
def test_coop_family(folder, stem, backbone):
    cfg = merged(f"trainers/{folder}/{stem}.yaml")
    assert cfg.MODEL.BACKBONE.NAME == backbone
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH) == ("sgd", 0.002, 200)
    assert (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.DATALOADER.TEST.BATCH_SIZE) == (32, 100)
    assert cfg.INPUT.SIZE == (224, 224) and cfg.INPUT.INTERPOLATION == "bicubic"


def test_masktuning_main_trains_the_joint_trainer_on_request(fake):
    run, recorded, data, tmp = fake
    path = os.path.join(REPO, "scripts", "masktuning", "main.sh")
    r = run(path, "imagenet", "16", "1.0", data, SEEDS="1", TRAINER="CoOpMaskTuning")
    assert r.returncode == 0, r.stderr
    (argv,) = recorded()
    assert opt(argv, "--trainer") == "CoOpMaskTuning"
    assert opt(argv, "--config-file") == "configs/trainers/CoOpMaskTuning/imagenet_vit_b16.yaml"
    assert opt(argv, "--output-dir") == f"{tmp}/output/imagenet/CoOpMaskTuning/imagenet_vit_b16_16shots/lambda1.0/seed1"
    r = run(path, "dtd", "16", "0.3", data, TRAINER="CoOp")
    assert r.returncode == 2 and "TRAINER must be MaskTuning or CoOpMaskTuning, got 'CoOp'" in r.stderr
    assert len(recorded()) == 1


# ---------------------------------------------------------------- argv contract
# Every script's train.py (and sweep.py, analysis, parse_test_res.py) command lines, its messages and
# exit status for a fixed sequence of invocations in one folder, against tests/scripts_argv.json
# (the behaviour contract of the shell layer: folders, argument order, skips, errors).
# RECORD_SCRIPT_CALLS=1 writes that file instead, after a deliberate change of behaviour.

ARGV_FILE = os.path.join(REPO, "tests", "scripts_argv.json")

# `-m engine.describe` answers from $DESCRIBE_CACHE (filled in this process by prewarm(): each
# separate look-up would import every trainer), else runs for real; every other call is recorded. train.py
# leaves what a finished run leaves: log.txt, results.json, shared/checkpoint (masks),
# prompt_learner/model.pth.tar-<E> (E from a config name's _ep<E>) unless --eval-only,
# strong_base.pth.tar for a product.
CONTRACT_PYTHON = """#!{python}
import hashlib, json, os, re, subprocess, sys
args = sys.argv[1:]
if args[:2] == ["-m", "engine.describe"]:
    path = os.path.join(os.environ["DESCRIBE_CACHE"], hashlib.sha1(json.dumps(args).encode()).hexdigest())
    if not os.path.exists(path):
        done = subprocess.run([sys.executable] + args, capture_output=True, text=True)
        with open(path, "w") as f:
            json.dump([done.returncode, done.stdout, done.stderr], f)
    with open(path) as f:
        code, out, err = json.load(f)
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.exit(code)
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if args[0] != "train.py":
    sys.exit(0)
out = args[args.index("--output-dir") + 1]
os.makedirs(os.path.join(out, "shared"), exist_ok=True)
open(os.path.join(out, "shared", "checkpoint"), "w").write("model.pth.tar-1\\n")
if "--eval-only" not in args:
    m = re.search(r"_ep(\\d+)", args[args.index("--config-file") + 1])
    os.makedirs(os.path.join(out, "prompt_learner"), exist_ok=True)
    open(os.path.join(out, "prompt_learner", "model.pth.tar-" + (m.group(1) if m else "1")), "w").close()
    open(os.path.join(out, "strong_base.pth.tar"), "w").close()
with open(os.path.join(out, "log.txt"), "a") as f:
    f.write("Finish training\\n=> result\\n* accuracy: 80.0%\\n")
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({{"accuracy": 80.0}}, f)
"""

S1, S12 = {"SEEDS": "1"}, {"SEEDS": "1 2"}
# (script, arguments, environment); "$DATA" is the dataset root. Order matters: later steps use
# (or skip) what earlier ones left.
CONTRACT = [
    ("scripts/taskres/main.sh", ["dtd", CFG, "none", "4", "0.5", "$DATA"], S12),
    ("scripts/taskres/main.sh", ["dtd", CFG, "none", "4", "0.5", "$DATA"], {"SEEDS": "1 2 3"}),
    ("scripts/taskres/main.sh", ["imagenet", "adam_lr2e-4_B256_ep200", "none", "16", "0.5"],
     {"SEEDS": "1", "DATA": "data", "BACKBONE": "ViT-B/16", "EXTRA_OPTS": "OPTIM.MAX_EPOCH 2"}),
    ("scripts/taskres/main.sh", ["imagenet", "adam_lr2e-4_B256_ep200", "none", "16", "0.5", "$DATA"], S1),
    ("scripts/taskres/main.sh", ["dtd", CFG, "nowhere.pth", "4", "0.5", "$DATA"], S1),
    ("scripts/taskres/main.sh", ["dtd", "nope", "none", "4", "0.5", "$DATA"], S1),
    ("scripts/taskres/main.sh", ["dtd", CFG, "none", "4", "0.5"], S1),
    ("scripts/taskres/main.sh", ["dtd", CFG], S1),
    ("scripts/coop/main.sh", ["dtd", "rn50_ep50", "middle", "16", "1", "True", "$DATA"], S12),
    ("scripts/coop/main.sh", ["imagenet", "rn50_ep50", "end", "16", "16", "False", "$DATA"], S1),
    ("scripts/coop/main.sh", ["dtd", "rn50", "back", "16", "1", "True", "$DATA"], S1),
    ("scripts/coop/main.sh", ["dtd", "rn50", "end", "4", "2", "False"], {"SEEDS": "1", "DATA": "$DATA",
                                                                       "BACKBONE": "RN101"}),
    ("scripts/coop/eval.sh", ["imagenet_a", "rn50_ep50", "$DATA"], S12),
    ("scripts/coop/eval.sh", ["imagenet_a", "rn50_ep50", "$DATA"], S1),
    ("scripts/clip_adapter/main.sh", ["dtd", "rn50", "4", "0.2", "$DATA"], S12),
    ("scripts/linear_probe/main.sh", ["dtd", "rn50", "4"], {"SEEDS": "1", "DATA": "$DATA"}),
    ("scripts/tip_adapter/main.sh", ["TipAdapter", "dtd", "4", "$DATA"], S1),
    ("scripts/tip_adapter/main.sh", ["TipAdapterF", "dtd", "4", "$DATA"], {"SEEDS": "1", "SEARCH_SPLIT": "test",
                                                                          "EPOCH_SELECTION": "last"}),
    ("scripts/tip_adapter/main.sh", ["TaskRes", "dtd", "4", "$DATA"], S1),
    ("scripts/masktuning/main.sh", ["dtd", "4", "0.3", "$DATA"], S1),
    ("scripts/masktuning/main.sh", ["imagenet", "16", "1.0", "$DATA"], {"SEEDS": "1", "TRAINER": "CoOpMaskTuning"}),
    ("scripts/masktuning/main.sh", ["dtd", "16", "0.3", "$DATA"], {"TRAINER": "CoOp"}),
    ("scripts/masktuning/train.sh", ["caltech101"], {"SEEDS": "1", "DATA": "$DATA"}),
    ("scripts/masktuning/eval.sh", ["caltech101"], {"SEEDS": "1", "DATA": "$DATA"}),
    ("scripts/masktuning/eval.sh", ["caltech101", "0.3", "$DATA"], {"SEEDS": "1", "TARGET": "dtd"}),
    ("scripts/masktuning/base2new_eval.sh", ["eurosat", "$DATA"], S1),
    ("scripts/masktuning/base2new_train.sh", ["eurosat", "$DATA"], S1),
    ("scripts/masktuning/base2new_eval.sh", ["eurosat", "$DATA"], S1),
    ("scripts/cocoop/base2new_test.sh", ["dtd", "1", "$DATA"], {}),
    ("scripts/cocoop/base2new_train.sh", ["dtd", "1", "$DATA"], {}),
    ("scripts/cocoop/base2new_test.sh", ["dtd", "1", "$DATA"], {}),
    ("scripts/coop/base2new_test.sh", ["eurosat", "1", "$DATA"], {}),
    ("scripts/coop/base2new_train.sh", ["eurosat", "1", "$DATA"], {}),
    ("scripts/coop/base2new_test.sh", ["eurosat", "1", "$DATA"], {}),
    ("scripts/taskres/base2new_train.sh", ["eurosat", "2"], {"DATA": "$DATA", "SHOTS": "4"}),
    ("scripts/taskres/base2new_test.sh", ["eurosat", "2"], {"DATA": "$DATA", "SHOTS": "4"}),
    ("scripts/tip_adapter/base2new_train.sh", ["eurosat", "1", "$DATA"], {"BACKBONE": "ViT-B/16"}),
    ("scripts/base2new.sh", ["train", "ZeroshotCLIP", "eurosat", "1", "$DATA"], {}),
    ("scripts/base2new.sh", ["test", "ZeroshotCLIP", "eurosat", "1", "$DATA"], {}),
    ("scripts/base2new.sh", ["test", "LinearProbe", "eurosat", "1", "$DATA"], {}),
    ("scripts/base2new.sh", ["fit", "LinearProbe", "eurosat", "1", "$DATA"], {}),
    ("scripts/taskres/zeroshot.sh", ["oxford_pets", "rn50", "$DATA"], {}),
    ("scripts/taskres/zeroshot_all.sh", ["rn50", "$DATA"], {"DATASETS": "oxford_pets,dtd"}),
    ("scripts/taskres/enhance_base.sh", ["dtd", "4", "$DATA"], {}),
    ("scripts/taskres/eval.sh", ["imagenetv2", "generalization_rn50", "dg/v2",
                                 "output/imagenet/TaskRes/adam_lr2e-4_B256_ep200_16shots/base_regular_alpha0.5",
                                 "$DATA"], S12),
    ("scripts/taskres/eval.sh", ["imagenetv2", "generalization_rn50", "dg/v2",
                                 "output/imagenet/TaskRes/adam_lr2e-4_B256_ep200_16shots/base_regular_alpha0.5",
                                 "$DATA"], S1),
    ("scripts/all_methods.sh", [], {"DATA": "$DATA", "DATASETS": "dtd", "SHOTS": "1 2", "SEEDS": "1",
                                    "EXTRA_OPTS": "OPTIM.MAX_EPOCH 1"}),
    ("scripts/all_methods.sh", [], {"DATA": "$DATA", "DATASETS": "eurosat", "SHOTS": "4", "SEEDS": "1,2",
                                    "METHODS": "ZeroshotCLIP,TaskResEnhanced,CoOp", "BACKBONE": "RN101",
                                    "FEATURES_MODE": "online", "OUTPUT": "cmp"}),
    ("scripts/all_methods.sh", [], {"DATA": "$DATA", "METHODS": "Nope"}),
    ("train_regular.sh", [], {"DATA": "$DATA", "DATASETS": "dtd", "SHOTS": "1", "SEEDS": "1"}),
    ("train_regular.sh", [], {"DATASETS": "oxford_flowers", "SHOTS": "16", "DRY_RUN": "1"}),
    ("train_enhance.sh", [], {"DATA": "$DATA", "DATASETS": "dtd", "SHOTS": "1", "SEEDS": "1"}),
    ("test_dg.sh", [], {"DATA": "$DATA", "TARGETS": "imagenet_a", "SEEDS": "1"}),
    ("scripts/xd_test.sh", ["CoOp", "dtd", "1", "$DATA"], {}),
    ("scripts/xd_train.sh", ["CoOp", "1", "$DATA"], {}),
    ("scripts/xd_test.sh", ["CoOp", "dtd", "1", "$DATA"], {}),
    ("scripts/xd_test.sh", ["CoOp", "dtd", "1", "$DATA"], {}),
    ("scripts/xd_train.sh", ["ZeroshotCLIP", "1"], {"DATA": "$DATA"}),
    ("scripts/xd_test.sh", ["ZeroshotCLIP", "eurosat", "1"], {"DATA": "$DATA", "BACKBONE": "ViT-B/16"}),
]


def describe_key(argv):
    import hashlib
    import json

    return hashlib.sha1(json.dumps(["-m", "engine.describe", *argv]).encode()).hexdigest()


def prewarm(cache):
    """engine.describe's answers to the questions the scripts ask here, from engine.describe.main."""
    import contextlib
    import io
    import json

    from engine.describe import main, methods

    questions = [[m] for m in methods()]
    questions += [[m, d, k] for m in methods() for d in ("dtd", "imagenet", "caltech101", "eurosat")
                  for k in ("1", "4", "16")]
    questions += [["TaskRes", d, k, "--get", "cfg"] for d in ("dtd", "oxford_flowers") for k in ("1", "16")]
    questions += [["TaskRes", d, "16", "--get", "TRAINER.TaskRes.RESIDUAL_SCALE"] for d in ("dtd", "oxford_flowers")]
    questions += [["MaskTuning", "caltech101", "16", "--get", "MASK.GDR_LAMBDA"]]
    for argv in questions:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        with open(os.path.join(cache, describe_key(argv)), "w") as f:
            json.dump([code, out.getvalue(), err.getvalue()], f)


def test_scripts_keep_their_command_lines(tmp_path):
    import json
    import subprocess
    import sys

    tmp = type(tmp_path)(os.path.realpath(tmp_path))
    python = tmp / "fake_python"
    python.write_text(CONTRACT_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    (tmp / "data").mkdir()
    (tmp / "describe").mkdir()
    prewarm(tmp / "describe")
    calls = tmp / "calls.jsonl"

    def mask(text):
        return text.replace(str(tmp), "$TMP").replace(REPO, "$REPO")

    got = []
    for script, args, env in CONTRACT:
        full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "PYTHON": str(python),
                "FAKE_CALLS": str(calls), "DESCRIBE_CACHE": str(tmp / "describe")}
        full.update({k: v.replace("$DATA", str(tmp / "data")) for k, v in env.items()})
        r = subprocess.run(["bash", os.path.join(REPO, script), *(a.replace("$DATA", str(tmp / "data")) for a in args)],
                           cwd=str(tmp), env=full, capture_output=True, text=True, timeout=600)
        ran = [json.loads(mask(line)) for line in calls.read_text().splitlines()] if calls.exists() else []
        calls.unlink(missing_ok=True)
        got.append({"script": script, "args": args, "env": env, "status": r.returncode,
                    "stdout": mask(r.stdout).splitlines(), "stderr": mask(r.stderr).splitlines(), "calls": ran})
    if os.environ.get("RECORD_SCRIPT_CALLS") == "1":
        with open(ARGV_FILE, "w") as f:
            json.dump(got, f, indent=1)
            f.write("\n")
    with open(ARGV_FILE) as f:
        expected = json.load(f)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g == e, f"{g['script']} {' '.join(g['args'])}"


# The generic tools ask the registry (python -m engine.describe) for what differs between methods;
# a method's name in them, even in a comment, is a case that a new method would miss.
GENERIC = ["scripts/base2new.sh", "scripts/all_methods.sh", "scripts/common.sh", "scripts/run.sh", "scripts/xd_train.sh",
           "scripts/xd_test.sh"]


@pytest.mark.parametrize("script", GENERIC)
def test_generic_scripts_name_no_method(script):
    import re

    from engine.describe import methods

    text = open(os.path.join(REPO, script)).read()
    hits = [m for m in methods() if re.search(rf"(?<![A-Za-z0-9_]){re.escape(m)}(?![A-Za-z0-9_])", text)]
    assert hits == [], f"{script} names {', '.join(hits)}"
