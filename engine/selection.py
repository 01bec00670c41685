"""How a run's choices were made, recorded as results.json["selection"].

Few-shot numbers are only comparable when it is known what touched a run's hyperparameters,
epoch or checkpoint. A method reports each choice it makes with `Trainer.chose(key, value, split)`;
the tier is then derived from what the run did, not from a label in a yaml:

- "none": nothing was chosen on data (fixed values, explicit functions of K, last epoch);
- "fewshot-val": chosen on the K-shot training images or a validation split of at most K
  images per class drawn from the training data;
- "full-val": chosen on the dataset's whole validation split;
- "test": chosen on test images (an oracle: an upper bound only).
"""

TIERS = ("none", "fewshot-val", "full-val", "test")  # from fair to oracle


def worst(tiers):
    """The least fair of `tiers` (a run is as fair as its least fair choice)."""
    return max(tiers, key=TIERS.index, default="none")


class Selection:
    """The choices one run made: key -> (value, split, tier)."""

    def __init__(self):
        self.choices = {}

    def chose(self, key, value, split, tier):
        if tier not in TIERS:
            raise ValueError(f"unknown selection tier {tier!r}; expected one of {', '.join(TIERS)}")
        self.choices[key] = (value, split, tier)

    def summary(self):
        """{"tier", "chosen": {key: value}, "split": {key: split}}: plain values for results.json."""
        return {"tier": worst(tier for _, _, tier in self.choices.values()),
                "chosen": {k: v for k, (v, _, _) in self.choices.items()},
                "split": {k: s for k, (_, s, _) in self.choices.items()}}
