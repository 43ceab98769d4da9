"""Navier-Stokes: the Crank-Nicolson pseudo-spectral solver against exact
solutions and its convergence orders, and the problem's contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oplab import problems
from oplab.errors import ParameterError
from oplab.problems.base import rng_for
from oplab.problems.navier_stokes import fno_forcing, fourier_upsample
from oplab.solvers.random_fields import periodic_grf
from oplab.solvers.spectral import navier_stokes_cn


def grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(n) / n
    return np.meshgrid(x, x, indexing="ij")  # X varies along axis 0 (x), Y along axis 1 (y)


def shell_field(n: int) -> np.ndarray:
    """A Taylor-Green vortex plus a tilted mode: all wave vectors have ``|k|^2 = 2``,
    like the FNO forcing, so ``u . grad w`` vanishes identically."""
    X, Y = grid(n)
    return 0.7 * np.cos(2 * np.pi * X) * np.cos(2 * np.pi * Y) + 0.3 * np.sin(2 * np.pi * (X - Y))


def shell_exact(n: int, nu: float, t: float, forced: bool) -> np.ndarray:
    """``w_t = nu Lap w + f`` on the shell: ``w = e^(-lam t) w0 + (1 - e^(-lam t)) f / lam``."""
    lam = 8 * np.pi**2 * nu
    decay = np.exp(-lam * t)
    w = decay * shell_field(n)
    return w + (1 - decay) / lam * fno_forcing(n) if forced else w


def rel_err(w, ref) -> float:
    w, ref = np.asarray(w), np.asarray(ref)
    return float(np.max(np.abs(w - ref)) / np.max(np.abs(ref)))


def grf_batch(n: int, count: int, scale: float = 1.0) -> torch.Tensor:
    fields = [periodic_grf(rng_for(7, i), n, 2, 2.5, 7.0, 7**1.5) for i in range(count)]
    return torch.from_numpy(scale * np.stack(fields))  # [B, n, n]


@pytest.mark.parametrize("forced", [False, True])
@pytest.mark.parametrize("scheme", ["euler", "heun"])
def test_taylor_green_decay(forced, scheme):
    n, nu, t_end = 32, 0.01, 1.0
    f = torch.from_numpy(fno_forcing(n)) if forced else None
    w = navier_stokes_cn(torch.from_numpy(shell_field(n)), f, nu, t_end, 1e-3,
                         record_times=[0.5, 1.0], scheme=scheme)
    assert w.shape == (2, n, n) and w.dtype == torch.float64
    for j, t in enumerate([0.5, 1.0]):
        assert rel_err(w[j], shell_exact(n, nu, t, forced)) < 1e-7


def test_crank_nicolson_is_second_order():
    """Large nu and coarse steps, where the diffusion step's error dominates."""
    n, nu, t_end = 16, 0.05, 0.5  # nu |2 pi k|^2 t_end ~ 2: strong decay
    w0, f = torch.from_numpy(shell_field(n)), torch.from_numpy(fno_forcing(n))
    exact = shell_exact(n, nu, t_end, forced=True)
    dts = np.array([0.05, 0.025, 0.0125, 0.00625])
    errs = np.array([rel_err(navier_stokes_cn(w0, f, nu, t_end, dt)[-1], exact) for dt in dts])
    orders = np.log2(errs[:-1] / errs[1:])
    assert np.all(np.abs(orders - 2) < 0.1), orders


def test_advection_term_matches_analytic():
    """``w = cos(2 pi x) + cos(4 pi y)``: ``psi = cos(2 pi x) / (4 pi^2) + cos(4 pi y) / (16 pi^2)``,
    ``u = psi_y``, ``v = -psi_x`` and ``-u . grad w = 1.5 sin(2 pi x) sin(4 pi y)``; one
    tiny explicit step measures it (and the velocity's sign convention)."""
    n, dt = 32, 1e-6
    X, Y = grid(n)
    w0 = np.cos(2 * np.pi * X) + np.cos(4 * np.pi * Y)
    w1 = navier_stokes_cn(torch.from_numpy(w0), None, 1e-12, dt, dt)[-1].numpy()
    expected = 1.5 * np.sin(2 * np.pi * X) * np.sin(4 * np.pi * Y)
    assert rel_err((w1 - w0) / dt, expected) < 1e-7


def test_nonlinear_orders():
    """A random field at five times the FNO amplitude, so advection matters:
    forward Euler converges at first order, Heun at second."""
    n, nu, t_end = 32, 1e-3, 0.5
    w0, f = grf_batch(n, 2, scale=5.0), torch.from_numpy(fno_forcing(n))
    ref = navier_stokes_cn(w0, f, nu, t_end, 1e-3 / 8, scheme="heun")
    assert rel_err(ref[:, -1], w0) > 0.1  # the field does evolve
    dts = np.array([4e-3, 2e-3, 1e-3])
    for scheme, order in (("euler", 1), ("heun", 2)):
        errs = np.array([rel_err(navier_stokes_cn(w0, f, nu, t_end, dt, scheme=scheme), ref) for dt in dts])
        orders = np.log2(errs[:-1] / errs[1:])
        assert np.all(np.abs(orders - order) < 0.25), (scheme, orders)


