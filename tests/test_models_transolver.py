"""Transolver: shapes on odd and even grids in 1-3D, gradients, a short Darcy
training with checkpoint round trip, Physics-Attention's invariants
(permutation equivariance, slice weights a partition of unity, tokens as
weighted means, invariance to duplicating every point) and argument errors."""

from __future__ import annotations

import json

import pytest
import torch
from modelcheck import check_gradient, check_shapes, check_training, grid

from oplab import models
from oplab.errors import ParameterError
from oplab.models.transolver import PhysicsAttention, Transolver

TINY = dict(width=8, n_layers=2, n_heads=2, n_slices=4, mlp_ratio=1)


pytestmark = pytest.mark.usefixtures("one_thread")



def _attention(width=16, n_heads=4, n_slices=6, seed=0) -> PhysicsAttention:
    torch.manual_seed(seed)
    attention = PhysicsAttention(width, n_heads, n_slices).double()
    with torch.no_grad():  # away from the small initialisation, so that every term matters
        for p in attention.parameters():
            p.add_(0.3 * torch.randn_like(p))
        attention.temperature.uniform_(0.2, 1.0)
    return attention


def test_shapes_2d_even_and_odd_grids():
    torch.manual_seed(0)
    model = models.create("transolver", in_channels=2, out_channels=3, **TINY)
    check_shapes(model, 2, 3, [(17, 17), (24, 20), (3, 5)])


@pytest.mark.parametrize("dim, shapes", [(1, [(21,), (16,)]), (3, [(6, 5, 7), (4, 4, 4)])])
def test_shapes_1d_and_3d(dim, shapes):
    torch.manual_seed(0)
    check_shapes(Transolver(2, 3, dim=dim, **TINY), 2, 3, shapes)


def test_gradient():
    torch.manual_seed(0)
    check_gradient(Transolver(1, 2, width=4, n_layers=1, n_heads=2, n_slices=3), 1, (4, 5))


def test_training_and_checkpoint(darcy17, tmp_path):
    result = check_training("transolver", dict(width=16, n_layers=2, n_heads=4, n_slices=8), tmp_path, darcy17,
                            epochs=10, lr=5e-3)
    assert result["n_params"] < 50_000


def test_paper_darcy_parameter_count():
    model = Transolver(1, 1, width=128, n_layers=8, n_heads=8, n_slices=64, mlp_ratio=1, ref=8)
    assert model.n_params() == 729_665


