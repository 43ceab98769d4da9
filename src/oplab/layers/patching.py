"""Multi-grid domain decomposition of a field on a regular grid (MG-TFNO).

Kossaifi, Kovachki, Azizzadenesheli, Anandkumar, "Multi-Grid Tensorized Fourier
Neural Operator for High-Resolution PDEs", TMLR 2024, arXiv:2310.00120, the
multi-grid domain decomposition: the field is cut into patches, each patch is
widened by some context from its neighbours, and coarser, wider views of the
field around the patch are added as extra channels, so that a model that only
ever sees one patch still gets the patch's surroundings at decreasing resolution.

:class:`MultigridPatching` does this for ``d`` spatial axes:

* **patches**: ``patches[i]`` non-overlapping patches of ``s_i = ceil(n_i / patches[i])``
  cells along axis ``i`` (``n_i`` the grid size); if ``n_i`` is not a multiple of
  ``patches[i]`` the last patch runs ``patches[i] * s_i - n_i`` cells past the end
  of the field, those cells are filled by the boundary rule below, and the
  cells the model produces there are discarded by :meth:`stitch`;
* **padding**: each patch is extended by ``p_i`` cells on both sides (an int is
  cells, a float a fraction of ``s_i``), giving the padded size ``w_i = s_i + 2 p_i``;
* **levels** ``L``: level ``l = 1..L`` is the window of ``2^l w_i`` cells centred on
  the padded patch, averaged over blocks of ``2^l`` cells (average pooling) down
  to ``w_i`` cells; level 0 is the padded patch itself. The levels are stacked as
  channels: ``[B, C, *n] -> [B * P, C * (L + 1), *w]`` with ``P = prod(patches)``,
  patches ordered batch-major, then axis 0, axis 1, ...;
* **boundary**: cells outside the field are taken from the field by periodic
  wrap on periodic axes and, on the others, by ``"reflect"`` (mirror about the
  edge cell, without repeating it, like ``numpy.pad(mode="reflect")``),
  ``"replicate"`` (the edge cell) or ``"zeros"``. The rule is applied to the
  index, so a window may be any number of grid sizes wide.

:meth:`stitch` inverts the split of the finest level exactly: it crops each
padded patch to its interior and places the interiors side by side; only data
movement, so ``stitch(split(u)[:, :C]) == u`` bit for bit.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch

from ..errors import ParameterError, check_choice, check_int, check_ints, is_int

#: how cells outside a non-periodic axis are filled
BOUNDARIES = ("reflect", "replicate", "zeros")


def _per_axis(value, dim: int, key: str, ok, expected: str) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * dim
    if len(values) != dim or not all(ok(v) for v in values):
        raise ParameterError(f"MultigridPatching: {key} must be {expected}, or a list of {dim} of them (one per axis), got {value!r}")
    return values


def boundary_index(k: torch.Tensor, n: int, periodic: bool, boundary: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Grid indices ``[0, n)`` for integer positions ``k`` (any integers) on an axis of ``n`` cells,
    and a 0/1 mask (``None`` unless ``boundary == "zeros"``) for positions that read zero."""
    if periodic:
        return torch.remainder(k, n), None
    if boundary == "replicate" or (boundary == "reflect" and n == 1):
        return k.clamp(0, n - 1), None
    if boundary == "reflect":
        period = 2 * (n - 1)
        m = torch.remainder(k, period)
        return torch.where(m < n, m, period - m), None
    inside = (k >= 0) & (k < n)
    return k.clamp(0, n - 1), inside


