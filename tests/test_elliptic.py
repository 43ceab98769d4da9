"""Darcy, Poisson and Helmholtz: manufactured solutions, measured convergence order,
the linear solvers against each other, and the problems' contracts."""

import numpy as np
import pytest

from oplab import problems
from oplab.errors import ParameterError
from oplab.solvers import fd, linear

GRIDS = (17, 33, 65, 129)


def assert_second_order(errors):
    """Observed orders between successive grids (h halves each time): all above
    1.9, and the finest pair within 0.05 of 2 (the coarsest may be pre-asymptotic)."""
    e = np.asarray(errors)
    orders = np.log2(e[:-1] / e[1:])
    assert np.all(orders > 1.9) and abs(orders[-1] - 2.0) < 0.05, orders


def _mesh(n):
    x = np.linspace(0.0, 1.0, n)
    return np.meshgrid(x, x, indexing="ij")


def _darcy_case(n):
    """u = sin(pi x) sin(pi y) exp(x), a = 1 + x^2 y + 0.5 sin(2 pi y): f = -div(a grad u)."""
    X, Y = _mesh(n)
    pi = np.pi
    u = np.sin(pi * X) * np.sin(pi * Y) * np.exp(X)
    ux = (pi * np.cos(pi * X) + np.sin(pi * X)) * np.sin(pi * Y) * np.exp(X)
    uy = pi * np.sin(pi * X) * np.cos(pi * Y) * np.exp(X)
    uxx = (2 * pi * np.cos(pi * X) + (1 - pi**2) * np.sin(pi * X)) * np.sin(pi * Y) * np.exp(X)
    uyy = -(pi**2) * u
    a = 1 + X**2 * Y + 0.5 * np.sin(2 * pi * Y)
    ax, ay = 2 * X * Y, X**2 + pi * np.cos(2 * pi * Y)
    f = -(ax * ux + ay * uy + a * (uxx + uyy))
    return a, f, u


@pytest.mark.parametrize("method", ["direct", "amg"])
def test_variable_coefficient_second_order(method):
    errors = []
    for n in GRIDS:
        a, f, u = _darcy_case(n)
        uh = fd.solve_dirichlet(a, f, method=method, tol=1e-12)
        errors.append(np.abs(uh - u).max())
    assert errors[-1] < 1e-3
    assert_second_order(errors)


def test_nonzero_dirichlet_data_second_order():
    """u = exp(x) cos(2y) + x y^3 with its own boundary values, a = 2 + cos(x y)."""
    errors = []
    for n in GRIDS:
        X, Y = _mesh(n)
        u = np.exp(X) * np.cos(2 * Y) + X * Y**3
        ux, uy = np.exp(X) * np.cos(2 * Y) + Y**3, -2 * np.exp(X) * np.sin(2 * Y) + 3 * X * Y**2
        lap = np.exp(X) * np.cos(2 * Y) - 4 * np.exp(X) * np.cos(2 * Y) + 6 * X * Y
        a = 2 + np.cos(X * Y)
        ax, ay = -Y * np.sin(X * Y), -X * np.sin(X * Y)
        f = -(ax * ux + ay * uy + a * lap)
        uh = fd.solve_dirichlet(a, f, g=u)
        assert np.array_equal(uh[0], u[0]) and np.array_equal(uh[:, -1], u[:, -1])
        errors.append(np.abs(uh - u).max())
    assert_second_order(errors)


def test_helmholtz_operator_second_order():
    """The Helmholtz operator -Lap - k(x)^2 with a variable wave number and Dirichlet
    data, against u = sin(4x + 1) cos(3y) and its manufactured source."""
    errors = []
    for n in GRIDS:
        X, Y = _mesh(n)
        k = 8.0 + 2.0 * X * Y
        u = np.sin(4 * X + 1) * np.cos(3 * Y)
        f = -(-25 * u) - k**2 * u  # -Lap u - k^2 u
        uh = fd.solve_dirichlet(np.ones_like(X), f, g=u, shift=-(k**2))
        errors.append(np.abs(uh - u).max())
    assert_second_order(errors)


def test_constant_coefficient_matrix_is_the_five_point_laplacian():
    n = 6
    A = fd.diffusion_matrix(np.ones((n, n))).toarray()
    m = n - 2
    T = 2 * np.eye(m) - np.eye(m, k=1) - np.eye(m, k=-1)
    lap = (np.kron(T, np.eye(m)) + np.kron(np.eye(m), T)) * (n - 1) ** 2
    assert np.allclose(A, lap)
    assert np.allclose(A, A.T)


