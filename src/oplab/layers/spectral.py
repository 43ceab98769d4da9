"""The spectral convolution of the Fourier neural operator, in any dimension.

:class:`SpectralConv` is the kernel integral operator ``K`` of Li et al.,
"Fourier Neural Operator for Parametric Partial Differential Equations",
ICLR 2021, eq. (4)::

    (K v)(x) = F^{-1}( R · (F v) )(x),

where ``F`` is the real FFT over the ``d`` spatial axes, the spectrum is
truncated to the lowest ``modes[i]`` frequencies per axis, and ``R`` holds
one complex ``[in, out]`` matrix per retained frequency. Along every axis but
the last the retained frequencies are ``-modes[i], ..., modes[i] - 1``; along
the last axis (which ``rfftn`` halves) they are ``0, ..., modes[-1] - 1``. The
weight is therefore a complex tensor of shape::

    [in_channels, out_channels, 2*modes[0], ..., 2*modes[d-2], modes[d-1]]

stored along the non-last frequency axes in FFT order (frequencies
``0..m-1`` then ``-m..-1``), so the retained "corner blocks" of the spectrum
line up with it. Applying it is one gather of those blocks, one batched
matrix product over the retained modes and one zero-filling scatter. On a CPU
the last axis's truncated transforms run as real matrix products where few
frequencies are kept on it (:func:`_products_last`): faster than torch's
``rfft``/``irfft`` with their backward there, the same numbers to rounding.

Factorized weights (TFNO, Kossaifi et al., "Multi-Grid Tensorized Fourier
Neural Operator for High-Resolution PDEs", TMLR 2023): the same weight
tensor represented in Tucker, CP or tensor-train form; see
:func:`spectral_weight` for the meaning of ``rank``. The full tensor is
rebuilt from its factors in every forward pass, which is cheap at FNO sizes
(a few hundred thousand entries) and keeps one code path for every form.

Complex values are stored as real tensors with a trailing axis of 2
(``torch.view_as_real`` layout), so that ``module.double()``, optimizers,
DDP and safetensors handle them like any other parameter.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Sequence

import torch
from torch import nn

from ..errors import ParameterError, check_ints, is_int

#: accepted values of ``factorization`` (``None`` means ``"dense"``)
FACTORIZATIONS = ("dense", "tucker", "cp", "tt")


# ------------------------------------------------------------------ weights
def _complex_normal(shape: Sequence[int], variance: float) -> torch.Tensor:
    """Real storage ``[*shape, 2]`` of complex normal entries with ``E|z|^2 = variance``."""
    return torch.randn(*shape, 2) * math.sqrt(variance / 2.0)


def _c(p: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(p)


class SpectralWeight(nn.Module):
    """A complex tensor of a fixed ``shape``, returned by ``forward()``.

    Subclasses differ in how the tensor is parametrized (dense or factors).
    """

    shape: tuple[int, ...]
    rank: object = None

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}, rank={self.rank}, params={self.n_params()}"


class DenseWeight(SpectralWeight):
    """One complex entry per (in, out, mode): ``W``."""

    def __init__(self, shape: Sequence[int], scale: float):
        super().__init__()
        self.shape = tuple(shape)
        self.weight = nn.Parameter(_complex_normal(self.shape, scale**2))

    def forward(self) -> torch.Tensor:
        return _c(self.weight)


class TuckerWeight(SpectralWeight):
    """``W = G ×_1 U_1 ×_2 U_2 ... ×_K U_K``: a core ``G[r_1..r_K]`` and factors ``U_k[n_k, r_k]``.

    Init: ``E|G|^2 = scale^2``, ``E|U_k|^2 = 1/r_k``, so ``E|W|^2 = scale^2``.
    """

    def __init__(self, shape: Sequence[int], ranks: Sequence[int], scale: float):
        super().__init__()
        self.shape, self.rank = tuple(shape), list(ranks)
        self.core = nn.Parameter(_complex_normal(ranks, scale**2))
        self.factors = nn.ParameterList([nn.Parameter(_complex_normal((n, r), 1.0 / r)) for n, r in zip(shape, ranks)])
        small, big = "abcdefghijkl", "ABCDEFGHIJKL"
        k = len(self.shape)
        self._equation = small[:k] + "," + ",".join(big[i] + small[i] for i in range(k)) + "->" + big[:k]

    def forward(self) -> torch.Tensor:
        return torch.einsum(self._equation, _c(self.core), *[_c(f) for f in self.factors])


class CPWeight(SpectralWeight):
    """``W[i_1..i_K] = sum_r prod_k U_k[i_k, r]`` (canonical polyadic, rank ``R``).

    Init: ``E|U_k|^2 = (scale^2 / R)^(1/K)``, so ``E|W|^2 = scale^2``.
    """

    def __init__(self, shape: Sequence[int], rank: int, scale: float):
        super().__init__()
        self.shape, self.rank = tuple(shape), int(rank)
        k = len(self.shape)
        variance = (scale**2 / rank) ** (1.0 / k)
        self.factors = nn.ParameterList([nn.Parameter(_complex_normal((n, rank), variance)) for n in self.shape])
        small = "abcdefghijkl"
        self._equation = ",".join(small[i] + "z" for i in range(k)) + "->" + small[:k]

    def forward(self) -> torch.Tensor:
        return torch.einsum(self._equation, *[_c(f) for f in self.factors])


class TTWeight(SpectralWeight):
    """Tensor train: ``W[i_1..i_K] = G_1[:, i_1, :] G_2[:, i_2, :] ... G_K[:, i_K, :]``.

    Cores ``G_k[r_{k-1}, n_k, r_k]`` with ``r_0 = r_K = 1``. Init:
    ``E|G_k|^2 = 1/r_k`` for ``k < K`` and ``scale^2`` for the last core, so
    ``E|W|^2 = scale^2``.
    """

    def __init__(self, shape: Sequence[int], ranks: Sequence[int], scale: float):
        super().__init__()
        self.shape, self.rank = tuple(shape), list(ranks)  # ranks: r_0..r_K
        k = len(self.shape)
        cores = []
        for i, n in enumerate(self.shape):
            variance = 1.0 / ranks[i + 1] if i < k - 1 else scale**2
            cores.append(nn.Parameter(_complex_normal((ranks[i], n, ranks[i + 1]), variance)))
        self.cores = nn.ParameterList(cores)

    def forward(self) -> torch.Tensor:
        # (iterate, don't slice: a sliced ParameterList re-wraps tensors swapped in
        # by torch.func.functional_call as new leaves, cutting their gradients)
        cores = [_c(core) for core in self.cores]
        out = cores[0].squeeze(0)  # [n_1, r_1]
        for c in cores[1:]:  # c: [r_{k-1}, n_k, r_k]
            out = (out @ c.reshape(c.shape[0], -1)).reshape(-1, c.shape[2])  # [n_1 ... n_k, r_k]
        return out.reshape(self.shape)


def _check_rank(rank) -> None:
    ok = not isinstance(rank, bool) and isinstance(rank, numbers.Real) and math.isfinite(rank) and rank > 0
    if not ok:
        raise ParameterError(
            f"rank must be a positive float (fraction of the dense parameter count) or int (explicit rank), got {rank!r}"
        )


def tucker_ranks(shape: Sequence[int], rank: float | int) -> list[int]:
    """Tucker ranks ``r_k``: ``min(rank, n_k)`` for an int; for a float, ranks proportional
    to ``n_k`` (``r_k = round(f n_k)``) with the largest ``f`` whose parameter count
    ``prod(r) + sum(n_k r_k)`` stays within ``rank * prod(n)``."""
    _check_rank(rank)
    if is_int(rank):
        return [min(int(rank), n) for n in shape]
    target = rank * math.prod(shape)

    def ranks(f: float) -> list[int]:
        return [min(n, max(1, round(f * n))) for n in shape]

    def count(r: list[int]) -> int:
        return math.prod(r) + sum(n * k for n, k in zip(shape, r))

    if count(ranks(1.0)) <= target:
        return ranks(1.0)
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if count(ranks(mid)) <= target else (lo, mid)
    return ranks(lo)


def cp_rank(shape: Sequence[int], rank: float | int) -> int:
    """CP rank ``R``: ``rank`` for an int; for a float, ``R = floor(rank * prod(n) / sum(n))`` (>= 1)."""
    _check_rank(rank)
    if is_int(rank):
        return int(rank)
    return max(1, math.floor(rank * math.prod(shape) / sum(shape)))


def tt_ranks(shape: Sequence[int], rank: float | int) -> list[int]:
    """Tensor-train ranks ``[1, r_1, ..., r_{K-1}, 1]``, each internal rank
    ``min(r, its largest useful value)``; ``r = rank`` for an int, for a float the
    largest ``r`` whose parameter count ``sum r_{k-1} n_k r_k`` stays within
    ``rank * prod(n)`` (at least 1)."""
    _check_rank(rank)
    k = len(shape)
    caps = [min(math.prod(shape[:i]), math.prod(shape[i:])) for i in range(1, k)]

    def ranks(r: int) -> list[int]:
        return [1] + [min(r, c) for c in caps] + [1]

    if is_int(rank):
        return ranks(int(rank))
    target = rank * math.prod(shape)

    def count(rs: list[int]) -> int:
        return sum(rs[i] * n * rs[i + 1] for i, n in enumerate(shape))

    lo, hi = 1, max(caps) if caps else 1
    while lo < hi:  # largest r with count <= target
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if count(ranks(mid)) <= target else (lo, mid - 1)
    return ranks(lo)


def spectral_weight(
    shape: Sequence[int], factorization: str | None = None, rank: float | int = 1.0, scale: float = 1.0
) -> SpectralWeight:
    """A complex weight of ``shape`` in the given form.

    ``factorization``: ``None``/``"dense"`` (``rank`` ignored), ``"tucker"``,
    ``"cp"`` or ``"tt"``. ``rank``: a **float** is the fraction of the dense
    parameter count the factors may use (``0.1``: at most about a tenth; see
    :func:`tucker_ranks`, :func:`cp_rank`, :func:`tt_ranks` for how it becomes
    ranks); an **int** is the rank itself (Tucker: every mode rank, capped at the
    mode size; CP: the number of rank-one terms; TT: every internal rank). Entries
    of the reconstructed tensor are zero-mean with ``E|W|^2 = scale^2`` in every form.
    """
    form = "dense" if factorization is None else str(factorization).strip().lower()
    if form not in FACTORIZATIONS:
        raise ParameterError(f"factorization must be one of {list(FACTORIZATIONS)} or None, got {factorization!r}")
    shape = tuple(int(n) for n in shape)
    if form == "dense":
        return DenseWeight(shape, scale)
    if form == "tucker":
        return TuckerWeight(shape, tucker_ranks(shape, rank), scale)
    if form == "cp":
        return CPWeight(shape, cp_rank(shape, rank), scale)
    return TTWeight(shape, tt_ranks(shape, rank), scale)


# --------------------------------------------------------------- the layer
class SpectralConv(nn.Module):
    """``K v = irfftn(R · rfftn(v))`` over the last ``d = len(modes)`` axes (FNO, eq. 4).

    Args:
        in_channels, out_channels: channels of ``v`` and ``K v``.
        modes: retained frequencies per axis, ``[m_1, ..., m_d]``: frequencies
            ``-m_i .. m_i - 1`` along axis ``i < d`` and ``0 .. m_d - 1`` along the
            last axis. A grid with ``n_i >= 2 m_i`` points along every axis holds
            them all; on a coarser grid the frequencies that exist there are
            used (``ceil(n/2)`` non-negative and ``floor(n/2)`` negative ones
            along a leading axis, ``n/2 + 1`` along the last).
        factorization: ``None``/``"dense"``, ``"tucker"``, ``"cp"`` or ``"tt"``.
        rank: for factorized weights, a float fraction of the dense parameter
            count or an int rank (see :func:`spectral_weight`).

    Shapes: ``[B, in, *S] -> [B, out, *S]`` for any ``S``; the layer has no bias of its own
    (``forward(x, bias)`` adds a given one as the zero frequency).
    Half-precision inputs (autocast) are transformed in float32 and the result
    cast back.

    ``n_modes`` can be lowered at run time (``layer.n_modes = [8, 8]``, each at
    most ``max_n_modes``); the frequencies above it are then dropped, i.e. the
    weights of those modes act as zero. It is not part of the state dict.
    Initialization: ``E|R|^2 = (1 / (in * out))^2`` (the scale of Li et al.'s code,
    zero-mean here), the same for every factorization.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: Sequence[int],
        factorization: str | None = None,
        rank: float | int = 1.0,
    ):
        super().__init__()
        modes = check_ints("SpectralConv", "modes", modes, n=(1, None))
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.dim = len(modes)
        self.max_n_modes = tuple(modes)
        self._n_modes = tuple(modes)
        self.factorization = "dense" if factorization is None else str(factorization).strip().lower()
        shape = (self.in_channels, self.out_channels, *[2 * m for m in modes[:-1]], modes[-1])
        self.weight = spectral_weight(shape, factorization, rank, scale=1.0 / (self.in_channels * self.out_channels))
        #: how the truncated transforms run: ``"fft"``, ``"matmul"`` (real matrix products, see
        #: :meth:`_forward_matmul`) or ``"auto"`` (FFT; matmul while exporting, and at inference on a
        #: CPU for an axis whose length has a large prime factor, where the FFT is slow:
        #: :func:`_slow_fft`; on a CPU the last axis's transforms as one real matrix product each
        #: where few frequencies are kept on it: :func:`_products_last`); not in the state dict
        self.dft = "auto"
        #: the weight as a real constant ``[I, O, *2m, m_d, 2]`` (see :meth:`freeze`), or None
        self.frozen: torch.Tensor | None = None
        self._cached = None  # (key, parameters, weight) of :meth:`_mode_major`

    def _apply(self, fn, *args, **kwargs):  # .to(), .double(), ...: drop the kept weight
        self._cached = None
        return super()._apply(fn, *args, **kwargs)

    def freeze(self) -> None:
        """Hold the weight as one real constant (no factors, no complex numbers) for export:
        the exported graph then carries the product of the factors, not the factors."""
        self.frozen = torch.view_as_real(self.weight().detach().resolve_conj()).clone()

    @property
    def n_modes(self) -> tuple[int, ...]:
        """Frequencies used per axis now (``<= max_n_modes``)."""
        return self._n_modes

    @n_modes.setter
    def n_modes(self, modes: Sequence[int] | int) -> None:
        modes = check_ints("SpectralConv", "n_modes", modes, n=self.dim, broadcast=True)
        if any(m > a for m, a in zip(modes, self.max_n_modes)):
            raise ParameterError(f"SpectralConv: n_modes must be at most max_n_modes = {list(self.max_n_modes)}, got {modes}")
        self._n_modes = tuple(modes)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, n_modes={list(self.n_modes)}, "
            f"max_n_modes={list(self.max_n_modes)}, factorization={self.factorization}"
        )

    def kept(self, sizes: Sequence[int]) -> list[tuple[int, int]]:
        """``(non-negative, negative)`` frequency counts used per axis on a grid of ``sizes``."""
        out = [(min(m, (n + 1) // 2), min(m, n // 2)) for m, n in zip(self._n_modes[:-1], sizes[:-1])]
        out.append((min(self._n_modes[-1], sizes[-1] // 2 + 1), 0))
        return out

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``K x``, plus ``bias`` (``[out]``, one constant per channel) when given: added as the zero
        frequency of the spectrum, which costs no pass over the output (the FNO layer's ``W v + b``
        uses it, issue 22)."""
        d = self.dim
        if x.ndim != d + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"SpectralConv: expected input [B, {self.in_channels}, *S] with {d} spatial axes, got {list(x.shape)}")
        if self.dft == "matmul" or (self.dft == "auto" and (torch.compiler.is_exporting() or _slow_fft(x, self))):
            y = self._forward_matmul(x)
            return y if bias is None else y + bias.reshape(-1, *[1] * d).to(y.dtype)
        sizes = tuple(x.shape[2:])
        keep = self.kept(sizes)
        dtype = x.dtype
        if dtype in (torch.float16, torch.bfloat16):  # e.g. under autocast: FFTs in float32
            x = x.float()
        # forward transform axis by axis, the last (real) axis first, each leading axis transformed
        # only over the frequencies already retained on the axes after it: the same numbers as
        # rfftn then truncation (to rounding), fewer flops both ways
        products = self.dft == "auto" and _products_last(x, keep[-1][0])
        x_ft = _rfft_last(x, keep[-1][0], products)  # [B, I, n_1, ..., k_d]
        for axis in reversed(range(d - 1)):
            x_ft = _gather(torch.fft.fft(x_ft, dim=2 + axis), 2 + axis, *keep[axis], sizes[axis])
        # x_ft: [B, I, *M], w: [I, O, *M] with M = (p_1 + q_1, ..., k_d): one batched
        # matrix product over the retained modes, on contiguous mode-major operands
        # (a plain einsum here is up to 3x slower: CPU complex bmm copies each
        # strided batch matrix)
        batch, modes = x.shape[0], x_ft.shape[2:]
        # (one copy: the FFT leaves the transformed axis innermost, so x_ft is not mode-major or contiguous)
        xm = x_ft.permute(*range(2, d + 2), 0, 1).reshape(-1, batch, self.in_channels).contiguous()  # [M, B, I]
        wm = self._mode_major(keep, x_ft.dtype)  # [M, I, O]
        product = (_ModeProduct.apply if torch.is_grad_enabled() and (xm.requires_grad or wm.requires_grad)
                   and not torch.jit.is_tracing() else torch.bmm)  # (a jit trace holds no Python Function)
        y = product(xm, wm).permute(1, 2, 0).reshape(batch, self.out_channels, *modes)  # [B, O, *M]
        if bias is not None:  # a constant c is the zero frequency c * prod(S) (the inverse divides by it)
            y.select(-1, 0)[(slice(None), slice(None), *[0] * (d - 1))].add_(bias.to(y.real.dtype) * math.prod(sizes))
        # inverse transform axis by axis: zero-fill the dropped frequencies of one
        # axis, then transform it, so the FFTs of the leading axes only run over
        # the retained columns of the last axis; irfft zero-pads that one itself
        for axis in range(d - 1):
            y = torch.fft.ifft(_scatter(y, 2 + axis, *keep[axis], sizes[axis]), dim=2 + axis)
        return _irfft_last(y, sizes[-1], products).to(dtype)  # [B, O, *S]


    def _mode_major(self, keep, dtype) -> torch.Tensor:
        """The weight of the retained modes as ``[M, I, O]``, contiguous. Under ``torch.inference_mode``
        (the predictor's path) it is kept between calls while the same parameter objects hold the
        same storage at the same version; anything else (training, ``no_grad`` evaluation,
        ``functional_call`` with other tensors) rebuilds it. (In-place writes through ``p.data``
        bypass the version counter: call ``layer.to(...)`` or leave inference mode after them.)"""
        cache = torch.is_inference_mode_enabled() and not torch.compiler.is_compiling()
        params = tuple(self.weight.parameters()) if cache else ()
        key = (tuple(keep), dtype, tuple((p.data_ptr(), p._version) for p in params))
        hit = (cache and self._cached is not None and self._cached[0] == key
               and len(self._cached[1]) == len(params) and all(a is b for a, b in zip(self._cached[1], params)))
        if hit:
            return self._cached[2]
        w = _first(self.weight(), keep[-1][0])  # [I, O, 2 m_1, ..., m_d]
        for axis, m in enumerate(self.max_n_modes[:-1]):
            w = _gather(w, 2 + axis, *keep[axis], 2 * m)
        wm = w.to(dtype).reshape(self.in_channels, self.out_channels, -1).permute(2, 0, 1).contiguous()
        self._cached = (key, params, wm) if cache else None  # (holding the parameters keeps their ids unique)
        return wm

    def _forward_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """The same operator with the truncated DFTs as real matrix products (no FFT, no complex
        tensors): what ONNX and other runtimes without complex numbers can hold.

        Along an axis of ``n`` points the retained frequencies ``k`` form the ``[n, M]``
        matrices ``C = cos(2 pi x k / n)`` and ``S = sin(2 pi x k / n)``, built from the
        input's own size (so an exported graph keeps its resolution dynamic). Forward:
        ``X = v (C - i S)`` over the last axis, then the complex product over the leading
        axes; the mode-wise weight as one real ``bmm`` on ``[[Re R, Im R], [-Im R, Re R]]``;
        inverse: ``(1/n) sum_k Y_k e^{+2 pi i x k / n}`` over the leading axes, and over the last
        one the real part with weight 2 for the frequencies whose conjugate ``rfft`` leaves
        out (1 for 0 and ``n/2``), as ``irfft`` does. While exporting (sizes symbolic) the grid
        must hold all modes (``n_i >= 2 m_i``); eager calls take any size.
        """
        d, sizes = self.dim, tuple(x.shape[2:])
        if any(isinstance(n, torch.SymInt) for n in sizes):  # exporting with dynamic sizes
            for n, m in zip(sizes, self._n_modes):
                torch._check(n >= 2 * m)
            keep = [(m, m) for m in self._n_modes[:-1]] + [(self._n_modes[-1], 0)]
        else:
            keep = self.kept(sizes)
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        x = x.to(dtype)
        w = self.frozen if self.frozen is not None else torch.view_as_real(self.weight().resolve_conj())
        w = w[..., : keep[-1][0], :]  # [I, O, *M, 2]: real and imaginary parts
        for axis, m in enumerate(self.max_n_modes[:-1]):
            w = _gather(w, 2 + axis, *keep[axis], 2 * m)
        w = w.to(dtype)
        # forward transform, the last axis first (real input)
        c, s = _dft_basis(sizes[-1], keep[-1][0], 0, dtype, x.device)  # [n, k]
        re, im = x @ c, -(x @ s)  # [B, I, n_1, ..., k_d]
        for axis in range(d - 1):
            c, s = _dft_basis(sizes[axis], *keep[axis], dtype, x.device)
            re, im = _along(re, 2 + axis, c) + _along(im, 2 + axis, s), _along(im, 2 + axis, c) - _along(re, 2 + axis, s)
        batch, modes = x.shape[0], re.shape[2:]
        i, o = self.in_channels, self.out_channels
        xm = torch.cat([re, im], 1).reshape(batch, 2 * i, -1).permute(2, 0, 1)  # [M, B, 2I]
        wr, wi = w[..., 0].reshape(i, o, -1), w[..., 1].reshape(i, o, -1)
        wm = torch.cat([torch.cat([wr, wi], 1), torch.cat([-wi, wr], 1)], 0).permute(2, 0, 1)  # [M, 2I, 2O]
        y = torch.bmm(xm, wm).permute(1, 2, 0).reshape(batch, 2 * o, *modes)
        re, im = y[:, :o], y[:, o:]
        for axis in range(d - 1):  # inverse transform of the leading axes: [.., M] -> [.., n]
            n = sizes[axis]
            c, s = _dft_basis(n, *keep[axis], dtype, x.device)
            c, s = c.T / n, s.T / n
            re, im = _along(re, 2 + axis, c) - _along(im, 2 + axis, s), _along(re, 2 + axis, s) + _along(im, 2 + axis, c)
        n = sizes[-1]
        c, s = _dft_basis(n, keep[-1][0], 0, dtype, x.device)
        half = _irfft_weights(n, keep[-1][0], dtype, x.device)
        return re @ (c * half).T - im @ (s * half).T


class _ModeProduct(torch.autograd.Function):
    """``torch.bmm(x, w)`` whose backward hands the batched product contiguous, conjugation-resolved
    operands: autograd's own backward of a complex ``bmm`` gets the output gradient permuted and
    the operands as conjugate views, which on CPU falls into one small product per mode (about 2x
    slower per layer, benchmarks/RESULTS.md, issue 22). The same numbers; ``torch.func`` transforms
    (a generated vmap rule) and forward-mode AD (``jvp``) work through it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.bmm(x, w)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w = ctx.saved_tensors
        grad = grad.contiguous()
        gx = gw = None
        if ctx.needs_input_grad[0]:  # (conjugated in place of a copy, transposed as a view: the product's flag)
            gx = torch.bmm(grad, w.conj().resolve_conj().transpose(1, 2))
        if ctx.needs_input_grad[1]:
            gw = torch.bmm(x.conj().resolve_conj().transpose(1, 2), grad)
        return gx, gw

    @staticmethod
    def jvp(ctx, dx, dw):
        x, w = ctx.saved_tensors
        out = torch.bmm(dx, w) if dx is not None else None
        if dw is not None:
            out = torch.bmm(x, dw) if out is None else out + torch.bmm(x, dw)
        return out


def _slow_fft(x: torch.Tensor, layer: "SpectralConv") -> bool:
    """Whether, without autograd on a CPU, an axis of ``x`` has a length whose largest prime factor
    ``p`` is 13 or more while the layer keeps at most ``min(p, 32)`` frequencies on it. The FFT's cost
    grows with the prime factors, the truncated DFT's with the frequencies kept. For one layer of the
    quickstart's FNO (width 32, 12 x 12 modes, 10 samples, 2 threads) on n x n grids the products took
    0.42-0.9x the FFT's time at n = 85, 97, 127, 129, 131, 255, 257, and 1.5-4.6x at n = 44, 64, 88,
    100, 121, 128 (factors up to 11); with 256 modes at n = 1031, 1.9x, and with 64 x 64 modes at 257,
    1.1x (benchmarks/RESULTS.md, issue 22). With the backward the products lose at 85 (1.22x), so
    training keeps the FFT. A grid embedded in a torus by ``FNO.period`` (129 for a model trained at 64
    and run at 128) is such a length."""
    if torch.is_grad_enabled() or x.device.type != "cpu" or torch.jit.is_tracing():
        return False
    sizes = tuple(int(n) for n in x.shape[2:])
    for n, (p, q) in zip(sizes, layer.kept(sizes)):
        largest, m = 1, n
        for f in range(2, int(m**0.5) + 1):
            while m % f == 0:
                largest, m = f, m // f
        largest = max(largest, m)
        if largest >= 13 and p + q <= min(largest, 32):
            return True
    return False


def _products_last(x: torch.Tensor, k: int) -> bool:
    """Whether the last axis's truncated transforms run as real matrix products (:func:`_rfft_last`):
    for a plain float32/float64 tensor on a CPU, outside tracing, compiling, a dispatch mode
    (``make_fx``, fake tensors: the bases are kept across calls, :func:`_real_dft`) and autocast
    (which would take the products to half precision), on an axis of ``2 <= n <= 8192`` points with
    at most 32 frequencies kept. There the products beat torch's FFT with its backward: the
    ``rfft``'s backward zero-fills the whole spectrum and runs a complex FFT over it, and ``irfft``
    runs at a third of ``rfft``'s speed on this CPU. Forward and backward of both directions took
    0.32-0.87x the FFTs' time at the 12 lengths and counts measured inside the rule (``n`` = 16-8192)
    and 1.0-3.9x at the 9 outside it (48-256 frequencies); a spectral layer's forward and backward
    0.75-0.77x at the peer comparison's size and 0.70-0.74x at the quickstart's, in four runs
    (``benchmarks/dft_last_axis.py``, benchmarks/RESULTS.md, issue 22)."""
    n = x.shape[-1]
    return (type(x) is torch.Tensor and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and isinstance(n, int) and 2 <= n <= 8192 and k <= 32 and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling() and not torch.is_autocast_enabled("cpu") and not _dispatch_mode())


#: the innermost Python dispatch mode (a private torch function; where missing, every call counts as in one)
_current_mode = getattr(torch.utils._python_dispatch, "_get_current_dispatch_mode", None)


def _dispatch_mode() -> bool:
    """Whether a Python dispatch mode is active (``make_fx``, ``FakeTensorMode``): tensors made there
    must not be kept for later calls."""
    return _current_mode is None or _current_mode() is not None


def _irfft_weights(n, k: int, dtype, device) -> torch.Tensor:
    """``irfft``'s weights of the frequencies ``0..k-1`` on ``n`` points: 2 for those whose conjugates
    ``rfft`` leaves out, 1 for 0 and ``n/2``, over ``n`` (``n`` may be symbolic while exporting)."""
    kk = torch.arange(k, device=device)
    return torch.where((kk == 0) | (2 * kk == n), 1.0, 2.0).to(dtype) / n


@functools.lru_cache(maxsize=32)
def _real_dft(n: int, k: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The truncated real DFT of length ``n`` and its inverse as real matrices over interleaved real
    and imaginary parts: ``fwd [n, 2k]`` (``x @ fwd`` is ``rfft(x)[:k]``) and ``inv [2k, n]``
    (``y @ inv`` is ``irfft(y, n)``: weight 2 for the frequencies whose conjugates ``rfft`` leaves
    out, 1 for 0 and ``n/2``, and ``1/n``). Built in float64 outside inference mode (the
    tensors may be saved for a backward later)."""
    with torch.inference_mode(False), torch.no_grad():
        cos, sin = _dft_basis(n, k, 0, torch.float64, device)  # [n, k]
        fwd = torch.stack([cos, -sin], -1).reshape(n, 2 * k)
        half = _irfft_weights(n, k, torch.float64, device)
        inv = torch.stack([cos.T * half[:, None], -sin.T * half[:, None]], 1).reshape(2 * k, n)
        return fwd.to(dtype), inv.to(dtype)


def _bases(n: int, k: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_real_dft`'s kept bases; made afresh inside a ``torch.func`` transform, whose tensors are
    not kept for calls outside it."""
    if torch._C._are_functorch_transforms_active():
        return _real_dft.__wrapped__(n, k, dtype, device)
    return _real_dft(n, k, dtype, device)


def _rfft_last(x: torch.Tensor, k: int, products: bool) -> torch.Tensor:
    """``rfft`` over the last axis, its first ``k`` frequencies (complex ``[..., k]``); as one real
    matrix product when ``products``."""
    if not products:
        return _first(torch.fft.rfft(x, dim=-1), k)
    n = x.shape[-1]
    fwd, _ = _bases(n, k, x.dtype, x.device)
    return torch.view_as_complex((x.reshape(-1, n) @ fwd).view(*x.shape[:-1], k, 2))


def _irfft_last(y: torch.Tensor, n: int, products: bool) -> torch.Tensor:
    """``irfft(y, n)`` over the last axis (the frequencies above ``y``'s last axis taken as zero); as
    one real matrix product when ``products``. ``y`` is made contiguous as complex numbers first: the
    same copy done on the real view (pairs of floats moved as a strided tensor of their own) took 6x
    longer (340 against 56 us on the peer's layer, issue 22)."""
    if not products:
        return torch.fft.irfft(y, n=n, dim=-1)
    k = y.shape[-1]
    _, inv = _bases(n, k, y.real.dtype, y.device)
    return (torch.view_as_real(y.contiguous()).view(-1, 2 * k) @ inv).view(*y.shape[:-1], n)


def _dft_basis(n, p: int, q: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` of ``2 pi x k / n`` for the grid ``x = 0..n-1`` and the frequencies
    ``k = 0..p-1, -q..-1`` (the order :func:`_gather` keeps): two ``[n, p + q]`` matrices."""
    k = torch.cat([torch.arange(p, device=device), torch.arange(-q, 0, device=device)]).to(dtype)
    angle = torch.arange(n, device=device).to(dtype)[:, None] * k * (2 * math.pi / n)
    return torch.cos(angle), torch.sin(angle)


def _along(t: torch.Tensor, axis: int, matrix: torch.Tensor) -> torch.Tensor:
    """``t`` with ``axis`` contracted against the rows of ``matrix`` (``[n, m]``: length n -> m)."""
    return (t.movedim(axis, -1) @ matrix).movedim(-1, axis)


def _first(t: torch.Tensor, k: int) -> torch.Tensor:
    """The first ``k`` entries of the last axis; ``t`` itself when that is all of it (a slice that keeps
    everything still costs its backward a zero-filled copy: two per layer and step at the peer's 16 x 16
    with 9 modes on the last axis)."""
    return t if t.shape[-1] == k else t[..., :k]


def _gather(t: torch.Tensor, axis: int, p: int, q: int, n: int) -> torch.Tensor:
    """Entries ``0..p-1`` and ``n-q..n-1`` of ``t`` along ``axis`` (length ``n``), in that order."""
    if p + q == n:
        return t
    if not q:
        return t.narrow(axis, 0, p)
    return torch.cat([t.narrow(axis, 0, p), t.narrow(axis, n - q, q)], axis)


def _scatter(t: torch.Tensor, axis: int, p: int, q: int, n: int) -> torch.Tensor:
    """Inverse of :func:`_gather`: length ``n`` along ``axis``, zeros between the blocks."""
    if p + q == n:
        return t
    shape = list(t.shape)
    shape[axis] = n - p - q
    return torch.cat([t.narrow(axis, 0, p), t.new_zeros(shape), t.narrow(axis, p, q)], axis)
