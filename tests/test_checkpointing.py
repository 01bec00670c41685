"""engine.checkpointing: the one load path, and its class rows across class sets."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from engine.checkpointing import Checkpointing
from engine.errors import UserError
from trainers.linear_probe import LinearProbe
from trainers.taskres import TaskRes
from trainers.tip_adapter import TipAdapter

INDICES = [6, 11, 999, 0, 6]  # an ImageNet subset's rows, duplicates and all (as ImageNet-A/R)


class Tensors(nn.Module):
    def __init__(self, shapes):
        super().__init__()
        for key, shape in shapes.items():
            self.register_buffer(key, torch.zeros(shape))


class Loader(Checkpointing):
    """What the load path needs of a trainer: the registered module, the classes, the record."""

    def __init__(self, module, classnames, indices, per_class_keys=(), class_dims=None):
        self._models = {"m": module}
        self.dm = SimpleNamespace(classnames=list(classnames), dataset=SimpleNamespace(class_indices_1k=indices))
        self.cfg = SimpleNamespace(DATASET=SimpleNamespace(NAME="ImageNetA"))
        self.record = {}
        self.per_class_keys, self.class_dims = per_class_keys, class_dims
        self.seen = []

    def check_loaded(self, name, checkpoint):
        self.seen.append(checkpoint.get("classnames"))


# (per_class_keys, class_dims, {key: shape with C classes}) of each per-class method's layout.
LAYOUTS = {
    "TaskRes": (TaskRes.per_class_keys, None,
                lambda c: {"base_text_features": (c, 4), "text_feature_residuals": (c, 4)}),
    "LinearProbe": (LinearProbe.per_class_keys, None, lambda c: {"weight": (c, 4), "bias": (c,)}),
    "TipAdapter": ((), TipAdapter.class_dims, lambda c: {"cache_keys": (3, 4), "cache_values": (3, c),
                                                         "beta": (), "alpha": ()}),
    "CoOp CSC": ((), {"ctx": 0}, lambda c: {"ctx": (c, 2, 4)}),
}


def checkpoint(shapes, classnames):
    torch.manual_seed(0)
    return {"state_dict": {k: torch.randn(s) for k, s in shapes.items()}, "epoch": 3, "classnames": classnames}


def class_dim(layout, key):
    per_class_keys, class_dims, _ = LAYOUTS[layout]
    dims = class_dims if class_dims is not None else dict.fromkeys(per_class_keys, 0)
    return dims.get(key)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("named", [True, False])
def test_1000_class_checkpoint_keeps_the_subset_rows(layout, named):
    per_class_keys, class_dims, shapes = LAYOUTS[layout]
    names_1k = [f"c{i}" for i in range(1000)]
    current = [f"c{i}" for i in INDICES]
    state = checkpoint(shapes(1000), names_1k if named else None)
    loader = Loader(Tensors(shapes(len(INDICES))), current, INDICES, per_class_keys, class_dims)
    loader.restore("m", state, "ckpt")
    index = torch.tensor(INDICES)
    for key, value in loader._models["m"].state_dict().items():
        dim = class_dim(layout, key)
        expected = state["state_dict"][key] if dim is None else state["state_dict"][key].index_select(dim, index)
        assert torch.equal(value, expected), key
    assert loader.seen == [current]  # the method sees the sliced rows as this run's classes
    assert "unseen_classes_zeroshot" not in loader.record


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_other_row_count_without_class_names_is_one_clear_error(layout):
    per_class_keys, class_dims, shapes = LAYOUTS[layout]
    loader = Loader(Tensors(shapes(len(INDICES))), [f"c{i}" for i in INDICES], INDICES, per_class_keys, class_dims)
    with pytest.raises(UserError, match="evaluates a 1000-class ImageNet classifier .* has 500 classes"):
        loader.restore("m", checkpoint(shapes(500), None), "ckpt")


def test_subset_checkpoint_with_class_names_is_matched_by_name():
    """ImageNet base half -> new half: no 1000 rows, so rows follow the class names."""
    per_class_keys, _, shapes = LAYOUTS["LinearProbe"]
    base = [f"c{i}" for i in range(4)]
    current = ["c2", "x", "c0"]
    state = checkpoint(shapes(4), base)
    module = Tensors(shapes(3))
    module.weight.fill_(7.0)  # the freshly built (zero-shot) rows
    loader = Loader(module, current, [2, 500, 0], per_class_keys)
    loader.restore("m", state, "ckpt")
    weight = state["state_dict"]["weight"]
    assert torch.equal(module.weight, torch.stack([weight[2], torch.full((4,), 7.0), weight[0]]))
    assert loader.record["unseen_classes_zeroshot"] == 1


def test_same_classes_load_unchanged_on_a_subset():
    per_class_keys, _, shapes = LAYOUTS["TaskRes"]
    current = [f"c{i}" for i in range(5)]
    state = checkpoint(shapes(5), current)
    loader = Loader(Tensors(shapes(5)), current, list(range(5)), per_class_keys)
    loader.restore("m", state, "ckpt")
    assert torch.equal(loader._models["m"].base_text_features, state["state_dict"]["base_text_features"])