def test_positions():
    """``ref=0``: the coordinates; ``ref=k``: distances to the k x k references over the bounding box."""
    x, coords = torch.randn(1, 1, 3, 4), (torch.tensor([0.0, 0.5, 1.0]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    plain = Transolver(1, 1, ref=0, **TINY).points(x, coords)
    assert plain.shape == (1, 12, 3)
    torch.testing.assert_close(plain[0, 5], torch.tensor([x[0, 0, 1, 1], 0.5, 2.0]))  # point (1, 1)
    unified = Transolver(1, 1, ref=2, **TINY).points(x, coords)
    assert unified.shape == (1, 12, 5)  # references (0, 1), (0, 4), (1, 1), (1, 4)
    torch.testing.assert_close(unified[0, 5, 1:], torch.tensor([0.25 + 1.0, 0.25 + 4.0, 0.25 + 1.0, 0.25 + 4.0]).sqrt())
    assert Transolver(1, 1, positional=False, **TINY).points(x, coords).shape == (1, 12, 1)
    assert Transolver.defaults((64, 64), (False, False)) == {"dim": 2, "ref": 8}


def test_config_round_trip():
    torch.manual_seed(1)
    model = models.create("transolver", in_channels=1, out_channels=1, **TINY)
    config = json.loads(json.dumps(models.config_of(model)))
    rebuilt = models.from_config(config)
    rebuilt.load_state_dict(model.state_dict())
    x, coords = torch.randn(2, 1, 12, 9), grid(12, 9)
    torch.testing.assert_close(rebuilt(x, coords), model(x, coords), rtol=0, atol=0)


# ----------------------------------------------------------------------------- Physics-Attention


def test_attention_is_equivariant_to_a_permutation_of_the_points():
    attention = _attention()
    x = torch.randn(2, 50, 16, dtype=torch.float64)
    perm = torch.randperm(50)
    torch.testing.assert_close(attention(x[:, perm]), attention(x)[:, perm])


def test_model_is_equivariant_to_a_permutation_of_the_points():
    """The whole network on a flattened grid: permuting the points (with their coordinates)
    permutes the output; the grid forward is the point forward on the flattened grid."""
    torch.manual_seed(0)
    model = Transolver(2, 3, **TINY).double()
    x, coords = torch.randn(2, 2, 7, 6, dtype=torch.float64), tuple(c.double() for c in grid(7, 6))
    y = model(x, coords)
    points = model.points(x, coords)  # [B, N, 2 + 8 * 8]
    assert points.shape == (2, 42, 66)
    flat = y.reshape(2, 3, -1).transpose(1, 2)
    torch.testing.assert_close(model.forward_points(points), flat)
    perm = torch.randperm(42)
    torch.testing.assert_close(model.forward_points(points[:, perm]), flat[:, perm])


def test_slice_weights_are_a_partition_of_unity():
    attention = _attention()
    x = torch.randn(3, 40, 16, dtype=torch.float64)
    weights = attention.slice_weights(x)
    assert weights.shape == (3, 4, 40, 6) and (weights > 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 40, dtype=torch.float64))
    # the composed projection is the paper's softmax(W_s x'_h / tau_h), x' = W_x x + b_x split into heads
    heads = attention.to_x(x).reshape(3, 40, 4, 4).transpose(1, 2)  # [B, h, N, d_h]
    tau = attention.temperature.clamp(0.1, 5.0)[:, None, None]
    torch.testing.assert_close(weights, (attention.to_slices(heads) / tau).softmax(-1))
    # the temperature matters: a lower one gives sharper (more one-hot) slices
    x = torch.randn(1, 40, 16, dtype=torch.float64)
    with torch.no_grad():
        attention.temperature.fill_(1.0)
        soft = attention.slice_weights(x).amax(-1).mean()
        attention.temperature.fill_(0.2)
        sharp = attention.slice_weights(x).amax(-1).mean()
    assert sharp > soft


def test_slice_tokens_are_weighted_means():
    attention = _attention()
    x = torch.randn(2, 30, 16, dtype=torch.float64)
    weights = attention.slice_weights(x)
    tokens = attention.tokens(x, weights)  # [B, h, M, d_h]
    f = attention.to_f(x).reshape(2, 30, 4, 4)  # [B, N, h, d_h]
    expected = torch.stack([
        torch.stack([(weights[b, h, :, :, None] * f[b, :, h, None, :]).sum(0) / (weights[b, h, :, :, None].sum(0) + 1e-5)
                     for h in range(4)]) for b in range(2)])  # [B, h, M, d_h]
    torch.testing.assert_close(tokens, expected)
    # a field that is the same at every point gives that value as every token (times total / (total + 1e-5),
    # the guard that sends an empty slice's token to 0)
    same = x[:, :1].expand(-1, 30, -1)
    weights = attention.slice_weights(same)
    total = weights.sum(2)[..., None]  # [B, h, M, 1]
    value = attention.to_f(same)[:, :1].reshape(2, 1, 4, 4).transpose(1, 2)  # [B, h, 1, d_h]
    assert (total > 1e-3).any()
    torch.testing.assert_close(attention.tokens(same, weights), value * total / (total + 1e-5))


def test_duplicating_every_point_changes_nothing():
    """Tokens are means over the points, so a mesh with every point twice gives the same answer
    at each point (up to the 1e-5 guard of the normalisation)."""
    attention = _attention()
    x = torch.randn(2, 25, 16, dtype=torch.float64)
    y = attention(x)
    torch.testing.assert_close(attention(torch.cat([x, x], dim=1)), torch.cat([y, y], dim=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, words", [
    (dict(width=12, n_heads=8), ["width", "n_heads"]),
    (dict(n_slices=0), ["n_slices"]),
    (dict(n_layers=1.5), ["n_layers"]),
    (dict(dim=0), ["dim"]),
    (dict(mlp_ratio=0), ["mlp_ratio"]),
    (dict(ref=1), ["ref"]),
])
def test_bad_arguments(kwargs, words):
    with pytest.raises(ParameterError) as info:
        models.create("transolver", in_channels=1, out_channels=1, **kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_bad_input():
    model = Transolver(1, 1, **TINY)
    with pytest.raises(ValueError, match="expected x of shape"):
        model(torch.randn(2, 1, 8), grid(8))
    with pytest.raises(ValueError, match="coords"):
        model(torch.randn(2, 1, 8, 8), grid(8, 9))
