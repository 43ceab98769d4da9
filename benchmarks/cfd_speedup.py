"""Solver against operator for CFDBench's flows: time per frame of a 100-frame trajectory.

    OMP_NUM_THREADS=1 python benchmarks/cfd_speedup.py [--frames 100] [--problems cavity tube cylinder barrier dam]

For each problem (subset ``bc``, defaults otherwise, 64x64 frames 0.1 apart): the reference solver
(``oplab.solvers.incompressible``) makes one ``frames``-frame trajectory (``t_end = frames * 0.1``) and
its wall time is divided by the frame count; an autoregressive operator (one-step, window 1) rolls out
the same number of frames from the first state, batch 1 and batch 32 trajectories at once, through
``oplab.eval.rollout.rollout`` under ``torch.inference_mode``. Operators: FNO (modes 12, width 32,
the FNO paper's 2D size) and U-Net (oplab's defaults for the grid), untrained (inference time does
not depend on the weights; accuracy is the suites' job). One torch thread. Writes
``benchmarks/cfd_speedup.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--problems", nargs="*", default=["cavity", "tube", "cylinder", "barrier"])
    parser.add_argument("--out", type=Path, default=HERE / "cfd_speedup.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from oplab import models, problems
    from oplab.eval.rollout import rollout

    rows = []
    for name in args.problems:
        problem = problems.create(name, resolution=64, subset="bc", t_end=round(args.frames * 0.1, 6))
        rng = np.random.default_rng(0)
        a = problem.sample_inputs(rng)
        tic = time.perf_counter()
        u = problem.solve(a)
        solver = (time.perf_counter() - tic) / args.frames
        c, sizes = a.shape[0], a.shape[1:]
        coords = tuple(torch.linspace(0, 1, n) for n in sizes)
        for model_name, kw in [("fno", {"modes": [12, 12], "width": 32}), ("unet", {})]:
            torch.manual_seed(0)
            model = models.create(model_name, in_channels=c, out_channels=c, **kw).eval()
            for batch in (1, 32):
                start = torch.as_tensor(a, dtype=torch.float32)[None, None].expand(batch, 1, *a.shape).contiguous()
                with torch.inference_mode():
                    rollout(model, start, 2, coords, 1)  # warm-up
                    tic = time.perf_counter()
                    rollout(model, start, args.frames, coords, 1)
                    per_frame = (time.perf_counter() - tic) / args.frames / batch
                rows.append({"problem": name, "frames": args.frames, "solver_s_per_frame": solver,
                             "model": model_name, "batch": batch, "model_s_per_frame": per_frame,
                             "speedup": solver / per_frame, "trajectory_shape": list(u.shape)})
                print(f"{name:<9} solver {solver * 1e3:8.2f} ms/frame | {model_name:<5} batch {batch:>2} "
                      f"{per_frame * 1e3:7.2f} ms/frame | speed-up {solver / per_frame:6.1f}x", flush=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "threads": 1,
                                    "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
