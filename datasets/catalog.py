"""What other code reads about a dataset (its configs/datasets stem, figure name and prompt
template), looked up by DATASET.NAME or stem. The facts are class attributes of the dataset
(see DatasetBase), so adding a dataset touches no table elsewhere."""
from dataclasses import dataclass

from engine.errors import ConfigError, UserError
from engine.registry import DATASET_REGISTRY

from .base import DatasetBase


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # DATASET.NAME, the registry key
    stem: str  # configs/datasets/<stem>.yaml; the name itself for a dataset that sets none
    display_name: str  # figures and tables
    template: str  # the reference CoOp/TaskRes prompt, e.g. "a photo of a {}, a type of pet."


def _info(name, cls):
    # getattr: a registered class need not derive from DatasetBase.
    return DatasetInfo(name=name, stem=getattr(cls, "stem", "") or name,
                       display_name=getattr(cls, "display_name", "") or name,
                       template=getattr(cls, "template", DatasetBase.template))


def all_info():
    """DatasetInfo of every registered dataset, by name."""
    return [_info(name, cls) for name, cls in DATASET_REGISTRY.items()]


def find(name):
    """DatasetInfo for a DATASET.NAME or a stem; None if no registered dataset has it."""
    if name in DATASET_REGISTRY:
        return _info(name, DATASET_REGISTRY.get(name))
    return next((i for i in all_info() if i.stem == name), None)


def info(name):
    """As find(), but an unknown name is a UserError listing the registered datasets."""
    found = find(name)
    if found is None:
        raise UserError(DATASET_REGISTRY.unknown_message(name))
    return found


def stem_of(name):
    """configs/datasets stem for a DATASET.NAME or stem; an unknown name is returned unchanged."""
    found = find(name)
    return found.stem if found else name


def name_of(stem):
    """DATASET.NAME for a stem or DATASET.NAME; an unknown name is returned unchanged."""
    found = find(stem)
    return found.name if found else stem


def check_template(template):
    """A prompt template (DATASET.TEMPLATE) must hold one `{}`, where the class name goes."""
    try:
        ok = template.count("{}") == 1 and template.format("x")
    except (IndexError, KeyError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"DATASET.TEMPLATE must hold one {{}} for the class name, e.g. 'a photo of a {{}}.'; "
                          f"got {template!r}")
    return template
