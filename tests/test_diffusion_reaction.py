"""The diffusion-reaction problem (DeepONet, Lu et al. 2021): second-order
convergence on a manufactured solution, linear (k = 0) references from
eigenfunction expansions, sampling determinism, validation."""

from __future__ import annotations

import numpy as np
import pytest

from oplab.errors import ParameterError
from oplab.problems import create, rng_for
from oplab.problems.diffusion_reaction import DiffusionReaction, solve_fine

PI = np.pi


# ------------------------------------------------------------ manufactured
# s(x, t) = A g(x) sin(w t), g(x) = sin(pi x) exp(x): zero at t = 0, x = 0, 1.
# The forcing f = s_t - D s_xx - k s^2 is time-dependent; D and k are larger
# than the benchmark's so that diffusion and the nonlinearity both matter.
A, W, D_MS, K_MS = 2.0, 2.0, 0.05, 0.5


def _g(x):
    return np.sin(PI * x) * np.exp(x)


def _g_xx(x):
    return np.exp(x) * ((1.0 - PI**2) * np.sin(PI * x) + 2.0 * PI * np.cos(PI * x))


def _s_exact(t, x):
    return A * _g(x) * np.sin(W * t)


def _forcing(t, x):
    return (
        A * W * _g(x) * np.cos(W * t)
        - D_MS * A * _g_xx(x) * np.sin(W * t)
        - K_MS * _s_exact(t, x) ** 2
    )


def test_manufactured_solution_second_order():
    grids = [20, 40, 80, 160]  # cells = steps, so h and dt halve together
    errors = []
    for n in grids:
        s = solve_fine(_forcing, n, n, diffusion=D_MS, reaction=K_MS, t_end=1.0)
        assert s.shape == (n + 1, n + 1)
        x = np.linspace(0.0, 1.0, n + 1)
        t = np.linspace(0.0, 1.0, n + 1)
        errors.append(np.max(np.abs(s - _s_exact(t[:, None], x[None, :]))))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 1.9) & (orders < 2.1)), (orders, errors)
    assert errors[-1] < 2e-3  # max |s| is about 3.5


def test_solve_fine_steady_array_source_and_validation():
    # an array source equals the same source given as a callable
    n = 16
    x = np.linspace(0.0, 1.0, n + 1)
    src = np.cos(3 * x)
    a = solve_fine(src, n, 10, 0.02, 0.3, 0.5)
    b = solve_fine(lambda t, xi: np.cos(3 * xi), n, 10, 0.02, 0.3, 0.5)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)
    assert np.all(a[0] == 0.0) and np.all(a[:, [0, -1]] == 0.0)
    with pytest.raises(ValueError):
        solve_fine(src[:-1], n, 10)
    with pytest.raises(ValueError):
        solve_fine(src, 1, 10)


# ---------------------------------------------------------- linear (k = 0)
def _heat_series(t, x, diffusion, n_max):
    """``s_t = D s_xx + 1``, zero initial/boundary values: the sine series
    ``sum_{n odd} b_n (1 - exp(-D (n pi)^2 t)) / (D (n pi)^2) sin(n pi x)``
    with ``b_n = 4 / (n pi)``; ``[T, X]``."""
    n = np.arange(1, n_max + 1, 2)[:, None, None]
    lam = diffusion * (n * PI) ** 2
    terms = 4.0 / (n * PI) * (1.0 - np.exp(-lam * t[None, :, None])) / lam
    return np.sum(terms * np.sin(n * PI * x[None, None, :]), axis=0)


def test_k0_eigenfunction_source_matches_exact():
    # u = sin(pi x): s = sin(pi x) (1 - exp(-D pi^2 t)) / (D pi^2)
    nx, nt, d = 41, 21, 0.01
    p = create("diffusion_reaction", resolution=nx, n_times=nt, k=0.0, D=d)
    x, t = np.linspace(0, 1, nx), np.linspace(0, 1, nt)
    s = p.solve(np.sin(PI * x)[None])
    assert s.shape == (1, nt, nx)
    exact = np.sin(PI * x)[None, :] * (1.0 - np.exp(-d * PI**2 * t[:, None])) / (d * PI**2)
    assert np.max(np.abs(s[0] - exact)) / np.max(np.abs(exact)) < 2e-6


def test_k0_constant_source_converges_at_second_order():
    # u = 1 does not vanish at x = 0, 1 (corner layers like the GP sources);
    # reference: the sine series, truncated with a relative tail below 1e-6.
    nx, nt, d = 41, 21, 0.01
    x, t = np.linspace(0, 1, nx), np.linspace(0, 1, nt)
    exact = _heat_series(t, x, d, n_max=4001)
    errors = []
    for factor in (2, 4, 8):
        p = create("diffusion_reaction", resolution=nx, n_times=nt, k=0.0, D=d, solve_factor=factor)
        s = p.solve(np.ones((1, nx)))[0]
        errors.append(np.max(np.abs(s - exact)) / np.max(np.abs(exact)))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(orders > 1.8), (orders, errors)
    assert errors[-1] < 5e-5


