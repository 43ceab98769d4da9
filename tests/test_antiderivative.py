"""The antiderivative problem (DeepONet, Lu et al. 2021): exactness on cubics,
fourth-order convergence, sampling determinism, GP statistics, validation."""

from __future__ import annotations

import numpy as np
import pytest

from oplab.errors import ParameterError
from oplab.problems import create, rng_for
from oplab.problems.antiderivative import Antiderivative


@pytest.mark.parametrize("m", [4, 7, 100])
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_exact_on_cubics(m, degree):
    p = Antiderivative(resolution=m)
    x = np.linspace(0.0, 1.0, m)
    v = (2.0 * x - 0.3) ** degree  # a shifted monomial: all lower terms present
    exact = ((2.0 * x - 0.3) ** (degree + 1) - (-0.3) ** (degree + 1)) / (2.0 * (degree + 1))
    u = p.solve(v[None])
    assert u.shape == (1, m)
    assert np.max(np.abs(u[0] - exact)) < 1e-14


def test_fourth_order_on_smooth_input():
    # v = exp(x): u = exp(x) - 1. (cos(w x) shows a pre-asymptotic O(h^5)
    # regime on coarse grids; exp is in the asymptotic O(h^4) regime from m = 41.)
    ms = [41, 81, 161, 321]
    errors = []
    for m in ms:
        x = np.linspace(0.0, 1.0, m)
        u = Antiderivative(resolution=m).solve(np.exp(x)[None])[0]
        errors.append(np.max(np.abs(u - (np.exp(x) - 1.0))))
    h = 1.0 / (np.array(ms) - 1.0)
    order = np.polyfit(np.log(h), np.log(errors), 1)[0]
    pairwise = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert 3.7 < order < 4.3, (order, errors)
    assert np.all(pairwise > 3.7), pairwise
    assert errors[-1] < 1e-12


def test_generate_shapes_and_determinism():
    p = create("antiderivative", resolution=50)
    x, y = p.generate([0, 1, 2], seed=7)
    assert x.shape == (3, 1, 50) and y.shape == (3, 1, 50)
    assert x.dtype == np.float64 and y.dtype == np.float64
    assert p.input_shape() == (1, 50) and p.output_shape() == (1, 50)
    assert np.all(y[:, 0, 0] == 0.0)  # u(0) = 0

    x1, y1 = p.generate([1], seed=7)  # sample 1 alone
    np.testing.assert_array_equal(x1[0], x[1])
    np.testing.assert_array_equal(y1[0], y[1])

    x_again, y_again = p.generate([0, 1, 2], seed=7)
    np.testing.assert_array_equal(x_again, x)
    np.testing.assert_array_equal(y_again, y)

    x_other, _ = p.generate([0, 1, 2], seed=8)
    assert not np.any(np.all(x_other == x, axis=(1, 2)))
    assert not np.array_equal(x[0], x[1])


@pytest.mark.parametrize("length_scale, variance", [(0.2, 1.0), (0.35, 2.5)])
def test_gp_covariance_matches_rbf_kernel(length_scale, variance):
    m, n_samples = 11, 4000
    p = Antiderivative(resolution=m, length_scale=length_scale, variance=variance)
    v = np.stack([p.sample_inputs(rng_for(3, i))[0] for i in range(n_samples)])  # [N, m]
    x = np.linspace(0.0, 1.0, m)
    kernel = variance * np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / length_scale**2)

    # zero-mean GP: cov_hat(a, b) = mean(v_a v_b) is unbiased with variance
    # (K_ab^2 + K_aa K_bb) / N (Isserlis); allow 5 standard deviations.
    pairs = [(0, 0), (5, 5), (0, 1), (0, 2), (3, 5), (2, 8), (0, 10)]
    for a, b in pairs:
        estimate = np.mean(v[:, a] * v[:, b])
        sd = np.sqrt((kernel[a, b] ** 2 + kernel[a, a] * kernel[b, b]) / n_samples)
        assert abs(estimate - kernel[a, b]) < 5 * sd, (a, b, estimate, kernel[a, b], sd)
    # the mean: standard error sqrt(K_aa / N)
    assert np.all(np.abs(v.mean(axis=0)) < 5 * np.sqrt(variance / n_samples))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"length_scale": 0.0},
        {"length_scale": -0.2},
        {"length_scale": float("nan")},
        {"variance": 0.0},
        {"variance": float("inf")},
        {"variance": "big"},
        {"sigma": 1.0},
        {"resolution": 3},
        {"resolution": 10.5},
    ],
)
def test_invalid_parameters(kwargs):
    with pytest.raises(ParameterError):
        create("antiderivative", **kwargs)


def test_describe_and_shape_check():
    p = create("antiderivative")
    assert p.resolution == 100
    info = p.describe()
    assert info["input_channels"] == ["v"] and info["output_channels"] == ["u"]
    assert info["domain"] == {"x": [0.0, 1.0]}
    with pytest.raises(ValueError):
        p.solve(np.zeros((1, 99)))
