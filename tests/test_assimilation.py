"""Data assimilation (oplab.inverse.assimilation): the EnKF against the exact Kalman filter of a
linear Gaussian model, the interpolation of innovations, and a learned observer that beats the
open-loop forecast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oplab.errors import ParameterError
from oplab.inverse.assimilation import (Observer, assimilate, enkf, interpolate, simulate_observations,
                                        train_observer)


def _heat_step(n: int, dt: float, nu: float = 0.02):
    """The exact periodic heat semigroup over ``dt`` (a Fourier multiplier): a linear model."""
    k = np.fft.rfftfreq(n, 1.0 / n)
    mult = np.exp(-nu * (2 * np.pi * k) ** 2 * dt)
    return mult


def test_enkf_converges_to_the_kalman_filter_on_a_linear_gaussian_model():
    """Linear model ``x_{k+1} = M x_k``, prior N(0, P0), observations of 3 of 8 components: with
    4000 members the EnKF's mean is the Kalman filter's (Kalman 1960) within the sampling error."""
    rng = np.random.default_rng(0)
    d, sensors, r = 8, [1, 4, 6], 0.1
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    m = q @ np.diag(np.linspace(0.6, 0.95, d)) @ q.T
    p0 = np.eye(d)
    truth = rng.standard_normal(d)
    h = np.eye(d)[sensors]
    ys = []
    for _ in range(5):
        truth = m @ truth
        ys.append(h @ truth + r * rng.standard_normal(3))
    mean, cov = np.zeros(d), p0
    kf = []
    for y in ys:
        mean, cov = m @ mean, m @ cov @ m.T
        gain = cov @ h.T @ np.linalg.inv(h @ cov @ h.T + r**2 * np.eye(3))
        mean, cov = mean + gain @ (y - h @ mean), (np.eye(d) - gain @ h) @ cov
        kf.append(mean)
    ens = rng.multivariate_normal(np.zeros(d), p0, size=4000)[:, None, :]
    got = enkf(lambda x: x @ m.T, ens, np.array(ys), sensors, r, seed=1)
    assert np.abs(got["mean"][:, 0] - np.array(kf)).max() < 0.05
    assert got["spread"][-1] == pytest.approx(np.sqrt(np.trace(cov) / d), rel=0.1)
    with pytest.raises(ParameterError, match="noise must be > 0"):
        enkf(lambda x: x, ens, np.array(ys), sensors, 0.0)


def test_innovation_interpolation_is_periodic_linear():
    sensors = torch.tensor([2, 6, 13])
    vals = torch.tensor([[1.0, 3.0, -1.0]])
    f = interpolate(vals, sensors, 16)[0]
    assert f[2] == 1.0 and f[6] == 3.0 and f[13] == -1.0
    assert f[4] == pytest.approx(2.0) and f[0] == pytest.approx(-1.0 + 2.0 * 3 / 5)  # across the period
    assert torch.allclose(interpolate(torch.tensor([[5.0]]), torch.tensor([3]), 8), torch.full((1, 8), 5.0))


def test_observer_places_each_innovation_at_its_own_sensor():
    """Sensors given out of order: the innovation's columns follow the given order and land on their
    own nodes (a correction net that returns the interpolated innovation channel)."""

    class Pass(torch.nn.Module):
        def forward(self, x, coords):
            return x[:, 1:2]

    obs = Observer(Pass(), [12, 2, 7], 16)
    forecast = torch.zeros(1, 1, 16)
    innovation = torch.tensor([[12.0, 2.0, 7.0]])  # one value per sensor, in the given order
    corr = obs(forecast, innovation)[0, 0]
    assert corr[12] == 12.0 and corr[2] == 2.0 and corr[7] == 7.0
    est = assimilate(lambda u: u, forecast, innovation[:, None], [12, 2, 7], obs)  # y - H f with H in that order
    assert torch.equal(est[0, 0, 0, [12, 2, 7]], innovation[0])


def test_learned_observer_beats_the_open_loop_forecast(one_thread):
    """Heat equation with an exact step, unknown initial states (the guess is zero), 8 noisy sensors
    of 32 nodes: after training on 64 trajectories the observer's error on new ones is well below
    the open loop's (which only decays with the dynamics)."""
    from oplab import models

    torch.manual_seed(0)
    n, steps, noise = 32, 8, 0.05
    mult = torch.from_numpy(_heat_step(n, 0.05))

    def step(u):
        return torch.fft.irfft(torch.fft.rfft(u) * mult.to(u.dtype), n=n)

    def trajectories(count, seed):
        g = torch.Generator().manual_seed(seed)
        u = torch.fft.irfft(torch.fft.rfft(torch.randn(count, 1, n, generator=g)) * (torch.arange(n // 2 + 1) < 5), n=n)
        out = [u]
        for _ in range(steps):
            out.append(step(out[-1]))
        return torch.stack(out, 1)

    train, test = trajectories(64, 1), trajectories(16, 2)
    sensors = torch.arange(0, n, 4)
    net = models.create("fno", in_channels=3, out_channels=1, modes=[8], width=16)
    obs = Observer(net, sensors, n, scale=float(train.std()))
    history = train_observer(step, obs, train, torch.zeros(1, n), noise, epochs=25, batch_size=16, lr=3e-3)
    assert history[-1] < 0.5 * history[0]
    assert len(train_observer(step, obs, train[:16], torch.zeros(1, n), noise, epochs=9, budget_seconds=1e-9)) == 1
    y = simulate_observations(test[:, 1:], sensors, noise, torch.Generator().manual_seed(3))
    with torch.no_grad():
        open_loop = assimilate(step, torch.zeros(16, 1, n), y, sensors)
        filtered = assimilate(step, torch.zeros(16, 1, n), y, sensors, obs)
    err = lambda est: ((est - test[:, 1:]).square().mean((0, 2, 3)) / test[:, 1:].square().mean((0, 2, 3))).sqrt()  # noqa: E731
    assert err(open_loop)[-1] > 0.9  # the zero guess never learns the state
    assert err(filtered)[-1] < 0.5 * err(open_loop)[-1], (err(filtered), err(open_loop))
