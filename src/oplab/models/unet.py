"""U-Net baseline for grid problems, in 1, 2 or 3 dimensions (Ronneberger et al. 2015).

Encoder: ``depth`` times [two 3x3 convolutions, each GroupNorm + GELU; 2x max
pooling], channels ``width * 2**level``; a bottleneck block; decoder: ``depth``
times [2x transposed convolution halving the channels, concatenation with the
encoder's features at that level, two 3x3 convolutions]; a 1x1 convolution
to ``out_channels``. Same-size ("padded") convolutions instead of the
paper's valid ones, and GroupNorm instead of BatchNorm, so that the output
does not depend on ``train()``/``eval()`` mode or on the batch.

The input is padded at the end of each axis (edge values repeated) to a
multiple of ``2**depth`` and the output is cropped back, so any grid size
works; a U-Net is not resolution-invariant, though: its receptive field is
fixed in cells, not in physical length.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError, check_choice, check_int
from ..layers.conv import CONV, CONV_KINDS, CONV_TRANSPOSE, MAX_POOL, double_conv, weight_taps
from ..layers.norms import NORMS
from ..layers.grid import append_positions, check_channels
from . import register
from .base import Operator


@register("unet")
class UNet(Operator):
    """U-Net (Ronneberger et al. 2015) mapping ``[B, in_channels, *S]`` to ``[B, out_channels, *S]``.

    Args:
        in_channels, out_channels: channels of the input and output functions.
        dim: spatial dimension, 1, 2 or 3.
        width: channels at the finest level (doubled at each coarser one).
        depth: number of 2x down-samplings; inputs are padded to a multiple of ``2**depth``.
        positional: append the grid coordinates (from ``coords``) as ``dim`` input channels.
        norm: the normalisation-activation after each 3x3 convolution: ``"group"`` (GroupNorm + GELU,
            the default), ``"evonorm_b0"`` or ``"evonorm_s0"`` (Liu et al. 2020, EvoNorms;
            :mod:`oplab.layers.norms`; B0 uses batch statistics, so its output depends on the batch
            and on ``train()``/``eval()`` mode).
        conv: ``"plain"`` convolutions (default) or ``"weighted"`` ones (Cammarasana & Patane 2025: each
            kernel tap scaled by a fixed density of its offset, :func:`oplab.layers.conv.weight_taps`).
        conv_density: the weighted convolution's density of the outer taps (centre 1; a 3x3 kernel's
            corners get its square); 0.7 is the example of the authors' code (github.com/cammarasana123/
            weightedConvolution2.0), not tuned here.
    """

    kind = "grid"
    reference = (
        "O. Ronneberger, P. Fischer, T. Brox, \"U-Net: Convolutional Networks for Biomedical Image "
        "Segmentation\", MICCAI 2015, arXiv:1505.04597"
    )

    def __init__(self, in_channels: int, out_channels: int, dim: int = 2, width: int = 32, depth: int = 4, positional: bool = True,
                 norm: str = "group", conv: str = "plain", conv_density: float = 0.7):
        super().__init__()
        check_choice("UNet", "dim", dim, tuple(CONV))
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width)):
            check_int("UNet", key, value)
        check_int("UNet", "depth", depth, 0)
        check_choice("UNet", "norm", norm, NORMS)
        check_choice("UNet", "conv", conv, CONV_KINDS)
        if isinstance(conv_density, bool) or not isinstance(conv_density, (int, float)) or not 0 < conv_density < float("inf"):
            raise ParameterError(f"UNet: conv_density must be a finite number > 0, got {conv_density!r}")
        self.dim, self.depth = int(dim), int(depth)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.positional = bool(positional)
        channels = [width * 2**level for level in range(depth + 1)]
        first = self.in_channels + (self.dim if self.positional else 0)
        self.down = nn.ModuleList(double_conv(dim, c_in, c_out, norm=norm) for c_in, c_out in zip([first, *channels[:-2]], channels[:-1]))
        self.pool = MAX_POOL[dim](2)
        self.bottleneck = double_conv(dim, channels[-2] if depth else first, channels[-1], norm=norm)
        self.up = nn.ModuleList(CONV_TRANSPOSE[dim](channels[level + 1], channels[level], 2, stride=2) for level in reversed(range(depth)))
        self.decode = nn.ModuleList(double_conv(dim, 2 * channels[level], channels[level], norm=norm) for level in reversed(range(depth)))
        self.head = CONV[dim](channels[0], self.out_channels, 1)
        if conv == "weighted":
            weight_taps(self, conv_density)

    def forward(self, x: torch.Tensor, coords: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        check_channels(x, self.in_channels, self.dim, "UNet")
        sizes = tuple(x.shape[2:])
        if self.positional:
            x = append_positions(x, coords, "UNet")  # [B, C_in + dim, *S]
        multiple = 2**self.depth
        pads = [-n % multiple for n in sizes]
        if any(pads):
            x = F.pad(x, [p for pad in reversed(pads) for p in (0, pad)], mode="replicate")  # [B, C, *S'], S' % 2**depth == 0
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)  # [B, width * 2**depth, *S' / 2**depth]
        for up, block in zip(self.up, self.decode):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
        x = self.head(x)  # [B, C_out, *S']
        return x[(slice(None), slice(None), *[slice(0, n) for n in sizes])]
