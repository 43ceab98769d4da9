"""ANIE (attentional neural integral equations, oplab.models.nie): the Picard solver against the
closed form of a linear Fredholm equation of the second kind, shapes, config round trip, gradients,
contractivity at init, pooled keys, early stopping, and a short training run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from oplab import models
from oplab.errors import ParameterError
from oplab.models.nie import ANIE, picard

pytestmark = pytest.mark.usefixtures("one_thread")


def grid(*sizes: int) -> tuple[torch.Tensor, ...]:
    return tuple((torch.arange(n) + 0.5) / n for n in sizes)


# ---------------------------------------------------------------- (a) the fixed point


def _fredholm(n: int, lam: float, iterations: int = 200, tol: float = 0.0, info=None):
    """y(x) = f(x) + lam int_0^1 x s y(s) ds, f = 1 + x^2 + sin(3x), midpoint rule on n cells.
    Returns (the Picard solution, the exact solution at the nodes)."""
    x = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    f = (1 + x**2 + torch.sin(3 * x))[None]  # [1, n]
    kernel = x[:, None] * x[None, :]  # k(x, s) = x s
    y = picard(f, lambda y: lam * (y * w) @ kernel.T, iterations, tol, info)
    # int_0^1 s f(s) ds = 1/2 + 1/4 + (sin 3 - 3 cos 3) / 9
    moment = 0.5 + 0.25 + (np.sin(3) - 3 * np.cos(3)) / 9
    c = lam * moment / (1 - lam / 3)
    return y[0], f[0] + c * x


def test_picard_solves_a_linear_fredholm_equation_to_the_quadrature_accuracy():
    errors = []
    for n in (50, 100, 200):
        y, exact = _fredholm(n, lam=0.9)
        errors.append(float((y - exact).abs().max()))
    print("max errors, n = 50, 100, 200:", errors)
    assert errors[-1] < 1e-5
    # the midpoint rule is second order: the error is the quadrature's, not the solver's
    assert 3.5 < errors[0] / errors[1] < 4.5 and 3.5 < errors[1] / errors[2] < 4.5


def test_picard_stops_at_the_tolerance_and_converges_geometrically():
    info = {}
    y_tol, exact = _fredholm(200, lam=0.9, iterations=500, tol=1e-12, info=info)
    # contraction factor lam * int s^2 = 0.3: about 23 iterations to 1e-12
    assert 15 <= info["iterations"] <= 30, info
    y_all, _ = _fredholm(200, lam=0.9, iterations=200)
    assert float((y_tol - y_all).abs().max()) < 1e-10


def test_gradients_backpropagate_through_the_iterations():
    """d mean(y) / d lam against the closed form: mean(y) = mean(f) + c mean(x), c = lam A / (1 - lam / 3)."""
    n = 400
    lam = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    x = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    f = (1 + x**2)[None]
    y = picard(f, lambda y: lam * ((y * x).mean(dim=1, keepdim=True) * x), 80)
    y.mean().backward()
    a = 0.5 + 0.25  # int s (1 + s^2) ds
    expected = 0.5 * a / (1 - 0.9 / 3) ** 2
    assert abs(lam.grad.item() - expected) < 1e-4 * expected


# ---------------------------------------------------------------- (b) the model


@pytest.mark.parametrize("sizes", [(24,), (12, 10), (6, 5, 4)])
def test_shapes_config_round_trip_and_gradients(sizes):
    torch.manual_seed(0)
    model = models.create("anie", in_channels=2, out_channels=3, dim=len(sizes), width=16, n_heads=4)
    assert model.kind == "grid" and model.reference and isinstance(model, ANIE)
    x, coords = torch.randn(2, 2, *sizes), grid(*sizes)
    y = model(x, coords)
    assert y.shape == (2, 3, *sizes) and torch.isfinite(y).all()
    y.square().mean().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not silent, silent
    config = json.loads(json.dumps(models.config_of(model)))
    twin = models.from_config(config)
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(twin(x, coords), model(x, coords))
    # another resolution, the same module
    other = tuple(n + 3 for n in sizes)
    assert model(torch.randn(1, 2, *other), grid(*other)).shape == (1, 3, *other)


def test_the_iteration_is_contractive_at_init():
    torch.manual_seed(0)
    model = models.create("anie", in_channels=1, out_channels=1, dim=2, iterations=8)
    info = {}
    with torch.no_grad():
        updates = []
        for k in range(1, 7):
            model.iterations = k
            model(torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1)), grid(16, 16), info=info)
            updates.append(float(info["update"].max()))
    ratios = [b / a for a, b in zip(updates, updates[1:])]
    print("relative updates:", updates, "ratios:", ratios)
    assert max(ratios) < 0.5


def test_pooled_keys_and_early_stopping():
    torch.manual_seed(0)
    x, coords = torch.randn(3, 1, 20, 20), grid(20, 20)
    full = models.create("anie", in_channels=1, out_channels=1, dim=2)
    pooled = models.create("anie", in_channels=1, out_channels=1, dim=2, points=5)
    pooled.load_state_dict(full.state_dict())  # pooling adds no parameters
    with torch.no_grad():
        a, b = full(x, coords), pooled(x, coords)
        assert a.shape == b.shape and not torch.allclose(a, b)
        # a pooled grid as fine as the grid is no pooling
        same = models.create("anie", in_channels=1, out_channels=1, dim=2, points=20)
        same.load_state_dict(full.state_dict())
        assert torch.equal(same(x, coords), a)
    # early stopping: fewer iterations, the answer within the tolerance's reach, batch = one by one
    early = models.create("anie", in_channels=1, out_channels=1, dim=2, iterations=50, tol=1e-4)
    early.load_state_dict(full.state_dict())
    info = {}
    with torch.no_grad():
        y = early(x, coords, info=info)
        assert info["iterations"] < 50 and bool((info["update"] < 1e-4).all())
        one = torch.cat([early(x[i:i + 1], coords) for i in range(3)])
        assert (y - one).norm() / y.norm() < 1e-5
        ref = models.create("anie", in_channels=1, out_channels=1, dim=2, iterations=50)
        ref.load_state_dict(full.state_dict())
        assert (y - ref(x, coords)).norm() / y.norm() < 1e-3


def test_defaults_pool_large_grids_and_arguments_are_checked():
    assert ANIE.defaults((64, 64), (False, False)) == {"dim": 2, "points": 16}
    assert ANIE.defaults((17, 17), (False, False)) == {"dim": 2, "points": None}
    for bad in (dict(width=30, n_heads=4), dict(tol=-1.0), dict(gain=float("nan")), dict(points=0), dict(dim=4),
                dict(iterations=0), dict(positional=1)):
        with pytest.raises(ParameterError):
            models.create("anie", in_channels=1, out_channels=1, **bad)
    model = models.create("anie", in_channels=1, out_channels=1, dim=2)
    with pytest.raises(ValueError, match="coords"):
        model(torch.randn(1, 1, 8, 8), None)
    free = models.create("anie", in_channels=1, out_channels=1, dim=2, positional=False)
    assert free(torch.randn(1, 1, 8, 8), None).shape == (1, 1, 8, 8)


# ---------------------------------------------------------------- (c) learning


# a short training run: tests/test_models_grid.py::test_short_training_run_learns_a_smoothing_operator[anie]
