"""Learned proximal networks (oplab.inverse.lpn): the potential is convex and f is its gradient,
a scalar LPN trained by proximal matching on Laplace data learns soft-thresholding (the MAP
denoiser) and its regulariser, plug-and-play recovers a sparse signal through a blur, and
save/load gives identical outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oplab.errors import DataFileError, ParameterError
from oplab.inverse import Observations
from oplab.inverse.lpn import LPN, gamma_schedule, load_lpn, pm_loss, pnp, save_lpn, train_lpn
from oplab.problems.base import Axis


def _random_lpn(dim: int, channels: int = 1, seed: int = 0, skip_scale: float = 3.0, **kw) -> LPN:
    """An untrained LPN in float64 whose raw nonnegative-path weights are half negative (the forward
    pass clamps them) and whose skips are large: a strongly curved potential to test convexity on."""
    torch.manual_seed(seed)
    model = LPN(channels, dim, hidden=kw.pop("hidden", 8), layers=kw.pop("layers", 3), **kw).double()
    with torch.no_grad():
        for w in model.weights:
            w.normal_(0.0, 0.5)
        model.out.normal_(0.0, 1.0)
        for skip in model.skips:
            skip.weight.mul_(skip_scale)
        model.linear.weight.normal_()
    return model.eval()


@pytest.mark.parametrize("dim,shape", [(1, (2, 16)), (2, (1, 6, 5))])
def test_psi_is_convex_and_the_hessian_symmetric_positive_semidefinite(one_thread, dim, shape):
    model = _random_lpn(dim, channels=shape[0], kernel_size=3, alpha=1e-3, beta=2.0)
    gen = torch.Generator().manual_seed(1)
    a = 2.0 * torch.randn(300, *shape, generator=gen, dtype=torch.float64)
    b = 2.0 * torch.randn(300, *shape, generator=gen, dtype=torch.float64)
    t = torch.rand(300, *(1,) * (dim + 1), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        pa, pb = model.psi(a), model.psi(b)
        gap = (0.5 * (pa + pb) - model.psi(0.5 * (a + b))) / (pa.abs() + pb.abs() + 1.0)
        mix = t.flatten() * pa + (1 - t.flatten()) * pb
        gap_t = (mix - model.psi(t * a + (1 - t) * b)) / (pa.abs() + pb.abs() + 1.0)
    assert float(gap.min()) > -1e-12 and float(gap_t.min()) > -1e-12
    assert float(gap.max()) > 1e-4  # strictly: the potential is curved, not affine
    # the Jacobian of f (the Hessian of psi) at a few points: symmetric, eigenvalues >= alpha
    for k in range(3):
        y = torch.randn(1, *shape, generator=gen, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(model, y).reshape(y.numel(), y.numel())
        assert torch.allclose(jac, jac.T, atol=1e-10 * float(jac.abs().max()))
        eig = torch.linalg.eigvalsh(0.5 * (jac + jac.T))
        assert float(eig.min()) >= 1e-3 - 1e-9, float(eig.min())


def test_f_is_the_gradient_of_psi(one_thread):
    # moderate skips: no pre-activation beyond softplus's linear threshold (second derivative exactly 0 there)
    model = _random_lpn(2, channels=2, kernel_size=3, beta=2.0, skip_scale=0.5)
    y = torch.randn(3, 2, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    yy = y.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.psi(yy).sum(), yy)
    assert torch.allclose(model(y), grad, rtol=1e-12, atol=1e-12)  # eval mode, plain input
    with torch.no_grad():
        assert torch.allclose(model(y), grad, rtol=1e-12, atol=1e-12)  # works under no_grad too
    # against central differences of psi (independent of autograd)
    h, rng = 1e-6, np.random.default_rng(0)
    for _ in range(8):
        idx = (int(rng.integers(3)), int(rng.integers(2)), int(rng.integers(5)), int(rng.integers(4)))
        e = torch.zeros_like(y)
        e[idx] = h
        with torch.no_grad():
            fd = (model.psi(y + e) - model.psi(y - e))[idx[0]] / (2 * h)
        assert abs(float(fd) - float(grad[idx])) < 1e-6 * (1 + abs(float(grad[idx])))
    # the inverse map: y with f(y) = x, by the convex problem min psi(y) - <x, y>
    back, residual = model.inverse(model(y))
    assert residual < 1e-6 and torch.allclose(model(back), model(y), atol=1e-6)
    # training mode: f carries the graph, every parameter gets a gradient
    model.train()
    model(y).square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing


def test_errors_are_one_line():
    with pytest.raises(ParameterError, match="kernel_size must be odd"):
        LPN(1, 2, kernel_size=2)
    with pytest.raises(ParameterError, match="dim must be 1 or 2"):
        LPN(1, 3)
    with pytest.raises(ParameterError, match=r"expected fields \[B, 1, S, S\]"):
        LPN(1, 2)(torch.zeros(2, 1, 8))
    with pytest.raises(ParameterError, match="sigma must be > 0"):
        train_lpn(np.zeros((4, 1, 8)), 0.0)


def test_gamma_schedule_and_matching_loss():
    g = gamma_schedule(1.0, 0.125, 40, 4)
    assert len(g) == 40 and g[0] == 1.0 and g[-1] == pytest.approx(0.125)
    assert all(a >= b for a, b in zip(g, g[1:])) and len(set(g)) == 4 and g[10] == pytest.approx(0.5)
    x = torch.zeros(2, 1, 4)
    fy = torch.ones(2, 1, 4)  # |f(y) - x|^2 / d = 1 per sample
    assert float(pm_loss(fy, x, 1.0)) == pytest.approx(1 - np.exp(-1.0))


@pytest.fixture(scope="module")
def laplace_lpn():
    """A scalar LPN (fields [N, 1, 1]) trained at noise 1 on Laplace(0, 1) samples: the MAP
    denoiser is soft-thresholding at sigma^2 / b = 1, the prox of R(x) = |x|."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x = np.random.default_rng(0).laplace(0.0, 1.0, (20000, 1, 1)).astype(np.float32)
    model, history = train_lpn(x, 1.0, hidden=16, layers=2, kernel_size=1, beta=4.0, normalise=False,
                               pretrain_steps=200, steps=500, batch_size=2048, lr=1e-2, lr_pm=1e-3,
                               gamma=(0.4, 0.2), stages=2, seed=0)
    torch.set_num_threads(threads)
    return model, history, x