class Layout:
    """The patch geometry of one grid: per axis ``n`` (cells), ``count`` (patches),
    ``size`` (interior cells ``s``), ``pad`` (``p``) and ``width`` (``w = s + 2p``)."""

    def __init__(self, sizes: Sequence[int], counts: Sequence[int], pads: Sequence[int]):
        self.n = tuple(int(v) for v in sizes)
        self.count = tuple(int(v) for v in counts)
        self.size = tuple(-(-n // c) for n, c in zip(self.n, self.count))
        self.pad = tuple(int(v) for v in pads)
        self.width = tuple(s + 2 * p for s, p in zip(self.size, self.pad))

    @property
    def n_patches(self) -> int:
        return math.prod(self.count)

    def window(self, axis: int, level: int, device=None) -> torch.Tensor:
        """Integer positions ``[count, 2^level * w]`` of every patch's level-``level`` window along ``axis``
        (may lie outside ``[0, n)``)."""
        s, p, w = self.size[axis], self.pad[axis], self.width[axis]
        scale = 2**level
        start = torch.arange(self.count[axis], device=device) * s - p - ((scale - 1) * w) // 2
        return start[:, None] + torch.arange(scale * w, device=device)[None, :]

    def __repr__(self) -> str:
        return f"Layout(n={list(self.n)}, patches={list(self.count)}, size={list(self.size)}, pad={list(self.pad)}, width={list(self.width)})"


class MultigridPatching:
    """Split a field into padded patches with multi-grid context, and stitch patches back.

    Args:
        dim: spatial axes ``d``.
        patches: patches per axis (an int for every axis, or ``d`` ints).
        padding: context cells added on each side of a patch: an int (cells) or a
            float (fraction of the patch size, rounded), for every axis or ``d`` values.
        levels: coarse context levels ``L >= 0`` (window ``2^l`` times the padded
            patch, average-pooled by ``2^l``).
        periodic: whether each axis is periodic (a bool for every axis, or ``d``).
        boundary: the rule for non-periodic axes: ``"reflect"``, ``"replicate"`` or ``"zeros"``.

    ``split(x)``: ``[B, C, *n] -> [B * P, C * (L + 1), *w]`` (the channels of level ``l``
    are ``l * C .. (l + 1) * C - 1``); ``stitch(y, sizes)``: ``[B * P, C', *w] -> [B, C', *n]``;
    ``crop`` and ``assemble`` are its two halves; ``positions(coords)``: the coordinates of
    each padded patch's cells, ``[P, d, *w]``. The grid must have at least
    ``patches[i]`` cells along axis ``i``.
    """

    def __init__(self, dim: int, patches: int | Sequence[int] = 2, padding: int | float | Sequence = 0,
                 levels: int = 0, periodic: bool | Sequence[bool] = True, boundary: str = "reflect"):
        self.dim = check_int("MultigridPatching", "dim", dim)
        self.patches = check_ints("MultigridPatching", "patches", patches, n=self.dim, broadcast=True)

        def padding_ok(v) -> bool:
            return not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0

        self.padding = _per_axis(padding, dim, "padding", padding_ok, "an int >= 0 (cells) or a float >= 0 (fraction of the patch)")
        self.levels = check_int("MultigridPatching", "levels", levels, 0)
        self.periodic = [bool(v) for v in _per_axis(periodic, dim, "periodic", lambda v: isinstance(v, bool), "a bool")]
        self.boundary = check_choice("MultigridPatching", "boundary", boundary, BOUNDARIES)

    def layout(self, sizes: Sequence[int]) -> Layout:
        """The geometry on a grid of ``sizes`` (ParameterError if an axis has fewer cells than patches)."""
        sizes = tuple(int(n) for n in sizes)
        if len(sizes) != self.dim:
            raise ValueError(f"MultigridPatching: expected {self.dim} spatial axes, got grid {list(sizes)}")
        if any(n < c for n, c in zip(sizes, self.patches)):
            raise ParameterError(f"MultigridPatching: grid {list(sizes)} is too small for patches {self.patches} "
                                 f"(each axis needs at least as many cells as patches)")
        pads = []
        for n, c, p in zip(sizes, self.patches, self.padding):
            s = -(-(int(n) if torch.jit.is_tracing() else n) // c)  # a jit trace gives sizes as tensors
            pads.append(int(p) if is_int(p, 0) else int(round(float(p) * s)))
        return Layout(sizes, self.patches, pads)

    # -------------------------------------------------------------- split
    def _gather(self, x: torch.Tensor, lay: Layout, level: int) -> torch.Tensor:
        """Level ``level`` of every patch: ``[B, C, *n] -> [B, C, P_0, w_0, P_1, w_1, ...]``."""
        scale = 2**level
        for axis in range(self.dim):
            at = 2 + 2 * axis  # axes before this one are already split into (P, w)
            k = lay.window(axis, level, device=x.device)  # [P_a, scale * w_a]
            index, mask = boundary_index(k, lay.n[axis], self.periodic[axis], self.boundary)
            x = x.index_select(at, index.reshape(-1))
            if mask is not None:
                shape = [1] * x.ndim
                shape[at] = -1
                x = x * mask.reshape(-1).to(x.dtype).view(shape)
            shape = list(x.shape)
            x = x.reshape(*shape[:at], lay.count[axis], lay.width[axis], scale, *shape[at + 1:])
            x = x.mean(dim=at + 2) if scale > 1 else x.squeeze(at + 2)
        return x

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, *n] -> [B * P, C * (levels + 1), *w]``: padded patches, levels stacked as channels."""
        if x.ndim != self.dim + 2:
            raise ValueError(f"MultigridPatching: expected x of shape [B, C, *S] with {self.dim} spatial axes, got {list(x.shape)}")
        lay = self.layout(x.shape[2:])
        batch, channels = x.shape[:2]
        levels = torch.cat([self._gather(x, lay, level) for level in range(self.levels + 1)], dim=1)
        d = self.dim
        # [B, C', P_0, w_0, ..., P_{d-1}, w_{d-1}] -> [B, P_0, ..., P_{d-1}, C', w_0, ..., w_{d-1}]
        order = [0, *[2 + 2 * a for a in range(d)], 1, *[3 + 2 * a for a in range(d)]]
        out = levels.permute(order)
        return out.reshape(batch * lay.n_patches, channels * (self.levels + 1), *lay.width)

    # ------------------------------------------------------------- stitch
    def crop(self, y: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
        """``[N, C, *w] -> [N, C, *s]``: the interiors of padded patches of a grid of ``sizes``."""
        lay = self.layout(sizes)
        index = (slice(None), slice(None), *[slice(p, p + s) for p, s in zip(lay.pad, lay.size)])
        return y[index]

    def assemble(self, y: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
        """``[B * P, C, *s] -> [B, C, *n]``: patch interiors side by side, cropped to the grid."""
        lay = self.layout(sizes)
        if y.ndim != self.dim + 2 or tuple(y.shape[2:]) != lay.size or y.shape[0] % lay.n_patches:
            raise ValueError(f"MultigridPatching: expected patch interiors [B * {lay.n_patches}, C, *{list(lay.size)}], got {list(y.shape)}")
        d = self.dim
        batch, channels = y.shape[0] // lay.n_patches, y.shape[1]
        y = y.reshape(batch, *lay.count, channels, *lay.size)  # [B, P_0.., C, s_0..]
        order = [0, d + 1]
        for a in range(d):
            order += [1 + a, d + 2 + a]
        y = y.permute(order).reshape(batch, channels, *[c * s for c, s in zip(lay.count, lay.size)])
        if any(c * s != n for c, s, n in zip(lay.count, lay.size, lay.n)):
            y = y[(slice(None), slice(None), *[slice(0, n) for n in lay.n])]
        return y

    def stitch(self, y: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
        """``[B * P, C, *w] -> [B, C, *n]``: crop every padded patch to its interior and reassemble."""
        return self.assemble(self.crop(y, sizes), sizes)

    # ---------------------------------------------------------- positions
    def positions(self, coords: Sequence[torch.Tensor]) -> torch.Tensor:
        """Coordinates of the cells of every padded patch, ``[P, d, *w]``: the grid's own
        coordinates inside the field, extended linearly (with the spacing of the two end
        cells) outside it, also on periodic axes, so every patch sees a monotone grid."""
        coords = tuple(coords)
        lay = self.layout([c.numel() for c in coords])
        d = self.dim
        axes = []
        for a, c in enumerate(coords):
            k = lay.window(a, 0, device=c.device)  # [P_a, w_a]
            n = c.numel()
            inside = c[k.clamp(0, n - 1)]
            if n > 1:
                low = c[0] + k * (c[1] - c[0])
                high = c[-1] + (k - (n - 1)) * (c[-1] - c[-2])
                inside = torch.where(k < 0, low, torch.where(k >= n, high, inside))
            shape = [1] * (2 * d)
            shape[a], shape[d + a] = lay.count[a], lay.width[a]
            axes.append(inside.view(shape).expand(*lay.count, *lay.width).reshape(lay.n_patches, *lay.width))
        return torch.stack(axes, dim=1)

    def __repr__(self) -> str:
        return (f"MultigridPatching(dim={self.dim}, patches={self.patches}, padding={self.padding}, levels={self.levels}, "
                f"periodic={self.periodic}, boundary={self.boundary!r})")
