"""The prompt templates of every text classifier are recorded with the run (results.json extras
`zero_shot_template`, `templates`) and named by the comparison table when a table mixes kinds."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

import clip
import trainers.common.text as text
from analysis import compare
from runs import results, run_direct
from test_selection import argv as selection_argv



@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_path):
    from synthetic.layouts import write_eurosat

    root = tmp_path_factory.mktemp("templates")
    write_eurosat(str(root / "data"), per_class=10)
    return {"root": str(root / "data"), "cache": str(root / "features"), "clip": tiny_clip_path, "tmp": root}


def argv(env, out, trainer, dataset="eurosat", *opts):
    """test_selection's run, one epoch (a later KEY VALUE wins)."""
    return selection_argv(env, out, trainer, dataset, "OPTIM.MAX_EPOCH", 1, *opts)


def spied_run(env, monkeypatch, name, trainer, dataset="eurosat", *extra):
    """(trainer, results.json, the template lists the run actually encoded class prompts with)."""
    encoded = []
    original = text.encode_prompts

    def spy(text_encoder, classnames, templates, *args, **kwargs):
        encoded.append(list(templates))
        return original(text_encoder, classnames, templates, *args, **kwargs)

    monkeypatch.setattr(text, "encode_prompts", spy)
    out = env["tmp"] / name
    args = argv(env, out, trainer, dataset)
    if trainer.startswith("Zeroshot"):
        args.append("--eval-only")
    t = run_direct(args + list(extra))
    monkeypatch.undo()
    return t, results(out)["extras"], encoded


def features(t, templates, names):
    return text.encode_prompts(clip.TextEncoder(t.clip_model), names, templates)


def test_taskres_records_the_single_template_its_base_is_built_from(env, monkeypatch):
    t, extras, encoded = spied_run(env, monkeypatch, "taskres", "TaskRes")
    assert encoded == [extras["templates"]] and extras["zero_shot_template"] == "single"
    assert len(extras["templates"]) == 1
    # The base the run trains its residual on is the recorded template's features.
    base = features(t, extras["templates"], t.dm.classnames).mean(1).float()
    assert torch.equal(t.learner.base_text_features.cpu(), base.cpu())


def test_an_ensemble_is_recorded_as_ensemble_n(env, monkeypatch):
    t, extras, encoded = spied_run(env, monkeypatch, "zs2", "ZeroshotCLIP2")
    n = len(extras["templates"])
    assert n > 1 and extras["zero_shot_template"] == f"ensemble-{n}" and encoded == [extras["templates"]]
    names = [c.replace("_", " ") for c in t.dm.classnames]
    per_template = F.normalize(features(t, extras["templates"], names).float(), dim=-1)
    assert torch.allclose(t.text_features.cpu(), F.normalize(per_template.mean(1), dim=-1).cpu())
    # ... and differs from the classifier of its first template alone: the record is not decoration.
    assert not torch.allclose(t.text_features.cpu(), per_template[:, 0].cpu(), atol=1e-4)


@pytest.mark.parametrize("trainer", ["TipAdapter", "LinearProbe", "CLIP_Adapter", "ZSLP"])
def test_methods_built_on_the_text_classifier_record_what_they_encoded(env, monkeypatch, trainer):
    t, extras, encoded = spied_run(env, monkeypatch, trainer.lower(), trainer)
    assert encoded and all(e == extras["templates"] for e in encoded)
    assert extras["zero_shot_template"] == ("single" if len(extras["templates"]) == 1
                                            else f"ensemble-{len(extras['templates'])}")
    if trainer == "TipAdapter":
        names = [c.replace("_", " ") for c in t.dm.classnames]
        w = F.normalize(F.normalize(features(t, extras["templates"], names).float(), dim=-1).mean(1), dim=-1)
        assert torch.allclose(t.text_weights.cpu(), w.cpu())


@pytest.mark.parametrize("trainer", ["ZSLP", "GDA", "LPpp", "ProKeR", "ProLIP", "TaskRes", "TipAdapter"])
def test_the_dataset_template_key_reaches_every_method_built_on_it(env, monkeypatch, trainer):
    prompt = "a blurry picture of {}!"
    _, extras, encoded = spied_run(env, monkeypatch, f"key_{trainer.lower()}", trainer, "eurosat",
                                   "DATASET.TEMPLATE", prompt)
    assert encoded and all(e == [prompt] for e in encoded)
    assert extras["templates"] == [prompt] and extras["zero_shot_template"] == "single"


