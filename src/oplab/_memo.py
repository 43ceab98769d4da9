"""A small cache for values derived from coordinate tensors (quadrature weights, grid points).

Keys use each tensor's storage, size, dtype, device and version counter, so an
in-place change of a tensor invalidates its entries; the cache keeps the few
most recent entries (a run uses one or two grids).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, Sequence

import torch


class TensorMemo:
    def __init__(self, size: int = 8):
        self.size = size
        self._data: OrderedDict = OrderedDict()

    def get(self, tensors: Sequence[torch.Tensor], extra: Hashable, build: Callable[[], object]):
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return build()  # values that carry gradients are not cached
        key = (tuple((t.data_ptr(), t.numel(), t.dtype, str(t.device), t._version) for t in tensors), extra)
        hit = self._data.get(key)
        if hit is not None:
            self._data.move_to_end(key)
            return hit
        value = build()
        self._data[key] = value
        if len(self._data) > self.size:
            self._data.popitem(last=False)
        return value
