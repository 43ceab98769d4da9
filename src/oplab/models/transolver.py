"""Transolver: a Transformer with Physics-Attention, on a grid of any dimension.

Wu, Luo, Wang, Wang, Long, "Transolver: A Fast Transformer Solver for PDEs on
General Geometries", ICML 2024, arXiv:2402.02366, sec. 3 ("Physics-Attention"
and the Transolver layer built on it); the concrete form as in the authors'
released code (the paper's full text could not be consulted here).

The grid is flattened to ``N`` points; every layer acts on point features
``x [B, N, C]``.

**Physics-Attention**, per head (``C = n_heads * d_h``):

1. *slice*: point ``i``'s soft assignment to ``M = n_slices`` slices,
   ``w_i = softmax(W_s x'_i / tau)`` (``x'`` a linear projection of the point
   features, split into heads; ``W_s: d_h -> M`` shared by the heads; ``tau``
   a learned temperature per head, clamped to ``[0.1, 5]`` as in the
   authors' code), so ``sum_j w_ij = 1``;
2. *physics-aware tokens*: ``z_j = sum_i w_ij f_i / sum_i w_ij``, weighted
   averages of a second projection ``f`` of the point features (independent
   of the number of points);
3. *attention among the tokens*: standard softmax self-attention,
   ``z' = softmax(q k^T / sqrt(d_h)) v`` with ``q, k, v`` bias-free linear maps
   of ``z`` (``M x M`` per head, not ``N x N``: cost linear in ``N``);
4. *deslice*: ``x_i <- sum_j w_ij z'_j``; heads concatenated; output linear map.

**Transolver layer**: pre-LayerNorm, ``x <- x + PhysicsAttention(LN(x))``,
``x <- x + MLP(LN(x))`` (MLP: ``C -> mlp_ratio * C -> C``, GELU). The input
channels and the point positions are lifted by an MLP ``(C_in + P) -> 2 width
-> width``; the output is ``Linear(LN(x))`` to ``out_channels``.

Positions (``P`` channels): with ``ref = 0`` the ``d`` coordinates; with
``ref = k > 0`` the paper's "unified position" of its standard benchmarks:
the Euclidean distances from the point to a ``k^d`` reference grid spanning
the bounding box of the coordinates (``k^d`` channels). The latter matters in
practice: on a small Darcy set (17 x 17, 40 samples; width 16, 2 layers)
the model with raw coordinates stays for 30 epochs at about the relative
error of a constant field (0.53), as the pointwise MLP is slow to build the
solution's bump from two coordinates, while with ``ref = 8`` it falls to
0.21 in 10 epochs.
For a cell-centred grid the bounding box, and so the references, move by
half a cell when the resolution changes.

Every projection here is pointwise (``nn.Linear``), so the model accepts any
grid, of any size and any number of axes (and is equivariant to a
permutation of the points, given their positions). The paper's
structured-mesh models (``Transolver_2D``/``_3D`` of the authors' code) instead
compute ``x'`` and ``f`` with a 3x3 convolution on the grid; that local
convolution is not used here.

Darcy settings of the paper (85 x 85 grid; the released
``scripts/Transolver_Darcy.sh``): 8 layers, ``width=128``, 8 heads,
``n_slices=64``, ``mlp_ratio=1``, unified position with 8 x 8 references
(``ref=8``), learning rate 1e-3, batch 4, gradient clipping 0.1. Here
``Transolver(1, 1, width=128, n_layers=8, n_heads=8, n_slices=64, mlp_ratio=1, ref=8)``
has 729,665 parameters (the released model, with its 3x3 convolutions and
the 64 unified-position channels: 2.83 M, 2.36 M of them in those convolutions).
The slice projections start orthogonal (the released code asks for this but then
overwrites it by its global truncated-normal initialisation).
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import nn

from ..errors import ParameterError, check_int, is_int
from ..layers.grid import append_positions, check_channels
from . import register
from .base import Operator


def _autocast_on() -> bool:
    return any(torch.is_autocast_enabled(kind) for kind in ("cpu", "cuda"))


def _attend(s: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor) -> torch.Tensor:
    """Attention among the slice tokens: ``s [BH, M, d_h + 1]`` holds the weighted sums of ``f`` and,
    last, the total weight of each slice; returns ``z' [BH, M, d_h]``."""
    z = s[..., :-1] / (s[..., -1:] + 1e-5)  # the weighted means
    q, k, v = z @ w_q.T, z @ w_k.T, z @ w_v.T
    attention = (q @ k.transpose(-1, -2) / math.sqrt(z.shape[-1])).softmax(dim=-1)  # [BH, M, M]
    return attention @ v