def test_prompt_learners_record_a_learned_prompt(env, monkeypatch):
    t, extras, encoded = spied_run(env, monkeypatch, "coop", "CoOp")
    assert encoded == [] and extras["zero_shot_template"] == "learned"
    (template,) = extras["templates"]
    assert t.prompt_learner.prompts == [template.format(c.replace("_", " ")) for c in t.dm.classnames]


# ---- the comparison table ----------------------------------------------------------------------
def write_run(root, name, trainer, dataset, shots, acc, kind, templates):
    folder = os.path.join(root, name)
    os.makedirs(folder)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump({"accuracy": acc, "split": "test", "trainer": trainer, "dataset": dataset, "num_shots": shots,
                   "seed": 1, "backbone": "RN50", "selection": {"tier": "none"},
                   "extras": {"subsample_classes": "all", "zero_shot_template": kind, "templates": templates}}, f)


def table(root, tmp_path):
    md = str(tmp_path / "t.md")
    assert compare.main([root, "--out", md]) == 0
    return open(md).read()


def test_rows_name_their_template_only_when_the_table_mixes_kinds(tmp_path):
    root = str(tmp_path / "one")
    write_run(root, "zs", "ZeroshotCLIP", "EuroSAT", -1, 40.0, "single", ["a centered satellite photo of {}."])
    write_run(root, "tr", "TaskRes", "EuroSAT", 1, 50.0, "single", ["a centered satellite photo of {}."])
    write_run(root, "coop", "CoOp", "EuroSAT", 1, 45.0, "learned", ["X X {}."])
    text_one = table(root, tmp_path)
    assert "| TaskRes | none | 50.00 |" in text_one and "| CoOp | none | 45.00 |" in text_one
    assert "| ZeroshotCLIP (single template) | none | 40.00 |" in text_one

    root = str(tmp_path / "mixed")
    seven = [f"t{i} {{}}." for i in range(7)]
    for ds, kind, tl in (("EuroSAT", "single", ["x {}."]), ("ImageNet", "ensemble-7", seven)):
        write_run(root, f"{ds}/zs", "ZeroshotCLIP", ds, -1, 40.0, "single", ["x {}."])
        write_run(root, f"{ds}/tip", "TipAdapter", ds, 1, 52.0, kind, tl)
        write_run(root, f"{ds}/tr", "TaskRes", ds, 1, 50.0, "single", ["x {}."])
        write_run(root, f"{ds}/coop", "CoOp", ds, 1, 45.0, "learned", ["X X {}."])
    mixed = table(root, tmp_path)
    tip = "TipAdapter (single template; ImageNet: ensemble-7)"
    assert f"| {tip} | none | 52.00 |" in mixed and "| TaskRes (single template) | none | 50.00 |" in mixed
    assert "| CoOp (learned prompt) | none | 45.00 |" in mixed
    # One label per method over datasets: its average is still one row.
    average = mixed[mixed.index("### Average"):]
    assert f"| {tip} | none | 52.00 |" in average


@pytest.mark.slow  # a Tip-Adapter run on the 1000-class synthetic ImageNet (~30 s)
def test_a_table_of_real_taskres_and_tip_adapter_runs_names_both_templates(env, monkeypatch, tmp_path):
    from synthetic.layouts import write_imagenet

    write_imagenet(env["root"], per_class=4, val_per_class=1)
    spied_run(env, monkeypatch, "tables/taskres", "TaskRes")
    _, extras, _ = spied_run(env, monkeypatch, "tables/tip", "TipAdapter", "imagenet",
                             "TRAINER.TIP.SEARCH_HP", False)
    assert extras["zero_shot_template"] == "ensemble-7"
    text_out = table(str(env["tmp"] / "tables"), tmp_path)
    rows = {line.split(" [")[0].strip("| "): line for line in text_out.splitlines() if line.startswith("| T")}
    assert "(single template) |" in rows["TaskRes"]
    assert "(ensemble-7) |" in rows["TipAdapter"]  # the label names the backbone, then the template
