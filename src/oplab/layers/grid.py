"""The grid of a field: coordinates as positional channels or query points, and input checks.

A field is ``x [B, C, *S]`` on the mesh of ``d = len(S)`` coordinate axes,
``coords`` a sequence of ``d`` 1D tensors (``coords[i]`` of length ``S[i]``).
"""

from __future__ import annotations

from typing import Sequence

import torch

#: ``F.interpolate``'s linear mode per number of spatial axes
LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def mesh(coords: Sequence[torch.Tensor], batch: int, dtype=None, device=None) -> torch.Tensor:
    """Positional channels ``[batch, d, *S]`` from the coordinates of ``d`` axes."""
    grids = torch.meshgrid(*[c.to(device=device, dtype=dtype) for c in coords], indexing="ij")
    return torch.stack(grids).unsqueeze(0).expand(batch, *([-1] * (len(coords) + 1)))


def grid_points(coords: Sequence[torch.Tensor], dtype=None, device=None) -> torch.Tensor:
    """The mesh of ``d`` coordinate axes as points ``[P, d]``, ``'ij'`` order
    (the last axis varies fastest, as in ``y.reshape(B, C, P)``)."""
    axes = [torch.as_tensor(c).to(device=device, dtype=dtype).reshape(-1) for c in coords]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=-1)


def check_channels(x: torch.Tensor, channels: int, dim: int, model: str) -> None:
    """An error naming ``model`` unless ``x`` is ``[B, channels, *S]`` with ``dim`` spatial axes."""
    if x.ndim != dim + 2 or x.shape[1] != channels:
        raise ValueError(f"{model}: expected x of shape [B, {channels}, *S] with {dim} spatial axes, got {list(x.shape)}")


def check_coords(x: torch.Tensor, coords, model: str) -> tuple[torch.Tensor, ...]:
    """``coords`` as a tuple of ``d`` 1D tensors, one per spatial axis of ``x [B, C, *S]``
    (``coords[i]`` of length ``S[i]``), or an error naming ``model`` and what was expected."""
    d = x.ndim - 2
    if coords is None:
        raise ValueError(
            f"{model}: positional=True needs coords, a tuple of {d} 1D tensors with the coordinates of each "
            f"spatial axis of x (the dataset's grid); got None (or build the model with positional=False)"
        )
    coords = tuple(coords)
    sizes = tuple(x.shape[2:])
    if len(coords) != d or any(not isinstance(c, torch.Tensor) or c.ndim != 1 or c.numel() != n
                               for c, n in zip(coords, sizes)):
        got = [tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__ for c in coords]
        raise ValueError(f"{model}: coords must be {d} 1D tensors of lengths {list(sizes)} (the spatial shape of x), got shapes {got}")
    return coords


def append_positions(x: torch.Tensor, coords, model: str) -> torch.Tensor:
    """``x`` with the ``d`` coordinate channels of its grid appended: ``[B, C, *S] -> [B, C + d, *S]``.

    ``coords``: a sequence of ``d`` 1D tensors, ``coords[i]`` of length ``S[i]``.
    """
    coords = check_coords(x, coords, model)
    return torch.cat([x, mesh(coords, x.shape[0], dtype=x.dtype, device=x.device)], dim=1)
