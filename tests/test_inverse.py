"""Inverse problems (oplab.inverse): answers known in closed form, the adjoint's gradient, the
latent prior's phases, and one-line errors for bad observations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oplab.errors import DataFileError, ParameterError
from oplab.inverse import Observations, invert, load_observations, observe, save_observations
from oplab.inverse.adjoint import DarcySolve
from oplab.inverse.priors import Latent, Smooth, TotalVariation
from oplab.problems.base import Axis

AXES = [Axis("x", 12, 0.0, 1.0), Axis("y", 12, 0.0, 1.0)]


def _grid_points(n=12):
    x = np.linspace(0, 1, n)
    return np.stack(np.meshgrid(x, x, indexing="ij"), -1).reshape(-1, 2)


def test_observe_interpolates_linear_fields_exactly():
    x = torch.linspace(0, 1, 12, dtype=torch.float64)
    u = (3 * x[:, None] - 2 * x[None, :] + 1)[None, None]
    pts = torch.rand(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(observe(u, pts, AXES)[0, :, 0], 3 * pts[:, 0] - 2 * pts[:, 1] + 1, atol=1e-12)


def test_observe_on_periodic_axes_reads_the_nodes_and_wraps_between_the_last_and_the_first():
    """A periodic axis's nodes are lo + (hi - lo) j / n (no right end): reading u at its own nodes gives
    u, and halfway between the last node and hi lies halfway to u[0] (the read was stretched over n - 1
    intervals before)."""
    axes = [Axis("x", 8, 0.0, 2.0, periodic=True)]
    u = torch.arange(8, dtype=torch.float64)[None, None]  # [1, 1, 8]
    nodes = torch.as_tensor(axes[0].coords())[:, None]
    assert torch.allclose(observe(u, nodes, axes)[0, :, 0], u[0, 0], atol=1e-12)
    assert torch.allclose(observe(u, torch.tensor([[1.875]], dtype=torch.float64), axes)[0, 0, 0],
                          torch.tensor(3.5, dtype=torch.float64))  # between node 7 (value 7) and node 0 (0)
    axes2 = [Axis("x", 6, 0.0, 1.0, periodic=True), Axis("y", 5, 0.0, 1.0)]
    x = torch.as_tensor(axes2[0].coords()); y = torch.as_tensor(axes2[1].coords())
    v = (torch.cos(2 * torch.pi * x)[:, None] * (1 + y[None, :]))[None, None]
    pts = torch.stack(torch.meshgrid(x, y, indexing="ij"), -1).reshape(-1, 2)
    assert torch.allclose(observe(v, pts, axes2)[0, :, 0], v.flatten(), atol=1e-12)


def test_linear_forward_with_smoothness_prior_matches_the_normal_equations():
    """Forward = a fixed linear map (a blur), every node observed with noise sigma, Tikhonov prior
    ``w mean |grad a|^2``: the minimiser solves ``(L^T L / s^2 + 2 w D^T D) a = L^T d / s^2`` (D: the differences over their count);
    L-BFGS through invert() finds it to 1e-5 (relative)."""
    rng = np.random.default_rng(0)
    n, sigma, w = 12, 0.05, 0.02
    m = n * n
    blur = np.exp(-((np.arange(n)[:, None] - np.arange(n)[None, :]) ** 2) / 4.0)
    blur /= blur.sum(1, keepdims=True)
    L = np.kron(blur, blur)  # [m, m]: blur along both axes
    truth = rng.standard_normal(m)
    data = L @ truth + sigma * rng.standard_normal(m)
    lt = torch.from_numpy(L)

    def forward(a):
        return (a.flatten(1) @ lt.T).view(a.shape)

    obs = Observations(_grid_points(n), data[:, None], np.full((m, 1), sigma), [0])
    prior = Smooth((1, n, n), (1 / (n - 1), 1 / (n - 1)), weight=w)
    got = invert(forward, AXES, obs, prior, restarts=1, steps=500, lr=1.0, optimizer="lbfgs", dtype=torch.float64)
    h = 1 / (n - 1)
    d1 = np.diff(np.eye(n), axis=0) / h  # [n-1, n]
    dx, dy = np.kron(d1, np.eye(n)), np.kron(np.eye(n), d1)  # forward differences along x and y
    reg = dx.T @ dx / dx.shape[0] + dy.T @ dy / dy.shape[0]  # mean over the (n-1) n differences each
    exact = np.linalg.solve(L.T @ L / sigma**2 + 2 * w * reg, L.T @ data / sigma**2)
    assert np.abs(got["estimate"].numpy().ravel() - exact).max() < 1e-5 * np.abs(exact).max()


def test_identity_forward_recovers_a_two_phase_field_with_the_latent_prior():
    """The truth drawn from the latent prior itself, 150 noisy point observations of it (identity
    forward): the MAP estimate puts at least 95% of the nodes in the right phase and explains the
    data to their noise, TV-regularised pixels do better than chance, and restarts give a spread."""
    n = 24
    prior = Latent(n, bounds=(3.0, 12.0), modes=8)
    truth = prior.field(prior.init(1, torch.Generator().manual_seed(5)))[0]
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 1, (150, 2))
    axes = [Axis("x", n, 0, 1), Axis("y", n, 0, 1)]
    clean = observe(truth[None].double(), torch.from_numpy(pts), axes)[0].numpy()
    obs = Observations(pts, clean + 0.1 * rng.standard_normal(clean.shape), np.full(clean.shape, 0.1), [0])
    got = invert(lambda a: a, axes, obs, prior, restarts=3, steps=1000, lr=0.1, seed=0)
    phase_ok = ((got["estimate"] > 7.5) == (truth > 7.5)).float().mean()
    assert phase_ok > 0.95, float(phase_ok)  # 0.99 seen
    assert got["misfit"] < 2.0  # chi^2 per value: about 1 when the data are explained to their noise (0.74 seen)
    assert got["spread"].shape == (1, n, n) and float(got["spread"].max()) > 1.0  # the restarts differ
    tv = TotalVariation((1, n, n), (1 / (n - 1),) * 2, weight=1.0, bounds=(3.0, 12.0))
    got_tv = invert(lambda a: a, axes, obs, tv, restarts=1, steps=300, lr=0.1)
    assert ((got_tv["estimate"] > 7.5) == (truth > 7.5)).float().mean() > 0.75


def test_darcy_adjoint_gradient_matches_finite_differences():
    a = (1.0 + torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert torch.autograd.gradcheck(DarcySolve(2.0), (a.requires_grad_(True),), eps=1e-6, atol=1e-8)


def test_observation_files_and_bad_input(tmp_path):
    obs = Observations(_grid_points(3), np.ones((9, 1)), np.full((9, 1), 0.1), [0])
    back = load_observations(save_observations(tmp_path / "o.npz", obs))
    assert np.array_equal(back.points, obs.points) and back.channels == [0]
    bad = Observations(np.array([[0.5, 1.5]]), np.ones((1, 1)), np.ones((1, 1)), [0])
    with pytest.raises(ParameterError, match="point 0 has y = 1.5, outside the domain"):
        bad.check(AXES, 1)
    with pytest.raises(ParameterError, match="noise must be > 0"):
        Observations(obs.points, obs.values, np.zeros((9, 1)), [0]).check(AXES, 1)
    with pytest.raises(ParameterError, match=r"channels \[2\] do not exist"):
        Observations(obs.points, obs.values, obs.noise, [2]).check(AXES, 1)
    with pytest.raises(ParameterError, match=r"points have shape \[\], expected \[K, 2\]"):
        Observations(np.array(0.5), obs.values, obs.noise, [0]).check(AXES, 1)
    np.savez(tmp_path / "text.npz", points=obs.points, values=np.array(["a"] * 9), noise=0.1)
    with pytest.raises(DataFileError, match="array 'values' holds <U1 values, expected numbers"):
        load_observations(tmp_path / "text.npz")


def test_invert_command_on_a_trained_darcy_operator(darcy17, tmp_path, capsys):
    """``oplab invert`` end to end: a small FNO trained on Darcy, observations of one test sample's
    solution at 60 sensors; the estimate explains them better than the prior's mean field does, and
    bad observation files exit 2 with one line."""
    import json

    from oplab.cli import main
    from oplab.data import open as open_data

    run = tmp_path / "run"
    assert main(["train", "--data", str(darcy17), "--model", "fno", "--set", "model.modes=[6, 6]", "--set",
                 "model.width=16", "--set", "train.lr=0.01", "--set", "train.batch_size=8", "--epochs", "40",
                 "--n-train", "40", "--n-test", "8", "--out", str(run)]) == 0
    x, y = open_data(darcy17).arrays([47])
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, (60, 2))
    axes = [Axis("x", 17, 0, 1), Axis("y", 17, 0, 1)]
    clean = observe(torch.from_numpy(y).double(), torch.from_numpy(pts), axes)[0].numpy()
    noise = 0.02 * np.abs(clean).max()
    save_observations(tmp_path / "obs.npz", Observations(pts, clean + noise * rng.standard_normal(clean.shape),
                                                         np.full(clean.shape, noise), [0]))
    out = tmp_path / "inv"
    assert main(["invert", str(run), "--obs", str(tmp_path / "obs.npz"), "--out", str(out), "--steps", "300",
                 "--lr", "0.1"]) == 0
    result = json.loads((out / "result.json").read_text())
    est = np.load(out / "estimate.npy")
    assert est.shape == (1, 17, 17) and (out / "inversion.png").exists() and np.load(out / "spread.npy").shape == est.shape
    assert 3.0 <= est.min() and est.max() <= 12.0  # the two phases of the set
    phase = ((est > 7.5) == (x > 7.5)).mean()
    assert phase > 0.75, phase  # 0.87 seen, with a model trained for seconds (chance: about 0.5)
    assert result["misfit"] < 3.0  # chi^2 per value (1.25 seen); the zero field's is 618
    capsys.readouterr()
    save_observations(tmp_path / "bad.npz", Observations(pts + 1.0, clean, np.full(clean.shape, noise), [0]))
    assert main(["invert", str(run), "--obs", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "inv2")]) == 2
    err = capsys.readouterr().err
    assert "outside the domain" in err and len(err.strip().splitlines()) == 1
    assert main(["invert", str(run), "--obs", str(tmp_path / "obs.npz"), "--out", str(out)]) == 2  # no overwrite
    assert main(["invert", str(run), "--obs", str(tmp_path / "obs.npz"), "--out", str(out / "result.json")]) == 2
    # a learned proximal network as the prior (plug-and-play proximal gradient)
    from oplab.inverse.lpn import save_lpn, train_lpn

    fields, _ = open_data(darcy17).arrays(list(range(40)), outputs=False)
    net, _ = train_lpn(fields, 0.5, hidden=8, layers=2, pretrain_steps=200, steps=200, batch_size=8)
    save_lpn(net, tmp_path / "lpn")
    assert main(["invert", str(run), "--obs", str(tmp_path / "obs.npz"), "--out", str(tmp_path / "inv3"), "--prior",
                 "lpn", "--lpn", str(tmp_path / "lpn"), "--step-size", "1e-5", "--steps", "40"]) == 0
    result = json.loads((tmp_path / "inv3" / "result.json").read_text())
    assert result["prior"] == "lpn" and result["step_size"] == 1e-5 and np.isfinite(result["misfit"])
    assert result["misfit"] < 0.5 * float(((clean / noise) ** 2).mean())  # 143 seen; the zero field's: 618
    capsys.readouterr()
    assert main(["invert", str(run), "--obs", str(tmp_path / "obs.npz"), "--out", str(tmp_path / "inv4"), "--prior",
                 "lpn"]) == 2
    assert "--lpn DIR" in capsys.readouterr().err
