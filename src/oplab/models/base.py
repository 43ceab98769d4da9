"""The contract of every operator: an ``nn.Module`` rebuilt from plain JSON values.

``Operator.__init_subclass__`` records each constructor's bound arguments in
``self.config`` (JSON-checked), so a checkpoint is ``weights.safetensors`` +
``config.json`` and ``models.from_config(config)`` rebuilds the module
without pickle.

Call signature, the same for every model::

    y = model(x, coords)

* ``x``: ``[B, C_in, *S_in]``, input functions on a grid (point operators take
  the flattened grid values as sensor values);
* ``coords``: a tuple of 1D tensors, the coordinates of each output axis
  (the dataset's output grid); grid operators build positional channels from
  it, point operators evaluate their trunk at its mesh;
* ``y``: ``[B, C_out, *S_out]``.
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import ClassVar, Sequence

from torch import nn

from ..errors import ParameterError


class Operator(nn.Module):
    #: registry name, set by ``models.register``
    name: ClassVar[str] = ""
    #: "grid": any resolution the architecture allows; "point": fixed sensors, any query points
    kind: ClassVar[str] = "grid"
    #: one operator on every grid, approximately: for an input band-limited below the coarse grid's
    #: Nyquist frequency, the outputs on an ``n`` and a ``2n`` periodic grid agree at the common
    #: points up to a discretization error (aliasing of positional channels, of the harmonics that
    #: nonlinearities make, of domain padding) that shrinks as the grids are refined; exactly, or
    #: not at all, on the grids :meth:`resolution_invariance` says. The model's docstring says
    #: which parts are exact. The fuzzer (tests/test_fuzz.py) checks what every model says.
    resolution_invariant: ClassVar[bool] = False
    #: the paper the model implements
    reference: ClassVar[str] = ""

    config: dict

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            try:
                bound = signature.bind(self, *args, **kw)
            except TypeError as exc:  # a missing or unknown argument: the caller's input
                raise ParameterError(f"{cls.__name__}: {exc}") from None
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            arguments.pop("self")
            init(self, *args, **kw)
            if type(self) is cls:  # the most derived constructor records
                config = _jsonable(arguments, cls.__name__)
                object.__setattr__(self, "config", config)

        cls.__init__ = recording_init

    @classmethod
    def defaults(cls, sizes: tuple[int, ...], periodic: Sequence[bool], given: dict | None = None) -> dict:
        """Constructor arguments this model derives from the data: ``sizes`` is the
        output grid ``S`` (grid models map ``[B, C_in, *S]`` to ``[B, C_out, *S]``),
        ``periodic`` the periodicity of each axis, ``given`` the arguments the user
        set (they win; a derived value that depends on them should follow them).
        Channels and sensor counts are filled by :func:`oplab.models.presets.derive`;
        a model overrides this for anything else that depends on the grid
        (dimension, modes, grid size, boundary handling). Keys the constructor
        does not take are ignored."""
        return {"dim": len(sizes)}

    def resolution_invariance(self, sizes: Sequence[int]) -> str | None:
        """How this model, as configured, answers an input band-limited below the Nyquist frequency of
        the periodic grid ``sizes`` (``n`` points per axis on the unit torus) there and on the
        periodic grid of ``2 n`` points, at the common points: ``"exact"`` (the same, to float
        rounding), ``"approximate"`` (up to the discretization error of :attr:`resolution_invariant`)
        or ``None`` (no claim). Default: ``"approximate"`` for a ``resolution_invariant`` model,
        else ``None``; a model says more where it can (and the fuzzer checks it)."""
        return "approximate" if self.resolution_invariant else None

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in getattr(self, "config", {}).items())

    def n_params(self) -> int:
        """Real parameters (a complex weight counts twice)."""
        return sum(p.numel() * (2 if p.is_complex() else 1) for p in self.parameters())


def _jsonable(arguments: dict, owner: str) -> dict:
    out = {}
    for key, value in arguments.items():
        if isinstance(value, tuple):
            value = list(value)
        try:
            json.dumps(value)
        except TypeError:
            raise TypeError(f"{owner}: constructor argument {key!r} must be a plain JSON value, got {type(value).__name__}") from None
        out[key] = value
    return out
