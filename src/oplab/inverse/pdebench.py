"""PDEBench's inverse task: the initial state from the solution at a later time, and its metrics.

Takamoto, Praditia, Leiteritz, MacKinlay, Alesiani, Pflueger & Niepert 2022, "PDEBench: An Extensive
Benchmark for Scientific Machine Learning", NeurIPS 2022 Datasets and Benchmarks (arXiv:2210.07182),
code pdebench/PDEBench (``pdebench/models/inverse/``, ``pdebench/models/metrics.py``,
``pdebench/models/config/config.yaml``, ``run_inverse.sh``). Facts taken from that code (this module
is written anew, nothing copied):

* The cases: 1D advection ``beta = 4``, 1D Burgers ``Nu = 1`` (viscosity ``nu / pi``), 1D
  diffusion-reaction (``Nu = 1, Rho = 2``) and 1D compressible Navier-Stokes (shock tube); FNO and
  U-Net forward surrogates trained on ``u0 -> u(t)``. The data: ``x in (0, 1)`` periodic, 1024
  cells, ``t in [0, 2]`` saved every 0.01 (201 times); the inverse compares at time index
  ``t_train = 101`` (``t = 1.01``), one observation of the whole field.
* The initial conditions (``init_multi``, ``k_tot = 4``): ``sum_{k=1..4} A_k sin(2 pi k c_k x +
  phi_k)`` with ``c_k`` how often ``k`` was drawn in two draws (so an undrawn ``k`` leaves the
  constant ``A_k sin(phi_k)``), ``A_k ~ U(0, 1)``, ``phi_k ~ U(0, 2 pi)``; with probability 0.1
  its absolute value; a random sign; with probability 0.1 a window ``(tanh((x - xL)/0.01) -
  tanh((x - xR)/0.01)) / 2``, ``xL ~ U(0.1, 0.45)``, ``xR ~ U(0.55, 0.9)``
  (:func:`pdebench_initial`).
* The unknown (``InitialConditionInterp``): a latent of 64 values, linearly interpolated to the
  grid (``F.interpolate``, ``align_corners=False``), initialised ``U(0, 1) / 64``.
* The fit: Adam, learning rate 0.2, weight decay 1e-4, 100 steps (``inverse_epochs``), loss the MSE
  between the surrogate's prediction and the observation, both in the units of a scalar
  standardisation fitted on the TRUE initial state (``ElementStandardScaler``: its mean and
  standard deviation) (:func:`recover_initial`).
* The metrics (``inverse_metrics``): MSE, relative L2 and relative L3 of ``u0`` and of the
  prediction ``forward(u0_est)`` against the observation, and MSE of the Fourier coefficients over
  the index bands ``[0, n/4)``, ``[n/4, n/2)``, ``[n/2, n)`` (:func:`inverse_metrics`). The paper's
  summary quantity is ``mseloss_pred_u0`` (``config/results.yaml``), with ``mseloss_u0``.

Departures (documented where used): the standardisation's statistics can come from the training
set instead of the true state (``scale=`` of :func:`recover_initial`; PDEBench's choice leaks the
truth's mean and spread into the estimate), and the forward map always sees the field in physical
units (PDEBench feeds the standardised field to a surrogate trained on raw fields, which only
agrees for maps that commute with affine rescaling, such as advection).

The classical routes: :func:`advection_inverse` (the exact inverse shift, in Fourier space) and
:class:`BurgersETDRK4` (oplab's pseudo-spectral ETDRK4 Burgers solver re-written in torch, batched,
differentiated by autograd).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError, check_int
from ..solvers.spectral import etdrk4_step

#: PDEBench's gradient-based inverse settings (``pdebench/models/config/config.yaml``)
PDEBENCH = {"latent": 64, "steps": 100, "lr": 0.2, "weight_decay": 1e-4}


def pdebench_initial(rng: np.random.Generator, x: np.ndarray, k_tot: int = 4, draws: int = 2,
                     p_abs: float = 0.1, p_window: float = 0.1) -> np.ndarray:
    """One initial state of PDEBench's ``init_multi`` at the points ``x`` of ``[0, 1)`` (module
    docstring). The wave numbers are ``2 pi k`` on the unit period (PDEBench divides by
    ``x_last - x_first``, one cell short of the period, so its states are not exactly periodic)."""
    if k_tot < 1 or draws < 1:
        raise ParameterError(f"pdebench_initial: k_tot and draws must be >= 1, got {k_tot}, {draws}")
    counts = np.bincount(rng.integers(0, k_tot, size=draws), minlength=k_tot)
    k = 2.0 * np.pi * np.arange(1, k_tot + 1) * counts
    amp = rng.uniform(0.0, 1.0, size=k_tot)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=k_tot)
    u = (amp[:, None] * np.sin(k[:, None] * x[None, :] + phase[:, None])).sum(0)
    if rng.uniform() < p_abs:
        u = np.abs(u)
    u = u * rng.choice((1.0, -1.0))
    if rng.uniform() < p_window:
        lo, hi = rng.uniform(0.1, 0.45), rng.uniform(0.55, 0.9)
        u = u * 0.5 * (np.tanh((x - lo) / 0.01) - np.tanh((x - hi) / 0.01))
    return u


# ------------------------------------------------------------------ the unknown and its fit
def interpolate(latent: torch.Tensor, n: int) -> torch.Tensor:
    """``[B, C, m] -> [B, C, n]``: PDEBench's linear interpolation (``align_corners=False``)."""
    if latent.shape[-1] == n:
        return latent
    return F.interpolate(latent, size=n, mode="linear", align_corners=False)


