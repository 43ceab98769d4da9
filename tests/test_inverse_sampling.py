"""Posterior sampling and plug-and-play ADMM for oplab.inverse, on linear-Gaussian problems whose
answers are known in closed form: Langevin samples against the exact Gaussian posterior, MALA's
correction of the unadjusted chain's bias, and PnP-ADMM with a prox of a quadratic against the
closed-form MAP estimate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oplab.errors import ParameterError
from oplab.inverse import Observations, invert
from oplab.inverse.lpn import LPN, pnp, pnp_admm
from oplab.inverse.priors import Smooth
from oplab.inverse.sampling import langevin
from oplab.problems.base import Axis

N = 8
AXES = [Axis("x", N, 0.0, 1.0)]


def _blur(n: int) -> np.ndarray:
    b = np.exp(-((np.arange(n)[:, None] - np.arange(n)[None, :]) ** 2) / 2.0)
    return b / b.sum(1, keepdims=True)


def _linear_problem(sigma: float, seed: int = 0):
    """A blur ``L`` on 8 nodes, every node observed with noise ``sigma``: forward, observations, L, data."""
    rng = np.random.default_rng(seed)
    L = _blur(N)
    data = L @ rng.standard_normal(N) + sigma * rng.standard_normal(N)
    lt = torch.from_numpy(L)

    def forward(a):
        return (a.flatten(1) @ lt.to(a.dtype).T).view(a.shape)

    obs = Observations(np.linspace(0, 1, N)[:, None], data[:, None], np.full((N, 1), sigma), [0])
    return forward, obs, L, data


def test_langevin_samples_match_the_exact_gaussian_posterior(one_thread):
    """Blur forward map, smoothness prior ``w mean |grad a|^2`` (Gaussian): the posterior is
    N(m, P^-1) with ``P = L^T L / s^2 + 2 w D^T D / (n - 1)``. MALA chains started from the MAP
    estimate (invert's own) reproduce the posterior's marginal variances, and chains started far
    away (5 posterior standard deviations) its mean, both within the Monte-Carlo error estimated
    from the spread between independent chains."""
    sigma, w = 0.3, 0.05
    forward, obs, L, data = _linear_problem(sigma)
    h = 1.0 / (N - 1)
    d1 = np.diff(np.eye(N), axis=0) / h
    precision = L.T @ L / sigma**2 + 2 * w * d1.T @ d1 / (N - 1)
    cov = np.linalg.inv(precision)
    mean = cov @ L.T @ data / sigma**2
    std = np.sqrt(np.diag(cov))
    prior = Smooth((1, N), (h,), weight=w)
    chains, per_chain = 64, 60
    got = invert(forward, AXES, obs, prior, restarts=1, steps=200, lr=1.0, optimizer="lbfgs", dtype=torch.float64,
                 sampler="langevin", samples=chains * per_chain, chains=chains, burn_in=100, thin=3,
                 langevin_step=1e-3)
    assert np.abs(got["estimate"].numpy()[0] - mean).max() < 1e-6 * np.abs(mean).max()  # MAP = posterior mean
    s = got["samples"].numpy()[:, 0].reshape(chains, per_chain, N)
    assert 0.45 < got["sampling"]["acceptance"] < 0.75  # the burn-in adapted the step towards 0.574
    var_chain = s.var(1, ddof=1)  # [chains, N]
    var_se = var_chain.std(0, ddof=1) / np.sqrt(chains)
    assert np.all(np.abs(var_chain.mean(0) - std**2) < 4 * var_se + 1e-12), (var_chain.mean(0), std**2, var_se)
    assert np.all(var_se < 0.1 * std**2)  # the check is sharp enough to see a 20-40% error in the variance
    assert np.allclose(got["spread"].numpy()[0], s.reshape(-1, N).std(0, ddof=1))
    assert np.allclose(got["posterior_mean"].numpy()[0], s.reshape(-1, N).mean(0))

    # the mean, from a start 5 standard deviations off (the burn-in has to get there)
    def objective(a):
        r = ((a.flatten(1) @ torch.from_numpy(L).T) - torch.from_numpy(data)) / sigma
        return 0.5 * r.square().sum(1) + prior.penalty(a)

    start = torch.from_numpy(mean + 5 * std)[None, None]
    chain = langevin(objective, start, samples=chains * per_chain, chains=chains, burn_in=150, thin=3, seed=1)
    x = chain["params"].numpy()[:, 0].reshape(chains, per_chain, N)
    mean_se = x.mean(1).std(0, ddof=1) / np.sqrt(chains)
    assert np.all(np.abs(x.reshape(-1, N).mean(0) - mean) < 4 * mean_se), (x.reshape(-1, N).mean(0), mean, mean_se)
    assert np.all(mean_se < 0.1 * std)


def test_mala_removes_the_bias_of_the_unadjusted_chain(one_thread):
    """A standard normal target at a large fixed step ``h = 0.5``: ULA's stationary variance is
    ``1 / (1 - h / 2) = 4/3`` (Roberts & Tweedie 1996), MALA's is exactly 1."""
    chains = 256

    def objective(p):
        return 0.5 * p.square().flatten(1).sum(1)

    start = torch.zeros(1, 1, dtype=torch.float64)
    common = dict(samples=chains * 100, chains=chains, burn_in=50, thin=2, step=0.5, adapt=False, seed=3)
    ula = langevin(objective, start, sampler="ula", **common)["params"].numpy().ravel()
    mala = langevin(objective, start, sampler="mala", **common)
    assert ula.var() == pytest.approx(4 / 3, rel=0.06)
    assert mala["params"].numpy().var() == pytest.approx(1.0, rel=0.06)
    assert 0.5 < mala["acceptance"] < 1.0


def test_sampling_errors_are_one_line():
    forward, obs, _, _ = _linear_problem(0.3)
    prior = Smooth((1, N), (1 / (N - 1),), weight=0.1)
    with pytest.raises(ParameterError, match="sampler must be multistart, langevin"):
        invert(forward, AXES, obs, prior, restarts=1, steps=2, sampler="hmc")
    with pytest.raises(ParameterError, match="langevin: samples must be a positive int"):
        langevin(lambda p: p.square().sum(1), torch.zeros(1, 2), samples=0)
    with pytest.raises(ParameterError, match="langevin: step must be a positive number"):
        langevin(lambda p: p.square().sum(1), torch.zeros(1, 2), step=-1.0)


def _quadratic_prox_lpn(c: float, mean: float, std: float) -> LPN:
    """An LPN whose ICNN part is switched off: ``psi(y) = alpha/2 |y|^2``, ``f(y) = alpha y`` with
    ``alpha = 1 / (1 + c)``: exactly the prox of ``R(x) = c/2 |x|^2`` (normalised units)."""
    net = LPN(1, 1, hidden=4, layers=2, kernel_size=3, alpha=1.0 / (1.0 + c), mean=mean, std=std, sigma=0.5)
    with torch.no_grad():
        net.out.zero_()
        net.linear.weight.zero_()
    return net.double()


def test_pnp_admm_converges_to_the_closed_form_map(one_thread):
    """Blur forward, the prox of ``R(x) = c/2 |x|^2`` in normalised units ``x = (a - 2) / 3``: ADMM's
    fixed point minimises ``misfit + rho R``, i.e. solves
    ``(L^T L / s^2 + rho c / 9 I) a = L^T d / s^2 + 2 rho c / 9`` -- for a small rho (data-dominated,
    where proximal gradient is unstable at the equivalent step 1 / rho) and a 10x larger one."""
    sigma, c = 0.05, 1.0
    forward, obs, L, data = _linear_problem(sigma, seed=1)
    lpn = _quadratic_prox_lpn(c, mean=2.0, std=3.0)
    lip = np.linalg.norm(L.T @ L, 2) * 9.0 / sigma**2  # the misfit's gradient's Lipschitz constant, normalised units
    for rho in (0.05 * lip, 0.5 * lip):
        k = rho * c / 9.0
        exact = np.linalg.solve(L.T @ L / sigma**2 + k * np.eye(N), L.T @ data / sigma**2 + 2.0 * k)
        got = pnp_admm(forward, AXES, obs, lpn, steps=30, rho=rho, inner_steps=10, dtype=torch.float64)
        assert np.abs(got["estimate"].numpy()[0] - exact).max() < 1e-6 * np.abs(exact).max(), rho
        assert got["residual"][-1] < 1e-7
    # the equivalent proximal-gradient step 1 / rho at the small rho is far beyond 2 / L: PnP-PG diverges
    with pytest.raises(ParameterError, match="diverged"):
        pnp(forward, AXES, obs, lpn, steps=200, step_size=1.0 / (0.05 * lip), dtype=torch.float64)
    with pytest.raises(ParameterError, match="rho must be a positive number"):
        pnp_admm(forward, AXES, obs, lpn, rho=0.0)


def test_invert_command_with_langevin_samples_and_pnp_admm(darcy17, tmp_path, capsys, one_thread):
    """``oplab invert --sampler langevin`` writes the posterior std as spread.npy and the mean as
    posterior_mean.npy (the MAP stays estimate.npy); ``--prior lpn --pnp admm`` runs ADMM with the
    given rho; bad combinations exit 2 with one line."""
    import json

    from oplab.cli import main
    from oplab.data import open as open_data
    from oplab.inverse import observe, save_observations
    from oplab.inverse.lpn import save_lpn

    run = tmp_path / "run"
    assert main(["train", "--data", str(darcy17), "--model", "fno", "--set", "model.modes=[4, 4]", "--set",
                 "model.width=8", "--set", "train.plot_samples=0", "--epochs", "1", "--n-train", "16", "--n-test", "4",
                 "--out", str(run)]) == 0
    _, y = open_data(darcy17).arrays([47])
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, (30, 2))
    axes = [Axis("x", 17, 0, 1), Axis("y", 17, 0, 1)]
    clean = observe(torch.from_numpy(y).double(), torch.from_numpy(pts), axes)[0].numpy()
    noise = 0.05 * np.abs(clean).max()
    save_observations(tmp_path / "obs.npz", Observations(pts, clean, np.full(clean.shape, noise), [0]))
    obs = ["--obs", str(tmp_path / "obs.npz")]
    out = tmp_path / "mala"
    assert main(["invert", str(run), *obs, "--out", str(out), "--steps", "20", "--lr", "0.1", "--restarts", "2",
                 "--sampler", "langevin", "--samples", "12", "--burn-in", "10", "--thin", "2"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["sampler"] == "langevin" and result["sampling"]["sampler"] == "mala"
    assert result["sampling"]["samples"] == 12 and 0.0 <= result["sampling"]["acceptance"] <= 1.0
    spread, mean = np.load(out / "spread.npy"), np.load(out / "posterior_mean.npy")
    assert spread.shape == mean.shape == (1, 17, 17) and (spread >= 0).all() and spread.max() > 0
    assert 3.0 <= mean.min() and mean.max() <= 12.0  # latent-prior samples stay between the two phases
    net = LPN(1, 2, hidden=4, layers=2, mean=7.5, std=4.5, sigma=0.5)
    save_lpn(net, tmp_path / "lpn")
    lpn = ["--prior", "lpn", "--lpn", str(tmp_path / "lpn")]
    assert main(["invert", str(run), *obs, "--out", str(tmp_path / "admm"), *lpn, "--pnp", "admm", "--rho", "2",
                 "--steps", "3"]) == 0
    result = json.loads((tmp_path / "admm" / "result.json").read_text())
    assert result["pnp"] == "admm" and result["rho"] == 2.0 and np.isfinite(result["misfit"])
    capsys.readouterr()
    for extra, message in ((["--pnp", "newton"], "--pnp must be pg or admm"),
                           (["--pnp", "admm", "--step-size", "0.1"], "--pnp admm takes --rho"),
                           (["--sampler", "langevin"], "the lpn prior is a proximal step only")):
        assert main(["invert", str(run), *obs, "--out", str(tmp_path / "bad"), *lpn, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["invert", str(run), *obs, "--out", str(tmp_path / "bad"), "--sampler", "hmc"]) == 2
    assert "--sampler must be multistart, langevin or ula" in capsys.readouterr().err


def test_enkf_over_a_torch_forecast_is_the_enkf_over_the_same_numpy_model():
    """``torch_forecast`` (the EnKF over a trained predictor) runs the same filter as a numpy model:
    a linear torch step and its numpy twin give the same analysis means to float32 precision (same
    draws and seed); the numpy EnKF itself is checked against the Kalman filter in test_assimilation."""
    from oplab.inverse.assimilation import enkf, torch_forecast

    rng = np.random.default_rng(0)
    d, sensors = 8, [1, 4, 6]
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    m = q @ np.diag(np.linspace(0.6, 0.95, d)) @ q.T
    ens = rng.standard_normal((200, 1, d))
    ys = rng.standard_normal((5, 3))
    layer = torch.nn.Linear(d, d, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(m))
    ref = enkf(lambda x: x @ m.T, ens, ys, sensors, 0.1, inflation=1.05, seed=2)
    got = enkf(torch_forecast(layer), ens, ys, sensors, 0.1, inflation=1.05, seed=2)
    assert np.abs(got["mean"] - ref["mean"]).max() < 1e-5 * np.abs(ref["mean"]).max()
    assert got["mean"].dtype == np.float64 and got["spread"] == pytest.approx(ref["spread"], rel=1e-5)