def test_mean_conserved_and_batch_independent():
    n, nu = 32, 1e-3
    w0, f = grf_batch(n, 3), torch.from_numpy(fno_forcing(n))
    traj = navier_stokes_cn(w0, f, nu, 1.0, 1e-3, record_every=0.25)  # [B, T, n, n]
    assert traj.shape == (3, 4, n, n)
    assert traj.mean(dim=(-2, -1)).abs().max().item() < 1e-13 * w0.abs().max().item()  # zero, to round-off
    assert torch.all(torch.isfinite(traj))
    for b in range(3):
        single = navier_stokes_cn(w0[b], f, nu, 1.0, 1e-3, record_every=0.25)
        assert rel_err(single, traj[b]) < 1e-13


def test_fourier_upsample_is_exact_for_band_limited_fields():
    X, Y = grid(16)
    Xf, Yf = grid(48)
    g = lambda x, y: np.sin(2 * np.pi * (3 * x - 2 * y)) + np.cos(2 * np.pi * 5 * y) * np.cos(2 * np.pi * x)
    np.testing.assert_allclose(fourier_upsample(g(X, Y), 48), g(Xf, Yf), atol=1e-13)


# ---------------------------------------------------------------- problem
SMALL = dict(resolution=16, solve_resolution=32, t_end=2.0, dt=1e-3)


def test_problem_generate_shapes_and_determinism():
    p = problems.create("navier_stokes", **SMALL)
    np.testing.assert_allclose(p.output_times(), [1.0, 2.0])
    assert p.input_shape() == (1, 16, 16) and p.output_shape() == (2, 1, 16, 16)
    x, y = p.generate([0, 1], seed=0)
    assert x.shape == (2, 1, 16, 16) and y.shape == (2, 2, 1, 16, 16)
    assert x.dtype == np.float64 and y.dtype == np.float64
    assert np.all(np.isfinite(y))
    x2, y2 = p.generate([0, 1], seed=0)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    # the stored input is the strided fine initial field, as sample_inputs draws it
    assert np.array_equal(x[1], p.sample_inputs(rng_for(0, 1)))
    # alone, sample 1 is integrated in a batch of one: equal up to FFT round-off
    x1, y1 = p.generate([1], seed=0)
    assert np.array_equal(x1[0], x[1])
    assert rel_err(y1[0], y[1]) < 1e-13
    assert "crank-nicolson" in p.solver_name and "section 5.3" in p.reference


def test_problem_aligned_chunks_are_bitwise_reproducible():
    p = problems.create("navier_stokes", resolution=16, solve_resolution=16, t_end=0.2,
                        record_every=0.1, dt=1e-2)
    assert p.chunk_size == 8
    _, y_all = p.generate(range(16), seed=3)
    _, y_second = p.generate(range(8, 16), seed=3)
    assert np.array_equal(y_all[8:], y_second)
    # with solve_resolution == resolution, solve_batch reproduces generate exactly in exact arithmetic
    x, y = p.generate(range(8), seed=3)
    assert rel_err(p.solve_batch(x), y) < 1e-13


def test_problem_subsamples_the_fine_solution():
    p = problems.create("navier_stokes", **SMALL)
    x, y = p.generate([4], seed=1)
    # from the stored input alone (interpolated onto the solver grid), the fine
    # modes it lacks are missing: close, not equal
    approx = p.solve(x[0])
    assert approx.shape == y[0].shape and 1e-6 < rel_err(approx, y[0]) < 0.05
    fine = problems.create("navier_stokes", **{**SMALL, "resolution": 32})
    xf, yf = fine.generate([4], seed=1)
    assert np.array_equal(xf[0, :, ::2, ::2], x[0])
    assert rel_err(yf[0, :, :, ::2, ::2], y[0]) < 1e-13


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nu": -1e-3},
        {"dt": 0.0},
        {"resolution": 8},
        {"resolution": 24, "solve_resolution": 32},  # not a multiple
        {"resolution": 64, "solve_resolution": 32},  # coarser than stored
        {"t_end": 2.5},  # not a multiple of record_every
        {"t_end": 0.5},
        {"dt": 2.0},
        {"scheme": "rk4"},
        {"device": "cuda"},
    ],
)
def test_invalid_params(kwargs):
    with pytest.raises(ParameterError):
        problems.create("navier_stokes", **kwargs)
