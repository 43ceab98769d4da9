"""The CFDBench baselines (Luo, Chen & Zhang 2023): ResNet (a grid operator) and Auto-FFN (a point
operator). Shapes, exact invariants (translation equivariance and replicate padding of the conv
stack; the factored first layer of the FFN = one linear layer on the concatenation; the grid =
per-sample points), config round trips, argument errors and a few training steps."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from oplab import models
from oplab.errors import ParameterError
from oplab.layers.grid import grid_points
from oplab.models.presets import derive

pytestmark = pytest.mark.usefixtures("one_thread")


def grid(*sizes: int) -> tuple[torch.Tensor, ...]:
    """Cell-centred coordinates of the unit cube."""
    return tuple((torch.arange(n) + 0.5) / n for n in sizes)


def small_resnet(dim: int, **kw) -> models.Operator:
    kw = {"in_channels": 2, "out_channels": 3, "dim": dim, **kw}
    kw = {"width": 4, "blocks": 1, "kernel_size": 3, "hidden": 6,
          **kw}
    return models.create("resnet", **kw)


def small_ffn(n_sensors: int, dim: int, **kw) -> models.Operator:
    return models.create("ffn", n_sensors=n_sensors, dim=dim, **{"out_channels": 2, "width": 8, "depth": 3, **kw})


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("sizes", [(16,), (21,), (12, 9), (6, 5, 4)])
def test_resnet_keeps_the_grid(sizes):
    torch.manual_seed(0)
    model = small_resnet(len(sizes))
    assert model.kind == "grid" and model.reference and not model.resolution_invariant
    y = model(torch.randn(2, 2, *sizes), grid(*sizes))
    assert y.shape == (2, 3, *sizes) and torch.isfinite(y).all()


def test_resnet_defaults_are_cfdbench_s():
    model = models.create("resnet", in_channels=1, out_channels=1)
    assert {k: model.config[k] for k in ("dim", "width", "blocks", "kernel_size", "hidden", "dropout")} == \
        {"dim": 2, "width": 32, "blocks": 4, "kernel_size": 7, "hidden": 64, "dropout": 0.0}
    assert len(model.blocks) == 4 + 2  # lifting block, 4 blocks, output block
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.padding_mode == "replicate" for c in convs if c.kernel_size == (7, 7))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("in_shape, coords", [
    ((3, 1, 20), grid(20)),  # 1D -> 1D, another resolution
    ((3, 1, 20), grid(7)),
    ((3, 2, 6, 5), (torch.linspace(0, 1, 7), torch.linspace(-1, 1, 4))),  # 2D -> 2D
    ((3, 1, 20), (torch.linspace(0, 1, 5), torch.linspace(0, 1, 4))),  # 1D -> 2D (space-time)
])
def test_ffn_shapes(in_shape, coords):
    torch.manual_seed(0)
    n_sensors = in_shape[1] * int(torch.tensor(in_shape[2:]).prod())
    model = small_ffn(n_sensors, len(coords))
    assert model.kind == "point" and model.reference
    y = model(torch.randn(*in_shape), coords)
    assert y.shape == (3, 2, *[len(c) for c in coords]) and torch.isfinite(y).all()
    if len(coords) == 1:
        assert model(torch.randn(*in_shape), coords[0]).shape == y.shape  # a bare 1D tensor is one axis


def test_ffn_defaults_are_cfdbench_s():
    model = models.create("ffn", n_sensors=10, dim=2)
    assert (model.config["width"], model.config["depth"], model.config["activation"]) == (100, 8, "relu")
    linears = [model.first_x, *[m for m in model.rest if isinstance(m, nn.Linear)]]
    assert len(linears) == 8 + 1 and [l.out_features for l in linears] == [100] * 8 + [1]


def test_derive_fills_channels_sensors_and_dimension():
    coords = grid(9, 7)
    assert derive({"name": "resnet"}, (4, 2, 9, 7), (4, 3, 9, 7), coords, (False, True)) == \
        {"name": "resnet", "in_channels": 2, "out_channels": 3, "dim": 2}
    assert derive({"name": "ffn", "width": 16}, (4, 2, 9, 7), (4, 3, 9, 7), coords, (False, True)) == \
        {"name": "ffn", "n_sensors": 126, "out_channels": 3, "dim": 2, "width": 16}
    with pytest.raises(ParameterError, match="dim"):
        derive({"name": "ffn", "dim": 1}, (4, 2, 9, 7), (4, 3, 9, 7), coords, (False, True))


# ----------------------------------------------------------------------------- ResNet invariants


def test_resnet_conv_stack_is_translation_equivariant_away_from_the_boundary():
    """Without positional channels the network is a convolution: shifting a window of a long signal
    by ``s`` cells shifts the output by ``s`` cells wherever the receptive field (``(k - 1)`` cells per
    block, 3 blocks) stays inside both windows."""
    torch.manual_seed(0)
    model = small_resnet(1, positional=False).double()
    radius = (3 - 1) * 3
    signal = torch.randn(2, 2, 60, dtype=torch.float64)
    n, s = 40, 7
    a, b = model(signal[..., :n], None), model(signal[..., s:s + n], None)
    torch.testing.assert_close(b[..., radius:n - radius - s], a[..., radius + s:n - radius], rtol=1e-12, atol=1e-12)
    assert (b[..., :radius] - a[..., s:s + radius]).abs().max() > 1e-6  # the boundary (replicate padding) is seen


@pytest.mark.parametrize("dim", [1, 2])
def test_resnet_replicate_padding_maps_a_constant_field_to_a_constant_field(dim):
    """Replicate padding extends a constant field by itself, so every cell, boundary included, sees
    the same neighbourhood (zero padding would not)."""
    torch.manual_seed(0)
    model = small_resnet(dim, positional=False, kernel_size=5)
    x = torch.ones(1, 2, *[9] * dim) * torch.tensor([0.7, -1.3]).reshape(1, 2, *[1] * dim)
    y = model(x, None)
    torch.testing.assert_close(y, y.flatten(2)[..., :1].reshape(1, 3, *[1] * dim).expand_as(y), rtol=0, atol=1e-6)


def test_resnet_input_skip_adds_the_input():
    torch.manual_seed(0)
    model = small_resnet(2, in_channels=3, input_skip=True)
    with torch.no_grad():
        for p in model.blocks[-1].parameters():  # the output block answers 0
            p.zero_()
    x = torch.randn(2, 3, 8, 6)
    torch.testing.assert_close(model(x, grid(8, 6)), x, rtol=0, atol=0)
    more = small_resnet(2, in_channels=5, input_skip=True)  # a state + 2 extra channels (CFDBench: mask, parameters)
    with torch.no_grad():
        for p in more.blocks[-1].parameters():
            p.zero_()
    x = torch.randn(2, 5, 8, 6)
    torch.testing.assert_close(more(x, grid(8, 6)), x[:, :3], rtol=0, atol=0)
    with pytest.raises(ParameterError, match="input_skip"):
        small_resnet(2, input_skip=True)  # 2 -> 3 channels


def test_resnet_dropout_only_in_training():
    torch.manual_seed(0)
    noisy = small_resnet(2, dropout=0.2)
    plain = small_resnet(2)
    plain.load_state_dict(noisy.state_dict())  # dropout adds no parameters
    x, coords = torch.randn(2, 2, 8, 6), grid(8, 6)
    torch.testing.assert_close(noisy.eval()(x, coords), plain(x, coords), rtol=0, atol=0)
    assert not torch.allclose(noisy.train()(x, coords), plain(x, coords))


def test_resnet_positional_needs_coords_and_argument_errors():
    model = small_resnet(2)
    with pytest.raises(ValueError, match="coords"):
        model(torch.randn(1, 2, 8, 8), None)
    with pytest.raises(ValueError, match="expected x"):
        model(torch.randn(1, 1, 8, 8), grid(8, 8))
    assert small_resnet(2, positional=False)(torch.randn(1, 2, 8, 8), None).shape == (1, 3, 8, 8)
    with pytest.raises(ParameterError, match="dim"):
        models.create("resnet", in_channels=1, out_channels=1, dim=4)
    for bad, match in [({"kernel_size": 4}, "kernel_size"), ({"dropout": 1.0}, "dropout"),
                       ({"width": 0}, "width"), ({"blocks": -1}, "blocks"), ({"positional": 1}, "positional")]:
        with pytest.raises(ParameterError, match=match):
            small_resnet(2, **bad)
    assert len(small_resnet(2, blocks=0).blocks) == 2


# ----------------------------------------------------------------------------- FFN invariants


def test_ffn_factored_first_layer_is_a_linear_layer_on_the_concatenation():
    torch.manual_seed(0)
    model = small_ffn(30, 2).double()
    u = torch.randn(4, 1, 30, dtype=torch.float64)
    points = torch.rand(4, 11, 2, dtype=torch.float64)
    full = nn.Linear(30 + 2, 8).double()
    with torch.no_grad():
        full.weight.copy_(torch.cat([model.first_x.weight, model.first_p.weight], dim=1))
        full.bias.copy_(model.first_x.bias)
    joined = torch.cat([u.reshape(4, 1, 30).expand(4, 11, 30), points], dim=-1)  # [B, P, m + d]
    expected = model.rest(full(joined)).transpose(1, 2)  # [B, C_out, P]
    torch.testing.assert_close(model.forward_points(u, points), expected, rtol=0, atol=1e-6)
    # and in float32 against the float64 reference
    model32 = small_ffn(30, 2)
    model32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    torch.testing.assert_close(model32.forward_points(u.float(), points.float()).double(), expected, rtol=0, atol=1e-6)


def test_ffn_initialisation_is_one_linear_layer_split():
    """The two parts start as one ``nn.Linear(m + d, width)``: uniform in +-1/sqrt(m + d)."""
    torch.manual_seed(0)
    model = small_ffn(500, 2, width=64)
    bound = (500 + 2) ** -0.5
    for w in (model.first_x.weight, model.first_p.weight, model.first_x.bias):
        assert w.abs().max() <= bound
    assert model.first_x.weight.abs().max() > 0.9 * bound


def test_ffn_on_the_grid_equals_forward_points_at_the_grid():
    torch.manual_seed(0)
    coords = (torch.linspace(0, 1, 7), torch.linspace(-1, 1, 4))
    model = small_ffn(30, 2)
    x = torch.randn(3, 2, 15)
    on_grid = model(x, coords)  # [B, C, 7, 4]
    points = grid_points(coords)  # [28, 2]
    order = torch.stack([torch.randperm(28) for _ in range(3)])  # each sample its own order of the points
    per_sample = model.forward_points(x, points[order])  # [B, C, 28]
    expected = torch.gather(on_grid.flatten(2), 2, order[:, None].expand(-1, 2, -1))
    torch.testing.assert_close(per_sample, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.forward_points(x, points), on_grid.flatten(2), rtol=0, atol=1e-6)  # shared


def test_ffn_errors():
    model = small_ffn(30, 2)
    with pytest.raises(ValueError, match="n_sensors=30"):
        model(torch.randn(2, 1, 29), grid(3, 3))
    with pytest.raises(ValueError, match="2 1D tensors"):
        model(torch.randn(2, 1, 30), grid(3))
    with pytest.raises(ValueError, match="points"):
        model.forward_points(torch.randn(2, 1, 30), torch.rand(3, 5, 2))
    for bad, match in [({"width": 0}, "width"), ({"depth": 0}, "depth"), ({"activation": "swish"}, "activation")]:
        with pytest.raises(ParameterError, match=match):
            small_ffn(30, 2, **bad)
    with pytest.raises(ParameterError, match="n_sensors"):
        models.create("ffn", n_sensors=0, dim=1)


# ----------------------------------------------------------------------------- round trips and training


@pytest.mark.parametrize("name", ["resnet", "ffn"])
def test_config_round_trip_gives_identical_outputs(name):
    torch.manual_seed(1)
    model = small_resnet(2, dropout=0.1) if name == "resnet" else small_ffn(2 * 8 * 6, 2)
    model.eval()
    config = json.loads(json.dumps(models.config_of(model)))
    assert config["name"] == name
    twin = models.from_config(config).eval()
    assert type(twin) is type(model)
    assert [(k, v.shape) for k, v in twin.state_dict().items()] == [(k, v.shape) for k, v in model.state_dict().items()]
    x, coords = torch.randn(2, 2, 8, 6), grid(8, 6)
    assert not torch.equal(twin(x, coords), model(x, coords))  # another initialisation ...
    twin.load_state_dict(model.state_dict())
    assert torch.equal(twin(x, coords), model(x, coords))  # ... until the weights are loaded


def _tiny_problem(name: str, n_samples: int = 16, n: int = 24, seed: int = 0):
    """White-noise inputs ``a`` on a 1D grid of ``n`` cells. For the ResNet a local, linear operator,
    ``u = a - (a shifted left + a shifted right) / 2`` (periodic); for the FFN the antiderivative
    ``u(x) = int_0^x a`` (cell sums), the point operators' classic: the FFN must read a query-dependent
    part of the whole frame, which a local stencil does not make easier for it."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n_samples, 1, n, generator=g)
    if name == "resnet":
        return a, a - 0.5 * (a.roll(1, -1) + a.roll(-1, -1))
    return a, a.cumsum(-1) / n


@pytest.mark.parametrize("name, lr, steps", [("resnet", 1e-2, 40), ("ffn", 3e-3, 60)])
def test_a_few_adam_steps_fit_a_tiny_problem(name, lr, steps):
    torch.manual_seed(0)
    a, u = _tiny_problem(name)
    coords = grid(a.shape[-1])
    if name == "resnet":
        model = small_resnet(1, in_channels=1, out_channels=1, width=8, hidden=8)
    else:
        model = small_ffn(a.shape[-1], 1, out_channels=1, width=64, depth=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss = lambda: (model(a, coords) - u).square().mean()  # noqa: E731
    before = loss().item()
    for _ in range(steps):
        optimizer.zero_grad()
        step = loss()
        step.backward()
        optimizer.step()
    after = loss().item()
    print(f"{name}: mse {before:.4f} -> {after:.5f} ({before / after:.1f}x)")
    assert after < before / 4
