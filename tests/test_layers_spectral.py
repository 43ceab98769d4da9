"""SpectralConv: shapes, resolution invariance, an explicit-DFT reference,
run-time mode truncation, factorized weights and gradients."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from oplab.errors import ParameterError
from oplab.layers import SpectralConv
from oplab.layers.spectral import CPWeight, TTWeight, TuckerWeight


pytestmark = pytest.mark.usefixtures("one_thread")


def set_dense(layer: SpectralConv, weight: torch.Tensor) -> None:
    with torch.no_grad():
        complex_dtype = torch.complex128 if layer.weight.weight.dtype == torch.float64 else torch.complex64
        layer.weight.weight.copy_(torch.view_as_real(weight.to(complex_dtype)))


def reference(x: np.ndarray, w: np.ndarray, max_modes, n_modes) -> np.ndarray:
    """The layer by definition: DFT coefficients by explicit sums, a loop over the
    retained frequencies, and the real inverse transform written out.

    x: [B, I, *S] real; w: [I, O, 2 m_1, ..., m_d] complex (FFT order on leading axes).
    """
    sizes = x.shape[2:]
    d = len(sizes)
    per_axis = []  # (frequency, weight index) retained along each axis
    for a in range(d - 1):
        n, m = sizes[a], n_modes[a]
        pos, neg = min(m, (n + 1) // 2), min(m, n // 2)
        per_axis.append([(k, k) for k in range(pos)] + [(-k, 2 * max_modes[a] - k) for k in range(neg, 0, -1)])
    n, m = sizes[-1], n_modes[-1]
    per_axis.append([(k, k) for k in range(min(m, n // 2 + 1))])
    grids = np.meshgrid(*[np.arange(n) / n for n in sizes], indexing="ij")
    out = np.zeros((x.shape[0], w.shape[1], *sizes))
    for combo in itertools.product(*per_axis):
        k = [c[0] for c in combo]
        index = tuple(c[1] for c in combo)
        phase = sum(ki * g for ki, g in zip(k, grids))  # k . j / n
        coefficient = (x * np.exp(-2j * np.pi * phase)).sum(axis=tuple(range(2, 2 + d)))  # [B, I]
        y = coefficient @ w[(slice(None), slice(None), *index)]  # [B, O]
        # a real signal: the last axis's frequency k > 0 (below Nyquist) stands for +-k
        weight = 1.0 if k[-1] == 0 or 2 * k[-1] == sizes[-1] else 2.0
        out += weight * np.real(y[(...,) + (None,) * d] * np.exp(2j * np.pi * phase))
    return out / math.prod(sizes)


CASES = [  # modes, grid (some coarser than 2 * modes)
    ([4], (11,)),
    ([4], (6,)),
    ([3, 2], (8, 6)),
    ([3, 3], (5, 4)),
    ([4, 3], (7, 9)),
    ([2, 2, 2], (5, 4, 6)),
]


@pytest.mark.parametrize("factorization", [None, "tucker", "cp", "tt"])
@pytest.mark.parametrize("modes, grid", [([6], (32,)), ([5, 4], (16, 12)), ([3, 3, 2], (8, 8, 6)), ([5, 4], (5, 3))])
def test_shapes(factorization, modes, grid):
    layer = SpectralConv(3, 5, modes, factorization=factorization, rank=0.5)
    assert layer(torch.randn(2, 3, *grid)).shape == (2, 5, *grid)


def test_half_precision_input_is_transformed_in_float32():
    layer = SpectralConv(3, 4, [4, 3])
    x = torch.randn(2, 3, 12, 10)
    y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16 and y.shape == (2, 4, 12, 10)
    torch.testing.assert_close(y.float(), layer(x.bfloat16().float()), rtol=1e-2, atol=1e-2 * layer(x).abs().max().item())


@pytest.mark.parametrize("modes, grid", CASES)
def test_matches_explicit_dft_reference(modes, grid):
    torch.manual_seed(0)
    layer = SpectralConv(2, 3, modes).double()
    x = torch.randn(2, 2, *grid, dtype=torch.float64)
    expected = reference(x.numpy(), layer.weight().detach().numpy(), modes, modes)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, atol=1e-12 * np.abs(expected).max() * 100)


@pytest.mark.parametrize("modes, coarse", [([6], (12,)), ([5, 4], (10, 8)), ([3, 4], (7, 9)), ([3, 3, 2], (6, 6, 4))])
def test_resolution_invariance_on_band_limited_input(modes, coarse):
    """A function with only retained modes, sampled on two grids: the outputs are one function."""
    torch.manual_seed(1)
    d = len(modes)
    ranges = [range(-m + 1, m) for m in modes[:-1]] + [range(modes[-1])]
    rng = np.random.default_rng(0)
    terms = [(k, complex(*rng.normal(size=2))) for k in itertools.product(*ranges)]

    def sample(sizes):
        grids = np.meshgrid(*[np.arange(n) / n for n in sizes], indexing="ij")
        f = sum((c * np.exp(2j * np.pi * sum(ki * g for ki, g in zip(k, grids)))).real for k, c in terms)
        return torch.tensor(f, dtype=torch.float32).expand(2, 3, *sizes).clone() * torch.arange(1.0, 4.0).view(1, 3, *[1] * d)

    layer = SpectralConv(3, 4, modes)
    fine = tuple(2 * n for n in coarse)
    y_coarse = layer(sample(coarse))
    y_fine = layer(sample(fine))
    sub = y_fine[(slice(None), slice(None), *[slice(None, None, 2)] * d)]
    error = (sub - y_coarse).abs().max() / y_coarse.abs().max()
    assert error < 1e-5, error


def test_runtime_n_modes_zeroes_dropped_modes():
    torch.manual_seed(2)
    layer = SpectralConv(2, 3, [5, 4]).double()
    x = torch.randn(2, 2, 16, 12, dtype=torch.float64)
    full = layer(x)
    layer.n_modes = [3, 2]
    assert layer.n_modes == (3, 2) and layer.max_n_modes == (5, 4)
    reduced = layer(x)
    # the same as the full layer with the dropped modes' weights set to zero
    w = layer.weight().detach().clone()  # [2, 3, 10, 4]; rows 0..2 and 7..9 are frequencies -3..2
    w[:, :, 3:7] = 0
    w[:, :, :, 2:] = 0
    dense = SpectralConv(2, 3, [5, 4]).double()
    set_dense(dense, w)
    torch.testing.assert_close(reduced, dense(x))
    np.testing.assert_allclose(reduced.detach().numpy(), reference(x.numpy(), layer.weight().detach().numpy(), [5, 4], [3, 2]), atol=1e-12)
    assert not torch.allclose(reduced, full)
    layer.n_modes = [5, 4]
    torch.testing.assert_close(layer(x), full)
    with pytest.raises(ParameterError, match="n_modes"):
        layer.n_modes = [6, 4]
    with pytest.raises(ParameterError, match="n_modes"):
        layer.n_modes = [3]


@pytest.mark.parametrize("factorization", ["tucker", "cp", "tt"])
def test_factorized_equals_dense_with_reconstructed_weight(factorization):
    torch.manual_seed(3)
    layer = SpectralConv(3, 4, [4, 3], factorization=factorization, rank=0.3)
    dense = SpectralConv(3, 4, [4, 3])
    set_dense(dense, layer.weight().detach())
    x = torch.randn(2, 3, 12, 10)
    torch.testing.assert_close(layer(x), dense(x), rtol=1e-5, atol=1e-7)
    n_dense = dense.weight.n_params()
    # a float rank is a budget: at most that fraction of the dense parameters, and not far below it
    assert 0.15 * n_dense <= layer.weight.n_params() <= 0.3 * n_dense, (layer.weight.n_params(), n_dense)


def _factorized_weight_test(layer: SpectralConv, target: torch.Tensor, x: torch.Tensor) -> None:
    torch.testing.assert_close(layer.weight().detach(), target, rtol=1e-5, atol=1e-6)
    dense = SpectralConv(layer.in_channels, layer.out_channels, list(layer.max_n_modes))
    set_dense(dense, target)
    torch.testing.assert_close(layer(x), dense(x), rtol=1e-5, atol=1e-6)


def test_full_rank_tucker_represents_any_dense_weight():
    torch.manual_seed(4)
    layer = SpectralConv(2, 3, [3, 2], factorization="tucker", rank=100)  # int: every mode rank, capped
    weight: TuckerWeight = layer.weight
    assert weight.rank == [2, 3, 6, 2]
    target = torch.randn(2, 3, 6, 2, dtype=torch.complex64)
    with torch.no_grad():
        weight.core.copy_(torch.view_as_real(target))
        for factor, n in zip(weight.factors, target.shape):
            factor.copy_(torch.view_as_real(torch.eye(n, dtype=torch.complex64)))
    _factorized_weight_test(layer, target, torch.randn(2, 2, 8, 7))


def test_full_rank_tt_represents_any_dense_weight():
    """TT-SVD of a random tensor gives exact cores at full TT rank."""
    torch.manual_seed(5)
    layer = SpectralConv(2, 3, [3, 2], factorization="tt", rank=100)
    weight: TTWeight = layer.weight
    assert weight.rank == [1, 2, 6, 2, 1]
    target = torch.randn(2, 3, 6, 2, dtype=torch.complex128)
    rest, left = target.reshape(1, -1), 1
    cores = []
    for n, r in zip(target.shape[:-1], weight.rank[1:-1]):
        u, s, vh = torch.linalg.svd(rest.reshape(left * n, -1), full_matrices=False)
        cores.append(u[:, :r].reshape(left, n, r))
        rest, left = s[:r, None] * vh[:r], r
    cores.append(rest.reshape(left, target.shape[-1], 1))
    with torch.no_grad():
        for core, value in zip(weight.cores, cores):
            core.copy_(torch.view_as_real(value.to(torch.complex64)))
    _factorized_weight_test(layer, target.to(torch.complex64), torch.randn(2, 2, 8, 7))


def test_cp_with_enough_terms_represents_any_dense_weight():
    """With R = prod of all sizes but the last, CP holds any tensor (one term per leading index)."""
    torch.manual_seed(6)
    shape = (2, 3, 6, 2)
    terms = math.prod(shape[:-1])
    layer = SpectralConv(2, 3, [3, 2], factorization="cp", rank=terms)
    weight: CPWeight = layer.weight
    target = torch.randn(*shape, dtype=torch.complex64)
    leading = list(itertools.product(*[range(n) for n in shape[:-1]]))
    with torch.no_grad():
        for k, n in enumerate(shape[:-1]):
            onehot = torch.zeros(n, terms, dtype=torch.complex64)
            onehot[[idx[k] for idx in leading], range(terms)] = 1
            weight.factors[k].copy_(torch.view_as_real(onehot))
        weight.factors[-1].copy_(torch.view_as_real(target.reshape(terms, shape[-1]).T.contiguous()))
    _factorized_weight_test(layer, target, torch.randn(2, 2, 8, 7))


@pytest.mark.parametrize("factorization", [None, "tucker", "cp", "tt"])
def test_init_scale_matches_dense(factorization):
    torch.manual_seed(7)
    layer = SpectralConv(16, 16, [8, 8], factorization=factorization, rank=0.1)
    rms = layer.weight().abs().pow(2).mean().sqrt().item()
    assert 0.5 < rms * 16 * 16 < 2.0, rms * 16 * 16


def test_rank_semantics_and_errors():
    assert SpectralConv(4, 4, [3, 2], "tucker", rank=2).weight.rank == [2, 2, 2, 2]
    assert SpectralConv(4, 4, [3, 2], "cp", rank=5).weight.rank == 5
    assert SpectralConv(4, 4, [3, 2], "tt", rank=3).weight.rank == [1, 3, 3, 2, 1]
    for bad in (0, -1, 0.0, True, float("nan"), "0.1"):
        with pytest.raises(ParameterError, match="rank"):
            SpectralConv(4, 4, [3, 2], "tucker", rank=bad)
    with pytest.raises(ParameterError, match="factorization"):
        SpectralConv(4, 4, [3, 2], "svd")
    with pytest.raises(ParameterError, match="modes"):
        SpectralConv(4, 4, [0, 2])
    with pytest.raises(ValueError, match="expected input"):
        SpectralConv(4, 4, [3, 2])(torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("factorization, rank", [(None, 1.0), ("tucker", 2), ("cp", 2), ("tt", 2)])
def test_gradcheck(factorization, rank):
    torch.manual_seed(8)
    layer = SpectralConv(2, 2, [2, 2], factorization=factorization, rank=rank).double()
    names = [name for name, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)

    def f(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-7, rtol=1e-4)


def test_mode_product_matches_autograd_bmm():
    """The contraction's own backward (contiguous, conjugation-resolved operands, issue 22) gives the
    gradients of autograd's complex bmm on the model's layout (output permuted to [B, O, M])."""
    from oplab.layers.spectral import _ModeProduct

    torch.manual_seed(3)
    x0 = torch.randn(36, 10, 8, dtype=torch.cfloat)
    w0 = torch.randn(36, 8, 6, dtype=torch.cfloat)
    g = torch.randn(10, 6, 36, dtype=torch.cfloat)
    results = []
    for product in (torch.bmm, _ModeProduct.apply):
        x, w = x0.clone().requires_grad_(True), w0.clone().requires_grad_(True)
        y = product(x, w).permute(1, 2, 0)
        (torch.view_as_real(y) * torch.view_as_real(g)).sum().backward()
        results.append((y.detach(), x.grad, w.grad))
    for new, old in zip(results[1], results[0]):
        torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-6)
    # a weight without gradient (frozen fine-tuning) still gives the input's
    x = x0.clone().requires_grad_(True)
    _ModeProduct.apply(x, w0).abs().sum().backward()
    assert x.grad is not None and torch.isfinite(torch.view_as_real(x.grad)).all()


@pytest.mark.parametrize("modes, padding", [([6, 5], 0.0), ([6, 5], 0.1), ([5], 0.0)])
def test_fno_layer_sum_with_the_bias_as_zero_frequency_matches_the_plain_sum(modes, padding):
    """The FNO layer's ``K v + W v + b`` computed with ``b`` as K's zero frequency and ``W v`` accumulated
    in place (issue 22) equals the plain sum, values and gradients, and SpectralConv's ``bias`` argument
    equals adding the constant afterwards."""
    from oplab.models.fno import FNO
    from oplab.layers.grid import append_positions

    torch.manual_seed(5)
    d = len(modes)
    model = FNO(in_channels=1, out_channels=1, modes=modes, width=8, padding=padding).double()
    for skip in model.skips:
        torch.nn.init.normal_(skip.bias)
    x = torch.randn(3, 1, *[12] * d, dtype=torch.float64)
    coords = [torch.linspace(0, 1, 12, dtype=torch.float64)] * d

    def plain(x):
        sizes = x.shape[2:]
        v = model.lifting(append_positions(x, coords, "FNO"))
        pads = model._pads(sizes)
        v = torch.nn.functional.pad(v, [p for pad in reversed(pads) for p in (0, pad)])
        for t, spectral in enumerate(model.spectral):
            out = spectral(v) + model.skips[t](v)
            v = model.activation(out) if t < len(model.spectral) - 1 else out
        return model.projection(v[(slice(None), slice(None), *[slice(0, n) for n in sizes])])

    grads = []
    for f in (plain, lambda x: model(x, coords)):
        model.zero_grad()
        y = f(x)
        y.square().sum().backward()
        grads.append((y.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-12, atol=1e-12)
    for new, old in zip(grads[1][1], grads[0][1]):
        torch.testing.assert_close(new, old, rtol=1e-10, atol=1e-12)
    layer, bias = model.spectral[0], torch.randn(8, dtype=torch.float64)
    v = torch.randn(2, 8, *[10] * d, dtype=torch.float64)
    torch.testing.assert_close(layer(v, bias=bias), layer(v) + bias.reshape(-1, *[1] * d), rtol=1e-12, atol=1e-12)
    layer.dft = "matmul"
    torch.testing.assert_close(layer(v, bias=bias), layer(v) + bias.reshape(-1, *[1] * d), rtol=1e-12, atol=1e-12)


def test_fno_fused_sum_under_autocast_torch_func_forward_ad_and_hooks():
    """The fused layer sum steps aside where it would change what users see: autocast (mixed dtypes),
    forward hooks on the spectral layer; ``torch.func`` and forward-mode AD go through the contraction."""
    from oplab.models.fno import FNO

    torch.manual_seed(6)
    model = FNO(in_channels=1, out_channels=1, modes=[4, 3], width=8).double()
    x = torch.randn(2, 1, 10, 10, dtype=torch.float64)
    coords = [torch.linspace(0, 1, 10, dtype=torch.float64)] * 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.float()(x.float(), [c.float() for c in coords])
    model.double()
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.double(), model(x, coords), rtol=0.05, atol=0.05 * float(low.detach().abs().max()))
    # torch.func.grad (vmap rule generated) and forward-mode AD through the contraction, against autograd
    params = {k: v.detach() for k, v in model.named_parameters()}
    loss = lambda p: torch.func.functional_call(model, p, (x, coords)).square().sum()  # noqa: E731
    grads = torch.func.grad(loss)(params)
    model.zero_grad()
    loss(dict(model.named_parameters())).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-10, atol=1e-12)
    tangent = torch.randn_like(x)
    f = lambda inp: model(inp, coords)  # noqa: E731
    _, jvp = torch.func.jvp(f, (x,), (tangent,))
    with torch.no_grad():
        fd = (f(x + 1e-6 * tangent) - f(x - 1e-6 * tangent)) / 2e-6
    torch.testing.assert_close(jvp, fd, rtol=1e-5, atol=1e-7)
    # a hook on a spectral layer sees K v, not the layer's sum
    seen = {}
    handle = model.spectral[1].register_forward_hook(lambda m, args, out: seen.update(v=args[0], out=out.clone()))
    model(x, coords)
    handle.remove()
    torch.testing.assert_close(seen["out"], model.spectral[1](seen["v"]), rtol=1e-12, atol=1e-12)


def test_auto_transform_takes_the_products_only_at_slow_fft_lengths_without_grad(monkeypatch):
    """``dft="auto"`` runs the truncated DFT as matrix products on a CPU when an axis length has a prime
    factor of 13 or more and few frequencies are kept on it, with autograd off (inference); the numbers
    are the FFT's to float rounding."""
    from oplab.layers import spectral

    torch.manual_seed(3)
    cases = [([4, 3], (16, 16), False), ([4, 3], (22, 22), False), ([4, 3], (26, 26), True), ([4, 3], (17, 20), True),
             ([20], (83,), True), ([40], (83,), False), ([4, 3], (33, 64), False)]
    for modes, sizes, slow in cases:
        layer = SpectralConv(4, 5, modes).double()
        calls = []
        monkeypatch.setattr(layer, "_forward_matmul", lambda x, _f=layer._forward_matmul: calls.append(x.shape) or _f(x))
        x = torch.randn(2, 4, *sizes, dtype=torch.float64)
        assert spectral._slow_fft(x, layer) is False  # autograd on: the FFT (the products lose with the backward)
        with torch.no_grad():
            assert spectral._slow_fft(x, layer) is slow, (modes, sizes)
            auto = layer(x)
            assert bool(calls) is slow
            layer.dft = "fft"
            torch.testing.assert_close(auto, layer(x), rtol=1e-10, atol=1e-12)


