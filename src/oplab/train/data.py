"""The one data preparation: a data config becomes training, validation and test sets.

:func:`plan` turns a :class:`~oplab.train.config.DataConfig` into a :class:`Split`
(which file, which samples, which resolution, which label: metadata only, no
sample read); :meth:`Part.load` reads a part into float32 tensors
(:class:`GridData`). ``oplab train``, ``oplab.train()``, resume, refine,
``oplab evaluate``, the quickstart and the benchmark cases all go through it,
and the run folder records the split (:meth:`Split.to_json`) so that later
commands use the same samples.

The samples of a file, in order::

    [ training | validation | ... | test ]
      n_train samples, the last n_val of them validate;  the last n_test samples test

Validation samples choose the ``best`` checkpoint; test samples are only
reported. With a separate test file the test samples are its last
``n_test`` (default: all of it); ``test_files`` are tested whole.

Trajectory outputs ``[N, T, C, *S]`` are flattened to ``[N, T * C, *S]``
(time steps as channels, the FNO-2D convention for Navier-Stokes); ``n_times``
keeps ``T`` so predictions can be unflattened, and :meth:`GridData.states`
gives the trajectories as states ``[N, T + 1, C, *S]`` (the input at t = 0
first) for the autoregressive and space-time tasks (:mod:`oplab.train.tasks`).

:func:`prepare` reads the parts into memory (:class:`GridData`) or, with
``in_memory=False`` (``data.in_memory``; ``auto`` decides by size), streams
them (:class:`StreamData`: a ``DataLoader`` over the file with background
readers). Both give batches through ``batches(plan)`` and ``chunks(size)``,
with the same numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import H5Dataset, open_dataset
from ..errors import DataFileError, ParameterError


#: samples per chunk of a one-pass statistic (the same chunks in memory and streamed: the same bits)
CHUNK = 64


@dataclass
class GridData:
    """Samples held in memory: ``x [N, C_in, *S_in]``, ``y [N, T * C_out, *S_out]`` (float32)."""

    x: torch.Tensor  # [N, C_in, *S_in]
    y: torch.Tensor  # [N, C_out * T, *S_out]
    in_coords: tuple  # 1D tensors per input axis
    out_coords: tuple  # 1D tensors per output axis
    periodic: tuple  # per output axis
    n_times: int | None  # T of trajectories, None otherwise
    resolution: int | None
    #: trajectories: indices of the state channels that stay constant in time (the file's
    #: ``static_channels``), which an autoregressive model carries forward instead of predicting
    static: tuple = ()
    in_memory = True

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def x_shape(self) -> tuple:
        return tuple(self.x.shape[1:])

    @property
    def y_shape(self) -> tuple:
        return tuple(self.y.shape[1:])

    def batches(self, plan):
        """``(x, y)`` of each batch of ``plan`` (a list of sample positions per batch)."""
        for idx in plan:
            if isinstance(idx, range) and idx.step == 1:  # consecutive samples: views, no copy
                yield self.x[idx.start : idx.stop], self.y[idx.start : idx.stop]
                continue
            idx = torch.as_tensor(idx)
            yield self.x[idx], self.y[idx]

    def chunks(self, size: int = CHUNK):
        """``(x, y)`` in consecutive chunks of ``size`` samples (evaluation, statistics)."""
        return self.batches(consecutive(len(self), size))

    def head(self, k: int) -> "GridData":
        return dataclasses.replace(self, x=self.x[:k], y=self.y[:k])

    def states(self, first: int = 0) -> torch.Tensor:
        """A trajectory set as states ``[N, T + 1 - first, C, *S]``: the input (the state at t = 0)
        then the recorded ones, from state ``first`` on."""
        check_trajectories(self.n_times, self.x_shape, self.y_shape, "the data")
        n, c = len(self), self.x.shape[1]
        if first:  # the input is not needed
            return self.y.reshape(n, self.n_times, c, *self.y.shape[2:])[:, first - 1 :]
        return torch.cat([self.x[:, None], self.y.reshape(n, self.n_times, c, *self.y.shape[2:])], dim=1)


def consecutive(n: int, size: int) -> list:
    """The plan of batches ``[0, size), [size, 2 size), ...`` of ``n`` samples."""
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


def check_trajectories(n_times, x_shape, y_shape, where: str) -> None:
    """A ParameterError unless ``n_times`` marks a trajectory set whose inputs are its state at t = 0
    (the outputs' channels on the same grid): what autoregressive training and rollouts need."""
    if n_times is None:
        raise ParameterError(f"{where}: not a trajectory set (outputs [N, C, *S], no /grid/times); "
                             f"autoregressive training and rollouts need outputs [N, T, C, *S] with their times")
    c = x_shape[0]
    if y_shape[0] != n_times * c or tuple(x_shape[1:]) != tuple(y_shape[1:]):
        raise ParameterError(f"{where}: inputs {list(x_shape)} are not the state at t = 0 of outputs of "
                             f"{n_times} records x {y_shape[0] // n_times} channels on {list(y_shape[1:])}; "
                             f"a rollout needs inputs with the outputs' channels and grid")


class _Items(torch.utils.data.Dataset):
    """Item ``k`` = ``(x, y)`` of sample ``indices[k]`` of ``ds`` as float32 tensors (outputs
    flattened ``[T * C, *S]``; NaN of their shape when ``outputs`` is False)."""

    def __init__(self, ds: H5Dataset, indices: list[int], outputs: bool):
        self.ds, self.indices, self.outputs = ds, indices, outputs

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k):
        i = self.indices[k]
        if self.outputs:
            item = self.ds[i]
            x, y = item["x"], item["y"]
        else:
            x, y = (torch.from_numpy(a[0]) for a in self.ds.arrays([i], outputs=False))
        y = y.reshape(-1, *y.shape[2:]) if self.ds.times is not None else y
        if not (torch.isfinite(x).all() and (not self.outputs or torch.isfinite(y).all())):
            raise DataFileError(f"{self.ds.path}: NaN or Inf in sample {i}")
        return x.float(), y.float()


