"""pde1d: the one-core ETDRK4 solver of twelve 1D PDE families against exact solutions,
invariants and measured temporal orders, and the multi-family problem's contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oplab import problems
from oplab.errors import ParameterError
from oplab.problems import pde1d as P
from oplab.solvers import pde1d as core

L = 2.0


def grid(n: int) -> np.ndarray:
    return L * np.arange(n) / n


def rel_err(u, ref) -> float:
    return float(np.max(np.abs(u - ref)) / np.max(np.abs(ref)))


def test_complex_etdrk4_coefficients():
    """The shared Kassam-Trefethen coefficients for a complex (dispersive) linear part: the whole
    contour circle gives the direct formulas where those are accurate, and the z -> 0 limits
    Q = h / 2, f1 = f2 = f3 = h / 6 (real) without cancellation."""
    from oplab.solvers.spectral import etdrk4_coefficients

    h = 0.01
    _, _, q, f1, f2, f3 = etdrk4_coefficients(np.array([0.0, 1e-9j]), h)
    np.testing.assert_allclose(q, h / 2, rtol=1e-9, atol=0)
    for f in (f1, f2, f3):
        np.testing.assert_allclose(f, h / 6, rtol=1e-9, atol=0)
    z = np.array([3j, -40j, -1 + 5j, -300 + 2000j, 1e4j])
    _, _, q, f1, f2, f3 = etdrk4_coefficients(z / h, h)
    ez = np.exp(z)
    np.testing.assert_allclose(q, h * (np.exp(z / 2) - 1) / z, rtol=1e-11)
    np.testing.assert_allclose(f1, h * (-4 - z + ez * (4 - 3 * z + z**2)) / z**3, rtol=1e-11)
    np.testing.assert_allclose(f2, h * (2 + z + ez * (z - 2)) / z**3, rtol=1e-11)
    np.testing.assert_allclose(f3, h * (-4 - 3 * z - z**2 + ez * (4 - z)) / z**3, rtol=1e-11)


# ----------------------------------------------------------- linear families
@pytest.mark.parametrize("family", ["advection", "heat", "wave", "klein_gordon"])
def test_linear_families_match_the_exact_fourier_solution(family):
    """Linear constant-coefficient equations: each Fourier mode evolves by its own symbol,
    u^(k, t) = exp(s(k) t) u^(k, 0) (first order) or cos(omega(k) t) u^(k, 0) (second order,
    zero initial velocity; d'Alembert for the wave equation). Samples come from the problem, so
    the time scaling and the coefficient channels are checked too."""
    p = problems.create("pde1d", family=family, trajectory=True, n_times=4)
    x, y = p.generate([0, 1], seed=3)
    kappa = 2 * np.pi * np.fft.fftfreq(p.resolution, 1.0 / p.resolution) / L
    for xs, ys in zip(x, y):
        c = dict(zip((t.key for t in core.TERMS), xs[1:, 0]))
        uh = np.fft.fft(xs[0])
        for t, u in zip(p.output_times(), ys[:, 0]):
            if c["u_tt"]:
                omega = np.sqrt(c["u_xx"] * kappa**2 - c["u"])
                ref = np.fft.ifft(np.cos(omega * t) * uh).real
            else:
                sym = c["u_x"] * 1j * kappa - c["u_xx"] * kappa**2
                ref = np.fft.ifft(np.exp(sym * t) * uh).real
            assert rel_err(u, ref) < 1e-12


# -------------------------------------------------------------- Burgers
def test_burgers_matches_cole_hopf():
    """Cole-Hopf: u = -2 nu phi_x / phi with phi_t = nu phi_xx solves u_t + u u_x = nu u_xx
    (as in tests/test_burgers.py), here on [0, 2)."""
    nu, n = 0.05, 128
    x = grid(n)
    modes = ((1, 0.4, 0.3), (2, 0.25, 1.1), (3, 0.15, -0.7))

    def exact(t):
        phi, phi_x = np.ones_like(x), np.zeros_like(x)
        for m, a, c in modes:
            k = np.pi * m
            phi += a * np.exp(-nu * k**2 * t) * np.cos(k * x + c)
            phi_x -= a * np.exp(-nu * k**2 * t) * k * np.sin(k * x + c)
        return -2 * nu * phi_x / phi

    u = core.solve(exact(0.0), {"uu_x": -1.0, "u_xx": nu}, 1.0)
    assert rel_err(u, exact(1.0)) < 1e-9


# ------------------------------------------------------------------- KdV
def test_kdv_one_soliton():
    """u = A sech^2((x - x0 - A t / 3) / W), W = delta sqrt(12 / A), solves
    u_t + u u_x + delta^2 u_xxx = 0 (Zabusky & Kruskal 1965's scaling, LeMON's delta = 0.022);
    on [0, 2) its tails are below 1e-8, so it is exact to that level on the torus."""
    delta, amp, n = 0.022, 0.6, 256
    x = grid(n)
    width = delta * math.sqrt(12 / amp)

    def exact(t):
        s = (x - 0.8 - amp * t / 3 + 1.0) % L - 1.0
        return amp / np.cosh(s / width) ** 2

    u = core.solve(exact(0.0), {"uu_x": -1.0, "u_xxx": -delta**2}, 1.5)
    assert rel_err(u, exact(1.5)) < 1e-6


# --------------------------------------------------- flux laws: characteristics
def characteristics(u0, speed, x, t, iterations=400):
    """u = u0(x - f'(u) t) by fixed-point iteration (a contraction before the breaking time)."""
    u = u0(x)
    for _ in range(iterations):
        u = u0(x - speed(u) * t)
    return u


@pytest.mark.parametrize("term,speed", [("u2u_x", lambda u: u**2), ("cosu_u_x", np.cos)])
def test_inviscid_flux_laws_match_characteristics(term, speed):
    """u_t + f(u)_x = 0 with f = u^3 / 3 (LeMON's cubic flux) or f = sin u (sine flux), smooth
    before the breaking time t_b = 1 / max(-d/dx f'(u0)): the solution is constant along the
    characteristics x = x0 + f'(u0(x0)) t."""
    n = 128
    x = grid(n)
    u0 = lambda s: 0.5 + 0.4 * np.sin(np.pi * s)  # noqa: E731
    fine = np.linspace(0, L, 4001)
    slope = -np.gradient(speed(u0(fine)), fine)
    t = 0.5 / slope.max()  # half the breaking time
    u = core.solve(u0(x), {term: -1.0}, t)
    assert rel_err(u, characteristics(u0, speed, x, t)) < 1e-6


def test_viscous_fronts_get_a_refined_solver_grid():
    """LeMON's Burgers viscosity (0.01 / pi) makes fronts of width ~0.013, under two grid spacings
    at 128 points: the automatic rule refines the solver grid (4x here), whose result agrees with a
    twice finer grid's, while the unrefined solve is visibly wrong."""
    x = grid(128)
    u0 = 0.5 + 0.3 * np.sin(np.pi * x) + 0.2 * np.sin(2 * np.pi * x + 1.0)
    u0 = (u0 - u0.min()) / np.ptp(u0)
    c = P.default_coefficients("burgers")
    factor = core.auto_oversample(c, u0, 128, L)
    assert factor == 4
    u = core.solve(u0, c, 0.5)
    assert rel_err(u, core.solve(u0, c, 0.5, oversample=2 * factor)) < 1e-6
    assert rel_err(core.solve(u0, c, 0.5, oversample=1), u) > 1e-3


# --------------------------------------------------------------- bistable
def test_bistable_travelling_fronts():
    """u = 1 / (1 + exp(-kappa (x - c t))), kappa = sqrt(rho / (2 nu)), c = -(1 - 2a) sqrt(rho nu / 2),
    solves u_t = nu u_xx + rho u (1 - u)(u - a) (substitute: u_x = kappa u (1 - u)). A plateau
    between a rising and a falling front is exact up to exp(-kappa d) ~ 1e-8 (d: front distance)."""
    nu, rho, a, n, t = 5e-3, 10.0, 0.3, 256, 2.0
    x = grid(n)
    kappa = math.sqrt(rho / (2 * nu))
    c = -(1 - 2 * a) * math.sqrt(rho * nu / 2)
    sig = lambda s: 1 / (1 + np.exp(-s))  # noqa: E731

    def exact(tt):
        return sig(kappa * (x - 0.6 - c * tt)) * sig(-kappa * (x - 1.4 + c * tt))

    coeffs = {"u_xx": nu, "u": -rho * a, "u2": rho * (1 + a), "u3": -rho}
    u = core.solve(exact(0.0), coeffs, t)
    assert rel_err(u, exact(t)) < 1e-6
    assert abs(c * t) > 0.1  # the fronts really moved (by 0.13, four widths)


# ---------------------------------------------------------- Fokker-Planck
def test_fokker_planck_stationary_density_and_mass():
    """u_t = (-a sin(3 pi x) u + D u_x)_x has the zero-flux stationary density
    exp(-(a / (3 pi D)) cos(3 pi x)) and conserves mass; from a Gaussian the relative entropy
    int u log(u / u_inf) (H-theorem: a Lyapunov function) decreases monotonically."""
    coeffs = P.default_coefficients("fokker_planck")
    a, d = -coeffs[core.TERM_INDEX["fp_x"]], coeffs[core.TERM_INDEX["u_xx"]]
    n = 128
    x = grid(n)
    stationary = np.exp(-(a / (3 * np.pi * d)) * np.cos(3 * np.pi * x))
    u = core.solve(stationary, coeffs, 1.0)
    assert rel_err(u, stationary) < 1e-10
    g = 0.05 + np.exp(-((x - 0.8) / 0.3) ** 2)
    traj = core.solve(g, coeffs, 4.0, record_times=[0.25, 0.5, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(traj.sum(axis=1), g.sum(), rtol=1e-12)
    u_inf = stationary * g.sum() / stationary.sum()
    assert traj.min() > 0
    entropy = [float(np.mean(u * np.log(u / u_inf))) for u in [g, *traj]]
    assert np.all(np.diff(entropy) < 0) and entropy[-1] < 0.05 * entropy[0]


# ---------------------------------------------------------- temporal order
def order(u_h, u_h2, u_ref) -> float:
    return math.log2(np.max(np.abs(u_h - u_ref)) / np.max(np.abs(u_h2 - u_ref)))


def test_etdrk4_fourth_order_on_nonlinear_families():
    """ETDRK4 is fourth order (Cox & Matthews 2002): halving the step divides the error by ~16,
    measured against a step eight times smaller, on KdV and the bistable reaction."""
    x = grid(64)
    u0 = 0.5 + 0.3 * np.sin(np.pi * x) + 0.1 * np.cos(2 * np.pi * x)
    cases = [({"uu_x": -0.5, "u_xxx": -0.5 * 0.022**2}, 0.4, 0.02),
             ({"u_xx": 3e-3, "u": -0.3, "u2": 1.3, "u3": -1.0}, 2.0, 0.25)]
    for coeffs, t, h in cases:
        u = [core.solve(u0, coeffs, t, dt=step, oversample=1) for step in (h, h / 2, h / 16)]
        assert order(u[0], u[1], u[2]) > 3.6


def test_cahn_hilliard_mass_energy_and_order():
    """Cahn-Hilliard u_t = (u^3 - u - eps^2 u_xx)_xx: mass is conserved, the Ginzburg-Landau energy
    E = int eps^2 u_x^2 / 2 + (u^2 - 1)^2 / 4 decreases; the stabilised ETDRK4 converges at a
    measured order (stiff order reduction keeps it below four)."""
    n, eps2 = 64, 0.05**2
    x = grid(n)
    u0 = 0.2 * np.sin(np.pi * x) + 0.15 * np.cos(3 * np.pi * x)
    coeffs = {"u3_xx": 1.0, "u_xx": -1.0, "u_xxxx": -eps2}
    times = np.linspace(0.01, 0.1, 10)
    traj = core.solve(u0, coeffs, 0.1, record_times=times)
    np.testing.assert_allclose(traj.sum(axis=1), u0.sum(), atol=1e-10 * n)
    kappa = 2 * np.pi * np.fft.rfftfreq(n, 1.0 / n) / L

    def energy(u):
        ux = np.fft.irfft(1j * kappa * np.fft.rfft(u), n=n)
        return float(np.mean(eps2 * ux**2 / 2 + (u**2 - 1) ** 2 / 4))

    e = [energy(u0)] + [energy(u) for u in traj]
    assert np.all(np.diff(e) < 0)
    assert e[-1] < e[0] - 0.05  # phase separation really happened
    u = [core.solve(u0, coeffs, 0.05, dt=step) for step in (1e-3, 5e-4, 6.25e-5)]
    assert order(u[0], u[1], u[2]) > 2.0


def test_porous_medium_mass_maximum_principle_and_order():
    """u_t = (u^m)_xx, u > 0: mass is conserved, min and max move inwards (maximum principle);
    the stabilised step converges at a measured order."""
    n = 64
    x = grid(n)
    u0 = 0.1 + 0.9 * np.exp(-((x - 1.0) ** 2) / 0.1)
    for m in (2, 3, 4):
        coeffs = {f"u{m}_xx": 0.05}
        u = core.solve(u0, coeffs, 2.0)
        assert abs(u.sum() - u0.sum()) < 1e-10 * u0.sum()
        # up to the discretisation: m = 4 nearly degenerates at u = 0.1 (D = 2e-4): 2e-4 undershoot here
        assert u.min() > u0.min() - 5e-4 and u.max() < u0.max() - 0.1
    coeffs = {"u3_xx": 0.05}
    u = [core.solve(u0, coeffs, 0.2, dt=step) for step in (4e-3, 2e-3, 2.5e-4)]
    assert order(u[0], u[1], u[2]) > 2.0


# --------------------------------------------------------------- the problem
def test_multi_family_file_channels_coefficients_and_determinism(tmp_path):
    """A multi-family file through oplab.data: channels, the family rule, coefficients within
    +-vary of the family defaults, equations, determinism."""
    from oplab import data
    from oplab.data.generation import generate

    names = ["heat", "advection", "wave", "kdv", "bistable"]
    p = problems.create("pde1d", resolution=64, family=",".join(names), vary=0.1, t_end=0.5)
    out = generate(p, 10, tmp_path / "multi.h5", seed=5)
    ds = data.open(out)
    assert ds.input_channels == ["u0"] + [f"c_{t.key}" for t in core.TERMS]
    x, y = ds.arrays()
    assert x.shape == (10, 1 + core.K, 64) and y.shape == (10, 1, 64)
    for i in range(10):
        fam = P.family_of(p.params, i)
        assert fam == names[i % len(names)]
        c = x[i, 1:, 0].astype(np.float64)
        assert np.all(x[i, 1:] == x[i, 1:, :1])  # constant channels
        ref = P.default_coefficients(fam)
        assert np.array_equal(c != 0, ref != 0)  # the family's terms, and only those
        if fam != "bistable":  # a ~ U(0, 1) there (LeMON)
            nz = ref != 0
            ratio = c[nz] / ref[nz]
            fixed = ratio == 1.0  # KdV's u u_x, the u_tt flag
            assert np.all(np.abs(ratio - 1) <= 0.1 + 1e-6)
            assert np.any(~fixed)
        assert P.equation(fam, c).startswith("u_tt =" if fam == "wave" else "u_t =")
    # heat's output is the exact decay of its own input
    xh, yh = p.generate([0], seed=5)
    np.testing.assert_allclose(y[0, 0], yh[0, 0], atol=1e-6)
    x2, y2 = p.generate([3, 4], seed=5)
    np.testing.assert_array_equal(x2, p.generate([3, 4], seed=5)[0])
    np.testing.assert_allclose(x2, x[3:5], atol=1e-6)
    assert not np.allclose(p.generate([3], seed=6)[0], x2[:1])
    info = p.describe()
    assert info["families"] == names and set(info["equations"]) == set(names)


def test_bad_family_names_and_parameters():
    with pytest.raises(ParameterError, match="unknown family 'heet'.*available: advection"):
        problems.create("pde1d", family="heat,heet")
    with pytest.raises(ParameterError, match="vary"):
        problems.create("pde1d", vary=1.5)
    assert problems.create("pde1d", family="unseen").families == P.GROUPS["unseen"]
    assert len(P.FAMILIES) == 12 and len(P.GROUPS["pretrain"]) == 7
    with pytest.raises(ValueError, match="second-order"):
        core.solve(np.zeros(16), {"u_tt": 1.0, "uu_x": -1.0}, 1.0)


def test_equation_text_round_trip():
    c = P.default_coefficients("burgers")
    assert P.equation("burgers", c) == f"u_t = {NU:.6g}*u_xx - u*u_x"
    assert core.equation_text(core.coefficient_vector({"u_tt": 1, "u_xx": 0.25})) == "u_tt = 0.25*u_xx"


NU = P.NU_FLUX
