"""Relative L2/H1 losses: exact values on known functions, resolution consistency,
batch means, gradients."""

import math

import numpy as np
import pytest
import torch

from oplab import losses
from oplab.problems.base import Axis


def grid(n, periodic):
    return (torch.tensor(Axis("x", n, periodic=periodic).coords(), dtype=torch.float64),)


@pytest.mark.parametrize("periodic", [True, False])
def test_h1_and_l2_match_analytic_norms(periodic):
    """v = sin(2 pi x), error e = eps sin(6 pi x): on [0, 1] each has L2^2 = 1/2 and
    derivative L2^2 = (2 pi k)^2 / 2, so the relative errors are known exactly."""
    n, eps = 513, 0.1
    (x,) = grid(n, periodic)
    v = torch.sin(2 * math.pi * x)[None, None]
    u = v + eps * torch.sin(6 * math.pi * x)[None, None]
    l2 = losses.relative_l2(u, v, grid(n, periodic), [periodic])
    h1 = losses.relative_h1(u, v, grid(n, periodic), [periodic])
    assert l2.item() == pytest.approx(eps, rel=1e-3)
    expected = eps * math.sqrt((1 + 36 * math.pi**2) / (1 + 4 * math.pi**2))
    assert h1.item() == pytest.approx(expected, rel=2e-3)


def test_loss_means_the_same_at_every_resolution():
    def fields(n):
        c = grid(n, False)
        X, Y = torch.meshgrid(c[0], c[0], indexing="ij")
        v = (torch.sin(math.pi * X) * torch.exp(Y))[None, None]
        u = v + 0.05 * (X * Y**2)[None, None]
        return u, v, (c[0], c[0])

    values = {}
    for n in (33, 129):
        u, v, coords = fields(n)
        values[n] = (losses.relative_l2(u, v, coords, [False, False]).item(),
                     losses.relative_h1(u, v, coords, [False, False]).item())
    assert np.allclose(values[33], values[129], rtol=5e-3)


def test_batch_loss_is_the_mean_of_sample_losses():
    torch.manual_seed(0)
    coords = grid(16, True)
    u, v = torch.randn(5, 2, 16, dtype=torch.float64), torch.randn(5, 2, 16, dtype=torch.float64)
    per = losses.relative_l2(u, v, coords, [True], reduce=False)
    assert per.shape == (5,)
    assert torch.allclose(losses.relative_l2(u, v, coords, [True]), per.mean())
    # and a batch of one sample gives that sample's loss (no sum over the batch)
    assert torch.allclose(losses.relative_l2(u[:1], v[:1], coords, [True]), per[0])


