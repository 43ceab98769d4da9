"""Darcy inversion through the surrogate against the classical route (issue 18, item 1).

    OMP_NUM_THREADS=1 python benchmarks/invert_darcy.py [--run RUN] [--work DIR] [--samples 3]

The problem: recover the two-phase permeability ``a`` (3 / 12) of the FNO Darcy benchmark at 64x64
from ``K`` noisy point values of the pressure ``u`` (``noise = level * max|u|``, Gaussian), for
(K, level) in (50, 1%), (100, 2%), (200, 5%), on held-out test samples of the run (never seen in
training or checkpoint selection). Both routes minimise the same objective with the same optimiser
(Adam, ``--steps``, ``--restarts`` random starts batched; :func:`oplab.inverse.invert`) and the same
prior; only the forward map differs:

* surrogate: the trained FNO (``--run``; without it an FNO is trained for ``--minutes`` on 1000
  generated samples, best on 100 validation samples) with autograd;
* classical: the finite-difference solver of the data (``oplab.inverse.adjoint.DarcySolve``, scipy
  sparse LU) with its discrete adjoint (one forward and one adjoint solve per step and restart).

Priors: ``latent`` (the data's GRF, thresholded smoothly; MAP in its KL coefficients) for every
setting, ``tv`` (total variation, weight ``--tv-weight``) at (100, 2%); with ``--lpn DIR`` a learned
proximal network in plug-and-play proximal gradient steps at (100, 2%), its step size chosen on a
validation sample (``--lpn-only``: only those rows); ``--pnp admm``: plug-and-play ADMM instead
(``oplab.inverse.lpn.pnp_admm``, ``--admm-steps`` iterations of ``--admm-inner`` L-BFGS steps), its
``rho`` chosen the same way from ``RHOS``. ``--langevin``: MALA posterior samples after the latent
prior's MAP at (100, 2%) (:func:`langevin_rows`). Reported per route: relative
L2 error of the coefficient, the fraction of nodes in the right phase, chi^2 per observed value,
wall time, and the surrogate's speed-up (classical time / surrogate time). Writes the table to
stdout and ``benchmarks/invert_darcy.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
SETTINGS = ((50, 0.01, "latent"), (100, 0.02, "latent"), (200, 0.05, "latent"), (100, 0.02, "tv"))


def trained_run(args) -> Path:
    if args.run:
        return args.run
    from oplab import problems
    from oplab.data.generation import generate
    from oplab.train import run_or_resume
    from oplab.train.config import DataConfig, RunConfig, TrainConfig

    data = args.work / "darcy64.h5"
    generate(problems.create("darcy", resolution=64), 1200, data, seed=0, resume=True)
    cfg = RunConfig(data=DataConfig(train=str(data), n_train=1100, n_val=100, n_test=100, in_memory=True),
                    model={"name": "fno", "modes": [12, 12], "width": 32, "n_layers": 4},
                    train=TrainConfig(epochs=500, budget_minutes=args.minutes, batch_size=10, lr=1e-3, eval_every=5,
                                      device="cpu", plot_samples=0),
                    out=str(args.work / "fno"))
    run_or_resume(cfg, log=lambda s: print(s, flush=True))
    return args.work / "fno"


ETAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
RHOS = (0.01, 0.03, 0.1, 0.3, 1.0, 4.0)  # 4 = 1 / sigma^2 of the LPN trained at sigma 0.5: the nominal MAP balance


def lpn_rows(args, run, routes, axes, observations, record) -> list:
    """The LPN prior (plug-and-play proximal gradient, ``oplab.inverse.lpn.pnp``) at (100, 2%): its
    step size chosen from ``ETAS`` on a VALIDATION sample of the run (the coefficient error of the
    surrogate route), then every test sample on both routes with that step."""
    from oplab.inverse.lpn import load_lpn, pnp, pnp_admm
    from oplab.rundir import RunDir
    from oplab.train.data import recorded_split

    lpn = load_lpn(args.lpn)
    split = recorded_split(RunDir.open(run))
    if split.val is None:
        raise SystemExit(f"{run}: no validation samples to choose the PnP step size on")
    val, test = split.val.load(), split.tests[0].load()
    k, level = 100, 0.02
    a_val = val.x[0].double()
    obs = observations(val.y[0].double(), k, level, 7)

    admm = args.pnp == "admm"
    label = "rho" if admm else "eta"

    def solve(forward, obs_, value, dtype=torch.float32):
        if admm:
            return pnp_admm(forward, axes, obs_, lpn, steps=args.admm_steps, rho=value, inner_steps=args.admm_inner,
                            dtype=dtype)
        return pnp(forward, axes, obs_, lpn, steps=args.steps, step_size=value, dtype=dtype)

    sweep = []

    def error(value):
        try:
            got = solve(routes["surrogate"], obs, value)
        except Exception as exc:  # noqa: BLE001 -- a diverging step size ranks last
            print(f"  {label} {value:g}: {exc}", flush=True)
            sweep.append({label: value, "coef_l2": None, "error": str(exc).splitlines()[0]})
            return float("inf")
        err = float((got["estimate"].double() - a_val).norm() / a_val.norm())
        sweep.append({label: value, "coef_l2": err, "chi2": got["misfit"], "seconds": got["seconds"]})
        print(f"  {label} {value:g}: validation coefficient L2 {err:.3f}, chi2 {got['misfit']:.2f}, "
              f"{got['seconds']:.1f} s", flush=True)
        return err

    value = min(RHOS if admm else ETAS, key=error)
    record.sweep = sweep
    print(f"LPN {label} {value:g} (chosen on validation sample 0)", flush=True)
    name = f"lpn, PnP-ADMM (rho {value:g})" if admm else f"lpn (eta {value:g})"
    for i in range(args.samples):
        a_true, u_true = test.x[i].double(), test.y[i].double()
        obs = observations(u_true, k, level, 1000 * k + i)
        for route, forward in routes.items():
            try:
                got = solve(forward, obs, value, torch.float64 if route == "classical" else torch.float32)
            except Exception as exc:  # noqa: BLE001 -- a diverging run is reported, not fatal
                print(f"  sample {i} {route}: {str(exc).splitlines()[0]}", flush=True)
                got = {"estimate": torch.full_like(a_true, float("nan")), "misfit": float("nan"),
                       "seconds": float("nan")}
            record(k, level, name, i, route, a_true, got["estimate"], got)
    return [(k, level, name)]


def langevin_rows(args, data, axes, routes, params, observations) -> list:
    """``--langevin``: at (100 sensors, 2%) with the latent prior, the MAP estimate (as in the table)
    followed by MALA posterior samples (``oplab.inverse.invert(sampler="langevin")``: 4 chains from
    the MAP, ``--burn-in``, ``--thin``, ``--langevin-samples``) on both routes. Reported per test
    sample and route: the coefficient error of the MAP and of the posterior mean, the mean
    posterior std, the coverage (fraction of nodes whose posterior-mean error is within 2 std), the
    posterior std's correlation with the actual error, the acceptance and the sampling time."""
    from oplab.inverse import invert, make_prior

    k, level, out = 100, 0.02, []
    for i in range(args.samples):
        a_true, u_true = data.x[i].double(), data.y[i].double()
        obs = observations(u_true, k, level, 1000 * k + i)
        for route, forward in routes.items():
            torch.set_num_threads(1)
            got = invert(forward, axes, obs, make_prior("latent", axes, 1, params=params), restarts=args.restarts,
                         steps=args.steps, lr=args.lr, seed=i, dtype=torch.float64 if route == "classical" else torch.float32,
                         sampler="langevin", samples=args.langevin_samples, chains=4, burn_in=args.burn_in,
                         thin=args.thin)
            est, mean, std = got["estimate"].double(), got["posterior_mean"].double(), got["spread"].double()
            err = (mean - a_true).abs()
            row = {"sample": i, "route": route, "map_l2": float((est - a_true).norm() / a_true.norm()),
                   "mean_l2": float((mean - a_true).norm() / a_true.norm()), "mean_std": float(std.mean()),
                   "coverage_2std": float((err <= 2 * std).double().mean()),
                   "std_error_corr": float(np.corrcoef(std.flatten().numpy(), err.flatten().numpy())[0, 1]),
                   "acceptance": got["sampling"]["acceptance"], "step": got["sampling"]["step"],
                   "map_seconds": got["seconds"] - got["sampling"]["seconds"],
                   "sampling_seconds": got["sampling"]["seconds"]}
            out.append(row)
            print(f"sample {i} {route:9s}: MAP L2 {row['map_l2']:.3f}, posterior-mean L2 {row['mean_l2']:.3f}, "
                  f"mean std {row['mean_std']:.2f}, coverage(2 std) {row['coverage_2std']:.2f}, corr(std, |err|) "
                  f"{row['std_error_corr']:.2f}, acceptance {row['acceptance']:.2f}, MAP {row['map_seconds']:.1f} s, "
                  f"sampling {row['sampling_seconds']:.1f} s", flush=True)
    return out


