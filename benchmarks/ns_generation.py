"""Navier-Stokes generation: the FNO paper's solver settings against oplab's default.

    python benchmarks/ns_generation.py [--samples 2] [--t-end 50] [--json benchmarks/ns_generation.json]
    python benchmarks/ns_generation.py --reference-only     # compute (and cache) the references only

The FNO benchmark at ``nu = 1e-3``, stored on 64^2, ``T = 50`` (Li et al. 2021,
"Fourier Neural Operator for Parametric PDEs", section 5.3), in one process
with one torch thread (as a generation worker runs; glibc tuned as by
``oplab generate``):

1. Cost, seconds per sample: ``preset=fno-paper`` (forward Euler + Crank-
   Nicolson, ``dt = 1e-4``, solved on 256^2) timed over ``--paper-time`` of
   simulated time for a chunk of 8 and scaled to ``T``; ``preset=default``
   (integrating-factor RK4, CFL time step, solved on 64^2) timed over the
   whole horizon for one chunk (8 samples integrated together) and for one
   sample alone.
   Each timing is the best of ``--repeat`` runs.
2. Agreement, on samples ``0 .. --samples - 1`` of seed 0 (the same ``w0``
   under both presets): the relative L2 difference per recorded time
   ``||w_a(t) - w_b(t)|| / ||w_b(t)||`` on the stored 64^2 grid, max over
   samples and times, between the default and ``fno-paper``, and of each
   against a converged reference (``ifrk4`` on 256^2 at half the default's
   Courant number). The ``fno-paper`` run over the whole horizon (about 45
   minutes for 2 samples here) and the converged reference are cached in
   ``benchmarks/.cache/`` (git-ignored); delete them to recompute.
3. ``--calibrate``: the choice of the automatic solver grid. For the paper's
   three viscosities over ``T = 10`` on samples 0 and 1: the default solver
   (``ifrk4``, automatic step) on several grids ``N``, stored on 64^2,
   against a reference two or more times finer (256^2, or 512^2 for
   ``nu = 1e-5``; ``ifrk4`` at half the default's Courant number); the
   damping rate ``nu (2 pi N / 3)^2`` of each grid's dealiasing cutoff, its
   error and its cost. The rule (``AUTO_DAMPING``) picks the smallest
   multiple of the stored grid with the rate at least 2.5.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from oplab import __version__, problems
from oplab.data.generation import tune_allocator
from oplab.problems.base import rng_for
from oplab.problems.navier_stokes import AUTO_DAMPING, auto_solve_resolution, fno_forcing
from oplab.solvers.spectral import navier_stokes_2d

CACHE = Path(__file__).resolve().parent / ".cache"
BASE = dict(resolution=64, nu=1e-3)


def rel_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[B, T, ...]`` -> ``[B, T]``: ``||a - b|| / ||b||`` per sample and recorded time."""
    a, b = a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1)
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


def paper_reference(samples: int, t_end: float) -> dict:
    """``preset=fno-paper`` on samples ``0 .. samples - 1`` (one batch), cached."""
    path = CACHE / f"ns_fno-paper_nu{BASE['nu']:g}_T{t_end:g}_n{samples}.npz"
    if not path.exists():
        prob = problems.create("navier_stokes", preset="fno-paper", t_end=t_end, **BASE)
        start = time.perf_counter()
        x, y = prob.generate(range(samples), seed=0)
        seconds = time.perf_counter() - start
        CACHE.mkdir(exist_ok=True)
        np.savez(path, x=x, y=y, seconds=seconds, solver=prob.solver_name)
    with np.load(path) as z:
        return {"x": z["x"], "y": z["y"], "seconds": float(z["seconds"]), "solver": str(z["solver"])}


