"""PDEBench's inverse task as an oplab case (issue 18, item 4).

    OMP_NUM_THREADS=1 python benchmarks/pdebench_inverse.py [--work DIR] [--minutes 2.5] [--n 128]
        [--samples 1000] [--test 50] [--cases advection,burgers_nu1,burgers_nu0.1]

PDEBench (Takamoto et al. 2022, NeurIPS Datasets and Benchmarks, arXiv:2210.07182; code
pdebench/PDEBench, ``pdebench/models/inverse/train.py``, ``config/config.yaml``, ``run_inverse.sh``)
recovers the initial state ``u0`` of 1D advection (``beta = 4``), Burgers (``Nu = 1``, i.e. viscosity
``1 / pi``), diffusion-reaction and compressible flow from the whole field at time index 101 (``t =
1.01``) by 100 Adam steps (lr 0.2, weight decay 1e-4) on a 64-value latent linearly interpolated to
the grid, through a trained FNO or U-Net, and reports ``mseloss_u0`` and ``mseloss_pred_u0`` (MSE
of the estimate and of the surrogate's prediction from it, in units standardised by the TRUE
``u0``'s mean and spread) among other metrics (:mod:`oplab.inverse.pdebench` documents the details).

Here, at CPU size (``--n`` points instead of 1024, ``--samples`` instead of 10000), with PDEBench's
initial-condition sampler re-written (:func:`oplab.inverse.pdebench.pdebench_initial`) and oplab's
solvers:

* ``advection``: ``u_t + 4 u_x = 0``, ``t = 1.01``: the exact solution (the sampler evaluated at
  ``x - beta t``); PDEBench's own case.
* ``burgers_nu1``: ``u_t + (u^2/2)_x = (1/pi) u_xx``, ``t = 1.01``, oplab's ETDRK4 solver; PDEBench's
  own case. At this viscosity every non-constant mode has decayed by ``exp(-4 pi t) < 3e-6`` by
  ``t = 1``: the observation is a constant (its spread is printed), so only the mean of ``u0`` can
  be recovered; the case shows what the metric then says.
* ``burgers_nu0.1``: the same with PDEBench's ``Nu = 0.1`` set (viscosity ``0.1 / pi``), a less
  degenerate variant (PDEBench's inverse runs do not include it).

A forward FNO (PDEBench's size: 12 modes, width 20, 4 layers) is trained for ``--minutes`` through
oplab's API (``u0 -> u(t)``; best checkpoint on 100 validation samples); then on ``--test`` held-out
test samples of the run:

* ``u0 := y``: the observation itself as the estimate (a baseline);
* ``FNO, PDEBench``: PDEBench's protocol exactly (latent 64, init ``U(0,1)/64``, Adam 0.2, wd 1e-4,
  100 steps, truth-standardised MSE);
* ``FNO, PDEBench, train scaling``: the same with the standardisation from the training set's
  ``u0`` statistics (PDEBench's scaler leaks the true state's mean and spread);
* ``FNO, smooth`` / ``FNO, tv``: one unknown per grid point, oplab's priors
  (:mod:`oplab.inverse.priors`, ``Smooth``, ``TotalVariation``), 300 Adam steps at lr 0.05, the
  weight chosen from ``WEIGHTS`` (0 included: no prior) on 20 validation samples (smallest ``u0`` MSE);
* classical: ``exact inverse shift`` (advection), or ``solver, PDEBench`` / ``solver, smooth``
  (Burgers: :class:`oplab.inverse.pdebench.BurgersETDRK4`, oplab's solver in torch, gradients by
  autograd, the same protocols; the smooth weight is the FNO's).

Every estimate is also run through the reference solver (``true_pred_mse``: how well it really
explains the observation, not only the surrogate's opinion). Writes the table to stdout and
``benchmarks/pdebench_inverse.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
CASES = {
    "advection": {"kind": "advection", "beta": 4.0, "t_end": 1.01},
    "burgers_nu1": {"kind": "burgers", "nu": 1.0 / math.pi, "t_end": 1.01},
    "burgers_nu0.1": {"kind": "burgers", "nu": 0.1 / math.pi, "t_end": 1.01},
}
WEIGHTS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
METRICS = ("mseloss_u0", "mseloss_pred_u0", "true_pred_mse", "l2loss_u0", "fftmseloss_low_u0", "fftmseloss_mid_u0",
           "fftmseloss_hi_u0")


def problems_for(case: dict, n: int):
    """The case as an oplab problem (PDEBench's initial states; exact advection or oplab's Burgers
    solver), so that its data set is an ordinary oplab file."""
    from oplab.inverse.pdebench import pdebench_initial
    from oplab.problems.base import positive, rng_for
    from oplab.problems.burgers import Burgers
    from oplab.solvers.spectral import burgers_etdrk4

    class PDEBenchBurgers(Burgers):
        name = "pdebench_burgers"
        summary = "1D viscous Burgers from PDEBench's initial states (sums of sines)"
        reference = "Takamoto et al. 2022, PDEBench (NeurIPS Datasets and Benchmarks), 1D Burgers"

        def sample_inputs(self, rng):
            return pdebench_initial(rng, self.input_axes()[0].coords())[None]

        def solve_batch(self, inputs):
            return burgers_etdrk4(inputs[:, 0], self.params["nu"], self.params["t_end"])[:, None]

    class PDEBenchAdvection(Burgers):
        name = "pdebench_advection"
        summary = "1D advection u_t + beta u_x = 0 from PDEBench's initial states, exact solution"
        reference = "Takamoto et al. 2022, PDEBench (NeurIPS Datasets and Benchmarks), 1D advection"
        params_spec = (positive("beta", 4.0, "advection speed"), positive("t_end", 1.01, "final time"))

        @property
        def solver_name(self) -> str:
            return "exact: u0(x - beta t) of the analytic initial state"

        def output_times(self):
            return None

        def generate(self, indices, seed):
            x = self.input_axes()[0].coords()
            shifted = np.mod(x - self.params["beta"] * self.params["t_end"], 1.0)
            u0 = np.stack([pdebench_initial(rng_for(seed, i), x)[None] for i in indices])
            ut = np.stack([pdebench_initial(rng_for(seed, i), shifted)[None] for i in indices])
            return u0, ut

    if case["kind"] == "advection":
        return PDEBenchAdvection(n, beta=case["beta"], t_end=case["t_end"])
    return PDEBenchBurgers(n, nu=case["nu"], t_end=case["t_end"])


def make_data(problem, n_samples: int, path: Path, seed: int = 0) -> Path:
    from oplab.data import format as fmt

    if path.exists():
        return path
    tmp = path.with_suffix(".part.h5")
    f = fmt.create(tmp, problem, n_samples, seed)
    for lo in range(0, n_samples, 200):
        idx = list(range(lo, min(n_samples, lo + 200)))
        x, y = problem.generate(idx, seed)
        f["inputs"][idx[0] : idx[-1] + 1] = x.astype(np.float32)
        f["outputs"][idx[0] : idx[-1] + 1] = y.astype(np.float32)
    fmt.finish(f)
    tmp.rename(path)
    return path


def train_fno(data: Path, out: Path, n_samples: int, n_test: int, minutes: float) -> Path:
    from oplab.train import run_or_resume
    from oplab.train.config import DataConfig, RunConfig, TrainConfig

    if (out / "checkpoints" / "best").exists():  # a finished run of an earlier call: reuse it
        print(f"  reusing the trained run {out}", flush=True)
        return out
    cfg = RunConfig(data=DataConfig(train=str(data), n_train=n_samples - n_test, n_val=100, n_test=n_test,
                                    in_memory=True),
                    model={"name": "fno", "modes": [12], "width": 20, "n_layers": 4},
                    train=TrainConfig(epochs=2000, budget_minutes=minutes, batch_size=20, lr=1e-3, eval_every=5,
                                      device="cpu", plot_samples=0),
                    out=str(out))
    run_or_resume(cfg, log=lambda s: print("  " + s, flush=True) if "epoch" not in s or "best" in s else None)
    return out


def true_forward(case: dict):
    """The reference map on a batch ``[B, 1, n]`` (float64 numpy / exact shift)."""
    from oplab.inverse.pdebench import fourier_shift
    from oplab.solvers.spectral import burgers_etdrk4

    if case["kind"] == "advection":
        return lambda u: fourier_shift(u.double(), case["beta"] * case["t_end"])
    return lambda u: torch.from_numpy(burgers_etdrk4(u[:, 0].double().numpy(), case["nu"], case["t_end"]))[:, None]


def score(u0, x, pred, y, true_pred, mean, std) -> dict:
    """PDEBench's metrics in its units (standardised by the true ``u0``), plus ``true_pred_mse``."""
    from oplab.inverse.pdebench import inverse_metrics

    s = lambda t: (t.double() - mean) / std  # noqa: E731
    m = inverse_metrics(s(u0), s(x), s(pred), s(y))
    m["true_pred_mse"] = [float(v) for v in (s(true_pred) - s(y)).square().flatten(1).mean(1)]
    return m


