"""Errors meant for the person running the code.

A `UserError` carries a complete, actionable message. `train.py` prints it without a traceback
and exits with status 2; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: a missing file or folder, an unknown name, an invalid setting."""


class ConfigError(UserError):
    """A configuration key or value that cannot be used."""


class DatasetError(UserError):
    """A dataset that is missing, incomplete or inconsistent on disk."""


class WeightsError(UserError):
    """Model weights that cannot be found, downloaded or read."""
