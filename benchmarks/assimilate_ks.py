"""Data assimilation on Kuramoto-Sivashinsky: open loop, a learned observer, EnKFs over the solver and the surrogate (issue 18, item 2).

    OMP_NUM_THREADS=1 python benchmarks/assimilate_ks.py [--work DIR] [--minutes 4]

Set-up: KS ``u_t = -u u_X - u_XX - u_XXXX`` on the chaotic box ``L = 22`` (``pde1d`` family ``ks``,
``vary=0``: the box mapped onto ``[0, 2)``, initial states spun up onto the attractor) at ``n = 64``
nodes, solved by the ETDRK4 core with the fixed step 0.25 KS time units (``dt=0.0125`` on the
problem's axis; Kassam & Trefethen's step), recorded every ``--every`` KS units (40 states). The initial
state is unknown: every estimator starts from zero (the climatological mean; ``u = 0`` is a fixed point
of KS, so the open loop never leaves it) and, after each step, sees noisy values of ``u`` at 16 evenly
spaced nodes (noise std ``--noise`` times the data's standard deviation).

1. predictor ``G``: an FNO-1D (no positional channel: KS is translation invariant) mapping one state
   to the next as a residual ``u + G'(u)``, trained here (plain loop: the pde1d file's inputs carry 15
   coefficient channels, which the library's autoregressive task would roll out too) on ``--n-train``
   trajectories by unrolling 4 steps, Adam with a cosine schedule planned from the first epoch's time
   for ``--minutes``; the weights with the lowest full-window rollout error on ``--n-val`` validation
   trajectories are kept;
2. learned observer (:mod:`oplab.inverse.assimilation`, the recursive form of semilinear neural
   operators, Singh et al. ICLR 2024): a small FNO-1D correction trained by ``train_observer`` for
   ``--minutes``, ``G`` frozen, on the training trajectories cut into ``--observer-window`` = 10-step
   windows (20 KS units, under one Lyapunov time), each assimilated from the zero guess; evaluated
   over the whole 40-step window. Training through the whole window (``--observer-window 0``, as
   the Burgers benchmark does) fails on this chaotic system: the loss rises above the open loop's
   (``benchmarks/assimilate_ks_ablation_window0.json``);
3. EnKF (stochastic, perturbed observations): ``--members`` prior members drawn from the training
   trajectories' states (the climatological prior), each forecast by the ETDRK4 solver that made the
   data (``oplab.solvers.pde1d.solve``, one call per member and interval); and the same EnKF (same
   members, observations and seeds) over ``G`` (``torch_forecast``). The inflation of each is chosen
   from ``--inflations`` on the first ``--n-tune`` validation trajectories (never the test set);
4. references: the open loop (``G`` from zero, no observations), ``G``'s rollout from the TRUE
   initial state, and the exact solver from the true initial state perturbed by ``--perturb`` (relative
   rms): on a chaotic system both diverge; the second shows chaos alone, with a perfect model.

Scored on ``--n-test`` held-out trajectories: relative L2 error ``||u_est - u|| / ||u||`` per time
(mean over trajectories) and wall time per trajectory. Writes the table and
``benchmarks/assimilate_ks.json`` (``--json`` for other runs). The predictor's weights are saved in
``--work`` and reused by later runs on the same data and budget (e.g. ``--sensors 8``,
``--observer-minutes 8 --skip-enkf``: references and the observer only).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

import timing  # benchmarks/timing.py (the script's folder is on the path)
from assimilation_curves import print_results  # benchmarks/assimilation_curves.py

ROOT = Path(__file__).resolve().parent
TAU = 20.0  # KS time units per unit of the pde1d problem's common axis (family ks: horizon 40 = t_end 2)
DT_SOLVER = 0.0125  # the problem's fixed step on its common axis: 0.25 KS units


def train_predictor(train, val, n, minutes, log, seed=0, unroll=4, batch_size=32, lr=2e-3, save=None):
    """The FNO one-step predictor ``u -> u + scale net(u / scale)`` (module docstring, item 1). Returns
    ``(step, info)``, ``step`` frozen. ``save``: a file for the chosen weights and ``info``; when it
    exists (same data), they are loaded instead of trained."""
    from oplab import models

    torch.manual_seed(seed)
    scale = float(train.std())
    net = models.create("fno", in_channels=1, out_channels=1, modes=[16], width=48, positional=False)
    coords = (torch.linspace(0, 1, n + 1)[:-1],)

    def step(u):
        return u + scale * net(u / scale, coords)

    if save is not None and Path(save).exists():
        blob = torch.load(save)
        net.load_state_dict(blob["state"])
        for p in net.parameters():
            p.requires_grad_(False)
        log(f"reusing the predictor {save}")
        return step, {**blob["info"], "reused_from": str(save)}

    def rollout_error(states):
        with torch.no_grad():
            u, err = states[:, 0], []
            for k in range(1, states.shape[1]):
                u = step(u)
                err.append(((u - states[:, k]).square().sum((1, 2)) / states[:, k].square().sum((1, 2))).sqrt())
            return float(torch.stack(err, 1).mean())

    gen = torch.Generator().manual_seed(seed)
    n_tr, t_len = train.shape[0], train.shape[1]
    starts = [(i, k) for i in range(n_tr) for k in range(t_len - unroll)]
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    epochs, history, best = 1000, [], (math.inf, None, -1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    tic = time.perf_counter()
    while len(history) < epochs:
        order = torch.randperm(len(starts), generator=gen)
        total = 0.0
        for b0 in range(0, len(order), batch_size):
            pick = [starts[j] for j in order[b0 : b0 + batch_size].tolist()]
            win = torch.stack([train[i, k : k + unroll + 1] for i, k in pick])  # [B, unroll + 1, 1, n]
            u, loss = win[:, 0], 0.0
            for k in range(1, unroll + 1):
                u = step(u)
                ref = win[:, k].square().mean((1, 2)).clamp_min(1e-12)
                loss = loss + ((u - win[:, k]).square().mean((1, 2)) / ref).mean() / unroll
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(pick)
        val_err = rollout_error(val)
        history.append({"train_loss": total / len(starts), "val_rollout": val_err})
        if val_err < best[0]:
            best = (val_err, copy.deepcopy(net.state_dict()), len(history) - 1)
        if len(history) == 1:  # plan the epochs the budget buys
            epochs = max(1, min(epochs, int(60 * minutes // max(time.perf_counter() - tic, 1e-9))))
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        sched.step()
        log(f"predictor epoch {len(history) - 1}/{epochs}: loss {history[-1]['train_loss']:.4g}, "
            f"validation rollout {val_err:.4f}")
    net.load_state_dict(best[1])
    for p in net.parameters():
        p.requires_grad_(False)
    info = {"epochs": len(history), "seconds": time.perf_counter() - tic, "best_epoch": best[2],
            "val_rollout_best": best[0], "history": history,
            "parameters": sum(p.numel() for p in net.parameters()),
            "one_step_val": None}
    with torch.no_grad():  # one-step error on the validation pairs
        u, v = val[:, :-1].reshape(-1, 1, n), val[:, 1:].reshape(-1, 1, n)
        info["one_step_val"] = float((((step(u) - v).square().sum((1, 2)) / v.square().sum((1, 2))).sqrt()).mean())
    if save is not None:
        torch.save({"state": net.state_dict(), "info": info}, save)
    return step, info


def run_enkfs(args, coeffs, interval, train, val, y, y_val, noise, sensors, step, errors, score, n):
    """The EnKFs over the solver and over the surrogate ``G`` (module docstring, item 3), scored by ``score``.
    Returns ``(forecast_ms, tuning, chosen, spread)``."""
    from oplab.inverse.assimilation import enkf, torch_forecast
    from oplab.solvers import pde1d as core

    def solver_forecast(x):
        return np.stack([core.solve(m[0], coeffs, interval, length=2.0, dt=DT_SOLVER, oversample=1)[None] for m in x])

    forecasts = {"solver": solver_forecast, "surrogate": torch_forecast(step)}
    pool = train[:, 1:].reshape(-1, 1, n).double().numpy()  # the climatological prior: training states

    def prior(seed):
        return pool[np.random.default_rng(seed).choice(len(pool), size=args.members, replace=False)]

    # inflation per forecast model, chosen on validation trajectories (never the test set)
    inflations = [float(v) for v in args.inflations.split(",")]
    tuning = {k: {} for k in forecasts}
    chosen = {}
    for name, forecast in forecasts.items():
        for infl in inflations:
            means = [enkf(forecast, prior(10_000 + b), y_val[b].double().numpy(), sensors.numpy(), noise,
                          inflation=infl, seed=10_000 + b)["mean"] for b in range(args.n_tune)]
            tuning[name][str(infl)] = float(errors(np.stack(means), val[: args.n_tune, 1:]).mean())
        chosen[name] = float(min(tuning[name], key=tuning[name].get))
        print(f"EnKF over the {name}: validation error per inflation {tuning[name]} -> {chosen[name]}", flush=True)

    means, seconds, spread = {k: [] for k in forecasts}, {k: 0.0 for k in forecasts}, {k: [] for k in forecasts}
    for b in range(len(y)):  # the test trajectories
        members = prior(b)
        for name, forecast in forecasts.items():  # the same draws, observations and seed for both, interleaved
            got = enkf(forecast, members, y[b].double().numpy(), sensors.numpy(), noise, inflation=chosen[name], seed=b)
            means[name].append(got["mean"])
            seconds[name] += got["seconds"]
            spread[name].append(got["spread"])
    score(f"EnKF over the solver ({args.members} members, inflation {chosen['solver']:g})", np.stack(means["solver"]),
          seconds["solver"])
    score(f"EnKF over the surrogate G ({args.members} members, inflation {chosen['surrogate']:g})",
          np.stack(means["surrogate"]), seconds["surrogate"])
    # the forecast's own cost, robust to a loaded machine: one ensemble step, min of 20 repeats, interleaved
    ensemble = prior(123)
    runs = timing.interleaved(forecasts, ensemble, rounds=20, repeats=1)  # (each round after 2 warm-up calls)
    forecast_ms = {k: 1e3 * min(v) for k, v in runs.items()}
    print(f"one {args.members}-member forecast step (min of 20): solver {forecast_ms['solver']:.2f} ms, "
          f"surrogate {forecast_ms['surrogate']:.2f} ms", flush=True)

    return forecast_ms, tuning, chosen, {k: float(np.mean(v)) for k, v in spread.items()}


def command(args) -> str:
    """The command line that repeats this run (all options spelled out)."""
    parts = ["OMP_NUM_THREADS=1 python benchmarks/assimilate_ks.py"]
    for key, value in vars(args).items():
        if key in ("work", "json") or value is None:
            continue
        if key == "zero_init":
            parts += [] if value else ["--no-zero-init"]
        elif key == "skip_enkf":
            parts += ["--skip-enkf"] if value else []
        else:
            parts.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/oplab-assimilate-ks"))
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--every", type=float, default=2.0, help="observation interval in KS time units")
    parser.add_argument("--n-times", type=int, default=40)
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-val", type=int, default=30)
    parser.add_argument("--n-test", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=4.0, help="budget of the predictor and of the observer, each")
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--sensors", type=int, default=16)
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--inflations", type=str, default="1.0,1.1,1.2,1.35,1.5")
    parser.add_argument("--n-tune", type=int, default=4)
    parser.add_argument("--perturb", type=float, default=1e-3)
    parser.add_argument("--observer-window", type=int, default=10,
                        help="train the observer on the training trajectories cut into windows of this many steps, "
                             "each assimilated from the zero guess (0: the whole window)")
    parser.add_argument("--observer-lr", type=float, default=1e-3)
    parser.add_argument("--observer-minutes", type=float, default=None, help="the observer's budget (default --minutes)")
    parser.add_argument("--skip-enkf", action="store_true",
                        help="references and the learned observer only (observer ablations; reuse the predictor)")
    parser.add_argument("--no-zero-init", dest="zero_init", action="store_false",
                        help="keep the observer FNO's random last layer (default: zeroed, so it starts as the open loop)")
    parser.add_argument("--json", type=Path, default=ROOT / "assimilate_ks.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    import h5py

    from oplab import models, problems
    from oplab.data.generation import generate
    from oplab.inverse.assimilation import (Observer, assimilate, lattice_sensors, simulate_observations,
                                            train_observer)
    from oplab.solvers import pde1d as core

    n, n_times = args.n, args.n_times
    t_end = args.every * n_times / TAU  # on the problem's common axis
    prob = problems.create("pde1d", n, family="ks", vary=0.0, trajectory=True, n_times=n_times, t_end=t_end,
                           dt=DT_SOLVER, oversample=1)
    coeffs = prob.sample_inputs(np.random.default_rng(0), "ks")[1:, 0].astype(np.float64)
    total = args.n_train + args.n_val + args.n_test
    data_path = args.work / f"ks{n}_every{args.every:g}_T{n_times}.h5"
    tic = time.perf_counter()
    generate(prob, total, data_path, seed=0, resume=True)
    data_seconds = time.perf_counter() - tic
    print(f"data: {total} trajectories ({data_seconds:.0f} s)", flush=True)
    with h5py.File(data_path, "r") as f:  # the u0 channel of the inputs, then the recorded states
        u0 = torch.as_tensor(f["inputs"][:, :1])  # [N, 1, n]
        outs = torch.as_tensor(f["outputs"][:])  # [N, T, 1, n]
    states = torch.cat([u0[:, None], outs], 1).float()  # [N, T + 1, 1, n]
    train = states[: args.n_train]
    val = states[args.n_train : args.n_train + args.n_val]
    test = states[args.n_train + args.n_val :]
    print(f"states {tuple(states.shape)}, std {float(train.std()):.3f}, max |u| {float(states.abs().max()):.2f}", flush=True)

    step, pred_info = train_predictor(train, val, n, args.minutes, log=lambda s: print(s, flush=True),
                                      save=args.work / f"predictor_{data_path.stem}_n{args.n_train}_{args.minutes:g}min.pt")
    print(f"predictor: validation rollout {pred_info['val_rollout_best']:.4f} (epoch {pred_info['best_epoch']}), "
          f"one-step {pred_info['one_step_val']:.4f}", flush=True)

    noise = args.noise * float(train[:, 1:].std())
    sensors = lattice_sensors(n, args.sensors)  # (args.sensors evenly spread; 16 of 64: every 4th node)
    torch.manual_seed(1)
    net = models.create("fno", in_channels=3, out_channels=1, modes=[16], width=32)
    if args.zero_init:  # the observer starts as the open loop (no correction), not as a random one
        torch.nn.init.zeros_(net.projection[2].weight)
        torch.nn.init.zeros_(net.projection[2].bias)
    observer = Observer(net, sensors, n, scale=float(train.std()))
    w = args.observer_window or n_times
    windows = torch.cat([train[:, s : s + w + 1] for s in range(0, n_times - w + 1, w)])  # [N * n_times / w, w + 1, 1, n]
    print(f"observer: {len(windows)} training windows of {w} steps", flush=True)
    tic = time.perf_counter()
    minutes = args.minutes if args.observer_minutes is None else args.observer_minutes
    history = train_observer(step, observer, windows, torch.zeros(1, n), noise, epochs=1000, batch_size=16,
                             lr=args.observer_lr, budget_seconds=60 * minutes, log=lambda s: print(s, flush=True))
    observer_train_s = time.perf_counter() - tic

    truth = test[:, 1:].double()
    y = simulate_observations(test[:, 1:], sensors, noise, torch.Generator().manual_seed(7))
    y_val = simulate_observations(val[:, 1:], sensors, noise, torch.Generator().manual_seed(8))
    results = {}

    def errors(est, ref):
        est, ref = torch.as_tensor(est).double(), torch.as_tensor(ref).double()
        return ((est - ref).square().sum((2, 3)) / ref.square().sum((2, 3))).sqrt().mean(0)  # [T]

    def score(name, est, seconds):
        err = errors(est, truth)
        results[name] = {"per_step": err.tolist(), "mean": float(err.mean()), "seconds_per_trajectory": seconds / len(test)}
        print(f"{name}: mean {float(err.mean()):.4f}", flush=True)

    with torch.no_grad():
        tic = time.perf_counter()
        score("open loop (zero guess)", assimilate(step, torch.zeros(len(test), 1, n), y, sensors), time.perf_counter() - tic)
        tic = time.perf_counter()
        score("predictor G from the true initial state", assimilate(step, test[:, 0], y, sensors), time.perf_counter() - tic)
        tic = time.perf_counter()
        score("learned observer", assimilate(step, torch.zeros(len(test), 1, n), y, sensors, observer),
              time.perf_counter() - tic)
        val_observer = float(errors(assimilate(step, torch.zeros(len(val), 1, n), y_val, sensors, observer),
                                    val[:, 1:]).mean())
    # chaos alone: the exact solver from the true initial state perturbed by a tiny random field
    rng = np.random.default_rng(3)
    record = (np.arange(1, n_times + 1) * args.every / TAU)
    tic = time.perf_counter()
    est = []
    for b in range(len(test)):
        x0 = test[b, 0, 0].double().numpy()
        d = rng.standard_normal(n)
        d -= d.mean()
        x0 = x0 + args.perturb * np.sqrt(np.mean(x0**2)) * d / np.sqrt(np.mean(d**2))
        est.append(core.solve(x0, coeffs, t_end, length=2.0, record_times=record, dt=DT_SOLVER, oversample=1)[:, None])
    score(f"exact solver from the true initial state + {args.perturb:g} rms perturbation", np.stack(est),
          time.perf_counter() - tic)

    interval = args.every / TAU
    forecast_ms, tuning, chosen, spread = {}, {}, {}, {}
    if not args.skip_enkf:
        forecast_ms, tuning, chosen, spread = run_enkfs(args, coeffs, interval, train, val, y, y_val, noise, sensors,
                                                        step, errors, score, n)
    show = [0, 4, 9, 19, 29, n_times - 1]

    print_results(results, show, [(k + 1) * args.every for k in show], f"mean over the {n_times} states")
    out = {"date": datetime.date.today().isoformat(),
           "machine": f"the shared 2-core VM, loaded by other jobs ({platform.processor() or platform.machine()})",
           "command": command(args),
           "torch_threads": 1, "args": {k: str(v) for k, v in vars(args).items()},
           "problem": prob.describe()["params"], "ks_time_units_per_state": args.every, "tau": TAU,
           "data_seconds": data_seconds, "noise_std": noise, "data_std": float(train.std()),
           "sensors": sensors.tolist(), "predictor": pred_info,
           "observer_epochs": len(history), "observer_train_seconds": observer_train_s, "observer_loss": history,
           "observer_val_mean": val_observer, "enkf_inflation_tuning": tuning, "enkf_inflation": chosen,
           "enkf_spread_mean": spread,
           "enkf_forecast_step_ms_min": forecast_ms, "results": results}
    args.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
