"""``oplab export`` for every registered model and format, and the exported files' CPU latency.

    python benchmarks/export.py [--resolution 64] [--threads 1]

1. Makes a small Darcy set (60 samples at ``--resolution``) and trains every registered model for
   one epoch with its defaults for that grid (``oplab train --model NAME``: the sizes a user
   gets). Exported values do not depend on training; the point is the model's real size.
2. Exports each run in each format (``oplab.deploy.export.export``): whether the format holds the
   model, which input axes stay dynamic, the largest difference to ``oplab.load(RUN)`` relative
   to the largest output value (at the training grid and, where dynamic, a second grid), file
   size and export time.
3. Latency per sample of the FNO run, batch 1 and 50, ``--threads`` threads: the Predictor
   (PyTorch eager, ``oplab.load(RUN)(x)``), ONNX Runtime's CPU provider, the ``torch.export``
   program and the TorchScript trace; median of interleaved rounds.

Writes ``benchmarks/export.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=HERE / "export.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    import oplab
    from oplab.deploy.export import FORMATS, export, runner
    from oplab.errors import OplabError
    from timing import interleaved

    names = args.models or oplab.models.available()
    rows, latency = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "darcy.h5"
        subprocess.run(["oplab", "generate", "darcy", "--n", "60", "--resolution", str(args.resolution), "--out", str(data)],
                       check=True, capture_output=True)
        for name in names:
            run = tmp / f"run-{name}"
            subprocess.run(["oplab", "train", "--data", str(data), "--model", name, "--epochs", "1", "--n-train", "50",
                            "--n-test", "10", "--out", str(run)], check=True, capture_output=True)
            for fmt in FORMATS:
                tic = time.perf_counter()
                try:
                    r = export(run, fmt, tmp / f"{name}-{fmt}", log=lambda s: None)
                    row = {"model": name, "format": fmt, "ok": True, "dynamic": r["dynamic"], "checks": r["checks"],
                           "max_rel_diff": r["max_rel_diff"], "mb": r["bytes"] / 1e6, "seconds": r["export_seconds"]}
                except OplabError as exc:
                    row = {"model": name, "format": fmt, "ok": False, "why": str(exc).split(" does not export to ")[-1],
                           "seconds": time.perf_counter() - tic}
                rows.append(row)
                print(_row(row), flush=True)
        if "fno" in names:
            op = oplab.load(tmp / "run-fno")
            paths = {"pytorch (oplab.load)": op}
            for fmt in FORMATS:
                ext = FORMATS[fmt]
                paths[fmt] = runner(tmp / f"fno-{fmt}{ext}", fmt) if fmt != "onnx" else _ort(tmp / f"fno-{fmt}{ext}", args.threads)
            g = np.random.default_rng(0)
            for batch in (1, 50):
                x = (3 + 9 * (g.random((batch, 1, args.resolution, args.resolution)) > 0.5)).astype(np.float32)
                times = interleaved(paths, x, args.rounds, args.repeats, per=batch)
                base = statistics.median(times["pytorch (oplab.load)"])
                for k in paths:
                    ms = statistics.median(times[k])
                    latency.append({"batch": batch, "path": k, "ms_per_sample": ms * 1e3, "ratio_to_pytorch": ms / base})
    print(f"\nFNO at {args.resolution}x{args.resolution}, {args.threads} thread(s): latency per sample")
    print(f"{'batch':>5}  {'path':<22} {'ms/sample':>10} {'x pytorch':>9}")
    for r in latency:
        print(f"{r['batch']:>5}  {r['path']:<22} {r['ms_per_sample']:>10.3f} {r['ratio_to_pytorch']:>9.2f}")
    import onnxruntime

    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "resolution": args.resolution,
                                    "threads": args.threads, "torch": torch.__version__,
                                    "onnxruntime": onnxruntime.__version__, "exports": rows, "latency": latency},
                                   indent=1) + "\n")
    print(f"wrote {args.out}")


def _ort(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda a: session.run(None, {"x": a})[0]


def _row(r: dict) -> str:
    if not r["ok"]:
        return f"{r['model']:<13} {r['format']:<17} refused: {r['why'][:90]}"
    checks = ", ".join(f"{'x'.join(map(str, c['sizes']))}: {c['max_rel_diff']:.1e}" for c in r["checks"])
    return (f"{r['model']:<13} {r['format']:<17} dynamic {'+'.join(r['dynamic']):<12} {checks:<32} "
            f"{r['mb']:7.1f} MB {r['seconds']:6.1f} s")


if __name__ == "__main__":
    sys.exit(main())
