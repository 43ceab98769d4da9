"""Data assimilation on Burgers: open loop, a learned observer, and an EnKF over the solver (issue 18, item 2).

    OMP_NUM_THREADS=1 python benchmarks/assimilate_burgers.py [--work DIR] [--minutes 3]

Set-up: viscous Burgers (``burgers`` problem: periodic, GRF initial states) at ``n = 128`` nodes,
``nu = --nu``, recorded every 0.05 to ``t = 2`` (40 states). The initial state is unknown: every
estimator starts from the prior mean (zero) and sees, after each step, noisy values of ``u`` at 16
evenly spaced nodes (noise std ``--noise`` times the data's standard deviation).

1. predictor ``G``: an autoregressive FNO-1D (one state to the next) trained on ``--n-train``
   trajectories for ``--minutes`` (``best`` on 10% validation trajectories);
2. learned observer (:mod:`oplab.inverse.assimilation`, the recursive form of semilinear neural
   operators): a small FNO-1D correction trained for ``--minutes`` on the same trajectories with
   simulated observations, through the whole 40-step window, ``G`` frozen;
3. EnKF: ``--members`` draws of the prior GRF, each forecast by the ETDRK4 solver (the data's own),
   perturbed observations, inflation ``--inflation``; and the same EnKF (same prior draws, members,
   inflation, observations and seeds) with the trained predictor ``G`` as its forecast model (the
   EnKF over the surrogate: the cost-matched comparison with the learned observer), the two run
   interleaved trajectory by trajectory so their times compare on a loaded machine;
4. references: the open loop (``G`` from the zero guess, no observations) and ``G``'s rollout from
   the TRUE initial state (what the predictor alone achieves when the state is known).

Scored on ``--n-test`` held-out trajectories: relative L2 error ``||u_est - u|| / ||u||`` per time
(mean over trajectories) and wall time per trajectory. Writes the table and
``benchmarks/assimilate_burgers.json``.

``--enkf-only``: reuse the saved predictor (train it only if ``--work``/predictor is missing) and
skip the learned observer: the references and the two EnKFs only, written to
``benchmarks/assimilate_burgers_enkf_surrogate.json`` unless ``--json`` says otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import timing  # benchmarks/timing.py (the script's folder is on the path)
from assimilation_curves import print_results  # benchmarks/assimilation_curves.py

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/oplab-assimilate"))
    parser.add_argument("--nu", type=float, default=0.05)
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--n-test", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--inflation", type=float, default=1.05)
    parser.add_argument("--json", type=Path, default=None,
                        help="default: benchmarks/assimilate_burgers.json (assimilate_burgers_enkf_surrogate.json "
                             "with --enkf-only)")
    parser.add_argument("--enkf-only", action="store_true",
                        help="reuse the saved predictor, skip the learned observer: references and both EnKFs only")
    args = parser.parse_args()
    if args.json is None:
        args.json = ROOT / ("assimilate_burgers_enkf_surrogate.json" if args.enkf_only else "assimilate_burgers.json")
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    import oplab
    from oplab import models, problems
    from oplab.data.generation import generate
    from oplab.inverse.assimilation import (Observer, assimilate, enkf, simulate_observations, torch_forecast,
                                            train_observer)
    from oplab.solvers.spectral import burgers_etdrk4
    from oplab.train import run_or_resume
    from oplab.train.config import DataConfig, RunConfig, TrainConfig
    from oplab.train.data import load

    n, n_times, t_end = 128, 40, 2.0
    prob = problems.create("burgers", n, nu=args.nu, t_end=t_end, trajectory=True, n_times=n_times)
    total = args.n_train + args.n_test
    data_path = args.work / f"burgers{n}_nu{args.nu:g}.h5"
    tic = time.perf_counter()
    generate(prob, total, data_path, seed=0, resume=True)
    print(f"data: {total} trajectories ({time.perf_counter() - tic:.0f} s)", flush=True)
    n_val = args.n_train // 10
    cfg = RunConfig(data=DataConfig(train=str(data_path), n_train=args.n_train, n_val=n_val, n_test=args.n_test),
                    model={"name": "fno", "modes": [24], "width": 48},
                    train=TrainConfig(task="autoregressive", epochs=500, budget_minutes=args.minutes, batch_size=32,
                                      lr=2e-3, unroll=4, pushforward=True, eval_every=5, device="cpu", plot_samples=0),
                    out=str(args.work / "predictor"))
    if args.enkf_only and (args.work / "predictor" / "checkpoints" / "best").exists():
        print(f"reusing the predictor in {args.work / 'predictor'}", flush=True)
    else:
        run_or_resume(cfg, log=lambda s: print(s, flush=True))
    op = oplab.load(args.work / "predictor")
    for p in op.bundle.parameters():
        p.requires_grad_(False)
    coords = (torch.linspace(0, 1, n + 1)[:-1],)

    def step(u):
        return op.bundle(u, coords)

    ds = oplab.data.open(data_path)
    states = load(ds, list(range(total))).states()  # [N, T + 1, 1, n]
    train, test = states[: args.n_train], states[args.n_train :]
    noise = args.noise * float(train[:, 1:].std())
    sensors = torch.arange(0, n, n // 16)
    net = models.create("fno", in_channels=3, out_channels=1, modes=[24], width=32)
    observer = Observer(net, sensors, n, scale=float(train.std()))
    tic = time.perf_counter()
    history = [] if args.enkf_only else train_observer(
        step, observer, train, torch.zeros(1, n), noise, epochs=1000, batch_size=16, lr=1e-3,
        budget_seconds=60 * args.minutes, log=lambda s: print(s, flush=True))
    observer_train_s = time.perf_counter() - tic

    y = simulate_observations(test[:, 1:], sensors, noise, torch.Generator().manual_seed(7))
    truth = test[:, 1:].double()
    results = {}

    def score(name, est, seconds):
        est = torch.as_tensor(est).double()
        err = ((est - truth).square().sum((2, 3)) / truth.square().sum((2, 3))).sqrt().mean(0)  # [T]
        results[name] = {"per_step": err.tolist(), "mean": float(err.mean()), "seconds_per_trajectory": seconds / len(test)}

    with torch.no_grad():
        tic = time.perf_counter()
        score("open loop (zero guess)", assimilate(step, torch.zeros(len(test), 1, n), y, sensors), time.perf_counter() - tic)
        tic = time.perf_counter()
        score("forecast from the true initial state", assimilate(step, test[:, 0], y, sensors), time.perf_counter() - tic)
        if not args.enkf_only:
            tic = time.perf_counter()
            score("learned observer", assimilate(step, torch.zeros(len(test), 1, n), y, sensors, observer),
                  time.perf_counter() - tic)
    rng = np.random.default_rng(0)
    dt = t_end / n_times
    forecasts = {"solver": lambda x: burgers_etdrk4(x, args.nu, dt), "surrogate": torch_forecast(step)}
    means, seconds = {k: [] for k in forecasts}, {k: 0.0 for k in forecasts}
    for b in range(len(test)):
        prior = np.stack([prob.sample_inputs(rng) for _ in range(args.members)])  # [M, 1, n]
        for name, forecast in forecasts.items():  # the same draws, observations and seed for both
            got = enkf(forecast, prior, y[b].numpy(), sensors.numpy(), noise, inflation=args.inflation, seed=b)
            means[name].append(got["mean"])
            seconds[name] += got["seconds"]
    score(f"EnKF over the solver ({args.members} members)", np.stack(means["solver"]), seconds["solver"])
    score(f"EnKF over the surrogate G ({args.members} members)", np.stack(means["surrogate"]), seconds["surrogate"])
    # the forecast's own cost, robust to a loaded machine: one step of the 32-member ensemble, the
    # minimum over 30 repeats, the two models interleaved
    ensemble = np.stack([prob.sample_inputs(rng) for _ in range(args.members)])
    runs = timing.interleaved(forecasts, ensemble, rounds=30, repeats=1)  # (each round after 2 warm-up calls)
    forecast_ms = {k: 1e3 * min(v) for k, v in runs.items()}
    print(f"one ensemble forecast step (min of 30): solver {forecast_ms['solver']:.2f} ms, "
          f"surrogate {forecast_ms['surrogate']:.2f} ms", flush=True)

    show = [0, 4, 9, 19, 39]
    print_results(results, show, [(k + 1) * dt for k in show])
    metrics = [json.loads(line) for line in (args.work / "predictor" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    out = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
           "torch_threads": 1, "args": {k: str(v) for k, v in vars(args).items()}, "noise_std": noise,
           "sensors": sensors.tolist(), "predictor_test": next((m["test"] for m in reversed(metrics) if "test" in m), None),
           "observer_epochs": len(history), "observer_train_seconds": observer_train_s, "observer_loss": history,
           "enkf_forecast_step_ms_min": forecast_ms,
           "results": results}
    args.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
