"""Channel-wise Gaussian normalisation, stored with the checkpoint.

One mean and one standard deviation per channel, over samples and grid
points, so the same normaliser applies at every resolution (a point-wise
normaliser, as in the original FNO code, only fits the training grid). It
is a plain module with buffers: ``train()``/``eval()`` do not change it.
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelNormalizer(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> "ChannelNormalizer":
        """``data [N, C, *S]``: per-channel statistics (float64 accumulation)."""
        flat = data.transpose(0, 1).reshape(data.shape[1], -1).double()
        self.mean.copy_(flat.mean(dim=1))
        self.std.copy_(flat.std(dim=1))
        return self

    def _shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (1, -1) + (1,) * (x.ndim - 2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        s = self._shape(x)
        return (x - self.mean.view(s)) / (self.std.view(s) + self.eps)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        s = self._shape(x)
        return x * (self.std.view(s) + self.eps) + self.mean.view(s)
