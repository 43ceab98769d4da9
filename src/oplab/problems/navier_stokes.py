"""2D incompressible Navier-Stokes on the unit torus, the FNO benchmark.

Li, Kovachki, Azizzadenesheli, Liu, Bhattacharya, Stuart & Anandkumar 2021,
"Fourier Neural Operator for Parametric Partial Differential Equations",
ICLR 2021 (arXiv:2010.08895), section 5.3. Vorticity form on ``(0, 1)^2``
periodic:

    w_t + u . grad w = nu Lap w + f,    div u = 0,    w = curl u,
    u = (psi_y, -psi_x),  -Lap psi = w,
    f(x, y) = 0.1 (sin(2 pi (x + y)) + cos(2 pi (x + y))),
    w(., 0) = w0 ~ N(0, 7^3 (-Laplacian + 49 I)^-2.5)

(:func:`~oplab.solvers.random_fields.periodic_grf` with ``alpha = 2.5``,
``tau = 7``, ``sigma = 7^1.5``, zero mean). The paper uses ``nu`` in
``{1e-3, 1e-4, 1e-5}`` with ``T = 50, 30, 20``, time step ``1e-4``, solves on
``256^2`` and stores every unit time on ``64^2`` by striding.

Here the input is ``w0`` at the stored resolution (``[1, n, n]``, channel
"w0") and the outputs the vorticity at ``record_every, 2 record_every, ...,
t_end`` (``[T, 1, n, n]``, channel "w"); :meth:`output_times` lists them.
Defaults follow the paper for ``nu = 1e-3`` (``t_end = 50``); set ``t_end``
for the other viscosities (or a shorter horizon: the cost is linear in it).

Reference solver
----------------
:func:`~oplab.solvers.spectral.navier_stokes_cn`: Fourier pseudo-spectral
with the 2/3 rule, Crank-Nicolson diffusion, forward-Euler advection and
forcing (``scheme="euler"``, the paper's generator) or Heun's second-order
predictor-corrector (``scheme="heun"``), float64, on ``solve_resolution^2``.
Verified by the exact decay of Taylor-Green-type eigenmodes under forcing
(CN's second order), the schemes' orders on a turbulent field, the
conservation of the mean vorticity and batch independence
(tests/test_navier_stokes.py). With ``dt = 1e-4`` and ``nu = 1e-3`` the
forward-Euler error after one unit of time is about 3e-6 relative, Heun's 2e-10.

Samples are drawn independently (``rng_for(seed, i)``) at
``solve_resolution`` and integrated ``chunk_size`` at a time as one torch
batch. The computation runs on the CPU unless the environment variable
``OPLAB_DEVICE`` names another torch device (e.g. ``cuda``); GPU FFTs round
differently, so a data set should be made on one kind of device throughout
(the device is part of :attr:`solver_name`, stored with the data). On the CPU,
glibc returning freed FFT buffers to the OS dominates the cost; generation
processes raise glibc's mmap/trim thresholds
(:func:`oplab.data.generation.tune_allocator`), 1.5-2.6x faster.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from ..errors import ParameterError
from ..solvers.random_fields import periodic_grf
from ..solvers.spectral import navier_stokes_cn
from .base import Axis, Param, Problem, nonnegative, positive, rng_for


def _device() -> torch.device:
    """The torch device of the solver: ``$OPLAB_DEVICE``, else the CPU."""
    return torch.device(os.environ.get("OPLAB_DEVICE", "cpu") or "cpu")


def fno_forcing(n: int, amplitude: float = 0.1) -> np.ndarray:
    """``amplitude (sin(2 pi (x + y)) + cos(2 pi (x + y)))`` on the ``n^2`` torus grid, ``[n, n]``."""
    x = np.arange(n) / n
    s = 2 * np.pi * (x[:, None] + x[None, :])
    return amplitude * (np.sin(s) + np.cos(s))


def fourier_upsample(field: np.ndarray, n_fine: int) -> np.ndarray:
    """Trigonometric interpolation of ``[..., n, n]`` periodic fields onto ``n_fine^2``.

    Modes ``|k| < n / 2`` are kept; the Nyquist modes (ambiguous in a real
    field) are dropped.
    """
    n = field.shape[-1]
    if n_fine == n:
        return field.copy()
    coef = np.fft.rfft2(field)  # [..., n, n//2+1]
    half = (n - 1) // 2  # largest |k| kept
    fine = np.zeros((*field.shape[:-2], n_fine, n_fine // 2 + 1), dtype=np.complex128)
    fine[..., : half + 1, : half + 1] = coef[..., : half + 1, : half + 1]
    fine[..., n_fine - half :, : half + 1] = coef[..., n - half :, : half + 1]
    return np.fft.irfft2(fine, s=(n_fine, n_fine)) * (n_fine / n) ** 2


class NavierStokes(Problem):
    """``w0 -> (w(t_1), ..., w(t_T))`` of 2D Navier-Stokes (vorticity) on the
    unit torus; inputs ``[1, n, n]`` ("w0"), outputs ``[T, 1, n, n]`` ("w")."""

    name = "navier_stokes"
    summary = "2D incompressible Navier-Stokes (vorticity), periodic: w0 ~ GRF -> w(1..T) (FNO benchmark)"
    reference = (
        "Li et al. 2021, 'Fourier Neural Operator for Parametric Partial Differential "
        "Equations', ICLR 2021, section 5.3"
    )
    params_spec = (
        positive("nu", 1e-3, "viscosity nu (the paper: 1e-3, 1e-4, 1e-5)"),
        positive("t_end", 50.0, "final time T (the paper: 50 for nu=1e-3, 30 for 1e-4, 20 for 1e-5)"),
        positive("record_every", 1.0, "time between stored snapshots; t_end must be a multiple"),
        positive("dt", 1e-4, "time step of the integrator"),
        Param("solve_resolution", 256, "grid of the solver; a multiple of resolution, strided down to it",
              check=lambda v: v >= 8, expect=">= 8"),
        Param("scheme", "euler", "advection step: 'euler' (the paper's) or 'heun' (2nd order, 2x cost)",
              choices=("euler", "heun")),
        positive("alpha", 2.5, "GRF exponent: covariance sigma^2 (-Lap + tau^2)^-alpha"),
        positive("tau", 7.0, "GRF inverse length scale tau"),
        positive("sigma", 7.0**1.5, "GRF amplitude sigma"),
        nonnegative("forcing_amplitude", 0.1, "f = amplitude (sin(2 pi (x+y)) + cos(2 pi (x+y)))"),
    )
    default_resolution = 64  # the paper's stored grid
    min_resolution = 16
    input_channels = ("w0",)
    output_channels = ("w",)
    chunk_size = 8

    def _check(self) -> None:
        p = self.params
        fine = p["solve_resolution"]
        if fine < self.resolution or fine % self.resolution:
            raise ParameterError(
                f"{self.name}: solve_resolution {fine} must be a multiple of resolution {self.resolution}"
            )
        ratio = p["t_end"] / p["record_every"]
        if ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-9 * max(1.0, ratio):
            raise ParameterError(
                f"{self.name}: t_end {p['t_end']!r} must be a positive multiple of "
                f"record_every {p['record_every']!r}"
            )
        if p["dt"] > p["record_every"]:
            raise ParameterError(
                f"{self.name}: dt {p['dt']!r} must be <= record_every {p['record_every']!r}"
            )

    # grid ---------------------------------------------------------------
    def input_axes(self) -> list[Axis]:
        return [
            Axis("x", self.resolution, 0.0, 1.0, periodic=True),
            Axis("y", self.resolution, 0.0, 1.0, periodic=True),
        ]

    def output_times(self) -> np.ndarray:
        count = int(round(self.params["t_end"] / self.params["record_every"]))
        return self.params["record_every"] * np.arange(1, count + 1)

    @property
    def stride(self) -> int:
        return self.params["solve_resolution"] // self.resolution

    @property
    def solver_name(self) -> str:
        p = self.params
        return (
            f"crank-nicolson/{p['scheme']} pseudospectral dt={p['dt']:g}, 2/3 dealiasing, "
            f"solved on {p['solve_resolution']}^2 and strided, torch float64 on {_device().type}"
        )

    # sampling and solving -------------------------------------------------
    def _sample_fine(self, rng: np.random.Generator) -> np.ndarray:
        """The initial vorticity on the solver's grid, ``[N, N]``."""
        p = self.params
        return periodic_grf(
            rng, p["solve_resolution"], dim=2, alpha=p["alpha"], tau=p["tau"], sigma=p["sigma"]
        )

    def sample_inputs(self, rng: np.random.Generator) -> np.ndarray:
        s = self.stride
        return self._sample_fine(rng)[None, ::s, ::s].copy()  # [1, n, n]

    def _integrate(self, w0_fine: np.ndarray) -> np.ndarray:
        """``[B, N, N]`` initial fields on the solver grid -> ``[B, T, 1, n, n]``."""
        p = self.params
        fine = p["solve_resolution"]
        device = _device()
        forcing = None
        if p["forcing_amplitude"] > 0:
            forcing = torch.from_numpy(fno_forcing(fine, p["forcing_amplitude"]))
        traj = navier_stokes_cn(
            torch.from_numpy(w0_fine), forcing, p["nu"], p["t_end"], p["dt"],
            record_times=self.output_times(), scheme=p["scheme"], device=device,
        )  # [B, T, N, N]
        s = self.stride
        return traj[:, :, None, ::s, ::s].cpu().numpy().copy()

    def generate(self, indices: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs ``[B, 1, n, n]`` and outputs ``[B, T, 1, n, n]`` of samples ``indices``.

        Each initial field is drawn from ``rng_for(seed, i)`` on the solver's
        grid (the input is its strided version). Samples are integrated
        together in groups of the same aligned chunk ``i // chunk_size``, so
        a sample's bits do not depend on which other chunks were requested;
        a partial chunk agrees with the full one to round-off (batched FFTs
        may round differently).
        """
        s = self.stride
        indices = [int(i) for i in indices]
        groups: dict[int, list[int]] = {}
        for pos, i in enumerate(indices):
            groups.setdefault(i // self.chunk_size, []).append(pos)
        x = np.empty((len(indices), *self.input_shape()))
        y = np.empty((len(indices), *self.output_shape()))
        for positions in groups.values():
            w0 = np.stack([self._sample_fine(rng_for(seed, indices[j])) for j in positions])  # [B, N, N]
            x[positions] = w0[:, None, ::s, ::s]
            y[positions] = self._integrate(w0)
        return x, y

    def solve_batch(self, inputs: np.ndarray) -> np.ndarray:
        """Solve from stored-resolution inputs ``[B, 1, n, n]``.

        The inputs are interpolated (trigonometrically) onto the solver's grid
        first; since a stored input lacks its field's modes ``|k| >= n / 2``,
        this reproduces :meth:`generate`'s outputs only up to their (small)
        influence, exactly when ``solve_resolution == resolution``.
        """
        fine = fourier_upsample(np.asarray(inputs, dtype=np.float64)[:, 0], self.params["solve_resolution"])
        return self._integrate(fine)

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        return self.solve_batch(inputs[None])[0]

    def residual(self, pred, x):
        """Per-sample physics residual of a predicted vorticity trajectory (the physics loss).

        ``pred [B, T, n, n]`` (times as channels), ``x [B, 1, n, n]`` (``w0``).
        In space the solver's own Fourier derivatives and 2/3 rule
        (:func:`~oplab.solvers.spectral.navier_stokes_cn`); in time, between
        recorded snapshots ``dt = record_every`` apart, the integrating-factor
        trapezoidal step (diffusion exactly):

            r_k = w_{k+1} - E w_k + (dt / 2) (E N(w_k) + N(w_{k+1})),
            E = exp(-nu |2 pi k|^2 dt),  N(w) = u . grad w - f,

        in Fourier space; loss ``sum_k ||r_k||^2 / sum_k (||w_{k+1} - w_k||^2 + ||(dt/2)(E N_k + N_{k+1})||^2)``
        (denominator detached). It checks the equation only as well as the
        snapshots resolve time: meaningful for ``record_every`` well below the
        flow's time scale, not for the paper's one snapshot per time unit.
        """
        import math

        p = self.params
        T = len(self.output_times())
        if pred.shape[1] != T:
            raise ParameterError(f"navier_stokes: residual expects {T} recorded times, got {pred.shape[1]} channels")
        n = pred.shape[-1]
        dev, real = pred.device, pred.dtype
        w = torch.cat([x[:, :1], pred], dim=1)  # [B, T + 1, n, n]
        dt = p["record_every"]
        kx = torch.fft.fftfreq(n, 1.0 / n, dtype=real, device=dev)[:, None]
        ky = torch.fft.rfftfreq(n, 1.0 / n, dtype=real, device=dev)[None, :]
        mask = ((kx.abs() < n / 3.0) & (ky < n / 3.0)).to(real)
        lap = 4 * math.pi**2 * (kx**2 + ky**2)
        inv_lap = torch.where(lap > 0, 1.0 / torch.where(lap > 0, lap, torch.ones_like(lap)), torch.zeros_like(lap))
        dx, dy = (2j * math.pi) * kx * mask, (2j * math.pi) * ky * mask
        wh = torch.fft.rfft2(w)
        u = torch.fft.irfft2(dy * inv_lap * wh, s=(n, n))
        v = torch.fft.irfft2(-dx * inv_lap * wh, s=(n, n))
        wx = torch.fft.irfft2(dx * wh, s=(n, n))
        wy = torch.fft.irfft2(dy * wh, s=(n, n))
        f_hat = torch.fft.rfft2(torch.as_tensor(fno_forcing(n, p["forcing_amplitude"]), dtype=real, device=dev))
        N = torch.fft.rfft2(u * wx + v * wy) * mask - f_hat
        E = torch.exp(-p["nu"] * lap * dt)
        step = 0.5 * dt * (E * N[:, :-1] + N[:, 1:])
        r = wh[:, 1:] - E * wh[:, :-1] + step
        scale = ((wh[:, 1:] - wh[:, :-1]).abs().square() + step.abs().square()).detach().flatten(1).sum(1)
        return r.abs().square().flatten(1).sum(1) / scale.clamp_min(1e-30)
