"""The contract every PDE family implements.

A :class:`Problem` knows its parameters (typed, with defaults and checks),
its input distribution, its numerical reference solver and its grid. It
produces numpy arrays, channels-first, and knows nothing about training.

Determinism: sample ``i`` of a data set is drawn from
``rng_for(seed, i)`` alone, so it does not depend on worker count, order or
which machine produced it. Problems that solve several samples together
(``chunk_size > 1``) are always handed the same aligned chunk of indices,
so batching cannot change a sample either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ..errors import ParameterError


#: parameters added after data files were already written, at the value that generates what those
#: files hold: a file without the parameter and one with it at this value hold the same samples
#: (the data fingerprint leaves them out, :func:`oplab.train.data.fingerprint`, and generation
#: resumes such files, :func:`oplab.data.generation.generate`); a new parameter is registered here
LATER_DEFAULTS = {"dcdm_net": ""}


def rng_for(seed: int, index: int) -> np.random.Generator:
    """The random generator of sample ``index`` of a data set with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(index),)))


# --------------------------------------------------------------------- params
@dataclass(frozen=True)
class Param:
    """One problem parameter: a typed default, a check, and a help line."""

    name: str
    default: Any
    help: str
    check: Callable[[Any], bool] | None = None
    expect: str = ""  # human description of a valid value, e.g. "> 0"
    choices: tuple | None = None

    @property
    def kind(self) -> type:
        return type(self.default)

    def parse(self, text: str) -> Any:
        """Convert a command-line string to this parameter's type."""
        kind = self.kind
        try:
            if kind is bool:
                low = text.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(text)
            if kind is int:
                value = float(text)
                if not value.is_integer():
                    raise ValueError(text)
                return int(value)
            return kind(text)
        except ValueError:
            raise ParameterError(
                f"parameter {self.name!r}: cannot read {text!r} as {kind.__name__}"
            ) from None

    def validate(self, value: Any, problem: str) -> Any:
        kind = self.kind
        if kind is float and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            value = float(value)
        if kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ParameterError(
                f"{problem}: parameter {self.name!r} must be {kind.__name__}, got {value!r}"
            )
        if kind is float and not math.isfinite(value):
            raise ParameterError(f"{problem}: parameter {self.name!r} must be finite, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ParameterError(
                f"{problem}: parameter {self.name!r} must be one of {list(self.choices)}, got {value!r}"
            )
        if self.check is not None and not self.check(value):
            raise ParameterError(
                f"{problem}: parameter {self.name!r} must be {self.expect}, got {value!r}"
            )
        return value


def positive(name: str, default: float, help: str) -> Param:
    return Param(name, default, help, check=lambda v: v > 0, expect="> 0")


def nonnegative(name: str, default: float, help: str) -> Param:
    return Param(name, default, help, check=lambda v: v >= 0, expect=">= 0")


def record_times(problem: str, t_end: float, record_every: float) -> np.ndarray:
    """The record times ``record_every, 2 record_every, ..., t_end`` of a trajectory problem; a
    ParameterError unless ``t_end`` is a positive multiple of ``record_every``."""
    ratio = t_end / record_every
    if ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-9 * max(1.0, ratio):
        raise ParameterError(f"{problem}: t_end {t_end!r} must be a positive multiple of record_every {record_every!r}")
    return record_every * np.arange(1, int(round(ratio)) + 1)


def trajectory_times(params: dict) -> np.ndarray | None:
    """The record times ``t_end k / n_times``, ``k = 1 .. n_times``, of a problem whose ``trajectory``
    parameter is on (burgers, pde1d); None when only ``t_end`` is recorded."""
    if not params["trajectory"]:
        return None
    count = params["n_times"]
    return params["t_end"] * np.arange(1, count + 1) / count


# ----------------------------------------------------------------------- grid
@dataclass(frozen=True)
class Axis:
    """One axis of a uniform grid.

    Non-periodic axes include both end points (``linspace(lo, hi, n)``);
    periodic axes leave out the right end (``lo + (hi - lo) * arange(n) / n``).
    """

    name: str
    n: int
    lo: float = 0.0
    hi: float = 1.0
    periodic: bool = False

    def coords(self) -> np.ndarray:
        if self.periodic:
            return self.lo + (self.hi - self.lo) * np.arange(self.n) / self.n
        return np.linspace(self.lo, self.hi, self.n)

    def stride_to(self, n: int) -> int:
        """The stride that subsamples this axis to ``n`` points (exactly)."""
        if n == self.n:
            return 1
        if self.periodic:
            ok = 0 < n < self.n and self.n % n == 0
            stride = self.n // n if ok else 0
            rule = f"{self.n} divisible by it"
        else:
            ok = 1 < n < self.n and (self.n - 1) % (n - 1) == 0
            stride = (self.n - 1) // (n - 1) if ok else 0
            rule = f"({self.n} - 1) divisible by (it - 1)"
        if not ok:
            options = sorted(
                m for m in range(2, self.n + 1)
                if (self.n % m == 0 if self.periodic else (self.n - 1) % (m - 1) == 0)
            )
            raise ParameterError(
                f"axis {self.name!r} has {self.n} points and cannot be strided to {n}: "
                f"need {rule}; possible resolutions: {options}"
            )
        return stride