def test_trained_on_laplace_data_it_learns_soft_thresholding_and_the_l1_regulariser(one_thread, laplace_lpn):
    model, history, x = laplace_lpn
    assert len(history["loss"]) == 700 and history["gamma"][199] is None and history["gamma"][-1] == pytest.approx(0.2)
    y = torch.linspace(-3.0, 3.0, 61).view(-1, 1, 1)
    soft = torch.sign(y) * (y.abs() - 1.0).clamp_min(0.0)
    f = model(y)
    err = (f - soft).abs()
    # seeds 0-4: mean 0.075-0.10, max 0.23-0.27 (at the kinks y = +-1, which the smooth network rounds)
    assert float(err.mean()) < 0.15 and float(err.max()) < 0.4, (float(err.mean()), float(err.max()))
    assert float(f[y.abs() <= 0.5].abs().max()) < 0.2  # the dead zone
    assert float((y - soft).abs().mean()) > 3 * float(err.mean())  # far closer than the identity
    # R_theta(x) - R_theta(0) against |x|
    grid = torch.linspace(-2.5, 2.5, 11).view(-1, 1, 1)
    r, residual = model.regulariser(grid, return_residual=True)
    assert residual < 1e-4
    r = r - r[5]
    assert float((r - grid.flatten().abs()).abs().max()) < 0.5, r.tolist()  # 0.15-0.33 seen
    # smaller on clean samples than on noisy ones
    clean = torch.from_numpy(x[:1000])
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    r_clean, r_noisy = model.regulariser(clean).mean(), model.regulariser(noisy).mean()
    assert float(r_clean) < float(r_noisy) - 0.1, (float(r_clean), float(r_noisy))  # E|x| = 1 against E|x + n| ~ 1.35


