"""User-facing errors: one line that names the thing and what was expected."""

from __future__ import annotations

import numbers


class OplabError(Exception):
    """An error caused by the user's input (file, key, shape, parameter).

    The command-line interface prints it as one line and exits with code 2;
    the Python API lets it propagate.
    """


class ParameterError(OplabError, ValueError):
    """A problem or generation parameter is unknown or out of range."""


class DataFileError(OplabError):
    """A data file is missing, truncated, foreign, or does not fit."""


def is_int(value, minimum: int = 1) -> bool:
    """``value`` is an int (not a bool) of at least ``minimum``: the check behind "must be a positive
    int" (``minimum=1``) and "a non-negative int" (``minimum=0``) argument errors."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum
