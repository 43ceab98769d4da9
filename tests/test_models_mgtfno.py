"""MG-TFNO (multi-grid tensorized FNO): exact patch reassembly, boundary context and
coarse levels against hand-computed references, equivalence with a plain TFNO,
the joint Tucker factorization, chunked (checkpointed) patches, shapes, gradients,
a short training run, argument errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from modelcheck import check_gradient, check_shapes, check_training, grid
from safetensors.torch import load_file, save_file

from oplab import models
from oplab.models import presets
from oplab.errors import ParameterError
from oplab.layers import MultigridPatching
from oplab.models.mgtfno import MGTFNO, joint_ranks

SMALL = dict(width=8, n_layers=2, lifting_channels=16, projection_channels=16)


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ patching
SPLITS = [  # sizes, patches, padding, levels, periodic, boundary
    ((32,), 2, 3, 0, True, "reflect"),
    ((33,), 4, 2, 2, False, "reflect"),  # 33 cells: patches of 9, the last one runs 3 cells past the end
    ((7,), 3, 0.5, 1, False, "zeros"),
    ((32, 32), 2, 4, 1, True, "reflect"),
    ((32, 32), [2, 4], 0.25, 2, [True, False], "replicate"),
    ((17, 12), [2, 3], 3, 1, False, "reflect"),  # uneven along axis 0
    ((33, 33), 4, 0.125, 2, False, "zeros"),
    ((9, 8, 10), [2, 1, 3], 1, 1, [False, True, False], "reflect"),
]


@pytest.mark.parametrize("sizes,patches,padding,levels,periodic,boundary", SPLITS)
def test_stitch_of_split_is_exact(sizes, patches, padding, levels, periodic, boundary):
    torch.manual_seed(0)
    mg = MultigridPatching(len(sizes), patches, padding, levels, periodic, boundary)
    u = torch.randn(3, 2, *sizes)
    lay = mg.layout(sizes)
    parts = mg.split(u)
    assert parts.shape == (3 * lay.n_patches, 2 * (levels + 1), *lay.width)
    assert torch.equal(mg.stitch(parts[:, :2], sizes), u)  # bit for bit
    assert torch.equal(mg.assemble(mg.crop(parts[:, :2], sizes), sizes), u)


@pytest.mark.parametrize("boundary,mode", [("reflect", "reflect"), ("replicate", "replicate"), ("zeros", "constant")])
def test_context_at_a_non_periodic_edge_is_torch_padding(boundary, mode):
    torch.manual_seed(1)
    u = torch.randn(2, 3, 20, 16)
    mg = MultigridPatching(2, [2, 2], 3, 0, False, boundary)
    parts = mg.split(u).reshape(2, 2, 2, 3, 16, 14)  # [B, P_0, P_1, C, w_0, w_1]
    padded = F.pad(u, (3, 3, 3, 3), mode=mode)  # [B, C, 26, 22]
    assert torch.equal(parts[:, 0, 0], padded[:, :, :16, :14])
    assert torch.equal(parts[:, 1, 1], padded[:, :, 10:, 8:])


def test_periodic_context_and_coarse_levels_equal_pooled_rolled_field():
    """Level ``l`` of patch (i, j) is the average pooling (by ``2^l``) of the ``2^l w``-cell window
    centred on the padded patch, cut from the periodically rolled (and tiled) field."""
    torch.manual_seed(2)
    n, s, p, levels = 32, 16, 4, 2
    w = s + 2 * p
    u = torch.randn(2, 3, n, n, dtype=torch.float64)
    mg = MultigridPatching(2, 2, p, levels, True)
    parts = mg.split(u).reshape(2, 2, 2, 3 * (levels + 1), w, w)
    for i, j in [(0, 0), (1, 0), (1, 1)]:
        for level in range(levels + 1):
            k = 2**level
            start = [c * s - p - ((k - 1) * w) // 2 for c in (i, j)]
            rolled = torch.roll(u, shifts=(-start[0], -start[1]), dims=(2, 3))
            reps = math.ceil(k * w / n)
            window = rolled.repeat(1, 1, reps, reps)[:, :, : k * w, : k * w]
            expected = F.avg_pool2d(window, k) if k > 1 else window
            got = parts[:, i, j, 3 * level : 3 * (level + 1)]
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
            if level == 0:
                assert torch.equal(got, expected)


def test_positions_are_the_grid_extended_linearly():
    mg = MultigridPatching(2, 2, 2, 0, True)
    coords = grid(8, 12)
    pos = mg.positions(coords)  # [4, 2, 8, 10]
    assert pos.shape == (4, 2, 8, 10)
    torch.testing.assert_close(pos[0, 0, :, 0], (torch.arange(-2, 6) + 0.5) / 8)
    torch.testing.assert_close(pos[3, 1, 0, :], (torch.arange(4, 14) + 0.5) / 12)
    assert torch.equal(pos[2, 0, 2:6, 0], coords[0][4:8])


def test_patching_errors_name_the_grid_and_patches():
    mg = MultigridPatching(2, [4, 2])
    with pytest.raises(ParameterError, match=r"grid \[3, 8\].*patches \[4, 2\]"):
        mg.split(torch.randn(1, 1, 3, 8))
    with pytest.raises(ParameterError, match="boundary"):
        MultigridPatching(1, 2, boundary="wrap")
    with pytest.raises(ParameterError, match="patches"):
        MultigridPatching(2, [2, 2, 2])


# --------------------------------------------------------------------- model
def build(dim: int = 2, **kw) -> MGTFNO:
    kw = {"modes": [6] * dim, **SMALL, **kw}
    return models.create("mgtfno", in_channels=2, out_channels=3, **kw)


def _same_pointwise(dst, src) -> None:
    for name in ("lifting", "skips", "projection"):
        getattr(dst, name).load_state_dict(getattr(src, name).state_dict())


@pytest.mark.parametrize("sizes", [(24,), (20, 16)])
def test_one_patch_without_context_is_a_plain_tfno(sizes):
    torch.manual_seed(3)
    dim = len(sizes)
    tfno = models.create("tfno", in_channels=2, out_channels=3, modes=[6] * dim, **SMALL)
    mg = build(dim, patches=1, levels=0, padding=0, joint_factorization=False)
    mg.inner.load_state_dict(tfno.state_dict())  # lifting sees [x, positions] in both
    x, coords = torch.randn(2, 2, *sizes), grid(*sizes)
    torch.testing.assert_close(mg(x, coords), tfno(x, coords), rtol=0, atol=1e-6)


def test_joint_factorization_is_one_tucker_tensor_for_all_layers():
    torch.manual_seed(4)
    mg = build(2, patches=1, levels=0, padding=0, n_layers=3)
    full = mg.joint_weight()  # [layers, width, width, 12, 6]
    assert full.shape == (3, 8, 8, 12, 6) and mg.joint_weight.rank[0] == 3
    for t, layer in enumerate(mg.inner.spectral):
        torch.testing.assert_close(layer.weight(), full[t], rtol=1e-5, atol=1e-7)
    # the same network with those weights written out densely per layer
    fno = models.create("fno", in_channels=2, out_channels=3, modes=[6, 6], **{**SMALL, "n_layers": 3})
    _same_pointwise(fno, mg.inner)
    with torch.no_grad():
        for t, layer in enumerate(fno.spectral):
            layer.weight.weight.copy_(torch.view_as_real(full[t]))
    x, coords = torch.randn(2, 2, 16, 16), grid(16, 16)
    torch.testing.assert_close(mg(x, coords), fno(x, coords), rtol=1e-5, atol=1e-6)
    # parameters: the shared core and factors once, below a tenth of the dense weights
    dense = 3 * 8 * 8 * 12 * 6 * 2
    joint = sum(p.numel() for p in mg.joint_weight.parameters())
    assert joint < 0.1 * dense
    assert mg.n_params() == sum(p.numel() for p in mg.parameters())
    r = joint_ranks((4, 32, 32, 24, 12), 0.1)
    assert r[0] == 4 and math.prod(r) + sum(a * b for a, b in zip((4, 32, 32, 24, 12), r)) <= 0.1 * 4 * 32 * 32 * 24 * 12


@pytest.mark.parametrize("dim", [1, 2])
def test_output_shape_at_two_resolutions(dim):
    torch.manual_seed(5)
    model = build(dim, levels=2)
    shapes = {1: [(32,), (45,)], 2: [(32, 32), (40, 27)]}[dim]
    check_shapes(model, 2, 3, shapes)


def test_gradient():
    torch.manual_seed(6)
    model = build(2, modes=[3, 3], patches=2, levels=1, padding=1, width=4, lifting_channels=None,
                  projection_channels=4, n_layers=2)
    check_gradient(model, 2, (8, 8))


def test_chunked_patches_equal_all_at_once():
    torch.manual_seed(7)
    whole = build(2, patches=[2, 3], levels=1, padding=2, periodic=[True, False]).double()
    chunked = build(2, patches=[2, 3], levels=1, padding=2, periodic=[True, False], patch_batch=4).double()
    chunked.load_state_dict(whole.state_dict())
    x, coords = torch.randn(3, 2, 20, 18, dtype=torch.float64), tuple(c.double() for c in grid(20, 18))
    y_whole, y_chunked = whole(x, coords), chunked(x, coords)  # 18 patches in chunks of 4 (the last of 2)
    torch.testing.assert_close(y_chunked, y_whole, rtol=0, atol=1e-6)
    y_whole.square().mean().backward()
    y_chunked.square().mean().backward()
    grads = dict(whole.named_parameters())
    for name, p in chunked.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=0, atol=1e-6, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(chunked(x, coords), y_whole.detach(), rtol=0, atol=1e-6)


def test_config_and_safetensors_round_trip(tmp_path):
    torch.manual_seed(8)
    model = build(2, patches=[2, 1], padding=0.25, periodic=[False, True], boundary="zeros", patch_batch=3)
    config = models.config_of(model)
    save_file(model.state_dict(), tmp_path / "w.safetensors")  # no shared tensors in the state dict
    clone = models.from_config(config)
    clone.load_state_dict(load_file(tmp_path / "w.safetensors"))
    x, coords = torch.randn(2, 2, 16, 12), grid(16, 12)
    assert torch.equal(clone(x, coords), model(x, coords))


def test_defaults_follow_the_padded_patch():
    d = MGTFNO.defaults((32, 32), (False, True))
    assert d["modes"] == [10, 10]  # patch 16 + 2 * 2 context = 20 cells
    assert d["patches"] == [2, 2] and d["periodic"] == [False, True]
    assert MGTFNO.defaults((64, 64), (False, False))["modes"] == [12, 12]
    assert d["domain_padding"] == 0.125 and MGTFNO.defaults((8,), (True,))["domain_padding"] == 0.0
    assert MGTFNO.defaults((17,), (True,))["modes"] == [5]  # patch 9 + 2 * 1 context = 11 cells
    config = presets.derive({"name": "mgtfno"}, (4, 1, 32, 32), (4, 2, 32, 32), None, (False, False))
    model = models.from_config(config)
    assert model(torch.randn(1, 1, 32, 32), grid(32, 32)).shape == (1, 2, 32, 32)


def test_training_on_darcy(darcy17, tmp_path):
    data = darcy17  # 17 cells: patches of 9, the second one runs a cell past the edge
    kwargs = dict(modes=[6, 6], patches=2, levels=1, padding=0.25, periodic=False, patch_batch=16, domain_padding=0.25, **SMALL)
    check_training("mgtfno", kwargs, tmp_path, data, epochs=30, lr=1e-2, factor=0.5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(modes=[0, 4]), "modes"),
    (dict(patches=0), "patches"),
    (dict(patches=[2, 2, 2]), "patches"),
    (dict(levels=-1), "levels"),
    (dict(padding=-1), "padding"),
    (dict(padding=True), "padding"),
    (dict(boundary="wrap"), "boundary"),
    (dict(periodic="yes"), "periodic"),
    (dict(patch_batch=0), "patch_batch"),
    (dict(factorization="cp"), "joint_factorization"),
    (dict(factorization="cp", rank=-1.0, joint_factorization=False), "rank"),
    (dict(width=0), "width"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        build(2, **kwargs)


def test_bad_inputs():
    model = build(2, patches=4)
    with pytest.raises(ParameterError, match=r"grid \[3, 16\].*patches \[4, 4\]"):
        model(torch.randn(1, 2, 3, 16), grid(3, 16))
    with pytest.raises(ValueError, match="coords"):
        model(torch.randn(1, 2, 16, 16))
    with pytest.raises(ValueError, match="coords"):
        model(torch.randn(1, 2, 16, 16), grid(16, 12))
    with pytest.raises(ValueError, match=r"\[B, 2, \*S\]"):
        model(torch.randn(1, 3, 16, 16), grid(16, 16))
