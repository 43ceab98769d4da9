"""Normalisation-activation layers: EvoNorm-B0 and EvoNorm-S0 (Liu et al. 2020), by name.

H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving Normalization-Activation Layers",
NeurIPS 2020, arXiv:2004.02967, Table 1. Each replaces a normalisation layer *and* the
activation after it (one tensor-to-tensor layer); on ``x [B, C, *S]``, with per-channel
learned ``gamma`` (ones), ``beta`` (zeros) and ``v`` (ones)::

    EvoNorm-B0:  y = x / max( sqrt(s2_batch(x) + eps),  v * x + sqrt(s2_inst(x) + eps) ) * gamma + beta
    EvoNorm-S0:  y = x * sigmoid(v * x) / sqrt(s2_group(x) + eps) * gamma + beta

``s2_batch``: the variance of each channel over the batch and the grid (in ``eval()`` mode its
running average, as BatchNorm's, so B0's output depends on the mode and, in training, on the
batch); ``s2_inst``: the variance of each sample's channel over the grid; ``s2_group``: the
variance of each sample over the grid and the channels of its group (``groups`` groups of
consecutive channels, as GroupNorm). Neither layer subtracts a mean (the paper's point: no
centring is needed). S0, like GroupNorm, depends on no other sample and not on the mode.

:func:`norm_activation` builds the pair a model asks for by name: ``"group"`` (GroupNorm with
``gcd(C, 8)`` groups, then GELU: the default of oplab's convolution blocks), ``"evonorm_b0"``,
``"evonorm_s0"`` (``gcd(C, 8)`` groups).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ParameterError

#: the normalisation-activation choices of :func:`norm_activation`
NORMS = ("group", "evonorm_b0", "evonorm_s0")


def _param_shape(x: torch.Tensor) -> tuple[int, ...]:
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


class EvoNormB0(nn.Module):
    """EvoNorm-B0 (Liu et al. 2020, Table 1): ``x / max(sqrt(s2_batch + eps), v x + sqrt(s2_inst + eps))``,
    scaled by ``gamma`` and shifted by ``beta``, on ``[B, C, *S]``. ``s2_batch`` is the biased
    variance of each channel over the batch and the grid while training; a running average of it
    (``momentum``, as BatchNorm's) in ``eval()`` mode, and when the layer is frozen (``gamma`` needs no
    gradient, e.g. in a head or LoRA fine-tune, :mod:`oplab.train.finetune`): a frozen layer's
    statistics stay the parent's, as a frozen BatchNorm's do."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ParameterError(f"EvoNormB0: channels must be an integer >= 1, got {channels!r}")
        self.channels, self.eps, self.momentum = channels, float(eps), float(momentum)
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.v = nn.Parameter(torch.ones(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = _param_shape(x)
        grid = tuple(range(2, x.dim()))
        if self.training and self.gamma.requires_grad:
            batch_var = x.var(dim=(0, *grid), unbiased=False)  # [C]
            with torch.no_grad():
                self.running_var.mul_(1 - self.momentum).add_(batch_var.detach(), alpha=self.momentum)
        else:
            batch_var = self.running_var
        inst_std = torch.sqrt(x.var(dim=grid, unbiased=False, keepdim=True) + self.eps)  # [B, C, 1, ...]
        denom = torch.maximum(torch.sqrt(batch_var + self.eps).view(shape), self.v.view(shape) * x + inst_std)
        return x / denom * self.gamma.view(shape) + self.beta.view(shape)

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}, momentum={self.momentum}"


class EvoNormS0(nn.Module):
    """EvoNorm-S0 (Liu et al. 2020, Table 1): ``x sigmoid(v x) / sqrt(s2_group + eps)``, scaled by
    ``gamma`` and shifted by ``beta``, on ``[B, C, *S]``; ``s2_group`` the biased variance of each
    sample over the grid and the channels of its group (``groups`` must divide ``channels``)."""

    def __init__(self, channels: int, groups: int | None = None, eps: float = 1e-5):
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ParameterError(f"EvoNormS0: channels must be an integer >= 1, got {channels!r}")
        groups = math.gcd(channels, 8) if groups is None else groups
        if not isinstance(groups, int) or groups < 1 or channels % groups:
            raise ParameterError(f"EvoNormS0: groups must divide channels ({channels}), got {groups!r}")
        self.channels, self.groups, self.eps = channels, groups, float(eps)
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.v = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = _param_shape(x)
        b = x.shape[0]
        grouped = x.reshape(b, self.groups, -1)  # [B, G, C/G * prod(S)]
        group_std = torch.sqrt(grouped.var(dim=-1, unbiased=False, keepdim=True) + self.eps)  # [B, G, 1]
        normalised = (grouped / group_std).reshape(x.shape)
        return normalised * torch.sigmoid(self.v.view(shape) * x) * self.gamma.view(shape) + self.beta.view(shape)

    def extra_repr(self) -> str:
        return f"{self.channels}, groups={self.groups}, eps={self.eps}"


def norm_activation(name: str, channels: int) -> list[nn.Module]:
    """The layers that normalise ``channels`` channels and apply the activation, by ``name``
    (:data:`NORMS`): ``[GroupNorm(gcd(C, 8)), GELU]``, ``[EvoNormB0]`` or ``[EvoNormS0]``."""
    if name == "group":
        from .conv import group_norm

        return [group_norm(channels), nn.GELU()]
    if name == "evonorm_b0":
        return [EvoNormB0(channels)]
    if name == "evonorm_s0":
        return [EvoNormS0(channels)]
    raise ParameterError(f"norm must be one of {list(NORMS)}, got {name!r}")