class _SliceAttendDeslice(torch.autograd.Function):
    """``softmax(logits) -> tokens -> attention -> deslice`` with a hand-written backward.

    The ``[BH, N, M]`` slice weights are the only large tensors of Physics-Attention; autograd would
    make a gradient for each of their two uses (tokens, deslice), add them and then run the softmax
    backward. Here both gradients come from one matrix product, ``[f, 1 | dout] @ [ds | z']^T``,
    straight into the softmax backward; the small ``M x M`` part is recomputed under autograd."""

    @staticmethod
    def forward(ctx, logits, f, w_q, w_k, w_v):
        weights = logits.softmax(dim=-1)  # [BH, N, M]
        s = weights.transpose(-1, -2) @ f  # [BH, M, d_h + 1]
        z_out = _attend(s, w_q, w_k, w_v)  # [BH, M, d_h]
        ctx.save_for_backward(weights, f, s, z_out, w_q, w_k, w_v)
        return weights @ z_out  # [BH, N, d_h]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        weights, f, s, z_out, w_q, w_k, w_v = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_z_out = weights.transpose(-1, -2) @ grad_out  # [BH, M, d_h]
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_() for t in (s, w_q, w_k, w_v)]
            grad_s, grad_q, grad_k, grad_v = torch.autograd.grad(_attend(*inputs), inputs, grad_z_out)
        grad_weights = torch.cat([f, grad_out], dim=-1) @ torch.cat([grad_s, z_out], dim=-1).transpose(-1, -2)
        grad_logits = torch._softmax_backward_data(grad_weights, weights, -1, weights.dtype)
        grad_f = weights @ grad_s if ctx.needs_input_grad[1] else None
        return grad_logits, grad_f, grad_q, grad_k, grad_v


