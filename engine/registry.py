"""Name -> class registries with "did you mean" errors (the role of Dassl's Registry).

A registry names the package whose import registers its entries (`trainers`, `datasets`) and
imports it on first use, so a tool asks the registry without knowing where methods live and
the core never imports a layer above it by name.
"""
import difflib
import importlib

from .errors import UserError


class Registry:
    def __init__(self, kind, package=None):
        self.kind = kind
        self._items = {}
        self._package = package  # imported once, on first look-up

    def _discover(self):
        if self._package:
            package, self._package = self._package, None
            importlib.import_module(package)

    def register(self, obj=None, name=None, force=False):
        """Use as `@REG.register()` or `REG.register(obj)`; the key is the class name.
        `force` replaces an entry of the same name (as Dassl's registry allows)."""

        def add(o):
            key = name or o.__name__
            if key in self._items and self._items[key] is not o and not force:
                raise KeyError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = o
            return o

        return add(obj) if obj is not None else add

    def get(self, name):
        self._discover()
        if name not in self._items:
            raise UserError(self.unknown_message(name))
        return self._items[name]

    def unknown_message(self, name):
        names = sorted(self._items)
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
        if not close:  # case-insensitive fallback: "eurosat" -> "EuroSAT"
            close = [n for n in names if n.lower() == str(name).lower()]
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        return f"Unknown {self.kind} {name!r}.{hint} Available: {', '.join(names) or '(none)'}."

    def names(self):
        self._discover()
        return sorted(self._items)

    def items(self):
        self._discover()
        return sorted(self._items.items())

    def __contains__(self, name):
        self._discover()
        return name in self._items


TRAINER_REGISTRY = Registry("trainer", package="trainers")
DATASET_REGISTRY = Registry("dataset", package="datasets")
