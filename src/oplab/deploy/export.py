"""``oplab export``: a trained operator as one file that runs without oplab.

Three formats, each holding the whole deployable unit (input normaliser, model, output
normaliser and the grid coordinates, computed in the graph from the input's size):

* ``onnx``: for ONNX Runtime (C++, C#, Java, JavaScript, mobile). PyTorch's FFTs and complex
  tensors do not export to ONNX (pytorch issues #107588, #86746, #149332), so spectral layers
  export their truncated DFTs as real matrix products built from the input's size
  (:meth:`oplab.layers.SpectralConv._forward_matmul`): the same operator, equal to the FFT path
  to rounding.
* ``exported-program``: ``torch.export`` (a ``.pt2`` file for ``torch.export.load``, AOTInductor
  or ExecuTorch).
* ``torchscript``: ``torch.jit.trace`` (``torch.jit.load``, LibTorch in C++). A trace records
  the sizes it saw, so this format answers at the training resolution only.

The batch axis is dynamic in every format; the spatial axes are dynamic in ``onnx`` and
``exported-program`` where the model allows it (a grid operator whose code holds for symbolic
sizes; spectral layers need at least ``2 m`` points per axis to keep all ``m`` modes). An FNO with
a ``period`` (set by training: it keeps the training grid's FFT length on other grids) appends a
number of samples that depends on the size, so its file answers at the training grid. Every
export is checked against ``oplab.load(RUN)`` on the run's own inputs (random fields of the
training distribution are not needed: the check feeds the normaliser's mean plus noise) at the
training resolution and, where dynamic, at a second resolution; the largest relative difference
is written beside the file in ``<file>.json`` (``model.onnx.json``). Below the recorded
``min_sizes`` a dynamic file still runs but is no longer the model (fewer points than modes):
callers check the size.

This module imports no training code.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import OplabError
from ..predictor import Predictor, load

FORMATS = {"onnx": ".onnx", "exported-program": ".pt2", "torchscript": ".pt"}


class Exportable(nn.Module):
    """``x [B, C_in, *S] -> y [B, C_out, *S]`` in physical units: a bundle (normalisers + model)
    with the grid's coordinates computed from ``x``'s size (grid operators: ``axes`` holds
    ``(lo, hi, periodic)`` per axis) or fixed (point operators: ``point_coords``)."""

    def __init__(self, bundle: nn.Module, axes, point_coords=None, matmul_dft: bool = True):
        from ..layers.spectral import SpectralConv

        super().__init__()
        self.bundle = copy.deepcopy(bundle).eval()
        for layer in self.bundle.modules():
            if isinstance(layer, SpectralConv) and matmul_dft:  # one real constant per layer, no factors
                layer.freeze()
                layer.dft, layer.weight = "matmul", nn.Module()
        self.axes = [tuple(a) for a in axes]
        self.point = point_coords is not None
        for m in self.bundle.modules():  # an FNO's period needs the spacing: from the axes, not graph values
            if hasattr(m, "export_spans"):
                m.export_spans = [(hi - lo, periodic) for lo, hi, periodic in axes]
        for i, c in enumerate(point_coords or ()):  # the training grid's coordinates, as buffers
            self.register_buffer(f"coord{i}", c, persistent=False)

    @classmethod
    def of(cls, op: Predictor, matmul_dft: bool = True) -> "Exportable":
        point = op.coords_for(tuple(op.data["train_output_shape"][1:])) if op.kind == "point" else None
        return cls(op.bundle, [(float(a.lo), float(a.hi), bool(a.periodic)) for a in op.out_axes], point, matmul_dft)

    def coords(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.point:
            return tuple(getattr(self, f"coord{i}") for i in range(len(self.axes)))
        out = []
        for (lo, hi, periodic), n in zip(self.axes, x.shape[2:]):
            t = torch.arange(n, device=x.device).to(torch.float32)
            out.append(lo + (hi - lo) * t / (n if periodic else n - 1))
        return tuple(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bundle(x, self.coords(x))


def min_sizes(model: nn.Module, d: int) -> list[int]:
    """The fewest points per spatial axis at which every spectral layer keeps all its modes."""
    from ..layers.spectral import SpectralConv

    need = [2] * d
    for layer in model.modules():
        if isinstance(layer, SpectralConv) and layer.dim == d:
            need = [max(a, 2 * m) for a, m in zip(need, layer.max_n_modes)]
    return need


def sample_input(op: Predictor, sizes: tuple[int, ...], batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Inputs near the training data: the input normaliser's mean plus its scale times noise."""
    g = torch.Generator().manual_seed(seed)
    c = op.data["train_input_shape"][0]
    mean, std = op.bundle.in_norm.mean.reshape(1, c, *[1] * len(sizes)), op.bundle.in_norm.std.reshape(1, c, *[1] * len(sizes))
    return (mean + std * torch.randn(batch, c, *sizes, generator=g)).float()


