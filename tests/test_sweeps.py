"""The sweep scripts (train_regular.sh, train_enhance.sh, test_dg.sh, scripts/taskres/eval.sh,
enhance_base.sh, zeroshot_all.sh) with a stand-in interpreter that records its arguments and
writes what a finished train.py run leaves behind."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_REGULAR = os.path.join(REPO, "train_regular.sh")
TRAIN_ENHANCE = os.path.join(REPO, "train_enhance.sh")
TEST_DG = os.path.join(REPO, "test_dg.sh")
EVAL = os.path.join(REPO, "scripts", "taskres", "eval.sh")
ENHANCE_BASE = os.path.join(REPO, "scripts", "taskres", "enhance_base.sh")
ZEROSHOT_ALL = os.path.join(REPO, "scripts", "taskres", "zeroshot_all.sh")

DATASETS = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
            "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101"]
DG_TARGETS = ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]

# A bash stand-in (a Python one would make the 165-run grid slow). Commands other than train.py
# (parse_test_res.py) go to the real interpreter. For train.py it appends its argv to
# $FAKE_CALLS (fields separated by \x1f) and writes into --output-dir what the real run writes:
# TaskRes training: log.txt, results.json, prompt_learner/model.pth.tar-<epochs of the cfg name>
# and the pointer; --eval-only: log.txt and results.json; TaskResEnhancedBase: strong_base.pth.tar.
# When --output-dir matches the glob $FAKE_FAIL it leaves a partial log and fails.
FAKE_PYTHON = r"""#!/bin/bash
if [ "${1:-}" != train.py ]; then exec "$REAL_PYTHON" "$@"; fi
line=""
for a in "$@"; do line+="$a"$'\x1f'; done
printf '%s\n' "$line" >> "$FAKE_CALLS"
out="" trainer="" cfg="" eval_only=0 prev=""
for a in "$@"; do
    case $prev in
        --output-dir) out=$a ;;
        --trainer) trainer=$a ;;
        --config-file) cfg=$a ;;
    esac
    if [ "$a" = --eval-only ]; then eval_only=1; fi
    prev=$a
done
mkdir -p "$out"
if [ -n "${FAKE_FAIL:-}" ] && [[ $out == $FAKE_FAIL ]]; then
    echo "epoch [3/200] batch [1/1]" >> "$out/log.txt"
    exit 1
fi
if [ "$trainer" = TaskResEnhancedBase ]; then
    printf 'projection of %s\n' "$out" > "$out/strong_base.pth.tar"
    exit 0
fi
if [ $eval_only = 0 ]; then
    epochs=$(printf '%s' "$cfg" | sed -n 's/.*_ep\([0-9]*\).*/\1/p')
    mkdir -p "$out/prompt_learner"
    echo weights > "$out/prompt_learner/model.pth.tar-$epochs"
    echo "model.pth.tar-$epochs" > "$out/prompt_learner/checkpoint"
    echo "Finish training" >> "$out/log.txt"
