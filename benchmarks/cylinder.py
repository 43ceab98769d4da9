"""Flow past a circular cylinder at Re = 100: Strouhal number and mean drag against the literature.

    python benchmarks/cylinder.py [--res 8 12 16] [--lx 30 --ly 30 --xc 10] [--t-end 80 --t-avg 40]

Set-up (one, unconfined-like): cylinder of diameter D = 1 at (xc, ly / 2) in the box
``[0, lx] x [0, ly]`` (D units), uniform inflow U = 1 on the left, outflow on the right,
free-slip top and bottom (blockage D / ly), nu = U D / 100; ``--res`` cells per diameter
(the staircase disk of :func:`oplab.solvers.incompressible.disk_mask`). The start is
the uniform stream plus a small off-axis vertical-velocity bump behind the cylinder,
so shedding sets in within a few periods. From ``t = --t-avg`` to ``--t-end``:

* Strouhal number ``St = f D / U`` from the lift coefficient's upward zero crossings
  (mean period) and, as a check, from the peak of its Hann-windowed spectrum
  (zero-padded 16x, parabolic peak interpolation);
* mean drag coefficient over whole shedding periods, lift amplitude.

References: Williamson 1996, "Vortex dynamics in the cylinder wake", Annu. Rev. Fluid
Mech. 28, 477-539 (St = 0.164-0.166 at Re = 100); Park, Kwon & Choi 1998, KSME Int. J.
12, 1200-1205 (mean Cd = 1.33, Cl amplitude 0.33 at Re = 100; published mean drag
spans about 1.32-1.40). The forces are the momentum the discrete equations pass to the
staircase body (see the solver's docstring; equal to a control-volume balance, tested).
Writes ``benchmarks/cylinder.json`` (rows merged by set-up) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from oplab.solvers.incompressible import BC, IncompressibleFlow, disk_mask  # noqa: E402

WILLIAMSON_ST = (0.164, 0.166)
PARK_CD = 1.33


def strouhal(t: np.ndarray, cl: np.ndarray) -> tuple[float, float, np.ndarray]:
    """St from the upward zero crossings (D = U = 1) and from the spectrum; the crossing times."""
    up = np.flatnonzero((cl[:-1] < 0) & (cl[1:] >= 0))
    crossings = t[up] - cl[up] * (t[up + 1] - t[up]) / (cl[up + 1] - cl[up])
    st_zero = 1.0 / np.diff(crossings).mean() if crossings.size >= 2 else float("nan")
    grid = np.linspace(t[0], t[-1], 4096)  # the steps vary a little: resample uniformly
    sig = np.interp(grid, t, cl)
    sig = (sig - sig.mean()) * np.hanning(sig.size)
    spec = np.abs(np.fft.rfft(sig, n=16 * sig.size))
    freq = np.fft.rfftfreq(16 * sig.size, d=grid[1] - grid[0])
    k = int(np.argmax(spec[1:])) + 1
    a, b, c = np.log(spec[k - 1 : k + 2])
    shift = 0.5 * (a - c) / (a - 2 * b + c)
    return float(st_zero), float(freq[k] + shift * (freq[1] - freq[0])), crossings


def run_case(res: int, lx: float, ly: float, xc: float, t_end: float, t_avg: float) -> dict:
    D, U, yc = 1.0, 1.0, 0.5 * ly
    nx, ny = round(lx * res), round(ly * res)
    start = time.perf_counter()
    mask = disk_mask(nx, ny, lx, ly, (xc, yc), D / 2)
    flow = IncompressibleFlow(nx, ny, lx, ly, nu=U * D / 100, left=BC.inflow(U), right="outflow",
                              bottom="slip", top="slip", mask=mask)
    setup = time.perf_counter() - start
    flow.set_velocity(lambda x, y: U + 0 * x,
                      lambda x, y: 0.3 * np.exp(-((x - xc - 1.5) ** 2 + (y - yc - 0.3) ** 2)))
    hist = []
    flow.run(t_end, callback=lambda f: hist.append((f.t, *f.coefficients(U, D))))
    seconds = time.perf_counter() - start
    t, cd, cl = np.array(hist).T
    late = t >= t_avg
    st_zero, st_fft, crossings = strouhal(t[late], cl[late])
    span = (t >= crossings[0]) & (t <= crossings[-1])
    w = np.gradient(t)[span]
    row = {
        "res": res, "lx": lx, "ly": ly, "xc": xc, "nx": nx, "ny": ny, "cells": nx * ny,
        "solid_cells": int(mask.sum()), "blockage": D / ly, "t_end": t_end, "t_avg": t_avg,
        "steps": flow.steps, "seconds": seconds, "setup_seconds": setup, "ms_per_step": 1e3 * seconds / flow.steps,
        "periods_averaged": int(crossings.size - 1), "st_zero_crossings": st_zero, "st_fft": st_fft,
        "cd_mean": float(np.sum(cd[span] * w) / w.sum()), "cd_amplitude": float(0.5 * np.ptp(cd[span])),
        "cl_amplitude": float(0.5 * np.ptp(cl[late])), "cl_rms": float(np.sqrt(np.mean(cl[span] ** 2))),
        "st_error_vs_williamson": float(st_zero / np.mean(WILLIAMSON_ST) - 1),
        "cd_error_vs_park": float(np.sum(cd[span] * w) / w.sum() / PARK_CD - 1),
    }
    print(f"D/h={res:<3} {nx}x{ny} ({lx:g}Dx{ly:g}D, blockage {D / ly:.3f}): St {st_zero:.4f} "
          f"(fft {st_fft:.4f}, {row['st_error_vs_williamson']:+.1%} vs 0.165)  mean Cd {row['cd_mean']:.3f} "
          f"({row['cd_error_vs_park']:+.1%} vs 1.33)  Cl amp {row['cl_amplitude']:.3f}  "
          f"{flow.steps} steps, {seconds:.0f} s", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--res", type=int, nargs="+", default=[8, 12, 16], help="cells per diameter")
    parser.add_argument("--lx", type=float, default=30.0)
    parser.add_argument("--ly", type=float, default=30.0)
    parser.add_argument("--xc", type=float, default=10.0)
    parser.add_argument("--t-end", type=float, default=80.0)
    parser.add_argument("--t-avg", type=float, default=40.0)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("cylinder.json"))
    args = parser.parse_args()
    rows = json.loads(args.json.read_text())["rows"] if args.json.exists() else []  # merge with earlier runs
    for res in args.res:
        row = run_case(res, args.lx, args.ly, args.xc, args.t_end, args.t_avg)
        key = lambda r: (r["res"], r["lx"], r["ly"], r["xc"])
        rows = sorted([r for r in rows if key(r) != key(row)] + [row], key=key)
        args.json.write_text(json.dumps({
            "references": {"strouhal": "Williamson 1996, Annu. Rev. Fluid Mech. 28: 0.164-0.166 at Re = 100",
                           "drag": "Park, Kwon & Choi 1998, KSME Int. J. 12: mean Cd 1.33 at Re = 100"},
            "machine": platform.processor() or platform.machine(), "threads": 1,
            "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1) + "\n")
    print(f"\n{'D/h':>4} {'grid':>10} {'blockage':>8} {'St':>7} {'St fft':>7} {'Cd':>6} {'Cl amp':>6} {'s':>6}")
    for r in rows:
        print(f"{r['res']:>4} {r['nx']:>5}x{r['ny']:<4} {r['blockage']:8.3f} {r['st_zero_crossings']:7.4f} "
              f"{r['st_fft']:7.4f} {r['cd_mean']:6.3f} {r['cl_amplitude']:6.3f} {r['seconds']:6.0f}")


if __name__ == "__main__":
    main()
