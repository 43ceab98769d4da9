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


class PhysicsAttention(nn.Module):
    """Physics-Attention (Transolver, sec. 3) on point features ``[B, N, C] -> [B, N, C]``."""

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

    def slice_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``w [B, heads, N, M]``: each point's soft assignment to the slices (sums to 1 over ``M``),
        ``softmax((W_s x'_h + b_s) / tau_h)`` with ``x' = W_x x + b_x`` split into heads.

        ``W_x``, the per-head ``W_s`` and ``1 / tau`` are composed into one ``C x (heads * M)``
        matrix first, so the points meet a single matrix product (no ``N x C`` intermediate,
        no division of the ``N x M`` logits)."""
        batch, n, _ = x.shape
        h, d = self.n_heads, self.head_dim
        scale = 1.0 / self.temperature.clamp(0.1, 5.0)  # [h]
        w_s, b_s = self.to_slices.weight, self.to_slices.bias  # [M, d_h], [M]
        weight = torch.einsum("hdc,md->chm", self.to_x.weight.view(h, d, -1), w_s) * scale[:, None]  # [C, h, M]
        bias = (self.to_x.bias.view(h, d) @ w_s.T + b_s) * scale[:, None]  # [h, M]
        logits = torch.addmm(bias.reshape(-1), x.reshape(batch * n, -1), weight.reshape(weight.shape[0], -1))
        logits = logits.view(batch, n, h, self.n_slices).transpose(1, 2).contiguous()  # [B, h, N, M]
        return logits.softmax(dim=-1)

    def tokens(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Slice tokens ``[B, heads, M, d_h]``: the ``w``-weighted means of the projected point features
        ``f = W_f x + b_f`` (``weights [B, heads, N, M]``)."""
        f = self.to_f(x).view(*x.shape[:2], self.n_heads, self.head_dim).transpose(1, 2)  # [B, h, N, d_h]
        total = weights.sum(dim=2)  # [B, h, M]
        return (weights.transpose(-1, -2) @ f) / (total[..., None] + 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.slice_weights(x)  # [B, h, N, M]
        z = self.tokens(x, weights)  # [B, h, M, d_h]
        q, k, v = self.to_q(z), self.to_k(z), self.to_v(z)
        attention = (q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)).softmax(dim=-1)  # [B, h, M, M]
        out = weights @ (attention @ v)  # deslice: [B, h, N, d_h]
        return self.to_out(out.transpose(1, 2).reshape(x.shape))

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
