"""Dam break (collapse of a square water column) against Martin & Moyce (1952), on finer grids than the test.

    python benchmarks/dam_break.py [--res 12 24 48] [--box 5]

Set-up (oplab.solvers.free_surface.FreeSurfaceFlow): a column ``[0, a] x [0, a]`` of water
(a = 2.25 in = 0.05715 m, Martin & Moyce's column; water 998.2 kg/m^3, 1.0e-3 Pa s; air 1.204
kg/m^3, 1.8e-5 Pa s; g = 9.81 m/s^2) released at rest at the left wall of a closed ``box a x 2a``
box with no-slip walls; ``--res`` cells per ``a``. The surge front ``Z = x_front / a`` (the water of
the floor row of cells, packed from the wall) is recorded at Martin & Moyce's times
``T = t sqrt(2 g / a)``.

Reference: Martin & Moyce (1952), "An experimental study of the collapse of liquid columns on a
rigid horizontal plane", Phil. Trans. R. Soc. A 244, 312-324, the square-column series (n^2 = 1,
a = 2.25 in) as the table is reproduced in many later papers (quoted, not re-read from the
original here); and Ritter's (1892) shallow-water front ``Z = 1 + sqrt(2) T`` as an upper bound.
MM's front is known to lag computed ones early on (the partition took time to remove).

Prints a table ``Z_sim`` vs ``Z_MM`` at the data's ``T`` and writes
``benchmarks/.cache/dam_break.json`` (one row per resolution, merged with earlier runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from oplab.solvers.free_surface import FreeSurfaceFlow  # noqa: E402

A, G = 0.05715, 9.81
MM_T = [0.41, 0.84, 1.19, 1.43, 1.63, 1.83, 1.98, 2.20, 2.32, 2.51, 2.65, 2.83, 2.98, 3.11, 3.33]
MM_Z = [1.11, 1.22, 1.44, 1.67, 1.89, 2.11, 2.33, 2.56, 2.78, 3.00, 3.22, 3.44, 3.67, 3.89, 4.11]


def run(res: int, box: float) -> dict:
    nx, ny = round(box * res), 2 * res
    flow = FreeSurfaceFlow(nx, ny, box * A, 2 * A, rho=(998.2, 1.204), mu=(1.0e-3, 1.8e-5))
    flow.set_alpha(lambda x, y: (x < A) & (y < A))
    scale = math.sqrt(2 * G / A)
    times = [T for T, Z in zip(MM_T, MM_Z) if Z < box - 0.3]  # the front still clear of the far wall
    start = time.perf_counter()
    rec = flow.run(times[-1] / scale, np.array(times) / scale)
    seconds = time.perf_counter() - start
    z = [float(a[:, 0].sum()) * flow.dx / A for a in rec.alpha]
    dev = [zs - zm for zs, zm in zip(z, MM_Z)]
    v0 = A * A
    return {"res": res, "box": box, "nx": nx, "ny": ny, "T": times, "Z_mm": MM_Z[:len(times)], "Z_sim": z,
            "deviation": dev, "max_abs_deviation": max(abs(d) for d in dev),
            "rms_deviation": float(np.sqrt(np.mean(np.square(dev)))),
            "below_ritter": bool(all(zs <= 1 + math.sqrt(2) * T for zs, T in zip(z, times))),
            "volume_drift": float(np.abs(rec.volume - v0).max() / v0), "alpha_excursion": flow.alpha_excursion,
            "steps": int(rec.steps), "seconds": seconds, "ms_per_step": 1e3 * seconds / rec.steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--res", type=int, nargs="+", default=[12, 24, 48], help="cells per column width a")
    parser.add_argument("--box", type=float, default=5.0, help="box length in units of a (height 2a)")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name(".cache") / "dam_break.json")
    args = parser.parse_args()
    rows = json.loads(args.json.read_text())["rows"] if args.json.exists() else []
    for res in args.res:
        row = run(res, args.box)
        print(f"a = {res} cells ({row['nx']}x{row['ny']}): max |Z_sim - Z_MM| {row['max_abs_deviation']:.3f}, "
              f"rms {row['rms_deviation']:.3f}, below Ritter: {row['below_ritter']}, volume drift "
              f"{row['volume_drift']:.1e}, {row['steps']} steps, {row['seconds']:.1f} s", flush=True)
        key = lambda r: (r["res"], r["box"])
        rows = sorted([r for r in rows if key(r) != key(row)] + [row], key=key)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "reference": "Martin & Moyce 1952, Phil. Trans. R. Soc. A 244, 312-324 (n^2 = 1, a = 2.25 in)",
            "machine": platform.processor() or platform.machine(), "threads": 1,
            "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1) + "\n")
    shown = [r for r in rows if r["box"] == args.box]
    print(f"\n{'T':>5} {'Z_MM':>5} {'Ritter':>6} " + " ".join(f"{'a=' + str(r['res']):>13}" for r in shown))
    for k, T in enumerate(MM_T):
        cells = [f"{r['Z_sim'][k]:6.3f} ({r['deviation'][k]:+.2f})" if k < len(r["T"]) else " " * 13 for r in shown]
        print(f"{T:5.2f} {MM_Z[k]:5.2f} {1 + math.sqrt(2) * T:6.2f} " + " ".join(cells))


if __name__ == "__main__":
    main()
