"""oplab: operator learning for PDEs.

Rooms (see README, "Architecture"): ``problems`` (PDE families),
``solvers`` (numerical machinery), ``data`` (HDF5 format, datasets,
resumable generation). Sub-packages are imported lazily so that
``import oplab`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {"problems", "solvers", "data", "errors", "cli", "models", "layers", "losses", "train", "predictor",
               "rundir", "checkpoint", "eval", "deploy", "explain"}


def load(run_dir, checkpoint: str = "best", device: str = "cpu"):
    """A trained operator from a run folder: ``op = oplab.load(RUN_DIR); u = op(a)``."""
    from .predictor import load as _load

    return _load(run_dir, checkpoint, device)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'oplab' has no attribute {name!r}")


__all__ = sorted(_SUBMODULES) + ["__version__", "load"]
