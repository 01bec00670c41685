"""A method's recipe from its own config folder (engine/recipes.py) and what `engine.describe`
tells tools about a method."""
import os
import subprocess
import sys

import pytest

from engine.describe import describe, main as describe_main
from engine.recipes import RecipeError, recipe, runnable_configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def folder(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return str(tmp_path)


def test_a_single_yaml_is_the_recipe_for_every_dataset_and_shot_count(tmp_path):
    d = folder(tmp_path, {"only.yaml": "OPTIM:\n  LR: 0.1\n", "_base.yaml": "", "recipe.txt": ""})
    for dataset, shots in (("eurosat", 1), ("ImageNet", 16), ("my_own_data", 4)):
        r = recipe("M", dataset, shots, folder=d)
        assert os.path.basename(r.config) == "only.yaml" and r.opts == {} and r.cfg == "only"


def test_per_dataset_yamls_are_found_by_stem_or_dataset_name(tmp_path):
    d = folder(tmp_path, {"eurosat.yaml": "", "oxford_flowers.yaml": "", "_base.yaml": ""})
    assert recipe("M", "OxfordFlowers", 2, folder=d).cfg == "oxford_flowers"  # DATASET.NAME -> stem
    assert recipe("M", "eurosat", 2, folder=d).cfg == "eurosat"
    with pytest.raises(RecipeError, match=r"holds 2 configs \(eurosat.yaml, oxford_flowers.yaml\), none named dtd"):
        recipe("M", "dtd", 2, folder=d)


def test_recipe_yaml_rules_apply_in_order(tmp_path):
    d = folder(tmp_path, {
        "recipe.yaml": ("config: 'lr{lr}_{dataset}_k{shots}.yaml'\nvars: {lr: 1}\nopts: {A.B: 0.5}\n"
                        "rules:\n  - {when: {shots: [8, 16]}, vars: {lr: 2}}\n"
                        "  - {when: {dataset: [dtd]}, vars: {lr: 3}, opts: {A.B: 1.0}}\n"),
        "lr1_eurosat_k4.yaml": "", "lr2_eurosat_k16.yaml": "", "lr3_dtd_k16.yaml": ""})
    assert runnable_configs(d) == ["lr1_eurosat_k4.yaml", "lr2_eurosat_k16.yaml", "lr3_dtd_k16.yaml"]
    assert (recipe("M", "eurosat", 4, folder=d).cfg, recipe("M", "eurosat", 4, folder=d).opts) == \
        ("lr1_eurosat_k4", {"A.B": 0.5})
    assert recipe("M", "EuroSAT", 16, folder=d).cfg == "lr2_eurosat_k16"
    r = recipe("M", "dtd", 16, folder=d)  # the later rule wins
    assert (r.cfg, r.opts, r.opts_list()) == ("lr3_dtd_k16", {"A.B": 1.0}, ["A.B", "1.0"])
    with pytest.raises(RecipeError, match="names .*lr3_dtd_k4.yaml, which does not exist"):
        recipe("M", "dtd", 4, folder=d)


def test_recipe_errors_name_the_folder(tmp_path):
    with pytest.raises(RecipeError, match="holds no config file"):
        recipe("M", "eurosat", 1, folder=folder(tmp_path, {}))
    with pytest.raises(RecipeError, match=r"needs a value for 'name'"):
        recipe("M", "eurosat", 1, folder=folder(tmp_path, {"recipe.yaml": "config: '{name}.yaml'\n"}))


def test_methods_without_a_folder_use_the_one_their_class_names():
    assert recipe("ZeroshotCLIP2", "eurosat", 1).config == "configs/trainers/ZeroshotCLIP/rn50.yaml"
    assert recipe("CoOp_RAMT", "eurosat", 16).config == recipe("CoOp", "eurosat", 16).config


def test_describe_gives_what_tools_ask():
    taskres = describe("TaskRes", "oxford_flowers", 16)
    assert taskres["axes"] == "alpha=TRAINER.TaskRes.RESIDUAL_SCALE"
    assert taskres["needs"] == "enhanced_base=--enhanced-base"
    assert (taskres["cfg"], taskres["TRAINER.TaskRes.RESIDUAL_SCALE"]) == ("adam_lr2e-3_B256_ep200", 1.0)
    assert describe("ZeroshotCLIP")["evaluation_only"] and not describe("TaskRes")["evaluation_only"]
    assert describe("TaskResEnhancedBase")["produces"] == "enhanced_base"


def test_describe_command_line(capsys):
    assert describe_main(["TaskRes", "eurosat", "4", "--get", "cfg"]) == 0
    assert capsys.readouterr().out == "adam_lr2e-3_B256_ep100\n"
    assert describe_main(["ZeroshotCLIP", "--get", "evaluation_only"]) == 0
    assert capsys.readouterr().out == "true\n"
    assert describe_main(["TaskRes", "eurosat", "4", "--get", "nope"]) == 2
    assert "no field 'nope'" in capsys.readouterr().err
    assert describe_main(["TaskRez"]) == 2
    assert "Did you mean 'TaskRes'" in capsys.readouterr().err
    assert describe_main(["--list"]) == 0
    assert "TaskRes" in capsys.readouterr().out.split()


def test_a_recipe_look_up_imports_no_method():
    """Shell grids look a recipe up once per run: it must not cost a torch import."""
    code = ("import sys; from engine.describe import main; main(['TaskRes', 'eurosat', '4', '--get', 'cfg']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["adam_lr2e-3_B256_ep100", "False"]
