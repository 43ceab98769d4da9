"""2D incompressible Navier-Stokes on the unit torus, the FNO benchmark.

Li, Kovachki, Azizzadenesheli, Liu, Bhattacharya, Stuart & Anandkumar 2021,
"Fourier Neural Operator for Parametric Partial Differential Equations",
ICLR 2021 (arXiv:2010.08895), section 5.3. Vorticity form on ``(0, 1)^2``
periodic:

    w_t + u . grad w = nu Lap w + f,    div u = 0,    w = curl u,
    u = (psi_y, -psi_x),  -Lap psi = w,
    f(x, y) = 0.1 (sin(2 pi (x + y)) + cos(2 pi (x + y))),
    w(., 0) = w0, a Gaussian random field with alpha = 2.5, tau = 7.

The paper uses ``nu`` in ``{1e-3, 1e-4, 1e-5}`` with ``T = 50, 30, 20``, time
step ``1e-4``, solves on ``256^2`` and stores every unit time on ``64^2`` by
striding.

Here the input is ``w0`` at the stored resolution (``[1, n, n]``, channel
"w0") and the outputs the vorticity at ``record_every, 2 record_every, ...,
t_end`` (``[T, 1, n, n]``, channel "w"); :meth:`output_times` lists them.
Defaults follow the paper for ``nu = 1e-3`` (``t_end = 50``); set ``t_end``
for the other viscosities (or a shorter horizon: the cost is linear in it).

The initial field (``grf``)
---------------------------
Three readings of "the FNO distribution" differ in strength; with
``lam_k = sigma^2 (4 pi^2 |k|^2 + tau^2)^-alpha``, ``sigma = 7^1.5`` (the
default, ``tau^(alpha - 1)`` as in the FNO code), the zero mode left out and
sums over the full grid ``k in [-n/2, n/2)^2``, the pointwise variance of
``w0`` is (:func:`~oplab.solvers.random_fields.periodic_grf_variance`):

* ``grf="fno-code"`` (the default): the FNO authors' generator
  (zongyi-li/fourier_neural_operator, data_generation/navier_stokes/random_fields.py,
  ``GaussianRF``; the published Navier-Stokes errors were measured on its
  data): independent standard normal real and imaginary parts for every
  ``k`` of the full FFT grid, real part of the inverse FFT:
  ``2 sum_k lam_k`` = 0.0686 (at 64^2 and at 256^2).
* ``grf="neuraloperator"``: neuraloperator's later copy of that generator
  (neuraloperator/neuraloperator, same path, complex normal coefficients of
  unit variance), equal in distribution to a real field with covariance
  ``sigma^2 (-Lap + tau^2)^-alpha``: ``sum_k lam_k`` = 0.0343; oplab's
  default before.
* ``grf="paper-text"``: the paper's formula ``N(0, 7^1.5 (-Lap + 49 I)^-2.5)``
  taken literally, the prefactor being the covariance's (``sigma``, not
  ``sigma^2``): ``sum_k lam_k / sigma`` = 0.00185.

The field is drawn on the FNO generator's grid, ``G^2`` with ``G`` the
smallest multiple of ``n`` from 256 up (256 for ``n = 64``), from
``rng_for(seed, i)`` alone, whatever the solver's grid. A solver on ``G^2``
(``preset="fno-paper"``) starts from the field itself, a coarser one from its
Fourier modes ``|k| < N / 2`` (the ones it can hold), a finer one from its
trigonometric interpolation; so one seed gives the same field under every
preset, up to the modes a grid cannot hold. The stored input is the
solver's initial field strided to ``n``: the state at ``t = 0`` of the
stored trajectory (on ``G^2`` that is the paper's input bit for bit; from a
64^2 solver it lacks the aliases of the modes ``|k| >= 32``, about 1% of the
field's amplitude, which viscosity removes within the first time unit at
``nu = 1e-3``).

Reference solver and presets
----------------------------
:func:`~oplab.solvers.spectral.navier_stokes_2d`: Fourier pseudo-spectral with
the 2/3 rule, float64, on ``N^2 = solve_resolution^2``, with one of three time
steppers: ``euler`` (Crank-Nicolson diffusion, forward-Euler advection and
forcing: the paper's generator), ``heun`` (second order) or ``ifrk4``
(integrating-factor RK4: diffusion exact, the rest fourth order).

* ``preset="default"``: ``ifrk4``; ``dt`` per sample and record interval from
  the advective CFL condition and the flow's turnover time,
  ``dt = min(0.05, 1 / (2 pi (N / 3) max(|u| + |v|)), 0.05 / max|w|)``
  (:func:`~oplab.solvers.spectral.ns_auto_dt`); ``N`` the smallest multiple
  of ``n`` whose dealiasing cutoff is damped by viscosity at the rate
  ``nu (2 pi N / 3)^2 >= 2.5`` per unit time (at ``n = 64``: 64 for the
  paper's ``nu = 1e-3``, 128 for ``1e-4``, 256 for ``1e-5``). Measured over
  ``T = 10`` against references on grids two or more times finer (relative
  L2 per recorded time): 2e-8 for ``nu = 1e-3``, 2e-6 for ``1e-4``, 8e-5 for
  ``1e-5`` (the paper's own grid; a coarser one errs by 6e-4), see
  benchmarks/ns_generation.py and benchmarks/RESULTS.md.
* ``preset="fno-paper"``: the FNO paper's settings: ``euler``, ``dt = 1e-4``,
  ``N = 256`` (the smallest multiple of ``n`` from 256 up). With
  ``grf="neuraloperator"`` it reproduces oplab's data from before the
  presets bit for bit.

``solve_resolution``, ``dt`` and ``scheme`` given explicitly override the
preset's; :attr:`solver_name` (stored with the data) states the grid, the
time-step rule and the scheme in use. At ``n = 64``, ``T = 50``,
``nu = 1e-3`` the default is three orders of magnitude cheaper than
``fno-paper`` on a CPU and closer to a converged solution: it agrees with
``fno-paper`` to ``fno-paper``'s own forward-Euler error
(benchmarks/RESULTS.md).

Verified by exact solutions (Taylor-Green-type eigenmodes, forced and not,
with exact decay under ``ifrk4``), the schemes' measured orders on a
turbulent field (1, 2 and 4), the conservation of the mean vorticity and
batch independence (tests/test_navier_stokes.py).

Samples are integrated ``chunk_size`` at a time (aligned chunks: 8, or 32
on solver grids up to 32^2) as one torch batch; with the
automatic step each sample keeps its own step, so its result does not
depend on the other samples beyond FFT round-off. The computation runs on
the CPU unless the environment variable ``OPLAB_DEVICE`` names another torch
device (e.g. ``cuda``); GPU FFTs round differently, so a data set should be
made on one kind of device throughout (the device is part of
:attr:`solver_name`, stored with the data). On the CPU, glibc returning
freed FFT buffers to the OS dominates the cost; generation processes raise
glibc's mmap/trim thresholds (:func:`oplab.data.generation.tune_allocator`),
1.5-2.6x faster.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import ParameterError
from ..solvers.random_fields import periodic_grf
from ..solvers.spectral import NS_COURANT, NS_DT_MAX, NS_TURNOVER, navier_stokes_2d
from .base import Axis, Param, Problem, nonnegative, positive, record_times, rng_for

#: ``preset="default"``: the solver grid's dealiasing cutoff must be damped at least this fast
AUTO_DAMPING = 2.5

#: the initial field is drawn on the smallest multiple of the stored grid from this up (the FNO generator's grid)
DRAW_RESOLUTION = 256

#: the initial field's conventions (``grf``; see the module docstring)
GRF_CONVENTIONS = ("fno-code", "neuraloperator", "paper-text")

#: solver settings per ``preset`` (None: automatic); a grid is rounded up to a multiple of the stored one
PRESETS = {
    "default": {"scheme": "ifrk4", "dt": None, "solve_resolution": None},
    "fno-paper": {"scheme": "euler", "dt": 1e-4, "solve_resolution": 256},
}


def _device() -> torch.device:
    """The torch device of the solver: ``$OPLAB_DEVICE``, else the CPU."""
    return torch.device(os.environ.get("OPLAB_DEVICE", "cpu") or "cpu")


def fno_forcing(n: int, amplitude: float = 0.1) -> np.ndarray:
    """``amplitude (sin(2 pi (x + y)) + cos(2 pi (x + y)))`` on the ``n^2`` torus grid, ``[n, n]``."""
    x = np.arange(n) / n
    s = 2 * np.pi * (x[:, None] + x[None, :])
    return amplitude * (np.sin(s) + np.cos(s))


def fourier_resample(field: np.ndarray, m: int) -> np.ndarray:
    """Trigonometric interpolation of ``[..., n, n]`` periodic fields onto ``m^2``.

    The modes ``|k_x|, |k_y| < min(n, m) / 2`` are kept (the ones both grids
    hold without ambiguity; Nyquist modes are dropped), the others set to
    zero: onto a finer grid this is exact interpolation of a field without
    Nyquist modes, onto a coarser one the Fourier truncation.
    """
    n = field.shape[-1]
    if m == n:
        return field.copy()
    coef = np.fft.rfft2(field)  # [..., n, n//2+1]
    half = (min(n, m) - 1) // 2  # largest |k| kept
    out = np.zeros((*field.shape[:-2], m, m // 2 + 1), dtype=np.complex128)
    out[..., : half + 1, : half + 1] = coef[..., : half + 1, : half + 1]
    out[..., m - half :, : half + 1] = coef[..., n - half :, : half + 1]
    return np.fft.irfft2(out, s=(m, m)) * (m / n) ** 2


def fourier_upsample(field: np.ndarray, n_fine: int) -> np.ndarray:
    """:func:`fourier_resample` onto a grid at least as fine (the name of its first use)."""
    return fourier_resample(field, n_fine)


def auto_solve_resolution(resolution: int, nu: float, damping: float = AUTO_DAMPING) -> int:
    """The smallest multiple ``N`` of ``resolution`` with ``nu (2 pi N / 3)^2 >= damping``.

    In the 2/3-dealiased solver the largest resolved wave number is ``N / 3``;
    there viscosity damps at the rate ``nu (2 pi N / 3)^2``. When that
    exceeds the flow's strain rate (order 1 for the benchmark) by a margin, the
    cascade is cut off by viscosity before the grid: the threshold is chosen
    from measured errors against 256^2 and 512^2 references
    (benchmarks/ns_generation.py).
    """
    need = 3.0 * math.sqrt(damping / nu) / (2 * math.pi)  # N >= need
    return int(resolution * max(1, math.ceil(need / resolution - 1e-9)))


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
        Param("preset", "default", "solver settings: 'default' (ifrk4, CFL time step, grid from nu) or "
              "'fno-paper' (euler, dt=1e-4, 256^2, as the FNO paper); the three below override it",
              choices=tuple(PRESETS)),
        nonnegative("dt", 0.0, "time step; 0: the preset's (default: per sample from the CFL condition; "
                    "fno-paper: 1e-4)"),
        Param("solve_resolution", 0, "solver grid, a multiple of resolution, strided down to it; 0: the "
              "preset's (default: from nu; fno-paper: 256)",
              check=lambda v: v == 0 or v >= 8, expect="0 or >= 8"),
        Param("scheme", "auto", "time stepper: 'euler' (the paper's), 'heun' (2nd order), 'ifrk4' "
              "(integrating-factor RK4); 'auto': the preset's", choices=("auto", "euler", "heun", "ifrk4")),
        Param("grf", "fno-code", "initial field's convention: 'fno-code' (the FNO repository's generator, "
              "variance 2x), 'neuraloperator' (its later copy), 'paper-text' (the paper's formula)",
              choices=GRF_CONVENTIONS),
        positive("alpha", 2.5, "GRF exponent: covariance ~ (-Lap + tau^2)^-alpha"),
        positive("tau", 7.0, "GRF inverse length scale tau"),
        positive("sigma", 7.0**1.5, "GRF amplitude sigma (see grf for how it enters)"),
        nonnegative("forcing_amplitude", 0.1, "f = amplitude (sin(2 pi (x+y)) + cos(2 pi (x+y)))"),
    )
    default_resolution = 64  # the paper's stored grid
    min_resolution = 16
    input_channels = ("w0",)
    output_channels = ("w",)

    def _check(self) -> None:
        p = self.params
        preset = PRESETS[p["preset"]]
        self.scheme = preset["scheme"] if p["scheme"] == "auto" else p["scheme"]
        self.dt = p["dt"] if p["dt"] > 0 else preset["dt"]
        self.auto_grid = False
        if p["solve_resolution"]:
            fine = p["solve_resolution"]
            if fine < self.resolution or fine % self.resolution:
                raise ParameterError(
                    f"{self.name}: solve_resolution {fine} must be a multiple of resolution {self.resolution}"
                )
        elif preset["solve_resolution"] is not None:
            fine = self.resolution * max(1, -(-preset["solve_resolution"] // self.resolution))
        else:
            fine = auto_solve_resolution(self.resolution, p["nu"])
            self.auto_grid = True
        self.solve_resolution = int(fine)
        self.output_times()  # t_end a multiple of record_every
        if p["dt"] > p["record_every"]:
            raise ParameterError(
                f"{self.name}: dt {p['dt']!r} must be <= record_every {p['record_every']!r}"
            )

    @property
    def chunk_size(self) -> int:
        """Samples integrated together: 8, or 32 on solver grids up to 32^2, where a step's
        cost is mostly per-call overhead that a larger batch shares (measured per sample and
        step on one thread: 16^2 0.11 ms at 8, 0.07 at 32; at 64^2 8 is the fastest, about
        0.7-1.2 ms, 2.4x faster than one sample alone; 32 is slower there, 1.4 ms, its FFT
        buffers no longer fitting the cache)."""
        return 32 if self.solve_resolution <= 32 else 8

    # grid ---------------------------------------------------------------
    def input_axes(self) -> list[Axis]:
        return [
            Axis("x", self.resolution, 0.0, 1.0, periodic=True),
            Axis("y", self.resolution, 0.0, 1.0, periodic=True),
        ]

    def output_times(self) -> np.ndarray:
        return record_times(self.name, self.params["t_end"], self.params["record_every"])

    @property
    def stride(self) -> int:
        return self.solve_resolution // self.resolution

    @property
    def draw_resolution(self) -> int:
        """The grid the initial field is drawn on: the smallest multiple of ``resolution`` from 256 up."""
        return self.resolution * max(1, -(-DRAW_RESOLUTION // self.resolution))

    @property
    def solver_name(self) -> str:
        p = self.params
        N = self.solve_resolution
        if self.dt is not None:
            step = f"dt={self.dt:g}"
        else:
            courant = NS_COURANT[self.scheme]
            step = (f"dt per sample and record interval = min({NS_DT_MAX:g}, {courant:g} / (2 pi (N/3) "
                    f"max(|u|+|v|)), {NS_TURNOVER:g} / max|w|")
            if self.scheme != "ifrk4":
                step += ", nu / max(|u|+|v|)^2"
            step += ")"
        stepper = {"euler": "crank-nicolson/euler", "heun": "crank-nicolson/heun",
                   "ifrk4": "ifrk4 (integrating-factor RK4)"}[self.scheme]
        grid = f"solved on {N}^2"
        if self.auto_grid:
            grid += f" (auto: smallest multiple of {self.resolution} with nu (2 pi N/3)^2 >= {AUTO_DAMPING:g})"
        return (
            f"{stepper} pseudospectral {step}, 2/3 dealiasing, {grid} and strided, "
            f"w0 grf={p['grf']} drawn on {self.draw_resolution}^2, torch float64 on {_device().type} "
            f"(preset {p['preset']})"
        )

    # sampling and solving -------------------------------------------------
    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        """The initial vorticity on the drawing grid, ``[G, G]`` (see the module docstring)."""
        p = self.params
        sigma, coefficients = p["sigma"], "hermitian"
        if p["grf"] == "fno-code":
            coefficients = "full"
        elif p["grf"] == "paper-text":
            sigma = math.sqrt(sigma)  # covariance sigma (-Lap + tau^2)^-alpha
        return periodic_grf(rng, self.draw_resolution, dim=2, alpha=p["alpha"], tau=p["tau"], sigma=sigma,
                            coefficients=coefficients)

    def _sample_fine(self, rng: np.random.Generator) -> np.ndarray:
        """The initial vorticity on the solver's grid, ``[N, N]``."""
        return fourier_resample(self._draw(rng), self.solve_resolution)

    def sample_inputs(self, rng: np.random.Generator) -> np.ndarray:
        s = self.stride
        return self._sample_fine(rng)[None, ::s, ::s].copy()  # [1, n, n]

    def _integrate(self, w0_fine: np.ndarray, progress: Callable[[float], None] | None = None) -> np.ndarray:
        """``[B, N, N]`` initial fields on the solver grid -> ``[B, T, 1, n, n]``."""
        p = self.params
        fine = self.solve_resolution
        device = _device()
        forcing = None
        if p["forcing_amplitude"] > 0:
            forcing = torch.from_numpy(fno_forcing(fine, p["forcing_amplitude"]))
        traj = navier_stokes_2d(
            torch.from_numpy(w0_fine), forcing, p["nu"], p["t_end"], self.dt,
            record_times=self.output_times(), scheme=self.scheme, device=device, progress=progress,
        )  # [B, T, N, N]
        s = self.stride
        return traj[:, :, None, ::s, ::s].cpu().numpy().copy()

    def generate(self, indices: Sequence[int], seed: int,
                 progress: Callable[[float], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Inputs ``[B, 1, n, n]`` and outputs ``[B, T, 1, n, n]`` of samples ``indices``.

        Each initial field is drawn from ``rng_for(seed, i)`` and put on the
        solver's grid (the input is that field, strided). Samples are integrated together
        in groups of the same aligned chunk ``i // chunk_size``, so a sample's
        bits do not depend on which other chunks were requested; a partial
        chunk agrees with the full one to round-off (batched FFTs may round
        differently). ``progress``, if given, is called as the integration
        advances with the fraction of ``indices`` done (``0 <= f < 1``).
        """
        s = self.stride
        indices = [int(i) for i in indices]
        groups: dict[int, list[int]] = {}
        for pos, i in enumerate(indices):
            groups.setdefault(i // self.chunk_size, []).append(pos)
        x = np.empty((len(indices), *self.input_shape()))
        y = np.empty((len(indices), *self.output_shape()))
        done = 0
        for positions in groups.values():
            w0 = np.stack([self._sample_fine(rng_for(seed, indices[j])) for j in positions])  # [B, N, N]
            x[positions] = w0[:, None, ::s, ::s]
            report = None
            if progress is not None:
                def report(f, before=done, size=len(positions)):
                    progress(min(before + f * size, len(indices) - 1e-9) / len(indices))
            y[positions] = self._integrate(w0, report)
            done += len(positions)
        return x, y

    def solve_batch(self, inputs: np.ndarray) -> np.ndarray:
        """Solve from stored-resolution inputs ``[B, 1, n, n]``.

        The inputs are interpolated (trigonometrically) onto the solver's grid
        first; since a stored input lacks its field's modes ``|k| >= n / 2``,
        this reproduces :meth:`generate`'s outputs only up to their (small)
        influence, exactly when ``solve_resolution == resolution``.
        """
        fine = fourier_resample(np.asarray(inputs, dtype=np.float64)[:, 0], self.solve_resolution)
        return self._integrate(fine)

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        return self.solve_batch(inputs[None])[0]

    def residual(self, pred, x):
        """Per-sample physics residual of a predicted vorticity trajectory (the physics loss).

        ``pred [B, T, n, n]`` (times as channels), ``x [B, 1, n, n]`` (``w0``).
        In space the solver's own Fourier derivatives and 2/3 rule
        (:func:`~oplab.solvers.spectral.navier_stokes_2d`); in time, between
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
