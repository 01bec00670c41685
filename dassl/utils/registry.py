"""Dassl's `Registry` for files that keep registries of their own. The trainer and dataset
registries are this project's (dassl.engine.TRAINER_REGISTRY, dassl.data.DATASET_REGISTRY)."""
from engine.registry import Registry as _EngineRegistry

__all__ = ["Registry"]


class Registry(_EngineRegistry):
    """`@REG.register()` or `REG.register(obj)`; `force=True` replaces an existing entry."""

    def __init__(self, name):
        super().__init__(name)
        self._name = name

    def register(self, obj=None, force=False):
        def add(o):
            if force and o.__name__ in self:
                self._items[o.__name__] = o
                return o
            return super(Registry, self).register(o)

        return add(obj) if obj is not None else add

    def registered_names(self):
        return self.names()
