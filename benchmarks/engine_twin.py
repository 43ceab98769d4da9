"""An engine digital twin: a deep ensemble of sequence DeepONets, its calibration, its speed, and
parameter identification (issue 16, item 2).

    OMP_NUM_THREADS=1 python benchmarks/engine_twin.py [--work DIR] [--members 5] [--minutes 2]

Set-up (Kumar, Goswami, Smith & Karniadakis 2023, arXiv:2304.00567, at a CPU size): the ``engine``
problem (Wahlstrom & Eriksson 2011 mean-value diesel model with EGR and VGT) maps 10 s of actuator
sequences (fuel, EGR and VGT commands, engine speed; 201 samples) to the eight states. A
``seq_deeponet`` (GRU branch over the input sequences, trunk on t) is trained ``--members`` times
with different seeds (``oplab train --members``: a deep ensemble), each for ``--minutes`` with
the per-channel relative L2 loss; the best checkpoint of each member is chosen on validation
sequences, and everything is scored on held-out sequences:

1. relative L2 error of the ensemble mean, per state (the paper: at most 6.5 %) and of each member;
2. calibration: coverage of mean +- k sigma for k = 1, 2, 3 (the figure: benchmarks/figures/
   engine_calibration.png), and the error of the mean + 2 sigma bound (the paper: worst case 12 %);
3. speed: the ensemble's prediction of one trajectory against one solver run (LSODA);
4. parameter identification (:func:`oplab.inverse.identify.identify_engine_parameters`): an EGR
   valve fouled to 85 % of its area, and a VGT 10 % larger, recovered from 3 s of noisy measured
   states (1 % and 2 % noise, five noise draws each).
Writes the tables and ``benchmarks/engine_twin.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import timing

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/oplab-engine"))
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget per member")
    parser.add_argument("--json", type=Path, default=ROOT / "engine_twin.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    import oplab
    from oplab import problems
    from oplab.data.generation import generate
    from oplab.eval.ensemble import Ensemble, calibrate, train_ensemble
    from oplab.solvers import engine as E
    from oplab.train import run_or_resume
    from oplab.train.config import DataConfig, RunConfig, TrainConfig
    from oplab.train.data import Part, recorded_split
    from oplab.rundir import RunDir

    prob = problems.create("engine")
    total = args.n_train + args.n_test
    data_path = args.work / "engine.h5"
    tic = time.perf_counter()
    generate(prob, total, data_path, seed=0, resume=True)
    print(f"data: {total} sequences ({time.perf_counter() - tic:.0f} s)", flush=True)

    model = {"name": "seq_deeponet", "branch": "gru", "hidden": 128, "branch_depth": 2, "trunk_layers": [128, 128],
             "latent": 128, "coord_scale": [0.1], "fourier_features": [1.0, 2.0, 4.0, 8.0]}
    cfg = RunConfig(data=DataConfig(train=str(data_path), n_train=args.n_train, n_val=args.n_train // 10,
                                    n_test=args.n_test),
                    model=model,
                    train=TrainConfig(epochs=5000, budget_minutes=args.minutes, batch_size=32, lr=2e-3,
                                      loss="channel_l2", scheduler="cosine", eval_every=10, device="cpu",
                                      plot_samples=2, seed=0),
                    out=str(args.work / "ensemble"))
    tic = time.perf_counter()
    trained = train_ensemble(cfg, args.members, log=lambda s: None)
    train_seconds = time.perf_counter() - tic
    print(f"ensemble of {args.members} trained ({train_seconds:.0f} s)", flush=True)

    # 1-2. errors and calibration on the test sequences
    report = calibrate(args.work / "ensemble", data_path)
    shutil.copy(args.work / "ensemble" / "calibration.png", ROOT / "figures" / "engine_calibration.png")
    ens = Ensemble(args.work / "ensemble")
    test = recorded_split(RunDir.open(args.work / "ensemble" / "member-0")).tests[0]
    data = Part(test.file, test.indices, None).load()
    x, y = data.x.numpy(), data.y.numpy().astype(np.float64)
    mean, std = ens.predict(x)
    per_state = {}
    for c, name in enumerate(E.STATES):
        err = np.linalg.norm(mean[:, c] - y[:, c], axis=1) / np.linalg.norm(y[:, c], axis=1)
        per_state[name] = {"mean": float(err.mean()), "worst": float(err.max())}
    print("\n| state | relative L2 of the ensemble mean (mean / worst sequence) | coverage 1 / 2 / 3 sigma |")
    print("|---|---|---|")
    for name, e in per_state.items():
        cov = report["coverage_per_channel"][name]
        print(f"| {name} | {e['mean']:.4f} / {e['worst']:.4f} | {cov['1']:.2f} / {cov['2']:.2f} / {cov['3']:.2f} |")
    print(f"| all | {report['relative_l2_mean']:.4f} (members {', '.join(f'{m:.4f}' for m in report['relative_l2_members'])}) "
          f"| {report['coverage']['1']:.2f} / {report['coverage']['2']:.2f} / {report['coverage']['3']:.2f} "
          f"(Gaussian 0.68 / 0.95 / 1.00) |")
    print(f"mean + 2 sigma bound: relative L2 {report['upper_2sigma_relative_l2']['mean']:.4f} "
          f"(worst sequence {report['upper_2sigma_relative_l2']['worst']:.4f})", flush=True)

    # a grid operator at one member's budget, for reference: FNO-1D (local in time)

    fno_cfg = dataclasses.replace(cfg, model={"name": "fno", "modes": [32], "width": 64}, out=str(args.work / "fno"))
    run_or_resume(fno_cfg, log=lambda s: None)
    p_fno = oplab.load(args.work / "fno")(x)
    fno_per_state = {name: float((np.linalg.norm(p_fno[:, c] - y[:, c], axis=1) / np.linalg.norm(y[:, c], axis=1)).mean())
                     for c, name in enumerate(E.STATES)}
    print("FNO-1D (one run, same budget): " + ", ".join(f"{k} {v:.4f}" for k, v in fno_per_state.items()), flush=True)

    # 3. speed: one trajectory (medians of interleaved calls)
    runs = timing.interleaved({"ensemble": lambda _: ens.predict(x[:1]),
                               "solver": lambda _: prob.solve(x[0].astype(np.float64))}, None, rounds=3, repeats=5)
    timings = {name: statistics.median(v) for name, v in runs.items()}
    print(f"one 10 s trajectory: ensemble of {args.members} {1e3 * timings['ensemble']:.1f} ms, solver "
          f"{1e3 * timings['solver']:.0f} ms ({timings['solver'] / timings['ensemble']:.0f}x)", flush=True)

    # 4. parameter identification from noisy measurements
    identification = _identify(E)
    out = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
           "torch_threads": 1, "args": {k: str(v) for k, v in vars(args).items()}, "model": model,
           "train_seconds": train_seconds, "best_val": trained["best_val"], "per_state": per_state,
           "calibration": report, "fno_per_state": fno_per_state, "seconds_per_trajectory": timings, "identification": identification}
    args.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


def _identify(E) -> dict:
    """The identification table: each case five noise draws at 1 % and 2 %."""
    from oplab.inverse.identify import identify_engine_parameters

    t = np.linspace(0.0, 3.0, 301)
    u = np.empty((4, t.size))
    u[0] = 120.0 + 40.0 * (t > 1.0)
    u[1] = np.where(t < 0.5, 30.0, np.where(t < 2.0, 70.0, 40.0))
    u[2] = np.where(t < 1.5, 40.0, 60.0)
    u[3] = 1500.0
    base = E.DEFAULT_PARAMS
    cases = {"A_egrmax": {"A_egrmax": 0.85}, "A_vgtmax": {"A_vgtmax": 1.1},
             "A_egrmax + A_vgtmax": {"A_egrmax": 0.85, "A_vgtmax": 1.1}}
    table = {}
    print("\n| unknown (true / published) | noise | estimate / true - 1 (five draws: mean, worst) | seconds per fit |")
    print("|---|---|---|---|")
    for label, factors in cases.items():
        true = base.with_values(**{k: f * getattr(base, k) for k, f in factors.items()})
        x = E.simulate(u, t, true, rtol=1e-10)
        for noise in (0.01, 0.02):
            errors, seconds = {k: [] for k in factors}, []
            for seed in range(5):
                rng = np.random.default_rng(seed)
                y = x[:5] + noise * np.sqrt(np.mean(x[:5] ** 2, axis=1))[:, None] * rng.standard_normal((5, t.size))
                tic = time.perf_counter()
                est = identify_engine_parameters(t, y, u, names=tuple(factors), noise=noise)
                seconds.append(time.perf_counter() - tic)
                for k in factors:
                    errors[k].append(est[k] / getattr(true, k) - 1.0)
            row = {k: {"mean": float(np.mean(v)), "worst": float(np.max(np.abs(v)))} for k, v in errors.items()}
            table[f"{label} @ {noise:.0%}"] = {"errors": row, "seconds": float(np.mean(seconds))}
            text = "; ".join(f"{k}: {100 * r['mean']:+.2f} %, {100 * r['worst']:.2f} %" for k, r in row.items())
            ratios = ", ".join(f"{f:g}" for f in factors.values())
            print(f"| {label} ({ratios}) | {noise:.0%} | {text} | {np.mean(seconds):.2f} |", flush=True)
    return table


if __name__ == "__main__":
    main()
