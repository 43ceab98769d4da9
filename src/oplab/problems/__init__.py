"""PDE families: one module each, registered by name.

>>> from oplab import problems
>>> problems.available()
['antiderivative', 'barrier', 'burgers', 'cavity', 'cylinder', 'dam', 'darcy', 'darcy_domain', 'diffusion_reaction', 'engine', 'heat', 'helmholtz', 'navier_stokes', 'pde1d', 'poisson', 'room_acoustics', 'tube']
>>> p = problems.create("darcy", resolution=85, contrast_high=12.0)
"""

from __future__ import annotations

import difflib
import importlib

from ..errors import ParameterError
from .base import Axis, Param, Problem, rng_for

# name -> "module:Class"; modules are imported on first use
_REGISTRY = {
    "darcy": "darcy:Darcy",
    "darcy_domain": "domains:DarcyDomain",
    "burgers": "burgers:Burgers",
    "navier_stokes": "navier_stokes:NavierStokes",
    "poisson": "poisson:Poisson",
    "helmholtz": "helmholtz:Helmholtz",
    "antiderivative": "antiderivative:Antiderivative",
    "diffusion_reaction": "diffusion_reaction:DiffusionReaction",
    "heat": "heat:Heat",
    "cavity": "cfd_flows:Cavity",
    "tube": "cfd_flows:Tube",
    "cylinder": "cfd_flows:Cylinder",
    "barrier": "cfd_flows:Barrier",
    "dam": "dam:Dam",
    "room_acoustics": "room_acoustics:RoomAcoustics",
    "engine": "engine:Engine",
    "pde1d": "pde1d:PDE1D",
}


def available() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> type[Problem]:
    """The problem class registered as ``name`` (hyphens count as underscores)."""
    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, _REGISTRY, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ParameterError(f"unknown problem {name!r}{hint} (available: {', '.join(available())})")
    module, cls = _REGISTRY[key].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def create(name: str, resolution: int | None = None, **params) -> Problem:
    return get(name)(resolution, **params)


__all__ = ["Axis", "Param", "Problem", "available", "create", "get", "rng_for"]
