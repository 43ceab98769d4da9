"""Latent Spectral Model: shapes on odd and even grids in 1-3D, gradients, a short
Darcy training with checkpoint round trip, the neural spectral block's
invariants (patch locality, masked latent attention, the basis-operator
formula) and argument errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from modelcheck import check_gradient, check_shapes, check_training, grid

from oplab import models
from oplab.errors import ParameterError
from oplab.models.lsm import LSM, NeuralSpectralBlock, patch_layout

TINY = dict(width=4, depth=2, n_tokens=2, n_basis=3, n_heads=2, patches=3, projection_channels=8)


pytestmark = pytest.mark.usefixtures("one_thread")



def test_shapes_2d_even_and_odd_grids():
    torch.manual_seed(0)
    model = models.create("lsm", in_channels=2, out_channels=3, **TINY)
    check_shapes(model, 2, 3, [(17, 17), (24, 20), (32, 32), (5, 3)])


@pytest.mark.parametrize("dim, shapes", [(1, [(21,), (16,)]), (3, [(6, 5, 7), (8, 8, 8)])])
def test_shapes_1d_and_3d(dim, shapes):
    torch.manual_seed(0)
    model = LSM(2, 3, dim=dim, **{**TINY, "patches": 2})
    check_shapes(model, 2, 3, shapes)


def test_gradient():
    torch.manual_seed(0)
    model = LSM(1, 2, width=4, depth=1, n_tokens=2, n_basis=3, n_heads=2, patches=4, projection_channels=4)
    # 10 cells in 4 patches of 3 (2 padded cells), and 5 in 2 of 3 one level down: the masked path is taken
    assert patch_layout((10,), (4,)) == ((4,), (3,)) and patch_layout((5,), (2,)) == ((2,), (3,))
    check_gradient(model, 1, (10, 6))


def test_training_and_checkpoint(darcy17, tmp_path):
    result = check_training("lsm", dict(TINY, width=8, n_heads=4), tmp_path, darcy17, epochs=10, lr=5e-3)
    assert result["n_params"] < 100_000


def test_paper_darcy_parameter_count():
    """The released Darcy model (width 64, 5 scales, 4 tokens, 12 basis frequencies): 19.2 M parameters."""
    with torch.device("meta"):
        model = LSM(1, 1, width=64, depth=4, n_tokens=4, n_basis=12, n_heads=8, patches=16)
    assert model.n_params() == 19_187_457


def test_config_round_trip():
    torch.manual_seed(1)
    model = models.create("lsm", in_channels=1, out_channels=1, dim=2, **TINY)
    config = json.loads(json.dumps(models.config_of(model)))
    rebuilt = models.from_config(config)
    rebuilt.load_state_dict(model.state_dict())
    x, coords = torch.randn(2, 1, 12, 9), grid(12, 9)
    torch.testing.assert_close(rebuilt(x, coords), model(x, coords), rtol=0, atol=0)


# ----------------------------------------------------------------------------- the neural spectral block


def test_patch_layout_never_has_an_all_padding_patch():
    for size in range(1, 40):
        for count in range(1, 12):
            (n,), (p,) = patch_layout([size], [count])
            assert 1 <= n <= min(size, count) and n * p >= size and (n - 1) * p < size, (size, count, n, p)
    assert patch_layout([96, 17], [16, 4]) == ((16, 4), (6, 5))


def test_patchify_round_trip_and_patch_order():
    block = NeuralSpectralBlock(4, 2, 3, 2, [3, 2])
    x = torch.randn(2, 4, 7, 6)
    cells, mask, layout = block.patchify(x)
    # 7 cells in 3 patches of 3 (2 padded), 6 in 2 patches of 3: [2 * 6 patches, 9 cells, 4 channels]
    assert cells.shape == (12, 9, 4) and mask.shape == (6, 9)
    torch.testing.assert_close(block.unpatchify(cells, layout), x, rtol=0, atol=0)
    # patch (1, 0) of sample 1 holds rows 3..5, columns 0..2
    torch.testing.assert_close(cells[6 + 1 * 2 + 0].T.reshape(4, 3, 3), x[1, :, 3:6, 0:3])
    assert mask.sum() == 7 * 6 and not mask[4:, 3:].any()  # last patch row: one real row of 3


def test_latent_attention_weights_are_a_partition_of_the_real_cells():
    torch.manual_seed(0)
    block = NeuralSpectralBlock(8, 3, 4, 2, [2, 2])
    cells, mask, _ = block.patchify(torch.randn(3, 8, 5, 7))
    tokens, weights = block.encode(cells, mask)  # weights [B * P, heads, tokens, cells]
    assert tokens.shape == (12, 3, 8) and weights.shape == (12, 2, 3, 12)
    torch.testing.assert_close(weights.sum(-1), torch.ones(12, 2, 3))
    padded = ~mask.repeat(3, 1)[:, None, None, :].expand_as(weights)
    assert padded.any() and (weights[padded] == 0).all() and (weights[~padded] > 0).all()


def test_a_patch_output_depends_only_on_its_own_cells():
    """Perturbing the cells of one patch changes the block's output in that patch and nowhere else."""
    torch.manual_seed(0)
    block = NeuralSpectralBlock(8, 2, 4, 2, [3, 2])
    x = torch.randn(2, 8, 8, 7)  # rows: patches of 3, 3, 2 (one padded row); columns: 4, 3 (one padded)
    y = block(x)
    x2 = x.clone()
    x2[1, :, 3:6, 4:7] += torch.randn(8, 3, 3)  # patch (1, 1) of sample 1
    changed = (block(x2) - y).abs().amax(dim=1) > 1e-6  # [B, 8, 7]
    expected = torch.zeros_like(changed)
    expected[1, 3:6, 4:7] = True
    assert torch.equal(changed, expected)
    # and the padding of a patch does not leak in: zero-padding vs any other value in the padded cells
    cells, mask, layout = block.patchify(x)
    tokens, _ = block.encode(cells, mask)
    noisy = cells.clone()
    full = mask.repeat(2, 1)
    noisy[~full] = 1e3
    torch.testing.assert_close(block.encode(noisy, mask)[0], tokens)


