"""One module per method; importing this package registers every trainer.

Every module in this folder is imported, so a trainer file copied here (ours, or one written
for Dassl, see docs/dassl_compat.md) is available to `train.py --trainer NAME` without edits.
Modules whose name starts with `_` are skipped. What several methods share is in `common/`
(`text.py` and `templates.py` here keep the import paths method files use).
"""
import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
