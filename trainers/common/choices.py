"""What the closed-form baselines (GDA, LP++, ProKeR) share about choosing a value on data: the
features of the split a search runs on, the reference loops' tie rule, and keeping a run's
recorded choices (Trainer.chose) in its checkpoint, so that `--eval-only --model-dir` reports
how the model it evaluates was chosen."""
from engine.errors import UserError

SEARCH_SPLITS = ("val", "test")


def search_features(trainer, split, what, fixed_hint):
    """(raw features [M, D], labels [M]) of `split` for choosing `what`; one clear error when the
    split is empty (`fixed_hint`: the key that avoids the search)."""
    items = trainer.dm.split(split)
    if not items:
        raise UserError(f"{trainer.cfg.DATASET.NAME} has no {split} images to choose {what} on; "
                        f"{fixed_hint}")
    if split == "val" and items is trainer.dm.split("test"):
        print(f"Note: the validation split of this dataset is its test split (as in CoOp); {what} is chosen "
              f"on test images")
    return trainer.source.split_features(split)


def first_best(points, score):
    """(point, score, trace): the first point with the strictly highest score, as the reference
    loops do (`if acc > best`); `score(point)` -> accuracy."""
    best, best_score, trace = None, -float("inf"), []
    for point in points:
        s = float(score(point))
        trace.append((point, s))
        if s > best_score:
            best, best_score = point, s
    return best, best_score, trace


def accuracy(logits, labels):
    """Top-1 accuracy in %."""
    return 100.0 * (logits.argmax(-1) == labels.to(logits.device)).float().mean().item()


def saved_choices(trainer):
    """The run's recorded choices as plain rows [key, value, split, tier] for a checkpoint."""
    return [[k, v, s, t] for k, (v, s, t) in trainer.selection.choices.items()]


def restore_choices(trainer, checkpoint):
    """Record again the choices a loaded checkpoint was made with (its tiers as recorded)."""
    for key, value, split, tier in checkpoint.get("choices") or []:
        trainer.selection.chose(key, value, split, tier)