def standardisation(u0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PDEBench's ``ElementStandardScaler`` per sample: the mean and (biased) standard deviation of
    each ``u0 [B, ...]`` over all its values -> ``[B, 1, 1]`` each."""
    flat = u0.reshape(u0.shape[0], -1)
    return flat.mean(1).view(-1, 1, 1), flat.std(1, unbiased=False).view(-1, 1, 1)


def recover_initial(forward, y: torch.Tensor, mean, std, latent: int | None = 64, steps: int = 100,
                    lr: float = 0.2, weight_decay: float = 1e-4, seed: int = 0, prior=None,
                    init: str = "pdebench", start: torch.Tensor | None = None, log=None) -> dict:
    """PDEBench's gradient-based inverse (module docstring), batched over independent samples.

    ``forward``: ``[B, 1, n] -> [B, 1, n]`` in physical units (a surrogate or a solver); ``y [B, 1,
    n]``: the observed later state; ``mean, std [B, 1, 1]`` (or scalars): the standardisation. The
    unknown is ``z [B, 1, latent]`` in standardised units (``latent=None``: one value per grid
    point), ``u0 = mean + std * interpolate(z)``. Each step minimises, per sample,
    ``mean(((forward(u0) - y) / std)^2) + prior.penalty(interpolate(z))`` with Adam (``lr``, L2
    ``weight_decay`` on ``z``); the samples' losses are summed, so each sample's update is the one
    it would get alone. ``prior``: an :mod:`oplab.inverse.priors` pixel prior (``Smooth``,
    ``TotalVariation``) on the standardised field, or None (PDEBench). ``init``: ``"pdebench"``
    (``U(0, 1) / latent``), or ``"start"`` (``start [B, 1, n]`` in physical units, e.g. the
    observation itself). Returns ``u0 [B, 1, n]``, ``pred`` (``forward(u0)``), ``loss`` per sample
    and ``history`` (mean loss every 10 steps)."""
    if y.ndim != 3 or y.shape[1] != 1:
        raise ParameterError(f"recover_initial: y must be [B, 1, n] (one channel), got {list(y.shape)}")
    check_int("recover_initial", "steps", steps)
    b, _, n = y.shape
    m = n if latent is None else int(latent)
    if not 1 <= m <= n:
        raise ParameterError(f"recover_initial: latent must be in [1, {n}] (the grid's points), got {latent!r}")
    mean = torch.as_tensor(mean, dtype=y.dtype)
    std = torch.as_tensor(std, dtype=y.dtype)
    if init == "pdebench":
        gen = torch.Generator().manual_seed(seed)
        z0 = torch.rand(b, 1, m, generator=gen, dtype=torch.float64).to(y.dtype) / m
    elif init == "start":
        if start is None or start.shape != y.shape:
            raise ParameterError(f"recover_initial: init='start' needs start of shape {list(y.shape)}")
        z0 = ((start - mean) / std).detach()
        if m != n:
            z0 = F.adaptive_avg_pool1d(z0, m)
    else:
        raise ParameterError(f"recover_initial: init must be 'pdebench' or 'start', got {init!r}")
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr, weight_decay=weight_decay)
    target = ((y - mean) / std).detach()
    history = []

    def losses(z):
        field = interpolate(z, n)
        pred = (forward(mean + std * field) - mean) / std
        per = (pred - target).square().flatten(1).mean(1)
        if prior is not None:
            per = per + prior.penalty(field)
        return per

    for step in range(steps):
        opt.zero_grad()
        per = losses(z)
        per.sum().backward()
        opt.step()
        if step % 10 == 0:
            history.append(float(per.detach().mean()))
            if log:
                log(f"step {step}: loss {history[-1]:.4g}")
    with torch.no_grad():
        u0 = mean + std * interpolate(z, n)
        pred = forward(u0)
        per = losses(z)
    return {"u0": u0.detach(), "pred": pred.detach(), "loss": per.detach(), "history": history}


# ---------------------------------------------------------------------------- the metrics
def _fft_mse(a: torch.Tensor, b: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
    """Mean of ``|fft(a) - fft(b)|^2`` over the coefficient indices ``[lo, hi)`` (all of the FFT's
    ``n`` indices, as PDEBench's ``FftMseLoss``: the upper half are the negative frequencies)."""
    d = torch.fft.fft(a, dim=-1) - torch.fft.fft(b, dim=-1)
    return d[..., lo:hi].abs().square().flatten(1).mean(1)


def _rel(a: torch.Tensor, b: torch.Tensor, p: float) -> torch.Tensor:
    diff = (a - b).flatten(1).norm(p=p, dim=1)
    return diff / (b.flatten(1).norm(p=p, dim=1) + 1e-20)


def inverse_metrics(u0: torch.Tensor, x: torch.Tensor, pred: torch.Tensor, y: torch.Tensor) -> dict:
    """PDEBench's ``inverse_metrics`` per sample (lists of ``B`` floats): ``u0``, ``x`` (the
    estimated and the true initial state) and ``pred``, ``y`` (the forward map of the estimate and
    the observation), all ``[B, 1, n]``, in the units the caller chose (PDEBench: standardised by
    the true state's mean and spread). Keys as PDEBench's: ``mseloss_u0``, ``l2loss_u0`` (relative
    L2), ``l3loss_u0``, ``fftmseloss_u0`` and its ``_low_`` / ``_mid_`` / ``_hi_`` bands, and the same
    with ``_pred_u0`` for the prediction."""
    for name, t in (("u0", u0), ("x", x), ("pred", pred), ("y", y)):
        if t.ndim != 3 or t.shape != u0.shape:
            raise ParameterError(f"inverse_metrics: {name} has shape {list(t.shape)}, expected {list(u0.shape)} "
                                 f"([B, 1, n], all four alike)")
    n = u0.shape[-1]
    q = n // 4
    out = {}
    for tag, a, b in (("u0", u0, x), ("pred_u0", pred, y)):
        out[f"mseloss_{tag}"] = (a - b).square().flatten(1).mean(1)
        out[f"l2loss_{tag}"] = _rel(a, b, 2)
        out[f"l3loss_{tag}"] = _rel(a, b, 3)
        out[f"fftmseloss_{tag}"] = _fft_mse(a, b)
        out[f"fftmseloss_low_{tag}"] = _fft_mse(a, b, 0, q)
        out[f"fftmseloss_mid_{tag}"] = _fft_mse(a, b, q, 2 * q)
        out[f"fftmseloss_hi_{tag}"] = _fft_mse(a, b, 2 * q)
    return {k: [float(v) for v in t] for k, t in out.items()}


# ------------------------------------------------------------------------ classical routes
def fourier_shift(u: torch.Tensor, shift: float, length: float = 1.0) -> torch.Tensor:
    """``u(x - shift)`` of periodic ``u [..., n]`` on ``[0, length)`` by the Fourier shift theorem
    (exact for the trigonometric interpolant; the Nyquist mode is kept real)."""
    n = u.shape[-1]
    k = torch.fft.rfftfreq(n, d=length / n, dtype=torch.float64)
    phase = torch.exp(-2j * math.pi * k * shift)
    if n % 2 == 0:
        phase[-1] = math.cos(2 * math.pi * k[-1].item() * shift)
    return torch.fft.irfft(torch.fft.rfft(u.to(torch.float64)) * phase, n=n).to(u.dtype)


def advection_inverse(y: torch.Tensor, beta: float, t: float, length: float = 1.0) -> torch.Tensor:
    """The exact inverse of ``u_t + beta u_x = 0`` on the periodic ``[0, length)``: ``u0(x) =
    u(x + beta t, t)``."""
    return fourier_shift(y, -beta * t, length)


class BurgersETDRK4:
    """``u_t + (u^2 / 2)_x = nu u_xx`` on the periodic unit interval, ``u0 [B, 1, n] -> u(t_end)``
    in torch (differentiable, batched): oplab's pseudo-spectral solver
    (:func:`oplab.solvers.spectral.burgers_etdrk4`: 2/3 rule on ``u^2``, ETDRK4 with the
    Kassam-Trefethen coefficients of :func:`oplab.solvers.spectral.etdrk4_coefficients`) with a
    fixed step ``dt`` (shortened so that ``t_end`` is hit)."""

    def __init__(self, n: int, nu: float, t_end: float, dt: float = 0.01, dtype=torch.float64):
        from ..solvers.spectral import dealias_mask, etdrk4_coefficients

        if not (nu > 0 and t_end > 0 and dt > 0):
            raise ParameterError(f"BurgersETDRK4: nu, t_end and dt must be > 0, got {nu}, {t_end}, {dt}")
        self.n, self.steps = n, max(1, math.ceil(t_end / dt - 1e-9))
        h = t_end / self.steps
        k = np.fft.rfftfreq(n, 1.0 / n)
        lin = -nu * (2 * np.pi * k) ** 2
        mask = dealias_mask(n)
        self.mask = torch.as_tensor(mask, dtype=dtype)
        self.deriv = torch.as_tensor(np.where(mask, -1j * np.pi * k, 0.0), dtype=torch.complex128)
        self.coef = [torch.as_tensor(c, dtype=dtype) for c in etdrk4_coefficients(lin, h)]
        self.dtype = dtype

    def _nonlinear(self, v):
        u = torch.fft.irfft(v * self.mask, n=self.n)
        return self.deriv * torch.fft.rfft(u * u)

    def __call__(self, u0: torch.Tensor) -> torch.Tensor:
        v = torch.fft.rfft(u0.to(self.dtype))
        for _ in range(self.steps):  # (the same step as the numpy solver's; it works on torch tensors too)
            v = etdrk4_step(v, self._nonlinear, self.coef)
        return torch.fft.irfft(v, n=self.n).to(u0.dtype)


__all__ = ["BurgersETDRK4", "PDEBENCH", "advection_inverse", "fourier_shift", "interpolate", "inverse_metrics",
           "pdebench_initial", "recover_initial", "standardisation"]