def test_spectral_operator_is_the_basis_expansion():
    torch.manual_seed(0)
    block = NeuralSpectralBlock(4, 2, 3, 2, [1, 1])
    tokens = torch.randn(5, 2, 4)
    out = block.spectral(tokens)
    expected = tokens.clone()
    for c in range(4):
        for k in range(3):
            w = math.pi * k / 3
            expected[..., c] += block.weights[c, k] * torch.sin(w * tokens[..., c]) + block.weights[c, 3 + k] * torch.cos(w * tokens[..., c])
    torch.testing.assert_close(out, expected)


def test_defaults():
    assert LSM.defaults((64, 64), (False, False)) == {"dim": 2, "depth": 4, "patches": 16}
    assert LSM.defaults((17, 17), (False, False)) == {"dim": 2, "depth": 3, "patches": 4}
    assert LSM.defaults((6,), (True,)) == {"dim": 1, "depth": 1, "patches": 1}


@pytest.mark.parametrize("kwargs, words", [
    (dict(width=12, n_heads=8), ["width", "n_heads"]),
    (dict(patches=[4, 4, 4]), ["patches", "2"]),
    (dict(patches=0), ["patches"]),
    (dict(dim=4), ["dim"]),
    (dict(depth=-1), ["depth"]),
    (dict(n_tokens=0), ["n_tokens"]),
    (dict(padding=1.0), ["padding"]),
])
def test_bad_arguments(kwargs, words):
    with pytest.raises(ParameterError) as info:
        models.create("lsm", in_channels=1, out_channels=1, **kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_bad_input():
    model = LSM(1, 1, **TINY)
    with pytest.raises(ValueError, match="expected x of shape"):
        model(torch.randn(2, 2, 8, 8), grid(8, 8))
    with pytest.raises(ValueError, match="coords"):
        model(torch.randn(2, 1, 8, 8))