def draw(args, data, axes, routes, params, observations) -> None:
    """The figure of ``--figure``: truth, each route's estimate and its error, sensors marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from oplab.inverse import invert, make_prior

    a_true, u_true = data.x[0].double(), data.y[0].double()
    obs = observations(u_true, 100, 0.02, 1000 * 100)
    panels = [("truth", a_true[0])]
    for route, forward in routes.items():
        got = invert(forward, axes, obs, make_prior("latent", axes, 1, params=params), restarts=args.restarts,
                     steps=args.steps, lr=args.lr, dtype=torch.float64 if route == "classical" else torch.float32)
        est = got["estimate"][0].double()
        err = float((est - a_true[0]).norm() / a_true[0].norm())
        panels += [(f"{route} estimate (rel. L2 {err:.2f})", est), (f"{route} |error|", (est - a_true[0]).abs())]
    fig, ax = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    for a, (title, field) in zip(ax, panels):
        a.imshow(field.numpy(), extent=(0, 1, 1, 0), vmin=0 if "error" in title else 3, vmax=9 if "error" in title else 12)
        a.scatter(obs.points[:, 1], obs.points[:, 0], s=3, c="w", edgecolors="k", linewidths=0.3)
        a.set_title(title, fontsize=8)
        a.set_xticks([]), a.set_yticks([])
    fig.tight_layout()
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=100)
    print(f"wrote {args.figure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="a trained Darcy-64 operator (default: train one)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/oplab-invert"))
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--tv-weight", type=float, default=0.3)
    parser.add_argument("--lpn", type=Path, default=None,
                        help="a learned proximal network (benchmarks/lpn_darcy.py --save DIR): adds PnP rows at (100, 2%%)")
    parser.add_argument("--lpn-only", action="store_true", help="with --lpn: only the PnP rows")
    parser.add_argument("--pnp", choices=("pg", "admm"), default="pg",
                        help="with --lpn: plug-and-play proximal gradient (pg, --steps steps) or ADMM (admm)")
    parser.add_argument("--admm-steps", type=int, default=30, help="--pnp admm: ADMM iterations")
    parser.add_argument("--admm-inner", type=int, default=5, help="--pnp admm: L-BFGS steps of each x-update")
    parser.add_argument("--figure", type=Path, default=None,
                        help="only draw truth, both routes' estimates and errors, and the sensors for test sample 0 "
                             "at (100 sensors, 2%%, latent prior) into this PNG")
    parser.add_argument("--langevin", action="store_true",
                        help="only the MALA posterior rows at (100 sensors, 2%%, latent prior), both routes")
    parser.add_argument("--langevin-samples", type=int, default=200)
    parser.add_argument("--burn-in", type=int, default=200)
    parser.add_argument("--thin", type=int, default=5)
    parser.add_argument("--json", type=Path, default=ROOT / "invert_darcy.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    import oplab
    from oplab.inverse import Observations, invert, make_prior, observe, surrogate
    from oplab.inverse.adjoint import DarcySolve
    from oplab.rundir import RunDir
    from oplab.train.data import recorded_split

    run = trained_run(args)
    op = oplab.load(run)
    test = recorded_split(RunDir.open(run)).tests[0]
    data = test.load()
    axes = op.in_axes
    params = op.data.get("params") or {}
    routes = {"surrogate": surrogate(op), "classical": DarcySolve(params.get("forcing", 1.0))}
    rows = []

    def observations(u_true, k, level, seed):
        rng = np.random.default_rng(seed)
        pts = rng.uniform(0.0, 1.0, (k, 2))
        clean = observe(u_true[None], torch.from_numpy(pts), axes)[0].numpy()
        sigma = level * float(u_true.abs().max())
        return Observations(pts, clean + sigma * rng.standard_normal(clean.shape), np.full(clean.shape, sigma), [0])

    def record(k, level, prior_name, i, route, a_true, est, got):
        est = est.double()
        rows.append({"sensors": k, "noise": level, "prior": prior_name, "sample": i, "route": route,
                     "coef_l2": float((est - a_true).norm() / a_true.norm()),
                     "phase_accuracy": float(((est > 7.5) == (a_true > 7.5)).double().mean()),
                     "chi2": got["misfit"], "seconds": got["seconds"]})
        r = rows[-1]
        print(f"K={k:3d} noise {level:.0%} {prior_name:6s} sample {i} {route:9s}: coefficient L2 "
              f"{r['coef_l2']:.3f}, phase {r['phase_accuracy']:.3f}, chi2 {r['chi2']:.2f}, {r['seconds']:.1f} s",
              flush=True)

    if args.figure:
        draw(args, data, axes, routes, params, observations)
        return
    if args.langevin:
        lrows = langevin_rows(args, data, axes, routes, params, observations)
        print("\n| route | MAP rel. L2 | posterior-mean rel. L2 | mean posterior std | coverage (2 std) | "
              "corr(std, abs error) | acceptance | MAP s | sampling s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for route in routes:
            sel = [r for r in lrows if r["route"] == route]
            avg = {key: statistics.mean(r[key] for r in sel) for key in sel[0] if key not in ("sample", "route")}
            print(f"| {route} | {avg['map_l2']:.3f} | {avg['mean_l2']:.3f} | {avg['mean_std']:.2f} | "
                  f"{avg['coverage_2std']:.2f} | {avg['std_error_corr']:.2f} | {avg['acceptance']:.2f} | "
                  f"{avg['map_seconds']:.1f} | {avg['sampling_seconds']:.1f} |")
        args.json.write_text(json.dumps({"date": datetime.date.today().isoformat(), "run": str(run),
                                         "args": {k: str(v) for k, v in vars(args).items()}, "rows": lrows}, indent=1))
        print(f"wrote {args.json}")
        return
    settings = list(SETTINGS) if not (args.lpn and args.lpn_only) else []
    if args.lpn:
        settings += lpn_rows(args, run, routes, axes, observations, record)
    for k, level, prior_name in SETTINGS if not (args.lpn and args.lpn_only) else ():
        for i in range(args.samples):
            a_true, u_true = data.x[i].double(), data.y[i].double()
            obs = observations(u_true, k, level, 1000 * k + i)
            for route, forward in routes.items():
                prior = make_prior(prior_name, axes, 1, args.tv_weight, (3.0, 12.0) if prior_name == "tv" else None,
                                   params)
                torch.set_num_threads(1)
                got = invert(forward, axes, obs, prior, restarts=args.restarts, steps=args.steps, lr=args.lr, seed=i,
                             dtype=torch.float64 if route == "classical" else torch.float32)
                record(k, level, prior_name, i, route, a_true, got["estimate"], got)
    table = []
    for k, level, prior_name in settings:
        line = {"sensors": k, "noise": level, "prior": prior_name}
        for route in routes:
            sel = [r for r in rows if (r["sensors"], r["noise"], r["prior"], r["route"]) == (k, level, prior_name, route)]
            for key in ("coef_l2", "phase_accuracy", "chi2", "seconds"):
                line[f"{route}_{key}"] = statistics.mean(r[key] for r in sel)
        line["speedup"] = line["classical_seconds"] / line["surrogate_seconds"]
        table.append(line)
    print("\n| sensors | noise | prior | route | coefficient rel. L2 | phase accuracy | chi^2 per value | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for t in table:
        for route in routes:
            print(f"| {t['sensors']} | {t['noise']:.0%} | {t['prior']} | {route} | {t[route + '_coef_l2']:.3f} | "
                  f"{t[route + '_phase_accuracy']:.3f} | {t[route + '_chi2']:.2f} | {t[route + '_seconds']:.1f} |")
        print(f"| | | | speed-up | | | | {t['speedup']:.1f}x |")
    metrics = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    test_l2 = next((m["test"] for m in reversed(metrics) if "test" in m), None)
    out = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
           "torch_threads": 1, "run": str(run), "run_test_errors": test_l2, "args": {k: str(v) for k, v in vars(args).items()},
           "rows": rows, "table": table, "validation_sweep": getattr(record, "sweep", None)}
    args.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
