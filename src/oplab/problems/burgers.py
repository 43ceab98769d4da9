"""1D viscous Burgers on the periodic unit interval, the FNO benchmark.

Li, Kovachki, Azizzadenesheli, Liu, Bhattacharya, Stuart & Anandkumar 2021,
"Fourier Neural Operator for Parametric Partial Differential Equations",
ICLR 2021 (arXiv:2010.08895), section 5.1:

    u_t + (u^2 / 2)_x = nu u_xx,    x in (0, 1) periodic,  t in (0, 1],
    u(x, 0) = u0(x),

with ``nu = 0.1`` and the operator ``u0 -> u(., 1)``. The initial condition is
``u0 ~ N(0, 625 (-Laplacian + 25 I)^-2)`` on the periodic unit interval,
i.e. :func:`~oplab.solvers.random_fields.periodic_grf` with ``alpha = 2``,
``tau = 5``, ``sigma = 25`` (zero mean, the constant mode left out). The
paper solves on 8192 points and subsamples; the data set's resolution here
is the solver's grid.

Reference solver
----------------
Fourier pseudo-spectral in space with the 2/3 rule on ``u^2``, ETDRK4 in time
(:func:`~oplab.solvers.spectral.burgers_etdrk4`). The time step is ``dt``, or
with ``dt = 0`` :func:`~oplab.solvers.spectral.burgers_auto_dt`: ``1e-3``
bounded by an advective CFL estimate from ``max |u0|``, which for the recipe
is ``1e-3`` (relative error about 4e-9 against ``dt = 1e-4`` at 8192 points).
Verified against the exact Cole-Hopf solution, including ETDRK4's fourth
order in time (tests/test_burgers.py).

With ``trajectory=True`` the outputs are ``u`` at the ``n_times`` times
``t_end * k / n_times``, ``k = 1..n_times`` (``[T, 1, n]``; ``t = 0`` is the input).
"""

from __future__ import annotations

import numpy as np

from ..solvers.random_fields import periodic_grf
from ..solvers.spectral import burgers_etdrk4
from .base import Axis, Param, Problem, nonnegative, positive, trajectory_times


class Burgers(Problem):
    """``u0 -> u(., t_end)`` (or the trajectory) of viscous Burgers on the
    periodic unit interval; inputs ``[1, n]`` ("u0"), outputs ``[1, n]`` or
    ``[T, 1, n]`` ("u")."""

    name = "burgers"
    summary = "1D viscous Burgers, periodic: u0 ~ GRF -> u(T) (FNO benchmark)"
    reference = (
        "Li et al. 2021, 'Fourier Neural Operator for Parametric Partial Differential "
        "Equations', ICLR 2021, section 5.1"
    )
    params_spec = (
        positive("nu", 0.1, "viscosity nu"),
        positive("t_end", 1.0, "final time T"),
        positive("alpha", 2.0, "GRF exponent: covariance sigma^2 (-Lap + tau^2)^-alpha"),
        positive("tau", 5.0, "GRF inverse length scale tau"),
        positive("sigma", 25.0, "GRF amplitude sigma"),
        nonnegative("dt", 0.0, "ETDRK4 time step; 0 picks it from nu and max|u0| (1e-3 for the recipe)"),
        Param("trajectory", False, "record u at n_times evenly spaced times instead of only t_end"),
        Param("n_times", 100, "number of recorded times when trajectory is on",
              check=lambda v: v >= 1, expect=">= 1"),
    )
    default_resolution = 8192  # the paper's solver grid
    min_resolution = 16
    input_channels = ("u0",)
    output_channels = ("u",)
    chunk_size = 1

    def working_memory(self, together: int) -> int:
        """The inputs and outputs, plus ETDRK4's coefficients: the contour integral of Kassam &
        Trefethen holds about six complex arrays of 64 points per Fourier mode."""
        return super().working_memory(together) + 6 * 64 * 16 * (self.resolution // 2 + 1)

    def input_axes(self) -> list[Axis]:
        return [Axis("x", self.resolution, 0.0, 1.0, periodic=True)]

    def output_times(self) -> np.ndarray | None:
        return trajectory_times(self.params)

    @property
    def solver_name(self) -> str:
        dt = self.params["dt"]
        step = f"dt={dt:g}" if dt > 0 else "dt=min(1e-3, CFL(max|u0|, nu))"
        return f"etdrk4-pseudospectral {step}, 2/3 dealiasing, n={self.resolution}, float64"

    def sample_inputs(self, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        u0 = periodic_grf(rng, self.resolution, dim=1, alpha=p["alpha"], tau=p["tau"], sigma=p["sigma"])
        return u0[None]  # [1, n]

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        p = self.params
        dt = p["dt"] if p["dt"] > 0 else None
        u = burgers_etdrk4(inputs[0], p["nu"], p["t_end"], dt=dt, record_times=self.output_times())
        return u[..., None, :]  # [1, n] or [T, 1, n]

    def residual(self, pred, x):
        """Per-sample physics residual of a predicted trajectory (the physics loss).

        ``pred [B, T, n]`` (the trajectory, times as channels), ``x [B, 1, n]``
        (``u0``). In space the solver's own Fourier derivatives with the 2/3
        rule on ``u^2``; in time, between the recorded times ``t_k = t_end k / T``,
        the integrating-factor trapezoidal step (the stiff diffusion exactly,
        as the ETDRK4 solver treats it; a plain trapezoid would see the fast
        decay of u0's high modes as a residual):

            r_k = u_{k+1} - E u_k + (dt / 2) (E N(u_k) + N(u_{k+1})),
            E = exp(-nu k^2 dt),  N(u) = (u^2 / 2)_x,

        in Fourier space, and the loss ``sum_k ||r_k||^2 / sum_k (||u_{k+1} - u_k||^2 + ||(dt / 2)(E N_k + N_{k+1})||^2)``
        (denominator detached): zero up to the step's O(dt^3) local error on the solver's solution.
        """
        import torch

        from ..errors import ParameterError

        p = self.params
        if not p["trajectory"]:
            raise ParameterError("burgers: the physics loss needs trajectory data (--param trajectory=true): "
                                 "a map u0 -> u(T) alone has no time derivative to check")
        if pred.shape[1] != p["n_times"]:
            raise ParameterError(f"burgers: residual expects {p['n_times']} recorded times, got {pred.shape[1]} channels")
        n = pred.shape[-1]
        u = torch.cat([x[:, :1], pred], dim=1)  # [B, T + 1, n]
        dt = p["t_end"] / p["n_times"]
        freq = torch.fft.fftfreq(n, d=1.0 / n, device=pred.device, dtype=pred.dtype)
        k = 2 * torch.pi * freq
        keep = (freq.abs() < n / 3).to(pred.dtype)
        E = torch.exp(-p["nu"] * k.square() * dt)
        uh = torch.fft.fft(u)
        Nh = 1j * k * torch.fft.fft(0.5 * u.square()) * keep
        step = 0.5 * dt * (E * Nh[:, :-1] + Nh[:, 1:])
        r = uh[:, 1:] - E * uh[:, :-1] + step
        scale = ((uh[:, 1:] - uh[:, :-1]).abs().square() + step.abs().square()).detach().flatten(1).sum(1)
        return r.abs().square().flatten(1).sum(1) / scale.clamp_min(1e-30)
