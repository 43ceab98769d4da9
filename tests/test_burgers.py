"""Burgers: the ETDRK4 pseudo-spectral solver against the exact Cole-Hopf
solution, its temporal order, and the problem's contract."""

from __future__ import annotations

import numpy as np
import pytest

from oplab import problems
from oplab.errors import ParameterError
from oplab.solvers.spectral import burgers_auto_dt, burgers_etdrk4, etdrk4_coefficients

# phi = 1 + sum_m a_m exp(-nu (2 pi m)^2 t) cos(2 pi m x + c_m); sum |a_m| = 0.8 < 1 keeps phi > 0
MODES = ((1, 0.4, 0.3), (2, 0.25, 1.1), (3, 0.15, -0.7))


def cole_hopf(x: np.ndarray, t: float, nu: float) -> np.ndarray:
    """``u = -2 nu phi_x / phi`` with ``phi_t = nu phi_xx``: an exact Burgers solution."""
    phi = np.ones_like(x)
    phi_x = np.zeros_like(x)
    for m, a, c in MODES:
        decay = a * np.exp(-nu * (2 * np.pi * m) ** 2 * t)
        phi += decay * np.cos(2 * np.pi * m * x + c)
        phi_x -= decay * 2 * np.pi * m * np.sin(2 * np.pi * m * x + c)
    return -2 * nu * phi_x / phi


def rel_err(u: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(u - ref)) / np.max(np.abs(ref)))


def test_etdrk4_coefficients_small_and_large_arguments():
    h = 0.01
    # z -> 0: Q -> h/2, f1 = f2 = f3 -> h/6 (direct formulas would cancel catastrophically)
    e, e2, q, f1, f2, f3 = etdrk4_coefficients(np.array([0.0, -1e-9]), h)
    np.testing.assert_allclose(e, 1.0, rtol=1e-10)
    np.testing.assert_allclose(q, h / 2, rtol=1e-9)
    for f in (f1, f2, f3):
        np.testing.assert_allclose(f, h / 6, rtol=1e-9)
    # large |z|: compare with the direct formulas, accurate there
    lin = np.array([-0.5, -1.0, -5.0, -300.0, -1e5]) / h
    z = h * lin
    _, _, q, f1, f2, f3 = etdrk4_coefficients(lin, h)
    ez = np.exp(z)
    np.testing.assert_allclose(q, h * (np.exp(z / 2) - 1) / z, rtol=1e-12)
    np.testing.assert_allclose(f1, h * (-4 - z + ez * (4 - 3 * z + z**2)) / z**3, rtol=1e-12)
    np.testing.assert_allclose(f2, h * (2 + z + ez * (z - 2)) / z**3, rtol=1e-12)
    np.testing.assert_allclose(f3, h * (-4 - 3 * z - z**2 + ez * (4 - z)) / z**3, rtol=1e-12)


@pytest.mark.parametrize("nu", [0.1, 0.02])
def test_matches_cole_hopf(nu):
    n = 256
    x = np.arange(n) / n
    u0 = cole_hopf(x, 0.0, nu)
    u = burgers_etdrk4(u0, nu, 1.0, dt=1e-3)
    assert rel_err(u, cole_hopf(x, 1.0, nu)) < 1e-9


def test_trajectory_and_batch():
    nu, n = 0.1, 128
    x = np.arange(n) / n
    u0 = cole_hopf(x, 0.0, nu)
    times = [0.1, 0.25, 0.6]
    traj = burgers_etdrk4(np.stack([u0, -u0[::-1]]), nu, 0.6, dt=2e-3, record_times=times)
    assert traj.shape == (2, 3, n)
    for j, t in enumerate(times):
        exact = cole_hopf(x, t, nu)
        assert rel_err(traj[0, j], exact) < 2e-8
        # u(x, t) -> -u(-x, t) is a symmetry of Burgers
        assert rel_err(traj[1, j], -exact[::-1]) < 2e-8
    single = burgers_etdrk4(u0, nu, 0.6, dt=2e-3, record_times=times)
    np.testing.assert_allclose(single, traj[0], rtol=0, atol=1e-13)


def test_temporal_order_is_four():
    nu, n = 0.1, 128
    x = np.arange(n) / n
    u0, exact = cole_hopf(x, 0.0, nu), cole_hopf(x, 1.0, nu)
    dts = np.array([0.025, 0.0125, 0.00625, 0.003125])
    errs = np.array([rel_err(burgers_etdrk4(u0, nu, 1.0, dt=dt), exact) for dt in dts])
    orders = np.log2(errs[:-1] / errs[1:])
    fitted = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert np.all(orders > 3.5), orders
    assert 3.7 < fitted < 4.3, fitted


def test_auto_dt():
    u0 = np.sin(2 * np.pi * np.arange(64) / 64)
    assert burgers_auto_dt(u0, 0.1) == 1e-3  # the recipe's regime
    assert burgers_auto_dt(10 * u0, 0.1) < 1e-3  # CFL-bounded for strong fields
    assert burgers_auto_dt(np.zeros(8), 0.1) == 1e-3


# ---------------------------------------------------------------- problem
def test_problem_generate_shapes_and_determinism():
    p = problems.create("burgers", resolution=256)
    assert p.input_shape() == (1, 256) and p.output_shape() == (1, 256)
    assert p.output_times() is None
    x, y = p.generate([0, 1], seed=0)
    assert x.shape == (2, 1, 256) and y.shape == (2, 1, 256)
    assert x.dtype == np.float64 and y.dtype == np.float64
    assert np.all(np.isfinite(y))
    assert abs(x.mean(axis=-1)).max() < 1e-13  # zero-mean initial fields, and the mean is conserved
    assert abs(y.mean(axis=-1)).max() < 1e-13
    assert np.max(np.abs(y)) < np.max(np.abs(x))  # maximum principle (viscous decay)
    x2, y2 = p.generate([0, 1], seed=0)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    x1, y1 = p.generate([1], seed=0)
    assert np.array_equal(x1[0], x[1]) and np.array_equal(y1[0], y[1])
    x3, _ = p.generate([0], seed=1)
    assert not np.array_equal(x3[0], x[0])
    assert "etdrk4" in p.solver_name and "section 5.1" in p.reference


def test_problem_trajectory():
    p = problems.create("burgers", resolution=64, trajectory=True, n_times=4, t_end=0.5)
    np.testing.assert_allclose(p.output_times(), [0.125, 0.25, 0.375, 0.5])
    x, y = p.generate([3], seed=2)
    assert y.shape == (1, 4, 1, 64) == (1, *p.output_shape())
    final = problems.create("burgers", resolution=64, t_end=0.5).solve(x[0])
    np.testing.assert_allclose(y[0, -1], final, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nu": -0.1},
        {"nu": 0.0},
        {"t_end": 0.0},
        {"dt": -1e-3},
        {"sigma": -1.0},
        {"n_times": 0},
        {"resolution": 8},
        {"resolution": 64.5},
        {"viscosity": 0.1},
        {"trajectory": "yes"},
    ],
)
def test_invalid_params(kwargs):
    with pytest.raises(ParameterError):
        problems.create("burgers", **kwargs)
