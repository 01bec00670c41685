"""study.py: plans, grouping, the unit of work and its backends (local, gpus with CPU workers,
slurm through submitit's local executor), resume after a kill, and the feature store under
concurrent writers. Tiny CLIP + synthetic EuroSAT/DTD, a few epochs per run."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import yaml

import study
from engine.recipes import recipe
from studies import load_study, plan_study
from studies.plan import save_group
from studies.spec import StudyError
from studies.worker import STATUS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from synthetic.layouts import write_dtd, write_eurosat

    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=12)
    write_dtd(str(root), classes=("banded", "braided", "bubbly", "cracked", "dotted"), per_class=10)
    return str(root)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("features"))


def opts(clip_path, cache, epochs=3, mode="cached"):
    return {"MODEL.BACKBONE.NAME": clip_path, "OPTIM.MAX_EPOCH": epochs, "DATALOADER.NUM_WORKERS": 0,
            "TRAIN.TENSORBOARD": False, "FEATURES.MODE": mode, "FEATURES.CACHE_DIR": cache,
            "FEATURES.NUM_VIEWS": 2}


def write_study(path, **fields):
    data = {"name": "tiny", "datasets": ["eurosat"], "shots": [2], "seeds": [1, 2], "methods": ["TaskRes"]}
    data.update(fields)
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return str(path)


def results(run_dir):
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)


def final_state(run_dir):
    folder = os.path.join(run_dir, "prompt_learner")
    name = open(os.path.join(folder, "checkpoint")).read().strip()
    return torch.load(os.path.join(folder, name), weights_only=True)["state_dict"]


def assert_same_runs(dirs_a, dirs_b):
    for a, b in zip(dirs_a, dirs_b):
        assert results(a)["accuracy"] == results(b)["accuracy"]
        sa, sb = final_state(a), final_state(b)
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------------------------------------
# plans (no runs)


def test_plan_matches_shell_layout_and_groups_by_dataset(tmp_path):
    out = str(tmp_path / "out")
    path = write_study(tmp_path / "s.yaml", output=out, datasets=["eurosat", "imagenet"], shots=[1, 16],
                       seeds=[1, 2, 3], methods=["TaskRes", "CoOp"])
    s = load_study(path)
    runs, groups = plan_study(s)
    assert len(runs) == 2 * 2 * 3 * 2
    for dataset in ("eurosat", "imagenet"):
        for k in (1, 16):
            r = recipe("TaskRes", dataset, k)
            alpha = str(float(r.opts["TRAINER.TaskRes.RESIDUAL_SCALE"]))
            for seed in (1, 2, 3):
                # scripts/taskres/main.sh's folder and arguments
                folder = os.path.join(out, dataset, "TaskRes", f"{r.cfg}_{k}shots", f"base_regular_alpha{alpha}",
                                      f"seed{seed}")
                run = next(x for x in runs if x.out == folder)
                argv = " ".join(run.argv)
                assert "--enhanced-base none" in argv and f"DATASET.NUM_SHOTS {k}" in argv
                assert f"TRAINER.TaskRes.RESIDUAL_SCALE {alpha}" in argv and f"--seed {seed}" in argv
                assert run.argv[run.argv.index("--config-file") + 1].endswith(r.config)
    # TaskRes and CoOp share the transforms: one group per dataset, ImageNet (largest) first
    assert [g.dataset for g in groups] == ["imagenet", "eurosat"]
    assert all(len(g.runs) == 12 and {r.dataset for r in g.runs} == {g.dataset} for g in groups)
    coop = next(r for r in runs if r.trainer == "CoOp" and r.dataset == "eurosat" and r.shots == 1)
    assert coop.out == os.path.join(out, "eurosat", "CoOp", f"{recipe('CoOp', 'eurosat', 1).cfg}_1shots", "seed1")


def test_plan_grid_backbones_and_cli(tmp_path, capsys):
    out = str(tmp_path / "out")
    path = write_study(tmp_path / "s.yaml", output=out, seeds=[1], backbones=["RN50", "ViT-B/16"],
                       grid={"OPTIM.LR": ["1e-3", "2e-3"], "TRAINER.TaskRes.RESIDUAL_SCALE": [0.5, 1.0]})
    runs, groups = plan_study(load_study(path))
    assert len(runs) == 2 * 2 * 2
    assert len(groups) == 2 and {g.backbone for g in groups} == {"RN50", "ViT-B/16"}
    vit = [r for r in runs if r.backbone == "ViT-B/16"]
    assert all("adam_lr2e-3_B256_ep100-ViT-B-16_2shots" in r.out for r in vit)  # main.sh's backbone tag
    assert any(r.out.endswith(os.path.join("base_regular_alpha1.0", "LR1e-3", "seed1")) for r in runs)
    assert {r.variant for r in runs} == {f"alpha{a}/LR{lr}" for a in ("0.5", "1.0") for lr in ("1e-3", "2e-3")}
    assert study.main(["plan", path, "--nominal"]) == 0
    text = capsys.readouterr().out
    assert "8 runs in 2 groups" in text and "test+val" in text


def test_plan_protocols_enhanced_base_and_collisions(tmp_path):
    out = str(tmp_path / "out")
    dg = write_study(tmp_path / "dg.yaml", output=out, protocol="dg", datasets=["imagenet"], shots=[16], seeds=[1],
                     targets=["imagenetv2", "imagenet_a"],
                     methods=[{"name": "TaskRes", "dg_config": "configs/trainers/TaskRes/generalization_rn50.yaml"}])
    runs, groups = plan_study(load_study(dg))
    source = next(r for r in runs if r.role == "source")
    target = next(r for r in runs if r.role == "imagenetv2")
    # test_dg.sh's folder; the evaluation loads the ImageNet-trained run and waits for its group
    assert target.out == os.path.join(out, "imagenetv2", "TaskRes", "generalization_rn50", "base_regular_alpha0.5",
                                      "seed1")
    assert target.needs == [source.out] and target.argv[target.argv.index("--model-dir") + 1] == source.out
    assert [g.stage for g in groups] == [0, 1, 1]

    b2n = write_study(tmp_path / "b2n.yaml", output=out, protocol="base-to-new", seeds=[1], methods=["CoCoOp"])
    runs, groups = plan_study(load_study(b2n))
    train, new = runs
    assert "/base2new/train_base/eurosat/shots_2/CoCoOp/" in train.out
    assert new.out == train.out.replace("train_base", "test_new") and new.needs == [train.out]
    assert new.argv[-2:] == ["DATASET.SUBSAMPLE_CLASSES", "new"] and len(groups) == 1
    assert groups[0].runs == [train, new]

    enh = write_study(tmp_path / "enh.yaml", output=out, strong_base=str(tmp_path / "sb"), seeds=[1, 2],
                      methods=[{"name": "TaskRes*", "trainer": "TaskRes", "enhanced_base": "produce"}])
    runs, groups = plan_study(load_study(enh))
    producer = groups[0].runs[0]
    assert producer.trainer == "TaskResEnhancedBase" and len(groups[0].runs) == 3
    assert producer.install[1] == str(tmp_path / "sb" / "EuroSAT" / "rn50_2shots" / "model.pth.tar")
    for r in groups[0].runs[1:]:
        assert "base_enhanced_alpha0.5" in r.out and r.needs == [producer.out]
        assert r.argv[r.argv.index("--enhanced-base") + 1] == producer.install[1]

    clash = write_study(tmp_path / "c.yaml", output=out,
                        methods=[{"name": "a", "trainer": "TaskRes"}, {"name": "b", "trainer": "TaskRes",
                                                                        "opts": {"OPTIM.LR": 0.1}}])
    with pytest.raises(StudyError, match="same folder"):
        plan_study(load_study(clash))
    with pytest.raises(StudyError, match="unknown key 'seed' \\(did you mean 'seeds'"):
        load_study(write_study(tmp_path / "bad.yaml", seed=[1]))


FAKE_TRAIN = """#!/bin/bash
if [ "${1:-}" != train.py ]; then exec "$REAL_PYTHON" "$@"; fi
prev="" out="" trainer=""
for a in "$@"; do
    case $prev in --output-dir) out=$a ;; --trainer) trainer=$a ;; esac
    prev=$a