def _stack(items):
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


@dataclass
class StreamData:
    """Samples ``indices`` of a file read in batches as they are needed (``data.in_memory: false``):
    a ``DataLoader`` over the file with ``workers`` background processes, each batch read ahead
    (``prefetch``). The same interface as :class:`GridData` except the tensors ``x`` and ``y``;
    the batches hold the same numbers as the in-memory ones (tested bit for bit)."""

    ds: H5Dataset
    indices: list
    outputs: bool
    in_coords: tuple
    out_coords: tuple
    periodic: tuple
    n_times: int | None
    resolution: int | None
    x_shape: tuple
    y_shape: tuple
    workers: int = 2
    prefetch: int = 4
    in_memory = False
    static = ()  # (autoregressive training, the one user of static channels, reads into memory)

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self, plan):
        plan = [[int(i) for i in idx] for idx in plan]
        if not plan:
            return iter(())
        workers = min(self.workers, len(plan))
        loader = torch.utils.data.DataLoader(
            _Items(self.ds, self.indices, self.outputs), batch_sampler=plan, collate_fn=_stack,
            num_workers=workers, prefetch_factor=self.prefetch if workers else None,
            persistent_workers=False)
        return iter(loader)

    def chunks(self, size: int = CHUNK):
        return self.batches(consecutive(len(self), size))

    def head(self, k: int) -> GridData:
        k = min(k, len(self))
        if k < 1:
            x, y = torch.empty(0, *self.x_shape), torch.empty(0, *self.y_shape)
        else:
            x, y = next(iter(self.batches([list(range(k))])))
        return GridData(x, y, self.in_coords, self.out_coords, self.periodic, self.n_times, self.resolution)

    def states(self, first: int = 0):
        raise ParameterError("autoregressive training reads its trajectories into memory: set data.in_memory "
                             "to auto or true")


def load(ds: H5Dataset, indices=None, outputs: bool = True) -> GridData:
    """Read samples ``indices`` (default all) of ``ds`` into float32 tensors.

    With ``outputs=False`` the solutions are not read (physics-only training,
    timing): ``y`` is NaN of the right shape, so any use of it shows up as NaN.
    """
    x, y = ds.arrays(indices, outputs=outputs)
    for label, arr in (("inputs", x), ("outputs", y))[: 2 if outputs else 1]:
        bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
        if bad.any():
            idx = list(indices) if indices is not None else list(range(len(ds)))
            first = [idx[i] for i in np.flatnonzero(bad)[:5]]
            raise DataFileError(f"{ds.path}: NaN or Inf in {label} of sample(s) {first}")
    n_times, static = None, ()
    if ds.times is not None:
        n_times = y.shape[1]
        y = y.reshape(y.shape[0], -1, *y.shape[3:])
        names = ds.meta["output_channels"]
        static = tuple(names.index(c) for c in ds.meta["static_channels"])
    coords = lambda grid: tuple(torch.tensor(c, dtype=torch.float32) for c in grid)  # noqa: E731
    return GridData(
        x=torch.from_numpy(x).float(), y=torch.from_numpy(y).float(),
        in_coords=coords(ds.input_grid), out_coords=coords(ds.output_grid),
        periodic=tuple(a.periodic for a in ds.meta["output_axes"]),
        n_times=n_times, resolution=ds.resolution, static=static,
    )


