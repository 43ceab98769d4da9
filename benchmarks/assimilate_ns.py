"""Data assimilation on 2D Navier-Stokes at CPU size: open loop, a learned observer, EnKFs (issue 18, item 2).

    OMP_NUM_THREADS=1 python benchmarks/assimilate_ns.py [--work DIR] [--minutes 10] [--observer-minutes 10]

Set-up: 2D Navier-Stokes in vorticity form on the unit torus (``navier_stokes`` problem: the FNO
paper's forcing ``0.1 (sin 2 pi (x + y) + cos 2 pi (x + y))``, GRF initial vorticity, Li et al. 2021,
section 5.3) at ``nu = --nu`` (1e-3, the paper's first case) on a 32 x 32 grid (the default solver
grid for this viscosity, integrating-factor RK4 with a CFL step), recorded every ``--every`` time
units to ``t = --steps * --every`` (20 states). The initial state is unknown: every estimator starts
from the prior mean (zero) and sees, after each step, noisy vorticity at a regular 8 x 8 lattice of
64 sensors (every 4th node; noise std ``--noise`` times the data's standard deviation).

1. predictor ``G``: an autoregressive FNO-2D (one state to the next; modes 12 x 12, width 20, unroll 2
   with the pushforward trick) trained through ``oplab.train`` on ``--n-train`` trajectories for
   ``--minutes`` of wall clock (``best`` on the last 10% of them, the validation trajectories);
2. learned observer (:mod:`oplab.inverse.assimilation`, the recursive form of semilinear neural
   operators): a small FNO-2D correction (modes 10 x 10, width 16) on [forecast, innovation spread by
   periodic bilinear interpolation between the sensors, sensor mask], trained for
   ``--observer-minutes`` on the same trajectories with simulated observations, through the whole
   window, ``G`` frozen (batches of 8, Adam 2e-3 with a cosine schedule over the planned epochs);
3. EnKF over the solver: ``--members`` draws of the prior GRF, each forecast by the data's own solver,
   perturbed observations, inflation ``--inflation``, Gaspari-Cohn localisation; the localisation
   radius is chosen among ``--localizations`` on ``--n-tune`` validation trajectories (never on the
   test ones); then the same EnKF (same draws, observations, seeds and settings) with ``G`` as its
   forecast model (EnKF over the surrogate), the two interleaved trajectory by trajectory so their
   times compare on a loaded machine;
4. references: the open loop (``G`` from the zero guess, no observations) and ``G``'s rollout from
   the TRUE initial state (what the predictor alone achieves when the state is known).

Scored on ``--n-test`` held-out trajectories: relative L2 error ``||w_est - w|| / ||w||`` per time
(mean over trajectories) and wall time per trajectory. Writes the table and
``benchmarks/assimilate_ns.json``. ``--quick``: a smoke run (tiny sizes, seconds of training).
``--observer-only``: reuse the saved predictor (trained only if missing) and skip the EnKFs (e.g. a
longer observer training: ``--observer-only --observer-minutes 20 --json OTHER.json``).

The training budgets are wall clock: on a machine loaded by other jobs they buy fewer epochs (the
JSON records how many), and the times per trajectory are inflated by the load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import timing  # benchmarks/timing.py (the script's folder is on the path)
from assimilation_curves import print_results  # benchmarks/assimilation_curves.py

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/oplab-assimilate-ns"))
    parser.add_argument("--n", type=int, default=32, help="grid (n x n)")
    parser.add_argument("--nu", type=float, default=1e-3)
    parser.add_argument("--every", type=float, default=1.0, help="time between observed states")
    parser.add_argument("--steps", type=int, default=20, help="states in the window")
    parser.add_argument("--sensors", type=int, default=8, help="sensor lattice: s x s")
    parser.add_argument("--n-train", type=int, default=240)
    parser.add_argument("--n-test", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=10.0, help="predictor training budget (wall clock)")
    parser.add_argument("--observer-minutes", type=float, default=10.0, help="observer training budget (wall clock)")
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--inflation", type=float, default=1.05)
    parser.add_argument("--localizations", type=str, default="none,4,8",
                        help="Gaspari-Cohn half-widths (grid spacings) tried on validation trajectories")
    parser.add_argument("--n-tune", type=int, default=4, help="validation trajectories that choose the localisation")
    parser.add_argument("--json", type=Path, default=ROOT / "assimilate_ns.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes")
    parser.add_argument("--observer-only", action="store_true",
                        help="reuse the saved predictor (train it only if missing), skip the EnKFs")
    args = parser.parse_args()
    if args.quick:
        args.n_train, args.n_test, args.steps, args.minutes, args.observer_minutes = 16, 4, 4, 0.1, 0.1
        args.members, args.n_tune, args.work = 8, 2, args.work.with_name(args.work.name + "-quick")
        if args.json == ROOT / "assimilate_ns.json":
            args.json = args.work / "assimilate_ns.json"
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    import oplab
    from oplab import models, problems
    from oplab.data.generation import generate
    from oplab.inverse.assimilation import (Observer, assimilate, enkf, lattice_sensors, simulate_observations,
                                            torch_forecast, train_observer)
    from oplab.problems.navier_stokes import fno_forcing
    from oplab.solvers.spectral import navier_stokes_2d
    from oplab.train import run_or_resume
    from oplab.train.config import DataConfig, RunConfig, TrainConfig
    from oplab.train.data import load

    n, dt = args.n, args.every
    t_end = args.steps * dt
    prob = problems.create("navier_stokes", n, nu=args.nu, t_end=t_end, record_every=dt)
    total = args.n_train + args.n_test
    data_path = args.work / f"ns{n}_nu{args.nu:g}_T{t_end:g}.h5"
    tic = time.perf_counter()
    generate(prob, total, data_path, seed=0, resume=True)
    data_s = time.perf_counter() - tic
    print(f"data: {total} trajectories ({data_s:.0f} s); solver: {prob.solver_name}", flush=True)
    n_val = max(1, args.n_train // 10)
    cfg = RunConfig(data=DataConfig(train=str(data_path), n_train=args.n_train, n_val=n_val, n_test=args.n_test),
                    model={"name": "fno", "modes": [12, 12], "width": 20},
                    train=TrainConfig(task="autoregressive", epochs=500, budget_minutes=args.minutes, batch_size=32,
                                      lr=2e-3, unroll=2, pushforward=True, eval_every=5, device="cpu", plot_samples=0),
                    out=str(args.work / "predictor"))
    tic = time.perf_counter()
    if args.observer_only and (args.work / "predictor" / "checkpoints" / "best").exists():
        print(f"reusing the predictor in {args.work / 'predictor'}", flush=True)
    else:
        run_or_resume(cfg, log=lambda s: print(s, flush=True))
    predictor_s = time.perf_counter() - tic
    op = oplab.load(args.work / "predictor")
    for p in op.bundle.parameters():
        p.requires_grad_(False)
    coords = tuple(torch.linspace(0, 1, n + 1)[:-1] for _ in range(2))

    def step(u):
        return op.bundle(u, coords)

    ds = oplab.data.open(data_path)
    states = load(ds, list(range(total))).states()  # [N, T + 1, 1, n, n]
    train, test = states[: args.n_train], states[args.n_train :]
    tune = train[args.n_train - n_val :][: args.n_tune]  # validation trajectories: they choose the localisation
    noise = args.noise * float(train[:, 1:].std())
    sensors = lattice_sensors((n, n), args.sensors)
    net = models.create("fno", in_channels=3, out_channels=1, modes=[10, 10], width=16)
    observer = Observer(net, sensors, (n, n), scale=float(train.std()))
    print(f"observer spread: {observer.spread}; {len(sensors)} sensors, noise std {noise:.4g}", flush=True)
    tic = time.perf_counter()
    history = train_observer(step, observer, train, torch.zeros(1, n, n), noise, epochs=1000, batch_size=8,
                             lr=2e-3, budget_seconds=60 * args.observer_minutes, log=lambda s: print(s, flush=True))
    observer_train_s = time.perf_counter() - tic

    y = simulate_observations(test[:, 1:], sensors, noise, torch.Generator().manual_seed(7))
    truth = test[:, 1:].double()
    results = {}

    def rel(est, ref):
        est = torch.as_tensor(est).double()
        return ((est - ref).square().flatten(2).sum(2) / ref.square().flatten(2).sum(2)).sqrt().mean(0)  # [T]

    def score(name, est, seconds):
        err = rel(est, truth)
        results[name] = {"per_step": err.tolist(), "mean": float(err.mean()),
                         "seconds_per_trajectory": seconds / len(test)}
        print(f"{name}: mean {float(err.mean()):.4f}, {1e3 * seconds / len(test):.1f} ms per trajectory", flush=True)

    zeros = torch.zeros(len(test), 1, n, n)
    with torch.no_grad():
        tic = time.perf_counter()
        score("open loop (zero guess)", assimilate(step, zeros, y, sensors), time.perf_counter() - tic)
        tic = time.perf_counter()
        score("forecast from the true initial state", assimilate(step, test[:, 0], y, sensors),
              time.perf_counter() - tic)
        tic = time.perf_counter()
        score("learned observer", assimilate(step, zeros, y, sensors, observer), time.perf_counter() - tic)

    forcing = torch.from_numpy(fno_forcing(n, prob.params["forcing_amplitude"]))

    def solver(x: np.ndarray) -> np.ndarray:  # the data's own solver over one observation interval
        out = navier_stokes_2d(torch.from_numpy(x[:, 0]), forcing, args.nu, dt, None, record_times=[dt],
                               scheme=prob.scheme)
        return out[:, :, None].numpy()[:, 0]

    def priors(count, seed):
        rng = np.random.default_rng(seed)
        return [np.stack([prob.sample_inputs(rng) for _ in range(args.members)]) for _ in range(count)]

    # the localisation, chosen on validation trajectories with their own observations and prior draws
    choices = [None if c.strip().lower() == "none" else float(c) for c in args.localizations.split(",")]
    forecasts = {}
    if args.observer_only:
        choices = []
    y_tune = simulate_observations(tune[:, 1:], sensors, noise, torch.Generator().manual_seed(11))
    tune_prior = priors(len(tune), 1) if choices else []
    tuning, loc = {}, None
    for loc in choices:
        est = np.stack([enkf(solver, tune_prior[b], y_tune[b].numpy(), sensors.numpy(), noise,
                             inflation=args.inflation, seed=100 + b, localization=loc)["mean"]
                        for b in range(len(tune))])
        tuning[str(loc)] = float(rel(est, tune[:, 1:].double()).mean())
        print(f"EnKF tuning (validation): localisation {loc}: mean error {tuning[str(loc)]:.4f}", flush=True)
    if choices:
        loc = choices[int(np.argmin([tuning[str(c)] for c in choices]))]
        forecasts = {"solver": solver, "surrogate": torch_forecast(step)}
    means, seconds = {k: [] for k in forecasts}, {k: 0.0 for k in forecasts}
    for b, prior in enumerate(priors(len(test), 0) if forecasts else []):
        for name, forecast in forecasts.items():  # the same draws, observations and seed for both
            got = enkf(forecast, prior, y[b].numpy(), sensors.numpy(), noise, inflation=args.inflation, seed=b,
                       localization=loc)
            means[name].append(got["mean"])
            seconds[name] += got["seconds"]
    tag = f"{args.members} members, localisation {loc if loc is None else f'{loc:g}'}"
    for name, label in (("solver", "EnKF over the solver"), ("surrogate", "EnKF over the surrogate G")):
        if name in forecasts:
            score(f"{label} ({tag})", np.stack(means[name]), seconds[name])
    # one forecast step of the ensemble, the minimum over 10 repeats, the two models interleaved
    ensemble = priors(1, 2)[0] if forecasts else None
    runs = timing.interleaved(forecasts, ensemble, rounds=10, repeats=1)  # (each round after 2 warm-up calls)
    forecast_ms = {k: 1e3 * min(v) for k, v in runs.items()}
    print("one ensemble forecast step (min of 10): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in forecast_ms.items()), flush=True)

    show = sorted({0, 1, 4, 9, args.steps - 1} & set(range(args.steps)))
    print_results(results, show, [(k + 1) * dt for k in show], ms=".0f")
    metrics = [json.loads(line) for line in (args.work / "predictor" / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
           "machine": "the shared 2-core VM, loaded by other jobs", "torch_threads": 1,
           "command": "OMP_NUM_THREADS=1 python " + " ".join(["benchmarks/assimilate_ns.py", *sys.argv[1:]]),
           "args": {k: str(v) for k, v in vars(args).items()}, "solver": prob.solver_name, "noise_std": noise,
           "sensors": sensors.tolist(), "data_seconds": data_s, "predictor_train_seconds": predictor_s,
           "predictor_test": next((m["test"] for m in reversed(metrics) if "test" in m), None),
           "observer_epochs": len(history), "observer_train_seconds": observer_train_s, "observer_loss": history,
           "enkf_localization_tuning": tuning, "enkf_localization": loc,
           "enkf_forecast_step_ms_min": forecast_ms, "results": results}
    args.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
