"""Convolution blocks in 1, 2 or 3 dimensions, keyed by the number of spatial axes.

The U-Net and LSM encoders/decoders are built from :func:`double_conv`;
GroupNorm rather than BatchNorm, so that their output depends neither on
``train()``/``eval()`` mode nor on the batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ParameterError

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
                bias: bool = True, norm: str = "group") -> nn.Sequential:
    """(3x3 same-size convolution, GroupNorm, GELU) twice: ``[B, in, *S] -> [B, mid, *S] -> [B, out, *S]``
    (``mid`` defaults to ``out``). ``norm``: the normalisation-activation after each convolution,
    ``"group"`` (GroupNorm + GELU) or an EvoNorm (:func:`oplab.layers.norms.norm_activation`)."""
    from .norms import norm_activation

    mid = mid_channels or out_channels
    conv = CONV[dim]

    return nn.Sequential(
        conv(in_channels, mid, 3, padding=1, bias=bias), *norm_activation(norm, mid),
        conv(mid, out_channels, 3, padding=1, bias=bias), *norm_activation(norm, out_channels),
    )


# ------------------------------------------------------------------ weighted convolution
#: the kernel choices of the convolutional models' ``conv`` option
CONV_KINDS = ("plain", "weighted")


def tap_density(kernel_size, density) -> torch.Tensor:
    """The fixed weight of each tap of a kernel of ``kernel_size`` (odd sizes per axis): per axis
    ``[..., d2, d1, 1, d1, d2, ...]`` (``density`` lists ``d`` from the outermost tap inwards, the
    ``den`` of Cammarasana & Patane; one value serves every ring), the axes' outer product."""
    density = [float(density)] if isinstance(density, (int, float)) else [float(d) for d in density]
    factors = []
    for k in kernel_size:
        half = k // 2
        if k % 2 == 0:
            raise ParameterError(f"weighted convolution: kernel sizes must be odd, got {list(kernel_size)}")
        ring = (density * half)[:half] if len(density) < half else density[len(density) - half:]
        factors.append(torch.tensor([*ring, 1.0, *reversed(ring)]))
    out = factors[0]
    for f in factors[1:]:
        out = out[..., None] * f
    return out


class _WeightedConv:
    """Mixin of the weighted convolutions: the kernel ``w`` is applied as ``w * phi``, ``phi`` the
    fixed tap density (a buffer, not saved: it follows from the model's configuration)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.tap_density, self.bias)


class WeightedConv1d(_WeightedConv, nn.Conv1d):
    pass


class WeightedConv2d(_WeightedConv, nn.Conv2d):
    pass


class WeightedConv3d(_WeightedConv, nn.Conv3d):
    pass


_WEIGHTED = {nn.Conv1d: WeightedConv1d, nn.Conv2d: WeightedConv2d, nn.Conv3d: WeightedConv3d}


def weight_taps(module: nn.Module, density) -> nn.Module:
    """Make every plain convolution in ``module`` with a kernel wider than one cell a weighted
    convolution, in place, and return ``module``.

    Weighted convolution (S. Cammarasana, G. Patane, "Optimal Weighted Convolution for
    Classification and Denoising", arXiv:2505.24558, 2025; "Optimal density functions for weighted
    convolution in learning models", arXiv:2505.24527): the output at a cell is
    ``sum_k phi(k) w_k x_{i+k}``, a fixed density ``phi`` of the tap's offset ``k`` (1 at the
    centre, :func:`tap_density`) times the learned kernel: the same parameters, a different
    inductive bias (``phi = 1`` is the plain convolution). The weights, their initialisation
    and the state dict are those of the plain convolution (the module changes class only).
    Transposed convolutions are left as they are."""
    for m in module.modules():
        cls = _WEIGHTED.get(type(m))
        if cls is None or all(k == 1 for k in m.kernel_size):
            continue
        m.__class__ = cls
        m.register_buffer("tap_density", tap_density(m.kernel_size, density).to(m.weight.dtype), persistent=False)
    return module
