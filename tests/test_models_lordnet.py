"""LordNet (Huang et al. 2022): the low-rank mixing layer, shapes on the trained grid and
resampled ones, the resampling path, gradients, supervised and physics-only (data-free)
Darcy training, defaults from the data, and argument errors."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from modelcheck import check_gradient, check_shapes, check_training

from oplab import models
from oplab.errors import ParameterError
from oplab.models.lordnet import LordMixing, resample
from oplab.models.presets import derive


pytestmark = pytest.mark.usefixtures("one_thread")



def vertices(*sizes: int, dtype=torch.float32) -> tuple[torch.Tensor, ...]:
    """oplab's non-periodic grids: both end points of [0, 1]."""
    return tuple(torch.linspace(0, 1, n, dtype=dtype) for n in sizes)


def small(grid=(12, 10), **kw) -> models.Operator:
    grid = list(grid) if isinstance(grid, tuple) else grid  # anything else as given (argument errors)
    args = dict(in_channels=2, out_channels=3, grid=grid, width=8, rank=2, n_layers=2, projection_channels=8) | kw
    return models.create("lordnet", **args)


def test_mixing_is_a_matrix_product_per_axis_and_group():
    torch.manual_seed(0)
    mixing = LordMixing(6, (5, 4), rank=3, init_noise=1.0).double()
    v = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    A, B = mixing.matrices
    expected = torch.stack([A[c // 2] @ v[:, c] @ B[c // 2].T for c in range(6)], dim=1)  # groups of 2 channels
    torch.testing.assert_close(mixing(v), expected)
    # the same as the dense layer it approximates: (A_k kron B_k) on the flattened grid
    dense = torch.kron(A[1], B[1])
    torch.testing.assert_close(mixing(v)[:, 3].reshape(2, -1), v[:, 3].reshape(2, -1) @ dense.T)


@pytest.mark.parametrize("grid,shapes,periodic", [
    ((12, 10), [(12, 10), (24, 20), (7, 9)], None),
    ((16,), [(16,), (32,), (11,)], [True]),
    ((5, 6, 4), [(5, 6, 4), (8, 8, 8)], [True, False, True]),
])
def test_shapes_on_the_trained_grid_and_resampled(grid, shapes, periodic):
    torch.manual_seed(0)
    check_shapes(small(grid, periodic=periodic), 2, 3, shapes)


def test_resampled_forward_is_interpolate_run_interpolate():
    torch.manual_seed(0)
    model = small((12, 10)).double()
    x = torch.randn(2, 2, 23, 31, dtype=torch.float64)
    direct = model(x, vertices(23, 31, dtype=torch.float64))
    native = F.interpolate(x, size=(12, 10), mode="bilinear", align_corners=True)
    explicit = F.interpolate(model(native, vertices(12, 10, dtype=torch.float64)), size=(23, 31),
                             mode="bilinear", align_corners=True)
    torch.testing.assert_close(direct, explicit, rtol=1e-10, atol=1e-12)
    # on the trained grid nothing is resampled
    assert resample(native, (12, 10), (False, False)) is native


def test_periodic_resampling_wraps_around():
    x = torch.randn(1, 1, 8, dtype=torch.float64)  # samples at j / 8, right end left out
    up = resample(x, (16,), (True,))
    torch.testing.assert_close(up[..., 0::2], x)
    torch.testing.assert_close(up[..., 1::2], 0.5 * (x + x.roll(-1, -1)))  # the last one between x_7 and x_0
    torch.testing.assert_close(resample(up, (8,), (True,)), x)
    vertex = resample(x, (15,), (False,))  # both end points: 8 -> 15 points keeps every other one
    torch.testing.assert_close(vertex[..., 0::2], x)


@pytest.mark.parametrize("sizes", [(6, 5), (7, 9)])
def test_gradient_on_the_trained_grid_and_through_resampling(sizes):
    torch.manual_seed(0)
    check_gradient(small((6, 5), width=4, in_channels=1), 1, sizes)


def test_supervised_training_on_darcy(darcy17, tmp_path):
    check_training("lordnet", dict(grid=[17, 17], width=16, rank=4, n_layers=2, projection_channels=16),
                   tmp_path, darcy17, epochs=12, lr=5e-3, factor=0.5)


def test_physics_only_training_learns_darcy_without_solutions(darcy17, tmp_path):
    """The data-free setting LordNet was made for: trained on the discrete Darcy residual
    (``physics_only``) with the training solutions overwritten by NaN, the relative L2 error
    against the true test solutions still falls (measured 7.99 -> 0.34)."""
    poisoned = tmp_path / "darcy17-no-solutions.h5"
    shutil.copy(darcy17, poisoned)
    with h5py.File(poisoned, "r+") as f:
        f["outputs"][:40] = np.nan  # check_training trains on the first 40, tests on the last 8
    result = check_training("lordnet", dict(grid=[17, 17], width=16, rank=4, n_layers=2, projection_channels=16),
                            tmp_path, poisoned, epochs=60, lr=1e-2, factor=0.2, physics_only=True)
    assert result["errors"][-1] < 0.5, result["errors"]


def test_defaults_from_the_data():
    cls = models.get("lordnet")
    assert cls.defaults((64, 32), (False, True)) == {"grid": [64, 32], "periodic": [False, True]}
    cfg = derive({"name": "lordnet", "width": 8, "rank": 2}, (5, 1, 17, 17), (5, 1, 17, 17), None, (False, False))
    assert cfg == {"name": "lordnet", "in_channels": 1, "out_channels": 1, "grid": [17, 17],
                   "periodic": [False, False], "width": 8, "rank": 2}
    model = models.from_config(cfg)
    assert model.mixing[0].matrices[0].shape == (2, 17, 17)


@pytest.mark.parametrize("kw,match", [
    (dict(grid=17), "grid"), (dict(grid=[17, 1]), "grid"), (dict(grid=[4, 4, 4, 4]), "grid"), (dict(grid=[]), "grid"),
    (dict(width=10, rank=4), "multiple of rank"), (dict(rank=0), "rank"), (dict(n_layers=0), "n_layers"),
    (dict(periodic=[True]), "periodic"), (dict(periodic=[1, 0]), "periodic"),
    (dict(projection_channels=-1), "projection_channels"), (dict(init_noise=-0.1), "init_noise"),
    (dict(activation="swish"), "activation"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ParameterError, match=match):
        small(**kw)


def test_wrong_input_is_an_error():
    model = small((12, 10))
    with pytest.raises(ValueError, match=r"\[B, 2, \*S\] with 2 spatial axes"):
        model(torch.randn(1, 2, 12), vertices(12))
    with pytest.raises(ValueError, match="coords"):
        model(torch.randn(1, 2, 12, 10))
