"""How a run's choices were made, recorded as results.json["selection"].

Few-shot numbers are only comparable when it is known what touched a run's hyperparameters,
epoch or checkpoint. A method reports each choice it makes with `Trainer.chose(key, value, split)`;
the tier is then derived from what the run did, not from a label in a yaml:

- "none": nothing was chosen on data (fixed values, explicit functions of K, last epoch);
- "fewshot-val": chosen on the K-shot training images or a validation split of at most K
  images per class (CoOp's min(K, 4)) that holds no test image;
- "full-val": chosen on the dataset's whole validation split;
- "test": chosen on test images (an oracle: an upper bound only). ImageNet's validation split
  is its test split (as in CoOp), so a choice on its "val" is a choice on test.

Besides the declared choices, the engine notes every split whose images were read before the
final evaluation (DataManager.read): a read of val or test that no `chose` call accounts for
still raises the tier (a run is never reported fairer than what it looked at), and is named in
`unrecorded` so that the method can be fixed to say what it chose.

A checkpoint carries the selection of the run that wrote it; a run that loads it (--eval-only,
cross-dataset transfer) inherits those choices, marked "inherited".
"""

TIERS = ("none", "fewshot-val", "full-val", "test")  # from fair to oracle
UNKNOWN = "unknown"  # runs written before selections were recorded


def worst(tiers):
    """The least fair of `tiers` (a run is as fair as its least fair choice)."""
    return max(tiers, key=TIERS.index, default="none")


def meets(tier, protocol):
    """Whether a run at `tier` is at least as fair as the `protocol` it asked for."""
    return tier in TIERS and TIERS.index(tier) <= TIERS.index(protocol)


def check_tier(tier):
    if tier not in TIERS:
        raise ValueError(f"unknown selection tier {tier!r}; expected one of {', '.join(TIERS)}")
    return tier


class Selection:
    """The choices one run made: key -> (value, split, tier), plus the splits it read."""

    def __init__(self):
        self.choices = {}
        self.reads = {}  # split -> tier, for every non-training split read before the final evaluation
        self.inherited = None  # the selection summary of a loaded checkpoint

    def chose(self, key, value, split, tier):
        self.choices[key] = (value, split, check_tier(tier))

    def read(self, split, tier):
        self.reads.setdefault(split, check_tier(tier))

    def inherit(self, summary):
        """Take the choices of the run that wrote a loaded checkpoint (its summary(); None for a
        checkpoint that recorded none: written elsewhere or before tiers, so "unknown")."""
        if isinstance(summary, dict) and summary.get("tier") in TIERS + (UNKNOWN,):
            # Flat: a checkpoint's own summary already counts what it inherited in its tier.
            self.inherited = {k: v for k, v in summary.items() if k != "inherited"}
        else:
            self.inherited = {"tier": UNKNOWN}

    def unrecorded(self):
        """Splits read before the final evaluation on which no choice was declared."""
        declared = {s for _, s, _ in self.choices.values()}
        return sorted(s for s in self.reads if s not in declared)

    def summary(self):
        """{"tier", "chosen": {key: value}, "split": {key: split}, ...}: plain values for results.json.
        "reads" lists the splits read for anything but the final evaluation; "unrecorded" those
        of them no choice names; "inherited" the loaded checkpoint's selection."""
        tiers = [tier for _, _, tier in self.choices.values()] + list(self.reads.values())
        chosen = {k: v for k, (v, _, _) in self.choices.items()}
        split = {k: s for k, (_, s, _) in self.choices.items()}
        out = {"tier": worst(tiers), "chosen": chosen, "split": split, "reads": sorted(self.reads)}
        if self.unrecorded():
            out["unrecorded"] = self.unrecorded()
        if self.inherited is not None:
            known = self.inherited["tier"] != UNKNOWN
            # what a checkpoint without a record chose is not known, unless this run looked at test itself
            out["tier"] = worst([out["tier"], self.inherited["tier"]]) if known else (
                "test" if out["tier"] == "test" else UNKNOWN)
            out["inherited"] = self.inherited
        return out


def tier_of(result):
    """The selection tier of a results.json dict; runs written before selections were recorded
    are "unknown", unless Tip-Adapter's search record says where it searched (never guessed "none")."""
    sel = result.get("selection")
    if isinstance(sel, dict) and sel.get("tier") in TIERS:
        return sel["tier"]
    extras = result.get("extras") or {}
    if extras.get("search_on_test") or extras.get("epoch_selection") == "test":
        return "test"
    if extras.get("search_grid") or extras.get("epoch_selection") == "val" or extras.get("c_search"):
        return "full-val" if int(result.get("num_shots") or -1) < 1 else "fewshot-val"
    return UNKNOWN