done
printf '%s\\n' "$out" >> "$FAKE_CALLS"
mkdir -p "$out"
if [ "$trainer" = TaskResEnhancedBase ]; then echo base > "$out/strong_base.pth.tar"; fi
echo '{"accuracy": 50.0}' > "$out/results.json"
"""


def test_shell_sweeps_and_study_share_run_folders(tmp_path, capsys):
    """train_regular.sh / train_enhance.sh (DATASETS, SHOTS, SEEDS as always) and the TaskRes
    study write the same folders, so each sees the other's finished runs."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_TRAIN)
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    env = dict(os.environ, REAL_PYTHON=sys.executable, PYTHON=str(fake), FAKE_CALLS=str(calls), DATA=str(tmp_path),
               OUTPUT=str(tmp_path / "out"), STRONG_BASE=str(tmp_path / "sb"), DATASETS="eurosat imagenet",
               SHOTS="1 16", SEEDS="1 2")
    for script in ("train_regular.sh", "train_enhance.sh"):
        subprocess.run(["bash", os.path.join(REPO, script)], env=env, check=True, capture_output=True)
    shell = set(calls.read_text().split())
    path = write_study(tmp_path / "s.yaml", root=str(tmp_path), output=str(tmp_path / "out"),
                       strong_base=str(tmp_path / "sb"), datasets=["eurosat", "imagenet"], shots=[1, 16],
                       seeds=[1, 2], methods=["TaskRes", {"name": "TaskRes*", "trainer": "TaskRes",
                                                          "enhanced_base": "produce"}])
    runs, _ = plan_study(load_study(path))
    planned = {r.out for r in runs}
    producers = {r.out for r in runs if r.role == "produce"}
    assert len(planned) == 2 * 2 * 2 * 2 + 4 and planned == shell
    capsys.readouterr()
    assert study.main(["status", path]) == 0
    total = [line for line in capsys.readouterr().out.splitlines() if line.startswith("total")][0].split()
    assert total[1:3] == [str(len(planned)), str(len(planned))] and producers  # every run is done


