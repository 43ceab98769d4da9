"""One pseudo-spectral ETDRK4 core for a library of 1D periodic PDEs.

Every equation is a point of ONE term library (:data:`TERMS`): with the
coefficients ``c_k`` of the terms ``T_k``,

    u_t  = sum_k c_k T_k(u, x)          (first order in time), or
    u_tt = sum_k c_k T_k(u, x)          (second order, when the flag ``u_tt`` is 1),

on the periodic interval ``[0, L)``. The terms (``TERMS``, in library order):
``u_x, u_xx, u_xxx, u_xxxx, u`` (linear, diagonal in Fourier), the reactions
``u^2, u^3``, the fluxes ``u u_x = (u^2/2)_x``, ``u^2 u_x = (u^3/3)_x``,
``cos(u) u_x = (sin u)_x`` (computed in conservation form), the nonlinear
diffusions ``(u^2)_xx, (u^3)_xx, (u^4)_xx`` (computed as ``(u |u|^(m-1))_xx``:
the same for ``u >= 0``, which porous-medium data keep, and never
anti-diffusive), the Fokker-Planck drift ``(sin(6 pi x / L) u)_x`` (a cosine
potential with three periods in the box; ``sin(3 pi x)`` on LeMON's ``[0, 2)``)
and the flag ``u_tt``. This is the symbolic form that
:mod:`oplab.problems.pde1d` stores as conditioning channels.

Method
------
Fourier pseudo-spectral in space (``x_j = L j / n``), 2/3-rule dealiasing of
every nonlinear and non-diagonal term (exact for the quadratic ones; the
cubic and transcendental ones are de-aliased to the same band, the usual
practice), and the fourth-order exponential time differencing scheme ETDRK4
(Cox & Matthews 2002, J. Comput. Phys. 176) with the contour-integral
coefficients of Kassam & Trefethen 2005 (SIAM J. Sci. Comput. 26), shared with
:func:`oplab.solvers.spectral.etdrk4_coefficients`, for ``w' = Lin w + N(w)``:

* first order: ``w = rfft(u)``, ``Lin`` the diagonal symbol of the linear
  terms (``i kappa, -kappa^2, -i kappa^3, kappa^4, 1`` with ``kappa = 2 pi k / L``);
  nonlinear diffusions are *stabilised*: ``- S kappa^2`` joins ``Lin`` and
  ``+ S kappa^2 w`` joins ``N``, with ``S`` the midpoint of the diffusivity
  ``D(u) = d/du (sum_m c_m u|u|^(m-1))`` over the state's range, so the
  explicit part only carries ``D(u) - S`` (the stabilised ETD schemes of Du,
  Ju, Li & Qiao 2021, SIAM Review 63);
* second order (wave, Klein-Gordon): with ``omega(kappa)^2 = -symbol`` of the
  linear terms (``>= 0`` is required), the diagonalising variable
  ``z = fft(u_t) + i omega fft(u)`` obeys ``z' = i omega z + fft(G(u))``
  (``G`` the nonlinear reactions), ``u`` is recovered from ``z(k)`` and
  ``conj(z(-k))``; modes with ``omega = 0`` (the mean of the wave equation)
  carry ``fft(u)`` in one extra slot, ``m' = Re z_0``. Linear families are
  integrated exactly (ETDRK4 with ``N = 0`` is the exact exponential).

Time step rule (:func:`auto_step`): at the start of each of at least 16
chunks of ``[0, t_end]`` (or each record interval), from the state's range
``[lo, hi]`` widened by a quarter of its width on each side,

    rho = kappa_d max|f'(s)| + |c_fp| (kappa_d + 6 pi / L) + max|r'(s)| + kappa_d^2 max|D(s) - S|,

``kappa_d = 2 pi (n / 3) / L`` the largest de-aliased wave number, ``f`` the
flux, ``r`` the reaction (the last term divided by ``STAB_COURANT = 16``: the
stabilised ETD step is stable far beyond the explicit bound, so only accuracy
limits it; on Cahn-Hilliard the step errors are 1.4e-4, 2.9e-5, 5.6e-6, 1.0e-6
at h = 4e-3, 2e-3, 1e-3, 5e-4, where the explicit bound would be 5e-5);
``h = min(dt_max, courant / rho)`` with
``courant = 1`` (ETDRK4's stability interval on both axes is about 2.8),
``dt_max = t_end / 100``, and the number of steps rounded up to ``2^j`` or
``3 2^j`` so that few coefficient sets are computed. The stiff linear part
does not limit the step (it is integrated exactly).

Grid rule (:func:`auto_oversample`): viscous conservation laws form fronts of
width about ``4 nu / Delta f'`` (``Delta f'`` the spread of the flux speed over
the initial range, which a scalar conservation law keeps); the solver grid is
refined by the smallest power of two (at most 16) with ``n >= 0.55 L Delta f' / nu``
(about two points per front width; on LeMON's Burgers, cubic- and sine-flux
data the result then differs from a twice finer grid's by about 1e-7,
benchmarks/pde1d_families.py, and by up to 2e-4 on a twice coarser one),
and the result is sampled back on the requested grid (``u0`` is
Fourier-interpolated up). A nonlinear diffusion without a fourth-order term
whose diffusivity varies by more than a factor 10 over the initial range
(porous medium, ``m = 3, 4``: steep fronts where ``D`` is small) is solved on a
twice finer grid (measured: 1.5e-4 -> 1e-7 against a four times finer one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .spectral import _record_segments, dealias_mask, etdrk4_coefficients, etdrk4_step


@dataclass(frozen=True)
class Term:
    """One term of the library: its key (channel ``c_<key>``) and its text."""

    key: str
    text: str


#: The term library, in channel order.
TERMS: tuple[Term, ...] = (
    Term("u_x", "u_x"),
    Term("u_xx", "u_xx"),
    Term("u_xxx", "u_xxx"),
    Term("u_xxxx", "u_xxxx"),
    Term("u", "u"),
    Term("u2", "u^2"),
    Term("u3", "u^3"),
    Term("uu_x", "u*u_x"),
    Term("u2u_x", "u^2*u_x"),
    Term("cosu_u_x", "cos(u)*u_x"),
    Term("u2_xx", "(u^2)_xx"),
    Term("u3_xx", "(u^3)_xx"),
    Term("u4_xx", "(u^4)_xx"),
    Term("fp_x", "(sin(3*pi*x)*u)_x"),
    Term("u_tt", "u_tt"),
)
TERM_INDEX = {t.key: i for i, t in enumerate(TERMS)}
K = len(TERMS)
_LINEAR = ("u_x", "u_xx", "u_xxx", "u_xxxx", "u")
_FLUX = ("uu_x", "u2u_x", "cosu_u_x")
_REACT = ("u2", "u3")
_NDIFF = ("u2_xx", "u3_xx", "u4_xx")
#: the drift of the Fokker-Planck term has this many periods on the box
FP_PERIODS = 3
#: the stabilised nonlinear diffusion limits the step 16 times less than an explicit term would
#: (stabilised ETD is stable far beyond; this bound is for accuracy, about 1e-5 on Cahn-Hilliard)
STAB_COURANT = 16.0


def coefficient_vector(coeffs: dict[str, float]) -> np.ndarray:
    """The library vector ``[K]`` of a ``{term key: coefficient}`` dict (others zero)."""
    unknown = sorted(set(coeffs) - set(TERM_INDEX))
    if unknown:
        raise ValueError(f"unknown term(s) {unknown}; the library has {[t.key for t in TERMS]}")
    c = np.zeros(K)
    for key, value in coeffs.items():
        c[TERM_INDEX[key]] = float(value)
    return c


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def equation_text(c: Sequence[float]) -> str:
    """The equation of coefficient vector ``c`` as text, e.g. ``u_t = 0.003*u_xx - 0.5*u_x``."""
    c = np.asarray(c, dtype=np.float64)
    lhs = "u_tt" if c[TERM_INDEX["u_tt"]] != 0 else "u_t"
    parts = []
    for term, value in zip(TERMS[:-1], c[:-1]):
        if value == 0:
            continue
        sign = "-" if value < 0 else "+"
        mag = abs(value)
        body = term.text if mag == 1 else f"{_fmt(mag)}*{term.text}"
        parts.append((sign, body))
    if not parts:
        return f"{lhs} = 0"
    text = ("-" if parts[0][0] == "-" else "") + parts[0][1]
    for sign, body in parts[1:]:
        text += f" {sign} {body}"
    return f"{lhs} = {text}"


# ------------------------------------------------------------------ helpers
def _get(c: np.ndarray, key: str) -> float:
    return float(c[TERM_INDEX[key]])


def _sample_range(lo: float, hi: float) -> np.ndarray:
    """Points of ``[lo, hi]`` widened by a quarter of its width (at least 1e-3) on each side."""
    width = max(hi - lo, 1e-3 * max(1.0, abs(lo), abs(hi)))
    return np.linspace(lo - 0.25 * width, hi + 0.25 * width, 65)


def flux_speed(c: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``f'(s)`` of the library's flux ``f = c_uu_x s^2/2 + c_u2u_x s^3/3 + c_cosu_u_x sin s``."""
    return _get(c, "uu_x") * s + _get(c, "u2u_x") * s**2 + _get(c, "cosu_u_x") * np.cos(s)


