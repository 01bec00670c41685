"""Issue-4 pieces of TaskRes: enhanced base (consumed and produced), ablation variants, DG slicing."""
import os

import pytest
import torch

import clip
import train
from datasets.imagenet_variants import IMAGENET_A_INDICES
from trainers.taskres import TaskResLearner

RECIPE = "configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from synthetic.layouts import write_eurosat

    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=20)
    return str(root)


def args_for(root, out, backbone, trainer="TaskRes", config=RECIPE, epochs=3, shots=4, *extra):
    return ["--root", root, "--seed", "1", "--trainer", trainer, "--dataset-config-file",
            "configs/datasets/eurosat.yaml", "--config-file", config, "--output-dir", out,
            "DATASET.NUM_SHOTS", str(shots), "MODEL.BACKBONE.NAME", backbone, "OPTIM.MAX_EPOCH", str(epochs),
            "DATALOADER.NUM_WORKERS", "0", "TRAIN.TENSORBOARD", "False", "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5",
            *extra]


def run(argv):
    return train.run(train.parse_args(argv))


def test_reference_strong_base_format_with_pretrained_projection_gives_regular_base(
        data_root, tiny_clip_path, tmp_path):
    """A strong_base file holding CLIP's own projection (as nn.Linear weight [D, W], plus a bias the
    reference ignores) must reproduce the regular base exactly."""
    model = clip.load(tiny_clip_path)
    proj = model.text_projection.detach().float()
    path = tmp_path / "model.pth.tar"
    torch.save({"state_dict": {"weight": proj.t().clone(), "bias": torch.zeros(proj.shape[1])}}, path)
    regular = run(args_for(data_root, str(tmp_path / "r"), tiny_clip_path, epochs=0) + ["--no-train"])
    enhanced = run(args_for(data_root, str(tmp_path / "e"), tiny_clip_path, epochs=0)
                   + ["--no-train", "--enhanced-base", str(path)])
    assert torch.allclose(regular.learner.base_text_features, enhanced.learner.base_text_features, atol=1e-5)


def test_misshaped_enhanced_base_is_a_clear_error(data_root, tiny_clip_path, tmp_path, capsys):
    path = tmp_path / "bad.pth.tar"
    torch.save({"state_dict": {"weight": torch.zeros(7, 5)}}, path)
    code = train.main(args_for(data_root, str(tmp_path / "o"), tiny_clip_path) + ["--enhanced-base", str(path)])
    assert code == 2 and "shape (7, 5)" in capsys.readouterr().err


def test_produced_enhanced_base_loads_back_and_changes_the_base(data_root, tiny_clip_path, tmp_path):
    eb = str(tmp_path / "eb")
    run(args_for(data_root, eb, tiny_clip_path, "TaskResEnhancedBase",
                 "configs/trainers/TaskResEnhancedBase/adam_lr1e-4_B256_ep50.yaml", 5, 4, "OPTIM.LR", "1e-3"))
    state = torch.load(os.path.join(eb, "strong_base.pth.tar"), weights_only=True)
    weight = state["state_dict"]["weight"]
    model = clip.load(tiny_clip_path)
    assert set(state["state_dict"]) == {"weight"} and weight.shape == model.text_projection.t().shape
    assert not torch.allclose(weight, model.text_projection.detach().float().t())
    assert os.path.isfile(os.path.join(eb, "text_projection", "model.pth.tar-5"))
    regular = run(args_for(data_root, str(tmp_path / "r"), tiny_clip_path, epochs=0) + ["--no-train"])
    enhanced = run(args_for(data_root, str(tmp_path / "e"), tiny_clip_path, epochs=2)
                   + ["--enhanced-base", os.path.join(eb, "strong_base.pth.tar")])
    assert not torch.allclose(regular.learner.base_text_features, enhanced.learner.base_text_features)
    log = open(os.path.join(tmp_path / "e", "log.txt")).read()
    assert ">> Use enhanced base!" in log and "* accuracy:" in log


def test_learnable_alpha_receives_gradients():
    learner = TaskResLearner(torch.randn(5, 8), 0.5, learnable_scale=True)
    with torch.no_grad():
        learner.text_feature_residuals.normal_()
    learner().pow(2).sum().backward()
    assert isinstance(learner.alpha, torch.nn.Parameter) and learner.alpha.grad.abs() > 0
    assert learner.alpha.item() == 0.5