fi
printf '=> result\n* accuracy: 80.0%%\n' >> "$out/log.txt"
echo '{"accuracy": 80.0, "error": 20.0, "macro_f1": 79.0}' > "$out/results.json"
"""


@pytest.fixture
def fake(tmp_path):
    tmp_path = type(tmp_path)(os.path.realpath(tmp_path))  # the scripts see physical paths
    stub = tmp_path / "fake_python"
    stub.write_text(FAKE_PYTHON)
    stub.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    calls = tmp_path / "calls.txt"

    def run(script, *args, cwd=None, **env_extra):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHON": str(stub),
               "REAL_PYTHON": sys.executable, "FAKE_CALLS": str(calls), "PYTHONPATH": REPO}
        env.update({k: str(v) for k, v in env_extra.items()})
        return subprocess.run(["bash", script, *map(str, args)], cwd=cwd or str(tmp_path), env=env,
                              capture_output=True, text=True, timeout=120)

    def recorded():
        if not calls.exists():
            return []
        return [line.split("\x1f")[:-1] for line in calls.read_text().splitlines()]

    return run, recorded, data, tmp_path


def opt(argv, flag):
    return argv[argv.index(flag) + 1]


def expected_cfg(dataset, shots):
    lr = "2e-4" if dataset == "imagenet" else "2e-3"
    return f"adam_lr{lr}_B256_ep{100 if shots <= 4 else 200}"


def expected_alpha(dataset):
    return "1.0" if dataset == "oxford_flowers" else "0.5"


def run_dir(tmp, dataset, shots, seed, base="regular", root="output"):
    cfg = expected_cfg(dataset, shots)
    return (f"{tmp}/{root}/{dataset}/TaskRes/{cfg}_{shots}shots/"
            f"base_{base}_alpha{expected_alpha(dataset)}/seed{seed}")


# ---------------------------------------------------------------- train_regular.sh


def test_regular_full_grid(fake):
    run, recorded, data, tmp = fake
    r = run(TRAIN_REGULAR, DATA=data, SEEDS="1")
    assert r.returncode == 0, r.stderr
    calls = recorded()
    assert len(calls) == 11 * 5
    seen = set()
    for argv in calls:
        out = opt(argv, "--output-dir")
        dataset = opt(argv, "--dataset-config-file")[len("configs/datasets/"):-len(".yaml")]
        shots = int(opt(argv, "DATASET.NUM_SHOTS"))
        seen.add((dataset, shots))
        cfg = expected_cfg(dataset, shots)
        assert argv == [
            "train.py", "--root", str(data), "--seed", "1", "--trainer", "TaskRes",
            "--dataset-config-file", f"configs/datasets/{dataset}.yaml",
            "--config-file", f"configs/trainers/TaskRes/{cfg}.yaml",
            "--output-dir", run_dir(tmp, dataset, shots, 1), "--enhanced-base", "none",
            "DATASET.NUM_SHOTS", str(shots), "TRAINER.TaskRes.RESIDUAL_SCALE", expected_alpha(dataset),
        ]
        assert os.path.isfile(os.path.join(out, "results.json"))
    assert seen == {(d, k) for d in DATASETS for k in (1, 2, 4, 8, 16)}
    progress = [line for line in r.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 55
    assert progress[0] == "[1/55] imagenet 1-shot: cfg=adam_lr2e-4_B256_ep100 alpha=0.5 base=regular backbone=RN50"
    assert "oxford_flowers 16-shot: cfg=adam_lr2e-3_B256_ep200 alpha=1.0" in r.stdout


def test_regular_three_seeds_by_default(fake):
    run, recorded, data, tmp = fake
    r = run(TRAIN_REGULAR, DATA=data, DATASETS="caltech101", SHOTS="8")
    assert r.returncode == 0, r.stderr
    assert [opt(a, "--output-dir") for a in recorded()] == [run_dir(tmp, "caltech101", 8, s) for s in (1, 2, 3)]
    r = run(TRAIN_REGULAR, DATA=data, DATASETS="caltech101", SHOTS="8")
    assert r.returncode == 0 and len(recorded()) == 3 and r.stdout.count("Skip: finished run") == 3


def test_regular_restricted_grid(fake):
    run, recorded, data, tmp = fake
    r = run(TRAIN_REGULAR, DATA=data, DATASETS="dtd,eurosat", SHOTS="2 8", SEEDS="1")
    assert r.returncode == 0, r.stderr
    got = [(opt(a, "--output-dir"), opt(a, "--config-file")) for a in recorded()]
    assert got == [(run_dir(tmp, d, k, 1), f"configs/trainers/TaskRes/{expected_cfg(d, k)}.yaml")
                   for d in ("dtd", "eurosat") for k in (2, 8)]
    assert "[4/4] eurosat 8-shot" in r.stdout


@pytest.mark.parametrize("env,message", [
    ({"DATASETS": "dtd cifar10"}, "unknown dataset 'cifar10'"),
    ({"SHOTS": "3"}, "unknown shots '3'"),
    ({"SHARD": "2/2"}, "SHARD must be i/N"),
])
def test_regular_bad_selection(fake, env, message):
    run, recorded, data, _ = fake
    r = run(TRAIN_REGULAR, DATA=data, **env)
    assert r.returncode == 2 and message in r.stderr
    assert recorded() == []


def test_regular_needs_data(fake):
    run, recorded, _, _ = fake
    r = run(TRAIN_REGULAR, DATASETS="dtd")
    assert r.returncode == 2 and "DATA" in r.stderr
    assert recorded() == []


def test_regular_resume_after_failure(fake):
    run, recorded, data, tmp = fake
    env = dict(DATA=data, DATASETS="dtd", SHOTS="1 2", SEEDS="1 2")
    r = run(TRAIN_REGULAR, FAKE_FAIL="*_1shots/*/seed2", **env)
    assert r.returncode == 1 and "dtd 1-shot failed" in r.stderr
    assert [opt(a, "--output-dir") for a in recorded()] == [run_dir(tmp, "dtd", 1, s) for s in (1, 2)]

    r = run(TRAIN_REGULAR, **env)  # only the killed seed and the jobs not reached yet
    assert r.returncode == 0, r.stderr
    assert [opt(a, "--output-dir") for a in recorded()[2:]] == [
        run_dir(tmp, "dtd", 1, 2), run_dir(tmp, "dtd", 2, 1), run_dir(tmp, "dtd", 2, 2)]
    assert "Resume:" in r.stdout

    r = run(TRAIN_REGULAR, **env)
    assert r.returncode == 0 and len(recorded()) == 5


def test_regular_keep_going(fake):
    run, recorded, data, tmp = fake
    r = run(TRAIN_REGULAR, DATA=data, DATASETS="dtd", SHOTS="1 2", SEEDS="1", KEEP_GOING=1,
            FAKE_FAIL="*_1shots/*")
    assert r.returncode == 1
    assert "1 job(s) failed: dtd 1-shot" in r.stderr
    assert [opt(a, "--output-dir") for a in recorded()] == [run_dir(tmp, "dtd", k, 1) for k in (1, 2)]


def test_regular_shards_partition_the_grid(fake):
    run, recorded, data, _ = fake
    env = dict(DATA=data, DATASETS="dtd eurosat caltech101", SEEDS="1")
    r0 = run(TRAIN_REGULAR, SHARD="0/2", **env)
    first = [opt(a, "--output-dir") for a in recorded()]
    r1 = run(TRAIN_REGULAR, SHARD="1/2", **env)
    assert r0.returncode == 0 and r1.returncode == 0, r0.stderr + r1.stderr
    second = [opt(a, "--output-dir") for a in recorded()][len(first):]
    assert len(first) == 8 and len(second) == 7 and not set(first) & set(second)


def test_regular_backbone(fake):
    run, recorded, data, tmp = fake
    run(TRAIN_REGULAR, DATA=data, DATASETS="imagenet", SHOTS="16", SEEDS="1")
    r = run(TRAIN_REGULAR, DATA=data, DATASETS="imagenet", SHOTS="16", SEEDS="1", BACKBONE="ViT-B/16")
    assert r.returncode == 0, r.stderr
    rn50, vit = recorded()
    assert "MODEL.BACKBONE.NAME" not in rn50
    assert opt(vit, "MODEL.BACKBONE.NAME") == "ViT-B/16"
    assert opt(vit, "--output-dir") == (
        f"{tmp}/output/imagenet/TaskRes/adam_lr2e-4_B256_ep200-ViT-B-16_16shots/base_regular_alpha0.5/seed1")


def test_regular_output_relative_to_caller(fake):
    run, recorded, data, tmp = fake
    (tmp / "work").mkdir()
    r = run(TRAIN_REGULAR, cwd=str(tmp / "work"), DATA="../data", OUTPUT="runs", DATASETS="dtd",
            SHOTS="4", SEEDS="3")
    assert r.returncode == 0, r.stderr
    (argv,) = recorded()
    assert os.path.realpath(opt(argv, "--root")) == str(data)
    assert opt(argv, "--output-dir") == run_dir(tmp, "dtd", 4, 3, root="work/runs")


# ---------------------------------------------------------------- train_enhance.sh, enhance_base.sh


@pytest.fixture
def enhance_cfg(fake):
    path = fake[3] / "enhanced_base.yaml"
    path.write_text("OPTIM:\n  MAX_EPOCH: 50\n")
    return path


def test_enhance_produces_and_installs_bases(fake, enhance_cfg):
    run, recorded, data, tmp = fake
    sb = tmp / "sb"
    ready = sb / "OxfordFlowers" / "rn50_16shots" / "model.pth.tar"
    ready.parent.mkdir(parents=True)
    ready.write_text("downloaded\n")
    env = dict(DATA=data, DATASETS="dtd oxford_flowers", SHOTS="16", SEEDS="1", STRONG_BASE=sb,
               ENHANCE_CFG=enhance_cfg)
    r = run(TRAIN_ENHANCE, **env)
    assert r.returncode == 0, r.stderr
    make, dtd, flowers = recorded()
    produced = f"{tmp}/output/enhanced_base/dtd/rn50_16shots"
    assert make == [
        "train.py", "--root", str(data), "--seed", "1", "--trainer", "TaskResEnhancedBase",
        "--dataset-config-file", "configs/datasets/dtd.yaml", "--config-file", str(enhance_cfg),
        "--output-dir", produced, "DATASET.NUM_SHOTS", "16",
    ]
    installed = sb / "DescribableTextures" / "rn50_16shots" / "model.pth.tar"
    assert installed.read_text() == f"projection of {produced}\n"
    assert [p.name for p in installed.parent.iterdir()] == ["model.pth.tar"]  # no temporary left
    assert opt(dtd, "--trainer") == "TaskRes"
    assert opt(dtd, "--enhanced-base") == str(installed)
    assert opt(dtd, "--output-dir") == run_dir(tmp, "dtd", 16, 1, base="enhanced")
    assert opt(flowers, "--enhanced-base") == str(ready)  # an existing base is used as it is
    assert opt(flowers, "TRAINER.TaskRes.RESIDUAL_SCALE") == "1.0"
    assert ready.read_text() == "downloaded\n"

    r = run(TRAIN_ENHANCE, **env)  # all done: nothing runs
    assert r.returncode == 0, r.stderr
    assert len(recorded()) == 3


def test_enhance_grid_counts(fake, enhance_cfg):
    run, recorded, data, tmp = fake
    r = run(TRAIN_ENHANCE, DATA=data, SEEDS="1", SHOTS="1 16", STRONG_BASE=tmp / "sb", ENHANCE_CFG=enhance_cfg)
    assert r.returncode == 0, r.stderr
    calls = recorded()
    makes = [a for a in calls if opt(a, "--trainer") == "TaskResEnhancedBase"]
    trains = [a for a in calls if opt(a, "--trainer") == "TaskRes"]
    assert len(makes) == 22 and len(trains) == 22
    assert [opt(a, "--trainer") for a in calls[:2]] == ["TaskResEnhancedBase", "TaskRes"]  # base first
    assert all(opt(a, "--seed") == "1" for a in makes)
    for argv in trains:
        dataset = opt(argv, "--dataset-config-file")[len("configs/datasets/"):-len(".yaml")]
        shots = int(opt(argv, "DATASET.NUM_SHOTS"))
        assert opt(argv, "--config-file") == f"configs/trainers/TaskRes/{expected_cfg(dataset, shots)}.yaml"
        assert opt(argv, "TRAINER.TaskRes.RESIDUAL_SCALE") == expected_alpha(dataset)
        assert opt(argv, "--enhanced-base").endswith(f"_{shots}shots/model.pth.tar")
        assert os.path.isfile(opt(argv, "--enhanced-base"))
    assert len(list((tmp / "sb").glob("*/rn50_*shots/model.pth.tar"))) == 22
    assert {p.name for p in (tmp / "sb").iterdir()} == {
        "ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101",
        "FGVCAircraft", "SUN397", "DescribableTextures", "EuroSAT", "UCF101"}


def test_enhance_base_install_only_and_backbone_tag(fake, enhance_cfg):
    run, recorded, data, tmp = fake
    produced = tmp / "output" / "enhanced_base" / "eurosat" / "vitb16_4shots" / "strong_base.pth.tar"
    produced.parent.mkdir(parents=True)
    produced.write_text("made earlier\n")
    r = run(ENHANCE_BASE, "eurosat", 4, data, BACKBONE="ViT-B/16", ENHANCE_CFG=enhance_cfg)
    assert r.returncode == 0, r.stderr
    assert recorded() == []  # already trained: only installed
    assert (tmp / "strong_base" / "EuroSAT" / "vitb16_4shots" / "model.pth.tar").read_text() == "made earlier\n"
    r = run(ENHANCE_BASE, "eurosat", 8, data, BACKBONE="ViT-B/16", ENHANCE_CFG=enhance_cfg)
    assert r.returncode == 0, r.stderr
    (argv,) = recorded()
    assert opt(argv, "MODEL.BACKBONE.NAME") == "ViT-B/16"
    assert opt(argv, "--output-dir") == f"{tmp}/output/enhanced_base/eurosat/vitb16_8shots"
    r = run(ENHANCE_BASE, "eurosat", 8, BACKBONE="ViT-B/16")  # installed: skips, DATA not needed
    assert r.returncode == 0 and "Skip: enhanced base exists" in r.stdout


def test_enhance_base_default_config(fake):
    run, recorded, data, tmp = fake
    r = run(ENHANCE_BASE, "dtd", 1, data)
    name = "configs/trainers/TaskResEnhancedBase/adam_lr1e-4_B256_ep50.yaml"
    if os.path.isfile(os.path.join(REPO, name)):
        assert r.returncode == 0, r.stderr
        (argv,) = recorded()
        assert opt(argv, "--config-file") == name
    else:
        assert r.returncode == 2 and f"{REPO}/{name} not found" in r.stderr
        assert recorded() == []


def test_enhance_base_no_output_is_an_error(fake, enhance_cfg):
    run, recorded, data, tmp = fake
    r = run(ENHANCE_BASE, "dtd", 2, data, ENHANCE_CFG=enhance_cfg, FAKE_FAIL="*dtd/rn50_2shots")
    assert r.returncode != 0
    assert not (tmp / "strong_base").exists()


# ---------------------------------------------------------------- eval.sh, test_dg.sh


def make_checkpoints(folder, epoch=200, seeds=(1, 2, 3)):
    for s in seeds:
        p = folder / f"seed{s}" / "prompt_learner"
        p.mkdir(parents=True, exist_ok=True)
        (p / f"model.pth.tar-{epoch}").write_text("weights\n")


def test_eval_missing_checkpoint(fake):
    run, recorded, data, tmp = fake
    model = tmp / "output" / "imagenet" / "TaskRes" / "adam_lr2e-4_B256_ep200_16shots" / "base_regular_alpha0.5"
    make_checkpoints(model, epoch=100, seeds=(1,))
    r = run(EVAL, "imagenetv2", "generalization_rn50", "dg", model, data)
    assert r.returncode == 2
    assert f"checkpoint not found: {model}/seed1/prompt_learner/model.pth.tar-200" in r.stderr
    assert f"checkpoint not found: {model}/seed2/prompt_learner/model.pth.tar-200" in r.stderr
    assert "model.pth.tar-100" in r.stderr and "LOAD_EPOCH" in r.stderr
    assert "DATASETS=imagenet SHOTS=16 bash train_regular.sh" in r.stderr
    assert recorded() == []


def test_eval_command_shape_and_skip(fake):
    run, recorded, data, tmp = fake
    model = tmp / "models" / "base_enhanced_alpha0.25"
    make_checkpoints(model)
    done = tmp / "dg" / "seed2"
    done.mkdir(parents=True)
    (done / "results.json").write_text('{"accuracy": 50.0}')
    r = run(EVAL, "imagenet_a", "generalization_rn50", "dg", "models/base_enhanced_alpha0.25", data)
    assert r.returncode == 0, r.stderr
    calls = recorded()
    assert [opt(a, "--seed") for a in calls] == ["1", "3"]
    assert calls[0] == [
        "train.py", "--root", str(data), "--seed", "1", "--trainer", "TaskRes",
        "--dataset-config-file", "configs/datasets/imagenet_a.yaml",
        "--config-file", "configs/trainers/TaskRes/generalization_rn50.yaml",
        "--output-dir", f"{tmp}/dg/seed1", "--model-dir", f"{model}/seed1", "--load-epoch", "200",
        "--eval-only", "TRAINER.TaskRes.RESIDUAL_SCALE", "0.25",
    ]
    assert "Skip: finished evaluation" in r.stdout
    r = run(EVAL, "imagenet_a", "generalization_rn50", "dg2", model, data, SCALE="0.5", LOAD_EPOCH="7",
            SEEDS="1")
    assert r.returncode == 2 and "model.pth.tar-7" in r.stderr
    make_checkpoints(model, epoch=7, seeds=(1,))
    r = run(EVAL, "imagenet_a", "generalization_rn50", "dg2", model, data, SCALE="0.5", LOAD_EPOCH="7",
            SEEDS="1")
    assert r.returncode == 0, r.stderr
    last = recorded()[-1]
    assert opt(last, "--load-epoch") == "7" and opt(last, "TRAINER.TaskRes.RESIDUAL_SCALE") == "0.5"


def test_eval_unknown_config(fake):
    run, recorded, data, tmp = fake
    r = run(EVAL, "imagenet_r", "generalization_50", "dg", tmp, data)
    assert r.returncode == 2 and "generalization_50.yaml not found" in r.stderr


def test_dg_after_regular_training(fake):
    run, recorded, data, tmp = fake
    r = run(TRAIN_REGULAR, DATA=data, DATASETS="imagenet", SHOTS="16")
    assert r.returncode == 0, r.stderr
    r = run(TEST_DG, DATA=data)
    assert r.returncode == 0, r.stderr
    evals = recorded()[3:]
    assert len(evals) == 12
    model = f"{tmp}/output/imagenet/TaskRes/adam_lr2e-4_B256_ep200_16shots/base_regular_alpha0.5"
    for i, target in enumerate(DG_TARGETS):
        for j, seed in enumerate((1, 2, 3)):
            argv = evals[3 * i + j]
            assert opt(argv, "--dataset-config-file") == f"configs/datasets/{target}.yaml"
            assert opt(argv, "--config-file") == "configs/trainers/TaskRes/generalization_rn50.yaml"
            assert opt(argv, "--model-dir") == f"{model}/seed{seed}"
            assert opt(argv, "--output-dir") == (
                f"{tmp}/output/{target}/TaskRes/generalization_rn50/base_regular_alpha0.5/seed{seed}")
            assert "--eval-only" in argv
    assert r.stdout.count("* accuracy: 80.00% +- 0.00%") == 4  # parse_test_res.py per target

    r = run(TEST_DG, DATA=data)  # finished: only the summaries again
    assert r.returncode == 0, r.stderr
    assert len(recorded()) == 15


def test_dg_enhanced_without_model(fake):
    run, recorded, data, tmp = fake
    r = run(TEST_DG, DATA=data, BASE="enhanced")
    assert r.returncode == 2
    assert "base_enhanced_alpha0.5/seed1/prompt_learner/model.pth.tar-200" in r.stderr
    assert "DATASETS=imagenet SHOTS=16 bash train_enhance.sh" in r.stderr
    assert recorded() == []


# ---------------------------------------------------------------- zeroshot_all.sh


def test_zeroshot_all(fake):
    run, recorded, data, tmp = fake
    r = run(ZEROSHOT_ALL, "rn50", data)
    assert r.returncode == 0, r.stderr
    calls = recorded()
    assert [opt(a, "--output-dir") for a in calls] == [
        f"{tmp}/output/ZeroshotCLIP2/rn50/{d}" for d in DATASETS + DG_TARGETS]
    assert all(opt(a, "--trainer") == "ZeroshotCLIP2" and "--eval-only" in a for a in calls)
    r = run(ZEROSHOT_ALL, DATA=data, DATASETS="dtd eurosat")
    assert r.returncode == 0 and len(recorded()) == 15 and r.stdout.count("skip, finished") == 2
    r = run(ZEROSHOT_ALL, "rn50", data, DATASETS="dtd", FORCE=1, TRAINER="ZeroshotCLIP")
    assert r.returncode == 0, r.stderr
    assert opt(recorded()[-1], "--output-dir") == f"{tmp}/output/ZeroshotCLIP/rn50/dtd"
