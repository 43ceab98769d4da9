"""PDEBench's inverse task (oplab.inverse.pdebench): the recovery, the metrics, the classical routes."""

import math

import numpy as np
import pytest
import torch

from oplab.errors import ParameterError
from oplab.inverse.pdebench import (BurgersETDRK4, advection_inverse, fourier_shift, inverse_metrics,
                                    pdebench_initial, recover_initial, standardisation)
from oplab.inverse.priors import Smooth
from oplab.solvers.spectral import burgers_etdrk4

N = 64


def _states(count=6, seed=0, n=N):
    rng = np.random.default_rng(seed)
    x = np.arange(n) / n
    return torch.tensor(np.stack([pdebench_initial(rng, x) for _ in range(count)]))[:, None]


def test_initial_states_follow_pdebench_sampler():
    """Sums of sines of wave numbers 1..4 (so no Fourier content above 8 without abs/window)."""
    rng = np.random.default_rng(3)
    x = np.arange(256) / 256
    u = pdebench_initial(rng, x, p_abs=0.0, p_window=0.0)
    spec = np.abs(np.fft.rfft(u)) / 256
    assert spec[9:].max() < 1e-12 and spec[1:9].max() > 1e-3
    assert np.abs(u).max() <= 4.0  # four amplitudes in [0, 1]


def test_shift_is_exact_and_inverse_recovers_band_limited_state():
    u = _states()
    assert torch.allclose(fourier_shift(u, 0.25)[..., 16:], u[..., :48], atol=1e-12)
    smooth = torch.tensor(np.sin(2 * np.pi * 3 * np.arange(N) / N + 0.3))[None, None]
    y = fourier_shift(smooth, 4.0 * 1.01)
    assert torch.allclose(advection_inverse(y, 4.0, 1.01), smooth, atol=1e-12)


def test_recovery_through_exact_shift_operator():
    """Through an exact linear operator (advection shift) the recovered state matches the truth: with
    PDEBench's 64-value latent up to its interpolation, with one unknown per point almost exactly."""
    x = _states()
    y = fourier_shift(x, 0.3)
    mean, std = standardisation(x)
    forward = lambda u: fourier_shift(u, 0.3)  # noqa: E731
    pix = recover_initial(forward, y, mean, std, latent=None, steps=400, lr=0.05, weight_decay=0.0)
    err = (((pix["u0"] - x) / std).square()).flatten(1).mean(1)
    assert err.max() < 1e-3, err
    lat = recover_initial(forward, y, mean, std, latent=32)  # PDEBench's steps, lr, weight decay
    s = lambda t: (t - mean) / std  # noqa: E731  (PDEBench's units)
    m = inverse_metrics(s(lat["u0"]), s(x), s(lat["pred"]), s(y))
    start = inverse_metrics(s(y), s(x), s(y), s(y))["mseloss_u0"]  # the do-nothing estimate u0 := y
    assert np.mean(m["mseloss_u0"]) < 0.01 * np.mean(start)
    assert np.allclose(m["mseloss_u0"], m["mseloss_pred_u0"], rtol=0.05)  # a shift keeps the L2 norm (but Nyquist)
    assert lat["history"][-1] < 0.05 * lat["history"][0]


def test_batched_recovery_equals_one_at_a_time():
    x = _states(3)
    y = fourier_shift(x, 0.1)
    mean, std = standardisation(x)
    fwd = lambda u: fourier_shift(u, 0.1)  # noqa: E731
    prior = Smooth((1, N), (1.0 / N,), 1e-4)
    both = recover_initial(fwd, y, mean, std, latent=None, steps=20, init="start", start=y, prior=prior)
    one = recover_initial(fwd, y[1:2], mean[1:2], std[1:2], latent=None, steps=20, init="start", start=y[1:2],
                          prior=prior)
    assert torch.allclose(both["u0"][1:2], one["u0"], atol=1e-10)


def test_metrics_match_definitions():
    a = torch.zeros(2, 1, 8, dtype=torch.float64)
    b = torch.ones(2, 1, 8, dtype=torch.float64)
    m = inverse_metrics(a, b, b, b)
    assert m["mseloss_u0"] == [1.0, 1.0] and m["l2loss_u0"] == pytest.approx([1.0, 1.0])
    assert m["mseloss_pred_u0"] == [0.0, 0.0]
    # a constant difference lives in the zero frequency only: |8|^2 over 8 coefficients = 8; low band (2 of them) 32
    assert m["fftmseloss_u0"] == pytest.approx([8.0, 8.0])
    assert m["fftmseloss_low_u0"] == pytest.approx([32.0, 32.0]) and m["fftmseloss_hi_u0"] == [0.0, 0.0]
    with pytest.raises(ParameterError, match="expected"):
        inverse_metrics(a, b[:, :, :4], b, b)


def test_torch_burgers_matches_oplab_solver_and_has_gradients():
    x = _states(3)
    nu = 0.1 / math.pi
    ref = burgers_etdrk4(x[:, 0].numpy(), nu, 0.3)
    u = x.clone().requires_grad_(True)
    out = BurgersETDRK4(N, nu, 0.3, dt=0.005)(u)
    assert np.abs(out[:, 0].detach().numpy() - ref).max() < 1e-5 * np.abs(ref).max()
    out.square().sum().backward()
    assert torch.isfinite(u.grad).all() and u.grad.abs().max() > 0


def test_bad_input_raises_parameter_error():
    y = torch.zeros(2, 1, 16)
    with pytest.raises(ParameterError, match="latent"):
        recover_initial(lambda u: u, y, 0.0, 1.0, latent=32)
    with pytest.raises(ParameterError, match=r"\[B, 1, n\]"):
        recover_initial(lambda u: u, torch.zeros(2, 16), 0.0, 1.0)
    with pytest.raises(ParameterError, match="init"):
        recover_initial(lambda u: u, y, 0.0, 1.0, init="zeros")