def _dynamic(op: Predictor, module: Exportable, spatial: bool) -> dict:
    """``dynamic_shapes`` for ``torch.export``: the batch, and the spatial axes if asked."""
    from torch.export import Dim

    dims = {0: Dim("batch", min=1, max=1 << 20)}
    if spatial:
        names = [a.name for a in op.in_axes]
        lows = min_sizes(module.bundle.model, len(names))
        dims.update({2 + i: Dim(f"n_{name}", min=low, max=1 << 16) for i, (name, low) in enumerate(zip(names, lows))})
    return {"x": dims}


def _second_size(op: Predictor) -> tuple[int, ...]:
    """A second resolution for the check: twice the training grid's points per axis, capped."""
    train = tuple(op.data["train_input_shape"][1:])
    return tuple(min(2 * n, max(n + 8, 64)) for n in train)


def export(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None, checkpoint: str = "best",
           overwrite: bool = False, log=print) -> dict:
    """Export a run's operator to ``out`` (default ``RUN/export/model.<ext>``) and check it
    against ``oplab.load(RUN)``; returns the report also written to ``<out>.json``."""
    if fmt not in FORMATS:
        raise OplabError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        import importlib.util

        missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            raise OplabError(f"--format onnx needs {', '.join(missing)}: pip install \"oplab[export]\"")
    op = load(run_dir, checkpoint)
    out = Path(out) if out is not None else op.run_dir / "export" / f"model{FORMATS[fmt]}"
    if out.suffix != FORMATS[fmt]:
        out = out.with_name(out.name + FORMATS[fmt])
    meta_path = out.with_name(out.name + ".json")  # one record per file: formats sit side by side
    for path in (out, meta_path):
        if path.exists() and not overwrite:
            raise OplabError(f"{path}: exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    module = Exportable.of(op, matmul_dft=fmt != "torchscript")  # TorchScript holds FFTs
    train = tuple(op.data["train_input_shape"][1:])
    x = sample_input(op, train)
    tmp = out.with_name(out.stem + ".part" + out.suffix)  # (torch.export.save wants its extension)
    spatial = op.kind == "grid" and fmt != "torchscript"
    t0 = time.perf_counter()
    while True:  # dynamic spatial axes where the model's code allows it, else the training grid
        try:
            _write(module, x, fmt, tmp, _dynamic(op, module, spatial) if fmt != "torchscript" else None)
            break
        except Exception as exc:  # noqa: BLE001 - an exporter's refusal has many types
            if not spatial:
                tmp.unlink(missing_ok=True)
                first = str(exc).splitlines()[0] if str(exc) else ""
                first = "" if "INTERNAL ASSERT" in first else f": {first[:160]}"
                raise OplabError(f"{op.run_dir}: the {type(op.bundle.model).__name__} model does not export to "
                                 f"{fmt} ({type(exc).__name__}{first})") from None
            why = str(exc).splitlines()[0] if isinstance(exc, OplabError) else type(exc).__name__  # ours: say it
            log(f"dynamic resolution refused by the exporter ({why}); exporting at {list(train)}")
            spatial = False
    seconds = time.perf_counter() - t0
    tmp.replace(out)
    dynamic = _dynamic_axes(out, fmt)
    spatial = all(i in dynamic for i in range(2, 2 + len(train)))  # an exporter may specialise silently
    sizes = [train, _second_size(op)] if spatial else [train]
    checks = [check(op, out, fmt, s) for s in sizes]
    report = {
        "format": fmt, "file": str(out), "bytes": out.stat().st_size, "run": str(op.run_dir),
        "checkpoint": op.checkpoint, "model": type(op.bundle.model).__name__,
        "input": {"name": "x", "shape": ["batch", op.data["train_input_shape"][0],
                                         *([a.name for a in op.in_axes] if spatial else train)]},
        "output": {"name": "y", "shape": ["batch", op.data["train_output_shape"][0],
                                          *([a.name for a in op.out_axes] if spatial else train)]},
        "dynamic": (["batch"] if 0 in dynamic else []) + ([a.name for a in op.in_axes] if spatial else []),
        "min_sizes": min_sizes(op.bundle.model, len(train)) if spatial else list(train),
        "axes": [{"name": a.name, "lo": a.lo, "hi": a.hi, "periodic": a.periodic} for a in op.out_axes],
        "normalisers": "included: the file maps physical inputs to physical outputs",
        "task": op.task, "export_seconds": round(seconds, 2), "checks": checks,
        "max_rel_diff": max(c["max_rel_diff"] for c in checks),
    }
    tmp = meta_path.with_name(meta_path.name + ".part")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(meta_path)
    return report


def _write(module: Exportable, x: torch.Tensor, fmt: str, path: Path, dynamic: dict | None) -> None:
    import logging

    quiet = logging.getLogger("torch.onnx")  # ("torchvision is not installed" per export)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        _export(module, x, fmt, path, dynamic)
    finally:
        quiet.setLevel(level)


def _export(module: Exportable, x: torch.Tensor, fmt: str, path: Path, dynamic: dict | None) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(module, x, check_trace=False), str(path))
        elif fmt == "exported-program":
            torch.export.save(torch.export.export(module, (x,), dynamic_shapes=dynamic, strict=False), str(path))
        else:  # from the program torch.export checked for the dynamic sizes (the ONNX exporter alone may
            # keep an axis free in the file that the model's shape logic specialised)
            program = torch.export.export(module, (x,), dynamic_shapes=dynamic, strict=False)
            torch.onnx.export(program, (x,), dynamo=True, input_names=["x"], output_names=["y"], verbose=False,
                              optimize=True).save(str(path))