def fingerprint(meta: dict) -> str:
    """What identifies a data set's samples, wherever the file lies: sample ``i`` depends only on
    the problem, its parameters, the seed, the solver and the grid (a file at another resolution
    holds other samples), so two files with the same fingerprint hold the same sample ``i``
    wherever both have it (their sample counts may differ)."""
    from ..problems.base import LATER_DEFAULTS

    key = {k: meta.get(k) for k in ("problem", "params", "seed", "solver")}
    if isinstance(key["params"], dict):  # a parameter added later, at its old behaviour, changes nothing
        key["params"] = {k: v for k, v in key["params"].items() if k not in LATER_DEFAULTS or v != LATER_DEFAULTS[k]}
    key["shapes"] = {k: list(v)[1:] for k, v in meta["shapes"].items()}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def grid_label(ds: H5Dataset) -> str:
    """A test set's label: its output grid's points along the first axis (``"64"``)."""
    return str(len(ds.output_grid[0]))


def _ranges(indices: list[int]) -> list[list[int]]:
    """``[0, 1, 2, 7, 8]`` -> ``[[0, 3], [7, 9]]`` (half-open ranges)."""
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][1] == i:
            out[-1][1] += 1
        else:
            out.append([i, i + 1])
    return out


@dataclass
class Part:
    """Samples ``indices`` (None: all) of ``file`` at ``resolution``, reported as ``label``."""

    file: str
    indices: list[int] | None
    resolution: int | None
    label: str = ""
    fingerprint: str = ""

    def dataset(self) -> H5Dataset:
        return open_dataset(self.file, self.resolution)

    def load(self, outputs: bool = True) -> GridData:
        return load(self.dataset(), self.indices, outputs=outputs)

    def stream(self, outputs: bool = True, workers: int = 2) -> StreamData:
        """This part read lazily, batch by batch (:class:`StreamData`)."""
        ds = self.dataset()
        indices = list(range(len(ds))) if self.indices is None else list(self.indices)
        x, y = _Items(ds, indices[:1], True)[0] if indices else (torch.empty(0), torch.empty(0))
        coords = lambda grid: tuple(torch.tensor(c, dtype=torch.float32) for c in grid)  # noqa: E731
        return StreamData(ds, indices, outputs, coords(ds.input_grid), coords(ds.output_grid),
                          tuple(a.periodic for a in ds.meta["output_axes"]),
                          None if ds.times is None else len(ds.times), ds.resolution,
                          tuple(x.shape), tuple(y.shape), workers=workers)

    def nbytes(self) -> int:
        """The bytes of this part's samples as float32 tensors (at its resolution)."""
        ds = self.dataset()
        if len(self) == 0:
            return 0
        item = ds[self.indices[0] if self.indices is not None else 0]
        return len(self) * 4 * (item["x"].numel() + item["y"].numel())

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else int(self.dataset().meta["n"])

    def describe(self) -> str:
        """``"samples 1000-1199 of darcy.h5"`` (for messages)."""
        name = Path(self.file).name
        if self.indices is None:
            return f"all samples of {name}"
        spans = ", ".join(f"{a}-{b - 1}" if b - a > 1 else str(a) for a, b in _ranges(self.indices))
        return f"samples {spans} of {name}"

    def to_json(self) -> dict:
        return {"file": str(self.file), "fingerprint": self.fingerprint, "resolution": self.resolution,
                "label": self.label, "ranges": None if self.indices is None else _ranges(self.indices)}

    @classmethod
    def from_json(cls, raw: dict) -> "Part":
        ranges = raw.get("ranges")
        indices = None if ranges is None else [i for a, b in ranges for i in range(a, b)]
        return cls(raw["file"], indices, raw.get("resolution"), raw.get("label", ""), raw.get("fingerprint", ""))

    def matches(self, ds: H5Dataset) -> bool:
        """``ds`` holds this part's samples (where it has them): the same path, or a file with the
        same fingerprint elsewhere (a copy, or the same generation with more or fewer samples)."""
        same_path = Path(self.file).resolve() == Path(ds.path).resolve()
        return same_path or (bool(self.fingerprint) and self.fingerprint == fingerprint(ds.meta))


