"""User-facing errors: one line that names the thing and what was expected."""

from __future__ import annotations


class OplabError(Exception):
    """An error caused by the user's input (file, key, shape, parameter).

    The command-line interface prints it as one line and exits with code 2;
    the Python API lets it propagate.
    """


class ParameterError(OplabError, ValueError):
    """A problem or generation parameter is unknown or out of range."""


class DataFileError(OplabError):
    """A data file is missing, truncated, foreign, or does not fit."""
