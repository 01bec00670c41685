"""Selection tiers (engine.selection): what each run chose on data, on which split, and the tier
that gives, derived from what the run read; the fair protocols of the methods that search."""
import os

import pytest

from engine.data import DataManager
from engine.describe import method, methods
from engine.recipes import RecipeError, recipe, selection_opts
from engine.selection import Selection, tier_of, worst
from runs import results, run

SHOTS = 2


# ---- the bookkeeping ---------------------------------------------------------------------------
def test_a_run_is_as_fair_as_its_least_fair_choice_or_read():
    s = Selection()
    assert s.summary()["tier"] == "none"
    s.chose("beta", 2.0, "val", "fewshot-val")
    assert s.summary() == {"tier": "fewshot-val", "chosen": {"beta": 2.0}, "split": {"beta": "val"},
                           "reads": []}
    s.read("val", "fewshot-val")
    assert "unrecorded" not in s.summary()
    s.read("test", "test")  # looked at test without saying what it chose there
    out = s.summary()
    assert out["tier"] == "test" and out["unrecorded"] == ["test"] and out["reads"] == ["test", "val"]
    assert worst(["none", "full-val", "fewshot-val"]) == "full-val"


def test_a_loaded_checkpoint_passes_its_tier_on():
    source = Selection()
    source.chose("epoch", 3, "test", "test")
    s = Selection()
    s.inherit(source.summary())
    out = s.summary()
    assert out["tier"] == "test" and out["chosen"] == {} and out["inherited"]["chosen"] == {"epoch": 3}


def test_a_checkpoint_without_a_record_makes_the_tier_unknown():
    s = Selection()
    s.inherit(None)  # e.g. a reference repository's checkpoint
    assert s.summary()["tier"] == "unknown"
    s.chose("epoch", 1, "test", "test")
    assert s.summary()["tier"] == "test"


def test_runs_written_before_tiers_are_unknown_unless_their_search_record_says():
    assert tier_of({"accuracy": 50.0, "extras": {}}) == "unknown"
    assert tier_of({"extras": {"search_split": "val", "search_on_test": True}}) == "test"
    assert tier_of({"num_shots": 16, "extras": {"search_split": "val", "search_on_test": False,
                                                 "search_grid": [200, 20]}}) == "fewshot-val"
    assert tier_of({"extras": {"epoch_selection": "test"}}) == "test"
    assert tier_of({"selection": {"tier": "none"}, "extras": {"search_on_test": True}}) == "none"


# ---- tiers of the splits -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_path):
    from synthetic.layouts import write_eurosat, write_imagenet

    root = tmp_path_factory.mktemp("selection")
    write_eurosat(str(root / "data"), per_class=10)
    write_imagenet(str(root / "data"), per_class=8, val_per_class=3)
    return {"root": str(root / "data"), "cache": str(root / "features"), "clip": tiny_clip_path, "tmp": root}


def data_manager(env, dataset, *opts):
    from engine.config import get_cfg_all_trainers

    cfg = get_cfg_all_trainers()
    cfg.merge_from_file(f"configs/datasets/{dataset}.yaml")
    cfg.merge_from_list(["DATASET.ROOT", env["root"], "DATASET.NUM_SHOTS", SHOTS, "SEED", 1, "VERBOSE", False,
                         *opts])
    import torch
    return DataManager(cfg, torch.device("cpu"))


