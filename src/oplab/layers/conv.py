"""Convolution blocks in 1, 2 or 3 dimensions, keyed by the number of spatial axes.

The U-Net and LSM encoders/decoders are built from :func:`double_conv`;
GroupNorm rather than BatchNorm, so that their output depends neither on
``train()``/``eval()`` mode nor on the batch.
"""

from __future__ import annotations

import math

from torch import nn

#: ``nn.ConvNd`` per number of spatial axes
CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
#: ``nn.ConvTransposeNd`` per number of spatial axes
CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
#: ``nn.MaxPoolNd`` per number of spatial axes
MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``gcd(channels, 8)`` groups."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


def double_conv(dim: int, in_channels: int, out_channels: int, mid_channels: int | None = None,
                bias: bool = True) -> nn.Sequential:
    """(3x3 same-size convolution, GroupNorm, GELU) twice: ``[B, in, *S] -> [B, mid, *S] -> [B, out, *S]``
    (``mid`` defaults to ``out``)."""
    mid = mid_channels or out_channels
    conv = CONV[dim]
    return nn.Sequential(
        conv(in_channels, mid, 3, padding=1, bias=bias), group_norm(mid), nn.GELU(),
        conv(mid, out_channels, 3, padding=1, bias=bias), group_norm(out_channels), nn.GELU(),
    )
