"""Neural ODEs (oplab.models.node) and the solver-heuristic regularisers (oplab.layers.ode): the
Dormand-Prince loop against the exact solution of a linear system and against torchdiffeq, the
error and stiffness estimates by hand on one step, evaluation counting, the penalty's way into the
loss, and short training runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from oplab import models
from oplab.errors import ParameterError
from oplab.layers.ode import dopri5
from oplab.models.node import NeuralODE

pytestmark = pytest.mark.usefixtures("one_thread")

torchdiffeq = pytest.importorskip("torchdiffeq")


def grid(*sizes: int) -> tuple[torch.Tensor, ...]:
    return tuple((torch.arange(n) + 0.5) / n for n in sizes)


# a damped rotation: normal, both eigenvalues -0.5 +- 2i of modulus sqrt(4.25)
A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)


def linear(t, y):
    return y @ A.T


# ---------------------------------------------------------------- (a) the solver


@pytest.mark.parametrize("rtol", [1e-4, 1e-7, 1e-10])
def test_dopri5_solves_a_linear_system_to_the_tolerance(rtol):
    y0 = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = y0 @ torch.from_numpy(scipy.linalg.expm(2.0 * A.numpy())).T
    y, info = dopri5(linear, y0, 0.0, 2.0, rtol=rtol, atol=rtol / 10)
    error = float((y - exact).abs().max())
    assert error < 20 * rtol, (rtol, error)
    assert info["nfe"] == 2 + 6 * int(info["steps"] + info["rejected"]) == int(info["nfe_per_sample"])
    assert info["times"][0][-1] == 2.0
    # the stiffness estimate of a normal linear system is |lambda| on every step: R_S = |lambda| T
    assert abs(float(info["stiffness"]) - 2.0 * math.sqrt(4.25)) < 1e-6
    # the same pair and controller as torchdiffeq's dopri5: about the same evaluations
    calls = []
    torchdiffeq.odeint(lambda t, y: calls.append(1) or linear(t, y), y0, torch.tensor([0.0, 2.0], dtype=torch.float64),
                       rtol=rtol, atol=rtol / 10, method="dopri5")
    assert abs(info["nfe"] - len(calls)) <= 0.2 * len(calls), (info["nfe"], len(calls))


def test_one_step_estimates_by_hand():
    """y' = lam y, one step of size h: the fifth-order solution is the method's stability polynomial
    R(z) = 1 + z + ... + z^5/120 + z^6/600; the error estimate is y5 - y4 with Dormand and Prince's
    fourth-order weights; the stiffness estimate is h |lam| exactly."""
    lam, h, y0v, rtol, atol = -1.3, 0.4, 0.7, 1e-2, 1e-3
    lam_t = torch.tensor(lam, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([y0v], dtype=torch.float64)
    y, info = dopri5(lambda t, y: lam_t * y, y0, 0.0, h, rtol=rtol, atol=atol, first_step=h)
    assert info["steps"] == 1 and info["rejected"] == 0 and info["nfe"] == 7
    z = lam * h
    assert abs(float(y.detach()) - y0v * sum(z**j / math.factorial(j) for j in range(6)) - y0v * z**6 / 600) < 1e-14
    # stages by hand (Dormand & Prince 1980)
    a = [[], [1 / 5], [3 / 40, 9 / 40], [44 / 45, -56 / 15, 32 / 9],
         [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
         [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656]]
    k = []
    for row in a:
        k.append(lam * (y0v + h * sum(w * kj for w, kj in zip(row, k))))
    b5 = [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84]
    y5 = y0v + h * sum(w * kj for w, kj in zip(b5, k))
    k.append(lam * y5)
    b4 = [5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40]
    y4 = y0v + h * sum(w * kj for w, kj in zip(b4, k))
    E = abs(y5 - y4) / (atol + rtol * max(abs(y0v), abs(y5)))
    assert abs(info["error"].item() - E * h) < 1e-9 * E * h  # y5 - y4 cancels digits
    assert abs(info["stiffness"].item() - abs(lam) * h) < 1e-12
    # both are differentiable (here in lam, the step fixed): against central differences
    info["error"].backward()
    grad = float(lam_t.grad)

    def r_e(value):
        return float(dopri5(lambda t, y: value * y, y0, 0.0, h, rtol=rtol, atol=atol, first_step=h)[1]["error"])

    eps = 1e-6
    assert abs(grad - (r_e(lam + eps) - r_e(lam - eps)) / (2 * eps)) < 1e-6 * abs(grad)


def test_the_error_estimate_is_fifth_order_and_the_local_step_is_the_sampled_ones():
    """E h over one step of y' = y^2 falls like h^6 (E ~ h^5): halving h divides it by about 64. With
    local_time the solver lands there and reports that step's terms."""
    f = lambda t, y: y.square()  # noqa: E731
    y0 = torch.tensor([0.5], dtype=torch.float64)
    terms = [float(dopri5(f, y0, 0.0, h, 1e-3, 1e-3, first_step=h)[1]["error"]) for h in (0.2, 0.1, 0.05)]
    ratios = [terms[0] / terms[1], terms[1] / terms[2]]
    assert all(50 < r < 70 for r in ratios), ratios
    _, info = dopri5(linear, torch.ones(1, 2, dtype=torch.float64), 0.0, 1.0, 1e-6, 1e-7, local_time=0.3)
    times = info["times"][0]
    assert 0.3 in times and info["local_error"] is not None
    i = times.index(0.3)
    h = times[i + 1] - 0.3
    assert abs(float(info["local_stiffness"]) - h * math.sqrt(4.25)) < 1e-8
    assert 0 < float(info["local_error"]) <= h


