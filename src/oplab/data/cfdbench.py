"""A reader for CFDBench's released files (Luo, Chen & Zhang 2023, arXiv:2310.05963).

CFDBench's interpolated data set is laid out ``<root>/<flow>/<subset>/case<k>/`` (flow ``cavity``,
``tube``, ``dam`` or ``cylinder``; subset ``bc``, ``geo`` or ``prop``), each case holding
``case.json`` (the case parameters, e.g. ``{"vel_top": 10, "density": 1, "viscosity": 1e-5,
"height": ..., "width": ...}``) and ``u.npy``, ``v.npy`` (frames ``[T, H, W]``, 0.1 s apart, 64x64);
see CFDBench's ``src/dataset/{cavity,tube,dam,cylinder}.py``.

:func:`convert` turns one subset folder (or a flow folder: all its subsets) into an oplab trajectory
file: inputs ``[N, C, H, W]`` = frame 0, outputs ``[N, T, C, H, W]`` = frames ``1..T``, channels
``u, v, mask`` plus one constant channel per numeric case parameter (those every case has, in the
first case's order; ``case_no`` left out), the layout of oplab's own ``cavity``/``tube``/... problems.
``mask`` is 1 in fluid and 0 in the obstacle, by CFDBench's own rules (the cylinder disk from
``x_min, y_min, radius``; the dam barrier from ``barrier_height, barrier_width, dx, dy``); 1
elsewhere. Cases have different lengths in CFDBench; all are cut to the shortest (or ``frames``).

Case order and split: the cases of each subset sorted by number, then shuffled with Python's
``random.seed(0); random.shuffle`` as CFDBench's ``get_*_auto_datasets`` do, and split 80/10/10 by
case (rounded as there); the file holds train, dev, test cases in that order and records
``n_train`` (train + dev), ``n_val`` (dev) and ``n_test`` in the attribute ``cfdbench_split``.

``oplab train --data FOLDER`` converts a CFDBench folder on the fly (into ``FOLDER/_oplab.h5``,
reused while it is newer than every case file).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import DataFileError

CACHE_NAME = "_oplab.h5"


def _cases(folder: Path) -> list[Path]:
    def number(p: Path) -> int:
        try:
            return int(p.name[4:])
        except ValueError:
            raise DataFileError(f"{p}: not a CFDBench case folder name (expected case<number>)") from None

    subs = sorted(p for p in folder.glob("case*") if p.is_dir())
    if subs:
        return sorted(subs, key=number)
    nested = [d for d in sorted(folder.iterdir()) if d.is_dir() and d.name in ("bc", "geo", "prop")]
    out = []
    for d in nested:
        out += sorted((p for p in d.glob("case*") if p.is_dir()), key=number)
    return out


def _load_case(case: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    for name in ("case.json", "u.npy", "v.npy"):
        if not (case / name).is_file():
            raise DataFileError(f"{case}: missing {name} (a CFDBench case holds case.json, u.npy and v.npy)")
    try:
        params = json.loads((case / "case.json").read_text(encoding="utf8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{case / 'case.json'}: bad JSON ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(params, dict):
        raise DataFileError(f"{case / 'case.json'}: expected a JSON object of case parameters")
    arrays = []
    for name in ("u.npy", "v.npy"):
        try:
            a = np.load(case / name, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataFileError(f"{case / name}: cannot read ({' '.join(str(exc).split())[:120]})") from None
        if a.ndim != 3 or a.shape[0] < 2 or not np.issubdtype(a.dtype, np.number):
            raise DataFileError(f"{case / name}: expected numeric frames [T >= 2, H, W], got shape {list(a.shape)}")
        arrays.append(np.asarray(a, dtype=np.float64))
    if arrays[0].shape != arrays[1].shape:
        raise DataFileError(f"{case}: u.npy {list(arrays[0].shape)} and v.npy {list(arrays[1].shape)} differ in shape")
    if not (np.isfinite(arrays[0]).all() and np.isfinite(arrays[1]).all()):
        raise DataFileError(f"{case}: NaN or Inf in u.npy or v.npy")
    return params, arrays[0], arrays[1]


def _mask(params: dict, h: int, w: int) -> np.ndarray:
    """1 in fluid, 0 in the obstacle, by CFDBench's src/dataset rules."""
    mask = np.ones((h, w))
    try:
        if {"x_min", "x_max", "y_min", "y_max", "radius"} <= set(params):  # cylinder: centred at the origin
            x_min, y_min = float(params["x_min"]), float(params["y_min"])
            dx = (float(params["x_max"]) - x_min) / w
            dy = (float(params["y_max"]) - y_min) / h
            y = y_min + np.arange(h)[:, None] * dy
            x = x_min + np.arange(w)[None, :] * dx
            mask[x ** 2 + y ** 2 <= float(params["radius"]) ** 2] = 0
        elif {"barrier_height", "barrier_width", "dx", "dy"} <= set(params):  # dam: barrier at x = 0.5
            left = int(0.5 / float(params["dx"]))
            right = int((0.5 + float(params["barrier_width"])) / float(params["dx"]))
            top = int(float(params["barrier_height"]) / float(params["dy"]))
            mask[:top, left:right] = 0
    except (TypeError, ValueError, ZeroDivisionError):
        raise DataFileError(f"case parameters {params!r}: non-numeric geometry") from None
    return mask


