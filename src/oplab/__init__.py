"""oplab: operator learning for PDEs.

Rooms (see README, "Architecture"): ``problems`` (PDE families),
``solvers`` (numerical machinery), ``data`` (HDF5 format, datasets,
resumable generation). Sub-packages are imported lazily so that
``import oplab`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {"problems", "solvers", "data", "errors", "cli"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'oplab' has no attribute {name!r}")


__all__ = sorted(_SUBMODULES) + ["__version__"]