def test_too_many_steps_is_an_error():
    with pytest.raises(RuntimeError, match="too stiff"):
        dopri5(lambda t, y: -1e4 * y, torch.ones(3), 0.0, 1.0, 1e-6, 1e-8, max_steps=50)


# ---------------------------------------------------------------- (b) the model


def test_per_sample_steps_answer_as_the_samples_one_by_one():
    """Samples of very different stiffness: each gets its own steps, its answer and statistics are
    the ones it gets alone, and the shared calls are those of the hardest sample."""
    rates = torch.tensor([0.5, 8.0, 2.0], dtype=torch.float64)
    y0 = torch.tensor([[1.0, 0.5], [0.3, -1.0], [2.0, 1.0]], dtype=torch.float64)

    def f(t, y):  # y' = rate (y rotated), per sample
        return (rates[:y.shape[0], None] if y.shape[0] == 3 else f.rate) * (y @ A.T)

    y, info = dopri5(f, y0, 0.0, 1.0, 1e-6, 1e-8, per_sample=True)
    for i in range(3):
        f.rate = rates[i]
        alone, one = dopri5(f, y0[i:i + 1], 0.0, 1.0, 1e-6, 1e-8)
        assert torch.allclose(y[i], alone[0], rtol=1e-12, atol=1e-14)
        assert int(info["steps"][i]) == int(one["steps"]) and one["nfe"] == int(info["nfe_per_sample"][i])
        assert abs(float(info["error_per_sample"][i]) - float(one["error"])) < 1e-12
        exact = y0[i] @ torch.from_numpy(scipy.linalg.expm(float(rates[i]) * A.numpy())).T
        assert float((y[i] - exact).abs().max()) < 1e-4
    assert info["nfe"] == int(info["nfe_per_sample"].max())
    assert int(info["steps"][1]) > 3 * int(info["steps"][0])  # the stiff sample takes many more
    # the batch as one system (the RMS error over all samples): the easy samples take the stiff one's pace
    _, joint = dopri5(f, y0, 0.0, 1.0, 1e-6, 1e-8)
    assert int(joint["steps"]) > 2 * int(info["steps"][[0, 2]].max())


@pytest.mark.parametrize("sizes", [(20,), (9, 8)])
def test_shapes_config_round_trip_and_evaluation_counts(sizes):
    torch.manual_seed(0)
    model = models.create("neural_ode", in_channels=2, out_channels=3, dim=len(sizes), width=8)
    assert isinstance(model, NeuralODE) and model.kind == "grid" and model.reference
    x, coords = torch.randn(3, 2, *sizes), grid(*sizes)
    y = model(x, coords)
    assert y.shape == (3, 3, *sizes) and torch.isfinite(y).all()
    stats = model.solver_stats
    # the first call, the starting step's, 6 per step attempt of the sample that needs the most
    assert model.nfe == stats["nfe"] > 2 and (model.nfe - 2) % 6 == 0 and stats["nfe_per_sample"] <= model.nfe
    assert model.regularization is None  # no regulariser
    config = json.loads(json.dumps(models.config_of(model)))
    twin = models.from_config(config)
    twin.load_state_dict(model.state_dict())
    model.eval()
    twin.eval()
    with torch.no_grad():
        y = model(x, coords)
        assert torch.equal(twin(x, coords), y)
        one = torch.cat([model(x[i:i + 1], coords) for i in range(3)])
        assert (one - y).norm() / y.norm() < 1e-5
    tight = models.from_config(config | {"rtol": 1e-6, "atol": 1e-7})
    tight.load_state_dict(model.state_dict())
    with torch.no_grad():
        tight(x, coords)
    assert tight.nfe > model.nfe
    # torchdiffeq's dopri5 (the batch one system): the same answer to the tolerance, its own count
    ref = models.from_config(config | {"solver": "torchdiffeq", "rtol": 1e-7, "atol": 1e-8})
    own = models.from_config(config | {"rtol": 1e-7, "atol": 1e-8})
    for m in (ref, own):
        m.load_state_dict(model.state_dict())
    with torch.no_grad():
        a, b = own(x, coords), ref(x, coords)
    assert (a - b).norm() / b.norm() < 1e-4
    assert ref.nfe == ref.solver_stats["nfe"] and (ref.nfe - 2) % 6 == 0