@pytest.mark.parametrize("method", ["direct-colamd", "amg"])
def test_linear_solvers_agree_on_darcy(method):
    p = problems.create("darcy", resolution=65)
    a = p.sample_inputs(np.random.default_rng(3))[0]
    A = fd.diffusion_matrix(a)
    b = fd.boundary_rhs(a, np.ones_like(a), None)
    ref = linear.solve(A, b, "direct")
    x = linear.solve(A, b, method, tol=1e-11)
    assert np.abs(x - ref).max() <= 1e-8 * np.abs(ref).max()
    assert np.linalg.norm(A @ ref - b) <= 1e-10 * np.linalg.norm(b)


def test_amg_falls_back_to_direct_when_it_cannot_converge():
    a = problems.create("darcy", resolution=33).sample_inputs(np.random.default_rng(0))[0]
    A, b = fd.diffusion_matrix(a), fd.boundary_rhs(a, np.ones_like(a), None)
    assert np.array_equal(linear.solve(A, b, "amg", tol=1e-30), linear.solve(A, b, "direct"))


def test_unknown_linear_solver():
    with pytest.raises(ValueError, match="unknown linear solver"):
        linear.solve(fd.diffusion_matrix(np.ones((5, 5))), np.ones(9), "lu")


# ------------------------------------------------------------------ problems
def test_darcy_recipe():
    p = problems.create("darcy", resolution=85)
    x, y = p.generate([0, 1, 2], seed=7)
    assert x.shape == y.shape == (3, 1, 85, 85)
    assert set(np.unique(x)) <= {3.0, 12.0} and len(np.unique(x)) == 2
    assert np.all(y[:, :, 0, :] == 0) and np.all(y[:, :, :, -1] == 0)  # zero Dirichlet data
    assert np.all(y[:, :, 1:-1, 1:-1] > 0)  # maximum principle for f = 1 > 0
    # determinism: sample 2 alone equals sample 2 in the batch; another seed differs
    x2, y2 = p.generate([2], seed=7)
    assert np.array_equal(x2[0], x[2]) and np.array_equal(y2[0], y[2])
    assert not np.array_equal(p.generate([2], seed=8)[0][0], x[2])
    # the original script's contrast is a parameter
    q = problems.create("darcy", resolution=33, contrast_low=4.0)
    assert set(np.unique(q.generate([0], 0)[0])) == {4.0, 12.0}


def test_darcy_lognormal_variant_is_smooth_and_positive():
    p = problems.create("darcy", resolution=65, coefficient="lognormal")
    x, y = p.generate([0], seed=0)
    assert np.all(x > 0) and len(np.unique(x)) > 1000
    assert np.all(y[0, 0, 1:-1, 1:-1] > 0)


def test_coarse_darcy_is_stride_of_fine_input():
    """Same seed, same KL modes: the 33-point field is the 65-point field strided by 2."""
    fine = problems.create("darcy", resolution=65, modes=20).sample_inputs(np.random.default_rng(1))
    coarse = problems.create("darcy", resolution=33, modes=20).sample_inputs(np.random.default_rng(1))
    assert np.array_equal(fine[:, ::2, ::2], coarse)


def test_poisson_and_helmholtz_contracts():
    p = problems.create("poisson", resolution=33)
    x, y = p.generate([0, 1], seed=0)
    assert x.shape == y.shape == (2, 1, 33, 33)
    # the solution satisfies the discrete equation
    A = fd.diffusion_matrix(np.ones((33, 33)))
    assert np.allclose(A @ y[0, 0, 1:-1, 1:-1].ravel(), x[0, 0, 1:-1, 1:-1].ravel())
    pv = problems.create("poisson", resolution=17, variable=True)
    assert pv.input_channels == ("f", "a") and pv.generate([0], 0)[0].shape == (1, 2, 17, 17)
    h = problems.create("helmholtz", resolution=33)
    x, y = h.generate([0, 1], seed=0)
    assert np.all(x > 0)
    assert np.allclose(y[:, 0, 0, :], np.sin(np.pi * np.linspace(0, 1, 33)))  # incoming wave
    assert np.abs(y).max() < 10  # the defaults stay away from resonance


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("darcy", {"contrast_low": -3.0}, "contrast_low"),
        ("darcy", {"coefficient": "smooth"}, "coefficient"),
        ("darcy", {"solver": "magic"}, "solver"),
        ("darcy", {"viscosity": 1.0}, "unknown parameter"),
        ("poisson", {"tau": 0.0}, "tau"),
        ("helmholtz", {"wavenumber": float("nan")}, "finite"),
    ],
)
def test_invalid_parameters(name, kw, match):
    with pytest.raises(ParameterError, match=match):
        problems.create(name, resolution=17, **kw)


def test_resolution_too_small_and_unknown_problem():
    with pytest.raises(ParameterError, match="too small"):
        problems.create("darcy", resolution=3)
    with pytest.raises(ParameterError, match="did you mean 'darcy'"):
        problems.get("darcey")