def _dynamic_axes(path: Path, fmt: str) -> set[int]:
    """The input axes an exported file leaves free (read back from the file itself)."""
    if fmt == "torchscript":
        return {0}  # a trace keeps the batch free and the sizes it saw
    if fmt == "onnx":
        import onnx

        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        return {i for i, dim in enumerate(dims) if not dim.HasField("dim_value")}
    program = torch.export.load(str(path))
    x = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == program.graph_signature.user_inputs[0])
    return {i for i, n in enumerate(x.meta["val"].shape) if not isinstance(n, int)}


def runner(path: str | Path, fmt: str):
    """A callable ``numpy [B, C_in, *S] -> numpy [B, C_out, *S]`` over an exported file."""
    path = str(path)
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise OplabError("checking an ONNX export needs onnxruntime: pip install \"oplab[export]\"") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda a: session.run(None, {"x": np.ascontiguousarray(a, dtype=np.float32)})[0]
    model = torch.jit.load(path) if fmt == "torchscript" else torch.export.load(path).module()

    def run(a):
        with torch.no_grad():
            return model(torch.as_tensor(a, dtype=torch.float32)).numpy()

    return run


def check(op: Predictor, path: Path, fmt: str, sizes: tuple[int, ...], batch: int = 3) -> dict:
    """The largest difference between the export and the Predictor at ``sizes``, relative to the
    largest output value."""
    x = sample_input(op, sizes, batch, seed=1)
    with torch.no_grad():
        want = op.bundle(x, op.coords_for(sizes)).numpy()
    try:
        got = runner(path, fmt)(x.numpy())
    except Exception as exc:  # noqa: BLE001 - a runtime's refusal: the export is wrong, say so in one line
        raise OplabError(f"{path}: the exported file fails at sizes {list(sizes)} "
                         f"({type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]})") from None
    if got.shape != want.shape:
        raise OplabError(f"{path}: the export answers shape {list(got.shape)}, the model {list(want.shape)}")
    diff = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    return {"sizes": list(sizes), "batch": batch, "max_rel_diff": diff}
