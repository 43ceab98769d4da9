"""The oplab data set file: HDF5, self-describing.

Layout (format version 1)::

    /inputs            float32 [N, C_in, *S_in]
    /outputs           float32 [N, C_out, *S_out]  or [N, T, C_out, *S_out]
    /grid/inputs/<axis>    coordinates of each input axis (float64)
    /grid/outputs/<axis>   coordinates of each output axis
    /grid/times            output times (trajectories only)
    attrs:  format = "oplab-dataset", format_version = 1, complete = True,
            problem, resolution, params (JSON), seed, n, chunk_size, solver,
            oplab_version, input_channels, output_channels (JSON lists),
            static_channels (JSON list, optional: the output channels constant
            in time, e.g. a geometry mask or a case parameter; absent = none),
            domain (JSON), input_axes / output_axes (JSON: name, n, lo, hi,
            periodic), reference

A file exists under its final name only once every sample is in it
(generation writes ``FILE.tmp`` and renames); ``complete`` is written last
as a second guard. :func:`read_meta` refuses anything else with a one-line
:class:`~oplab.errors.DataFileError`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import DataFileError
from ..problems.base import Axis, Problem

FORMAT = "oplab-dataset"
FORMAT_VERSION = 1
_JSON_ATTRS = ("params", "input_channels", "output_channels", "static_channels", "domain", "input_axes",
               "output_axes")


def _axes_json(axes: list[Axis]) -> str:
    return json.dumps([asdict(a) for a in axes])


def create(path: Path, problem: Problem, n: int, seed: int) -> h5py.File:
    """Create a new, not yet complete, data set file with its metadata and
    empty arrays; the caller fills ``inputs``/``outputs`` and calls :func:`finish`."""
    f = h5py.File(path, "w", libver="latest")
    desc = problem.describe()
    attrs = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "complete": False,
        "problem": desc["problem"],
        "resolution": desc["resolution"],
        "params": json.dumps(desc["params"], sort_keys=True),
        "seed": int(seed),
        "n": int(n),
        "chunk_size": int(problem.chunk_size),
        "solver": desc["solver"],
        "oplab_version": __version__,
        "input_channels": json.dumps(desc["input_channels"]),
        "output_channels": json.dumps(desc["output_channels"]),
        "static_channels": json.dumps(desc["static_channels"]),
        "domain": json.dumps(desc["domain"]),
        "input_axes": _axes_json(problem.input_axes()),
        "output_axes": _axes_json(problem.output_axes()),
        "reference": desc["reference"],
    }
    f.attrs.update(attrs)
    for group, axes in (("inputs", problem.input_axes()), ("outputs", problem.output_axes())):
        for axis in axes:
            f.create_dataset(f"grid/{group}/{axis.name}", data=axis.coords())
    times = problem.output_times()
    if times is not None:
        f.create_dataset("grid/times", data=np.asarray(times, dtype=np.float64))
    for name, shape in (("inputs", problem.input_shape()), ("outputs", problem.output_shape())):
        # one sample per HDF5 chunk: strided and random access read one chunk per sample
        f.create_dataset(name, shape=(n, *shape), dtype=np.float32, chunks=(1, *shape))
    return f


def finish(f: h5py.File) -> None:
    """Mark a filled file complete and close it."""
    f.attrs["complete"] = True
    f.flush()
    f.close()


_REQUIRED_ATTRS = ("problem", "resolution", "params", "seed", "n", "solver", "oplab_version", "input_channels",
                   "output_channels", "domain", "input_axes", "output_axes", "reference")


def h5_error(exc: BaseException) -> str:
    """An h5py exception as one short line: ``"RuntimeError: Error iterating over attributes (...)"``
    (a KeyError's message comes quoted; newlines are folded)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = " ".join(str(text).split())
    return f"{exc.__class__.__name__}: {text[:200]}" if text else exc.__class__.__name__


def read_meta(path: str | Path) -> dict:
    """Metadata of a complete oplab data set file (JSON attributes decoded); anything missing,
    malformed or disagreeing with the arrays is a one-line DataFileError naming the key."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: no such file")
    if path.is_dir():
        raise DataFileError(f"{path}: is a folder, expected an oplab HDF5 data set file")
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            arrays = {k: f.get(k) for k in ("inputs", "outputs")}
            kinds = {k: ("missing" if v is None else "a group" if isinstance(v, h5py.Group)
                         else "a dataset" if isinstance(v, h5py.Dataset) else type(v).__name__)
                     for k, v in arrays.items()}
            shapes = {k: tuple(v.shape) for k, v in arrays.items() if isinstance(v, h5py.Dataset)}
            dtypes = {k: v.dtype for k, v in arrays.items() if isinstance(v, h5py.Dataset)}
            times = f["grid/times"][()] if isinstance(f.get("grid/times"), h5py.Dataset) else None
    except OSError as exc:
        raise DataFileError(f"{path}: not a readable HDF5 file ({exc.__class__.__name__}: truncated or foreign)") from None
    except Exception as exc:  # noqa: BLE001 -- h5py's others on damaged metadata: RuntimeError, KeyError
        raise DataFileError(f"{path}: damaged HDF5 file, its metadata cannot be read ({h5_error(exc)})") from None
    if attrs.get("format") != FORMAT:
        raise DataFileError(f"{path}: not an oplab data set (attribute 'format' is {attrs.get('format')!r}, expected {FORMAT!r})")
    try:
        version = int(attrs.get("format_version", -1))
    except (TypeError, ValueError):
        version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise DataFileError(f"{path}: format_version {version}, this oplab reads {FORMAT_VERSION}")
    if not bool(attrs.get("complete", False)):
        raise DataFileError(f"{path}: incomplete data set (generation did not finish); rerun the generate command to resume")
    missing = [k for k in _REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise DataFileError(f"{path}: attribute(s) {missing} missing; not a complete oplab data set")
    for key, kind in kinds.items():
        if kind == "missing":
            raise DataFileError(f"{path}: missing dataset {key!r}")
        if kind != "a dataset":
            raise DataFileError(f"{path}: {key!r} is {kind}, expected a float32 dataset [N, C, *S]")
        if dtypes[key].kind not in "fiu":
            raise DataFileError(f"{path}: dataset {key!r} holds {dtypes[key]} values, expected float32 numbers")
        if len(shapes[key]) < 3:
            raise DataFileError(f"{path}: dataset {key!r} has shape {list(shapes[key])}, expected [N, C, *S] "
                                f"(at least one spatial axis)")
    meta = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()}
    meta.setdefault("static_channels", "[]")  # optional (files of earlier versions have none)
    for key in _JSON_ATTRS:
        text = meta[key]
        try:
            meta[key] = json.loads(text.decode() if isinstance(text, bytes) else text)
        except (TypeError, ValueError, UnicodeDecodeError):
            raise DataFileError(f"{path}: attribute {key!r} is not valid JSON (got {str(text)[:60]!r})") from None
    for key in ("input_axes", "output_axes"):
        try:
            meta[key] = [Axis(**a) for a in meta[key]]
            ok = all(isinstance(a.n, int) and a.n >= 1 for a in meta[key])
        except TypeError:
            ok = False
        if not ok:
            raise DataFileError(f"{path}: attribute {key!r} is not a list of axes "
                                f"{{name, n, lo, hi, periodic}}")
    static = meta["static_channels"]
    if not isinstance(static, list) or not set(static) <= set(meta["output_channels"]) \
            or len(set(static)) != len(static) or len(static) >= len(meta["output_channels"]):
        raise DataFileError(f"{path}: attribute 'static_channels' is {static!r}, expected distinct output channel "
                            f"names ({meta['output_channels']}) leaving at least one to predict")
    if not isinstance(meta["params"], dict):
        raise DataFileError(f"{path}: attribute 'params' is {meta['params']!r}, expected a JSON mapping")
    n = meta["n"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DataFileError(f"{path}: attribute 'n' is {n!r}, expected the number of samples")
    for key in ("inputs", "outputs"):
        if shapes[key][0] != n:
            raise DataFileError(f"{path}: attribute 'n' says {n} samples, but dataset {key!r} holds "
                                f"{shapes[key][0]} (shape {list(shapes[key])})")
    for key, axes in (("inputs", meta["input_axes"]), ("outputs", meta["output_axes"])):
        grid = [a.n for a in axes]
        if list(shapes[key][len(shapes[key]) - len(grid):]) != grid or len(shapes[key]) < len(grid) + 2:
            raise DataFileError(f"{path}: dataset {key!r} has shape {list(shapes[key])}, but attribute "
                                f"'{key[:-1]}_axes' says a grid of {grid}")
    meta["shapes"] = shapes
    meta["times"] = times
    return meta


def summary(meta: dict) -> list[tuple[str, str]]:
    """Rows (key, value) describing a data set, for ``oplab data info``."""
    axes = lambda axs: " x ".join(f"{a.name}[{a.lo:g}, {a.hi:g}]:{a.n}{' periodic' if a.periodic else ''}" for a in axs)
    rows = [
        ("problem", meta["problem"]),
        ("samples", str(meta["n"])),
        ("inputs", f"{list(meta['shapes']['inputs'])}  channels {meta['input_channels']}"),
        ("outputs", f"{list(meta['shapes']['outputs'])}  channels {meta['output_channels']}"),
        ("input grid", axes(meta["input_axes"])),
        ("output grid", axes(meta["output_axes"])),
    ]
    if meta["times"] is not None:
        t = meta["times"]
        rows.append(("times", f"{len(t)} records, t = {t[0]:g} .. {t[-1]:g}"))
    rows += [
        ("resolution", str(meta["resolution"])),
        ("parameters", json.dumps(meta["params"], sort_keys=True)),
        ("seed", str(meta["seed"])),
        ("solver", meta["solver"]),
        ("oplab version", meta["oplab_version"]),
        ("reference", meta["reference"]),
    ]
    return rows
