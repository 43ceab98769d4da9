"""A small cache for values derived from coordinate tensors (quadrature weights, grid points).

The rule (DESIGN): caches hold their key objects (or live on them); never key
on a memory address that can be reused. An entry therefore keeps what its
value was built from, and a lookup hits only when the tensors given now are
provably the ones the value was built from:

* **CPU tensors** -- the entry holds a private copy (``clone``) of each key
  tensor, and a lookup hits only when every given tensor has the same dtype
  and shape and the same contents, bit for bit (``torch.equal`` on integer
  views of floats, so -0.0 is not 0.0 and NaN matches itself; complex and
  float8 keys are not cached). Nothing about the caller's
  object is trusted -- not its address (a new tensor can land at a freed
  one), not its version counter (it misses writes made through numpy, e.g.
  ``g[:] = new`` on the array behind ``torch.from_numpy(g)``, and writes
  through ``.data``) -- so a recycled address, an in-place numpy write and a
  torch in-place write are all misses. The comparison costs about 1.5 us
  per small 1D coordinate vector (what the keys are); the copies are as
  small as the keys.
* **Other devices** (CUDA, ...) -- comparing contents would synchronise the
  device on every lookup, so the entry holds a weak reference to the tensor
  object, its ``_version``, its geometry (address, shape, strides, offset)
  and a reference to its storage (so that address cannot be reused while the
  entry exists). A lookup hits only for the same live object at the same
  version on the same storage; the entry is dropped when the tensor dies.
  Numpy cannot alias device memory; the one blind spot, shared with
  autograd's own saved-tensor check, is a write that bypasses torch's version
  counter (through ``.data``, or a DLPack/CuPy alias of the tensor).

Values built while autograd records, from a tensor that requires grad, are
not cached (they would carry that graph). The cache keeps the ``size`` most
recently used entries (a run uses one or two grids).
"""

from __future__ import annotations

import weakref
from typing import Callable, Hashable, Sequence

import torch


# Floating dtypes are compared bit for bit (through an integer view of the same
# width), so -0.0 and 0.0 differ and NaN equals itself; others value by value.
_BITS = {torch.float64: torch.int64, torch.float32: torch.int32,
         torch.float16: torch.int16, torch.bfloat16: torch.int16}


class _Copy:
    """A CPU key: a private copy of the tensor, compared bit for bit on lookup."""

    __slots__ = ("dtype", "view", "bits")

    def __init__(self, t: torch.Tensor):
        self.dtype = t.dtype
        self.view = _BITS.get(t.dtype)
        copy = t.detach().resolve_neg().clone()
        self.bits = copy if self.view is None else copy.view(self.view)

    def matches(self, t: torch.Tensor) -> bool:
        if not (t.is_cpu and t.dtype == self.dtype and t.layout == torch.strided):
            return False
        if self.view is not None:
            try:
                t = t.view(self.view)
            except RuntimeError:  # a negative-bit view (``z.conj().imag``) has no integer view
                t = t.resolve_neg().view(self.view)
        return torch.equal(t, self.bits)  # shapes included


class _Live:
    """A non-CPU key: the live tensor object at one version on one storage."""

    __slots__ = ("ref", "version", "ptr", "shape", "stride", "offset", "storage")

    def __init__(self, t: torch.Tensor, on_death):
        self.ref = weakref.ref(t, on_death)
        self.version = t._version
        self.ptr = t.data_ptr()
        self.shape = t.shape
        self.stride = t.stride()
        self.offset = t.storage_offset()
        self.storage = t.untyped_storage()  # held: its address cannot be reused while the entry lives

    def matches(self, t: torch.Tensor) -> bool:
        return (self.ref() is t and t._version == self.version and t.data_ptr() == self.ptr
                and t.shape == self.shape and t.stride() == self.stride and t.storage_offset() == self.offset)


def _cacheable(t: torch.Tensor) -> bool:
    """Strided tensors; on the CPU only dtypes compared exactly (not complex, not float8)."""
    if t.layout != torch.strided:
        return False
    if not t.is_cpu:
        return True
    return t.dtype in _BITS or not (t.is_floating_point() or t.is_complex())


class TensorMemo:
    """``memo.get(tensors, extra, build)``: ``build()``'s value for these key
    tensors and the hashable ``extra``, built once while they stay the same
    (see the module docstring for what "the same" means)."""

    def __init__(self, size: int = 8):
        self.size = size
        # [(extra, keys, value)], most recently used first; replaced, never mutated,
        # so a lookup can iterate it while a weakref callback drops a dead entry
        self._entries: list = []

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries = []

    def get(self, tensors: Sequence[torch.Tensor], extra: Hashable, build: Callable[[], object]):
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
            return build()  # values that carry gradients are not cached; a traced graph computes its own
        n = len(tensors)
        entries = self._entries
        for i, entry in enumerate(entries):
            keys = entry[1]
            if len(keys) != n or entry[0] != extra:
                continue
            for k, t in zip(keys, tensors):
                if not k.matches(t):
                    break
            else:
                if i:
                    self._entries = [entry] + [e for e in entries if e is not entry]
                return entry[2]
        value = build()
        if all(_cacheable(t) for t in tensors):
            keys = tuple(_Copy(t) if t.is_cpu else _Live(t, self._drop_dead) for t in tensors)
            self._entries = [(extra, keys, value)] + self._entries[: self.size - 1]
        return value

    @property
    def _drop_dead(self):
        """A weakref callback that drops the entries whose non-CPU key tensor died (they can
        never hit again, and they hold its storage); it holds the memo only weakly."""
        memo_ref = weakref.ref(self)

        def drop(_ref):
            memo = memo_ref()
            if memo is not None:
                memo._entries = [e for e in memo._entries
                                 if all(type(k) is not _Live or k.ref() is not None for k in e[1])]
        return drop