def test_gp_source_self_convergence():
    # the benchmark setting: order ~2 in the refinement factor, and the
    # default factor within ~1e-5 of a much finer solve
    p_ref = DiffusionReaction(solve_factor=16)
    u = p_ref.sample_inputs(rng_for(0, 0))
    ref = p_ref.solve(u)
    errors = {}
    for factor in (2, 4, 8):
        s = DiffusionReaction(solve_factor=factor).solve(u)
        errors[factor] = np.max(np.abs(s - ref)) / np.max(np.abs(ref))
    # Richardson: e(f) - e(16) ~ C f^-2 (1 - (f/16)^2)
    c = [errors[f] / (f**-2 - 16.0**-2) for f in (2, 4, 8)]
    assert max(c) / min(c) < 1.3, errors
    assert errors[8] < 1e-5, errors


# ------------------------------------------------------------- the problem
def test_generate_shapes_and_determinism():
    p = create("diffusion_reaction", resolution=21, n_times=11, solve_factor=2)
    assert p.input_shape() == (1, 21)
    assert p.output_shape() == (1, 11, 21)
    assert [a.name for a in p.output_axes()] == ["t", "x"]
    assert p.describe()["domain"] == {"t": [0.0, 1.0], "x": [0.0, 1.0]}

    x, y = p.generate([0, 1, 2], seed=11)
    assert x.shape == (3, 1, 21) and y.shape == (3, 1, 11, 21)
    assert x.dtype == np.float64 and y.dtype == np.float64
    assert np.all(y[:, :, 0] == 0.0)  # s(x, 0) = 0
    assert np.all(y[..., [0, -1]] == 0.0)  # s(0, t) = s(1, t) = 0
    # early on s ~ t u(x) away from the walls
    t1 = p.output_axes()[0].coords()[1]
    scale = t1 * np.max(np.abs(x))
    assert np.max(np.abs(y[:, 0, 1, 5:-5] - t1 * x[:, 0, 5:-5])) < 0.05 * scale

    x1, y1 = p.generate([2], seed=11)
    np.testing.assert_array_equal(x1[0], x[2])
    np.testing.assert_array_equal(y1[0], y[2])
    x_again, y_again = p.generate([0, 1, 2], seed=11)
    np.testing.assert_array_equal(x_again, x)
    np.testing.assert_array_equal(y_again, y)
    x_other, y_other = p.generate([0, 1, 2], seed=12)
    assert not np.any(np.all(x_other == x, axis=(1, 2)))
    assert not np.array_equal(y_other, y)


def test_defaults_follow_the_paper():
    p = create("diffusion_reaction")
    assert p.resolution == 100 and p.output_shape() == (1, 100, 100)
    assert p.params["D"] == 0.01 and p.params["k"] == 0.01
    assert p.params["length_scale"] == 0.2 and p.params["t_end"] == 1.0
    q = create("diffusion_reaction", resolution=50, n_times=26, t_end=2.0)
    assert q.output_shape() == (1, 26, 50)
    assert q.output_axes()[0].hi == 2.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"D": 0.0},
        {"D": -0.01},
        {"k": float("nan")},
        {"k": "strong"},
        {"length_scale": 0.0},
        {"variance": -1.0},
        {"t_end": 0.0},
        {"n_times": 1},
        {"n_times": -3},
        {"solve_factor": 0},
        {"solve_factor": 1.5},
        {"reaction": 0.1},
        {"resolution": 2},
    ],
)
def test_invalid_parameters(kwargs):
    with pytest.raises(ParameterError):
        create("diffusion_reaction", **kwargs)


def test_negative_k_is_allowed_and_blow_up_is_reported():
    p = create("diffusion_reaction", resolution=21, k=-0.5, solve_factor=2)
    assert np.all(np.isfinite(p.solve(np.ones((1, 21)))))
    # s_t = k s^2 + 1 alone blows up at t = pi / (2 sqrt(k)) ~ 0.22 for k = 50
    q = create("diffusion_reaction", resolution=21, k=50.0, t_end=5.0, solve_factor=1)
    with pytest.raises(ParameterError, match="blows up"):
        q.solve(np.ones((1, 21)))
    with pytest.raises(FloatingPointError):
        solve_fine(np.ones(41), 40, 20, 0.01, 50.0, 5.0)
