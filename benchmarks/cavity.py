"""Lid-driven cavity against Ghia, Ghia & Shin (1982), and the solver's cost to a steady state.

    python benchmarks/cavity.py [--sizes 64 128] [--re 100 1000] [--json benchmarks/cavity.json]

For each Reynolds number and grid: :func:`oplab.solvers.incompressible.cavity` from rest,
integrated until the velocity changes by less than ``--tol`` per unit time (relative to
the lid speed; checked every unit of time) or ``--t-max``; then the max deviation of u on
the vertical centreline and of v on the horizontal centreline from Ghia et al. (1982),
"High-Re solutions for incompressible flow using the Navier-Stokes equations and a
multigrid method", J. Comput. Phys. 48, 387-411, Tables I and II (typed in
tests/test_incompressible.py, which this script imports). Also the wall time to reach
a change rate of 1e-4 (the centreline values then agree with the final ones to about
1e-3) and to the end, with one thread (``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_incompressible import ghia_deviation  # noqa: E402

from oplab.solvers.incompressible import cavity  # noqa: E402


def run_case(n: int, re: int, tol: float, t_max: float) -> dict:
    flow = cavity(n, re)
    start = time.perf_counter()
    at_1e4 = None
    rate = np.inf
    while flow.t < t_max - 1e-9:
        rate = flow.run_to_steady(tol=np.inf, t_max=flow.t + 1.0, check_every=1.0)  # one unit of time
        if at_1e4 is None and rate < 1e-4:
            at_1e4 = {"t": flow.t, "seconds": time.perf_counter() - start, "steps": flow.steps,
                      "deviation": ghia_deviation(flow, re)}
        if rate < tol:
            break
    seconds = time.perf_counter() - start
    du, dv = ghia_deviation(flow, re)
    row = {"re": re, "n": n, "t": flow.t, "steps": flow.steps, "rate": rate, "seconds": seconds,
           "ms_per_step": 1e3 * seconds / flow.steps, "max_dev_u": du, "max_dev_v": dv,
           "cell_re": flow.cell_reynolds, "poisson": flow.poisson,
           "max_div_h": float(np.abs(flow.divergence()).max() * flow.dx), "rate_1e-4": at_1e4}
    print(f"Re={re:<5} {n:>4}^2  t={flow.t:6.1f} ({flow.steps:6d} steps, rate {rate:.1e})  "
          f"max|u-Ghia| {du:.4f}  max|v-Ghia| {dv:.4f}  {seconds:7.1f} s ({row['ms_per_step']:.2f} ms/step)"
          + (f"  [rate<1e-4 at t={at_1e4['t']:.0f}: {at_1e4['seconds']:.1f} s]" if at_1e4 else ""), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--re", type=int, nargs="+", default=[100, 1000], choices=[100, 1000])
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--t-max", type=float, nargs=2, default=[40.0, 150.0], help="for Re = 100 and 1000")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("cavity.json"))
    args = parser.parse_args()
    rows = json.loads(args.json.read_text())["rows"] if args.json.exists() else []  # merge with earlier runs
    for re in args.re:
        for n in args.sizes:
            row = run_case(n, re, args.tol, args.t_max[0] if re == 100 else args.t_max[1])
            rows = sorted([r for r in rows if (r["re"], r["n"]) != (re, n)] + [row], key=lambda r: (r["re"], r["n"]))
            result = {"reference": "Ghia, Ghia & Shin 1982, J. Comput. Phys. 48, Tables I and II",
                      "machine": platform.processor() or platform.machine(), "threads": 1,
                      "date": time.strftime("%Y-%m-%d"), "tol": args.tol, "rows": rows}
            args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