@pytest.mark.parametrize("reg,local", [("error", False), ("stiffness", False), ("error", True), ("stiffness", True)])
def test_the_penalty_is_set_in_training_and_reaches_every_parameter_of_the_field(reg, local):
    torch.manual_seed(0)
    model = models.create("neural_ode", in_channels=1, out_channels=1, dim=1, width=8, reg=reg, reg_weight=0.5,
                          reg_local=local)
    x, coords = torch.randn(3, 1, 16), grid(16)
    model(x, coords)
    penalty = model.regularization
    assert penalty is not None and penalty.ndim == 0 and penalty.item() > 0
    key = ("local_" if local else "") + reg
    assert model.solver_stats["steps"] > 0
    if not local:  # the global penalty is reg_weight times the reported sum
        assert abs(penalty.item() - 0.5 * model.solver_stats[reg]) < 1e-5 * penalty.item(), key
    penalty.backward()
    for name, p in model.field.named_parameters():
        assert p.grad is not None and torch.any(p.grad != 0), name
    model.eval()
    with torch.no_grad():
        model(x, coords)
    assert model.regularization is None


def test_adjoint_training_matches_direct_backpropagation():
    torch.manual_seed(0)
    direct = models.create("neural_ode", in_channels=1, out_channels=1, dim=1, width=6, rtol=1e-7, atol=1e-8,
                           solver="torchdiffeq")
    adjoint = models.create("neural_ode", **(direct.config | {"adjoint": True}))
    adjoint.load_state_dict(direct.state_dict())
    x, coords = torch.randn(2, 1, 12), grid(12)
    for m in (direct, adjoint):
        m(x, coords).square().mean().backward()
    for (n, p), q in zip(direct.named_parameters(), adjoint.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-6), n


def test_arguments_are_checked():
    for bad in (dict(reg="jacobian"), dict(reg="error", adjoint=True, solver="torchdiffeq"), dict(adjoint=True), dict(rtol=0.0), dict(reg_weight=-1.0),
                dict(kernel_size=4), dict(dim=4), dict(reg_local=1), dict(solver="scipy"), dict(padding="reflect")):
        with pytest.raises(ParameterError):
            models.create("neural_ode", in_channels=1, out_channels=1, **bad)
    assert NeuralODE.defaults((16, 16), (True, True)) == {"dim": 2, "padding": "circular"}
    assert NeuralODE.defaults((16,), (False,)) == {"dim": 1, "padding": "zeros"}


# ---------------------------------------------------------------- (c) learning


def _smoothing_data(n: int, size: int = 32, seed: int = 0):
    """x: random periodic fields; y: the heat semigroup exp(0.002 d^2/dx^2) applied to them."""
    g = torch.Generator().manual_seed(seed)
    k = torch.fft.rfftfreq(size, 1 / size)
    coef = torch.randn(n, 1, k.numel(), dtype=torch.complex64, generator=g) / (1 + k) ** 1.5
    x = torch.fft.irfft(coef, n=size)
    y = torch.fft.irfft(coef * torch.exp(-0.002 * (2 * math.pi * k) ** 2), n=size)
    return x / x.std(), y / x.std()


@pytest.mark.parametrize("reg", ["none", "error"])
def test_a_short_training_run_learns_a_smoothing_operator(reg):
    torch.manual_seed(0)
    x, y = _smoothing_data(64)
    coords = grid(32)
    model = models.create("neural_ode", in_channels=1, out_channels=1, dim=1, width=8, padding="circular",
                          positional=False, reg=reg, reg_weight=0.01)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(120):
        idx = torch.randint(0, 64, (16,), generator=torch.Generator().manual_seed(step))
        loss = (model(x[idx], coords) - y[idx]).square().mean() / y[idx].square().mean()
        losses.append(loss.item())
        if model.regularization is not None:
            loss = loss + model.regularization
        opt.zero_grad()
        loss.backward()
        opt.step()
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    print(reg, "relative squared error, first and last 5 steps:", first, last, "nfe", model.nfe)
    assert last < first / 5


def test_the_training_loop_adds_the_models_penalty(tmp_path):
    """``oplab train`` optimises data loss + ``model.regularization``: with the error regulariser the
    recorded training loss exceeds the plain run's by the penalty (same seed, same first batch)."""
    from oplab import problems
    from oplab.data.generation import generate
    from oplab.train import config as tc
    from oplab.train import run

    data = tmp_path / "darcy.h5"
    generate(problems.create("darcy", resolution=16), 12, data, seed=0)
    losses = {}
    for reg in ("none", "error"):
        raw = {"data": {"train": str(data), "n_train": 8, "n_test": 4, "n_val": 0},
               "model": {"name": "neural_ode", "width": 4, "reg": reg, "reg_weight": 10.0},
               "train": {"epochs": 1, "batch_size": 8, "lr": 1e-12, "eval_every": 1, "plot_samples": 0},
               "out": str(tmp_path / reg)}
        losses[reg] = run(tc.from_dict(raw), log=lambda s: None)["history"][0]["train_loss"]
    assert losses["error"] > losses["none"] * 1.01, losses
