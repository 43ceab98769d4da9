"""LordNet: low-rank global mixing by matrix multiplications along each axis.

Huang, Shi, Gao, Wei, Zhang, Bian, Yang, Liu, "LordNet: An Efficient Neural
Network for Learning to Solve Parametric Partial Differential Equations
without Simulated Data", arXiv:2206.09418 (2022). The paper trains from the
mean squared residual of the discretised PDE alone (no solutions) and argues
that this needs a network that models long-range entanglements over the whole
grid; LordNet does it with "a series of matrix multiplications, which can be
seen as the low-rank approximation to the general fully-connected layers"
(abstract). Only the abstract was available to this implementation; the
layer below is that design written out, and its details are assumptions:

* a fully connected layer over the hidden field ``v [C, n_1, ..., n_d]`` is one
  ``(C n_1 ... n_d)``-square matrix; LordNet's mixing ``L`` splits the ``C``
  channels into ``rank`` groups and applies to group ``k`` one learned matrix
  per axis, ``M_k^(a) [n_a, n_a]`` (in 2D ``A_k v B_k^T``), then a pointwise
  channel map ``P``. The whole map is ``sum_k P[:, G_k] (x) M_k^(1) (x) ... (x) M_k^(d)``:
  a rank-``rank`` Kronecker approximation of the dense layer, at
  ``O(C n^(d+1))`` cost instead of ``O(C^2 n^(2d))``;
* a block is ``v <- v + sigma(P L v + W v + b)`` (``W`` pointwise, residual),
  after a pointwise lifting of the input (plus coordinates) to ``width``
  channels; a pointwise two-layer projection gives the output;
* the matrices start at the identity plus Gaussian noise of standard
  deviation ``init_noise / sqrt(n_a)`` (independent per group), so the first
  blocks are near-pointwise (stable) and every entry of the global coupling
  gets a gradient from the first step. Trained data-free on 17x17 Darcy (40
  samples, 60 epochs, one seed each) the test error ended at 0.34 with
  ``init_noise`` 0.1 (the default), 0.40 with 0.5 and 0.46 with 1.0.

Data-free training is oplab's ``physics_only`` (:class:`oplab.train.TrainConfig`,
:mod:`oplab.losses.physics`). ``physics_norm="residual"`` is the paper's plain
mean squared residual; on that Darcy run it ended at 0.85 against 0.34 with
the default preconditioned residual.

The matrices fix the grid: the model is built for ``grid`` (``n_1 .. n_d``,
derived from the training data by :meth:`LordNet.defaults`). A call on any
other grid resamples the input (with its positional channels) to ``grid`` by
(bi/tri)linear interpolation, runs there, and resamples the output back.
Interpolation follows oplab's grids (``oplab.problems.base``): a non-periodic
axis holds both end points, so it is vertex-aligned (``align_corners=True``);
a periodic axis leaves out the right end, so it is wrapped by one cell
(``x_n = x_0``) before the same interpolation and the extra cell is dropped
after. On the trained grid no resampling happens. The resolution of the
output is therefore at most that of ``grid``.

LordNet is therefore not resolution invariant (``resolution_invariant`` is
False): on grids that do not refine ``grid`` the answers differ by the error of
the linear interpolations to ``grid`` and back (a relative L2 difference up to
6e-2 between an ``n`` and a ``2n`` grid of 8-24 points in the fuzzer's random
configurations, 2026-12-01). It is exact, to float rounding, between
refinements of ``grid`` on periodic axes (:meth:`LordNet.resolution_invariance`:
``n`` a multiple of ``grid`` on every axis): the resampling to ``grid`` then
picks grid points and the resampling back interpolates the same values at the
same places.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError, check_choice, check_int, check_ints
from ..layers.grid import LINEAR_MODES, append_positions, check_channels
from ..layers.pointwise import ACTIVATIONS, Pointwise, channel_mlp, make_activation
from . import register
from .base import Operator


def resample(x: torch.Tensor, sizes: Sequence[int], periodic: Sequence[bool]) -> torch.Tensor:
    """``x [B, C, *S]`` linearly interpolated to ``[B, C, *sizes]`` on oplab's grids: vertex-aligned
    (``align_corners=True``) on non-periodic axes, wrapped by one cell on periodic ones."""
    sizes = tuple(int(n) for n in sizes)
    if tuple(x.shape[2:]) == sizes:
        return x
    d = len(sizes)
    wrap = [bool(p) for p in periodic]
    if any(wrap):  # append the first cell at the end: a vertex grid of n + 1 points on the period
        x = F.pad(x, [p for a in reversed(range(d)) for p in (0, int(wrap[a]))], mode="circular")
    target = [n + int(w) for n, w in zip(sizes, wrap)]
    y = F.interpolate(x, size=target, mode=LINEAR_MODES[d], align_corners=True)
    return y[(slice(None), slice(None), *[slice(0, n) for n in sizes])] if any(wrap) else y


class LordMixing(nn.Module):
    """``[B, C, *grid] -> [B, C, *grid]``: channel group ``k`` (of ``rank``) multiplied along each
    axis ``a`` by its own ``M_k^(a) [n_a, n_a]``: ``y_c = M_k^(1) x_1 ... x_d M_k^(d) v_c``, ``c in G_k``."""

    def __init__(self, channels: int, grid: Sequence[int], rank: int, init_noise: float = 0.1):
        super().__init__()
        self.rank, self.group = rank, channels // rank
        self.grid = tuple(int(n) for n in grid)
        self.matrices = nn.ParameterList(
            nn.Parameter(torch.eye(n).expand(rank, n, n) + init_noise / n**0.5 * torch.randn(rank, n, n))
            for n in self.grid)  # M^(a): [rank, n_a, n_a]
        letters = "xyz"[: len(self.grid)]
        # v [B, rank, group, *grid]; axis a: M[r, q, i] v[b, r, g, .., i, ..] -> [b, r, g, .., q, ..]
        self._equations = [f"rq{s},brg{letters}->brg{letters.replace(s, 'q')}" for s in letters]

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        batch = v.shape[0]
        v = v.reshape(batch, self.rank, self.group, *self.grid)
        for equation, matrix in zip(self._equations, self.matrices):
            v = torch.einsum(equation, matrix, v)
        return v.reshape(batch, self.rank * self.group, *self.grid)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, group={self.group}, grid={list(self.grid)}"


@register("lordnet")
class LordNet(Operator):
    """LordNet (Huang et al. 2022) on a fixed ``grid``; other grids are resampled to it.

    Args:
        in_channels, out_channels: channels of the input and output functions.
        grid: the grid the mixing matrices act on, points per axis (``len(grid)`` = dimension,
            1 to 3); :meth:`defaults` takes the training data's.
        width: hidden channels (a multiple of ``rank``).
        rank: channel groups, each with its own matrix per axis (the rank of the Kronecker
            approximation of a dense layer over the grid).
        n_layers: Lord blocks.
        periodic: per axis, whether the grid is periodic (only used to resample other grids);
            default none.
        positional: append the grid coordinates (from ``coords``) as input channels.
        projection_channels: hidden channels of the two-layer pointwise projection
            (``0``/``None``: one linear map).
        init_noise: the matrices start at ``I + init_noise / sqrt(n) * N(0, 1)``.
        activation: ``"gelu"``, ``"relu"``, ``"tanh"`` or ``"silu"``.

    ``forward(x, coords)``: ``x [B, in_channels, *S]`` -> ``[B, out_channels, *S]``;
    ``S != grid`` is resampled (module docstring).
    """

    kind = "grid"
    resolution_invariant = False  # a fixed grid, resampled (module docstring)
    reference = (
        "X. Huang, W. Shi, X. Gao, X. Wei, J. Zhang, J. Bian, M. Yang, T.-Y. Liu, \"LordNet: An Efficient Neural "
        "Network for Learning to Solve Parametric Partial Differential Equations without Simulated Data\", "
        "arXiv:2206.09418, 2022"
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        grid: list[int],
        width: int = 32,
        rank: int = 4,
        n_layers: int = 4,
        periodic: list[bool] | None = None,
        positional: bool = True,
        projection_channels: int | None = 64,
        init_noise: float = 0.1,
        activation: str = "gelu",
    ):
        super().__init__()
        grid = check_ints("LordNet", "grid", grid, n=(1, 3), minimum=2)
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width),
                           ("rank", rank), ("n_layers", n_layers)):
            check_int("LordNet", key, value)
        if width % rank:
            raise ParameterError(f"LordNet: width ({width}) must be a multiple of rank ({rank})")
        if periodic is None:
            periodic = [False] * len(grid)
        if (not isinstance(periodic, (list, tuple)) or len(periodic) != len(grid)
                or not all(isinstance(p, bool) for p in periodic)):
            raise ParameterError(f"LordNet: periodic must be {len(grid)} bools (one per axis of grid), "
                                 f"got {periodic!r}")
        check_int("LordNet", "projection_channels", projection_channels, 0, optional=True)
        if isinstance(init_noise, bool) or not isinstance(init_noise, (int, float)) or init_noise < 0:
            raise ParameterError(f"LordNet: init_noise must be a number >= 0, got {init_noise!r}")
        check_choice("LordNet", "activation", activation, ACTIVATIONS)

        self.grid, self.periodic = tuple(int(n) for n in grid), tuple(periodic)
        self.dim, self.positional = len(self.grid), bool(positional)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        lifted = self.in_channels + (self.dim if self.positional else 0)
        self.lifting = Pointwise(lifted, width)
        self.mixing = nn.ModuleList(LordMixing(width, self.grid, rank, float(init_noise)) for _ in range(n_layers))  # L
        self.channel = nn.ModuleList(Pointwise(width, width, bias=False) for _ in range(n_layers))  # P
        self.skips = nn.ModuleList(Pointwise(width, width) for _ in range(n_layers))  # W, b
        self.activation = make_activation(activation)
        self.projection = channel_mlp(width, projection_channels, self.out_channels, activation)

    @classmethod
    def defaults(cls, sizes, periodic, given=None) -> dict:
        """``grid`` and ``periodic`` of the training data."""
        return {"grid": [int(n) for n in sizes], "periodic": [bool(p) for p in periodic]}

    def resolution_invariance(self, sizes) -> str | None:
        """``"exact"`` on periodic grids that refine ``grid`` (``n`` a multiple of it on every axis,
        and every axis periodic): the resamplings are exact there; else ``None`` (module docstring)."""
        if (len(sizes) == self.dim and all(self.periodic)
                and all(int(n) % g == 0 for n, g in zip(sizes, self.grid))):
            return "exact"
        return None

    def forward(self, x: torch.Tensor, coords: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        check_channels(x, self.in_channels, self.dim, "LordNet")
        sizes = tuple(x.shape[2:])
        if self.positional:
            x = append_positions(x, coords, "LordNet")  # [B, C_in + d, *S]
        v = self.lifting(resample(x, self.grid, self.periodic))  # [B, width, *grid]
        for mixing, channel, skip in zip(self.mixing, self.channel, self.skips):
            v = v + self.activation(channel(mixing(v)) + skip(v))
        return resample(self.projection(v), sizes, self.periodic)  # [B, C_out, *S]
