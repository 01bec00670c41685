"""Per-class parameters across class sets (base-to-new generalization).

A method with one row per class (TaskRes residuals, linear-probe weights, class-specific
contexts) trained on the base classes knows nothing about the new ones. Rows are matched by
class name: a class seen in training keeps its trained row; a class never seen keeps the row the
freshly built model has for it, which for these methods is the zero-shot classifier (TaskRes:
base text feature with a zero residual). CoCoOp's protocol relabels new classes from 0, so
matching by index would silently pair unrelated classes.
"""
import torch


def remap_class_rows(state_dict, fresh_state, keys, trained_classnames, current_classnames):
    """(state dict whose `keys` have one row per current class, unseen class names)."""
    index = {name: i for i, name in enumerate(trained_classnames)}
    unseen = [c for c in current_classnames if c not in index]
    out = dict(state_dict)
    for key in keys:
        if key not in state_dict or key not in fresh_state:
            continue
        trained, fresh = state_dict[key], fresh_state[key]
        rows = [trained[index[c]].to(fresh.device, fresh.dtype) if c in index else fresh[i]
                for i, c in enumerate(current_classnames)]
        out[key] = torch.stack(rows) if rows else fresh.clone()
    return out, unseen