def test_image_variant_changes_image_side_only():
    base = torch.randn(5, 8)
    learner = TaskResLearner(base, 0.5, variant="image")
    with torch.no_grad():
        learner.image_feature_residuals.fill_(1.0)
    f = torch.randn(3, 8)
    assert torch.equal(learner(), base)  # the text classifier stays the base
    assert torch.allclose(learner.adapt_image(f), f + 0.5)
    both = TaskResLearner(base, 0.5, variant="image_text")
    assert {n for n, _ in both.named_parameters()} == {"text_feature_residuals", "image_feature_residuals"}


def test_mlp_variants_closed_forms():
    base = torch.randn(5, 8)
    adapted = TaskResLearner(base, 0.5, variant="adapted", reduction=2)
    adapter = TaskResLearner(base, 0.5, variant="adapter", reduction=2)
    adapter.mlp.load_state_dict(adapted.mlp.state_dict())
    phi = adapted.mlp(base)
    assert torch.allclose(adapted(), phi)
    assert torch.allclose(adapter(), base + 0.5 * phi)
    assert adapted.mlp.fc1.weight.shape == (4, 8)


@pytest.mark.parametrize("variant", ["image", "image_text", "adapter"])
def test_variants_train_end_to_end(variant, data_root, tiny_clip_path, tmp_path):
    out = str(tmp_path / variant)
    run(args_for(data_root, out, tiny_clip_path, epochs=2) + ["TRAINER.TaskRes.VARIANT", variant])
    assert os.path.isfile(os.path.join(out, "results.json"))


def test_dg_eval_slices_1000_class_checkpoint_with_index_lists(synthetic_datasets_root, tiny_clip_path, tmp_path):
    root = str(synthetic_datasets_root)
    src = str(tmp_path / "imagenet")
    common = ["--root", root, "--seed", "1", "--trainer", "TaskRes", "--config-file",
              "configs/trainers/TaskRes/adam_lr2e-4_B256_ep100.yaml", "MODEL.BACKBONE.NAME", tiny_clip_path,
              "DATALOADER.NUM_WORKERS", "0", "TRAIN.TENSORBOARD", "False", "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5"]
    run(common + ["--dataset-config-file", "configs/datasets/imagenet.yaml", "--output-dir", src,
                  "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1"])
    saved = torch.load(os.path.join(src, "prompt_learner", "model.pth.tar-1"), weights_only=True)["state_dict"]
    assert saved["base_text_features"].shape[0] == 1000
    trainer = run(common + ["--dataset-config-file", "configs/datasets/imagenet_a.yaml", "--output-dir",
                            str(tmp_path / "a"), "--eval-only", "--model-dir", src, "--load-epoch", "1"])
    index = torch.tensor(IMAGENET_A_INDICES)
    assert torch.equal(trainer.learner.base_text_features.cpu(), saved["base_text_features"][index])
    assert torch.equal(trainer.learner.text_feature_residuals.detach().cpu(), saved["text_feature_residuals"][index])
    assert os.path.isfile(tmp_path / "a" / "results.json")


def test_input_size_follows_the_backbone(data_root, tmp_path):
    """A backbone with another resolution than the recipe's 224 (as RN50x16 at 384) runs at its own."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    from synthetic.tiny_clip import save_openai_checkpoint, to_openai_state_dict

    torch.manual_seed(0)
    model = CLIP(32, CLIPVisionCfg(layers=1, width=64, patch_size=32, image_size=96),
                 CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1), quick_gelu=True)
    path = str(tmp_path / "vit96.pt")
    sd = to_openai_state_dict(model)
    sd["input_resolution"] = torch.tensor(96)
    save_openai_checkpoint(sd, path)
    out = tmp_path / "o"
    trainer = run(args_for(data_root, str(out), path, epochs=1))
    assert tuple(trainer.cfg.INPUT.SIZE) == (96, 96)
    assert "does not fit" in open(out / "log.txt").read()
    assert os.path.isfile(out / "results.json")
