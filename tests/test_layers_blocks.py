"""The shared blocks of oplab.layers (pointwise, conv, grid) and the argument checks every
model and layer uses (oplab.errors.check_int, check_ints, check_choice)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from oplab.errors import ParameterError, check_choice, check_int, check_ints
from oplab.layers import (MLP, Pointwise, StackedMLP, append_positions, channel_mlp, check_channels, double_conv,
                          glorot_linear, grid_points, make_activation, mesh)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_pointwise_is_a_linear_map_of_the_channels():
    torch.manual_seed(0)
    layer = Pointwise(3, 2)
    x = torch.randn(2, 3, 5, 4)
    expected = torch.einsum("oi,bixy->boxy", layer.weight, x) + layer.bias[:, None, None]
    torch.testing.assert_close(layer(x), expected)
    assert isinstance(channel_mlp(3, 0, 2, "gelu"), Pointwise)
    assert channel_mlp(3, 8, 2, "tanh")(x).shape == (2, 2, 5, 4)


def test_activations_by_name():
    assert isinstance(make_activation("silu"), nn.SiLU)
    with pytest.raises(ParameterError, match="gelu, relu, tanh, silu"):
        make_activation("swish")


def test_glorot_mlps():
    torch.manual_seed(0)
    linear = glorot_linear(400, 600)
    assert torch.all(linear.bias == 0)
    assert abs(linear.weight.std().item() - math.sqrt(2 / 1000)) < 2e-3
    mlp = MLP(3, [8, 8], 2, "relu", final_activation=True)
    assert [type(m) for m in mlp] == [nn.Linear, nn.ReLU] * 3
    stacked = StackedMLP(3, [8], 2, groups=4, activation="tanh")
    x = torch.randn(5, 3)
    y = stacked(x)  # [5, 4, 2]: group g is its own MLP
    for g in range(4):
        hidden = torch.tanh(x @ stacked.weights[0][g] + stacked.biases[0][g])
        torch.testing.assert_close(y[:, g], hidden @ stacked.weights[1][g] + stacked.biases[1][g])


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_double_conv_keeps_the_grid(dim):
    block = double_conv(dim, 2, 4, mid_channels=6, bias=False)
    assert block[0].out_channels == 6 and block[0].bias is None
    assert block(torch.randn(1, 2, *[6] * dim)).shape == (1, 4, *[6] * dim)


def test_grid_helpers():
    coords = (torch.linspace(0, 1, 3), torch.linspace(0, 2, 4))
    points = grid_points(coords)  # [12, 2], the last axis fastest
    torch.testing.assert_close(mesh(coords, batch=2)[1].reshape(2, -1).T, points)
    x = torch.randn(2, 1, 3, 4)
    assert append_positions(x, coords, "M").shape == (2, 3, 3, 4)
    with pytest.raises(ValueError, match=r"M: expected x of shape \[B, 2, \*S\] with 2 spatial axes"):
        check_channels(x, 2, 2, "M")
    with pytest.raises(ValueError, match="M: coords must be 2 1D tensors"):
        append_positions(x, coords[:1], "M")


def test_argument_checks_name_the_owner_the_argument_and_what_was_expected():
    assert check_int("M", "width", 3) == 3 and check_int("M", "hidden", None, optional=True) is None
    for value in (0, True, 2.0, "2"):
        with pytest.raises(ParameterError, match="^M: width must be a positive int, got"):
            check_int("M", "width", value)
    with pytest.raises(ParameterError, match="M: depth must be a non-negative int or None, got -1"):
        check_int("M", "depth", -1, 0, optional=True)
    assert check_ints("M", "modes", (4, 3), n=2) == [4, 3]
    assert check_ints("M", "patches", 2, n=3, broadcast=True) == [2, 2, 2]
    assert check_ints("M", "hidden", []) == []
    with pytest.raises(ParameterError, match=r"M: grid must be a list of 1 to 3 ints >= 2, got \[4, 1\]"):
        check_ints("M", "grid", [4, 1], n=(1, 3), minimum=2)
    with pytest.raises(ParameterError, match="M: modes must be a non-empty list of positive ints"):
        check_ints("M", "modes", [], n=(1, None))
    with pytest.raises(ParameterError, match="M: patches must be a positive int or a list of 2 positive ints"):
        check_ints("M", "patches", [2, 2, 2], n=2, broadcast=True)
    assert check_choice("M", "dim", 2, (1, 2, 3)) == 2
    with pytest.raises(ParameterError, match=r"M: dim must be one of \[1, 2, 3\], got True"):
        check_choice("M", "dim", True, (1, 2, 3))
