"""Data assimilation on 2D grids (oplab.inverse.assimilation): sensors as flat indices or coordinates,
the bilinear and kernel spreads of the innovation, the EnKF against the exact Kalman filter of a
linear Gaussian model on a 2D grid, localisation, and a learned observer on the 2D heat equation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oplab.errors import ParameterError
from oplab.inverse.assimilation import (Observer, assimilate, check_sensors, enkf, gaspari_cohn, interpolate,
                                        kernel_weights, lattice_axes, lattice_sensors, simulate_observations,
                                        spread, train_observer)


def _heat2d(shape, dt: float, nu: float = 0.02) -> np.ndarray:
    """The exact periodic heat semigroup over ``dt`` on the unit torus, as an ``rfft2`` multiplier."""
    kx = np.fft.fftfreq(shape[0], 1.0 / shape[0])[:, None]
    ky = np.fft.rfftfreq(shape[1], 1.0 / shape[1])[None, :]
    return np.exp(-nu * 4 * np.pi**2 * (kx**2 + ky**2) * dt)


def test_sensors_as_flat_indices_or_coordinates_and_one_clear_error_off_the_grid():
    shape = (6, 5)
    coords = [[0, 1], [5, 4], [2, 0]]
    assert check_sensors(coords, shape).tolist() == [1, 29, 10]  # row-major, in the given order
    assert check_sensors([1, 29, 10], shape).tolist() == [1, 29, 10]
    assert check_sensors(np.array([3.0, 7.0]), 8).tolist() == [3, 7]  # 1D as before
    with pytest.raises(ParameterError, match=r"sensors must lie on the grid \[6, 5\].*\[6, 2\]"):
        check_sensors([[0, 1], [6, 2]], shape)
    with pytest.raises(ParameterError, match=r"sensors must lie on the grid"):
        check_sensors([[0, -1]], shape)
    with pytest.raises(ParameterError, match=r"distinct node indices in \[0, 30\)"):
        check_sensors([3, 30], shape)
    with pytest.raises(ParameterError, match=r"must be \[K, 2\]"):
        check_sensors([[0, 1, 2]], shape)
    with pytest.raises(ParameterError, match="distinct"):
        check_sensors([[1, 1], [1, 1]], shape)
    with pytest.raises(ParameterError, match="integer node indices"):
        check_sensors([1.5, 2.0], shape)
    states = torch.zeros(1, 2, 1, 6, 5)
    with pytest.raises(ParameterError, match="sensors must lie on the grid"):
        simulate_observations(states, [[6, 0]], 0.1)
    with pytest.raises(ParameterError, match=r"observations must be \[B=1, T, K=3\]"):
        assimilate(lambda u: u, states[:, 0], torch.zeros(1, 2, 2), coords)


def test_lattice_sensors_are_a_regular_lattice():
    idx = lattice_sensors((32, 32), 8)
    axes = lattice_axes(idx, (32, 32))
    assert len(idx) == 64 and [a.tolist() for a in axes] == [list(range(0, 32, 4))] * 2
    assert lattice_axes([[0, 0], [1, 1]], (4, 4)) is None  # a diagonal is no tensor-product lattice
    with pytest.raises(ParameterError, match="lattice counts"):
        lattice_sensors((8, 8), 9)


def test_bilinear_spread_reproduces_a_bilinear_field_between_sensors():
    """An irregular lattice (rows 1, 4, 8 and columns 0, 3, 5, 9 of 11 x 12), sensors given shuffled as
    coordinates: the interpolant is exact at the sensors and equals the bilinear field
    ``g = 1 + 2 i - j + 0.5 i j`` everywhere inside the lattice's hull, and is periodic across it."""
    shape = (11, 12)
    rows, cols = [1, 4, 8], [0, 3, 5, 9]
    coords = np.array([[r, c] for r in rows for c in cols])[np.random.default_rng(0).permutation(12)]
    g = lambda i, j: 1.0 + 2.0 * i - j + 0.5 * i * j  # noqa: E731
    values = torch.tensor([[g(r, c) for r, c in coords]], dtype=torch.float64)
    f = spread(values, coords, shape)[0]  # "auto": the linear spread on a lattice
    ii, jj = np.meshgrid(np.arange(11), np.arange(12), indexing="ij")
    inside = (ii >= 1) & (ii <= 8) & (jj <= 9)
    assert torch.allclose(f[inside], torch.as_tensor(g(ii, jj)[inside]), atol=1e-12)
    for r, c in coords:
        assert f[r, c] == pytest.approx(g(r, c), abs=1e-12)
    # across the period along rows: between row 8 and row 1 + 11 = 12 (i.e. row 1) the weights are linear
    w = (10 - 8) / (12 - 8)
    assert f[10, 3] == pytest.approx((1 - w) * g(8, 3) + w * g(1, 3), abs=1e-12)
    # in 1D the lattice spread is the periodic linear interpolation, whatever the sensors' order
    v1 = torch.tensor([[1.0, 3.0, -1.0]])
    assert torch.allclose(spread(v1[:, [2, 0, 1]], [13, 2, 6], 16), interpolate(v1, torch.tensor([2, 6, 13]), 16))