def test_imagenet_listing_cached_until_a_class_folder_changes(tmp_path, monkeypatch):
    from datasets import imagenet
    from engine.config import get_cfg_default
    from synthetic.layouts import write_imagenet

    write_imagenet(str(tmp_path))
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.VERBOSE = str(tmp_path), "ImageNet", False
    old = time.time() - 60  # settled folders (a folder changed in the last seconds is not cached)
    for dirpath, dirnames, _ in os.walk(tmp_path / "imagenet" / "images"):
        for d in dirnames:
            os.utime(os.path.join(dirpath, d), (old, old))

    listed = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p=".": listed.append(str(p)) or real_listdir(p))

    def build():
        listed.clear()
        imagenet._LISTINGS.clear()  # a new process
        return imagenet.ImageNet(cfg)

    first = build()
    class_dirs = lambda: [p for p in listed if os.path.basename(os.path.dirname(p)) in ("train", "val")]  # noqa: E731
    assert class_dirs()  # listed the class folders
    assert os.path.isfile(tmp_path / "imagenet" / "listing_cache" / "images_train.json")
    second = build()
    assert not class_dirs()  # from the cache file
    assert [d.impath for d in second.train_x] == [d.impath for d in first.train_x]
    listed.clear()
    imagenet.ImageNet(cfg)  # same process: from memory
    assert not class_dirs()

    wnid_dir = tmp_path / "imagenet" / "images" / "train" / sorted(real_listdir(tmp_path / "imagenet" / "images" /
                                                                                "train"))[0]
    new_image = wnid_dir / "added.JPEG"
    new_image.write_bytes((wnid_dir / real_listdir(wnid_dir)[0]).read_bytes())
    third = build()
    assert str(new_image) in [d.impath for d in third.train_x]


# ---------------------------------------------------------------------------------------------
# local backend: skip, resume, failures, status, table


