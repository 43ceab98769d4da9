"""Twelve 1D PDE families as points of one term library: LeMON-style multi-operator data.

Sun, Zhang & Schaeffer, "LeMON: Learning to learn multi-operator networks"
(arXiv:2408.16168; data generator JingminSun/LeMON ``src/generator/pde_generator.py``,
which follows PROSE-PDE and PDEBench) pretrain one operator on several PDE
families and transfer it to unseen ones. This problem draws those families:

* pretraining (LeMON's script): ``advection``, ``sine_flux`` (conservation law
  with flux ``sin u``), ``bistable`` (diffusion with bistable reaction, Allen-Cahn
  type), ``fokker_planck``, ``heat``, ``cubic_flux`` (inviscid ``f(u) = u^3/3``),
  ``klein_gordon``;
* unseen: ``burgers`` (viscous), ``kdv``, ``cahn_hilliard``, ``wave``,
  ``porous_medium``.

``family`` is one name or a comma-separated list (also ``pretrain``,
``unseen``, ``all``); sample ``i`` has family ``families[i % F]``
(:func:`family_of`).

By name only (:data:`EXTRA_FAMILIES`, in no group, so ``pretrain``, ``unseen``
and ``all`` are LeMON's twelve as before): ``ks``, the Kuramoto-Sivashinsky
equation (see the section below).

The conditioning lives in the data
-----------------------------------
Inputs are ``[u0, c_u_x, c_u_xx, ...]``: ``u0`` and one constant channel per
term of the common library of :mod:`oplab.solvers.pde1d` (``TERMS``; zero for
absent terms, ``c_u_tt = 1`` marks ``u_tt = ...``), so each sample carries its
equation ``u_t = sum_k c_k T_k`` and :func:`equation` writes it as text.
Coefficients are the family's defaults (LeMON's) varied uniformly by
``+-vary`` (relative, LeMON's 10%) per sample; LeMON's exceptions are kept:
the bistable threshold ``a ~ U(0, 1)`` and the porous-medium exponent
``m in {2, 3, 4}``, and a regularising viscosity is not varied.

Domain and time (LeMON's): ``x in [0, 2)`` periodic, ``n = 128`` points; a common
time axis ``t in [0, t_end]``, ``t_end = 2``, on which family ``f`` runs to its
own LeMON horizon ``T_f`` (heat ... 2, KdV, wave, Klein-Gordon 1, Cahn-Hilliard 0.5,
Fokker-Planck, porous medium 0.1): the equation is rescaled by ``tau = T_f / 2``
(``u_t = tau RHS``, ``u_tt = tau^2 RHS``), as LeMON writes ``(2 / T_f) u_t`` in its
symbolic trees, and the stored coefficients are the rescaled ones. So every
family shares ``output_times`` and a trajectory file is one array.

Initial conditions (LeMON's ``train`` kinds, made periodic): sums of sines
(``init_multi``: one or two wave numbers of ``1..k_tot`` on the box, uniform
amplitudes and phases, a random sign, normalised to ``[0, ic_scale]``), two
Gaussians (KdV, normalised to ``[0, ic_scale / 2]``), one Gaussian
(Fokker-Planck) and a wide bump (porous medium). Gaussians are periodised
(sum of images) instead of LeMON's removal of the linear trend.

Deviations from LeMON (CPU size, spectral solver)
-------------------------------------------------
* LeMON solves each family with its own scheme (finite volumes, BDF, FFT
  RK45, leapfrog); here one Fourier ETDRK4 core (:mod:`oplab.solvers.pde1d`).
* ``cubic_flux`` is "inviscid" in LeMON (solved by finite volumes, whose
  numerical viscosity smears the shocks that form by ``t ~ 0.2``); a spectral
  solver needs a viscosity: the family carries ``0.01 / pi u_xx`` (LeMON's
  viscous conservation-law value, not varied), recorded in ``c_u_xx``. Viscous
  conservation laws are solved on a refined grid (up to 16x, the
  ``oversample`` rule of :func:`oplab.solvers.pde1d.auto_oversample`) and sampled.
* ``cahn_hilliard``: LeMON's ``eps = 0.01`` makes interfaces of width 0.014,
  a grid spacing at 128 points; here ``eps = 0.04`` (resolved). The equation is the
  standard ``u_t = (u^3 - u - eps^2 u_xx)_xx`` (LeMON's right-hand side function
  differs from its own symbolic tree).
* ``fokker_planck``: LeMON's potential ``c cos(x / 0.1)`` is not periodic on
  ``[0, 2)``; here ``cos(3 pi x)`` (three periods) with LeMON's diffusivity
  ``D = kT / (6 pi eta r)`` = 2.197 and barrier ``c / kT`` = 1.207, i.e.
  ``u_t = -25.0 (sin(3 pi x) u)_x + 2.197 u_xx``; ``a`` and ``D`` vary independently.
* ``porous_medium``: the bump is lifted to ``[0.2, 1]`` (``u0 = 0.2 + 0.8 bump``):
  a spectral method cannot follow the degenerate fronts of ``u = 0`` (and with
  ``m = 3, 4`` it is solved on a twice finer grid, the rule of
  :func:`oplab.solvers.pde1d.auto_oversample`).
* wave and Klein-Gordon: the coefficients ``c^2`` and ``m^2 c^4`` are varied
  (not ``c`` and ``m``), KdV's ``delta^2`` (not ``delta``); initial velocity zero as in LeMON.
* The abs-value and window variants of ``init_multi`` (10% of LeMON's samples
  each) are left out: they are not smooth or not periodic.

Kuramoto-Sivashinsky (``family=ks``, not a LeMON family)
--------------------------------------------------------
``u_t = -u u_X - u_XX - u_XXXX`` on a periodic box ``X in [0, L)``, ``L = 22``
(the standard chaotic box of Cvitanovic, Davidchack & Siminos 2010, SIAM J. Appl.
Dyn. Syst. 9, and of Pathak et al. 2018, Phys. Rev. Lett. 120, 024102; the
semilinear-neural-operator paper, Singh et al. ICLR 2024, assimilates KS). The
box is mapped onto ``[0, 2)`` by ``x = X / s``, ``s = L / 2``, so the library
coefficients are ``c_uu_x = -1 / s``, ``c_u_xx = -1 / s^2``, ``c_u_xxxx = -1 / s^4``
(then times ``tau``); ``L`` is the family's one parameter (varied by ``+-vary``
like the others; ``vary=0`` keeps 22). Horizon ``T = 40`` KS time units (the
common ``t_end = 2``, ``tau = 20``), about 1.7 Lyapunov times at the leading
exponent 0.043 that Pathak et al. report (0.036 measured here from the growth
of a 1e-7 perturbation over 360 units of one trajectory). Initial states: a
random smooth zero-mean field (kind ``fourier``: modes ``1..8`` of the box with
Gaussian amplitudes decaying as ``1 / k``, normalised to ``max |u| = ic_scale``)
run for ``KS_SPINUP = 100`` KS time units by the same solver and step rule (the
``dt`` and ``oversample`` parameters), so ``u0`` lies on the chaotic attractor
(``|u| <~ 3``; ``ic_scale`` only sets the transient's start). The mean of ``u``
is an invariant (zero). Not in :data:`FAMILIES` (LeMON's twelve, which
``benchmarks/pde1d_families.py`` and the tests enumerate) but in
:data:`EXTRA_FAMILIES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import ParameterError
from ..solvers import pde1d as core
from .base import Axis, Param, Problem, nonnegative, positive, rng_for, trajectory_times

#: LeMON's common time range ``[0, 2]``: family f's horizon T_f maps onto it
COMMON_T = 2.0
LENGTH = 2.0
#: LeMON's viscosity of the conservation laws, ``eps / pi`` with ``eps = 0.01``
NU_FLUX = 0.01 / math.pi
#: LeMON's Fokker-Planck constants: k_B T / (6 pi eta r) in um^2/s, and the barrier c / (k_B T)
_KT = 1.380649e-23 * 300.0
_DRAG = 6 * math.pi * 1e-3 * 0.1e-6
FP_D = _KT / (_DRAG * 1e-12)
FP_BARRIER = 5e-21 / _KT
FP_A = FP_D * (core.FP_PERIODS * math.pi) * FP_BARRIER  # the drift amplitude giving that barrier
PM_FLOOR = 0.2


@dataclass(frozen=True)
class Family:
    """One PDE family: its parameters (defaults are LeMON's), the map to library coefficients
    (in the family's own time), its LeMON horizon and its initial-condition kind."""

    name: str
    text: str
    defaults: dict
    coefficients: Callable[[dict], dict]
    horizon: float
    ic: str
    ic_options: dict = field(default_factory=dict)
    #: parameters not varied by +-vary: name -> ("range", lo, hi) | ("choice", values) | ("fixed",)
    special: dict = field(default_factory=dict)
    second_order: bool = False
    pretrain: bool = True
    check: str = ""  # how tests/test_pde1d.py verifies it
    #: time (the family's own units) the initial state is run by the solver before it becomes u0
    spinup: float = 0.0

    @property
    def tau(self) -> float:
        """The time scale: the family's horizon over the common one."""
        return self.horizon / COMMON_T

    def draw(self, rng: np.random.Generator, vary: float) -> dict:
        """The family parameters of one sample."""
        out = {}
        for name, value in self.defaults.items():
            rule = self.special.get(name)
            if rule is None:
                out[name] = float(value * (1.0 + vary * rng.uniform(-1.0, 1.0)))
            elif rule[0] == "range":
                out[name] = float(rng.uniform(rule[1], rule[2]))
            elif rule[0] == "choice":
                out[name] = rule[1][int(rng.integers(len(rule[1])))]
            else:
                out[name] = value
        return out

    def library(self, params: dict) -> np.ndarray:
        """The library vector (common time axis) of family parameters ``params``."""
        c = core.coefficient_vector(self.coefficients(params))
        scale = self.tau**2 if self.second_order else self.tau
        c *= scale
        if self.second_order:
            c[core.TERM_INDEX["u_tt"]] = 1.0
        return c


def _pm(p: dict) -> dict:
    return {f"u{int(p['m'])}_xx": p["k"]}


FAMILIES: dict[str, Family] = {
    "advection": Family(
        "advection", "u_t + beta u_x = 0", {"beta": 0.5}, lambda p: {"u_x": -p["beta"]}, 2.0,
        "sines", {"k_tot": 2, "count": 2}, check="exact shift"),
    "sine_flux": Family(
        "sine_flux", "u_t + k (sin u)_x = nu u_xx", {"k": 1.0, "nu": NU_FLUX},
        lambda p: {"cosu_u_x": -p["k"], "u_xx": p["nu"]}, 2.0, "sines", {"k_tot": 4, "count": 2},
        check="characteristics before the shock (nu = 0)"),
    "bistable": Family(
        "bistable", "u_t = nu u_xx + rho u (1 - u)(u - a)", {"nu": 3e-3, "rho": 1.0, "a": 0.5},
        lambda p: {"u_xx": p["nu"], "u": -p["rho"] * p["a"], "u2": p["rho"] * (1 + p["a"]), "u3": -p["rho"]},
        2.0, "sines", {"k_tot": 4, "count": 2}, special={"a": ("range", 0.0, 1.0)},
        check="travelling fronts (exact)"),
    "fokker_planck": Family(
        "fokker_planck", "u_t = -a (sin(3 pi x) u)_x + D u_xx", {"a": FP_A, "D": FP_D},
        lambda p: {"fp_x": -p["a"], "u_xx": p["D"]}, 0.1, "gaussian",
        check="stationary density exp(-(a / (3 pi D)) cos(3 pi x)), mass"),
    "heat": Family(
        "heat", "u_t = nu u_xx", {"nu": 3e-3}, lambda p: {"u_xx": p["nu"]}, 2.0,
        "sines", {"k_tot": 4, "count": 2}, check="exact Fourier decay"),
    "cubic_flux": Family(
        "cubic_flux", "u_t + k (u^3 / 3)_x = nu u_xx (nu: small regularisation)", {"k": 1.0, "nu": NU_FLUX},
        lambda p: {"u2u_x": -p["k"], "u_xx": p["nu"]}, 2.0, "sines", {"k_tot": 4, "count": 2},
        special={"nu": ("fixed",)}, check="characteristics before the shock (nu = 0)"),
    "klein_gordon": Family(
        "klein_gordon", "u_tt = c^2 u_xx - m^2 c^4 u", {"c2": 1.0, "m2c4": 0.01},
        lambda p: {"u_xx": p["c2"], "u": -p["m2c4"]}, 1.0, "sines", {"k_tot": 2, "count": 1},
        second_order=True, check="exact Fourier solution"),
    "burgers": Family(
        "burgers", "u_t + k (u^2 / 2)_x = nu u_xx", {"k": 1.0, "nu": NU_FLUX},
        lambda p: {"uu_x": -p["k"], "u_xx": p["nu"]}, 2.0, "sines", {"k_tot": 4, "count": 2},
        pretrain=False, check="Cole-Hopf"),
    "kdv": Family(
        "kdv", "u_t + u u_x + delta^2 u_xxx = 0", {"delta2": 0.022**2},
        lambda p: {"uu_x": -1.0, "u_xxx": -p["delta2"]}, 1.0, "gaussians",
        pretrain=False, check="one-soliton sech^2"),
    "cahn_hilliard": Family(
        "cahn_hilliard", "u_t = (u^3 - u - eps^2 u_xx)_xx", {"eps2": 0.04**2},
        lambda p: {"u3_xx": 1.0, "u_xx": -1.0, "u_xxxx": -p["eps2"]}, 0.5, "sines", {"k_tot": 2, "count": 2},
        pretrain=False, check="mass, energy decrease, temporal order"),
    "wave": Family(
        "wave", "u_tt = c^2 u_xx", {"c2": 0.25}, lambda p: {"u_xx": p["c2"]}, 1.0,
        "sines", {"k_tot": 2, "count": 2}, second_order=True, pretrain=False, check="d'Alembert (exact)"),
    "porous_medium": Family(
        "porous_medium", "u_t = k (u^m)_xx, m in {2, 3, 4}", {"k": 1.0, "m": 2},
        _pm, 0.1, "bump", special={"m": ("choice", (2, 3, 4))}, pretrain=False,
        check="mass, maximum principle, temporal order"),
}

#: the Kuramoto-Sivashinsky box length (KS units) and the initial states' spin-up time
KS_LENGTH = 22.0
KS_SPINUP = 100.0


def _ks(p: dict) -> dict:
    s = p["L"] / LENGTH  # X = s x maps [0, 2) onto [0, L)
    return {"uu_x": -1.0 / s, "u_xx": -1.0 / s**2, "u_xxxx": -1.0 / s**4}


#: families selectable by name only: in no group, so pretrain / unseen / all are unchanged
EXTRA_FAMILIES: dict[str, Family] = {
    "ks": Family(
        "ks", "u_t + u u_X + u_XX + u_XXXX = 0 on X in [0, L), L = 22, mapped onto [0, 2)", {"L": KS_LENGTH},
        _ks, 40.0, "fourier", {"k_max": 8}, pretrain=False, spinup=KS_SPINUP,
        check="mean invariant, ETDRK4 temporal order (tests/test_pde1d_ks.py)"),
}
_KNOWN: dict[str, Family] = {**FAMILIES, **EXTRA_FAMILIES}

GROUPS = {
    "pretrain": tuple(n for n, f in FAMILIES.items() if f.pretrain),
    "unseen": tuple(n for n, f in FAMILIES.items() if not f.pretrain),
    "all": tuple(FAMILIES),
}


def parse_families(text: str) -> tuple[str, ...]:
    """The family names of a ``family`` parameter (names, ``pretrain``, ``unseen``, ``all``)."""
    names: list[str] = []
    for part in str(text).split(","):
        key = part.strip().lower().replace("-", "_")
        if not key:
            continue
        if key in GROUPS:
            names.extend(GROUPS[key])
        elif key in _KNOWN:
            names.append(key)
        else:
            raise ParameterError(
                f"pde1d: unknown family {part.strip()!r}; available: {', '.join(_KNOWN)} "
                f"(or {', '.join(GROUPS)})")
    if not names:
        raise ParameterError(f"pde1d: parameter 'family' names no family; available: {', '.join(FAMILIES)}")
    return tuple(names)


def family_of(problem_params: dict, index: int) -> str:
    """The family of sample ``index`` of a data set made with ``problem_params`` (its ``params``)."""
    names = parse_families(problem_params.get("family", PDE1D.params_spec[0].default))
    return names[int(index) % len(names)]


def equation(family: str, coeffs: Sequence[float] | dict) -> str:
    """The equation text of a sample of ``family`` with library coefficients ``coeffs``
    (the ``c_*`` input channels, a ``[K]`` vector, or a ``{term: value}`` dict)."""
    parse_families(family)
    c = core.coefficient_vector(coeffs) if isinstance(coeffs, dict) else np.asarray(coeffs, dtype=np.float64)
    if c.shape != (core.K,):
        raise ParameterError(f"pde1d: expected {core.K} coefficients, got shape {c.shape}")
    return core.equation_text(c)


# ------------------------------------------------------ initial conditions
def _normalise(u: np.ndarray, top: float) -> np.ndarray:
    return (u - u.min()) / max(float(np.ptp(u)), 1e-300) * top


def _periodic_gauss(x: np.ndarray, mean: float, width2: float) -> np.ndarray:
    """``sum_s exp(-(x - mean + s L)^2 / width2)`` over images ``s = -2..2``."""
    return sum(np.exp(-((x - mean + s * LENGTH) ** 2) / width2) for s in range(-2, 3))


def initial_condition(kind: str, options: dict, rng: np.random.Generator, x: np.ndarray, scale: float) -> np.ndarray:
    """One initial condition of LeMON's ``train`` kinds (module docstring), periodic on ``[0, 2)``."""
    if kind == "sines":
        ks = np.unique(rng.integers(1, options["k_tot"] + 1, size=options["count"]))
        amp = rng.uniform(0.0, 1.0, size=len(ks))
        phase = rng.uniform(0.0, 2 * np.pi, size=len(ks))
        u = sum(a * np.sin(2 * np.pi * k * x / LENGTH + p) for k, a, p in zip(ks, amp, phase))
        u = u * (1.0 if rng.uniform() < 0.5 else -1.0)
        return _normalise(u, scale)
    if kind == "gaussians":  # KdV
        means = rng.uniform(0.5, 1.5, size=2)
        stds = rng.uniform(0.3, 0.5, size=2)
        signs = rng.choice([-1.0, 1.0], size=2)
        u = sum(s * _periodic_gauss(x, m, 2 * sd**2) for m, sd, s in zip(means, stds, signs))
        return _normalise(u, 0.5 * scale)
    if kind == "gaussian":  # Fokker-Planck: a density, not normalised
        mean, std = rng.uniform(0.5, 1.5), rng.uniform(0.1, 0.5)
        return scale * _periodic_gauss(x, mean, std**2)
    if kind == "fourier":  # Kuramoto-Sivashinsky (before its spin-up): zero mean, smooth
        k = np.arange(1, options["k_max"] + 1)
        amp = rng.standard_normal(len(k)) / k
        phase = rng.uniform(0.0, 2 * np.pi, size=len(k))
        u = (amp[:, None] * np.cos(np.pi * k[:, None] * x[None] + phase[:, None])).sum(0)
        u -= u.mean()
        return u * (scale / max(float(np.abs(u).max()), 1e-300))
    if kind == "bump":  # porous medium
        a, centre, std = rng.uniform(9, 11), rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1)
        bump = _normalise(_periodic_gauss(x, centre, 2 * std**2 / a), 1.0)
        return scale * (PM_FLOOR + (1 - PM_FLOOR) * bump)
    raise ValueError(f"unknown initial-condition kind {kind!r}")


# -------------------------------------------------------------- the problem
class PDE1D(Problem):
    """``[u0, c_1..c_K] -> u(., t_end)`` (or the trajectory) of 1D periodic PDE families of one
    term library; inputs ``[1 + K, n]``, outputs ``[1, n]`` or ``[T, 1, n]``."""

    name = "pde1d"
    summary = "1D PDE families (LeMON): advection ... porous medium, coefficients as input channels"
    reference = (
        "Sun, Zhang & Schaeffer, 'LeMON: Learning to learn multi-operator networks' (arXiv:2408.16168), "
        "data generator JingminSun/LeMON; Kassam & Trefethen 2005 (ETDRK4)"
    )
    params_spec = (
        Param("family", "pretrain",
              "family name or comma-separated list (sample i has the (i mod F)-th family); also pretrain, unseen, all; "
              "names: " + ", ".join(FAMILIES) + "; by name only (in no group): " + ", ".join(EXTRA_FAMILIES)),
        Param("vary", 0.1, "relative spread of each coefficient, uniform per sample (LeMON: 0.1)",
              check=lambda v: 0 <= v < 1, expect="in [0, 1)"),
        positive("t_end", COMMON_T, "final time on the common axis; 2 runs each family to its LeMON horizon"),
        Param("trajectory", False, "record u at n_times evenly spaced times instead of only t_end"),
        Param("n_times", 64, "number of recorded times when trajectory is on", check=lambda v: v >= 1, expect=">= 1"),
        positive("ic_scale", 1.0, "initial conditions are normalised to [0, ic_scale] (LeMON's IC_range)"),
        Param("oversample", 0, "solver grid = resolution * oversample; 0 picks it per sample (viscous fronts)",
              check=lambda v: 0 <= v <= 64, expect="in [0, 64]"),
        nonnegative("dt", 0.0, "fixed ETDRK4 step; 0 picks it per chunk from the stiffness rule"),
    )
    default_resolution = 128
    min_resolution = 16
    input_channels = ("u0",) + tuple(f"c_{t.key}" for t in core.TERMS)
    output_channels = ("u",)
    chunk_size = 1

    def _check(self) -> None:
        self.families = parse_families(self.params["family"])
        self.params["family"] = ",".join(self.families)

    def working_memory(self, together: int) -> int:
        """Inputs and outputs, plus the solver's grid (up to 16x) and its ETDRK4 coefficients
        (128 complex contour points per mode)."""
        fine = 16 * self.resolution
        return super().working_memory(together) + together * 128 * 16 * 8 * (fine // 2 + 1)

    def input_axes(self) -> list[Axis]:
        return [Axis("x", self.resolution, 0.0, LENGTH, periodic=True)]

    def output_times(self) -> np.ndarray | None:
        return trajectory_times(self.params)

    @property
    def solver_name(self) -> str:
        dt = self.params["dt"]
        step = f"dt={dt:g}" if dt > 0 else "dt from the stiffness rule"
        return (f"etdrk4-pseudospectral (oplab.solvers.pde1d), {step}, 2/3 dealiasing, n={self.resolution}, "
                "float64")

    def family_of(self, index: int) -> str:
        return self.families[int(index) % len(self.families)]

    def sample_inputs(self, rng: np.random.Generator, family: str | None = None) -> np.ndarray:
        fam = _KNOWN[family or self.families[0]]
        params = fam.draw(rng, self.params["vary"])
        c = fam.library(params)
        x = self.input_axes()[0].coords()
        u0 = initial_condition(fam.ic, fam.ic_options, rng, x, self.params["ic_scale"])
        if fam.spinup:  # onto the attractor (KS), by the solver and step rule of the data
            u0 = core.solve(u0, c, fam.spinup / fam.tau, length=LENGTH, dt=self.params["dt"] or None,
                            oversample=self.params["oversample"] or None)
        out = np.empty((1 + core.K, self.resolution))
        out[0] = u0
        out[1:] = c[:, None]
        return out

    def generate(self, indices: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([self.sample_inputs(rng_for(seed, i), self.family_of(i)) for i in indices])
        return x, self.solve_batch(x)

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        p = self.params
        c = inputs[1:, 0].astype(np.float64)
        try:
            u = core.solve(inputs[0], c, p["t_end"], length=LENGTH, record_times=self.output_times(),
                           dt=p["dt"] or None, oversample=p["oversample"] or None)
        except ValueError as exc:
            raise ParameterError(f"pde1d: {exc}") from None
        return u[..., None, :]

    def describe(self) -> dict:
        info = super().describe()
        info["families"] = list(self.families)
        info["family_rule"] = "sample i has family families[i % len(families)]"
        info["equations"] = {name: _KNOWN[name].text for name in dict.fromkeys(self.families)}
        info["time_scale"] = {name: _KNOWN[name].tau for name in dict.fromkeys(self.families)}
        info["terms"] = [t.text for t in core.TERMS]
        return info


def default_coefficients(family: str) -> np.ndarray:
    """The library vector of ``family`` at its default parameters (on the common time axis)."""
    fam = _KNOWN[parse_families(family)[0]]
    return fam.library(dict(fam.defaults))


__all__ = ["EXTRA_FAMILIES", "FAMILIES", "GROUPS", "KS_LENGTH", "KS_SPINUP", "PDE1D", "Family", "default_coefficients",
           "equation", "family_of", "initial_condition", "parse_families"]
