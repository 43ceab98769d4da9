"""Training-step time of Transolver (paper's Darcy size) before and after the Physics-Attention
restructuring, against FNO (modes 12, width 32): batch 10 at 64 x 64, one thread.

The "old" path is a frozen copy of the previous Physics-Attention (composed ``C x (heads * M)``
slice projection, ``[B, heads, N, M]`` weights made by a transposed copy, slice totals by a separate
sum, autograd backward) run with the same weights. Timings: one warm-up step per path, then 5
rounds in which each path makes one timed step in turn (interleaved, against drifts of a shared
machine); medians. Writes ``benchmarks/transolver_step.json``.

    OMP_NUM_THREADS=1 python benchmarks/transolver_step.py
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from oplab.models.fno import FNO
from oplab.models.transolver import Transolver


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_transolver_speed import reference_forward as old_forward  # noqa: E402  (the frozen copy of the old code)


def main(batch: int = 10, size: int = 64, rounds: int = 5) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    transolver = Transolver(1, 1, width=128, n_layers=8, n_heads=8, n_slices=64, mlp_ratio=1, ref=8)
    fno = FNO(1, 1, modes=(12, 12), width=32, n_layers=4)
    x, y = torch.randn(batch, 1, size, size), torch.randn(batch, 1, size, size)
    coords = tuple(torch.linspace(0, 1, size) for _ in range(2))

    def step(model, forward):
        def run():
            model.zero_grad(set_to_none=True)
            out = forward(x, coords)
            loss = ((out - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)).mean()
            loss.backward()
        return run

    paths = {
        "transolver (old reference)": step(transolver, lambda a, c: old_forward(transolver, a, c)),
        "transolver (new)": step(transolver, transolver),
        "fno (modes 12, width 32)": step(fno, fno),
    }
    for run in paths.values():  # warm-up
        run()
    times = {name: [] for name in paths}
    for _ in range(rounds):
        for name, run in paths.items():
            tic = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - tic)
    median = {name: statistics.median(t) for name, t in times.items()}
    fno_ms = median["fno (modes 12, width 32)"]
    result = {
        "setup": f"training step (forward, relative-L2 loss, backward), batch {batch}, {size} x {size}, "
                 f"1 thread, median of {rounds} interleaved rounds after a warm-up",
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "params": {"transolver": transolver.n_params(), "fno": fno.n_params()},
        "median_ms": {k: 1e3 * v for k, v in median.items()},
        "all_ms": {k: [1e3 * t for t in v] for k, v in times.items()},
        "ratio_to_fno": {k: v / fno_ms for k, v in median.items()},
        "speedup_new_over_old": median["transolver (old reference)"] / median["transolver (new)"],
        "goal_within_3x_fno": median["transolver (new)"] <= 3 * fno_ms,
    }
    print(f"{'path':30s} {'median ms':>10s} {'x FNO':>7s}   all (ms)")
    for name in paths:
        print(f"{name:30s} {1e3 * median[name]:10.1f} {median[name] / fno_ms:7.1f}   "
              + " ".join(f"{1e3 * t:.0f}" for t in times[name]))
    print(f"new / old speed-up: {result['speedup_new_over_old']:.2f}x; "
          f"within 3x FNO: {result['goal_within_3x_fno']}")
    Path(__file__).with_name("transolver_step.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