def test_last_axis_products_equal_the_fft_with_gradients(monkeypatch):
    """On a CPU, ``dft="auto"`` runs the last axis's truncated transforms as real matrix products when
    at most 32 frequencies are kept there (on at most 8192 points) (:func:`oplab.layers.spectral._products_last`);
    output, input gradient and weight gradient are the FFT path's to float64 rounding, for 1-3
    dimensions, a grid coarser than the modes, an odd last axis and ``torch.func.vmap``."""
    from oplab.layers import spectral

    calls = []
    monkeypatch.setattr(spectral, "_bases", lambda *a, _f=spectral._bases: calls.append(a) or _f(*a))
    torch.manual_seed(11)
    for modes, sizes in (([8, 9], (16, 16)), ([12, 12], (64, 40)), ([5], (20,)), ([3, 3, 3], (8, 9, 10)),
                         ([4, 3], (13, 7)), ([6, 6], (8, 8))):
        layer = SpectralConv(3, 4, modes).double()
        x = torch.randn(2, 3, *sizes, dtype=torch.float64, requires_grad=True)
        assert spectral._products_last(x, layer.kept(sizes)[-1][0]), (modes, sizes)
        out, grads = [], []
        for dft in ("auto", "fft"):
            layer.dft, calls[:] = dft, []
            y = layer(x)
            assert len(calls) == (2 if dft == "auto" else 0), (modes, sizes, dft)  # forward and inverse bases
            grads.append(torch.autograd.grad(y, [x, *layer.parameters()], torch.cos(y.detach())))
            out.append(y.detach())
        torch.testing.assert_close(out[0], out[1], rtol=1e-12, atol=1e-13)
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
        layer.dft = "auto"
        batched = torch.func.vmap(layer)(x.detach()[:, None])  # each sample as a batch of one
        torch.testing.assert_close(batched[:, 0], out[1], rtol=1e-12, atol=1e-13)
    # the rule: few frequencies on a long axis take the products, many take the FFT; autocast keeps the FFT
    x = torch.randn(1, 1, 1024)
    assert spectral._products_last(x, 32) and not spectral._products_last(x, 33)
    assert not spectral._products_last(torch.randn(1, 1, 8193), 8) and not spectral._products_last(x.long(), 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not spectral._products_last(x, 8)


def test_last_axis_bases_made_at_inference_serve_training():
    """The products' bases are kept per size; ones first made under ``torch.inference_mode`` (the
    predictor) are ordinary tensors that a later training step's backward can save."""
    from oplab.layers import spectral

    spectral._real_dft.cache_clear()  # (made here first, whatever ran before)
    torch.manual_seed(12)
    layer = SpectralConv(2, 2, [3, 5])
    x = torch.randn(2, 2, 12, 20)  # (no large prime factor: not the inference-only products of _slow_fft)
    with torch.inference_mode():
        before = layer(x)
    y = layer(x.requires_grad_())
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(layer.weight.weight.grad).all()
    torch.testing.assert_close(y.detach(), before)


def test_tracing_with_fake_tensors_leaves_the_kept_bases_real():
    """``make_fx`` with fake or symbolic tensors traces the layer (on the FFT path: the products keep
    their bases between calls, and those must not be fake), and eager calls afterwards stay real."""
    from torch.fx.experimental.proxy_tensor import make_fx

    torch.manual_seed(13)
    layer = SpectralConv(2, 2, [3, 5])
    x = torch.randn(2, 2, 12, 28)
    params = dict(layer.named_parameters())
    for mode in ("fake", "symbolic"):
        graph = make_fx(lambda p, t: torch.func.functional_call(layer, p, (t,)), tracing_mode=mode)(params, x)
        torch.testing.assert_close(graph(params, x), layer(x), rtol=1e-5, atol=1e-6)
    from torch._subclasses.fake_tensor import FakeTensorMode

    from oplab.layers import spectral

    spectral._real_dft.cache_clear()  # (made here first, whatever ran before)
    real = torch.randn(2, 2, 12, 20)
    with FakeTensorMode(allow_non_fake_inputs=True):  # a real input, fake results
        layer(real)
    assert type(layer(real)) is torch.Tensor
    out = layer(x)
    assert type(out) is torch.Tensor
    layer.dft = "fft"
    torch.testing.assert_close(out, layer(x), rtol=1e-5, atol=1e-6)
