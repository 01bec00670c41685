"""A sweep fills its group's store in one pass after the first run: the later runs encode
nothing, and the store and every result are bit-identical to the sweep without the pre-fill."""
import json
import os
import random

import pytest
import torch

import sweep
from engine import features as features_mod


@pytest.fixture()
def data_root(tmp_path):
    from synthetic.layouts import write_eurosat

    write_eurosat(str(tmp_path / "data"), per_class=8)
    return str(tmp_path / "data")


def sweep_argv(data_root, clip_path, out, cache, trainer="TaskRes",
               config="configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml"):
    return ["--shots", "1", "2", "--seeds", "1", "2", "--root", data_root, "--trainer", trainer,
            "--dataset-config-file", "configs/datasets/eurosat.yaml", "--config-file", config,
            "--output-dir", out, "MODEL.BACKBONE.NAME", clip_path, "OPTIM.MAX_EPOCH", "1",
            "DATALOADER.NUM_WORKERS", "0", "TRAIN.TENSORBOARD", "False", "FEATURES.MODE", "cached",
            "FEATURES.NUM_VIEWS", "2", "FEATURES.CACHE_DIR", cache, "DATALOADER.TEST.BATCH_SIZE", "7"]


@pytest.fixture()
def encodes(monkeypatch):
    """(label, entries) for every store fill: a run's own misses or the group pre-fill."""
    calls = []
    own, group = features_mod.CachedSource._encode_into, features_mod.prefill

    def run_fill(self, ns, pairs, train_split):
        calls.append(("run", len(pairs)))
        return own(self, ns, pairs, train_split)

    def group_fill(*a, **k):
        n = group(*a, **k)
        calls.append(("group", n))
        return n

    monkeypatch.setattr(features_mod.CachedSource, "_encode_into", run_fill)
    monkeypatch.setattr(sweep, "prefill", group_fill)
    monkeypatch.setattr(features_mod, "_NAMESPACES", {})
    return calls


def store(cache):
    """{(namespace folder, key): fp16 feature} of every chunk."""
    out = {}
    for folder, _, files in os.walk(cache):
        for name in files:
            if name.startswith("chunk-"):
                data = torch.load(os.path.join(folder, name), weights_only=True)
                rel = os.path.relpath(folder, cache)
                out.update({(rel, k): f for k, f in zip(data["keys"], data["features"])})
    return out


def outputs(out):
    got = {}
    for folder, _, files in os.walk(out):
        if "results.json" in files:
            res = json.load(open(os.path.join(folder, "results.json")))
            ckpts = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if ".pth.tar" in f]
            got[os.path.relpath(folder, out)] = (res["accuracy"], res["correct"],
                                                 [torch.load(c, weights_only=True)["state_dict"] for c in sorted(ckpts)])
    return got


@pytest.mark.parametrize("trainer,config", [
    ("TaskRes", "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml"),
    pytest.param("LinearProbe", "configs/trainers/LinearProbe/rn50.yaml",  # train center crops, val, test
                 marks=pytest.mark.slow),
])
def test_prefill_encodes_the_group_once_and_changes_nothing(data_root, tiny_clip_path, tmp_path, encodes,
                                                             monkeypatch, trainer, config):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert sweep.main(sweep_argv(data_root, tiny_clip_path, a, a + "-cache", trainer, config)) == 0
    with_fill = list(encodes)
    encodes.clear()
    monkeypatch.setattr(features_mod, "_NAMESPACES", {})
    monkeypatch.setattr(sweep, "prefill_group", lambda *args: 0)  # each run fills its own misses
    assert sweep.main(sweep_argv(data_root, tiny_clip_path, b, b + "-cache", trainer, config)) == 0
    without = list(encodes)
    assert with_fill[0][0] == "run" and with_fill[-1][0] == "group" and with_fill[-1][1] > 0
    first = with_fill[:-1]  # the first run's own fills; after the pre-fill no run encodes anything
    assert sum(n for _, n in first) + with_fill[-1][1] == sum(n for _, n in without)
    assert len(without) > len(first)  # without it, later runs fill piecemeal
    sa, sb = store(a + "-cache"), store(b + "-cache")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    oa, ob = outputs(a), outputs(b)
    assert len(oa) == 4 and oa.keys() == ob.keys()
    for run in oa:
        assert oa[run][:2] == ob[run][:2]
        for sd_a, sd_b in zip(oa[run][2], ob[run][2]):
            assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_the_look_ahead_draws_as_the_run_does_and_saves_nothing(data_root):
    import train
    from datasets import build_dataset
    from engine.checkpoint import set_random_seed

    argv = ["--root", data_root, "--seed", "2", "--trainer", "TaskRes", "--dataset-config-file",
            "configs/datasets/eurosat.yaml", "--output-dir", "unused", "DATASET.NUM_SHOTS", "2"]
    cfg = train.setup_cfg(train.parse_args(argv))
    random.seed(5)
    torch.manual_seed(5)
    state, torch_state = random.getstate(), torch.get_rng_state()
    ahead = sweep._lookahead_dataset(cfg)
    assert random.getstate() == state and torch.equal(torch.get_rng_state(), torch_state)
    assert not os.path.exists(os.path.join(data_root, "eurosat", "split_fewshot"))
    set_random_seed(2)  # what the run does before it builds its dataset
    real = build_dataset(cfg)
    assert os.path.exists(os.path.join(data_root, "eurosat", "split_fewshot"))  # the run saves its draw
    assert [d.impath for d in ahead.train_x] == [d.impath for d in real.train_x]
    assert [d.impath for d in ahead.val] == [d.impath for d in real.val]


def test_a_study_group_is_filled_after_its_first_run(data_root, tiny_clip_path, tmp_path, encodes):
    from studies import worker
    from studies.plan import Run

    runs = []
    for shots, seed in ((1, 1), (2, 1), (2, 2)):
        out = str(tmp_path / "study" / f"{shots}shots" / f"seed{seed}")
        argv = ["--root", data_root, "--seed", str(seed), "--trainer", "TaskRes", "--dataset-config-file",
                "configs/datasets/eurosat.yaml", "--config-file", "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml",
                "--output-dir", out, "DATASET.NUM_SHOTS", str(shots), "MODEL.BACKBONE.NAME", tiny_clip_path,
                "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0", "TRAIN.TENSORBOARD", "False",
                "FEATURES.MODE", "cached", "FEATURES.NUM_VIEWS", "2", "FEATURES.CACHE_DIR", str(tmp_path / "store")]
        runs.append(Run(out=out, argv=argv, method="TaskRes", trainer="TaskRes", dataset="eurosat", shots=shots,
                        seed=seed))
    assert worker.run_group(runs) == {"done": 3}
    kinds = [kind for kind, _ in encodes]
    assert kinds == ["run", "run", "group"] and encodes[-1][1] > 0  # the first run's views and test, then one pass
