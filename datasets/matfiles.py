"""Reading MATLAB annotation files (Flowers, Stanford Cars) with scipy, as DatasetErrors."""
import os

from engine.errors import DatasetError


def load_mat(path, *keys):
    """The variables `keys` of a .mat file, as a tuple (one key: the value itself)."""
    if not os.path.isfile(path):
        raise DatasetError(f"annotation file not found: {path}")
    from scipy.io import loadmat  # scipy is only needed for the fallback splits
    try:
        mat = loadmat(path)
    except (ValueError, TypeError, OSError, NotImplementedError) as e:
        raise DatasetError(f"cannot read {path} as a MATLAB file ({e}); download it again") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DatasetError(f"{path} has no variable {missing[0]!r}; is it the right file?")
    values = tuple(mat[k] for k in keys)
    return values[0] if len(values) == 1 else values