@pytest.fixture(scope="module")
def local_study(data_root, cache_dir, tiny_clip_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("local")
    path = write_study(base / "s.yaml", root=data_root, output=str(base / "out"),
                       opts=opts(tiny_clip_path, cache_dir))
    assert study.main(["run", path]) == 0
    runs, _ = plan_study(load_study(path))
    return path, [r.out for r in runs]


def test_local_runs_in_shell_layout_and_skips_finished(local_study):
    path, dirs = local_study
    out = load_study(path).output
    assert dirs == [os.path.join(out, "eurosat", "TaskRes", "adam_lr2e-3_B256_ep100_2shots", "base_regular_alpha0.5",
                                 f"seed{s}") for s in (1, 2)]
    for d in dirs:
        assert results(d)["num_shots"] == 2 and json.load(open(os.path.join(d, STATUS)))["state"] == "done"
    before = {d: sorted(os.listdir(d)) for d in dirs}
    assert study.main(["run", path]) == 0
    assert {d: sorted(os.listdir(d)) for d in dirs} == before  # nothing ran: no new log


def test_failures_are_recorded_and_the_study_goes_on(local_study, tmp_path, capsys, tiny_clip_path, cache_dir,
                                                     data_root):
    path, dirs = local_study
    s = yaml.safe_load(open(path))
    s["methods"] = ["TaskRes", {"name": "Broken", "trainer": "TaskRes", "folder": "{output}/broken/seed{seed}",
                                "opts": {"MODEL.BACKBONE.NAME": str(tmp_path / "missing.pt")}}]
    broken = write_study(tmp_path / "broken.yaml", **s)
    os.remove(os.path.join(dirs[1], "results.json"))  # an interrupted run: resumes
    assert study.main(["run", broken]) == 1
    assert os.path.isfile(os.path.join(dirs[1], "results.json"))
    assert any(f.startswith("log.txt-") for f in os.listdir(dirs[1]))  # ran again (resumed)
    assert not any(f.startswith("log.txt-") for f in os.listdir(dirs[0]))
    failed = os.path.join(s["output"], "broken", "seed1")
    status = json.load(open(os.path.join(failed, STATUS)))
    assert status["state"] == "failed" and "missing.pt" in status["error"] and status["log_tail"]
    capsys.readouterr()
    assert study.main(["status", broken, "--failed"]) == 0
    text = capsys.readouterr().out
    assert "failed: " in text and "missing.pt" in text
    total = [line for line in text.splitlines() if line.startswith("total")][0].split()
    assert total[1:] == ["4", "2", "0", "2", "0"]  # runs done running failed pending

    assert study.main(["table", path]) == 0
    text = capsys.readouterr().out
    accs = [results(d)["accuracy"] for d in dirs]
    cell = f"{torch.tensor(accs).mean():.2f} ± {torch.tensor(accs).std(unbiased=False):.2f}"
    assert "2 of 2 runs finished" in text and "| TaskRes [tiny-clip-vit" in text and f"| {cell} |" in text
    csv = open(os.path.join(load_study(path).state_dir, "table.csv")).read()
    assert csv.splitlines()[1].startswith("few-shot,eurosat,TaskRes [tiny-clip-vit") and ",2,2," in csv


@pytest.mark.slow
def test_enhanced_base_and_base_to_new_end_to_end(data_root, cache_dir, tiny_clip_path, tmp_path):
    o = opts(tiny_clip_path, cache_dir, epochs=2)
    enh = write_study(tmp_path / "enh.yaml", root=data_root, output=str(tmp_path / "out"), seeds=[1],
                      strong_base=str(tmp_path / "sb"), opts=o,
                      methods=[{"name": "TaskRes*", "trainer": "TaskRes", "enhanced_base": "produce"}])
    assert study.main(["run", enh]) == 0
    runs, _ = plan_study(load_study(enh))
    assert os.path.isfile(runs[0].install[1]) and runs[0].install[1].startswith(str(tmp_path / "sb" / "EuroSAT"))
    assert "Use enhanced base" in open(os.path.join(runs[1].out, "log.txt")).read()

    b2n = write_study(tmp_path / "b2n.yaml", root=data_root, output=str(tmp_path / "out"), protocol="base-to-new",
                      seeds=[1], opts=o)
    assert study.main(["run", b2n]) == 0
    train_run, new_run = plan_study(load_study(b2n))[0]
    assert results(train_run.out)["extras"]["subsample_classes"] == "base"
    assert results(new_run.out)["extras"]["subsample_classes"] == "new"
    assert study.main(["table", b2n]) == 0


# ---------------------------------------------------------------------------------------------
# a worker killed mid-epoch loses at most that epoch


def wait_for_snapshot(run_dir, ended, timeout=300):
    """Until the run's rolling snapshot is in place (its pointer names it): the run is then in
    its next epoch."""
    pointer = os.path.join(run_dir, "prompt_learner", "checkpoint")
    deadline = time.time() + timeout
    while time.time() < deadline and ended() is None:
        try:
            if open(pointer).read().strip() == "resume.pth.tar":
                return
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise AssertionError("the run ended or timed out before its first snapshot")


def test_killed_worker_resumes_to_the_uninterrupted_result(data_root, tiny_clip_path, tmp_path):
    # online features: every epoch encodes its batch, so the run is slow enough to be killed in it
    common = dict(root=data_root, shots=[1], seeds=[1], opts=opts(tiny_clip_path, str(tmp_path / "cache"),
                                                                      epochs=4, mode="online"))
    whole = write_study(tmp_path / "whole.yaml", output=str(tmp_path / "whole"), **common)
    assert study.main(["run", whole]) == 0

    killed = write_study(tmp_path / "killed.yaml", output=str(tmp_path / "killed"), **common)
    _, groups = plan_study(load_study(killed))
    run = groups[0].runs[0]
    save_group(groups[0], str(tmp_path / "group.json"))
    proc = subprocess.Popen([sys.executable, "-m", "studies.worker", str(tmp_path / "group.json")], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_snapshot(run.out, proc.poll)
    proc.send_signal(signal.SIGKILL)  # in the epoch after the first snapshot
    proc.wait()
    assert not os.path.exists(os.path.join(run.out, "results.json"))
    assert load_study(killed) and study.main(["status", killed]) == 0

    assert study.main(["run", killed]) == 0
    log = open(os.path.join(run.out, sorted(f for f in os.listdir(run.out) if f.startswith("log.txt-"))[-1])).read()
    assert "Found checkpoint" in log
    resumed_at = int(log.split("Previous epoch: ")[1].split()[0])
    assert 1 <= resumed_at < 4
    assert_same_runs([run.out], [os.path.join(str(tmp_path / "whole"), os.path.relpath(run.out, str(tmp_path /
                                                                                                    "killed")))])


# ---------------------------------------------------------------------------------------------
# gpus backend with two CPU workers; slurm backend through submitit's local executor


def test_gpus_backend_two_cpu_workers(data_root, cache_dir, tiny_clip_path, tmp_path):
    path = write_study(tmp_path / "s.yaml", root=data_root, output=str(tmp_path / "out"), datasets=["eurosat", "dtd"],
                       shots=[1], seeds=[1], opts=opts(tiny_clip_path, cache_dir, epochs=2))
    assert study.main(["run", path, "--backend", "gpus", "--devices", "cpu,cpu"]) == 0
    s = load_study(path)
    runs, groups = plan_study(s)
    assert len(groups) == 2 and all(os.path.isfile(os.path.join(r.out, "results.json")) for r in runs)
    for g in groups:
        log = open(os.path.join(s.state_dir, "logs", f"{g.id}.log")).read()
        assert "CUDA_VISIBLE_DEVICES=)" in log and "finished: {\"done\": 1}" in log


def test_slurm_backend_local_executor_equals_local(local_study, tmp_path):
    pytest.importorskip("submitit")
    path, dirs = local_study
    s = yaml.safe_load(open(path))
    s["output"] = str(tmp_path / "out")
    s["slurm"] = {"timeout_min": 10, "groups": {"eurosat": {"timeout_min": 20}}}
    slurm = write_study(tmp_path / "s.yaml", **s)
    assert study.main(["run", slurm, "--backend", "slurm", "--cluster", "local"]) == 0
    runs, groups = plan_study(load_study(slurm))
    assert_same_runs(dirs, [r.out for r in runs])
    jobs = json.load(open(os.path.join(load_study(slurm).state_dir, "jobs.json")))
    assert list(jobs) == [groups[0].id]


@pytest.mark.slow
def test_slurm_preempted_job_is_requeued_and_resumes(data_root, tiny_clip_path, tmp_path):
    submitit = pytest.importorskip("submitit")
    from submitit.local.local import LocalJobEnvironment

    from studies.slurm_job import GroupJob

    common = dict(root=data_root, seeds=[1], opts=opts(tiny_clip_path, str(tmp_path / "cache"), epochs=6,
                                                          mode="online"))
    whole = write_study(tmp_path / "whole.yaml", output=str(tmp_path / "whole"), **common)
    assert study.main(["run", whole]) == 0
    path = write_study(tmp_path / "s.yaml", output=str(tmp_path / "pre"), **common)
    _, groups = plan_study(load_study(path))
    run = groups[0].runs[0]
    executor = submitit.AutoExecutor(folder=str(tmp_path / "jobs"), cluster="local")
    executor.update_parameters(timeout_min=10)
    os.environ["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    job = executor.submit(GroupJob(), [r.to_dict() for r in groups[0].runs])
    wait_for_snapshot(run.out, lambda: job.done() or None)
    # What Slurm does before a timeout or a preemption: signal the job's process; submitit's
    # handler checkpoints the callable and requeues it (the local controller restarts it).
    with open(f"/proc/{job._process.pid}/task/{job._process.pid}/children") as f:
        (task,) = [int(x) for x in f.read().split()]
    os.kill(task, LocalJobEnvironment._usr_sig())
    assert job.result() == {"done": 1}
    logs = sorted(f for f in os.listdir(run.out) if f.startswith("log.txt"))
    assert len(logs) == 2 and "Found checkpoint" in open(os.path.join(run.out, logs[-1])).read()
    assert_same_runs([run.out], [os.path.join(str(tmp_path / "whole"), os.path.relpath(run.out, str(tmp_path /
                                                                                                  "pre")))])


# ---------------------------------------------------------------------------------------------
# the feature store with several writers


WRITER = textwrap.dedent("""
    import hashlib, os, sys, time
    import torch
    from engine import feature_store
    feature_store.MAX_CHUNKS = 3  # merge often, while the others write
    root, me, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    def feature(key):
        g = torch.Generator().manual_seed(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
        return torch.randn(8, generator=g)

    keys = [f"/img/{i}.jpg|1|2|0" for i in range(120)]
    order = keys[me * 40:] + keys[:me * 40]  # overlapping, in another order in each process
    while not os.path.exists(go):
        time.sleep(0.005)
    ns = feature_store.Namespace(root, "backbone", "transform", 8)
    for i in range(0, len(order), 5):
        ns.refresh()
        todo = ns.missing(order[i:i + 5])
        if todo:
            ns.add(todo, torch.stack([feature(k) for k in todo]))
    ns.refresh()
    want = torch.stack([feature(k) for k in keys]).half()
    assert torch.equal(ns.get(keys), want), "a process sees other features"
    print("ok")
""")


def test_feature_store_concurrent_writers_give_identical_features(tmp_path):
    from engine import feature_store

    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "store"), str(i), str(go)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    time.sleep(1.0)
    go.write_text("go")
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip() == "ok", err
    ns = feature_store.Namespace(str(tmp_path / "store"), "backbone", "transform", 8)
    ns.refresh()
    keys = [f"/img/{i}.jpg|1|2|0" for i in range(120)]
    assert not ns.missing(keys)
    for key in keys:  # what a new process reads equals what each writer saw
        g = torch.Generator().manual_seed(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
        assert torch.equal(ns.get([key])[0], torch.randn(8, generator=g).half())