def test_imagenet_val_is_test_unless_carved_from_train(env):
    plain = data_manager(env, "eurosat")
    assert plain.selection_tier("val") == "fewshot-val" and plain.selection_tier("test") == "test"
    imagenet = data_manager(env, "imagenet")
    assert imagenet.selection_tier("val") == "test"
    carved = data_manager(env, "imagenet", "DATASET.VAL_FROM_TRAIN", True)
    assert carved.selection_tier("val") == "fewshot-val"
    val = {d.impath for d in carved.dataset.val}
    assert not val & {d.impath for d in carved.dataset.train_x}
    assert not val & {d.impath for d in carved.dataset.test}
    assert all("/train/" in p for p in val)
    per_class = {}
    for d in carved.dataset.val:
        per_class[d.label] = per_class.get(d.label, 0) + 1
    assert set(per_class.values()) == {SHOTS}  # min(K, 4)
    # the few-shot training set is CoOp's either way; the carved val is the same for the same seed
    assert [d.impath for d in carved.dataset.train_x] == [d.impath for d in imagenet.dataset.train_x]
    again = data_manager(env, "imagenet", "DATASET.VAL_FROM_TRAIN", True)
    assert [d.impath for d in again.dataset.val] == [d.impath for d in carved.dataset.val]


# ---- what the methods record -----------------------------------------------------------------
def argv(env, out, trainer, dataset="eurosat", *opts):
    r = recipe(trainer, dataset, SHOTS)
    return ["--root", env["root"], "--seed", "1", "--trainer", trainer, "--dataset-config-file",
            f"configs/datasets/{dataset}.yaml", "--config-file", r.config, "--output-dir", str(out), *r.opts_list(),
            "DATASET.NUM_SHOTS", SHOTS, "MODEL.BACKBONE.NAME", env["clip"], "DATALOADER.NUM_WORKERS", 0,
            "DATALOADER.TRAIN_X.BATCH_SIZE", 4, "TRAIN.TENSORBOARD", False, "FEATURES.MODE", "cached",
            "FEATURES.CACHE_DIR", env["cache"], "FEATURES.NUM_VIEWS", 2, "TRAINER.TIP.AUGMENT_EPOCH", 2,
            "OPTIM.MAX_EPOCH", 2, *opts]


def selection(env, name, trainer, dataset="eurosat", *opts):
    out = env["tmp"] / name
    run(argv(env, out, trainer, dataset, *opts))
    return results(out)["selection"]


def test_tip_adapter_records_where_it_searched(env):
    sel = selection(env, "tip_val", "TipAdapter")
    assert sel["tier"] == "fewshot-val" and set(sel["chosen"]) == {"beta", "alpha"}
    assert sel["split"] == {"beta": "val", "alpha": "val"} and "unrecorded" not in sel
    assert selection(env, "tip_test", "TipAdapter", "eurosat", "TRAINER.TIP.SEARCH_SPLIT", "test")["tier"] == "test"
    assert selection(env, "tip_fixed", "TipAdapter", "eurosat", "TRAINER.TIP.SEARCH_HP", False)["tier"] == "none"


@pytest.mark.slow  # about 30 s: two runs on the 1000-class ImageNet
def test_imagenet_search_on_val_is_on_test_and_the_fair_protocol_carves_val(env):
    sel = selection(env, "tip_in", "TipAdapter", "imagenet")
    assert sel["tier"] == "test" and sel["split"]["beta"] == "val"
    fair = selection(env, "tip_in_fair", "TipAdapter", "imagenet", "SELECTION.PROTOCOL", "fewshot-val")
    assert fair["tier"] == "fewshot-val" and fair["requested"] == "fewshot-val"
    res = results(env["tmp"] / "tip_in_fair")
    assert res["config"]["DATASET"]["VAL_FROM_TRAIN"] is True


def test_tip_adapter_f_epoch_on_test_is_an_oracle(env):
    sel = selection(env, "tipf_test", "TipAdapterF", "eurosat", "SELECTION.PROTOCOL", "test")
    assert sel["tier"] == "test" and {"epoch", "beta", "alpha", "deployed_hp"} <= set(sel["chosen"])
    assert sel["split"]["epoch"] == "test"
    none = selection(env, "tipf_none", "TipAdapterF", "eurosat", "SELECTION.PROTOCOL", "none")
    assert none["tier"] == "none" and none["chosen"] == {} and none["reads"] == []


