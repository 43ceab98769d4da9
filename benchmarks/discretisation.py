"""Discretisation convergence of every registered grid model (issue 20, item 4).

"Principled approaches for extending neural architectures to function spaces for operator
learning" (Berner et al. 2025): an operator, unlike a network on a fixed grid, should give
answers that converge as the discretisation of the *same* input function is refined. This check
trains each registered grid model (``oplab.models.available()``, ``kind == "grid"``; point
operators such as DeepONet are skipped: they read fixed sensors, so their input cannot be
refined) briefly on Darcy at 33 x 33, then evaluates it on the same test inputs at 33, 65 and 129
points per axis: the samples are generated (coefficient drawn, PDE solved) once at 129 and
strided to 65 and 33, so every resolution sees the same functions, and the target at each is
the restriction of the 129 solution.

Two measures per model:

* the test relative-L2 error at 33, 65, 129 (against the restricted fine solution);
* self-convergence: the relative difference between the model's answers on consecutive grids at
  their common points, ``d(33, 65)`` and ``d(65, 129)``; a discretisation-convergent model has
  ``d(65, 129) < d(33, 65)`` (its answers settle).

Verdict from the error: "converges" if it falls by more than 10% from 33 to 129, "grows" if it
rises by more than 25% (or 2x at any step), else "flat"; and from the self-convergence: "settles"
if ``d(65, 129) < 0.75 d(33, 65)`` (or below 1e-4: settled already), "no" otherwise. Small models, few epochs: the question is the
trend across resolutions, not the error.

    python benchmarks/discretisation.py               # writes benchmarks/discretisation.json
    python benchmarks/discretisation.py --only fno,unet
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from options import grid_data  # noqa: E402  (the same data helper)

JSON = HERE / "discretisation.json"
FINE = 129
RESOLUTIONS = (33, 65, 129)  # strides 4, 2, 1 of the 129 node grid

#: small settings per model for a 33 x 33 training grid (anything else: the model's own defaults
#: for the grid, from ``oplab.models.presets.derive``)
SMALL = {
    "fno": {"modes": [8, 8], "width": 16, "lifting_channels": 32, "projection_channels": 32},
    "tfno": {"modes": [8, 8], "width": 16, "lifting_channels": 32, "projection_channels": 32},
    "unet": {"width": 8, "depth": 2},
    "mgno": {"width": 12, "n_layers": 2},
    "lsm": {"width": 16, "n_heads": 4},
    "transolver": {"width": 32, "n_layers": 2, "n_heads": 4, "n_slices": 16},
    "lordnet": {"width": 16, "rank": 4, "n_layers": 2, "projection_channels": 32},
    "mgtfno": {"modes": [8, 8], "width": 16, "patches": 2, "levels": 1},
    "anie": {"width": 16, "n_heads": 4},
    "neural_ode": {"width": 8},
    "resnet": {"width": 16, "blocks": 2, "hidden": 16},
}


def restrict(y: torch.Tensor, stride: int) -> torch.Tensor:
    return y[..., ::stride, ::stride]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over samples of ``||a - b|| / ||b||``."""
    return ((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).mean().item()


def verdicts(err: list[float], d: list[float]) -> tuple[str, str]:
    steps = [b / a for a, b in zip(err, err[1:])]
    if err[-1] > 1.25 * err[0] or max(steps) > 2:
        trend = "grows"
    elif err[-1] < 0.9 * err[0]:
        trend = "converges"
    else:
        trend = "flat"
    return trend, ("settles" if d[1] < 0.75 * d[0] or d[1] < 1e-4 else "no")


def check_model(name: str, sets: dict, val, epochs: int, seed: int = 0) -> dict:
    from oplab import models
    from oplab.models.presets import derive
    from oplab.train.config import TrainConfig
    from oplab.train.trainer import Trainer

    train = sets["train"]
    cfg = derive({"name": name, **SMALL.get(name, {})}, tuple(train.x.shape), tuple(train.y.shape), train.out_coords,
                 train.periodic)
    torch.manual_seed(seed)
    model = models.from_config(cfg)
    tc = TrainConfig(epochs=epochs, batch_size=10, lr=1e-3, eval_every=epochs, seed=seed, threads=1, plot_samples=0)
    tic = time.perf_counter()
    result = Trainer(model, train, tc, val=val, tests={}, log=lambda s: None).fit()
    seconds = time.perf_counter() - tic
    bundle = result["bundle"].eval()
    preds, errors = {}, []
    with torch.no_grad():
        for res in RESOLUTIONS:
            data = sets[res]
            preds[res] = torch.cat([bundle(xb, data.out_coords) for xb, _ in data.chunks(20)])
            errors.append(rel(preds[res], data.y))
    d = [rel(restrict(preds[65], 2), preds[33]), rel(restrict(preds[129], 2), preds[65])]
    trend, settles = verdicts(errors, d)
    return {"model": name, "config": cfg, "params": model.n_params(), "train_seconds": round(seconds, 1),
            "val_at_33": result["history"][-1]["val"]["l2"], "error": dict(zip(map(str, RESOLUTIONS), errors)),
            "self_difference": {"33-65": d[0], "65-129": d[1]}, "error_trend": trend, "outputs_settle": settles}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n-train", type=int, default=120)
    parser.add_argument("--n-val", type=int, default=30)
    parser.add_argument("--n-test", type=int, default=30)
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--json", default=str(JSON))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from oplab import models, problems
    from oplab.bench.machine import describe

    problem = problems.create("darcy", resolution=FINE)
    tic = time.perf_counter()
    x, y = problem.generate(range(args.n_train + args.n_val), seed=0)
    xt, yt = problem.generate(range(args.n_test), seed=1)
    print(f"Darcy at {FINE}: {len(x)} + {len(xt)} samples in {time.perf_counter() - tic:.0f} s", flush=True)

    def strided(xs, ys, res):
        s = (FINE - 1) // (res - 1)
        return grid_data(problems.create("darcy", resolution=res), xs[..., ::s, ::s], ys[..., ::s, ::s])

    sets = {res: strided(xt, yt, res) for res in RESOLUTIONS}
    sets["train"] = strided(x[: args.n_train], y[: args.n_train], 33)
    val = strided(x[args.n_train :], y[args.n_train :], 33)
    only = [n for n in args.only.split(",") if n]
    rows, skipped = [], []
    for name in models.available():
        if only and name not in only:
            continue
        cls = models.get(name)
        if cls.kind != "grid":
            skipped.append({"model": name, "reason": f"a {cls.kind} operator: it reads the input at fixed sensors "
                                                      f"(its n_sensors), so the input grid cannot be refined"})
            continue
        try:
            row = check_model(name, sets, val, args.epochs)
        except Exception as exc:  # noqa: BLE001  reported, not hidden
            skipped.append({"model": name, "reason": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"})
            print(f"  {name}: failed ({skipped[-1]['reason']})", flush=True)
            continue
        rows.append(row)
        e, d = row["error"], row["self_difference"]
        print(f"  {name}: L2 {e['33']:.4f} / {e['65']:.4f} / {e['129']:.4f} at 33/65/129; d {d['33-65']:.1e} -> "
              f"{d['65-129']:.1e}; {row['error_trend']}, {row['outputs_settle']} ({row['train_seconds']:.0f} s)", flush=True)
    print(f"\nDarcy: trained at 33 ({args.n_train} samples, {args.epochs} epochs), tested on the same {args.n_test} "
          f"inputs at 33 / 65 / 129")
    print("| model | params | L2 at 33 | L2 at 65 | L2 at 129 | error | d(33,65) | d(65,129) | answers settle | train s |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---|---:|")
    for r in rows:
        e, d = r["error"], r["self_difference"]
        print(f"| {r['model']} | {r['params']:,} | {e['33']:.4f} | {e['65']:.4f} | {e['129']:.4f} | {r['error_trend']} | "
              f"{d['33-65']:.1e} | {d['65-129']:.1e} | {r['outputs_settle']} | {r['train_seconds']:.0f} |")
    for s in skipped:
        print(f"- skipped {s['model']}: {s['reason']}")
    record = {"command": "python benchmarks/discretisation.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": describe(), "threads": 1,
              "epochs": args.epochs, "n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test,
              "resolutions": list(RESOLUTIONS), "rows": rows, "skipped": skipped}
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