def summarise(m: dict, seconds: float, extra: dict | None = None) -> dict:
    row = {k: {"mean": statistics.fmean(m[k]), "std": statistics.pstdev(m[k])} for k in METRICS}
    row["seconds"] = seconds
    return {**row, **(extra or {})}


def choose_weight(fwd, val_x, val_y, prior_cls, n, mean_fn) -> tuple[float, list]:
    """The prior weight with the smallest validation ``u0`` MSE (standardised units)."""
    from oplab.inverse.pdebench import recover_initial

    mean, std = mean_fn(val_x)
    sweep = []
    for w in WEIGHTS:
        prior = prior_cls((1, n), (1.0 / n,), w)
        r = recover_initial(fwd, val_y, mean, std, latent=None, steps=300, lr=0.05, weight_decay=0.0, prior=prior)
        mse = float((((r["u0"] - val_x) / std).square()).mean())
        sweep.append({"weight": w, "val_mseloss_u0": mse})
    best = min(sweep, key=lambda s: s["val_mseloss_u0"])["weight"]
    return best, sweep


def run_case(name: str, case: dict, args) -> dict:
    import oplab
    from oplab.inverse import surrogate
    from oplab.inverse.pdebench import BurgersETDRK4, advection_inverse, recover_initial, standardisation
    from oplab.inverse.priors import Smooth, TotalVariation
    from oplab.rundir import RunDir
    from oplab.train.data import recorded_split

    work = args.work / name
    work.mkdir(parents=True, exist_ok=True)
    problem = problems_for(case, args.n)
    tic = time.perf_counter()
    data = make_data(problem, args.samples, work / "data.h5")
    gen_s = time.perf_counter() - tic
    print(f"[{name}] data {data} ({gen_s:.1f} s)", flush=True)
    tic = time.perf_counter()
    run = train_fno(data, work / "fno", args.samples, args.n_test, args.minutes)
    train_s = time.perf_counter() - tic
    lines = [json.loads(t) for t in (run / "metrics.jsonl").read_text().splitlines() if t.strip()]
    evals = [e for e in lines if "test" in e]
    best = [e for e in evals if e.get("best")] or evals
    metrics = {"epochs": len(lines), "train_seconds": sum(e.get("epoch_seconds", 0.0) for e in lines),
               "best_epoch": best[-1]["epoch"] if best else None,
               "val_l2": best[-1]["val"]["l2"] if best else None, "test_l2": best[-1]["test"] if best else None}
    op = oplab.load(run)
    fno = surrogate(op)
    fwd = lambda u: fno(u.float()).double()  # noqa: E731
    split = recorded_split(RunDir.open(run))
    test, val, train = split.tests[0].load(), split.val.load(), split.train.load()
    x, y = test.x[: args.test].double(), test.y[: args.test].double()
    vx, vy = val.x[:20].double(), val.y[:20].double()
    truth = true_forward(case)
    mean, std = standardisation(x)  # PDEBench's units (the true state's statistics)
    tr_mean, tr_std = float(train.x.double().mean()), float(train.x.double().std(unbiased=False))
    fno_test = float((((fwd(x) - y) / std).square()).mean())
    y_spread = float((y.std(-1) / x.std(-1)).mean())
    print(f"[{name}] FNO trained {train_s:.0f} s; test MSE of the FNO's u(t) (PDEBench units) {fno_test:.3g}; "
          f"spread of y / spread of u0 {y_spread:.3g}", flush=True)
    rows = {}

    def add(label, u0, pred, seconds, extra=None):
        m = score(u0, x, pred, y, truth(u0), mean, std)
        rows[label] = summarise(m, seconds, extra)
        r = rows[label]
        print(f"[{name}] {label:32s} mse_u0 {r['mseloss_u0']['mean']:.3e}  mse_pred {r['mseloss_pred_u0']['mean']:.3e}  "
              f"true_pred {r['true_pred_mse']['mean']:.3e}  relL2_u0 {r['l2loss_u0']['mean']:.3f}  "
              f"({seconds:.1f} s)", flush=True)

    add("u0 := y (baseline)", y, y, 0.0)
    tic = time.perf_counter()
    r = recover_initial(fwd, y, mean, std, seed=0)
    add("FNO, PDEBench", r["u0"], r["pred"], time.perf_counter() - tic)
    tic = time.perf_counter()
    r = recover_initial(fwd, y, tr_mean, tr_std, seed=0)
    add("FNO, PDEBench, train scaling", r["u0"], r["pred"], time.perf_counter() - tic)
    sweeps = {}
    for label, cls in (("smooth", Smooth), ("tv", TotalVariation)):
        tic = time.perf_counter()
        w, sweeps[label] = choose_weight(fwd, vx, vy, cls, args.n, standardisation)
        sel = time.perf_counter() - tic
        tic = time.perf_counter()
        r = recover_initial(fwd, y, mean, std, latent=None, steps=300, lr=0.05, weight_decay=0.0,
                            prior=cls((1, args.n), (1.0 / args.n,), w))
        add(f"FNO, {label} (w={w:g})", r["u0"], r["pred"], time.perf_counter() - tic,
            {"weight": w, "selection_seconds": sel})
    if case["kind"] == "advection":
        tic = time.perf_counter()
        u0 = advection_inverse(y, case["beta"], case["t_end"])
        add("exact inverse shift (classical)", u0, truth(u0), time.perf_counter() - tic)
    else:
        solver = BurgersETDRK4(args.n, case["nu"], case["t_end"], dt=0.01)
        solver_err = float((solver(x) - y).abs().max() / y.abs().max())
        tic = time.perf_counter()
        r = recover_initial(solver, y, mean, std, seed=0)
        add("solver (autograd), PDEBench", r["u0"], r["pred"], time.perf_counter() - tic,
            {"solver_vs_data_max_rel": solver_err})
        w = rows[[k for k in rows if k.startswith("FNO, smooth")][0]]["weight"]
        tic = time.perf_counter()
        r = recover_initial(solver, y, mean, std, latent=None, steps=300, lr=0.05, weight_decay=0.0,
                            prior=Smooth((1, args.n), (1.0 / args.n,), w))
        add(f"solver (autograd), smooth (w={w:g})", r["u0"], r["pred"], time.perf_counter() - tic)
    return {"case": case, "data_seconds": gen_s, "train_seconds_this_call": train_s, "fno_test_mse_pdebench_units": fno_test,
            "fno_run_metrics": metrics, "y_spread_over_u0_spread": y_spread, "rows": rows, "weight_sweeps": sweeps,
            "test_samples": int(x.shape[0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/pdebench_inverse"))
    ap.add_argument("--minutes", type=float, default=2.5, help="FNO training budget per case")
    ap.add_argument("--n", type=int, default=128, help="grid points (PDEBench: 1024)")
    ap.add_argument("--samples", type=int, default=1000, help="samples per data set (train + val + test)")
    ap.add_argument("--n-test", type=int, default=100, help="test samples held out in the run")
    ap.add_argument("--test", type=int, default=50, help="test samples inverted")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out", type=Path, default=ROOT / "pdebench_inverse.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad:
        raise SystemExit(f"--cases: unknown {bad}; choose from {', '.join(CASES)}")
    results = {c: run_case(c, CASES[c], args) for c in cases}
    print("\n| case | route | mseloss_u0 | mseloss_pred_u0 | true_pred_mse | rel. L2 u0 | fft MSE u0 low/mid/hi | s |")
    print("|---|---|---|---|---|---|---|---|")
    for c, res in results.items():
        for label, r in res["rows"].items():
            f = lambda k: f"{r[k]['mean']:.2e}"  # noqa: E731
            print(f"| {c} | {label} | {f('mseloss_u0')} | {f('mseloss_pred_u0')} | {f('true_pred_mse')} | "
                  f"{r['l2loss_u0']['mean']:.3f} | {f('fftmseloss_low_u0')} / {f('fftmseloss_mid_u0')} / "
                  f"{f('fftmseloss_hi_u0')} | {r['seconds']:.1f} |")
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": "the shared 2-core VM, loaded by other jobs",
        "platform": platform.platform(), "torch": torch.__version__, "threads": 1,
        "command": "OMP_NUM_THREADS=1 python benchmarks/pdebench_inverse.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out",)),
        "units": "PDEBench's: every field standardised by the true u0's mean and (biased) std, per sample",
        "pdebench_published": None,
        "pdebench_published_note": ("PDEBench shows its inverse results (mseloss_u0 / mseloss_pred_u0 of FNO and "
                                    "U-Net for Advection, Burgers, DiffReact, CFD) as a log-scale bar chart; the "
                                    "figures could not be read offline here, so none are copied"),
        "results": results,
    }
    args.out.write_text(json.dumps(record, indent=1, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