def converged_reference(samples: int, t_end: float) -> np.ndarray:
    """``ifrk4`` on 256^2 at Courant number 0.5 from the same ``w0`` (drawn on 256^2), cached."""
    path = CACHE / f"ns_ifrk4-256-c0.5_nu{BASE['nu']:g}_T{t_end:g}_n{samples}.npy"
    if not path.exists():
        prob = problems.create("navier_stokes", solve_resolution=256, t_end=t_end, **BASE)
        w0 = torch.from_numpy(np.stack([prob._sample_fine(rng_for(0, i)) for i in range(samples)]))
        traj = navier_stokes_2d(w0, torch.from_numpy(fno_forcing(256)), BASE["nu"], t_end, None,
                                record_times=prob.output_times(), scheme="ifrk4", courant=0.5)
        CACHE.mkdir(exist_ok=True)
        np.save(path, traj[:, :, None, ::4, ::4].numpy())
    return np.load(path)


CALIBRATION = {1e-3: ([64, 128], 256), 1e-4: ([64, 128, 192], 256), 1e-5: ([128, 192, 256, 320], 512)}


def calibrate(t_end: float = 10.0, samples: int = 2) -> list[dict]:
    """Errors of the default solver on several grids against a finer reference (see the docstring)."""
    rows = []
    for nu, (grids, fine) in CALIBRATION.items():
        path = CACHE / f"ns_ifrk4-{fine}-c0.5_nu{nu:g}_T{t_end:g}_n{samples}.npy"
        ref_prob = problems.create("navier_stokes", resolution=64, nu=nu, t_end=t_end, solve_resolution=fine)
        if not path.exists():
            w0 = torch.from_numpy(np.stack([ref_prob._sample_fine(rng_for(0, i)) for i in range(samples)]))
            traj = navier_stokes_2d(w0, torch.from_numpy(fno_forcing(fine)), nu, t_end, None,
                                    record_times=ref_prob.output_times(), scheme="ifrk4", courant=0.5)
            CACHE.mkdir(exist_ok=True)
            np.save(path, traj[:, :, None, :: fine // 64, :: fine // 64].numpy())
        ref = np.load(path)
        for N in grids:
            prob = problems.create("navier_stokes", resolution=64, nu=nu, t_end=t_end, solve_resolution=N)
            start = time.perf_counter()
            _, y = prob.generate(range(samples), seed=0)
            seconds = (time.perf_counter() - start) / samples
            err = rel_l2(y, ref).max(axis=0)
            rows.append({"nu": nu, "solve_resolution": N, "reference": fine,
                         "damping": nu * (2 * np.pi * N / 3) ** 2, "auto": N == auto_solve_resolution(64, nu),
                         "max_error": float(err.max()), "error_at_t1": float(err[0]),
                         "error_at_end": float(err[-1]), "seconds_per_sample": seconds})
            row = rows[-1]
            print(f"  nu={nu:g} N={N:<4} rate {row['damping']:6.2f}{' (auto)' if row['auto'] else '       '}"
                  f"  max {row['max_error']:.1e}  t=1 {row['error_at_t1']:.1e}  t={t_end:g} "
                  f"{row['error_at_end']:.1e}  {seconds:.1f} s/sample", flush=True)
    return rows


def seconds_per_sample(prob, count: int, scale: float = 1.0, repeat: int = 2) -> float:
    """Wall seconds per sample of ``prob.generate`` on ``count`` samples (one batch), the best
    of ``repeat`` runs (the machine may be shared), times ``scale``."""
    prob.generate(range(min(count, 2)), seed=0)  # warm-up: caches, imports
    best = float("inf")
    for r in range(repeat):
        start = time.perf_counter()
        prob.generate(range(count), seed=1 + r)
        best = min(best, time.perf_counter() - start)
    return best / count * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2, help="samples compared against fno-paper")
    parser.add_argument("--t-end", type=float, default=50.0)
    parser.add_argument("--paper-time", type=float, default=0.05, help="simulated time of the fno-paper timing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2, help="timings: the best of this many runs")
    parser.add_argument("--reference-only", action="store_true")
    parser.add_argument("--calibrate", action="store_true", help="also measure the automatic grid's errors (section 3)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/ns_generation.json"))
    args = parser.parse_args()
    tune_allocator()  # as `oplab generate` and its workers do
    torch.set_num_threads(args.threads)
    T = args.t_end

    paper = paper_reference(args.samples, T)
    converged = converged_reference(args.samples, T)
    if args.reference_only:
        print(f"references cached in {CACHE}")
        return

    default = problems.create("navier_stokes", t_end=T, **BASE)
    x, y = default.generate(range(args.samples), seed=0)
    rows = []
    short = problems.create("navier_stokes", preset="fno-paper", t_end=args.paper_time,
                            record_every=args.paper_time, **BASE)
    paper_cost = seconds_per_sample(short, short.chunk_size, scale=T / args.paper_time, repeat=args.repeat)
    rows.append({"settings": "preset=fno-paper", "solver": short.solver_name, "batch": short.chunk_size,
                 "seconds_per_sample": paper_cost,
                 "note": f"timed over t = {args.paper_time:g} for a chunk of {short.chunk_size}, scaled to T = {T:g}"})
    for count in (default.chunk_size, 1):
        rows.append({"settings": "preset=default" + ("" if count == default.chunk_size else ", one sample alone"),
                     "solver": default.solver_name, "batch": count,
                     "seconds_per_sample": seconds_per_sample(default, count, repeat=args.repeat),
                     "note": "a whole chunk, whole horizon" if count == default.chunk_size else "whole horizon"})
    for row in rows:
        row["speedup_vs_fno_paper"] = paper_cost / row["seconds_per_sample"]

    agreement = {
        "default_vs_fno_paper": float(rel_l2(y, paper["y"]).max()),
        "default_vs_converged": float(rel_l2(y, converged).max()),
        "fno_paper_vs_converged": float(rel_l2(paper["y"], converged).max()),
        "inputs_default_vs_fno_paper": float(rel_l2(x[:, None], paper["x"][:, None]).max()),
        "per_time_default_vs_fno_paper": rel_l2(y, paper["y"]).max(axis=0).tolist(),
        "per_time_default_vs_converged": rel_l2(y, converged).max(axis=0).tolist(),
        "per_time_fno_paper_vs_converged": rel_l2(paper["y"], converged).max(axis=0).tolist(),
        "fno_paper_run_seconds": paper["seconds"],
        "samples": args.samples,
    }
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "torch_threads": args.threads, "oplab": __version__, "torch": torch.__version__,
        "problem": {"resolution": 64, "nu": BASE["nu"], "t_end": T},
        "cost": rows, "agreement": agreement,
    }
    print(f"navier_stokes 64^2, nu = {BASE['nu']:g}, T = {T:g}, {args.threads} torch thread(s)\n")
    print(f"{'settings':<34}{'batch':>6}{'s/sample':>11}{'speed-up':>10}")
    for row in rows:
        print(f"{row['settings']:<34}{row['batch']:>6}{row['seconds_per_sample']:>11.3f}"
              f"{row['speedup_vs_fno_paper']:>10.0f}")
    print(f"\nrelative L2 per recorded time, max over {args.samples} samples and {len(y[0])} times:")
    print(f"  default   vs fno-paper : {agreement['default_vs_fno_paper']:.2e}")
    print(f"  default   vs converged : {agreement['default_vs_converged']:.2e}")
    print(f"  fno-paper vs converged : {agreement['fno_paper_vs_converged']:.2e}")
    print(f"  inputs (w0) default vs fno-paper: {agreement['inputs_default_vs_fno_paper']:.2e}")
    if args.calibrate:
        print(f"\nautomatic grid (rate nu (2 pi N / 3)^2 >= {AUTO_DAMPING:g}), T = 10, relative L2 per recorded time:")
        result["grid_calibration"] = calibrate()
    args.json.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