def test_eval_only_inherits_the_checkpoint_s_selection(env):
    out = env["tmp"] / "tipf_test"
    if not (out / "results.json").exists():
        selection(env, "tipf_test", "TipAdapterF", "eurosat", "SELECTION.PROTOCOL", "test")
    again = env["tmp"] / "tipf_test_eval"
    run(argv(env, again, "TipAdapterF", "eurosat", "SELECTION.PROTOCOL", "test") + ["--eval-only", "--model-dir", out])
    sel = results(again)["selection"]
    assert sel["tier"] == "test" and sel["inherited"]["split"]["epoch"] == "test"


@pytest.mark.parametrize("trainer,chosen", [("GDA", {"alpha"}), ("LPpp", {"epoch"}), ("ProKeR", {"beta", "lambda"})])
def test_new_baselines_protocols_give_their_tiers(env, trainer, chosen):
    none = selection(env, f"{trainer}_none", trainer, "eurosat", "SELECTION.PROTOCOL", "none")
    assert none["tier"] == "none" and not none["chosen"] and "unrecorded" not in none
    fair = selection(env, f"{trainer}_fair", trainer, "eurosat", "SELECTION.PROTOCOL", "fewshot-val")
    assert fair["tier"] == "fewshot-val" and set(fair["chosen"]) == chosen
    assert set(fair["split"].values()) == {"val"}
    oracle = selection(env, f"{trainer}_test", trainer, "eurosat", "SELECTION.PROTOCOL", "test")
    assert oracle["tier"] == "test" and set(oracle["chosen"]) == chosen


def test_linear_probe_records_its_c(env):
    sel = selection(env, "lp", "LinearProbe")
    assert sel["tier"] == "fewshot-val" and sel["split"] == {"C": "val"} and sel["chosen"]["C"] > 0


def test_engine_best_val_checkpoint_is_a_choice(env):
    sel = selection(env, "taskres_bestval", "TaskRes", "eurosat", "TEST.FINAL_MODEL", "best_val")
    assert sel["tier"] == "fewshot-val" and sel["split"] == {"epoch": "val"} and sel["chosen"]["epoch"] in (1, 2)
    assert selection(env, "taskres_last", "TaskRes")["tier"] == "none"


def test_a_protocol_a_method_does_not_have_is_one_line(env):
    out = env["tmp"] / "lp_none"
    run(argv(env, out, "LinearProbe", "eurosat", "SELECTION.PROTOCOL", "none"), expect=2)
    assert not os.path.exists(out / "results.json")


# ---- every registered method: a read of test before the final evaluation must be declared ------
METHODS = [m for m in methods() if method(m).__module__.startswith("trainers.")]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["", "test"])
@pytest.mark.parametrize("name", METHODS)
def test_no_method_looks_at_test_without_saying_so(name, protocol, env, monkeypatch, tmp_path):
    """Counted independently of the engine's bookkeeping: every read of a split's images (online
    features: each evaluation reads again). The final evaluation reads test once; any other read
    of test was for a choice, and the run must then say tier "test" and name what it chose there."""
    if method(name).needs:
        pytest.skip(f"{name} needs another method's product")
    try:
        selection_opts(name, protocol)
    except RecipeError:
        pytest.skip(f"{name} has no {protocol} protocol")
    reads = []
    original = DataManager.read

    def spy(self, split):
        reads.append(split)
        return original(self, split)

    monkeypatch.setattr(DataManager, "read", spy)
    out = tmp_path / "run"
    extra = ["--eval-only"] if method(name).evaluation_only else []
    asked = ["SELECTION.PROTOCOL", protocol] if protocol else []
    run(argv(env, out, name, "eurosat", "FEATURES.MODE", "online", *asked) + extra)
    sel = results(out)["selection"]
    assert "unrecorded" not in sel, f"{name} read {sel['unrecorded']} without recording a choice"
    if reads.count("test") > 1:
        assert sel["tier"] == "test" and "test" in sel["split"].values(), (name, reads, sel)
    if "val" in reads:
        assert sel["tier"] != "none", (name, reads, sel)
