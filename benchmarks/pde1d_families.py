"""pde1d: per-family generation time at 128 points, the accuracy of the automatic step and grid,
and the measured temporal order of the ETDRK4 core.

For each of the twelve families (default parameters, LeMON's horizon, ``t_end = 2``):

* ``s/sample``: wall time of ``problem.generate`` per sample (mean over ``SAMPLES``);
* ``grid``: the solver grids the automatic rule chose for those samples;
* ``err dt`` (worst over the samples): max |u - u_ref| / max |u_ref| of the default (automatic-step) solution
  against a fixed step of an eighth of the rule's initial step (linear families: exact);
* ``err grid``: the same against a solve on a twice finer solver grid (sampled back);
* ``order`` (on the last sample): log2(e(h) / e(h / 2)), fixed steps ``h = auto step``, ``h / 2`` against ``h / 16``,
  over the first eighth of the horizon (linear families are exact: "exact").

Usage: ``python benchmarks/pde1d_families.py`` (about three minutes on one loaded core);
writes ``benchmarks/pde1d_families.json``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from oplab import problems
from oplab.problems.pde1d import FAMILIES
from oplab.solvers import pde1d as core

SAMPLES = 3


def rel(u, ref) -> float:
    return float(np.max(np.abs(u - ref)) / np.max(np.abs(ref)))


def main() -> None:
    rows = []
    for name, fam in FAMILIES.items():
        p = problems.create("pde1d", family=name)
        t0 = time.perf_counter()
        x, y = p.generate(list(range(SAMPLES)), seed=0)
        per = (time.perf_counter() - t0) / SAMPLES
        err_dt, err_grid, grids = 0.0, 0.0, []
        for i in range(SAMPLES):  # the worst over the samples
            u0, c = x[i, 0], x[i, 1:, 0]
            factor = core.auto_oversample(c, u0, 128, 2.0)
            grids.append(128 * factor)
            h0 = core.auto_step(c, float(u0.min()), float(u0.max()), 128 * factor, 2.0, 1.0, 0.02)[0]
            err_dt = max(err_dt, rel(y[i, 0], core.solve(u0, c, 2.0, dt=min(h0, 0.02) / 8, oversample=factor)))
            err_grid = max(err_grid, rel(y[i, 0], core.solve(u0, c, 2.0, oversample=2 * factor)))
        linear = not any(c[core.TERM_INDEX[k]] for k in core._FLUX + core._REACT + core._NDIFF + ("fp_x",))
        if linear:
            order = "exact"
        else:
            second = c[core.TERM_INDEX["u_tt"]] != 0
            h = min(0.25 / 8 if second else h0, 0.25 / 4)
            u = [core.solve(u0, c, 0.25, dt=step, oversample=factor) for step in (h, h / 2, h / 16)]
            e1, e2 = np.max(np.abs(u[0] - u[2])), np.max(np.abs(u[1] - u[2]))
            order = f"{math.log2(e1 / e2):.2f}" if e2 > 1e-13 else "at round-off"
        rows.append({"family": name, "pretrain": fam.pretrain, "equation": core.equation_text(c),
                     "solver_grid": "/".join(str(g) for g in sorted(set(grids))), "s_per_sample": per,
                     "err_dt": err_dt, "err_grid": err_grid, "order": order})
        r = rows[-1]
        print(f"{name:14s} {r['solver_grid']:>8s} {per:7.3f} {r['err_dt']:9.1e} {r['err_grid']:9.1e} {order:>8s}",
              flush=True)
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps({"resolution": 128, "t_end": 2.0, "samples": SAMPLES, "rows": rows}, indent=1))
    print("family             grid s/sample    err dt  err grid    order")
    for r in rows:
        print(f"{r['family']:14s} {r['solver_grid']:>8s} {r['s_per_sample']:7.3f} {r['err_dt']:9.1e} "
              f"{r['err_grid']:9.1e} {r['order']:>8s}")


if __name__ == "__main__":
    main()
