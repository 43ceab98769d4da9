"""Grid operators (FNO, TFNO, U-Net): shapes at several resolutions, config and
safetensors round trips, parameter counts, a short training run, argument errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from oplab import models
from oplab.errors import ParameterError


pytestmark = pytest.mark.usefixtures("one_thread")


def grid(*sizes: int) -> tuple[torch.Tensor, ...]:
    """Cell-centred coordinates of the unit cube."""
    return tuple((torch.arange(n) + 0.5) / n for n in sizes)


SMALL = {
    "fno": dict(width=8, n_layers=2, lifting_channels=16, projection_channels=16),
    "tfno": dict(width=8, n_layers=2, lifting_channels=16, projection_channels=16),
}


def build(name: str, dim: int, **kw) -> models.Operator:
    if name == "unet":
        return models.create("unet", in_channels=2, out_channels=3, dim=dim, width=4, depth=2, **kw)
    modes = {1: [6], 2: [5, 4], 3: [3, 3, 2]}[dim]
    return models.create(name, in_channels=2, out_channels=3, modes=modes, **SMALL[name], **kw)


RESOLUTIONS = {1: [(16,), (32,), (21,)], 2: [(16, 16), (32, 32), (17, 12)], 3: [(8, 8, 8), (16, 16, 16), (9, 7, 10)]}


@pytest.mark.parametrize("name", ["fno", "tfno", "unet"])
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_output_shape_at_several_resolutions(name, dim):
    torch.manual_seed(0)
    model = build(name, dim)
    assert model.kind == "grid" and model.reference
    for sizes in RESOLUTIONS[dim]:
        y = model(torch.randn(2, 2, *sizes), grid(*sizes))
        assert y.shape == (2, 3, *sizes)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["fno", "tfno", "unet"])
def test_config_and_safetensors_round_trip(name, tmp_path):
    torch.manual_seed(1)
    model = build(name, 2)
    config = json.loads(json.dumps(models.config_of(model)))  # as config.json stores it
    assert config["name"] == name
    x, coords = torch.randn(2, 2, 16, 12), grid(16, 12)

    rebuilt = models.from_config(config)
    assert type(rebuilt) is type(model)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt(x, coords), model(x, coords), rtol=0, atol=0)

    save_file(model.state_dict(), tmp_path / "weights.safetensors")
    loaded = models.from_config(config)
    loaded.load_state_dict(load_file(tmp_path / "weights.safetensors"))
    torch.testing.assert_close(loaded(x, coords), model(x, coords), rtol=0, atol=0)


def test_tfno_has_far_fewer_parameters_than_fno():
    fno = models.create("fno", in_channels=1, out_channels=1, modes=[12, 12], width=32, n_layers=4)
    tfno = models.create("tfno", in_channels=1, out_channels=1, modes=[12, 12], width=32, n_layers=4)
    assert tfno.config["factorization"] == "tucker" and tfno.config["rank"] == 0.1
    ratio = tfno.n_params() / fno.n_params()
    print(f"FNO {fno.n_params():,} parameters, TFNO (tucker, rank 0.1) {tfno.n_params():,}: ratio {ratio:.3f}")
    assert ratio < 0.5


def _smoothing_data(n_samples: int = 32, n: int = 64, seed: int = 0):
    """a: random periodic functions; u = (1 - Δ/(2π·4)²)^{-1} a, a fixed spectral multiplier."""
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(n // 2 + 1, dtype=torch.float64)
    c = torch.complex(*(torch.randn(n_samples, n // 2 + 1, generator=g, dtype=torch.float64) for _ in range(2)))
    c = c / (1 + k) ** 1.5
    c[:, 0] = 0
    a, u = torch.fft.irfft(c, n=n), torch.fft.irfft(c / (1 + (k / 4) ** 2), n=n)
    scale = a.std()
    return (a / scale).float()[:, None], (u / scale).float()[:, None]


def _relative_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)).mean()


@pytest.mark.parametrize(
    "name, kwargs, lr",
    [
        ("fno", dict(modes=[16], width=16, n_layers=2, lifting_channels=32, projection_channels=32), 1e-2),
        ("tfno", dict(modes=[16], width=16, n_layers=2, lifting_channels=32, projection_channels=32), 1e-2),
        ("unet", dict(dim=1, width=8, depth=3), 3e-3),
        ("anie", dict(dim=1, width=16, n_heads=2, iterations=4), 1e-2),
    ],
)
def test_short_training_run_learns_a_smoothing_operator(name, kwargs, lr):
    torch.manual_seed(0)
    a, u = _smoothing_data()
    coords = grid(a.shape[-1])
    model = models.create(name, in_channels=1, out_channels=1, **kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    with torch.no_grad():
        before = _relative_l2(model(a, coords), u).item()
    for _ in range(60):
        optimizer.zero_grad()
        loss = _relative_l2(model(a, coords), u)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = _relative_l2(model(a, coords), u).item()
    print(f"{name}: relative L2 {before:.3f} -> {after:.4f} ({before / after:.1f}x)")
    assert after < before / 3


@pytest.mark.parametrize("dim", [1, 2])
def test_padding_keeps_output_shape(dim):
    torch.manual_seed(2)
    model = build("fno", dim, padding=0.25)
    plain = build("fno", dim)
    plain.load_state_dict(model.state_dict())  # padding adds no parameters
    sizes = (20,) * dim
    x = torch.randn(2, 2, *sizes)
    y = model(x, grid(*sizes))
    assert y.shape == (2, 3, *sizes)
    assert not torch.allclose(y, plain(x, grid(*sizes)))


def test_runtime_n_modes_on_the_model():
    model = build("fno", 2)
    model.n_modes = [2, 2]
    assert all(layer.n_modes == (2, 2) for layer in model.spectral)
    assert model(torch.randn(1, 2, 16, 16), grid(16, 16)).shape == (1, 3, 16, 16)


@pytest.mark.parametrize("name", ["fno", "tfno", "unet"])
def test_positional_needs_coords(name):
    model = build(name, 2)
    with pytest.raises(ValueError, match="coords"):
        model(torch.randn(1, 2, 16, 16), None)
    with pytest.raises(ValueError, match="coords"):
        model(torch.randn(1, 2, 16, 16), grid(16, 12))
    with pytest.raises(ValueError, match="expected x"):
        model(torch.randn(1, 1, 16, 16), grid(16, 16))
    free = build(name, 2, positional=False)
    assert free(torch.randn(1, 2, 16, 16), None).shape == (1, 3, 16, 16)


def test_argument_errors_name_the_argument():
    with pytest.raises(ParameterError, match="foo") as info:
        models.create("fno", foo=1)
    assert "modes" in str(info.value) and "width" in str(info.value)
    with pytest.raises(ParameterError, match="activation"):
        models.create("fno", in_channels=1, out_channels=1, modes=[4], activation="swish")
    with pytest.raises(ParameterError, match="modes"):
        models.create("fno", in_channels=1, out_channels=1, modes=4)
    with pytest.raises(ParameterError, match="dim"):
        models.create("unet", in_channels=1, out_channels=1, dim=4)


def test_model_classes_are_importable_from_the_package():
    from oplab.models import FNO, TFNO, DeepONet, UNet  # noqa: F401
    from oplab import models

    assert models.get("fno") is FNO and models.get("deeponet") is DeepONet
    with pytest.raises(AttributeError):
        models.NoSuchModel


# ----------------------------------------------------------------------------- the FFT's period


def _smooth_field(n: int):
    """A smooth field on ``n`` x ``n`` nodes holding both ends of [0, 1] (oplab's non-periodic grids)."""
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(x, x, indexing="ij")
    return (torch.sin(2 * gx + 1) * torch.cos(3 * gy) + gx * gy)[None, None], (x, x)


def test_period_leaves_the_training_grid_unchanged_bit_for_bit():
    from oplab.models.fno import grid_period

    torch.manual_seed(0)
    a, coords = _smooth_field(17)
    model = models.create("fno", in_channels=1, out_channels=1, modes=[6, 6], width=8, n_layers=2).double()
    with torch.no_grad():
        plain = model(a, coords)
        model.period = tuple(grid_period(coords))
        assert torch.equal(model(a, coords), plain)
        assert model._gaps((33, 33), _smooth_field(33)[1]) == [1, 1]  # 17/16 of the interval = 34 cells of 1/32


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_period_makes_a_finer_node_grid_agree_with_the_training_grid(seed):
    """On grids holding both ends of the interval the FFT spans n h = n / (n - 1): 17/16 on 17 nodes,
    33/32 on 33. With the 17-node grid's period the 33-node grid is embedded in the same torus (one
    interpolated sample in the wrap gap), and the outputs at the common nodes agree about twice as well
    (untrained model, smooth input; a trained Darcy FNO: benchmarks/RESULTS.md, issue 22)."""
    from oplab.models.fno import grid_period

    torch.manual_seed(seed)
    model = models.create("fno", in_channels=1, out_channels=1, modes=[6, 6], width=8, n_layers=2).double()
    (a17, c17), (a33, c33) = _smooth_field(17), _smooth_field(33)
    gaps = {}
    for label, period in (("native", None), ("period", tuple(grid_period(c17)))):
        model.period = period
        with torch.no_grad():
            coarse, fine = model(a17, c17), model(a33, c33)[..., ::2, ::2]
        gaps[label] = ((fine - coarse).norm() / coarse.norm()).item()
    assert gaps["period"] < 0.6 * gaps["native"], gaps


def test_training_sets_the_period_from_the_training_grid():
    from oplab.models.presets import derive

    coords = (torch.linspace(0, 1, 16), torch.linspace(0, 2, 16))
    cfg = derive({"name": "fno"}, (4, 1, 16, 16), (4, 1, 16, 16), coords, (False, False))
    assert cfg["period"] == pytest.approx([16 / 15, 32 / 15])
    assert derive({"name": "fno", "period": None}, (4, 1, 16, 16), (4, 1, 16, 16), coords, (False, False))["period"] is None
    assert "period" not in derive({"name": "unet"}, (4, 1, 16, 16), (4, 1, 16, 16), coords, (False, False))
    model = models.from_config(cfg)
    assert models.from_config(models.config_of(model)).period == model.period
    with pytest.raises(ParameterError, match="period"):
        models.create("fno", in_channels=1, out_channels=1, modes=[4, 4], period=[1.0, 0.0])
    with pytest.raises(ParameterError, match="period"):
        models.create("fno", in_channels=1, out_channels=1, modes=[4, 4], period=[1.0])


def test_exporting_an_fno_with_a_period_needs_the_grids_spacing():
    """``torch.export`` sees the coordinates as graph values: without the exporter's grid description
    (``export_spans``, which ``oplab export`` sets) an FNO with a period refuses, rather than silently
    answering with each grid's own period; ``torch.jit.trace`` reads its concrete coordinates."""
    from oplab.models.fno import grid_period

    torch.manual_seed(0)
    model = models.create("fno", in_channels=1, out_channels=1, modes=[4, 4], width=8, n_layers=1,
                          period=grid_period((torch.linspace(0, 1, 17),) * 2)).eval()
    x, coords = torch.randn(1, 1, 33, 33), (torch.linspace(0, 1, 33),) * 2

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x, (torch.linspace(0, 1, 33),) * 2)

    with pytest.raises(Exception, match="export_spans"):
        torch.export.export(Fixed(), (x,), strict=False)
    with torch.no_grad():
        want = model(x, coords)
        traced = torch.jit.trace(Fixed(), (x,), check_trace=False)
        torch.testing.assert_close(traced(x), want, rtol=1e-5, atol=1e-6)
        model.export_spans = [(1.0, False), (1.0, False)]
        program = torch.export.export(Fixed(), (x,), strict=False)
        torch.testing.assert_close(program.module()(x), want, rtol=1e-5, atol=1e-6)
