"""CFDBench's Auto-FFN: one MLP on the whole input frame and one query point.

Luo, Chen & Zhang 2023, "CFDBench: A Large-Scale Benchmark for Machine
Learning Methods in Fluid Dynamics", arXiv:2310.05963; the architecture and
defaults follow the authors' code (``src/models/auto_ffn.py`` and
``src/models/ffn.py`` of github.com/luo-yining/CFDBench).

For a sample ``u`` (the input grid flattened to ``n_sensors`` values) and a
query point ``p`` (``dim`` coordinates)::

    G(u)(p) = L_{depth+1}(s(L_depth(... s(L_1([u, p])) ...)))

with ``L_1: n_sensors + dim -> width``, ``depth - 1`` layers ``width ->
width``, ``L_{depth+1}: width -> out_channels``, and the activation ``s``
between them (none after the last). Unlike a DeepONet, input and query
meet in the first layer, so nothing restricts how ``G(u)(p)`` depends on both.

The first layer is factored: ``L_1([u, p]) = W_u u + W_p p + b`` with ``W =
[W_u, W_p]``, which is the same map as the layer on the concatenation. ``W_u u
+ b`` is computed once per sample and ``W_p p`` once per query point, and the
two are broadcast-added to ``[B, P, width]``; the concatenated input ``[B, P,
n_sensors + dim]`` (``P`` copies of every frame) is never built. The weights
start as those of one ``nn.Linear(n_sensors + dim, width)`` split in two, as
in the authors' code (PyTorch's default initialisation of every layer).

Differences from the authors' code: they append the case parameters to the
frame, query integer cell indices ``(i, j)`` rather than coordinates, predict
one channel, and add the input's value at the query cell to the output (a
next-frame step); here the input is the whole ``[C_in, *S_in]`` grid, the
query is the coordinates of ``coords`` (or ``forward_points``), there are
``out_channels`` outputs and no input skip (the query points need not be input
grid points). Their class default width is 100 (used here); their training
script's default is 200.

Inputs and outputs follow the point operators of :mod:`oplab.models.deeponet`:
``forward(x, coords)`` evaluates at the mesh of ``coords`` (``[B, C_out,
*S_out]``), ``forward_points(x, points)`` at per-sample points ``[B, P, d]``
(``[B, C_out, P]``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import check_choice, check_int
from ..layers.grid import grid_points
from ..layers.pointwise import ACTIVATIONS, make_activation
from . import register
from .base import Operator
from .deeponet import _BranchTrunk


@register("ffn")
class FFN(Operator):
    """CFDBench's Auto-FFN (Luo, Chen & Zhang 2023): an MLP on ``[flattened input, query point]``.

    Args:
        n_sensors: input values per sample, ``C_in * prod(S_in)``.
        dim: coordinates per query point.
        out_channels: output channels.
        width: hidden width (CFDBench's default 100).
        depth: hidden layers (CFDBench's default 8): ``depth + 1`` linear layers in all.
        activation: between the layers (CFDBench's default ``"relu"``).
    """

    kind = "point"
    resolution_invariant = False
    reference = (
        "Y. Luo, Y. Chen, Z. Zhang, \"CFDBench: A Large-Scale Benchmark for Machine Learning Methods in "
        "Fluid Dynamics\", arXiv:2310.05963 (2023), Auto-FFN baseline"
    )

    def __init__(self, n_sensors: int, dim: int, out_channels: int = 1, width: int = 100, depth: int = 8,
                 activation: str = "relu"):
        super().__init__()
        owner = "FFN"
        self.n_sensors = check_int(owner, "n_sensors", n_sensors)
        self.dim = check_int(owner, "dim", dim)
        self.out_channels = check_int(owner, "out_channels", out_channels)
        self.width = check_int(owner, "width", width)
        self.depth = check_int(owner, "depth", depth)
        check_choice(owner, "activation", activation, ACTIVATIONS)
        first = nn.Linear(self.n_sensors + self.dim, self.width)  # initialised as one layer on [u, p] ...
        self.first_x = nn.Linear(self.n_sensors, self.width)  # ... and split: W_u, b
        self.first_p = nn.Linear(self.dim, self.width, bias=False)  # W_p
        with torch.no_grad():
            self.first_x.weight.copy_(first.weight[:, : self.n_sensors])
            self.first_x.bias.copy_(first.bias)
            self.first_p.weight.copy_(first.weight[:, self.n_sensors:])
        layers: list[nn.Module] = [make_activation(activation)]
        for _ in range(self.depth - 1):
            layers += [nn.Linear(self.width, self.width), make_activation(activation)]
        layers.append(nn.Linear(self.width, self.out_channels))
        self.rest = nn.Sequential(*layers)  # after the first layer: [..., width] -> [..., C_out]

    _sensors = _BranchTrunk._sensors  # x [B, C_in, *S_in] -> [B, n_sensors], checked

    def forward(self, x: torch.Tensor, coords: Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(coords, torch.Tensor) and coords.dim() == 1:
            coords = (coords,)
        if coords is None or len(coords) != self.dim:
            got = "None" if coords is None else f"{len(coords)}"
            raise ValueError(f"FFN: expected coords, {self.dim} 1D tensors (dim), got {got}")
        coords = [torch.as_tensor(c) for c in coords]
        shape = tuple(int(c.numel()) for c in coords)
        weight = self.first_p.weight
        points = grid_points(coords, dtype=weight.dtype, device=weight.device)  # [P, d]
        h = self.first_x(self._sensors(x))[:, None] + self.first_p(points)  # [B, 1, W] + [P, W] -> [B, P, W]
        y = self.rest(h)  # [B, P, C_out]
        return y.transpose(1, 2).reshape(x.shape[0], self.out_channels, *shape)

    def forward_points(self, x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Per-sample query points ``[B, P, d]`` (or shared ``[P, d]``) -> ``[B, C_out, P]``."""
        weight = self.first_p.weight
        points = torch.as_tensor(points).to(dtype=weight.dtype, device=weight.device)
        if points.dim() == 2:
            points = points.unsqueeze(0).expand(x.shape[0], -1, -1)
        if points.dim() != 3 or points.shape[0] != x.shape[0] or points.shape[-1] != self.dim:
            raise ValueError(f"FFN: expected points [B={x.shape[0]}, P, d={self.dim}], got {tuple(points.shape)}")
        h = self.first_x(self._sensors(x))[:, None] + self.first_p(points)  # [B, 1, W] + [B, P, W]
        return self.rest(h).transpose(1, 2)  # [B, C_out, P]


__all__ = ["FFN"]
