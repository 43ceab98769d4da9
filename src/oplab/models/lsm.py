"""Latent Spectral Model (LSM), in 1, 2 or 3 dimensions.

Wu, Hu, Luo, Wang, Long, "Solving High-Dimensional PDEs with Latent Spectral
Models", ICML 2023, arXiv:2301.12664. The architecture (the paper's method
section and its overview figure; details, and the equations' concrete form,
as in the authors' released ``LSM_2D`` code; section numbers are not given
because the paper's full text could not be consulted here, only its abstract
and code):

* **lifting**: input channels + ``d`` positional channels -> ``width``,
  one pointwise linear map;
* **multiscale U-shaped network** (the "attention-based hierarchical
  projection network"): ``depth`` times [2x max pooling; two 3x3
  convolutions], channels ``width * 2**level`` (the coarsest level keeps the channels of the one
  above, as the released code's bilinear U-Net does), then ``depth`` times
  [2x (bi/tri)linear up-sampling; concatenation with the skip features of
  that level; two 3x3 convolutions];
* at **every scale** the skip features pass through a **neural spectral
  block** before the decoder merges them:

  1. *patchify*: the level's grid is split into patches; the
     patches have (about) the same number of cells at every level, so their count
     halves and their physical extent doubles from one scale to the next
     (the "hierarchical" projection: local patches on the fine scales, one
     global patch on the coarsest);
  2. *latent projection*: per patch, ``n_tokens`` learnable latent
     queries attend (multi-head softmax attention, ``n_heads`` heads) to the
     patch's cells: ``T = Q + softmax(Q K^T / sqrt(d_h)) V`` with ``K, V``
     pointwise linear maps of the features; each token is a weighted average
     of the patch's cells (weights summing to 1), cost linear in the cells;
  3. *neural spectral operator* (the neural spectral block's equation,
     "learning multiple basis operators"): each token value ``t`` (per
     channel ``c``) is expanded in the learned basis operators ``{sin(w_k pi t), cos(w_k pi t)}``,
     ``w_k = k / n_basis``, ``k = 0 .. n_basis - 1``, and combined with
     learned per-channel weights, with a residual:
     ``t_c <- t_c + sum_k a_{c,k} sin(w_k pi t_c) + b_{c,k} cos(w_k pi t_c)``;
  4. *projection back*: every cell queries the patch's tokens,
     ``x <- x + softmax(Q_x T^T / sqrt(d_h)) T`` (``Q_x`` a pointwise linear
     map of the cell features);

* **projection**: pointwise ``width -> width``, then a two-layer pointwise MLP
  ``width -> projection_channels -> out_channels``.

Darcy settings of the paper (85 x 85 grid, zero-padded by 11 cells to 96 x 96;
the released ``scripts/darcy_lsm.sh``): ``width=64``, 5 scales (``depth=4``),
``n_tokens=4``, ``n_basis=12``, 8 heads, patches of 6 x 6 cells (16 patches
per axis at the finest scale of the 96-grid, 1 at the coarsest; an earlier
``exp_darcy.py`` of the same repository uses 3 x 3 cells, i.e. 32 patches),
batch 20, learning rate 5e-4 (1e-3 in the earlier script). With
``in_channels=1, out_channels=1`` this is
``LSM(1, 1, width=64, depth=4, n_tokens=4, n_basis=12, n_heads=8, patches=16)``:
19,187,457 parameters, the same count as the released model (GroupNorm has the
same two parameters per channel as its BatchNorm): 90 % in the 3x3
convolutions (74 % at the two coarsest scales), 1,876,544 in the neural
spectral blocks. ``width=32`` gives 4,812,801.

Choices of this implementation (documented deviations):

* ``patches`` counts patches per axis at the finest scale; scale ``k`` uses
  ``ceil(patches / 2**k)`` (the released code instead fixes the patch size in
  cells; this version keeps each patch's *physical* size fixed when the grid
  is refined). When a level's size is not a multiple of its patch count, the
  level is zero-padded at the end of each axis to ``n * ceil(S / n)`` cells
  (with ``n`` lowered where a patch would hold padding only, and capped at
  the level's size), and the padded cells are **masked out of the latent
  projection**, so a patch's tokens are averages of its real cells only;
  the padded cells are cropped after the block. A patch's output depends
  only on that patch's input.
* The U-Net input (after lifting) is zero-padded at the end of each axis by
  ``round(padding * S)`` cells and then up to a multiple of ``2**depth``, and
  the output is cropped back (the released Darcy run pads 85 by 11 cells
  explicitly); so any grid size works.
* GroupNorm + GELU in the convolution blocks instead of BatchNorm + ReLU, so
  the output does not depend on ``train()``/``eval()`` or on the batch; the
  attention logits are scaled by ``1/sqrt(d_h)`` (the released code does not
  scale them).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError, check_choice, check_int, check_ints
from ..layers.conv import CONV, MAX_POOL, double_conv
from ..layers.norms import NORMS
from ..layers.grid import LINEAR_MODES, append_positions, check_channels
from ..layers.pointwise import Pointwise, channel_mlp
from . import register
from .base import Operator


def patch_layout(sizes: Sequence[int], counts: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(n, p)`` per axis: ``n[i]`` patches of ``p[i]`` cells covering ``sizes[i]`` cells.

    ``n[i] <= counts[i]`` and ``n[i] <= sizes[i]``; ``n[i] * p[i] >= sizes[i]`` with
    every patch holding at least one real cell (padding ``n[i] * p[i] - sizes[i] < p[i]``).
    """
    n_out, p_out = [], []
    for size, count in zip(sizes, counts):
        n = max(1, min(int(count), int(size)))
        p = -(-size // n)  # ceil
        n_out.append(-(-size // p))
        p_out.append(p)
    return tuple(n_out), tuple(p_out)


class NeuralSpectralBlock(nn.Module):
    """Patchify, latent projection, neural spectral operator, projection back (LSM's neural spectral block).

    ``[B, C, *S] -> [B, C, *S]`` for ``d = len(S)`` spatial axes. ``patches``: patches
    per axis (an int for every axis, or one per axis); see :func:`patch_layout`
    for grids that are not a multiple of it.
    """

    def __init__(self, channels: int, n_tokens: int, n_basis: int, n_heads: int, patches: Sequence[int]):
        super().__init__()
        if channels % n_heads:
            raise ParameterError(f"NeuralSpectralBlock: channels ({channels}) must be divisible by n_heads ({n_heads})")
        self.channels, self.n_tokens, self.n_basis, self.n_heads = channels, n_tokens, n_basis, n_heads
        self.head_dim = channels // n_heads
        self.patches = tuple(int(p) for p in patches)
        # learnable latent queries, one set shared by every patch: [heads, tokens, d_h]
        self.latent = nn.Parameter(torch.rand(n_heads, n_tokens, self.head_dim) / channels)
        self.to_kv = nn.Linear(channels, 2 * channels)  # keys and values of the cells (encoder)
        self.to_q = nn.Linear(channels, channels)  # queries of the cells (decoder)
        # the basis operators' weights: [channels, sin (n_basis) | cos (n_basis)]
        self.weights = nn.Parameter(torch.rand(channels, 2 * n_basis) / channels)
        self.register_buffer("frequencies", torch.arange(n_basis, dtype=torch.float32) / n_basis, persistent=False)

    # -- patches -------------------------------------------------------------------------

    def patchify(self, x: torch.Tensor):
        """``[B, C, *S] -> (cells [B * P, L, C], mask [P, L] or None, layout)``: ``P`` patches of ``L`` cells;
        ``mask`` marks the real (unpadded) cells."""
        batch, channels, *sizes = x.shape
        d = len(sizes)
        if len(self.patches) != d:
            raise ValueError(f"NeuralSpectralBlock: x has {d} spatial axes, patches {list(self.patches)} has {len(self.patches)}")
        n, p = patch_layout(sizes, self.patches)
        pads = [ni * pi - s for ni, pi, s in zip(n, p, sizes)]
        mask = None
        if any(pads):
            x = F.pad(x, [v for pad in reversed(pads) for v in (0, pad)])
            real = torch.zeros([ni * pi for ni, pi in zip(n, p)], dtype=torch.bool, device=x.device)
            real[tuple(slice(0, s) for s in sizes)] = True
            mask = real.reshape([v for ni, pi in zip(n, p) for v in (ni, pi)])
            mask = mask.permute(*range(0, 2 * d, 2), *range(1, 2 * d, 2)).reshape(math.prod(n), math.prod(p))
        x = x.reshape(batch, channels, *[v for ni, pi in zip(n, p) for v in (ni, pi)])
        # [B, C, n_1, p_1, ..., n_d, p_d] -> [B, n_1..n_d, p_1..p_d, C]
        x = x.permute(0, *range(2, 2 + 2 * d, 2), *range(3, 3 + 2 * d, 2), 1)
        return x.reshape(batch * math.prod(n), math.prod(p), channels), mask, (batch, tuple(sizes), n, p)

    @staticmethod
    def unpatchify(cells: torch.Tensor, layout) -> torch.Tensor:
        """Inverse of :meth:`patchify` (padding cropped): ``[B * P, L, C] -> [B, C, *S]``."""
        batch, sizes, n, p = layout
        d, channels = len(sizes), cells.shape[-1]
        x = cells.reshape(batch, *n, *p, channels)
        # [B, n_1..n_d, p_1..p_d, C] -> [B, C, n_1, p_1, ..., n_d, p_d]
        x = x.permute(0, 2 * d + 1, *[v for i in range(d) for v in (1 + i, 1 + d + i)])
        x = x.reshape(batch, channels, *[ni * pi for ni, pi in zip(n, p)])
        return x[(slice(None), slice(None), *[slice(0, s) for s in sizes])]

    # -- the three steps -----------------------------------------------------------------

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """``[B', L, C] -> [B', heads, L, d_h]``."""
        return t.reshape(*t.shape[:-1], self.n_heads, self.head_dim).transpose(-3, -2)

    def encode(self, cells: torch.Tensor, mask: torch.Tensor | None = None):
        """Latent projection: ``cells [B', L, C] -> (tokens [B', T, C], weights [B', heads, T, L])``;
        ``weights`` sum to 1 over the cells and vanish on masked (padded) cells."""
        keys, values = self.to_kv(cells).chunk(2, dim=-1)
        keys, values = self._heads(keys), self._heads(values)  # [B', h, L, d_h]
        logits = torch.einsum("htc,bhlc->bhtl", self.latent, keys) / math.sqrt(self.head_dim)
        if mask is not None:  # [P, L], patches in batch-major order
            full = mask.repeat(cells.shape[0] // mask.shape[0], 1)  # [B', L]
            logits = logits.masked_fill(~full[:, None, None, :], float("-inf"))
        weights = logits.softmax(dim=-1)
        tokens = weights @ values + self.latent  # [B', h, T, d_h], residual to the queries
        return tokens.transpose(1, 2).reshape(cells.shape[0], self.n_tokens, self.channels), weights

    def spectral(self, tokens: torch.Tensor) -> torch.Tensor:
        """Neural spectral operator on the token values (residual): ``[B', T, C] -> [B', T, C]``."""
        phase = tokens[..., None] * (math.pi * self.frequencies.to(tokens.dtype))  # [B', T, C, K]
        basis = torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)  # [B', T, C, 2K]
        return tokens + torch.einsum("btck,ck->btc", basis, self.weights)

    def decode(self, cells: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Projection back: every cell queries its patch's tokens; ``[B', L, C] -> [B', L, C]``."""
        queries = self._heads(self.to_q(cells))  # [B', h, L, d_h]
        heads = self._heads(tokens)  # [B', h, T, d_h]
        weights = (queries @ heads.transpose(-1, -2) / math.sqrt(self.head_dim)).softmax(dim=-1)  # [B', h, L, T]
        out = (weights @ heads).transpose(1, 2).reshape(cells.shape)
        return cells + out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells, mask, layout = self.patchify(x)
        tokens, _ = self.encode(cells, mask)
        return self.unpatchify(self.decode(cells, self.spectral(tokens)), layout)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, n_tokens={self.n_tokens}, n_basis={self.n_basis}, "
                f"n_heads={self.n_heads}, patches={list(self.patches)}")


@register("lsm")
class LSM(Operator):
    """Latent Spectral Model (Wu et al., ICML 2023) mapping ``[B, in_channels, *S]`` to ``[B, out_channels, *S]``.

    Args:
        in_channels, out_channels: channels of the input and output functions.
        dim: spatial dimension, 1, 2 or 3 (the paper has 2D and 3D models).
        width: channels at the finest scale (doubled at each coarser one; the
            coarsest keeps the channels of the level above).
        depth: number of 2x down-samplings (``depth + 1`` scales; the paper: 4).
        n_tokens: latent tokens per patch (paper: 4).
        n_basis: basis frequencies of the neural spectral operator (paper: 12;
            ``2 * n_basis`` sin/cos basis operators).
        n_heads: attention heads of the latent projections (paper: 8); ``width``
            must be divisible by it.
        patches: patches per axis at the finest scale (an int, or one per axis);
            scale ``k`` uses ``ceil(patches / 2**k)``.
        positional: append the grid coordinates (from ``coords``) as ``dim`` input channels.
        padding: fraction of each axis added as zeros (after lifting) before padding
            up to a multiple of ``2**depth``; cropped at the end.
        projection_channels: hidden channels of the pointwise two-layer projection
            (paper: 128); ``0``/``None`` makes it one linear map.
        norm: the normalisation-activation of the convolution blocks: ``"group"`` (GroupNorm +
            GELU, the default) or ``"evonorm_b0"`` / ``"evonorm_s0"`` (:mod:`oplab.layers.norms`).

    ``forward(x, coords)``: ``x [B, in_channels, *S]`` for any ``S``, ``coords`` a
    tuple of ``dim`` 1D coordinate tensors (required when ``positional``).
    """

    kind = "grid"
    reference = (
        "H. Wu, T. Hu, H. Luo, J. Wang, M. Long, \"Solving High-Dimensional PDEs with Latent Spectral "
        "Models\", ICML 2023, arXiv:2301.12664"
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dim: int = 2,
        width: int = 32,
        depth: int = 4,
        n_tokens: int = 4,
        n_basis: int = 12,
        n_heads: int = 8,
        patches: int | list[int] = 16,
        positional: bool = True,
        padding: float = 0.0,
        projection_channels: int | None = 128,
        norm: str = "group",
    ):
        super().__init__()
        name = "LSM"
        check_choice(name, "dim", dim, tuple(CONV))
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width),
                           ("n_tokens", n_tokens), ("n_basis", n_basis), ("n_heads", n_heads)):
            check_int(name, key, value)
        check_int(name, "depth", depth, 0)
        if width % n_heads:
            raise ParameterError(f"{name}: width ({width}) must be divisible by n_heads ({n_heads}), "
                                 f"so that every scale's channels split evenly into heads")
        patch_list = check_ints(name, "patches", patches, n=dim, broadcast=True)
        if isinstance(padding, bool) or not isinstance(padding, (int, float)) or not 0.0 <= padding < 1.0:
            raise ParameterError(f"{name}: padding must be a fraction in [0, 1), got {padding!r}")
        check_int(name, "projection_channels", projection_channels, 0, optional=True)
        check_choice(name, "norm", norm, NORMS)

        self.dim, self.depth = int(dim), int(depth)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.positional, self.padding = bool(positional), float(padding)
        # channels per scale: width * 2**k, the coarsest as the one above it
        channels = [width * 2**k for k in range(depth)] + [width * 2 ** max(depth - 1, 0)]
        lifted = self.in_channels + (self.dim if self.positional else 0)
        self.lifting = Pointwise(lifted, width)
        self.inc = double_conv(dim, width, width, bias=False, norm=norm)
        self.pool = MAX_POOL[dim](2)
        self.down = nn.ModuleList(double_conv(dim, channels[k], channels[k + 1], bias=False, norm=norm)
                                  for k in range(depth))
        # decoder at scale k (coarse to fine): [up-sampled (channels[k + 1]) | skip (channels[k])] -> out
        outs = [channels[k - 1] if k else width for k in range(depth)]
        incoming = [outs[k + 1] if k + 1 < depth else channels[depth] for k in range(depth)]
        self.up = nn.ModuleList(
            double_conv(dim, incoming[k] + channels[k], outs[k], (incoming[k] + channels[k]) // 2, bias=False, norm=norm)
            for k in reversed(range(depth))
        )
        self.spectral = nn.ModuleList(
            NeuralSpectralBlock(channels[k], n_tokens, n_basis, n_heads, [-(-p // 2**k) for p in patch_list])
            for k in range(depth + 1)
        )
        self.outc = Pointwise(width, width)
        self.projection = channel_mlp(width, projection_channels, self.out_channels, "gelu")

    @classmethod
    def defaults(cls, sizes, periodic, given=None) -> dict:
        """``dim``; ``depth`` up to 4 with the coarsest scale at least 2 cells
        (``floor(log2(min(S))) - 1``); ``patches`` of about 4 cells at the finest
        scale, at most 16 per axis."""
        smallest = min(sizes)
        depth = max(0, min(4, int(math.floor(math.log2(max(smallest, 1)))) - 1))
        return {"dim": len(sizes), "depth": depth, "patches": max(1, min(16, smallest // 4))}

    def forward(self, x: torch.Tensor, coords: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        check_channels(x, self.in_channels, self.dim, "LSM")
        sizes = tuple(x.shape[2:])
        if self.positional:
            x = append_positions(x, coords, "LSM")  # [B, C_in + dim, *S]
        v = self.lifting(x)  # [B, width, *S]
        multiple = 2**self.depth
        tracing = torch.jit.is_tracing()  # a jit trace gives sizes as tensors
        pads = [round(self.padding * (int(n) if tracing else n)) for n in sizes]
        pads = [pad + (-(n + pad) % multiple) for n, pad in zip(sizes, pads)]
        if any(pads):
            v = F.pad(v, [p for pad in reversed(pads) for p in (0, pad)])  # [B, width, *S'], S' % 2**depth == 0
        skips = [self.inc(v)]
        for block in self.down:
            skips.append(block(self.pool(skips[-1])))  # scale k: [B, channels[k], *S' / 2**k]
        v = self.spectral[self.depth](skips[-1])
        for k, block in zip(reversed(range(self.depth)), self.up):
            skip = self.spectral[k](skips[k])
            up = F.interpolate(v, size=skip.shape[2:], mode=LINEAR_MODES[self.dim], align_corners=True)
            v = block(torch.cat([skip, up], dim=1))
        v = self.outc(v)  # [B, width, *S']
        v = v[(slice(None), slice(None), *[slice(0, n) for n in sizes])]
        return self.projection(v)  # [B, C_out, *S]
