"""The part of Dassl.pytorch's API that CLIP trainer files (CoOp, CoCoOp, KgCoOp, ProGrad, TaskRes,
CLIP-Adapter ...) use, implemented on this project's engine, so such files run here unchanged:
copy `trainers/<method>.py` into `trainers/` and run train.py. docs/dassl_compat.md lists what is
and is not provided.

Dassl itself is not on PyPI and does not run on current PyTorch. Where a genuine Dassl is installed
and wanted instead, set TASKRES_USE_REAL_DASSL=1: this package then steps aside and `import dassl`
returns the other installation (the first one found on sys.path or by an installed finder).
"""
import os

__version__ = "0.6.3"  # the Dassl release whose API this mirrors

REAL_DASSL_ENV = "TASKRES_USE_REAL_DASSL"


def _use_real_dassl():
    """Load the other `dassl` package into sys.modules["dassl"]; the import statement that is
    running this file returns whatever sys.modules holds when it finishes."""
    import importlib.machinery
    import importlib.util
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    search = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    spec = None
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            candidate = find("dassl", search) if finder is importlib.machinery.PathFinder else find("dassl", None)
        except (ImportError, ValueError):
            continue
        origin = getattr(candidate, "origin", None)
        if candidate is not None and origin and os.path.dirname(os.path.abspath(origin)) != here:
            spec = candidate
            break
    if spec is None:
        raise ImportError(f"{REAL_DASSL_ENV}=1 asks for a genuine Dassl, but no dassl package other than "
                          f"{here} is installed. Install Dassl.pytorch (pip install -e <Dassl.pytorch checkout>) "
                          f"or unset {REAL_DASSL_ENV} to use this project's compatible layer.")
    module = importlib.util.module_from_spec(spec)
    sys.modules["dassl"] = module
    spec.loader.exec_module(module)


if os.environ.get(REAL_DASSL_ENV, "").strip().lower() in ("1", "true", "yes"):
    _use_real_dassl()