def test_kernel_spread_reproduces_a_constant_and_is_local():
    """Normalised convolution at scattered sensors (no lattice): a constant comes back exactly; the
    weights of every node sum to one and favour its nearest sensor."""
    shape = (16, 16)
    coords = np.array([[1, 2], [3, 11], [9, 7], [14, 14], [7, 0], [12, 4]])
    assert lattice_axes(coords, shape) is None
    const = torch.full((2, len(coords)), 3.25, dtype=torch.float64)
    f = spread(const, coords, shape)  # "auto": kernel
    assert f.shape == (2, 16, 16) and torch.allclose(f, torch.full_like(f, 3.25), atol=1e-13)
    w = kernel_weights(coords, shape, dtype=torch.float64)
    assert torch.allclose(w.sum(0), torch.ones(256, dtype=torch.float64), atol=1e-13)
    for k, (r, c) in enumerate(coords):
        assert int(w[:, r * 16 + c].argmax()) == k  # a sensor's own node weighs it most
    with pytest.raises(ParameterError, match="needs sensors on a tensor-product lattice"):
        spread(const, coords, shape, method="linear")


def test_observer_places_each_innovation_at_its_own_sensor_in_2d():
    class Pass(torch.nn.Module):
        def forward(self, x, coords):
            assert len(coords) == 2 and x.shape[1:] == (3, 8, 8)
            return x[:, 1:2]

    sensors = [[6, 2], [2, 2], [6, 6], [2, 6]]  # a 2 x 2 lattice, given out of order
    obs = Observer(Pass(), sensors, (8, 8))
    assert obs.spread == "linear" and obs.mask.sum() == 4 and obs.mask[6, 2] == 1
    innovation = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    est = assimilate(lambda u: u, torch.zeros(1, 1, 8, 8), innovation[:, None], sensors, obs)
    assert est.shape == (1, 1, 1, 8, 8)
    assert [float(est[0, 0, 0, r, c]) for r, c in sensors] == [1.0, 2.0, 3.0, 4.0]
    assert float(est[0, 0, 0, 4, 2]) == pytest.approx(1.5)  # halfway between (2, 2) and (6, 2)
    kern = Observer(Pass(), sensors, (8, 8), spread="kernel")
    const = kern(torch.zeros(1, 1, 8, 8), torch.full((1, 4), 2.0))
    assert torch.allclose(const, torch.full_like(const, 2.0))


def test_gaspari_cohn_is_continuous_with_compact_support():
    r = np.array([0.0, 1 - 1e-9, 1 + 1e-9, 2 - 1e-9, 2.0, 3.0])
    g = gaspari_cohn(r)
    assert g[0] == 1.0 and g[1] == pytest.approx(g[2], abs=1e-7) and g[1] == pytest.approx(5 / 24)
    assert abs(g[3]) < 1e-7 and g[4] == 0.0 and g[5] == 0.0