class PhysicsAttention(nn.Module):
    """Physics-Attention (Transolver, sec. 3) on point features ``[B, N, C] -> [B, N, C]``.

    Implementation: the large tensors are the slice weights ``[B * heads, N, M]``; they are made in
    that layout by one batched product (``x'`` per head with ``W_s / tau``, no transposed copy), the
    slice totals come out of the token product (``f`` gets a column of ones), and in training the
    backward is hand-written (:class:`_SliceAttendDeslice`) so that the weights are traversed as few
    times as possible."""

    def __init__(self, width: int, n_heads: int, n_slices: int):
        super().__init__()
        if width % n_heads:
            raise ParameterError(f"PhysicsAttention: width ({width}) must be divisible by n_heads ({n_heads})")
        self.width, self.n_heads, self.n_slices = width, n_heads, n_slices
        self.head_dim = width // n_heads
        self.to_x = nn.Linear(width, width)  # features that decide the slices (x')
        self.to_f = nn.Linear(width, width)  # features that are averaged into tokens (f)
        self.to_slices = nn.Linear(self.head_dim, n_slices)  # W_s, shared by the heads
        nn.init.orthogonal_(self.to_slices.weight)
        self.temperature = nn.Parameter(torch.full((n_heads,), 0.5))
        self.to_q = nn.Linear(self.head_dim, self.head_dim, bias=False)
        self.to_k = nn.Linear(self.head_dim, self.head_dim, bias=False)
        self.to_v = nn.Linear(self.head_dim, self.head_dim, bias=False)
        self.to_out = nn.Linear(width, width)

    def _heads(self, y: torch.Tensor) -> torch.Tensor:
        """``[B, N, C] -> [B * heads, N, d_h]`` (contiguous)."""
        batch, n, _ = y.shape
        return y.view(batch, n, self.n_heads, self.head_dim).transpose(1, 2).reshape(batch * self.n_heads, n, -1)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Slice logits ``[B * heads, N, M]``: ``(W_s x'_h + b_s) / tau_h``, ``x' = W_x x + b_x``."""
        batch = x.shape[0]
        scale = (1.0 / self.temperature.clamp(0.1, 5.0))[:, None, None]  # [h, 1, 1]
        weight = (self.to_slices.weight.T * scale).repeat(batch, 1, 1)  # [B * h, d_h, M]
        bias = (self.to_slices.bias * scale).repeat(batch, 1, 1)  # [B * h, 1, M]
        return torch.baddbmm(bias, self._heads(self.to_x(x)), weight)

    def slice_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``w [B, heads, N, M]``: each point's soft assignment to the slices (sums to 1 over ``M``),
        ``softmax((W_s x'_h + b_s) / tau_h)`` with ``x' = W_x x + b_x`` split into heads."""
        batch, n, _ = x.shape
        return self._logits(x).softmax(dim=-1).view(batch, self.n_heads, n, self.n_slices)

    def _f_and_ones(self, x: torch.Tensor) -> torch.Tensor:
        """``[B * heads, N, d_h + 1]``: ``f = W_f x + b_f`` per head and a column of ones (for the totals)."""
        batch, n, _ = x.shape
        f = self.to_f(x).view(batch, n, self.n_heads, self.head_dim).transpose(1, 2)  # [B, h, N, d_h]
        ones = torch.ones(1, 1, 1, 1, dtype=f.dtype, device=f.device).expand(batch, self.n_heads, n, 1)
        return torch.cat([f, ones], dim=-1).view(batch * self.n_heads, n, self.head_dim + 1)

    def tokens(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Slice tokens ``[B, heads, M, d_h]``: the ``w``-weighted means of the projected point features
        ``f = W_f x + b_f`` (``weights [B, heads, N, M]``)."""
        batch, n, _ = x.shape
        s = weights.reshape(-1, n, self.n_slices).transpose(-1, -2) @ self._f_and_ones(x)  # [B * h, M, d_h + 1]
        z = s[..., :-1] / (s[..., -1:] + 1e-5)
        return z.view(batch, self.n_heads, self.n_slices, self.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n, _ = x.shape
        logits, f = self._logits(x), self._f_and_ones(x)  # [B * h, N, M], [B * h, N, d_h + 1]
        w_q, w_k, w_v = self.to_q.weight, self.to_k.weight, self.to_v.weight
        if torch.is_grad_enabled() and not _autocast_on() and (logits.requires_grad or f.requires_grad):
            out = _SliceAttendDeslice.apply(logits, f, w_q, w_k, w_v)
        else:
            weights = logits.softmax(dim=-1)
            out = weights @ _attend(weights.transpose(-1, -2) @ f, w_q, w_k, w_v)  # [B * h, N, d_h]
        out = out.view(batch, self.n_heads, n, self.head_dim).transpose(1, 2).reshape(x.shape)
        return self.to_out(out)

    def extra_repr(self) -> str:
        return f"width={self.width}, n_heads={self.n_heads}, n_slices={self.n_slices}"


class TransolverLayer(nn.Module):
    """Pre-LayerNorm Transformer layer with Physics-Attention (Transolver, sec. 3)."""

    def __init__(self, width: int, n_heads: int, n_slices: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = PhysicsAttention(width, n_heads, n_slices)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(mlp_ratio * width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@register("transolver")
class Transolver(Operator):
    """Transolver (Wu et al., ICML 2024) mapping ``[B, in_channels, *S]`` to ``[B, out_channels, *S]``.

    Args:
        in_channels, out_channels: channels of the input and output functions.
        dim: number of spatial axes (any; the grid is flattened to points).
        width: channels of the point features.
        n_layers: Transolver layers.
        n_heads: heads of Physics-Attention; ``width`` must be divisible by it.
        n_slices: slices ``M`` (physics-aware tokens) per head.
        mlp_ratio: hidden channels of each layer's MLP, in units of ``width``.
        positional: give every point its position (from ``coords``) as extra input channels.
        ref: ``0``: the position is the ``dim`` coordinates; ``k > 0``: the distances to a
            ``k^dim`` reference grid over the coordinates' bounding box (the paper's
            unified position, ``k = 8`` on its benchmarks).

    ``forward(x, coords)``: ``x [B, in_channels, *S]``, ``coords`` a tuple of ``dim``
    1D coordinate tensors (required when ``positional``). :meth:`forward_points`
    maps point features ``[B, N, in_channels + P]`` (from :meth:`points`) to ``[B, N, out_channels]``.
    """

    kind = "grid"
    reference = (
        "H. Wu, H. Luo, H. Wang, J. Wang, M. Long, \"Transolver: A Fast Transformer Solver for PDEs on "
        "General Geometries\", ICML 2024, arXiv:2402.02366"
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dim: int = 2,
        width: int = 128,
        n_layers: int = 8,
        n_heads: int = 8,
        n_slices: int = 64,
        mlp_ratio: float = 1,
        positional: bool = True,
        ref: int = 8,
    ):
        super().__init__()
        name = "Transolver"
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels), ("dim", dim), ("width", width),
                           ("n_layers", n_layers), ("n_heads", n_heads), ("n_slices", n_slices)):
            check_int(name, key, value)
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, numbers.Real) or mlp_ratio <= 0 \
                or int(mlp_ratio * width) < 1:
            raise ParameterError(f"{name}: mlp_ratio must be a positive number (hidden = mlp_ratio * width >= 1), got {mlp_ratio!r}")
        if width % n_heads:
            raise ParameterError(f"{name}: width ({width}) must be divisible by n_heads ({n_heads})")
        if not is_int(ref, 0) or ref == 1:
            raise ParameterError(f"{name}: ref must be 0 (coordinates) or an int >= 2 (reference points per axis), got {ref!r}")
        self.dim, self.ref = int(dim), int(ref)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.positional = bool(positional)
        n_position = (self.ref**self.dim if self.ref else self.dim) if self.positional else 0
        lifted = self.in_channels + n_position
        self.preprocess = nn.Sequential(nn.Linear(lifted, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.layers = nn.ModuleList(TransolverLayer(width, n_heads, n_slices, mlp_ratio) for _ in range(n_layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, self.out_channels)
        self.apply(_init)
        for layer in self.layers:  # the slice projections stay orthogonal
            nn.init.orthogonal_(layer.attention.to_slices.weight)

    @classmethod
    def defaults(cls, sizes, periodic, given=None) -> dict:
        """``dim``; ``ref`` 8 (the paper's) in 1D and 2D, 4 in 3D (64 position channels)."""
        return {"dim": len(sizes), "ref": 8 if len(sizes) <= 2 else 4}

    def points(self, x: torch.Tensor, coords: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The flattened grid as point features: ``[B, C_in, *S] -> [B, N, C_in + P]``
        (``P`` position channels, see ``ref``)."""
        check_channels(x, self.in_channels, self.dim, "Transolver")
        batch = x.shape[0]
        points = x.reshape(batch, self.in_channels, -1).transpose(1, 2)  # [B, N, C_in]
        if not self.positional:
            return points
        position = append_positions(x[:, :0], coords, "Transolver")[0]  # [d, *S] (checks coords)
        position = position.reshape(self.dim, -1).T  # [N, d]
        if self.ref:
            steps = torch.linspace(0.0, 1.0, self.ref, dtype=x.dtype, device=x.device)
            axes = [c.min() + (c.max() - c.min()) * steps for c in (c.to(x) for c in coords)]  # no host sync
            references = torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(self.dim, -1).T  # [ref^d, d]
            position = (position[:, None, :] - references[None]).square().sum(-1).sqrt()  # [N, ref^d]
        return torch.cat([points, position.expand(batch, -1, -1)], dim=-1)

    def forward_points(self, points: torch.Tensor) -> torch.Tensor:
        """``[B, N, in_channels + P] -> [B, N, out_channels]``: the network on a point cloud."""
        h = self.preprocess(points)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h))

    def forward(self, x: torch.Tensor, coords: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        batch, _, *sizes = x.shape
        y = self.forward_points(self.points(x, coords))  # [B, N, C_out]
        return y.transpose(1, 2).reshape(batch, self.out_channels, *sizes)


def _init(module: nn.Module) -> None:
    """The authors' initialisation: linear weights ~ truncated normal (std 0.02), zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