@pytest.mark.parametrize("name", ["l2", "h1"])
def test_losses_are_differentiable(name):
    torch.manual_seed(1)
    coords = (torch.linspace(0, 1, 6, dtype=torch.float64),) * 2
    u = torch.randn(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    fn = losses.get(name)
    assert torch.autograd.gradcheck(lambda a: fn(a, v, coords, [False, True]), (u,))


def test_unknown_loss():
    from oplab.errors import ParameterError

    with pytest.raises(ParameterError, match="unknown loss"):
        losses.get("l3")


@pytest.mark.parametrize("periodic", [True, False])
def test_hm1_matches_the_analytic_norm(periodic):
    """Same fields: ||sin(2 pi m x)||_{H^-1}^2 = (1/2) / (1 + (2 pi m)^2) on either basis (sine
    modes 2m and 6m of the Dirichlet basis are these functions)."""
    n, eps = 513, 0.1
    (x,) = grid(n, periodic)
    v = torch.sin(2 * math.pi * x)[None, None]
    u = v + eps * torch.sin(6 * math.pi * x)[None, None]
    got = losses.relative_hm1(u, v, grid(n, periodic), [periodic]).item()
    expected = eps * math.sqrt((1 + 4 * math.pi**2) / (1 + 36 * math.pi**2))
    assert got == pytest.approx(expected, rel=1e-6)
    # low frequencies weigh more: the same amplitude at a lower frequency is a larger error
    low = v + eps * torch.sin(2 * math.pi * x)[None, None]
    assert losses.relative_hm1(low, v, grid(n, periodic), [periodic]).item() > 2 * got


def test_hm1_is_differentiable_in_2d():
    torch.manual_seed(1)
    coords = (torch.linspace(0, 1, 7, dtype=torch.float64),) * 2
    u = torch.randn(2, 1, 7, 7, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 1, 7, 7, dtype=torch.float64)
    for per in ([True, True], [False, False]):
        assert torch.autograd.gradcheck(lambda a: losses.relative_hm1(a, v, coords, per), (u,))
    with pytest.raises(ValueError, match="mixed"):
        losses.relative_hm1(u, v, coords, [True, False])


def test_mse_is_the_mean_square_over_the_domain():
    coords = grid(101, False)
    v = torch.zeros(2, 1, 101, dtype=torch.float64)
    u = v + 0.5
    assert losses.relative_l2 is not losses.get("mse")
    assert losses.get("mse")(u, v, coords, [False]).item() == pytest.approx(0.25)


def test_channel_l2_is_the_mean_of_per_channel_relative_errors():
    """``channel_l2`` weighs every channel alike: with one channel 1000x larger, the joint relative
    L2 follows that channel, ``channel_l2`` is the mean of the two channels' own errors."""
    from oplab.losses import channel_l2, relative_l2

    g = torch.Generator().manual_seed(0)
    target = torch.randn(4, 2, 16, generator=g)
    target[:, 1] *= 1000
    pred = target.clone()
    pred[:, 0] += 0.5 * torch.randn(4, 16, generator=g)  # only the small channel is wrong
    coords, periodic = (torch.linspace(0, 1, 16),), (False,)
    each = [relative_l2(pred[:, c : c + 1], target[:, c : c + 1], coords, periodic, reduce=False) for c in range(2)]
    assert torch.allclose(channel_l2(pred, target, coords, periodic), (each[0] + each[1]).mean() / 2)
    assert float(channel_l2(pred, target, coords, periodic)) > 100 * float(relative_l2(pred, target, coords, periodic))


@pytest.mark.parametrize("periodic", [(False,), (True, False)])
def test_relative_l2_equals_the_weighted_sum_formula(periodic):
    """The norm-based relative L2 (issue 22, item 4) against the previous implementation's formula
    ``sqrt(sum (p - t)^2 w) / sqrt(sum t^2 w)`` on fixed random inputs, float64."""
    g = torch.Generator().manual_seed(0)
    shape = (5, 2) + tuple(17 + 4 * i for i in range(len(periodic)))
    pred = torch.randn(shape, generator=g, dtype=torch.float64)
    target = torch.randn(shape, generator=g, dtype=torch.float64)
    coords = [torch.linspace(0, 1, n, dtype=torch.float64) for n in shape[2:]]
    w = losses.quadrature_weights(coords, periodic)
    sq = lambda u: (u.square() * w).reshape(u.shape[0], -1).sum(dim=1)  # noqa: E731
    expected = sq(pred - target).sqrt() / sq(target).sqrt()
    got = losses.relative_l2(pred, target, coords, periodic, reduce=False)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_relative_l2_has_a_zero_gradient_at_an_exact_prediction():
    target = torch.randn(3, 1, 16)
    pred = target.clone().requires_grad_()
    losses.relative_l2(pred, target, (torch.linspace(0, 1, 16),), (False,)).backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))  # the sqrt of a sum of squares gave NaN here


def test_decode_is_the_affine_inverse_of_encode():
    from oplab.data.normalize import ChannelNormalizer

    norm = ChannelNormalizer(3).set(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.1, 3.0]))
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    s = (1, -1, 1, 1)
    expected = x * (norm.std.view(s) + norm.eps) + norm.mean.view(s)
    torch.testing.assert_close(norm.decode(x), expected.to(norm.decode(x).dtype), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(norm.encode(norm.decode(x.float())), x.float(), rtol=1e-5, atol=1e-5)
