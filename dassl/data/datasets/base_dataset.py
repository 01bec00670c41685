"""Dassl's `Datum` and `DatasetBase`, on this project's dataset types.

`Datum` is a subclass of this project's Datum (so everything here accepts it) that pickles the
way Dassl's does: class `dassl.data.datasets.base_dataset.Datum`, state
{"_impath", "_label", "_domain", "_classname"}. Few-shot caches pickled by Dassl itself therefore
unpickle to it, and caches pickled here load in Dassl and in this project's dataset code.

`DatasetBase` takes Dassl's constructor arguments and carries the helpers CoOp-style dataset
files call (on the class or an instance): generate_fewshot_dataset, split_dataset_by_label,
subsample_classes, read_split, save_split, split_trainval, read_and_split_data. They are this
project's implementations (same formats, same order of Python `random` draws, so the same seed
selects the same files) and return dassl Datums.
"""
from collections import defaultdict

import datasets  # noqa: F401  (registers this project's datasets)
from datasets import base as _base
from datasets import fewshot as _fewshot
from engine.errors import DatasetError, UserError

__all__ = ["Datum", "DatasetBase"]

_FIELDS = ("impath", "label", "domain", "classname")


class Datum(_base.Datum):
    """One image: impath (str), label (int), domain (int), classname (str). Unlike Dassl's, the
    constructor does not stat the file; splits are checked where they are loaded."""

    __slots__ = ()

    def __getstate__(self):
        return {"_impath": self.impath, "_label": self.label, "_domain": self.domain, "_classname": self.classname}

    def __setstate__(self, state):
        if isinstance(state, dict):
            values = tuple(state.get("_" + f, d) for f, d in zip(_FIELDS, ("", 0, 0, "")))
        else:
            values = tuple(state)
        for field, value in zip(_FIELDS, values):
            object.__setattr__(self, field, value)

    def __eq__(self, other):
        if isinstance(other, _base.Datum):
            return tuple(getattr(self, f) for f in _FIELDS) == tuple(getattr(other, f) for f in _FIELDS)
        return NotImplemented

    __hash__ = _base.Datum.__hash__


def as_dassl(items):
    """Dassl Datums for a list of this project's Datums (None stays None)."""
    if items is None:
        return None
    return [d if isinstance(d, Datum) else Datum(impath=d.impath, label=d.label, domain=d.domain,
                                                 classname=d.classname) for d in items]


class DatasetBase(_base.DatasetBase):
    """A dataset: train_x (labelled), train_u (unlabelled), val and test lists of Datum."""

    dataset_dir = ""  # the dataset folder under DATASET.ROOT
    domains = []  # domain names (domain adaptation / generalisation datasets)

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        super().__init__(train_x if train_x is not None else [], val=val, test=test, train_u=train_u)

    # -- helpers Dassl datasets call ----------------------------------------------------------
    def get_num_classes(self, data_source):
        return _base.get_num_classes(data_source)

    def get_lab2cname(self, data_source):
        return _base.get_lab2cname(data_source)

    def split_dataset_by_label(self, data_source):
        return _base.split_dataset_by_label(data_source)

    def split_dataset_by_domain(self, data_source):
        out = defaultdict(list)
        for item in data_source:
            out[item.domain].append(item)
        return out

    def check_input_domains(self, source_domains, target_domains):
        for domain in list(source_domains) + list(target_domains):
            if domain not in self.domains:
                raise UserError(f"Input domain must belong to {self.domains}, but got [{domain}]")

    def download_data(self, url, dst, from_gdrive=True):
        raise DatasetError(f"This project does not download datasets from trainer code: fetch {url} by other means "
                           f"and extract it next to {dst}. DATASETS.md lists the sources and layouts.")

    def generate_fewshot_dataset(self, *data_sources, num_shots=-1, repeat=False):
        """Per label (first-appearance order) `random.sample(items, num_shots)` (all items when
        fewer, or `random.choices` with `repeat`), from Python's global `random`. One source ->
        one list, several -> a list of lists."""
        out = _fewshot.generate_fewshot_dataset(*data_sources, num_shots=num_shots, repeat=repeat)
        if num_shots < 1:
            return out
        return as_dassl(out) if len(data_sources) == 1 else [as_dassl(o) for o in out]

    # -- CoOp's static helpers (OxfordPets/DTD in CoOp), here for every dataset --------------
    @staticmethod
    def read_split(filepath, path_prefix):
        return tuple(as_dassl(part) for part in _base.read_split(filepath, path_prefix))

    @staticmethod
    def save_split(train, val, test, filepath, path_prefix):
        _base.save_split(train, val, test, filepath, path_prefix)

    @staticmethod
    def split_trainval(trainval, p_val=0.2):
        return tuple(as_dassl(part) for part in _base.split_trainval(trainval, p_val=p_val))

    @staticmethod
    def subsample_classes(*args, subsample="all"):
        out = _base.subsample_classes(*args, subsample=subsample)
        return args if subsample == "all" else [as_dassl(part) for part in out]

    @staticmethod
    def read_and_split_data(image_dir, p_trn=0.5, p_val=0.2, ignored=(), new_cnames=None):
        return tuple(as_dassl(part) for part in _base.read_and_split_data(
            image_dir, p_trn=p_trn, p_val=p_val, ignored=ignored, new_cnames=new_cnames))
