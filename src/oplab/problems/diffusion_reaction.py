"""Diffusion-reaction with a source term, DeepONet's PDE benchmark.

Lu, Jin, Pang, Zhang & Karniadakis 2021, "Learning nonlinear operators via
DeepONet based on the universal approximation theorem of operators", Nature
Machine Intelligence 3, 218-229 (arXiv:1910.03193), section
"Diffusion-reaction system with a source term": the operator maps a source
``u(x)`` to the solution ``s(x, t)`` of

    s_t = D s_xx + k s^2 + u(x),      x in (0, 1),  t in (0, t_end],
    s(x, 0) = 0,    s(0, t) = s(1, t) = 0,

with ``D = 0.01``, ``k = 0.01``, ``t_end = 1`` and ``u`` a zero-mean Gaussian
process with the RBF kernel ``exp(-|x - y|^2 / (2 l^2))``, ``l = 0.2``
(section "Function spaces" of the Methods). The paper observes ``u`` at 100
sensors and ``s`` on a 100 x 100 space-time grid, the defaults here.

Layout
------
* input ``[1, nx]`` ("u"): the source at ``x_j = j / (nx - 1)``, ``nx`` the
  resolution;
* output ``[1, nt, nx]`` ("s"): the solution at ``t_i = t_end i / (nt - 1)``
  (``nt = n_times``, or the resolution when ``n_times == 0``) and ``x_j``.
  Time is a grid axis here (the output is a space-time field, as in the
  paper), not a recorded trajectory.

Reference solver
----------------
The source between the sensors is their not-a-knot cubic spline interpolant
(``O(h^4)``, negligible against the solver's error). On a fine grid, refined
``solve_factor`` times in space and in time over the stored one
(``h = 1 / (solve_factor (nx - 1))``, ``dt = t_end / (solve_factor (nt - 1))``),
:func:`solve_fine` integrates the method of lines with the second-order
central difference ``L`` for ``s_xx`` (Dirichlet rows dropped) by the
linearly implicit Crank-Nicolson step

    (s^{n+1} - s^n) / dt = D L (s^{n+1} + s^n) / 2 + k s^n s^{n+1}
                           + (f^n + f^{n+1}) / 2,

a tridiagonal solve per step (:func:`scipy.linalg.solve_banded`). The product
``s^n s^{n+1}`` replaces the trapezoidal ``((s^n)^2 + (s^{n+1})^2) / 2`` at a
cost of ``(s^{n+1} - s^n)^2 / 2 = O(dt^2)`` per unit time, i.e. an
``O(dt^3)`` local error, so the scheme stays second order in time (and in
space) without Newton iterations. The fine solution is then subsampled on the
stored grid. The default ``solve_factor`` (8) gives a relative error (max
and L2 norms) of 1e-6 to 5e-6 on GP sources at the default resolution and
parameters, measured against ``solve_factor = 32``; every halving of the
factor multiplies it by about 4.

The zero initial and boundary values do not match a source with
``u(0) != 0`` at the corners ``(x, t) = (0, 0), (1, 0)``: the solution has a
layer of width ``sqrt(D t)`` there. It is continuous, and the scheme's
observed order on GP sources is still close to two.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.linalg import solve_banded

from ..errors import ParameterError
from ..solvers.random_fields import rbf_gp
from .base import Axis, Param, Problem, positive

#: a source: an array over the fine grid's nodes (time-independent) or a
#: callable ``f(t, x) -> array like x`` (time-dependent)
Source = np.ndarray | Callable[[float, np.ndarray], np.ndarray]


def solve_fine(
    source: Source,
    n_cells: int,
    n_steps: int,
    diffusion: float = 0.01,
    reaction: float = 0.01,
    t_end: float = 1.0,
) -> np.ndarray:
    """Solve ``s_t = D s_xx + k s^2 + f(x, t)`` on ``[0, 1] x [0, t_end]`` with
    zero initial and Dirichlet boundary values.

    ``source`` is either an array of shape ``[n_cells + 1]`` (``f`` at the nodes
    ``x_j = j / n_cells``, constant in time) or a callable ``f(t, x)`` returning
    an array shaped like ``x``. Returns ``s`` at all nodes and time levels,
    ``[n_steps + 1, n_cells + 1]``, boundary values included. Second order in
    ``h = 1 / n_cells`` and ``dt = t_end / n_steps`` (the linearly implicit
    Crank-Nicolson step of the module docstring). Raises
    :class:`FloatingPointError` when ``dt k s >= 1/2`` somewhere: the
    reaction then outruns the time step (the exact solution blows up at
    ``t ~ 1 / (k s)`` without diffusion), and the step would be meaningless.
    """
    if n_cells < 2 or n_steps < 1:
        raise ValueError(f"need n_cells >= 2 and n_steps >= 1, got {n_cells}, {n_steps}")
    h = 1.0 / n_cells
    dt = t_end / n_steps
    x = np.linspace(0.0, 1.0, n_cells + 1)
    xi = x[1:-1]  # interior nodes, [N] with N = n_cells - 1
    n = n_cells - 1

    if callable(source):
        def forcing(t: float) -> np.ndarray:
            return np.asarray(source(t, xi), dtype=np.float64)
    else:
        values = np.asarray(source, dtype=np.float64)
        if values.shape != x.shape:
            raise ValueError(f"source array must have shape {x.shape}, got {values.shape}")
        steady = values[1:-1].copy()

        def forcing(t: float) -> np.ndarray:
            return steady

    c = 0.5 * dt * diffusion / h**2  # CN weight of the 3-point Laplacian
    # banded (l = u = 1) storage of A = I - (dt D / 2) L - dt k diag(s^n):
    # row 0 the super-diagonal, row 1 the diagonal, row 2 the sub-diagonal
    band = np.empty((3, n))
    band[0, 0] = 0.0
    band[0, 1:] = -c
    band[2, :-1] = -c
    band[2, -1] = 0.0
    diag_base = 1.0 + 2.0 * c

    out = np.zeros((n_steps + 1, n_cells + 1))  # [T, X]; boundary columns stay 0
    s = np.zeros(n)  # interior values, [N]
    f_old = forcing(0.0)
    for step in range(1, n_steps + 1):
        f_new = forcing(step * dt)
        # right-hand side (I + (dt D / 2) L) s^n + dt (f^n + f^{n+1}) / 2
        rhs = (1.0 - 2.0 * c) * s + 0.5 * dt * (f_old + f_new)
        rhs[1:] += c * s[:-1]
        rhs[:-1] += c * s[1:]
        growth = dt * reaction * s  # dt k s^n: the step over the reaction's blow-up time
        if not growth.max() < 0.5:  # also catches nan
            raise FloatingPointError(
                f"k s^2 blows up or is under-resolved at t = {(step - 1) * dt:.4g} "
                f"(dt k s = {np.nanmax(growth):.3g} >= 0.5)"
            )
        band[1] = diag_base - growth
        s = solve_banded((1, 1), band, rhs, overwrite_b=True, check_finite=False)
        out[step, 1:-1] = s
        f_old = f_new
    return out


def _n_times_ok(v: int) -> bool:
    return v == 0 or v >= 2


class DiffusionReaction(Problem):
    """``u(x) -> s(x, t)`` for ``s_t = D s_xx + k s^2 + u`` with zero initial and
    boundary values; inputs ``[1, nx]`` ("u"), outputs ``[1, nt, nx]`` ("s")."""

    name = "diffusion_reaction"
    summary = "s_t = D s_xx + k s^2 + u(x): DeepONet's diffusion-reaction operator, u a GP"
    reference = (
        "Lu et al. 2021, 'Learning nonlinear operators via DeepONet based on the universal "
        "approximation theorem of operators', Nat. Mach. Intell. 3:218, "
        "section 'Diffusion-reaction system with a source term'"
    )
    params_spec = (
        positive("D", 0.01, "diffusion coefficient"),
        Param("k", 0.01, "reaction coefficient of the k s^2 term (any real)"),
        positive("length_scale", 0.2, "length scale l of the RBF kernel of the source GP"),
        positive("variance", 1.0, "variance of the source GP"),
        positive("t_end", 1.0, "final time"),
        Param(
            "n_times",
            0,
            "number of stored time levels on [0, t_end] (0: the resolution)",
            check=_n_times_ok,
            expect="0 or >= 2",
        ),
        Param(
            "solve_factor",
            8,
            "refinement of the internal grid over the stored one, in space and in time",
            check=lambda v: 1 <= v <= 64,
            expect="in [1, 64]",
        ),
    )
    default_resolution = 100  # the paper's 100 sensors and 100 x 100 grid
    min_resolution = 4
    input_channels = ("u",)
    output_channels = ("s",)
    chunk_size = 1

    @property
    def n_times(self) -> int:
        return self.params["n_times"] or self.resolution

    def input_axes(self) -> list[Axis]:
        return [Axis("x", self.resolution, 0.0, 1.0)]

    def output_axes(self) -> list[Axis]:
        return [
            Axis("t", self.n_times, 0.0, self.params["t_end"]),
            Axis("x", self.resolution, 0.0, 1.0),
        ]

    @property
    def solver_name(self) -> str:
        return (
            f"linearly implicit Crank-Nicolson, 2nd-order finite differences, "
            f"{self.params['solve_factor']}x refined grid"
        )

    def sample_inputs(self, rng: np.random.Generator) -> np.ndarray:
        u = rbf_gp(
            rng,
            self.resolution,
            length_scale=self.params["length_scale"],
            variance=self.params["variance"],
        )
        return u[None, :]  # [1, nx]

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        """``[1, nx] -> [1, nt, nx]``."""
        inputs = np.asarray(inputs, dtype=np.float64)
        if inputs.shape != self.input_shape():
            raise ValueError(
                f"{self.name}: expected inputs of shape {self.input_shape()}, got {inputs.shape}"
            )
        factor = self.params["solve_factor"]
        nx, nt = self.resolution, self.n_times
        n_cells, n_steps = factor * (nx - 1), factor * (nt - 1)

        x = self.input_axes()[0].coords()
        x_fine = np.linspace(0.0, 1.0, n_cells + 1)
        source = CubicSpline(x, inputs[0], bc_type="not-a-knot")(x_fine)  # [n_cells + 1]
        # the spline reproduces the sensor values at the shared nodes exactly
        source[::factor] = inputs[0]

        try:
            fine = solve_fine(
                source,
                n_cells,
                n_steps,
                diffusion=self.params["D"],
                reaction=self.params["k"],
                t_end=self.params["t_end"],
            )  # [n_steps + 1, n_cells + 1]
        except FloatingPointError as err:
            raise ParameterError(
                f"{self.name}: {err}; reduce k, t_end or the source variance, or raise solve_factor"
            ) from None
        if not np.all(np.isfinite(fine)):
            raise ParameterError(
                f"{self.name}: the solution is not finite; reduce k, t_end or the source variance"
            )
        return fine[::factor, ::factor][None]  # [1, nt, nx]
