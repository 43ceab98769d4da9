"""User-facing errors: one line that names the thing and what was expected."""

from __future__ import annotations

import math
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


def _ints(minimum: int, plural: bool = False) -> str:
    """What :func:`is_int` accepts, in words: "a positive int", "non-negative ints", "an int >= 2", ..."""
    word = {1: "positive int", 0: "non-negative int"}.get(minimum)
    if plural:
        return f"{word}s" if word else f"ints >= {minimum}"
    return f"a {word}" if word else f"an int >= {minimum}"


def check_int(owner: str, key: str, value, minimum: int = 1, optional: bool = False) -> int | None:
    """``value`` as an int if :func:`is_int` holds (``None`` too when ``optional``), else a
    ParameterError ``"{owner}: {key} must be a positive int, got ..."``."""
    if optional and value is None:
        return None
    if not is_int(value, minimum):
        raise ParameterError(f"{owner}: {key} must be {_ints(minimum)}{' or None' if optional else ''}, got {value!r}")
    return int(value)


def check_ints(owner: str, key: str, value, n: int | tuple[int, int | None] | None = None, minimum: int = 1,
               broadcast: bool = False) -> list[int]:
    """``value`` as a list of ints that pass :func:`is_int`, else a ParameterError naming ``owner``,
    ``key`` and what was expected. ``n``: the length (an int), its bounds ``(lo, hi)`` (``hi``
    None: unbounded) or None (any); ``broadcast``: one int stands for ``n`` copies of itself."""
    if broadcast and is_int(value, minimum):
        return [int(value)] * n
    lo, hi = (n, n) if isinstance(n, int) else n or (0, None)
    ok = (isinstance(value, (list, tuple)) and len(value) >= lo and (hi is None or len(value) <= hi)
          and all(is_int(v, minimum) for v in value))
    if not ok:
        if isinstance(n, int):
            expected = f"a list of {n} {_ints(minimum, True)}"
        elif hi is not None:
            expected = f"a list of {lo} to {hi} {_ints(minimum, True)}"
        else:
            expected = f"a {'non-empty ' if lo else ''}list of {_ints(minimum, True)}"
        either = f"{_ints(minimum)} or " if broadcast else ""
        raise ParameterError(f"{owner}: {key} must be {either}{expected}, got {value!r}")
    return [int(v) for v in value]


def check_floats(owner: str, key: str, value, n: int | None = None) -> list[float]:
    """``value`` as a list of finite floats (of length ``n`` when given), else a ParameterError
    naming ``owner``, ``key`` and what was expected."""
    ok = (isinstance(value, (list, tuple)) and (n is None or len(value) == n)
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
    if not ok:
        length = f"{n} " if n is not None else ""
        raise ParameterError(f"{owner}: {key} must be a list of {length}finite numbers, got {value!r}")
    return [float(v) for v in value]


def check_choice(owner: str, key: str, value, choices):
    """``value`` if it is one of ``choices`` (a bool never stands for 0 or 1), else a ParameterError
    ``"{owner}: {key} must be one of [...], got ..."``."""
    if not any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
        raise ParameterError(f"{owner}: {key} must be one of {list(choices)}, got {value!r}")
    return value
