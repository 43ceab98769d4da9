"""MgNO: neural operator whose linear maps between neurons are multigrid V-cycles.

He, Liu & Xu, "MgNO: Efficient Parameterization of Linear Operators via
Multigrid", ICLR 2024, arXiv:2310.19809. The paper's nonlinear operator layer
(its abstract) is the fully connected layer of a network whose neurons are
functions::

    O_i(u) = sigma( sum_j W_ij u_j + B_ij ),

and MgNO (Fig. 1) parameterizes the whole block ``(W_ij)`` between
the ``c_in`` input and ``c_out`` output neurons by one multi-channel V-cycle
``W_Mg`` (:class:`oplab.layers.multigrid.VCycle`: smoothing
``u <- u + S (f - A u)``, residual restriction ``R``, coarse initial guess
``Pi u``, prolongation, with learned 3-cell convolutions on each level). Here
layer ``t`` is::

    v_t = sigma( W_Mg,t v_{t-1} + W_t v_{t-1} + b_t ),    t = 1 .. n_layers,
    y = Q v_L,

``v_0`` the input (plus the coordinates if ``positional``). There is no
lifting: the first V-cycle maps the input channels straight to ``width``
channels (its ``f`` has the input's channels on every level). As in the
authors' code (github.com/xlliu2017/MgNO, ``MgNO_DC``), ``W_t v + b_t`` is a
pointwise linear map with a bias (the bias ``B`` is a per-channel constant,
not a general function; positional channels make the first layer's affine
part a function of position) and ``Q`` is a final pointwise (1x1) linear map
to ``out_channels`` without bias.

The authors' Darcy setting (github.com/xlliu2017/MgNO) is the default: 4
layers of 24 channels, a V-cycle of up to 6 levels with one pre-smoothing step
per level and two on the coarsest, no post-smoothing. Differences from that
code: ``A`` is shared by the steps of a level and the restriction acts on the
residual ``f - A u``, as in MgNet's algorithm (He & Xu 2019; the MgNO code's
default restricts ``f`` itself and has an ``A`` per step), and the
prolongation is a 3-cell transposed kernel cut to the finer size, so odd grids
work without padding to a multiple of ``2**(levels-1)`` (the code's 4-cell
kernel doubles the size exactly).

Boundary conditions come from the convolutions' padding (``padding_mode``):
zeros for Dirichlet, circular for periodic, reflect/replicate for
Neumann-like boundaries. MgNO is not resolution-invariant: its kernels are
fixed in cells, so a model trained on one grid sees a different operator on a
finer one; it runs on any grid size, though (a level of ``n`` cells has a
coarse level of ``ceil(n / 2)`` cells).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..errors import ParameterError, check_choice, check_int, check_ints
from ..layers.conv import CONV_KINDS, weight_taps
from ..layers.grid import append_positions, check_channels
from ..layers.multigrid import COARSE_INITS, PADDING_MODES, VCycle
from ..layers.pointwise import ACTIVATIONS, Pointwise, make_activation
from . import register
from .base import Operator

#: most levels :meth:`MgNO.defaults` derives (the paper's Darcy V-cycle)
MAX_LEVELS = 6
#: coarsest level size :meth:`MgNO.defaults` aims for (cells per axis, at least)
COARSEST = 4


@register("mgno")
class MgNO(Operator):
    """MgNO (He, Liu & Xu, ICLR 2024): ``n_layers`` of ``sigma(V-cycle + pointwise + bias)``, then a 1x1 map.

    Args:
        in_channels, out_channels: channels of the input and output functions.
        dim: spatial dimension, 1, 2 or 3.
        width: channels of the hidden neurons (the ``u`` of every V-cycle).
        n_layers: nonlinear operator layers.
        levels: grids of each V-cycle (the finest plus ``levels - 1`` halvings);
            :meth:`defaults` takes as many as keep the coarsest at >= 4 cells, at most 6.
        pre_smooth: smoothing steps before the restriction, an int for every level or a list
            (finest first); ``None``: 1 per level and 2 on the coarsest (the paper's Darcy setting).
        post_smooth: smoothing steps after the prolongation, an int or a list (default 0).
        padding_mode: ``"zeros"`` (Dirichlet), ``"circular"`` (periodic), ``"reflect"`` or
            ``"replicate"`` (Neumann-like); :meth:`defaults` takes circular when every axis is periodic.
        coarse_init: the coarse level's initial ``u``: ``"pi"`` (a stride-2 convolution of ``u``)
            or ``"zero"``.
        positional: append the grid coordinates (from ``coords``) as ``dim`` input channels
            (off by default, as in the paper: the padding carries the boundary).
        activation: ``"gelu"`` (paper), ``"relu"``, ``"tanh"`` or ``"silu"``.
        conv: ``"plain"`` convolutions (default, the paper's) or ``"weighted"`` ones in every V-cycle
            (Cammarasana & Patane 2025: each 3-cell kernel tap of ``A``, ``S``, ``R`` and ``Pi`` scaled
            by a fixed density of its offset, :func:`oplab.layers.conv.weight_taps`; the
            prolongation's transposed kernel is left plain).
        conv_density: the weighted convolution's density of the outer taps (centre 1, corners its
            square); 0.7 is the example of the authors' code, not tuned here.

    ``forward(x, coords)``: ``x [B, in_channels, *S]`` on any grid ``S`` ->
    ``[B, out_channels, *S]``; ``coords`` is needed only when ``positional``.
    """

    kind = "grid"
    reference = (
        "J. He, X. Liu, J. Xu, \"MgNO: Efficient Parameterization of Linear Operators via Multigrid\", "
        "ICLR 2024, arXiv:2310.19809"
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dim: int = 2,
        width: int = 24,
        n_layers: int = 4,
        levels: int = 4,
        pre_smooth: int | list[int] | None = None,
        post_smooth: int | list[int] = 0,
        padding_mode: str = "zeros",
        coarse_init: str = "pi",
        positional: bool = False,
        activation: str = "gelu",
        conv: str = "plain",
        conv_density: float = 0.7,
    ):
        super().__init__()
        check_choice("MgNO", "dim", dim, (1, 2, 3))
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width),
                           ("n_layers", n_layers), ("levels", levels)):
            check_int("MgNO", key, value)
        if levels > 16:
            raise ParameterError(f"MgNO: levels must be at most 16 (a 2**15-fold coarsening), got {levels!r}")
        if pre_smooth is None:
            pre_smooth = [1] * (levels - 1) + [2]
        pre = check_ints("MgNO", "pre_smooth", pre_smooth, n=levels, minimum=0, broadcast=True)
        post = check_ints("MgNO", "post_smooth", post_smooth, n=levels, minimum=0, broadcast=True)
        if pre[0] + post[0] < 1 or sum(pre) + sum(post) < 1:
            raise ParameterError(f"MgNO: the finest level needs at least one smoothing step "
                                 f"(pre_smooth {pre}, post_smooth {post})")
        check_choice("MgNO", "padding_mode", padding_mode, PADDING_MODES)
        check_choice("MgNO", "coarse_init", coarse_init, COARSE_INITS)
        check_choice("MgNO", "activation", activation, ACTIVATIONS)
        check_choice("MgNO", "conv", conv, CONV_KINDS)
        if isinstance(conv_density, bool) or not isinstance(conv_density, (int, float)) or not 0 < conv_density < float("inf"):
            raise ParameterError(f"MgNO: conv_density must be a finite number > 0, got {conv_density!r}")

        self.dim, self.positional = int(dim), bool(positional)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        first = self.in_channels + (self.dim if self.positional else 0)
        channels = [first] + [width] * n_layers
        self.cycles = nn.ModuleList(
            VCycle(c_in, c_out, self.dim, pre, post, padding_mode, coarse_init)
            for c_in, c_out in zip(channels[:-1], channels[1:]))  # W_Mg
        self.skips = nn.ModuleList(Pointwise(c_in, c_out) for c_in, c_out in zip(channels[:-1], channels[1:]))  # W, b
        self.activation = make_activation(activation)
        self.projection = Pointwise(width, self.out_channels, bias=False)  # Q
        if conv == "weighted":
            weight_taps(self.cycles, conv_density)

    @classmethod
    def defaults(cls, sizes, periodic, given=None) -> dict:
        """``dim`` from the grid; ``levels`` as many as keep the coarsest level at >= 4 cells per
        axis (at most 6), or the length of a given per-level ``pre_smooth``/``post_smooth``;
        ``padding_mode`` circular when every axis is periodic, else zeros."""
        smallest = min(sizes)
        levels = max(1, min(MAX_LEVELS, int(math.floor(math.log2(max(smallest, 1) / COARSEST))) + 1))
        for key in ("pre_smooth", "post_smooth"):  # a per-level list given by the user fixes the levels
            if isinstance((given or {}).get(key), (list, tuple)):
                levels = len(given[key])
        periodic = list(periodic)
        return {"dim": len(sizes), "levels": levels,
                "padding_mode": "circular" if periodic and all(periodic) else "zeros"}

    def forward(self, x: torch.Tensor, coords: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        check_channels(x, self.in_channels, self.dim, "MgNO")
        v = append_positions(x, coords, "MgNO") if self.positional else x  # [B, C_in (+ d), *S]
        for cycle, skip in zip(self.cycles, self.skips):
            v = self.activation(cycle(v) + skip(v))  # [B, width, *S]
        return self.projection(v)  # [B, C_out, *S]