def convert(folder, out=None, frames: int | None = None, seed: int = 0) -> Path:
    """Convert a CFDBench subset (or flow) folder into an oplab trajectory file; returns its path
    (``out``, default ``FOLDER/_oplab.h5``). One-line :class:`DataFileError` for anything not
    CFDBench-shaped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFileError(f"{folder}: not a folder")
    cases = _cases(folder)
    if not cases:
        raise DataFileError(f"{folder}: no CFDBench case folders (expected {folder}/case0000/ with case.json, "
                            f"u.npy, v.npy, or subset folders bc/ geo/ prop/ holding them)")
    loaded = [_load_case(c) for c in cases]
    shape = loaded[0][1].shape[1:]
    for c, (_, u, _) in zip(cases, loaded):
        if u.shape[1:] != shape:
            raise DataFileError(f"{c}: frames {list(u.shape[1:])} differ from the first case's {list(shape)}")
    keys = [k for k, v in loaded[0][0].items() if k != "case_no" and isinstance(v, (int, float))
            and not isinstance(v, bool) and all(isinstance(p.get(k), (int, float)) for p, _, _ in loaded)]
    n_frames = min(u.shape[0] for _, u, _ in loaded)
    if frames is not None:
        if not 2 <= frames <= n_frames:
            raise DataFileError(f"{folder}: frames must be in [2, {n_frames}] (the shortest case), got {frames}")
        n_frames = frames

    order = list(range(len(cases)))
    random.Random(seed).shuffle(order)  # CFDBench: random.seed(0); random.shuffle(case_dirs)
    n = len(order)
    n_tr = round(n * 0.8)
    n_dev = round(n * 0.1)
    n_te = n - n_tr - n_dev
    h, w = shape
    channels = ["u", "v", "mask", *keys]
    out = Path(out) if out is not None else folder / CACHE_NAME
    tmp = out.with_name(out.name + ".tmp")
    dt = 0.1  # CFDBench's frames are 0.1 s apart
    with h5py.File(tmp, "w") as f:
        xs = f.create_dataset("inputs", shape=(n, len(channels), h, w), dtype=np.float32)
        ys = f.create_dataset("outputs", shape=(n, n_frames - 1, len(channels), h, w), dtype=np.float32,
                              chunks=(1, n_frames - 1, len(channels), h, w))
        for row, k in enumerate(order):
            params, u, v = loaded[k]
            stack = np.empty((n_frames, len(channels), h, w))
            stack[:, 0], stack[:, 1] = u[:n_frames], v[:n_frames]
            stack[:, 2] = _mask(params, h, w)
            for j, key in enumerate(keys):
                stack[:, 3 + j] = float(params[key])
            xs[row] = stack[0]
            ys[row] = stack[1:]
        axes = [{"name": "y", "n": h, "lo": 0.0, "hi": 1.0, "periodic": False},
                {"name": "x", "n": w, "lo": 0.0, "hi": 1.0, "periodic": False}]
        for group in ("inputs", "outputs"):
            for a in axes:
                f.create_dataset(f"grid/{group}/{a['name']}", data=np.linspace(0.0, 1.0, a["n"]))
        f.create_dataset("grid/times", data=dt * np.arange(1, n_frames))
        f.attrs.update({
            "format": "oplab-dataset", "format_version": 1, "problem": f"cfdbench:{folder.name}",
            "resolution": int(h), "params": json.dumps({"folder": str(folder.resolve()), "frames": n_frames}),
            "seed": int(seed), "n": int(n), "chunk_size": 1,
            "solver": "ANSYS Fluent (CFDBench release, interpolated to a uniform grid)",
            "oplab_version": __version__, "input_channels": json.dumps(channels),
            "output_channels": json.dumps(channels), "static_channels": json.dumps(channels[2:]),
            "domain": json.dumps({"y": [0.0, 1.0], "x": [0.0, 1.0]}),
            "input_axes": json.dumps(axes), "output_axes": json.dumps(axes),
            "reference": "CFDBench (Luo, Chen & Zhang 2023, arXiv:2310.05963)",
            "cases": json.dumps([str(cases[k].relative_to(folder)) for k in order]),
            "cfdbench_split": json.dumps({"n_train": n_tr + n_dev, "n_val": n_dev, "n_test": n_te}),
        })
        f.attrs["complete"] = True
    os.replace(tmp, out)
    return out


def cached(folder) -> Path:
    """``FOLDER/_oplab.h5`` (or, for a read-only folder, a file under ``~/.cache/oplab/cfdbench``),
    converted again unless it is newer than every case file and made by this converter (it records
    ``static_channels``; earlier conversions did not)."""
    import hashlib

    folder = Path(folder).resolve()
    key = hashlib.sha1(str(folder).encode()).hexdigest()[:16]
    spare = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "oplab" / "cfdbench" / f"{key}.h5"
    newest = None
    for out in (folder / CACHE_NAME, spare):
        if out.is_file():
            if newest is None:
                newest = max((p.stat().st_mtime for c in _cases(folder) for p in c.iterdir()), default=0.0)
            if newest <= out.stat().st_mtime and _current(out):
                return out
    if os.access(folder, os.W_OK):
        return convert(folder, folder / CACHE_NAME)
    spare.parent.mkdir(parents=True, exist_ok=True)
    return convert(folder, spare)


def _current(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return "static_channels" in f.attrs
    except OSError:
        return False


def split_of(path) -> dict:
    """The recorded CFDBench split of a converted file: ``{"n_train", "n_val", "n_test"}``."""
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["cfdbench_split"])


def resolve(cfg):
    """A :class:`~oplab.train.config.DataConfig` with its CFDBench folders converted (cached): a
    ``train`` folder also gives unset ``n_train``/``n_val``/``n_test`` from CFDBench's 80/10/10
    case split (with a separate ``test``, the whole folder trains); a ``test`` folder or
    ``test_files`` folders are tested whole. Any other config unchanged."""
    import dataclasses

    folder = lambda p: bool(p) and Path(p).is_dir()  # noqa: E731
    changes = {}
    if folder(cfg.test):
        changes["test"] = str(cached(cfg.test))
    if any(folder(p) for p in cfg.test_files):
        changes["test_files"] = [str(cached(p)) if folder(p) else p for p in cfg.test_files]
    if folder(cfg.train):
        path = cached(cfg.train)
        split = {k: v for k, v in split_of(path).items() if getattr(cfg, k, None) is None}
        if cfg.test:  # a separate test set: the whole folder trains
            split.pop("n_test", None)
            split.pop("n_train", None)
        changes.update(train=str(path), **split)
    return dataclasses.replace(cfg, **changes) if changes else cfg