@dataclass
class Split:
    """Where a run's samples come from: training, validation (None: no validation) and test parts
    (the first test part is the main one)."""

    train: Part
    val: Part | None
    tests: list[Part]

    def to_json(self) -> dict:
        return {"train": self.train.to_json(), "val": self.val.to_json() if self.val else None,
                "tests": [p.to_json() for p in self.tests]}

    @classmethod
    def from_json(cls, raw: dict) -> "Split":
        return cls(Part.from_json(raw["train"]), Part.from_json(raw["val"]) if raw.get("val") else None,
                   [Part.from_json(p) for p in raw["tests"]])


def recorded_split(run) -> Split:
    """The split the run folder ``run`` (:class:`~oplab.rundir.RunDir`) was trained on; a version-1
    run kept none: its data config planned again, without validation (it trained on every
    non-test sample)."""
    if run.split:
        return Split.from_json(run.split)
    from .config import DataConfig

    known = DataConfig.__dataclass_fields__
    return plan(DataConfig(**{**{k: v for k, v in run.data.items() if k in known}, "n_val": 0}))


def default_n_val(n_train: int) -> int:
    """A tenth of the training samples, at most 200 (none below 10 training samples)."""
    return min(n_train // 10, 200)


def plan(cfg) -> Split:
    """The split of :class:`~oplab.train.config.DataConfig` ``cfg`` (module docstring); files are
    recorded by absolute path and content fingerprint. A folder as ``cfg.train`` is read as CFDBench's
    layout (:func:`oplab.data.cfdbench.resolve`: converted once, CFDBench's case split)."""
    from ..data.cfdbench import resolve

    cfg = resolve(cfg)
    train_file = str(Path(cfg.train).resolve())
    train_ds = open_dataset(train_file, cfg.resolution)
    if cfg.test:
        test_file = str(Path(cfg.test).resolve())
        test_whole = open_dataset(test_file)
        _check_grid(test_whole, None, like=train_ds)
        test_n = len(test_whole)
        n_test = test_n if cfg.n_test is None else cfg.n_test
        if n_test > test_n:
            raise ParameterError(f"data.n_test = {n_test} but {cfg.test} holds {test_n} samples")
        test_idx = list(range(test_n - n_test, test_n))
        n_train = len(train_ds) if cfg.n_train is None else cfg.n_train
        if n_train > len(train_ds):
            raise ParameterError(f"data.n_train = {n_train} but {cfg.train} holds {len(train_ds)} samples")
    else:
        test_file = train_file
        train_part, test_part = train_ds.split(cfg.n_train, cfg.n_test)
        n_train, test_idx = len(train_part), list(test_part.indices)
    if not test_idx:
        raise ParameterError("data.n_test = 0: the run needs test samples (data.n_test >= 1)")
    n_val = default_n_val(n_train) if cfg.n_val is None else cfg.n_val
    if n_val >= n_train:
        raise ParameterError(f"data.n_val = {n_val} leaves no training sample of data.n_train = {n_train}")
    _check_grid(train_ds, cfg.resolution)
    train_fp = fingerprint(train_ds.meta)
    train = Part(train_file, list(range(n_train - n_val)), cfg.resolution, fingerprint=train_fp)
    val = Part(train_file, list(range(n_train - n_val, n_train)), cfg.resolution, "val", train_fp) if n_val else None
    test_fp = fingerprint(open_dataset(test_file).meta) if cfg.test else train_fp
    tests: list[Part] = []
    for res in [cfg.resolution] + [r for r in cfg.test_resolutions if r != cfg.resolution]:
        test_ds = open_dataset(test_file, res)
        _check_grid(test_ds, res)
        tests.append(Part(test_file, test_idx, res, grid_label(test_ds), test_fp))
    for path in cfg.test_files:
        ds = open_dataset(path)
        _check_grid(ds, None, like=train_ds)
        label = grid_label(ds)
        if label in {p.label for p in tests}:
            label = f"{Path(path).stem}@{label}"
        tests.append(Part(str(Path(path).resolve()), None, None, label, fingerprint(ds.meta)))
    return Split(train, val, tests)


def _check_grid(ds: H5Dataset, resolution, like: H5Dataset | None = None) -> None:
    """Enough points on every axis of ``ds`` for the errors the run reports (relative H1), and,
    given the training set ``like``, its number of spatial axes and of input and output channels
    (a test set the model cannot take is refused as the run is planned, naming the file)."""
    from ..eval.metrics import check_grid

    if like is not None:
        def form(d: H5Dataset) -> tuple:
            axes, shapes = d.meta["output_axes"], d.meta["shapes"]
            return (len(d.meta["input_axes"]), shapes["inputs"][1], len(axes), shapes["outputs"][-len(axes) - 1])

        def words(d: H5Dataset) -> str:
            d_in, c_in, d_out, c_out = form(d)
            grid = lambda name, k: list(d.meta["shapes"][name][-k:])  # noqa: E731
            axes = lambda k: f"{k} spatial {'axis' if k == 1 else 'axes'}"  # noqa: E731
            return (f"inputs {c_in} channel(s) on {grid('inputs', d_in)} ({axes(d_in)}), outputs {c_out} "
                    f"channel(s) on {grid('outputs', d_out)} ({axes(d_out)})")

        if form(ds) != form(like):
            raise ParameterError(f"{ds.path}: {words(ds)}; a test set needs the training data's number of spatial "
                                 f"axes and channels ({like.path}: {words(like)})")
    axes = ds.meta["output_axes"]
    where = f"{ds.path} at resolution {resolution}" if resolution is not None else str(ds.path)
    check_grid([len(c) for c in ds.output_grid], [a.periodic for a in axes], [a.name for a in axes], where)


@dataclass
class Prepared:
    """A split read into tensors: what the Trainer takes."""

    split: Split
    train: GridData
    val: GridData | None
    tests: dict  # label -> GridData
    source: H5Dataset  # the training file (its metadata describes the run's data)

    def info(self) -> dict:
        """The data description recorded in the run folder (problem, channels, axes, shapes, split)."""
        meta, train = self.source.meta, self.train
        return {
            "problem": meta["problem"], "params": meta["params"],
            "input_channels": meta["input_channels"], "output_channels": meta["output_channels"],
            "static_channels": meta["static_channels"],
            "input_axes": [dataclasses.asdict(a) for a in meta["input_axes"]],
            "output_axes": [dataclasses.asdict(a) for a in meta["output_axes"]],
            "n_times": train.n_times,
            "train_input_shape": list(train.x_shape),
            "train_output_shape": list(train.y_shape),
            "times": None if meta["times"] is None else [float(t) for t in meta["times"]],
            "split": self.split.to_json(),
        }


def memory_budget() -> int:
    """Bytes a run may hold in memory: a quarter of the memory available now (``MemAvailable``), or
    ``$OPLAB_MEMORY_BUDGET_MB`` when set."""
    import os

    if os.environ.get("OPLAB_MEMORY_BUDGET_MB"):
        return int(float(os.environ["OPLAB_MEMORY_BUDGET_MB"]) * 2**20)
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024 // 4
    except (OSError, KeyError, ValueError):
        return 4 * 2**30


def prepare(split: Split, outputs: bool = True, in_memory: str | bool = True, workers: int = 2) -> Prepared:
    """Read ``split``; ``outputs=False`` (physics-only training) reads no solution of the training
    and validation samples (the validation error is then the physics residual).

    ``in_memory``: True reads every part into tensors; False streams them (:class:`StreamData`,
    ``workers`` reader processes); ``"auto"`` streams when the parts would take more than
    :func:`memory_budget`."""
    parts = [split.train] + ([split.val] if split.val else []) + list(split.tests)
    if in_memory == "auto":
        in_memory = sum(p.nbytes() for p in parts) <= memory_budget()
    if in_memory:
        read = lambda part, out=True: part.load(outputs=out)  # noqa: E731
    else:
        read = lambda part, out=True: part.stream(outputs=out, workers=workers)  # noqa: E731
    train = read(split.train, outputs)
    val = read(split.val, outputs) if split.val else None
    tests = {p.label: read(p) for p in split.tests}
    return Prepared(split, train, val, tests, split.train.dataset())