def test_pnp_with_a_blur_recovers_a_sparse_signal_as_the_lasso_does(one_thread, laplace_lpn):
    """Forward: a blur (0.2, 0.6, 0.2) of a 64-point signal with 8 spikes, every node observed with
    noise 1. PnP with the learned soft-threshold and eta = sigma_train^2 = 1 (the default; = 1 / L)
    is ISTA for ``1/2 |A x - d|^2 + |x|`` (the MAP under the Laplace prior the LPN was trained on):
    it lands near the exact ISTA answer (the learned prox is within ~0.1-0.2 of soft-thresholding)
    with the same error, far below that of least squares."""
    model = laplace_lpn[0]
    n, s = 64, 1.0
    rng = np.random.default_rng(4)
    truth = np.zeros(n)
    spikes = rng.choice(n, 8, replace=False)
    truth[spikes] = rng.choice([-1.0, 1.0], 8) * rng.uniform(2.0, 4.0, 8)
    A = 0.6 * np.eye(n) + 0.2 * np.eye(n, k=1) + 0.2 * np.eye(n, k=-1)
    data = A @ truth + s * rng.standard_normal(n)
    axes = [Axis("x", n, 0.0, 1.0)]
    obs = Observations(axes[0].coords()[:, None], data[:, None], np.full((n, 1), s), [0])
    at = torch.from_numpy(A)

    def forward(a):
        return (a.flatten(1) @ at.T).view(a.shape)

    got = pnp(forward, axes, obs, model, steps=200, dtype=torch.float64)
    assert got["step_size"] == 1.0 and got["estimate"].shape == (1, n)
    est = got["estimate"][0].numpy()
    lasso = np.zeros(n)
    for _ in range(3000):  # ISTA with the exact prox
        z = lasso - A.T @ (A @ lasso - data)
        lasso = np.sign(z) * np.maximum(np.abs(z) - 1.0, 0.0)
    least_squares = np.linalg.solve(A, data)
    err = lambda v: float(np.linalg.norm(v - truth) / np.linalg.norm(truth))  # noqa: E731
    assert err(est) < 0.5 * err(least_squares), (err(est), err(least_squares))  # 0.81 against 2.35 seen
    assert abs(err(est) - err(lasso)) < 0.1, (err(est), err(lasso))  # 0.83 for the lasso
    assert np.sqrt(np.mean((est - lasso) ** 2)) < 0.25  # 0.14 seen
    assert got["change"][-1] < 1e-3 and 0.3 < got["misfit"] < 3.0
    with pytest.raises(ParameterError, match="pnp: diverged at step"):  # eta far above 2 / L = 2
        pnp(forward, axes, obs, model, steps=300, step_size=50.0, dtype=torch.float64)


def test_save_load_round_trip(tmp_path, one_thread):
    model = _random_lpn(2, channels=2, kernel_size=3, alpha=0.01).float()
    model.config.update(mean=[7.5, -1.0], std=[4.5, 2.0], sigma=0.3)
    save_lpn(model, tmp_path / "lpn")
    assert (tmp_path / "lpn" / "weights.safetensors").exists() and (tmp_path / "lpn" / "config.json").exists()
    back = load_lpn(tmp_path / "lpn")
    assert back.config == model.config and not back.training
    y = torch.randn(3, 2, 7, 6, generator=torch.Generator().manual_seed(5))
    assert torch.equal(back(y), model(y)) and torch.equal(back.psi(y), model.psi(y))
    a = back.denormalise(y)
    assert torch.allclose(back.normalise(a), y, atol=1e-6)
    assert torch.allclose(a[:, 0].mean(), torch.tensor(7.5), atol=1.0)
    (tmp_path / "lpn" / "config.json").write_text('{"kind": "fno"}')
    with pytest.raises(DataFileError, match="does not describe an LPN"):
        load_lpn(tmp_path / "lpn")
