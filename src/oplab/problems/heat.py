"""The heat equation on the periodic unit interval, solved exactly: the linear test of rollouts.

    u_t = nu u_xx,    x in (0, 1) periodic,    u(x, 0) = u0(x),

with ``u0 ~ N(0, sigma^2 (-Laplacian + tau^2 I)^-alpha)``
(:func:`~oplab.solvers.random_fields.periodic_grf`). Each Fourier mode decays
exactly, ``u_k(t) = exp(-nu (2 pi k)^2 t) u_k(0)``, so the reference solver is
exact to round-off and the map from one record to the next is the same linear
operator at every step: a one-step operator learned exactly rolls out exactly,
which is what tests/test_rollout.py checks of autoregressive training.

Inputs ``u0`` (``[1, n]``, channel "u0"), outputs the trajectory ``u`` at
``record_every, 2 record_every, ..., t_end`` (``[T, 1, n]``, channel "u").
"""

from __future__ import annotations

import numpy as np

from ..solvers.random_fields import periodic_grf
from .base import Axis, Problem, positive, record_times


def heat_multiplier(n: int, nu: float, t: float) -> np.ndarray:
    """``exp(-nu (2 pi k)^2 t)`` on the ``rfft`` layout of ``n`` points."""
    k = np.fft.rfftfreq(n, 1.0 / n)
    return np.exp(-nu * (2 * np.pi * k) ** 2 * t)


class Heat(Problem):
    """``u0 -> (u(t_1), ..., u(t_T))`` of the periodic 1D heat equation, exactly."""

    name = "heat"
    summary = "1D heat equation, periodic, exact Fourier solution: u0 ~ GRF -> u(t_1..t_T) (rollout test)"
    reference = "exact solution by Fourier series (each mode decays as exp(-nu (2 pi k)^2 t))"
    params_spec = (
        positive("nu", 0.01, "diffusivity nu"),
        positive("t_end", 1.0, "final time"),
        positive("record_every", 0.1, "time between records; t_end must be a multiple"),
        positive("alpha", 2.0, "GRF exponent: covariance sigma^2 (-Lap + tau^2)^-alpha"),
        positive("tau", 5.0, "GRF inverse length scale tau"),
        positive("sigma", 25.0, "GRF amplitude sigma"),
    )
    default_resolution = 64
    min_resolution = 8
    input_channels = ("u0",)
    output_channels = ("u",)

    def _check(self) -> None:
        self.output_times()  # t_end a multiple of record_every

    def input_axes(self) -> list[Axis]:
        return [Axis("x", self.resolution, 0.0, 1.0, periodic=True)]

    def output_times(self) -> np.ndarray:
        return record_times(self.name, self.params["t_end"], self.params["record_every"])

    @property
    def solver_name(self) -> str:
        return "exact Fourier series"

    def sample_inputs(self, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        return periodic_grf(rng, self.resolution, dim=1, alpha=p["alpha"], tau=p["tau"], sigma=p["sigma"])[None]

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        n = self.resolution
        coef = np.fft.rfft(np.asarray(inputs[0], dtype=np.float64))
        times = self.output_times()
        traj = np.stack([np.fft.irfft(coef * heat_multiplier(n, self.params["nu"], t), n=n) for t in times])
        return traj[:, None]  # [T, 1, n]
