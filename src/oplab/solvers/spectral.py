"""Pseudo-spectral time steppers for periodic problems on the unit torus.

Two integrators, both Fourier-Galerkin in space with the 2/3 rule on the
quadratic nonlinearity:

* :func:`burgers_etdrk4` -- 1D viscous Burgers ``u_t + (u^2/2)_x = nu u_xx`` on
  ``[0, 1)``, fourth-order exponential time differencing (Cox & Matthews 2002,
  "Exponential time differencing for stiff systems", J. Comput. Phys. 176),
  with the phi-functions evaluated by the contour integral of Kassam &
  Trefethen 2005 ("Fourth-order time-stepping for stiff PDEs", SIAM J. Sci.
  Comput. 26), float64, numpy FFTs. This is the reference solver of the FNO
  Burgers benchmark (Li et al. 2021, "Fourier Neural Operator for Parametric
  Partial Differential Equations", section 5.1).
* :func:`navier_stokes_2d` -- 2D incompressible Navier-Stokes in vorticity
  form on the unit torus, ``w_t + u . grad w = nu Lap w + f``, ``u = (psi_y,
  -psi_x)``, ``-Lap psi = w``: Crank-Nicolson on the viscous term with an
  explicit nonlinearity and forcing (forward Euler as in the FNO paper's
  generator, section 5.3, or Heun's second-order predictor-corrector), or the
  integrating-factor RK4 method (Lawson 1967; viscous term exact, fourth
  order), with a fixed step or one chosen per sample from the CFL condition
  (:func:`ns_auto_dt`); float64, torch FFTs batched over samples on any
  device. (:func:`navier_stokes_cn` is its former name.)

Conventions: fields live on the grid ``x_j = j / n``; Fourier coefficients use
the ``rfft`` layout of the last axis (and ``fft`` on the others), wave numbers
are ``2 pi k`` with integer ``k``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch


# ------------------------------------------------------------------ helpers
def _record_segments(
    t_end: float, dt: float, record_times: Sequence[float] | None
) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """Split ``(0, t_end]`` at the record times into uniform sub-steps.

    Returns the record times (``[t_end]`` when none are given) and, per
    interval between consecutive records, ``(steps, h)`` with ``h = interval /
    steps <= dt`` (up to round-off): the step is shortened, never lengthened,
    so every record time is hit exactly.
    """
    if not (math.isfinite(t_end) and t_end > 0):
        raise ValueError(f"t_end must be finite and > 0, got {t_end!r}")
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be finite and > 0, got {dt!r}")
    times = np.array([t_end] if record_times is None else record_times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0:
        raise ValueError("record_times must be a non-empty 1D sequence")
    if np.any(np.diff(times) <= 0) or times[0] <= 0 or times[-1] > t_end * (1 + 1e-12):
        raise ValueError("record_times must increase strictly within (0, t_end]")
    segments = []
    start = 0.0
    for t in times:
        interval = float(t - start)
        steps = max(1, math.ceil(interval / dt - 1e-9))
        segments.append((steps, interval / steps))
        start = float(t)
    return times, segments


def dealias_mask(n: int) -> np.ndarray:
    """1D 2/3-rule mask on the ``rfft`` layout: keep ``|k| < n / 3``.

    A product of two fields band-limited to ``|k| <= K`` lives in ``|k| <= 2K``
    and aliases onto ``|k| >= n - 2K``, which is outside the kept band exactly
    when ``K < n / 3``.
    """
    k = np.fft.rfftfreq(n, 1.0 / n)
    return k < n / 3.0


# ------------------------------------------------------------ 1D Burgers
def etdrk4_coefficients(lin: np.ndarray, h: float, contour_points: int = 64) -> tuple:
    """The Cox-Matthews ETDRK4 coefficients for ``v' = lin * v + N(v)``.

    With ``z = h * lin``: ``E = e^z``, ``E2 = e^(z/2)``,
    ``Q = h (e^(z/2) - 1) / z`` and
    ``f1 = h (-4 - z + e^z (4 - 3z + z^2)) / z^3``,
    ``f2 = h (2 + z + e^z (z - 2)) / z^3``,
    ``f3 = h (-4 - 3z - z^2 + e^z (4 - z)) / z^3``.
    These suffer cancellation for small ``|z|``; following Kassam & Trefethen
    each is instead averaged over ``contour_points`` points of the unit circle
    around ``z`` (exact for analytic functions up to the trapezoid rule's
    spectral error). For real ``lin`` (diffusion) the upper half circle
    suffices and only real parts are kept; a complex ``lin`` (dispersion,
    advection, oscillation; :mod:`oplab.solvers.pde1d`) is averaged over the
    whole circle (``2 * contour_points`` points) and keeps complex coefficients.
    """
    real = not np.iscomplexobj(lin)
    z = h * np.asarray(lin, dtype=np.float64 if real else np.complex128)
    if real:
        roots = np.exp(1j * np.pi * (np.arange(1, contour_points + 1) - 0.5) / contour_points)
    else:
        roots = np.exp(1j * np.pi * (np.arange(1, 2 * contour_points + 1) - 0.5) / contour_points)
    zr = z[..., None] + roots  # [..., M] points of the contour around each z
    ezr = np.exp(zr)
    zr3 = zr**3

    def mean(f):
        m = np.mean(f, axis=-1)
        return m.real if real else m

    q = h * mean((np.exp(zr / 2) - 1.0) / zr)
    f1 = h * mean((-4.0 - zr + ezr * (4.0 - 3.0 * zr + zr**2)) / zr3)
    f2 = h * mean((2.0 + zr + ezr * (zr - 2.0)) / zr3)
    f3 = h * mean((-4.0 - 3.0 * zr - zr**2 + ezr * (4.0 - zr)) / zr3)
    return np.exp(z), np.exp(z / 2), q, f1, f2, f3


def etdrk4_step(v, nonlinear, coefficients):
    """One ETDRK4 step (Cox & Matthews 2002, in Kassam & Trefethen's form) of ``v_t = L v + N(v)`` in
    Fourier space: ``coefficients`` from :func:`etdrk4_coefficients` for ``L`` and the step,
    ``nonlinear`` the map ``v -> N(v)``."""
    e, e2, q, f1, f2, f3 = coefficients
    nv = nonlinear(v)
    a = e2 * v + q * nv
    na = nonlinear(a)
    b = e2 * v + q * na
    nb = nonlinear(b)
    c = e2 * a + q * (2.0 * nb - nv)
    nc = nonlinear(c)
    return e * v + f1 * nv + 2.0 * f2 * (na + nb) + f3 * nc


def burgers_auto_dt(u0: np.ndarray, nu: float, dt_max: float = 1e-3, courant: float = 0.5) -> float:
    """The automatic time step of :func:`burgers_etdrk4`.

    ``dt = min(dt_max, courant * min(1 / (U k_c), nu / U^2))`` with
    ``U = max |u0|`` (an upper bound for all times by the maximum principle)
    and ``k_c = 2 pi * 32``. The exponential integrator treats diffusion
    exactly, so only wave numbers where advection is not dominated by
    diffusion (``2 pi |k| <~ U / nu``) constrain the step; ``nu / U^2`` is
    the advective CFL number at that crossover and ``1 / (U k_c)`` keeps
    the scales of the benchmark's initial fields (``|k| <~ 32``) well resolved in
    time for small ``nu``. For the FNO recipe (``nu = 0.1``, ``U`` about 0.5 to
    2) this is ``dt = 1e-3``: at ``n = 8192`` and ``T = 1`` the result differs
    from a ``dt = 1e-4`` solution by about 4e-9 relative (max norm), far below
    float32 storage precision, at a tenth of the cost.
    """
    amp = float(np.max(np.abs(u0))) if np.size(u0) else 0.0
    if amp == 0.0:
        return dt_max
    return float(min(dt_max, courant / (amp * 2 * np.pi * 32), courant * nu / amp**2))


def burgers_etdrk4(
    u0: np.ndarray,
    nu: float,
    t_end: float,
    dt: float | None = None,
    record_times: Sequence[float] | None = None,
) -> np.ndarray:
    """Integrate viscous Burgers ``u_t + (u^2 / 2)_x = nu u_xx`` on ``[0, 1)``.

    In Fourier space ``v = rfft(u)``: ``v' = L v + N(v)`` with
    ``L = -nu (2 pi k)^2`` and ``N(v) = -(i pi k) P rfft((irfft(P v))^2)``, ``P``
    the 2/3-rule mask (so the quadratic term is exactly dealiased; modes
    outside the mask evolve by diffusion alone). Time stepping is ETDRK4
    (Cox-Matthews) with Kassam-Trefethen coefficients; the step is ``dt``
    shortened so that each record time is hit exactly.

    Parameters
    ----------
    u0 : ``[..., n]`` float, the initial field at ``x_j = j / n`` (leading axes
        are a batch, integrated together).
    nu : viscosity (> 0).
    dt : time step; ``None`` uses :func:`burgers_auto_dt`.
    record_times : times in ``(0, t_end]`` to record; ``None`` returns only the
        final field.

    Returns ``[..., n]`` (final field) or ``[..., T, n]`` (trajectory), float64.
    """
    u0 = np.asarray(u0, dtype=np.float64)
    n = u0.shape[-1]
    if not nu > 0:
        raise ValueError(f"nu must be > 0, got {nu!r}")
    if dt is None:
        dt = burgers_auto_dt(u0, nu)
    times, segments = _record_segments(float(t_end), float(dt), record_times)

    k = np.fft.rfftfreq(n, 1.0 / n)  # [n//2+1] integer wave numbers
    lin = -nu * (2 * np.pi * k) ** 2
    mask = dealias_mask(n)
    # d/dx (u^2 / 2) -> 2 pi i k / 2 * rfft(u^2); masked (also zeroes the Nyquist mode)
    deriv = np.where(mask, -1j * np.pi * k, 0.0)

    def nonlinear(v: np.ndarray) -> np.ndarray:
        u = np.fft.irfft(v * mask, n=n)
        return deriv * np.fft.rfft(u * u)

    cache: dict[float, tuple] = {}
    v = np.fft.rfft(u0)  # [..., n//2+1]
    out = []
    for steps, h in segments:
        key = round(h, 15)
        if key not in cache:
            cache[key] = etdrk4_coefficients(lin, h)
        for _ in range(steps):
            v = etdrk4_step(v, nonlinear, cache[key])
        out.append(np.fft.irfft(v, n=n))
    if record_times is None:
        return out[-1]
    return np.stack(out, axis=-2)


# ----------------------------------------------------- 2D Navier-Stokes
NS_SCHEMES = ("euler", "heun", "ifrk4")

#: Courant numbers of the automatic time step, per scheme (see :func:`ns_auto_dt`)
NS_COURANT = {"ifrk4": 1.0, "heun": 0.5, "euler": 0.5}

#: The automatic time step never exceeds this (the flow's own time scale is O(1) for the benchmark)
NS_DT_MAX = 0.05

#: ... nor this fraction of the flow's turnover time ``1 / max |w|``
NS_TURNOVER = 0.05


def ns_auto_dt(speed, nu: float, n: int, scheme: str = "ifrk4", courant: float | None = None,
               dt_max: float = NS_DT_MAX, vorticity=None) -> np.ndarray:
    """The automatic time step of :func:`navier_stokes_2d` for fields with maximum ``speed``.

    ``speed`` is ``U = max_x (|u| + |v|)`` per sample, ``vorticity`` (optional)
    ``W = max_x |w|``. Advection by ``u`` of the dealiased modes
    (``|k_x|, |k_y| < n / 3``) has eigenvalues ``i 2 pi (u k_x + v k_y)`` of
    modulus at most ``2 pi (n / 3) U``; an explicit step is stable for
    ``h 2 pi (n / 3) U`` within its stability interval on the imaginary axis
    (RK4: ``2 sqrt(2)``). The flow's own time scale is its turnover time
    ``1 / W``; a twentieth of it bounds the step where the grid is coarse. So

        h = min(dt_max, courant / (2 pi (n / 3) U), 0.05 / W)

    with ``courant = NS_COURANT[scheme]`` by default (``ifrk4``: 1.0, a
    third of RK4's limit; the accuracy this buys is measured in
    tests/test_navier_stokes.py and benchmarks/ns_generation.py). The
    integrating factor makes diffusion exact, so the viscosity does not limit
    ``ifrk4``. For ``euler`` and ``heun`` (Crank-Nicolson diffusion, explicit
    advection) the step is stable only while diffusion damps what the explicit
    advection amplifies: for forward Euler ``|(1 - a + i theta) / (1 + a)| <= 1``
    with ``a = nu |2 pi k|^2 h / 2``, ``theta = h 2 pi u . k`` holds for every
    ``k`` iff ``h <= 2 nu / |u|^2``; half of that bound (``nu / U^2``) is
    applied too. That is a stability bound, not an accuracy one: those
    schemes are first and second order (the FNO paper's ``euler`` used
    ``dt = 1e-4``).
    """
    if scheme not in NS_SCHEMES:
        raise ValueError(f"scheme must be one of {list(NS_SCHEMES)}, got {scheme!r}")
    courant = NS_COURANT[scheme] if courant is None else float(courant)
    speed = np.atleast_1d(np.asarray(speed, dtype=np.float64))
    h = np.full(speed.shape, float(dt_max))
    moving = speed > 0
    u = speed[moving]
    bound = courant / (2 * np.pi * (n / 3.0) * u)
    if scheme != "ifrk4":
        bound = np.minimum(bound, nu / u**2)
    h[moving] = np.minimum(h[moving], bound)
    if vorticity is not None:
        w = np.broadcast_to(np.asarray(vorticity, dtype=np.float64), speed.shape)
        spinning = w > 0
        h[spinning] = np.minimum(h[spinning], NS_TURNOVER / w[spinning])
    return h


def navier_stokes_2d(
    w0: torch.Tensor,
    forcing: torch.Tensor | None,
    nu: float,
    t_end: float,
    dt: float | None = 1e-4,
    record_times: Sequence[float] | None = None,
    record_every: float | None = None,
    scheme: str = "euler",
    device: str | torch.device | None = None,
    courant: float | None = None,
    dt_max: float = NS_DT_MAX,
    progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Integrate 2D Navier-Stokes in vorticity form on the unit torus.

    ``w_t + u . grad w = nu Lap w + f``, ``u = (psi_y, -psi_x)``, ``-Lap psi = w``
    (so ``w = v_x - u_y`` and ``div u = 0``). Fourier-Galerkin with the 2/3 rule:
    the velocity and ``grad w`` are computed from the masked vorticity and
    the product ``u . grad w`` is masked again, so it is exactly dealiased.
    With ``L = -nu |2 pi k|^2``, ``a = nu |2 pi k|^2 h / 2`` and
    ``F = -(u . grad w)^ + f^`` (the forcing is part of the explicit term):

    * ``scheme="euler"`` (the FNO paper's generator, Li et al. 2021, section 5.3):
      ``w^{n+1} = ((1 - a) w^n + h F(w^n)) / (1 + a)`` -- Crank-Nicolson
      diffusion, forward-Euler advection: second order for linear dynamics,
      first order once advection matters.
    * ``scheme="heun"``: the same step as a predictor ``w*``, then
      ``w^{n+1} = ((1 - a) w^n + h (F(w^n) + F(w*)) / 2) / (1 + a)``:
      second order overall, twice the cost.
    * ``scheme="ifrk4"``: the integrating-factor (Lawson) fourth-order
      Runge-Kutta method: classical RK4 applied to ``v = e^{-L t} w^``, for
      which ``v' = e^{-L t} F(e^{L t} v)`` (Lawson 1967, "Generalized
      Runge-Kutta processes for stable systems with large Lipschitz
      constants", SIAM J. Numer. Anal. 4; Kassam & Trefethen 2005, section
      2). With ``E = e^{L h}``, ``E2 = e^{L h / 2}``:
      ``k1 = F(w)``, ``k2 = F(E2 (w + h k1 / 2))``, ``k3 = F(E2 w + h k2 / 2)``,
      ``k4 = F(E w + h E2 k3)``,
      ``w^{n+1} = E w + h (E k1 + 2 E2 (k2 + k3) + k4) / 6``. Diffusion is
      exact (an unforced eigenmode decays exactly), the rest is fourth order;
      four evaluations of ``F`` per step, stable up to the advective CFL
      limit of RK4.

    Parameters
    ----------
    w0 : ``[B, n, n]`` (or ``[n, n]``) initial vorticity at ``(i / n, j / n)``,
        axis 1 is ``x``, axis 2 is ``y``.
    forcing : ``[n, n]`` time-independent forcing at the same grid, or None.
    dt : the time step; ``None`` (or 0) chooses it per sample at the start of
        every record interval from that sample's current maximum speed and
        vorticity (:func:`ns_auto_dt` with ``courant`` and ``dt_max``), so a
        sample's steps do not depend on the other samples of the batch.
    record_times / record_every : times in ``(0, t_end]`` to record
        (``record_every`` gives ``record_every, 2 record_every, ... <= t_end``);
        neither records only ``t_end``. Steps are shortened, never lengthened,
        to hit each record time exactly.
    device : where to compute (default: ``w0``'s device). Results are returned
        there, float64.
    progress : called after every step with the fraction of ``t_end`` that
        the whole batch has reached (its last sample's), ``0 < f <= 1``.

    Returns ``[B, T, n, n]`` (``[T, n, n]`` for an unbatched ``w0``).
    """
    if scheme not in NS_SCHEMES:
        raise ValueError(f"scheme must be one of {list(NS_SCHEMES)}, got {scheme!r}")
    if not nu > 0:
        raise ValueError(f"nu must be > 0, got {nu!r}")
    if record_times is not None and record_every is not None:
        raise ValueError("give record_times or record_every, not both")
    if record_every is not None:
        count = int(math.floor(t_end / record_every + 1e-9))
        if count < 1:
            raise ValueError("record_every must be <= t_end")
        record_times = [record_every * (i + 1) for i in range(count)]
    auto = dt is None or dt == 0
    times, segments = _record_segments(float(t_end), float(t_end if auto else dt), record_times)

    w0 = torch.as_tensor(w0)
    device = w0.device if device is None else torch.device(device)
    squeeze = w0.ndim == 2
    w = (w0[None] if squeeze else w0).to(device=device, dtype=torch.float64)
    n = w.shape[-1]
    if w.ndim != 3 or w.shape[-2] != n:
        raise ValueError(f"w0 must be [B, n, n], got {tuple(w0.shape)}")
    batch = w.shape[0]

    kx = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64, device=device)[:, None]  # [n, 1]
    ky = torch.fft.rfftfreq(n, 1.0 / n, dtype=torch.float64, device=device)[None, :]  # [1, n//2+1]
    kmax = n / 3.0
    mask = ((kx.abs() < kmax) & (ky < kmax)).to(torch.float64)  # [n, n//2+1]
    lap = 4 * math.pi**2 * (kx**2 + ky**2)  # -Laplacian symbol
    inv_lap = torch.where(lap > 0, 1.0 / torch.where(lap > 0, lap, 1.0), 0.0)
    dx = (2j * math.pi) * kx * mask  # masked derivative symbols, complex [n, n//2+1]
    dy = (2j * math.pi) * ky * mask
    # u = psi_y, v = -psi_x, w_x, w_y from w^ in one batched inverse transform
    symbols = torch.stack([dy * inv_lap, -dx * inv_lap, dx, dy])[:, None]  # [4, 1, n, n//2+1]
    neg_mask = -mask
    f_hat = None
    if forcing is not None:
        forcing = torch.as_tensor(forcing).to(device=device, dtype=torch.float64)
        if forcing.shape != (n, n):
            raise ValueError(f"forcing must be [{n}, {n}], got {tuple(forcing.shape)}")
        f_hat = torch.fft.rfft2(forcing)  # [n, n//2+1]

    def rhs(wh: torch.Tensor) -> torch.Tensor:
        """``-(u . grad w)^ + f^`` for ``wh = rfft2(w)``, ``[B, n, n//2+1]``."""
        q = torch.fft.irfft2(symbols * wh, s=(n, n))  # [4, B, n, n]: u, v, w_x, w_y
        out = torch.fft.rfft2(q[0] * q[2] + q[1] * q[3]) * neg_mask
        return out if f_hat is None else out.add_(f_hat)

    def maxima(wh: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``max (|u| + |v|)`` and ``max |w|`` per sample, ``[B]`` each."""
        q = torch.fft.irfft2(symbols[:2] * wh, s=(n, n))  # [2, B, n, n]
        speed = (q[0].abs() + q[1].abs()).amax(dim=(-2, -1))
        vorticity = torch.fft.irfft2(wh, s=(n, n)).abs().amax(dim=(-2, -1))
        return speed.cpu().numpy(), vorticity.cpu().numpy()

    def coefficients(h):
        """The step's diagonal factors for step ``h`` (a float, or ``[c, 1, 1]`` per sample)."""
        if scheme == "ifrk4":
            return torch.exp(-nu * h * lap), torch.exp(-0.5 * nu * h * lap)
        a = 0.5 * nu * h * lap
        implicit = 1.0 / (1.0 + a)
        return (1.0 - a) * implicit, h * implicit  # damp, gain

    def step(wh: torch.Tensor, coef: tuple, h) -> torch.Tensor:
        if scheme == "ifrk4":
            e, e2 = coef
            k1 = rhs(wh)
            k2 = rhs(e2 * (wh + (0.5 * h) * k1))
            k3 = rhs(e2 * wh + (0.5 * h) * k2)
            ewh = e * wh
            k4 = rhs(ewh + h * (e2 * k3))
            return ewh + (h / 6.0) * (e * k1 + 2.0 * e2 * (k2 + k3) + k4)
        damp, gain = coef
        r = rhs(wh)
        pred = damp * wh + gain * r
        if scheme == "heun":
            pred = damp * wh + (0.5 * gain) * (r + rhs(pred))
        return pred

    wh = torch.fft.rfft2(w)  # [B, n, n//2+1]
    out = []
    start = 0.0
    for t, (fixed_steps, fixed_h) in zip(times, segments):
        interval = float(t) - start
        if auto:
            speed, vorticity = maxima(wh)
            h_max = ns_auto_dt(speed, nu, n, scheme, courant, dt_max, vorticity=vorticity)
            steps = np.maximum(1, np.ceil(interval / h_max - 1e-9)).astype(np.int64)  # [B]
        else:
            steps = np.full(batch, fixed_steps, dtype=np.int64)
        if np.all(steps == steps[0]):  # one step for the whole batch
            h = fixed_h if not auto else interval / int(steps[0])
            coef = coefficients(h)
            total = int(steps[0])
            for j in range(total):
                wh = step(wh, coef, h)
                if progress is not None:
                    progress((start + interval * (j + 1) / total) / t_end)
        else:  # per-sample steps: sort by step count, advance the prefix that still has steps
            order = np.argsort(-steps, kind="stable")
            steps = steps[order]
            index = torch.as_tensor(order, device=device)
            ws = wh[index]
            h_all = torch.as_tensor(interval / steps, dtype=torch.float64, device=device)[:, None, None]
            coef = coefficients(h_all)
            total = int(steps[0])
            for j in range(total):
                c = int(np.count_nonzero(steps > j))
                ws[:c] = step(ws[:c], tuple(x[:c] for x in coef), h_all[:c])
                if progress is not None:
                    progress((start + interval * (j + 1) / total) / t_end)
            wh = torch.empty_like(ws)
            wh[index] = ws
        out.append(torch.fft.irfft2(wh, s=(n, n)))
        start = float(t)
    traj = torch.stack(out, dim=1)  # [B, T, n, n]
    return traj[0] if squeeze else traj


#: The former name, from when Crank-Nicolson schemes were the only ones.
navier_stokes_cn = navier_stokes_2d
