"""Attentional neural integral equations (ANIE) on a grid of any dimension.

Zappala, Fonseca, Caro, Moberly, Higley, Cardin, van Dijk, "Neural integral
equations" (NIE; arXiv:2209.15190) and "Learning integral operators via neural
integral equations" (Nature Machine Intelligence 2024, the attention-based
ANIE). Written here from the method, not from the authors' code.

An NIE is the solution ``y`` of an integral equation of the second kind::

    y(x) = f(x) + int_Omega G_theta(y(s), x, s) ds,

solved by fixed-point (Picard) iteration ``y_{k+1} = f + K_theta(y_k)``,
``y_0 = f``; training backpropagates through the iterations (plain autograd
through the unrolled loop). In ANIE the integral operator is self-attention
over the points of the domain: with ``z(s) = [LN(y(s)), p(s)]`` (the layer-normed
iterate and the point's position ``p``),

    K(y)(x) = gain * W_o sum_s softmax_s(q(x) . k(s) / sqrt(d_h)) v(s),

``q = W_q z(x)``, ``k = W_k z(s)``, ``v = W_v z(s)`` per head (multi-head,
``torch.nn.functional.scaled_dot_product_attention``): the softmax weights
are a (normalised) quadrature of the kernel ``exp(q(x) . k(s))`` over ``Omega``,
the values the integrand, so ``G(y(s), x, s)`` depends on the iterate and on
both positions.

Here, as an oplab grid operator (``[B, C_in, *S] -> [B, C_out, *S]``, the grid
flattened to ``N`` points):

* ``f = P([a, p])``: the input channels and the positions (the ``d``
  coordinates, from ``coords``) lifted pointwise to ``width`` channels
  (``Linear -> GELU -> Linear``, ``2 width`` hidden);
* ``y = picard(f, K, iterations, tol)`` (:func:`picard`);
* ``u = Q(y)``: pointwise projection to ``out_channels`` (``Linear -> GELU ->
  Linear``, ``2 width`` hidden).

**Contractivity at initialisation.** ``K`` is multiplied by a learned scalar
``gain`` that starts at ``gain`` (default 0.1). Its input passes a LayerNorm,
so ``|K(y)|`` is bounded whatever ``y`` is (by ``gain * |W_o W_v|`` times the
normed features), and with the small gain the map ``y -> f + K(y)`` is a
contraction in practice at init: on random inputs the Picard updates
``|y_{k+1} - y_k|`` shrink by a factor of about 5 per iteration (0.13-0.23 measured on a
17 x 17 grid) (checked in
tests/test_models_nie.py). Nothing enforces contractivity during training (no
spectral normalisation): a fixed number of iterations keeps the map
well-defined either way, and the LayerNorm keeps the iterates bounded.

**Stopping.** ``iterations`` (default 6) applications of ``K``; with
``tol > 0`` a sample stops early once its relative update
``|y_{k+1} - y_k| / |y_{k+1}|`` falls below ``tol`` (its iterate is then
frozen, so a batch answers as its samples one by one); the loop ends when
every sample has stopped. ``tol = 0`` (default) always runs every iteration
(the same computation for every input, float32 against float64, and for
``torch.compile``).

**Cost.** Attention over all ``N`` points costs ``O(N^2 width)`` per
iteration (memory ``O(N)`` with the fused CPU/GPU kernels; the naive kernel,
e.g. in float64, stores the ``N x N`` weights). ``points`` caps it: the keys
and values are computed on a coarsened grid, the features ``z`` average-pooled
(``adaptive_avg_pool``) to at most ``points`` cells per axis, while every
point still asks a query (``O(N M width)`` for ``M`` pooled cells): a coarser
quadrature of the same integral. :meth:`ANIE.defaults` sets it for grids of
more than 1,024 points (16 per axis in 2D: on Darcy 64 x 64, 4,096 queries
against 256 keys). Measured on this 2-core CPU, one thread, Darcy 64 x 64,
batch 8, forward + backward with 6 iterations (8,994 parameters): 1.6 s with
``points=16``, 6.5 s with ``points=32``, 0.65 s with ``points=8``.

Not resolution invariant as a claim (``resolution_invariance`` returns
``None``): the softmax quadrature approximates the integral with an error that
falls as the grid is refined, but the positions are a sawtooth on a periodic
axis and the pooled grid (``points``) changes with the resolution.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError, check_int, is_int
from ..layers.grid import append_positions, check_channels
from . import register
from .base import Operator

_POOLS = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


def picard(f: torch.Tensor, K: Callable[[torch.Tensor], torch.Tensor], iterations: int, tol: float = 0.0,
           info: dict | None = None) -> torch.Tensor:
    """Solve ``y = f + K(y)`` by fixed-point (Picard) iteration ``y_{k+1} = f + K(y_k)``, ``y_0 = f``.

    ``f [B, ...]`` (the first axis a batch of independent equations), ``K`` a map of tensors of that
    shape; at most ``iterations`` applications of ``K``. With ``tol > 0`` a sample whose relative
    update ``|y_{k+1} - y_k| / |y_{k+1}|`` is below ``tol`` is frozen (its later updates discarded)
    and the loop ends once all are; ``tol = 0`` runs every iteration. Differentiable through the
    iterations (autograd). ``info``, if given, receives ``"iterations"`` (applications of ``K``) and
    ``"update"`` (the last relative update per sample, detached)."""
    y = f
    done = torch.zeros(f.shape[0], dtype=torch.bool, device=f.device)
    steps, update = 0, None
    for _ in range(int(iterations)):
        new = f + K(y)
        steps += 1
        with torch.no_grad():
            diff = (new - y).flatten(1).norm(dim=1)
            update = diff / new.flatten(1).norm(dim=1).clamp_min(torch.finfo(new.dtype).tiny)
        if tol > 0:
            keep = done.view(-1, *[1] * (f.ndim - 1))
            y = torch.where(keep, y, new)
            done = done | (update < tol)
            if bool(done.all()):
                break
        else:
            y = new
    if info is not None:
        info["iterations"] = steps
        info["update"] = update
    return y


class AttentionKernel(nn.Module):
    """The integral operator of ANIE: ``gain * W_o MHA(q(z), k(pool z), v(pool z))``,
    ``z = [LN(y), p]``, on point features ``y [B, N, width]`` with positions ``p [B, N, P]``."""

    def __init__(self, width: int, n_heads: int, n_position: int, gain: float):
        super().__init__()
        self.width, self.n_heads = width, n_heads
        self.head_dim = width // n_heads
        self.norm = nn.LayerNorm(width)
        self.to_q = nn.Linear(width + n_position, width)
        self.to_kv = nn.Linear(width + n_position, 2 * width)
        self.to_out = nn.Linear(width, width)
        self.gain = nn.Parameter(torch.tensor(float(gain)))

    def forward(self, y: torch.Tensor, position: torch.Tensor | None, sizes: Sequence[int],
                points: int | None) -> torch.Tensor:
        batch, n, _ = y.shape
        z = self.norm(y)
        if position is not None:
            z = torch.cat([z, position], dim=-1)  # [B, N, W + P]
        memory = z
        if points is not None and any(s > points for s in sizes):
            d = len(sizes)
            grid = z.transpose(1, 2).reshape(batch, z.shape[-1], *sizes)
            pooled = _POOLS[d](grid, [min(s, points) for s in sizes])
            memory = pooled.reshape(batch, z.shape[-1], -1).transpose(1, 2)  # [B, M, W + P]
        h, dh = self.n_heads, self.head_dim
        q = self.to_q(z).view(batch, n, h, dh).transpose(1, 2)  # [B, h, N, dh]
        k, v = self.to_kv(memory).view(batch, memory.shape[1], 2, h, dh).permute(2, 0, 3, 1, 4)  # [B, h, M, dh]
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(dh)) v
        return self.gain * self.to_out(out.transpose(1, 2).reshape(batch, n, self.width))


@register("anie")
class ANIE(Operator):
    """Attentional neural integral equation (Zappala et al.) mapping ``[B, in_channels, *S]`` to
    ``[B, out_channels, *S]``: ``y = f + K(y)`` solved by Picard iteration (module docstring).

    Args:
        in_channels, out_channels: channels of the input and output functions.
        dim: number of spatial axes (1, 2 or 3; the grid is flattened to points).
        width: channels of the solution ``y`` of the integral equation.
        n_heads: attention heads of ``K``; ``width`` must be divisible by it.
        iterations: Picard iterations (applications of ``K``), at most.
        tol: stop a sample early once its relative update is below ``tol`` (0: never).
        gain: initial value of the learned scalar gain of ``K`` (small: contractive at init).
        points: keys and values on a grid average-pooled to at most this many cells per axis
            (``None``: every point; see "Cost").
        positional: give every point its coordinates (from ``coords``) in the lifting and in ``K``.

    ``forward(x, coords)``: ``x [B, in_channels, *S]``, ``coords`` a tuple of ``dim`` 1D coordinate
    tensors (required when ``positional``) -> ``[B, out_channels, *S]``.
    """

    kind = "grid"
    reference = (
        "E. Zappala, A. H. de O. Fonseca, J. O. Caro, A. H. Moberly, M. J. Higley, J. Cardin, D. van Dijk, "
        "\"Learning integral operators via neural integral equations\", Nature Machine Intelligence 6 (2024); "
        "\"Neural integral equations\", arXiv:2209.15190"
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dim: int = 2,
        width: int = 32,
        n_heads: int = 4,
        iterations: int = 6,
        tol: float = 0.0,
        gain: float = 0.1,
        points: int | None = None,
        positional: bool = True,
    ):
        super().__init__()
        name = "ANIE"
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width),
                           ("n_heads", n_heads), ("iterations", iterations)):
            check_int(name, key, value)
        if not is_int(dim) or dim > 3:
            raise ParameterError(f"{name}: dim must be 1, 2 or 3, got {dim!r}")
        if width % n_heads:
            raise ParameterError(f"{name}: width ({width}) must be divisible by n_heads ({n_heads})")
        for key, value in (("tol", tol), ("gain", gain)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ParameterError(f"{name}: {key} must be a finite number >= 0, got {value!r}")
        check_int(name, "points", points, optional=True)
        if not isinstance(positional, bool):
            raise ParameterError(f"{name}: positional must be true or false, got {positional!r}")
        self.dim, self.width = int(dim), int(width)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.iterations, self.tol = int(iterations), float(tol)
        self.points = None if points is None else int(points)
        self.positional = positional
        n_position = self.dim if positional else 0
        self.lifting = nn.Sequential(nn.Linear(self.in_channels + n_position, 2 * width), nn.GELU(),
                                     nn.Linear(2 * width, width))
        self.kernel = AttentionKernel(width, n_heads, n_position, gain)
        self.projection = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, self.out_channels))

    @classmethod
    def defaults(cls, sizes, periodic, given=None) -> dict:
        """``dim``; ``points`` ``None`` on grids of at most 1,024 points, else the cells per axis that
        make about 256 keys (256 in 1D, 16 in 2D, 6 in 3D; "Cost" in the module docstring)."""
        d = len(sizes)
        points = None if math.prod(sizes) <= 1024 else {1: 256, 2: 16, 3: 6}.get(d, 6)
        return {"dim": d, "points": points}

    def forward(self, x: torch.Tensor, coords: Sequence[torch.Tensor] | None = None,
                info: dict | None = None) -> torch.Tensor:
        """``info``, if given, receives :func:`picard`'s ``"iterations"`` and ``"update"``."""
        check_channels(x, self.in_channels, self.dim, "ANIE")
        batch, _, *sizes = x.shape
        if self.positional:
            x = append_positions(x, coords, "ANIE")  # [B, C_in + d, *S]
        a = x.reshape(batch, x.shape[1], -1).transpose(1, 2)  # [B, N, C_in (+ d)]
        position = a[..., self.in_channels:] if self.positional else None
        f = self.lifting(a)  # [B, N, width]
        y = picard(f, lambda y: self.kernel(y, position, sizes, self.points), self.iterations, self.tol, info)
        u = self.projection(y)  # [B, N, C_out]
        return u.transpose(1, 2).reshape(batch, self.out_channels, *sizes)