# -------------------------------------------------------------------- problem
class Problem:
    """Base class of a PDE family. Subclasses fill the class variables and
    implement :meth:`sample_inputs` and :meth:`solve` (or :meth:`solve_batch`).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    params_spec: ClassVar[tuple[Param, ...]] = ()
    default_resolution: ClassVar[int] = 64
    min_resolution: ClassVar[int] = 8
    input_channels: ClassVar[tuple[str, ...]] = ("a",)
    output_channels: ClassVar[tuple[str, ...]] = ("u",)
    #: trajectories: the output channels that stay constant in time (a geometry mask, a case
    #: parameter), conditioning rather than state; an autoregressive model reads them and carries
    #: them forward instead of predicting them (:class:`oplab.predictor.Bundle`)
    static_channels: ClassVar[tuple[str, ...]] = ()
    #: samples solved together; generation hands out aligned chunks of this size
    chunk_size: ClassVar[int] = 1

    def __init__(self, resolution: int | None = None, **params: Any):
        spec = {p.name: p for p in self.params_spec}
        unknown = sorted(set(params) - set(spec))
        if unknown:
            raise ParameterError(
                f"{self.name}: unknown parameter(s) {unknown}; valid: {sorted(spec)}"
            )
        if resolution is None:
            resolution = self.default_resolution
        if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
            raise ParameterError(f"{self.name}: resolution must be an integer, got {resolution!r}")
        if resolution < self.min_resolution:
            raise ParameterError(
                f"{self.name}: resolution {resolution} is too small; the recipe needs >= {self.min_resolution}"
            )
        self.resolution = int(resolution)
        self.params = {
            name: p.validate(params.get(name, p.default), self.name) for name, p in spec.items()
        }
        self._check()

    # hooks --------------------------------------------------------------
    def _check(self) -> None:
        """Cross-parameter validation (override when needed)."""

    def input_axes(self) -> list[Axis]:
        raise NotImplementedError

    def output_axes(self) -> list[Axis]:
        return self.input_axes()

    def output_times(self) -> np.ndarray | None:
        """Times of a recorded trajectory (outputs ``[T, C, *S]``), else None."""
        return None

    def domain(self) -> dict:
        axes = self.output_axes()
        return {a.name: [a.lo, a.hi] for a in axes}

    @property
    def solver_name(self) -> str:
        return type(self).__name__

    def sample_inputs(self, rng: np.random.Generator) -> np.ndarray:
        """Draw one input, ``[C_in, *S_in]`` (float64)."""
        raise NotImplementedError

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        """Solve for one input: ``[C_in, *S_in] -> [C_out, *S_out]``
        (or ``[T, C_out, *S_out]`` for a trajectory)."""
        raise NotImplementedError

    def solve_batch(self, inputs: np.ndarray) -> np.ndarray:
        return np.stack([self.solve(x) for x in inputs])

    # derived -------------------------------------------------------------
    def generate(self, indices: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs ``[B, C_in, *S]`` and outputs of samples ``indices``."""
        x = np.stack([self.sample_inputs(rng_for(seed, i)) for i in indices])
        return x, self.solve_batch(x)

    def working_memory(self, together: int) -> int:
        """Bytes a worker needs at least to solve ``together`` samples at once: their float64
        inputs and outputs (a lower bound; problems whose solver holds more say so)."""
        return together * 8 * (math.prod(self.input_shape()) + math.prod(self.output_shape()))

    def input_shape(self) -> tuple[int, ...]:
        return (len(self.input_channels), *(a.n for a in self.input_axes()))

    def output_shape(self) -> tuple[int, ...]:
        shape = (len(self.output_channels), *(a.n for a in self.output_axes()))
        times = self.output_times()
        return shape if times is None else (len(times), *shape)

    def describe(self) -> dict:
        """Everything stored with a data set about how it was made."""
        return {
            "problem": self.name,
            "resolution": self.resolution,
            "params": dict(self.params),
            "solver": self.solver_name,
            "input_channels": list(self.input_channels),
            "output_channels": list(self.output_channels),
            "static_channels": list(self.static_channels),
            "domain": self.domain(),
            "reference": self.reference,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}(resolution={self.resolution}, {args})"