def test_enkf_in_2d_converges_to_the_kalman_filter_and_localisation_is_local():
    """The exact heat semigroup on a 6 x 5 torus, a smooth prior, 4 sensors of 30 nodes given as
    coordinates: with 4000 members the EnKF's mean (anomaly form, no 30 x 30 covariance) is the Kalman
    filter's within the sampling error. Localisation with a vast radius changes nothing; with a
    short one, nodes beyond its support from every sensor keep their forecast."""
    rng = np.random.default_rng(0)
    shape, r = (6, 5), 0.05
    d = 30
    mult = _heat2d(shape, 0.2)

    def step(x):  # [M, 1, 6, 5]
        return np.fft.irfft2(np.fft.rfft2(x) * mult, s=shape)

    m = np.stack([step(e.reshape(1, 1, *shape)).reshape(-1) for e in np.eye(d)], 1)  # the model's matrix
    smooth = np.stack([np.fft.irfft2(np.fft.rfft2(e.reshape(shape)) * _heat2d(shape, 1.0), s=shape).reshape(-1)
                       for e in np.eye(d)], 1)
    p0 = 4.0 * smooth @ smooth.T + 0.05 * np.eye(d)
    sensors = [[0, 0], [3, 2], [5, 4], [1, 3]]
    flat = check_sensors(sensors, shape).numpy()
    h = np.eye(d)[flat]
    truth = rng.multivariate_normal(np.zeros(d), p0)
    ys = []
    for _ in range(4):
        truth = m @ truth
        ys.append(h @ truth + r * rng.standard_normal(4))
    mean, cov, kf = np.zeros(d), p0, []
    for y in ys:
        mean, cov = m @ mean, m @ cov @ m.T
        gain = cov @ h.T @ np.linalg.inv(h @ cov @ h.T + r**2 * np.eye(4))
        mean, cov = mean + gain @ (y - h @ mean), (np.eye(d) - gain @ h) @ cov
        kf.append(mean)
    ens = rng.multivariate_normal(np.zeros(d), p0, size=4000).reshape(4000, 1, *shape)
    got = enkf(step, ens, np.array(ys), sensors, r, seed=1)
    assert got["mean"].shape == (4, 1, 6, 5)
    err = np.abs(got["mean"].reshape(4, d) - np.array(kf)).max()
    post = np.sqrt(np.diag(cov)).mean()  # 0.11, the prior's 0.56: the sampling error is a fraction of it
    assert err < 0.25 * post, (err, post)
    assert got["spread"][-1] == pytest.approx(np.sqrt(np.trace(cov) / d), rel=0.1)
    wide = enkf(step, ens, np.array(ys), sensors, r, seed=1, localization=1e4)
    assert np.abs(wide["mean"] - got["mean"]).max() < 1e-4
    # one analysis of an identity model with a short localisation (support 2 spacings): a node farther
    # than that from every sensor keeps the ensemble's mean, a sensor's node moves towards its datum
    y0 = np.array(ys[:1])
    local = enkf(lambda x: x, ens[:200], y0, sensors, r, seed=2, localization=1.0)["mean"][0, 0]
    prior = ens[:200].mean(0)[0]
    assert local[2, 0] == pytest.approx(prior[2, 0], abs=1e-12)  # distance >= 2 from all four sensors
    assert abs(local[3, 2] - ys[0][1]) < 0.5 * abs(prior[3, 2] - ys[0][1])
    with pytest.raises(ParameterError, match="localization must be > 0"):
        enkf(step, ens[:10], y0, sensors, r, localization=0.0)
    with pytest.raises(ParameterError, match=r"observations must be \[T, K=4\]"):
        enkf(step, ens[:10], np.zeros((2, 3)), sensors, r)


def test_learned_observer_beats_the_open_loop_in_2d(one_thread):
    """The 2D heat equation (exact step) on 12 x 12, unknown initial states (guess zero), a 4 x 4
    lattice of noisy sensors: after training on 32 trajectories the observer's error on new ones is
    well below the open loop's."""
    from oplab import models

    torch.manual_seed(0)
    shape, steps, noise = (12, 12), 5, 0.05
    mult = torch.from_numpy(_heat2d(shape, 0.05))

    def step(u):
        return torch.fft.irfft2(torch.fft.rfft2(u) * mult.to(u.dtype), s=shape)

    def trajectories(count, seed):
        g = torch.Generator().manual_seed(seed)
        u = step(step(torch.randn(count, 1, *shape, generator=g)))
        u = torch.fft.irfft2(torch.fft.rfft2(u) * torch.from_numpy(_heat2d(shape, 1.0)).float(), s=shape)
        u = u / u.std()
        out = [u]
        for _ in range(steps):
            out.append(step(out[-1]))
        return torch.stack(out, 1)

    train, test = trajectories(32, 1), trajectories(16, 2)
    sensors = lattice_sensors(shape, 4)
    net = models.create("fno", in_channels=3, out_channels=1, modes=[4, 4], width=8, n_layers=2,
                        lifting_channels=16, projection_channels=16)
    obs = Observer(net, sensors, shape, scale=float(train.std()))
    history = train_observer(step, obs, train, torch.zeros(1, *shape), noise, epochs=12, batch_size=16, lr=1e-2)
    assert history[-1] < 0.5 * history[0]
    y = simulate_observations(test[:, 1:], sensors, noise, torch.Generator().manual_seed(3))
    with torch.no_grad():
        open_loop = assimilate(step, torch.zeros(16, 1, *shape), y, sensors)
        filtered = assimilate(step, torch.zeros(16, 1, *shape), y, sensors, obs)

    def err(est):
        return ((est - test[:, 1:]).square().mean((0, 2, 3, 4)) / test[:, 1:].square().mean((0, 2, 3, 4))).sqrt()

    assert err(open_loop)[-1] > 0.9
    # measured: 0.33 at the last state, 0.36 over the window (the open loop: 1.0)
    assert err(filtered)[-1] < 0.5 * err(open_loop)[-1], (err(filtered), err(open_loop))
    assert err(filtered).mean() < 0.5 * err(open_loop).mean()
