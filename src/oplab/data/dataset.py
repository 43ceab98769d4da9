"""A lazy torch Dataset over an oplab data set file.

>>> ds = open_dataset("darcy421.h5", resolution=85)   # strides 421 -> 85 on load
>>> train, test = ds.split(n_train=1000, n_test=200)  # first 1000, last 200
>>> ds[0]["x"].shape, ds[0]["y"].shape                # [C_in, 85, 85], [C_out, 85, 85]

Samples are read from disk on access (one HDF5 chunk per sample); the file
handle is opened per process on first use, so the Dataset can be handed to
``DataLoader`` workers.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..errors import DataFileError, ParameterError
from . import format as fmt


class H5Dataset(Dataset):
    """Samples ``{"x": [C_in, *S], "y": [C_out, *S] or [T, C_out, *S], "index": i}``.

    ``resolution`` (int) subsamples every spatial axis by striding to that many
    points (node grids: ``(n - 1) / (r - 1)`` must be an integer; periodic
    grids: ``n / r``); ``None`` keeps the stored grid.
    """

    def __init__(self, path: str | Path, resolution: int | None = None):
        self.path = Path(path)
        self.meta = fmt.read_meta(self.path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self.resolution = resolution
        try:
            self._in_slices = self._strides(self.meta["input_axes"], resolution)
            self._out_slices = self._strides(self.meta["output_axes"], resolution)
        except ParameterError as exc:
            raise ParameterError(f"{self.path}: {exc}") from None

    @staticmethod
    def _strides(axes, resolution) -> tuple[slice, ...]:
        if resolution is None:
            return tuple(slice(None) for _ in axes)
        return tuple(slice(None, None, a.stride_to(resolution)) for a in axes)

    # ------------------------------------------------------------------ grid
    @property
    def input_grid(self) -> list[np.ndarray]:
        """Coordinates of each input axis after striding."""
        return [a.coords()[s] for a, s in zip(self.meta["input_axes"], self._in_slices)]

    @property
    def output_grid(self) -> list[np.ndarray]:
        """Coordinates of each output axis after striding."""
        return [a.coords()[s] for a, s in zip(self.meta["output_axes"], self._out_slices)]

    @property
    def times(self) -> np.ndarray | None:
        return self.meta["times"]

    @property
    def input_channels(self) -> list[str]:
        return self.meta["input_channels"]

    @property
    def output_channels(self) -> list[str]:
        return self.meta["output_channels"]

    # ------------------------------------------------------------------ data
    def _h5(self) -> h5py.File:
        import os

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    @contextlib.contextmanager
    def _reading(self, index: int):
        """h5py's errors while sample ``index`` is read (a damaged chunk: OSError "Can't
        synchronously read data", RuntimeError, KeyError) as a one-line DataFileError."""
        try:
            yield
        except (OSError, RuntimeError, KeyError) as exc:
            raise DataFileError(f"{self.path}: sample {index} cannot be read; the file is damaged "
                                f"({fmt.h5_error(exc)})") from None

    def __len__(self) -> int:
        return int(self.meta["n"])

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.path}: sample {index} out of range (n = {n})")
        index %= n
        time_axes = (slice(None),) if self.meta["times"] is not None else ()
        with self._reading(index):
            f = self._h5()
            x = f["inputs"][(index, slice(None), *self._in_slices)]
            y = f["outputs"][(index, *time_axes, slice(None), *self._out_slices)]
        return {"x": torch.from_numpy(np.ascontiguousarray(x)), "y": torch.from_numpy(np.ascontiguousarray(y)), "index": index}

    def arrays(self, indices=None, outputs: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and outputs of ``indices`` (default all) as numpy arrays, strided.

        ``outputs=False`` reads only the inputs; the outputs come back as NaN of their shape."""
        idx = range(len(self)) if indices is None else indices
        if outputs:
            items = [self[i] for i in idx]
            return (np.stack([it["x"].numpy() for it in items]), np.stack([it["y"].numpy() for it in items]))
        n = len(self)
        xs = []
        for i in idx:
            with self._reading(int(i) % n):
                xs.append(self._h5()["inputs"][(int(i) % n, slice(None), *self._in_slices)])
        x = np.stack(xs)
        full = self.meta["shapes"]["outputs"][1:]  # [T,] C, *S: shape arithmetic only, no solution is read
        lead = len(full) - len(self._out_slices)
        shape = (*full[:lead], *(len(range(*sl.indices(m))) for sl, m in zip(self._out_slices, full[lead:])))
        return x, np.full((len(x), *shape), np.nan, dtype=np.float32)

    def split(self, n_train: int | None = None, n_test: int | None = None, shuffle_seed: int | None = None) -> tuple[Subset, Subset]:
        """Deterministic train/test split.

        Without ``shuffle_seed``: the first ``n_train`` samples train, the last
        ``n_test`` test (the FNO papers' convention). With it, a fixed
        permutation of the indices is cut the same way. Defaults: ``n_test`` is
        a fifth of the set (at least 1) and ``n_train`` the rest.
        """
        n = len(self)
        if n_test is None:
            n_test = max(1, n // 5) if n_train is None else n - n_train
        if n_train is None:
            n_train = n - n_test
        if n_train < 0 or n_test < 0 or n_train + n_test > n:
            raise ParameterError(f"{self.path}: cannot split {n} samples into {n_train} train + {n_test} test")
        order = np.arange(n) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(n)
        return Subset(self, order[:n_train].tolist()), Subset(self, order[n - n_test :].tolist())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def __repr__(self) -> str:
        return f"H5Dataset({str(self.path)!r}, problem={self.meta['problem']!r}, n={len(self)}, resolution={self.resolution})"


def open_dataset(path: str | Path, resolution: int | None = None) -> H5Dataset:
    """Open an oplab data set file lazily (see :class:`H5Dataset`)."""
    return H5Dataset(path, resolution)