def diffusivity(c: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``D(s)``: the derivative of ``sum_m c_m s|s|^(m-1)`` (the nonlinear-diffusion flux potential)."""
    a = np.abs(s)
    return 2 * _get(c, "u2_xx") * a + 3 * _get(c, "u3_xx") * s**2 + 4 * _get(c, "u4_xx") * a**3


def _stabiliser(c: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """``(S, max |D - S|)`` for the sampled range ``s``; ``S`` rounded up to ``2^(j/2)`` (few cache keys)."""
    if not any(_get(c, k) for k in _NDIFF):
        return 0.0, 0.0
    d = diffusivity(c, s)
    mid = 0.5 * (float(d.max()) + float(d.min()))
    if mid <= 0:
        return 0.0, float(np.abs(d).max())
    stab = 2.0 ** (math.ceil(2 * math.log2(mid)) / 2)
    return stab, float(np.abs(d - stab).max())


def auto_step(c: np.ndarray, lo: float, hi: float, n: int, length: float,
              courant: float = 1.0, dt_max: float = math.inf) -> tuple[float, float]:
    """``(h_max, S)``: the step bound of the module docstring's rule and the stabiliser, for a state
    with values in ``[lo, hi]`` on ``n`` points of ``[0, length)``."""
    s = _sample_range(lo, hi)
    kd = 2 * math.pi * (n / 3.0) / length
    stab, dres = _stabiliser(c, s)
    rho = kd * float(np.abs(flux_speed(c, s)).max())
    fp = _get(c, "fp_x")
    rho += abs(fp) * (kd + 2 * math.pi * FP_PERIODS / length)
    rho += float(np.abs(2 * _get(c, "u2") * s + 3 * _get(c, "u3") * s**2).max())
    rho += kd**2 * dres / STAB_COURANT
    if not any(_get(c, key) for key in _FLUX + _REACT + _NDIFF + ("fp_x",)):
        return math.inf, stab  # linear: ETDRK4 is the exact exponential, one step per piece
    return (dt_max if rho == 0 else min(dt_max, courant / rho)), stab


def auto_oversample(c: np.ndarray, u0: np.ndarray, n: int, length: float, cap: int = 16) -> int:
    """The grid refinement of the module docstring's rule: viscous conservation laws by their front
    width, nearly degenerate nonlinear diffusion (porous medium) twice; otherwise 1."""
    if any(_get(c, k) for k in _NDIFF) and not _get(c, "u_xxxx"):
        d = diffusivity(c, np.linspace(float(np.min(u0)), float(np.max(u0)), 65))
        return 2 if d.min() <= 0 or d.max() > 10 * d.min() else 1
    nu = _get(c, "u_xx")
    if nu <= 0 or not any(_get(c, k) for k in _FLUX):
        return 1
    s = np.linspace(float(np.min(u0)), float(np.max(u0)), 65)
    spread = float(np.ptp(flux_speed(c, s)))
    need = 0.55 * length * spread / nu
    factor = 1
    while factor * n < need and factor < cap:
        factor *= 2
    return factor


def _round_steps(steps: int) -> int:
    """The smallest ``2^j`` or ``3 2^j`` that is ``>= steps``."""
    p = 1
    while p < steps:
        if p >= 2 and 3 * p // 2 >= steps:
            return 3 * p // 2
        p *= 2
    return p


def etdrk4_run(
    w0: np.ndarray,
    linear: Callable[[float], np.ndarray],
    nonlinear: Callable[[np.ndarray], np.ndarray],
    step_rule: Callable[[np.ndarray], tuple[float, float]],
    t_end: float,
    record_times: Sequence[float] | None,
    chunks: int = 16,
    dt: float | None = None,
    output: Callable[[np.ndarray], np.ndarray] = lambda w: w,
) -> list[np.ndarray]:
    """Integrate ``w' = linear(S) w + nonlinear_S(w)`` by ETDRK4, returning ``output(w)`` at the record times.

    ``(0, t_end]`` is split at the record times and further into at most
    ``t_end / chunks`` long pieces; at the start of each piece ``step_rule(w)``
    gives ``(h_max, S)`` (the stabiliser ``S`` selects the linear part and
    is handed to ``nonlinear`` through the attribute ``nonlinear.stab``).
    A fixed ``dt`` is instead taken uniformly over each record interval
    (shortened to hit it exactly; ``S`` then comes from the first call).
    Coefficients are cached per ``(h, S)``.
    """
    # a fixed step is taken uniformly over each record interval (shortened to hit it exactly)
    piece = float(t_end) / chunks if dt is None else float(dt)
    times, pieces = _record_segments(float(t_end), piece, record_times)
    if dt is not None:
        pieces = [(1, count * h) for count, h in pieces]
    cache: dict[tuple, tuple] = {}
    w = w0
    out = []
    fixed_stab = None
    for count, length in pieces:
        for _ in range(count):
            if dt is None:
                h_max, stab = step_rule(w)
                steps = _round_steps(max(1, math.ceil(length / h_max - 1e-9)))
            else:
                if fixed_stab is None:
                    fixed_stab = step_rule(w)[1]
                stab = fixed_stab
                steps = max(1, math.ceil(length / dt - 1e-9))
            h = length / steps
            key = (round(h, 15), stab)
            if key not in cache:
                cache[key] = etdrk4_coefficients(linear(stab), h)
            nonlinear.stab = stab  # type: ignore[attr-defined]
            for _ in range(steps):
                w = etdrk4_step(w, nonlinear, cache[key])
        out.append(output(w))
    return out


def _interpolate(u0: np.ndarray, n_fine: int) -> np.ndarray:
    """Trigonometric interpolation of the periodic samples ``u0 [n]`` onto ``n_fine`` points."""
    n = u0.shape[-1]
    if n_fine == n:
        return u0
    v = np.fft.rfft(u0)
    if n % 2 == 0:
        v[..., -1] *= 0.5  # split the Nyquist mode between +n/2 and -n/2
    fine = np.zeros(u0.shape[:-1] + (n_fine // 2 + 1,), dtype=complex)
    fine[..., : v.shape[-1]] = v
    return np.fft.irfft(fine, n=n_fine) * (n_fine / n)


# ------------------------------------------------------------- the solver
def solve(
    u0: np.ndarray,
    coeffs: Sequence[float] | dict[str, float],
    t_end: float,
    length: float = 2.0,
    record_times: Sequence[float] | None = None,
    dt: float | None = None,
    oversample: int | None = None,
    courant: float = 1.0,
    v0: np.ndarray | None = None,
) -> np.ndarray:
    """Integrate the library equation with coefficients ``coeffs`` from ``u0`` (``[n]`` at ``L j / n``).

    ``coeffs``: the library vector ``[K]`` (:data:`TERMS` order) or a
    ``{key: value}`` dict. ``dt``: a fixed step (None: :func:`auto_step`).
    ``oversample``: solver grid ``n * oversample`` (None: :func:`auto_oversample`).
    ``v0``: the initial ``u_t`` of a second-order equation (default zero).
    Returns ``[n]`` at ``t_end`` or ``[T, n]`` at ``record_times``, float64.
    """
    c = coefficient_vector(coeffs) if isinstance(coeffs, dict) else np.asarray(coeffs, dtype=np.float64)
    if c.shape != (K,) or not np.all(np.isfinite(c)):
        raise ValueError(f"coeffs must be {K} finite numbers (the library {[t.key for t in TERMS]})")
    u0 = np.asarray(u0, dtype=np.float64)
    if u0.ndim != 1:
        raise ValueError(f"u0 must be [n], got shape {u0.shape}")
    n = u0.shape[0]
    factor = auto_oversample(c, u0, n, length) if oversample is None else int(oversample)
    if factor < 1:
        raise ValueError(f"oversample must be >= 1, got {oversample!r}")
    m = n * factor
    u = _interpolate(u0, m)
    dt_max = float(t_end) / 100.0
    second = _get(c, "u_tt") != 0
    if second:
        w0, linear, nonlinear, step_rule, output = _second_order(c, u, m, length, v0, courant, dt_max)
    else:
        if v0 is not None:
            raise ValueError("v0 is only for second-order equations (u_tt = ...)")
        w0, linear, nonlinear, step_rule, output = _first_order(c, u, m, length, courant, dt_max)
    res = etdrk4_run(w0, linear, nonlinear, step_rule, t_end, record_times, dt=dt,
                     output=lambda w: output(w)[::factor])
    return res[-1] if record_times is None else np.stack(res)


def _first_order(c, u, n, length, courant, dt_max):
    k = np.fft.rfftfreq(n, 1.0 / n)
    kappa = 2 * np.pi * k / length
    odd = kappa.copy()
    if n % 2 == 0:
        odd[-1] = 0.0  # odd derivatives of the Nyquist mode are not real: zero, as usual
    base = (_get(c, "u_x") * 1j * odd + _get(c, "u_xx") * -(kappa**2) + _get(c, "u_xxx") * -1j * odd**3
            + _get(c, "u_xxxx") * kappa**4 + _get(c, "u"))
    if not np.any(np.iscomplex(base)):
        base = base.real
    k2 = kappa**2

    def linear(stab: float) -> np.ndarray:
        return base - stab * k2 if stab else base

    mask = dealias_mask(n).astype(np.float64)
    ik = 1j * odd * mask
    x = length * np.arange(n) / n
    c_flux = [_get(c, key) for key in _FLUX]
    c_fp = _get(c, "fp_x")
    drift = np.sin(2 * np.pi * FP_PERIODS * x / length) if c_fp else None
    c_r2, c_r3 = _get(c, "u2"), _get(c, "u3")
    c_d2, c_d3, c_d4 = (_get(c, key) for key in _NDIFF)
    has_flux = any(c_flux) or c_fp != 0
    has_react = c_r2 != 0 or c_r3 != 0
    has_diff = any((c_d2, c_d3, c_d4))
    k2m = -k2 * mask

    def nonlinear(v: np.ndarray) -> np.ndarray:
        out = np.zeros_like(v, dtype=complex)
        if not (has_flux or has_react or has_diff):
            return out
        w = np.fft.irfft(v * mask, n=n)
        if has_flux:
            f = 0.0
            if c_flux[0]:
                f = f + (0.5 * c_flux[0]) * w * w
            if c_flux[1]:
                f = f + (c_flux[1] / 3.0) * w**3
            if c_flux[2]:
                f = f + c_flux[2] * np.sin(w)
            if c_fp:
                f = f + c_fp * drift * w
            out += ik * np.fft.rfft(f)
        if has_react:
            out += mask * np.fft.rfft(c_r2 * w * w + c_r3 * w**3)
        if has_diff:
            a = np.abs(w)
            g = c_d2 * w * a + c_d3 * w**3 + c_d4 * w**3 * a
            out += k2m * np.fft.rfft(g)
        stab = getattr(nonlinear, "stab", 0.0)
        if stab:
            out += (stab * k2) * v
        return out

    def step_rule(v: np.ndarray) -> tuple[float, float]:
        w = np.fft.irfft(v, n=n)
        return auto_step(c, float(w.min()), float(w.max()), n, length, courant, dt_max)

    return np.fft.rfft(u), linear, nonlinear, step_rule, lambda v: np.fft.irfft(v, n=n)


def _second_order(c, u, n, length, v0, courant, dt_max):
    for key in _FLUX + _NDIFF + ("u_x", "u_xxx", "fp_x"):
        if _get(c, key):
            raise ValueError(f"a second-order equation (u_tt = ...) takes only u_xx, u_xxxx, u, u^2, u^3; got {key!r}")
    k = np.fft.fftfreq(n, 1.0 / n)
    kappa = 2 * np.pi * k / length
    omega2 = _get(c, "u_xx") * kappa**2 - _get(c, "u_xxxx") * kappa**4 - _get(c, "u")
    if np.any(omega2 < -1e-12 * max(1.0, float(np.abs(omega2).max()))):
        raise ValueError("a second-order equation needs omega^2 = c_u_xx kappa^2 - c_u_xxxx kappa^4 - c_u >= 0 "
                         "for every wave number (otherwise it is not a wave equation)")
    omega = np.sqrt(np.maximum(omega2, 0.0))
    zero = omega == 0
    if np.any(zero & (k != 0)):
        raise ValueError("a second-order equation needs omega > 0 at every nonzero wave number")
    lin = np.concatenate([1j * omega, [0.0]])
    neg = (-np.arange(n)) % n  # index of -k
    safe = np.where(zero, 1.0, omega)
    mask = (np.abs(k) < n / 3.0).astype(np.float64)
    c_r2, c_r3 = _get(c, "u2"), _get(c, "u3")
    mean_slot = bool(zero[0])

    def split(w):
        z = w[:n]
        zr = np.conj(z[neg])
        uh = np.where(zero, 0.0, (z - zr) / (2j * safe))
        if mean_slot:
            uh[0] = w[n]
        return z, zr, uh

    def nonlinear(w):
        out = np.zeros_like(w)
        z, zr, uh = split(w)
        if mean_slot:
            out[n] = 0.5 * (z[0] + zr[0])  # fft(u_t)[0]
        if c_r2 or c_r3:
            uu = np.fft.ifft(uh * mask).real
            out[:n] = mask * np.fft.fft(c_r2 * uu * uu + c_r3 * uu**3)
        return out

    def step_rule(w):
        uu = np.fft.ifft(split(w)[2]).real
        s = _sample_range(float(uu.min()), float(uu.max()))
        if not (c_r2 or c_r3):
            return math.inf, 0.0  # linear: exact in one step per piece
        rho = float(np.abs(2 * c_r2 * s + 3 * c_r3 * s**2).max())
        return (dt_max if rho == 0 else min(dt_max, courant / rho)), 0.0

    uh0 = np.fft.fft(u)
    vh0 = np.zeros(n, dtype=complex) if v0 is None else np.fft.fft(_interpolate(np.asarray(v0, float), n))
    w0 = np.concatenate([vh0 + 1j * omega * uh0, [uh0[0] if mean_slot else 0.0]])
    return w0, (lambda stab: lin), nonlinear, step_rule, (lambda w: np.fft.ifft(split(w)[2]).real)
