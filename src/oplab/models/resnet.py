"""ResNet baseline of CFDBench, in 1, 2 or 3 dimensions.

Luo, Chen & Zhang 2023, "CFDBench: A Large-Scale Benchmark for Machine
Learning Methods in Fluid Dynamics", arXiv:2310.05963; the architecture and
defaults follow the authors' code (``src/models/resnet.py`` of
github.com/luo-yining/CFDBench).

A stack of residual blocks at the input's resolution, with no down-sampling::

    block(h) = conv_k(GELU(dropout(conv_k(h)))) + skip(h)

Every convolution keeps the grid size (``kernel_size // 2`` cells of
replicate padding on each side). ``conv_k`` maps ``c_in -> hidden -> c_out``;
``skip`` is the identity where ``c_in == c_out`` and a 1x1 convolution
otherwise. The network is a lifting block ``in_channels (+ dim) -> width``
(1x1 skip), ``blocks`` blocks ``width -> width`` (identity skip) and an output
block ``width -> out_channels`` (1x1 skip), as in CFDBench.

Differences from the authors' code:

* their blocks also build BatchNorm layers that ``forward`` never calls; they
  are left out (they only added unused parameters);
* their dropout rate is fixed at 0.2; here it is ``dropout``, 0 by default,
  so that the output does not depend on ``train()``/``eval()`` mode;
* they append a boundary mask and the case parameters as input channels and
  always add the input frame's first ``out_channels`` channels to the output
  (a next-frame step ``u_{t+1} = u_t + net(u_t)``); here the extra channels
  are oplab's positional channels (``positional``), and the input skip is
  ``input_skip`` (off by default: oplab's grid problems mostly map one field
  to another).

The receptive field is fixed in cells (``(kernel_size - 1) * (blocks + 2)``
cells on each side), so the model is not resolution-invariant.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ParameterError, check_choice, check_int
from ..layers.conv import CONV
from ..layers.grid import append_positions, check_channels
from . import register
from .base import Operator


class _ResidualBlock(nn.Module):
    """``conv_k(GELU(dropout(conv_k(h)))) + skip(h)``: ``[B, c_in, *S] -> [B, c_out, *S]``."""

    def __init__(self, dim: int, c_in: int, hidden: int, c_out: int, kernel_size: int, dropout: float):
        super().__init__()
        conv = CONV[dim]
        pad = kernel_size // 2
        self.conv1 = conv(c_in, hidden, kernel_size, padding=pad, padding_mode="replicate")
        self.dropout = nn.Dropout(dropout)
        self.act = nn.GELU()
        self.conv2 = conv(hidden, c_out, kernel_size, padding=pad, padding_mode="replicate")
        self.skip = conv(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        residual = h if self.skip is None else self.skip(h)
        return self.conv2(self.act(self.dropout(self.conv1(h)))) + residual


@register("resnet")
class ResNet(Operator):
    """CFDBench's ResNet (Luo, Chen & Zhang 2023) mapping ``[B, in_channels, *S]`` to ``[B, out_channels, *S]``.

    Args:
        in_channels, out_channels: channels of the input and output functions.
        dim: spatial dimension, 1, 2 or 3.
        width: channels between the blocks (CFDBench's ``hidden_chan``; its class default 32, its
            training script's default 16).
        blocks: residual blocks at ``width`` channels, between the lifting and the output block
            (CFDBench's ``num_blocks``, 4).
        kernel_size: odd size of every convolution's kernel (7, with 3 cells of padding, as in CFDBench).
        hidden: channels inside each block, between its two convolutions (64 in CFDBench).
        dropout: dropout rate after each block's first convolution; CFDBench uses 0.2, the default
            0 keeps the output independent of ``train()``/``eval()`` mode.
        positional: append the grid coordinates (from ``coords``) as ``dim`` input channels.
        input_skip: add the first ``out_channels`` input channels to the output, as CFDBench does for
            its next-frame prediction (needs ``in_channels >= out_channels``).
    """

    kind = "grid"
    resolution_invariant = False
    reference = (
        "Y. Luo, Y. Chen, Z. Zhang, \"CFDBench: A Large-Scale Benchmark for Machine Learning Methods in "
        "Fluid Dynamics\", arXiv:2310.05963 (2023), ResNet baseline"
    )

    def __init__(self, in_channels: int, out_channels: int, dim: int = 2, width: int = 32, blocks: int = 4,
                 kernel_size: int = 7, hidden: int = 64, dropout: float = 0.0, positional: bool = True,
                 input_skip: bool = False):
        super().__init__()
        owner = "ResNet"
        check_choice(owner, "dim", dim, tuple(CONV))
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width),
                           ("kernel_size", kernel_size), ("hidden", hidden)):
            check_int(owner, key, value)
        check_int(owner, "blocks", blocks, 0)
        if kernel_size % 2 == 0:
            raise ParameterError(f"{owner}: kernel_size must be odd (same-size convolutions), got {kernel_size}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ParameterError(f"{owner}: dropout must be a number in [0, 1), got {dropout!r}")
        check_choice(owner, "positional", positional, (True, False))
        check_choice(owner, "input_skip", input_skip, (True, False))
        if input_skip and in_channels < out_channels:
            raise ParameterError(f"{owner}: input_skip=True adds the first out_channels input channels to the output "
                                 f"and needs in_channels >= out_channels, got {in_channels} and {out_channels}")
        self.dim, self.in_channels, self.out_channels = int(dim), int(in_channels), int(out_channels)
        self.positional, self.input_skip = bool(positional), bool(input_skip)
        first = self.in_channels + (self.dim if self.positional else 0)
        widths = [first, *[width] * (blocks + 1), self.out_channels]
        self.blocks = nn.Sequential(*(_ResidualBlock(self.dim, c_in, hidden, c_out, kernel_size, float(dropout))
                                      for c_in, c_out in zip(widths[:-1], widths[1:])))

    def forward(self, x: torch.Tensor, coords: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        check_channels(x, self.in_channels, self.dim, "ResNet")
        h = append_positions(x, coords, "ResNet") if self.positional else x  # [B, C_in (+ dim), *S]
        y = self.blocks(h)  # [B, C_out, *S]
        return y + x[:, : self.out_channels] if self.input_skip else y
