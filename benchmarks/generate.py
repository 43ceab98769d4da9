"""Data generation speed: seconds per sample per problem, and the Darcy-421 solvers.

    python benchmarks/generate.py [--samples 4] [--full-darcy] [--json benchmarks/generate.json]

1. Each problem at its default resolution: wall seconds per sample of
   ``problem.generate`` in this process (one core).  Navier-Stokes is timed
   over ``--ns-time`` units of simulated time and scaled to its default
   ``t_end``.
2. Darcy at 421 (the FNO set): whole samples (random field, assembly,
   solve) with each linear solver (scipy's plain ``spsolve``, SuperLU with
   the MMD ordering, classical-AMG-preconditioned CG, the default), the
   median over ``--samples`` samples, and the largest difference to the
   plain solve.
3. ``--full-darcy``: ``oplab generate darcy --n 1024 --resolution 421
   --workers 2`` timed end to end (the issue's goal: under 10 minutes).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from oplab import __version__, problems
from oplab.data.generation import tune_allocator


def per_sample(name: str, samples: int, ns_time: float) -> dict:
    kw = {}
    prob = problems.create(name)
    scale = 1.0
    if name == "navier_stokes":  # simulate a little and scale to the full horizon
        full = prob.params["t_end"]
        kw.update(t_end=ns_time, record_every=ns_time)
        prob = problems.create(name, **kw)
        scale = full / ns_time
        samples = prob.chunk_size
    prob.generate(range(min(samples, prob.chunk_size)), seed=0)  # warm-up: caches, imports
    start = time.perf_counter()
    prob.generate(range(samples), seed=1)
    seconds = (time.perf_counter() - start) / samples * scale
    return {"problem": name, "resolution": prob.resolution, "samples": samples,
            "seconds_per_sample": seconds, "note": f"scaled from t_end={ns_time}" if scale != 1 else ""}


def darcy_solvers(samples: int) -> list[dict]:
    """Whole samples (field, assembly, solve) at 421 with each linear solver,
    interleaved sample by sample so that machine noise hits all alike."""
    methods = ("direct-colamd", "direct", "amg")
    probs = {m: problems.create("darcy", resolution=421, solver=m) for m in methods}
    times = {m: [] for m in methods}
    sols = {m: [] for m in methods}
    for i in range(samples):
        for m in methods:
            start = time.perf_counter()
            sols[m].append(probs[m].generate([i], seed=0)[1])
            times[m].append(time.perf_counter() - start)
    base = float(np.median(times[methods[0]]))
    rows = []
    for m in methods:
        diff = max(np.abs(s - r).max() / np.abs(r).max() for s, r in zip(sols[m], sols[methods[0]]))
        sec = float(np.median(times[m]))
        rows.append({"solver": m, "seconds_per_sample": sec, "speedup_vs_spsolve": base / sec,
                     "max_rel_diff": float(diff)})
    return rows


def full_darcy() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "darcy421.h5"
        cmd = [sys.executable, "-m", "oplab", "generate", "darcy", "--n", "1024", "--resolution", "421",
               "--workers", "2", "--out", str(out)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        size = out.stat().st_size
    return {"command": " ".join(cmd[1:]), "seconds": seconds, "seconds_per_sample": seconds / 1024,
            "file_bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--ns-time", type=float, default=0.05, help="simulated time for the Navier-Stokes timing")
    parser.add_argument("--full-darcy", action="store_true")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/generate.json"))
    args = parser.parse_args()
    tune_allocator()  # as `oplab generate` does

    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
              "oplab": __version__, "python": platform.python_version(), "problems": [], "darcy421_solvers": []}
    print(f"{'problem':<20}{'resolution':>11}{'s/sample':>12}  note")
    for name in problems.available():
        row = per_sample(name, args.samples, args.ns_time)
        result["problems"].append(row)
        print(f"{name:<20}{row['resolution']:>11}{row['seconds_per_sample']:>12.4f}  {row['note']}", flush=True)
    print(f"\n{'Darcy 421 solver':<20}{'s/sample':>10}{'speed-up':>10}{'max rel diff':>14}")
    for row in darcy_solvers(args.samples):
        result["darcy421_solvers"].append(row)
        print(f"{row['solver']:<20}{row['seconds_per_sample']:>10.3f}{row['speedup_vs_spsolve']:>10.2f}"
              f"{row['max_rel_diff']:>14.1e}", flush=True)
    if args.full_darcy:
        row = full_darcy()
        result["full_darcy"] = row
        print(f"\nfull FNO Darcy set: {row['seconds']:.0f} s ({row['seconds_per_sample']:.3f} s/sample, "
              f"2 workers), {row['file_bytes'] / 2**20:.0f} MiB")
    args.json.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
