"""Tensors for training and evaluation, read from an oplab data set.

Trajectory outputs ``[N, T, C, *S]`` are flattened to ``[N, T * C, *S]``
(time steps as channels, the FNO-2D convention for Navier-Stokes); ``times``
keeps ``T`` so predictions can be unflattened.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import H5Dataset
from ..errors import DataFileError


@dataclass
class GridData:
    x: torch.Tensor  # [N, C_in, *S_in]
    y: torch.Tensor  # [N, C_out * T, *S_out]
    in_coords: tuple  # 1D tensors per input axis
    out_coords: tuple  # 1D tensors per output axis
    periodic: tuple  # per output axis
    n_times: int | None  # T of trajectories, None otherwise
    resolution: int | None

    def __len__(self) -> int:
        return self.x.shape[0]


def load(ds: H5Dataset, indices=None, outputs: bool = True) -> GridData:
    """Read samples ``indices`` (default all) of ``ds`` into float32 tensors.

    With ``outputs=False`` the solutions are not read (physics-only training):
    ``y`` is NaN of the right shape, so any use of it shows up as a NaN loss.
    """
    x, y = ds.arrays(indices, outputs=outputs)
    name = str(ds.path)
    for label, arr in (("inputs", x), ("outputs", y))[: 2 if outputs else 1]:
        bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
        if bad.any():
            idx = list(indices) if indices is not None else list(range(len(ds)))
            first = [idx[i] for i in np.flatnonzero(bad)[:5]]
            raise DataFileError(f"{name}: NaN or Inf in {label} of sample(s) {first}")
    n_times = None
    if ds.times is not None:
        n_times = y.shape[1]
        y = y.reshape(y.shape[0], -1, *y.shape[3:])
    coords = lambda grid: tuple(torch.tensor(c, dtype=torch.float32) for c in grid)
    return GridData(
        x=torch.from_numpy(x).float(), y=torch.from_numpy(y).float(),
        in_coords=coords(ds.input_grid), out_coords=coords(ds.output_grid),
        periodic=tuple(a.periodic for a in ds.meta["output_axes"]),
        n_times=n_times, resolution=ds.resolution,
    )
