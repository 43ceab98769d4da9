"""MgNO (He, Liu & Xu 2024): shapes on even and odd grids in 1D/2D/3D, gradients, a short
Darcy training run, the multigrid layer's structure (periodic shift equivariance, linearity,
the prolongation), defaults from the data, and argument errors."""

from __future__ import annotations

import pytest
import torch
from modelcheck import check_gradient, check_shapes, check_training

from oplab import models
from oplab.errors import ParameterError
from oplab.layers.multigrid import Prolongation, VCycle
from oplab.models.presets import derive


pytestmark = pytest.mark.usefixtures("one_thread")



def small(dim: int = 2, **kw) -> models.Operator:
    args = dict(in_channels=2, out_channels=3, dim=dim, width=6, n_layers=2, levels=3) | kw
    return models.create("mgno", **args)


@pytest.mark.parametrize("dim,shapes", [(1, [(16,), (33,), (21,)]), (2, [(16, 16), (17, 17), (33, 20)]),
                                        (3, [(8, 8, 8), (9, 7, 5)])])
@pytest.mark.parametrize("padding_mode", ["zeros", "circular", "replicate"])
def test_shapes_on_even_and_odd_grids(dim, shapes, padding_mode):
    torch.manual_seed(0)
    check_shapes(small(dim, padding_mode=padding_mode), 2, 3, shapes)


def test_shapes_with_positions_post_smoothing_and_zero_coarse_guess():
    torch.manual_seed(0)
    model = small(positional=True, pre_smooth=[2, 0, 1], post_smooth=1, coarse_init="zero", padding_mode="reflect")
    check_shapes(model, 2, 3, [(16, 16), (13, 18)])


@pytest.mark.parametrize("kw,sizes", [(dict(), (9, 8)),
                                      (dict(dim=1, padding_mode="circular", post_smooth=1, positional=True), (12,)),
                                      (dict(pre_smooth=[0, 1, 1], post_smooth=[1, 0, 0], coarse_init="zero"), (7, 6))])
def test_gradient(kw, sizes):
    torch.manual_seed(0)
    check_gradient(small(**({"dim": len(sizes)} | kw)), 2, sizes)


def test_training_on_darcy_lowers_the_error(darcy17, tmp_path):
    result = check_training("mgno", dict(width=8, n_layers=2, levels=3), tmp_path, darcy17, epochs=12, lr=5e-3,
                            factor=0.5)
    assert result["n_params"] < 15_000


@pytest.mark.parametrize("sizes,shift", [((32,), (4,)), ((16, 24), (4, 12))])
def test_circular_padding_commutes_with_shifts_by_the_coarsest_cell(sizes, shift):
    """Periodic boundaries: a shift by a multiple of 2**(levels-1) cells shifts the output alike
    (every stride-2 map sees the same cells); with zero padding, or by one cell (the coarse grids
    do not shift by half a cell), it does not."""
    torch.manual_seed(0)
    dims = tuple(range(2, 2 + len(sizes)))
    x = torch.randn(2, 2, *sizes, dtype=torch.float64)
    for mode in ("circular", "zeros"):
        model = small(len(sizes), padding_mode=mode).double()
        y = model(x)
        shifted = model(x.roll(shift, dims))
        error = (shifted - y.roll(shift, dims)).abs().max().item()
        if mode == "circular":
            assert error < 1e-12, error
            by_one = (model(x.roll(1, 2)) - y.roll(1, 2)).abs().max().item()
            assert by_one > 1e-3 * y.abs().max().item(), by_one
        else:
            assert error > 1e-3 * y.abs().max().item(), error


def test_vcycle_is_linear_and_the_finest_level_alone_is_one_convolution():
    torch.manual_seed(0)
    cycle = VCycle(3, 5, 2, pre_smooth=[1, 1, 2], post_smooth=[1, 0, 0]).double()
    f, g = torch.randn(2, 2, 3, 11, 10, dtype=torch.float64)
    torch.testing.assert_close(cycle(2.0 * f - 3.0 * g), 2.0 * cycle(f) - 3.0 * cycle(g))
    single = VCycle(3, 5, 2, pre_smooth=[1], post_smooth=[0]).double()
    assert [n for n, _ in single.named_parameters()] == ["levels.0.S.0.weight"]  # no unused A
    torch.testing.assert_close(single(f), single.levels[0].S[0](f))


@pytest.mark.parametrize("fine", [(10, 7), (9, 12)])
def test_prolongation_with_zeros_is_the_transposed_convolution(fine):
    torch.manual_seed(0)
    prolong = Prolongation(4, 2).double()
    coarse = torch.randn(2, 4, *[(n + 1) // 2 for n in fine], dtype=torch.float64)
    reference = torch.nn.functional.conv_transpose2d(
        coarse, prolong.weight, stride=2, padding=1,
        output_padding=[n - (2 * ((n + 1) // 2) - 1) for n in fine])
    torch.testing.assert_close(prolong(coarse, fine), reference)
    assert reference.shape[2:] == fine


def test_defaults_from_the_data():
    cls = models.get("mgno")
    assert cls.defaults((64, 64), (False, False)) == {"dim": 2, "levels": 5, "padding_mode": "zeros"}
    assert cls.defaults((17, 17), (True, True)) == {"dim": 2, "levels": 3, "padding_mode": "circular"}
    assert cls.defaults((421, 421), (True, False))["levels"] == 6
    assert cls.defaults((1024,), (True,)) == {"dim": 1, "levels": 6, "padding_mode": "circular"}
    cfg = derive({"name": "mgno", "width": 8}, (5, 1, 33, 33), (5, 1, 33, 33), None, (False, False))
    assert cfg == {"name": "mgno", "in_channels": 1, "out_channels": 1, "dim": 2, "levels": 4,
                   "padding_mode": "zeros", "width": 8}
    model = models.from_config(cfg)
    assert len(model.cycles[0].levels) == 4 and model.config["width"] == 8


@pytest.mark.parametrize("kw,match", [
    (dict(dim=4), "dim"), (dict(width=0), "width"), (dict(n_layers=1.5), "n_layers"), (dict(levels=0), "levels"),
    (dict(levels=40), "levels"), (dict(pre_smooth=[1, 1]), "pre_smooth"), (dict(pre_smooth=-1), "pre_smooth"),
    (dict(post_smooth=True), "post_smooth"), (dict(pre_smooth=0, post_smooth=0), "smoothing step"),
    (dict(padding_mode="periodic"), "padding_mode"), (dict(coarse_init="linear"), "coarse_init"),
    (dict(activation="swish"), "activation"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ParameterError, match=match):
        small(**kw)


def test_wrong_input_is_an_error():
    model = small()
    with pytest.raises(ValueError, match=r"\[B, 2, \*S\] with 2 spatial axes"):
        model(torch.randn(2, 2, 16))
    with pytest.raises(ValueError, match="coords"):
        small(positional=True)(torch.randn(1, 2, 8, 8))
