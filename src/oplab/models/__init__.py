"""Neural operators, registered by name in the manner of timm.

>>> from oplab import models
>>> models.available()
>>> m = models.create("fno", in_channels=1, out_channels=1, modes=[12, 12], width=32)
>>> m2 = models.from_config(m.config | {"name": "fno"})

Every model is an :class:`~oplab.models.base.Operator` whose constructor
takes plain JSON values; ``model.config`` holds them. Adding a model is one
module in this package that registers its class: the modules are found by
name (every module here except ``base`` and ``presets``).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from ..errors import ParameterError
from .base import Operator

# modules that define models (each registers its classes on import): all of this package's but these
_NOT_MODELS = ("base", "presets")
_MODULES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_MODELS))
_REGISTRY: dict[str, type[Operator]] = {}


def register(name: str):
    """Class decorator: make an Operator available as ``name``."""

    def wrap(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")


def available() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> type[Operator]:
    _load_all()
    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, _REGISTRY, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ParameterError(f"unknown model {name!r}{hint} (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[key]


def create(name: str, **kwargs) -> Operator:
    """Build model ``name``; unknown keyword arguments are an error listing the valid ones."""
    import inspect

    cls = get(name)
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ParameterError(f"model {name!r}: unknown argument(s) {unknown}; valid: {valid}")
    return cls(**kwargs)


def from_config(config: dict) -> Operator:
    """Rebuild a model from ``{"name": ..., **constructor_arguments}``."""
    config = dict(config)
    return create(config.pop("name"), **config)


def config_of(model: Operator) -> dict:
    """``{"name": ..., **constructor_arguments}`` of a model (for config.json)."""
    return {"name": type(model).name, **model.config}


def __getattr__(name: str):
    """The model classes by class name: ``from oplab.models import FNO``."""
    if not name.startswith("_"):
        _load_all()
        for cls in _REGISTRY.values():
            if cls.__name__ == name:
                return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Operator", "available", "config_of", "create", "from_config", "get", "register"]
