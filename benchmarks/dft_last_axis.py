"""The last axis's truncated transforms of a spectral layer: torch's FFT against real matrix products.

    python benchmarks/dft_last_axis.py            # ~15 s; writes benchmarks/dft_last_axis.json

Part 1, one axis: ``rows`` real signals of length ``n``, ``k`` frequencies kept. "r2c" is the forward
transform (``rfft`` then truncation, or ``x @ fwd``), "c2r" the inverse (``irfft`` of the ``k``
frequencies, or ``y @ inv``), each timed forward and backward (the gradient of the input), as a
training step runs them. The ratio is products / FFT over both: below 1 the products win.
``oplab.layers.spectral._products_last`` takes the products where ``k <= 32`` and
``n <= 8192``.

Part 2, one layer: ``SpectralConv`` forward and backward with ``dft="fft"`` (FFTs on every axis) and
``dft="auto"`` (the last axis as products where the rule says so), at the peer comparison's size
(batch 32, width 32, 16 x 16 grid, modes [8, 9]) and the quickstart's (batch 10, width 32, 64 x 64,
modes [12, 12]). Paths are interleaved over rounds (``timing.interleaved``); medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from timing import interleaved  # noqa: E402

from oplab.bench.machine import describe  # noqa: E402
from oplab.layers import SpectralConv  # noqa: E402
from oplab.layers.spectral import _products_last, _real_dft  # noqa: E402

AXES = [(16, 9, 32768), (32, 16, 16384), (64, 12, 32768), (64, 32, 16384), (128, 16, 8192), (128, 32, 8192),
        (128, 64, 8192), (256, 32, 4096), (256, 48, 4096), (256, 64, 4096), (512, 32, 2048), (512, 128, 2048),
        (1024, 32, 1024), (1024, 48, 1024), (1024, 64, 1024), (1024, 256, 1024), (2048, 32, 512), (2048, 64, 512),
        (4096, 32, 256), (4096, 64, 256), (8192, 32, 128)]
LAYERS = {"peer 16x16, modes [8, 9], batch 32": (32, 16, [8, 9]), "quickstart 64x64, modes [12, 12], batch 10": (10, 64, [12, 12])}


def axis_paths(n: int, k: int, rows: int) -> dict:
    fwd, inv = _real_dft(n, k, torch.float32, torch.device("cpu"))
    x = torch.randn(rows, n, requires_grad=True)
    y = torch.randn(rows, k, dtype=torch.complex64, requires_grad=True)
    gx, gy = torch.randn(rows, k, dtype=torch.complex64), torch.randn(rows, n)

    def r2c_fft(_):
        torch.autograd.grad(torch.fft.rfft(x, dim=-1)[:, :k], x, gx)

    def r2c_mm(_):
        torch.autograd.grad(torch.view_as_complex((x @ fwd).view(rows, k, 2)), x, gx)

    def c2r_fft(_):
        torch.autograd.grad(torch.fft.irfft(y, n=n, dim=-1), y, gy)

    def c2r_mm(_):
        torch.autograd.grad(torch.view_as_real(y).reshape(rows, 2 * k) @ inv, y, gy)

    return {"r2c fft": r2c_fft, "r2c products": r2c_mm, "c2r fft": c2r_fft, "c2r products": c2r_mm}


def layer_paths(batch: int, n: int, modes: list[int]) -> dict:
    torch.manual_seed(0)
    layer = SpectralConv(32, 32, modes)
    x = torch.randn(batch, 32, n, n, requires_grad=True)
    g = torch.randn(batch, 32, n, n)

    def run(dft):
        def f(_):
            layer.dft = dft
            torch.autograd.grad(layer(x), [x, *layer.parameters()], g)
        return f

    return {"fft": run("fft"), "auto": run("auto")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=str(HERE / "dft_last_axis.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    med = lambda ts: 1e6 * statistics.median(ts)  # noqa: E731  (microseconds)

    axes = []
    print(f"{'n':>5} {'k':>4} {'rows':>6} | {'r2c fft':>9} {'products':>9} | {'c2r fft':>9} {'products':>9} | ratio | rule")
    for n, k, rows in AXES:
        t = {name: med(ts) for name, ts in interleaved(axis_paths(n, k, rows), None, args.rounds, args.repeats).items()}
        ratio = (t["r2c products"] + t["c2r products"]) / (t["r2c fft"] + t["c2r fft"])
        rule = _products_last(torch.empty(1, n), k)
        axes.append({"n": n, "k": k, "rows": rows, "us": t, "ratio": ratio, "products_taken": rule})
        print(f"{n:5d} {k:4d} {rows:6d} | {t['r2c fft']:9.0f} {t['r2c products']:9.0f} | {t['c2r fft']:9.0f} "
              f"{t['c2r products']:9.0f} | {ratio:5.2f} | {'products' if rule else 'fft'}", flush=True)

    layers = []
    print(f"\n{'layer (forward + backward)':45s} {'fft ms':>8} {'auto ms':>8} {'ratio':>6}")
    for name, (batch, n, modes) in LAYERS.items():
        t = {k: med(ts) / 1e3 for k, ts in interleaved(layer_paths(batch, n, modes), None, args.rounds, args.repeats).items()}
        layers.append({"layer": name, "ms": t, "ratio": t["auto"] / t["fft"]})
        print(f"{name:45s} {t['fft']:8.2f} {t['auto']:8.2f} {t['auto'] / t['fft']:6.2f}", flush=True)

    Path(args.out).write_text(json.dumps({"machine": describe(), "threads": args.threads, "axes": axes, "layers": layers}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
