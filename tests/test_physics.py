"""Physics residual losses: zero (to discretisation error) on the reference solver's solution,
clearly non-zero on a perturbed field, differentiable, resolution-consistent; training from the
residual alone lowers the error against the solver."""

import numpy as np
import pytest
import torch

from oplab import problems
from oplab.losses.physics import elliptic_operator, residual_loss
from oplab.solvers import fd


def batch(name, n, count=3, **params):
    p = problems.create(name, n, **params)
    x, y = p.generate(range(count), seed=0)
    return p, torch.from_numpy(x), torch.from_numpy(y)


def test_torch_operator_equals_the_sparse_matrix():
    rng = np.random.default_rng(0)
    a, u, s = rng.uniform(1, 3, (9, 9)), rng.normal(size=(9, 9)), rng.normal(size=(9, 9))
    u[0], u[-1], u[:, 0], u[:, -1] = 0, 0, 0, 0
    A = fd.diffusion_matrix(a, s)
    ref = (A @ u[1:-1, 1:-1].ravel()).reshape(7, 7)
    got = elliptic_operator(torch.from_numpy(u)[None], torch.from_numpy(a)[None], torch.from_numpy(s)[None])[0]
    assert np.allclose(got.numpy(), ref, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("name,params", [("darcy", {}), ("poisson", {}), ("poisson", {"variable": True}),
                                         ("helmholtz", {})])
def test_elliptic_residual_vanishes_on_the_solver_solution(name, params):
    p, x, y = batch(name, 33, **params)
    x, y = x.double(), y.double()
    exact = residual_loss(p, y, x).item()
    assert exact < 1e-18, exact
    rng = torch.Generator().manual_seed(0)
    bumped = y + 0.01 * y.abs().max() * torch.randn(y.shape, generator=rng, dtype=y.dtype)
    assert residual_loss(p, bumped, x).item() > 1e-4
    if name != "helmholtz":  # zero Dirichlet data: 5% too large everywhere is a 5% residual, squared
        assert residual_loss(p, y * 1.05, x).item() == pytest.approx(0.05**2, rel=1e-6)


def test_laplacian_solve_inverts_the_five_point_laplacian():
    from oplab.losses.physics import laplacian_solve

    r = torch.randn(2, 11, 11, dtype=torch.float64)
    u = torch.zeros(2, 13, 13, dtype=torch.float64)
    u[:, 1:-1, 1:-1] = laplacian_solve(r)
    assert torch.allclose(elliptic_operator(u, torch.ones_like(u)), r, atol=1e-10)


def test_preconditioned_norm_is_about_the_relative_error():
    p, x, y = batch("poisson", 33)
    x, y = x.double(), y.double()
    assert residual_loss(p, y, x, norm="preconditioned").item() < 1e-18
    # Poisson (a = 1): L^-1 A is the identity, so the loss is exactly the squared relative error
    bumped = y + 0.02 * y.abs().max() * torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    bumped[..., 0, :] = bumped[..., -1, :] = bumped[..., :, 0] = bumped[..., :, -1] = 0
    rel = ((bumped - y)[..., 1:-1, 1:-1].square().flatten(1).sum(1) / y[..., 1:-1, 1:-1].square().flatten(1).sum(1))
    assert residual_loss(p, bumped, x, norm="preconditioned").item() == pytest.approx(rel.mean().item(), rel=1e-8)


def test_boundary_term_sees_wrong_boundary_values():
    p, x, y = batch("darcy", 17)
    y = y.double()
    moved = y.clone()
    moved[:, :, 0, :] += 0.1 * y.abs().max()
    assert residual_loss(p, moved, x.double()).item() > 1e-3
    assert residual_loss(p, moved, x.double(), bc_weight=0.0).item() < 1e-18  # the interior ignores it


def test_residual_is_differentiable_and_resolution_consistent():
    p, x, y = batch("darcy", 65)
    u = (1.1 * y.double()).requires_grad_()
    loss = residual_loss(p, u, x.double())
    loss.backward()
    assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
    assert loss.item() == pytest.approx(0.01, rel=1e-6)
    # the same field on a coarser grid means about the same residual: the fine Poisson solution,
    # restricted, nearly solves the coarse discrete problem (smooth data: O(h^2) truncation error)
    pf, xf, yf = batch("poisson", 65)
    pc = problems.create("poisson", 33)
    fine = residual_loss(pf, yf.double(), xf.double()).item()
    restricted = residual_loss(pc, yf[..., ::2, ::2].double(), xf[..., ::2, ::2].double()).item()
    assert fine < 1e-18 and restricted < 1e-3, restricted


def test_burgers_trajectory_residual():
    p, x, y = batch("burgers", 128, count=2, trajectory=True, n_times=50)
    pred = y[:, :, 0].double()
    exact = residual_loss(p, pred, x.double()).item()
    assert exact < 1e-4, exact
    # the time step's error: half the step, a quarter of the (squared, relative) residual
    p2, x2, y2 = batch("burgers", 128, count=2, trajectory=True, n_times=100)
    finer = residual_loss(p2, y2[:, :, 0].double(), x2.double()).item()
    assert 3.0 < exact / finer < 5.5, (exact, finer)
    wrong = pred.roll(1, dims=1)  # the trajectory shifted by one time step
    assert residual_loss(p, wrong, x.double()).item() > 100 * exact
    one_shot = problems.create("burgers", 64)
    with pytest.raises(Exception, match="trajectory"):
        residual_loss(one_shot, pred[:, :1, :64], x[..., :64].double())
    with pytest.raises(Exception, match="no physics residual"):
        residual_loss(problems.create("antiderivative", 20), pred, x)


def test_physics_only_training_never_reads_solutions_and_learns(tmp_path):
    import h5py

    from oplab.data.generation import generate
    from oplab.train import config as tc
    from oplab.train import run

    path = tmp_path / "darcy.h5"
    generate(problems.create("darcy", 17), 40, path, seed=0)
    with h5py.File(path, "r+") as f:  # the training solutions are unusable: only the residual can teach
        f["outputs"][:32] = np.nan
    raw = {"data": {"train": str(path), "n_train": 32, "n_test": 8},
           "model": {"name": "fno", "modes": [6, 6], "width": 16, "n_layers": 3, "padding": 0.0},
           "train": {"epochs": 60, "batch_size": 8, "lr": 5e-3, "eval_every": 20, "physics_only": True,
                     "device": "cpu"}, "out": str(tmp_path / "run")}
    hist = run(tc.from_dict(raw), log=lambda s: None)["history"]
    first, last = hist[0]["train_loss"], hist[-1]["train_loss"]
    assert last < 0.1 * first, (first, last)
    # learned the solution from the equation alone (measured 0.27; the plain residual norm stalls near 0.9)
    assert hist[-1]["test"]["17"]["l2"] < 0.4, hist[-1]["test"]
    raw["train"]["physics_only"] = False
    raw["out"] = str(tmp_path / "run2")
    with pytest.raises(Exception, match="NaN"):  # supervised training would need them
        run(tc.from_dict(raw), log=lambda s: None)


@pytest.mark.parametrize("name,params", [("poisson", {}), ("darcy", {"coefficient": "lognormal"}),
                                         ("darcy", {}), ("helmholtz", {})])
def test_weak_form_residual_converges_on_the_solver_solution(name, params):
    """DGNO's weak form uses only first derivatives: on the finite-difference solution it is not
    zero but falls with the grid (smooth data: about h^4 in this squared, relative form)."""
    values = []
    for n in (33, 65):
        p, x, y = batch(name, n, **params)
        values.append(residual_loss(p, y.double(), x.double(), norm="weak").item())
    assert values[1] < values[0] / 8, values
    p, x, y = batch(name, 65, **params)
    bumped = y.double() + 0.01 * y.abs().max() * torch.randn(y.shape, generator=torch.Generator().manual_seed(0),
                                                             dtype=torch.float64)
    assert residual_loss(p, bumped, x.double(), norm="weak").item() > 10 * values[1]
    u = y.double().requires_grad_()
    residual_loss(p, u, x.double(), norm="weak").backward()
    assert torch.isfinite(u.grad).all()


def test_navier_stokes_trajectory_residual():
    def make(record):
        return batch("navier_stokes", 32, count=2, solve_resolution=32, t_end=0.2, record_every=record,
                     dt=1e-3, scheme="heun", nu=1e-3)

    p, x, y = make(0.02)
    pred = y[:, :, 0].double()
    exact = residual_loss(p, pred, x.double()).item()
    assert exact < 1e-3, exact
    assert residual_loss(p, pred.roll(1, dims=1), x.double()).item() > 100 * exact
    p2, x2, y2 = make(0.01)
    finer = residual_loss(p2, y2[:, :, 0].double(), x2.double()).item()
    assert finer < exact / 3, (exact, finer)
