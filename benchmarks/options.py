"""The general papers' options at equal budget on Darcy 64, and ANIE's rows (issue 20, items 3-4).

For each option a user can switch on (``train.grad_noise``; ``residual_scale`` of FNO; ``norm``
EvoNorm-B0/S0 of U-Net; ``conv: weighted`` of U-Net and MgNO) the same small model is trained with
and without it, on the same data, for the same number of epochs, with 3 seeds (seed = model
initialisation and batch order); the checkpoint is chosen on a validation split and scored on
held-out test samples. Equal epochs rather than equal seconds: this machine is shared by other
processes, so wall time per epoch is noisy, and none of the options changes the cost of an epoch
by more than a few per cent (the table reports seconds per epoch, measured interleaved).

Verdict per option, from the test relative-L2 errors of the 3 seeds: the difference of the means
against its standard error ``sqrt(sd_a^2 / 3 + sd_b^2 / 3)``: "helps" below -2 standard errors,
"hurts" above +2, else "within noise" (which is reported as not helping).

``--anie`` adds the rows of ANIE (``oplab.models.nie``) against FNO on Darcy 64 and on Burgers
(256 points) at the same epochs: test error and seconds per epoch.

    python benchmarks/options.py                  # the options table (writes options.json)
    python benchmarks/options.py --anie           # plus ANIE's rows
    python benchmarks/options.py --only anie      # ANIE's rows only (merged into options.json)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
JSON = HERE / "options.json"


# ------------------------------------------------------------------ data
def grid_data(problem, x, y):
    """numpy ``x [N, C, *S]``, ``y`` of ``problem`` -> :class:`oplab.train.data.GridData`."""
    from oplab.train.data import GridData

    axes = problem.output_axes()
    coords = tuple(torch.tensor(a.coords(), dtype=torch.float32) for a in axes)
    return GridData(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), coords, coords,
                    tuple(a.periodic for a in axes), None, problem.resolution)


def make_sets(name: str, resolution: int, n_train: int, n_val: int, n_test: int, params=None):
    """Train / validation samples from seed 0, test samples from seed 1 (disjoint draws)."""
    from oplab import problems

    problem = problems.create(name, resolution=resolution, **(params or {}))
    tic = time.perf_counter()
    x, y = problem.generate(range(n_train + n_val), seed=0)
    xt, yt = problem.generate(range(n_test), seed=1)
    seconds = time.perf_counter() - tic
    train = grid_data(problem, x[:n_train], y[:n_train])
    val = grid_data(problem, x[n_train:], y[n_train:])
    return train, val, grid_data(problem, xt, yt), seconds


# ------------------------------------------------------------------ one run
def train_one(model_cfg: dict, train, val, tests: dict, seed: int, epochs: int, eval_every: int = 2, **train_kw):
    """Train ``model_cfg`` (``{name, **args}``; channels added) with a :class:`oplab.train.Trainer`;
    returns the test errors at the epoch of the best validation error and the seconds per epoch."""
    from oplab import models
    from oplab.train.config import TrainConfig
    from oplab.train.trainer import Trainer

    cfg = dict(model_cfg)
    torch.manual_seed(seed)
    model = models.create(cfg.pop("name"), in_channels=train.x.shape[1], out_channels=train.y.shape[1], **cfg)
    tc = TrainConfig(epochs=epochs, batch_size=10, lr=1e-3, eval_every=eval_every, seed=seed, threads=1,
                     plot_samples=0, **train_kw)
    result = Trainer(model, train, tc, val=val, tests=tests, log=lambda s: None).fit()
    evaluated = [h for h in result["history"] if "val" in h]
    best = min(evaluated, key=lambda h: h["val"]["l2"])
    seconds = [h["epoch_seconds"] for h in result["history"]]
    return {"test": {k: v["l2"] for k, v in best["test"].items()}, "val": best["val"]["l2"], "best_epoch": best["epoch"],
            "s_per_epoch": statistics.median(seconds), "params": model.n_params(),
            "final_train_loss": result["history"][-1]["train_loss"]}


# ------------------------------------------------------------------ the options table
FNO = {"name": "fno", "modes": [8, 8], "width": 16, "n_layers": 4, "lifting_channels": 32, "projection_channels": 32}
UNET = {"name": "unet", "width": 8, "depth": 3}
MGNO = {"name": "mgno", "width": 12, "n_layers": 2, "levels": 4}

#: (group, label, model, train settings); the first row of a group is its baseline
ROWS = [
    ("fno", "FNO baseline", FNO, {}),
    ("fno", "+ grad_noise 0.01 (gamma 0.55)", FNO, {"grad_noise": 0.01}),
    ("fno", "+ residual_scale 1/sqrt(L) = 0.5", {**FNO, "residual_scale": "depth"}, {}),
    ("fno", "8 layers", {**FNO, "n_layers": 8}, {}),
    ("fno", "8 layers + residual_scale 1/sqrt(8)", {**FNO, "n_layers": 8, "residual_scale": "depth"}, {}),
    ("unet", "U-Net baseline (GroupNorm + GELU)", UNET, {}),
    ("unet", "+ norm evonorm_b0", {**UNET, "norm": "evonorm_b0"}, {}),
    ("unet", "+ norm evonorm_s0", {**UNET, "norm": "evonorm_s0"}, {}),
    ("unet", "+ conv weighted (density 0.7)", {**UNET, "conv": "weighted"}, {}),
    ("mgno", "MgNO baseline", MGNO, {}),
    ("mgno", "+ conv weighted (density 0.7)", {**MGNO, "conv": "weighted"}, {}),
]


def verdict(base: list[float], other: list[float]) -> tuple[str, float]:
    """"helps" / "hurts" / "within noise" from the difference of the means in standard errors."""
    n = len(base)
    se = math.sqrt(statistics.variance(base) / n + statistics.variance(other) / len(other)) if n > 1 else math.inf
    z = (statistics.mean(other) - statistics.mean(base)) / se if se > 0 else 0.0
    return ("helps" if z < -2 else "hurts" if z > 2 else "within noise"), z


def options_table(args) -> list[dict]:
    train, val, test, gen_s = make_sets("darcy", 64, args.n_train, args.n_val, args.n_test)
    print(f"Darcy 64: {len(train)} train, {len(val)} validation, {len(test)} test samples ({gen_s:.0f} s to generate)",
          flush=True)
    rows = [{"group": g, "option": label, "model": model, "train": kw, "runs": []} for g, label, model, kw in ROWS]
    for seed in range(args.seeds):  # seeds outermost: every row sees the same load pattern
        for row in rows:
            r = train_one(row["model"], train, val, {"64": test}, seed, args.epochs, **row["train"])
            row["runs"].append(r)
            print(f"  seed {seed} {row['option']:<40} test {r['test']['64']:.4f} (val {r['val']:.4f}, "
                  f"epoch {r['best_epoch']}) {r['s_per_epoch']:.2f} s/epoch", flush=True)
    base = {}
    for row in rows:
        errors = [r["test"]["64"] for r in row["runs"]]
        row["mean"], row["sd"] = statistics.mean(errors), statistics.stdev(errors) if len(errors) > 1 else 0.0
        row["s_per_epoch"] = statistics.median(r["s_per_epoch"] for r in row["runs"])
        row["params"] = row["runs"][0]["params"]
        if row["group"] not in base:
            base[row["group"]] = row
            row["verdict"], row["z"] = "baseline", 0.0
        else:
            b = base[row["group"]]
            row["verdict"], row["z"] = verdict([r["test"]["64"] for r in b["runs"]], errors)
            row["ratio"] = row["mean"] / b["mean"]
    return rows


def print_options(rows, args) -> None:
    print(f"\nDarcy 64, {args.n_train} train / {args.n_val} val / {args.n_test} test, {args.epochs} epochs, "
          f"{args.seeds} seeds (mean +- sd of the test relative L2 at the best validation epoch)")
    print(f"| option | params | test L2 mean +- sd | / baseline | s/epoch | z | verdict |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        ratio = f"{row['ratio']:.2f}x" if "ratio" in row else "1.00x"
        print(f"| {row['option']} | {row['params']:,} | {row['mean']:.4f} +- {row['sd']:.4f} | {ratio} | "
              f"{row['s_per_epoch']:.2f} | {row['z']:+.1f} | {row['verdict']} |")


# ------------------------------------------------------------------ ANIE's rows
ANIE_DARCY = {"name": "anie", "width": 16, "n_heads": 4, "points": 16}  # keys pooled to 16 x 16 (its default above 1,024 points)
FNO_BURGERS = {"name": "fno", "modes": [16], "width": 32, "n_layers": 4, "lifting_channels": 32, "projection_channels": 32}
ANIE_BURGERS = {"name": "anie", "dim": 1, "width": 16, "n_heads": 4}


def anie_rows(args) -> list[dict]:
    out = []
    cases = [("darcy64", ("darcy", 64, None), [("FNO", FNO), ("ANIE", ANIE_DARCY)]),
             ("burgers256", ("burgers", 256, None), [("FNO", FNO_BURGERS), ("ANIE", ANIE_BURGERS)])]
    for case, (problem, res, params), models_ in cases:
        train, val, test, gen_s = make_sets(problem, res, args.n_train, args.n_val, args.n_test, params)
        print(f"{case}: {len(train)} train, {len(val)} val, {len(test)} test ({gen_s:.0f} s to generate)", flush=True)
        for seed in range(args.anie_seeds):
            for label, model in models_:  # interleaved: the two see the same load
                r = train_one(model, train, val, {str(res): test}, seed, args.epochs)
                print(f"  {case} seed {seed} {label}: test {r['test'][str(res)]:.4f}, {r['s_per_epoch']:.2f} s/epoch, "
                      f"{r['params']:,} params", flush=True)
                out.append({"case": case, "model": label, "config": model, "seed": seed, **r})
    return out


def print_anie(rows) -> None:
    print("\n| case | model | params | test L2 (mean over seeds) | s/epoch | epochs |")
    print("|---|---|---:|---:|---:|---:|")
    keys = []
    for r in rows:
        if (r["case"], r["model"]) not in keys:
            keys.append((r["case"], r["model"]))
    for case, model in keys:
        rs = [r for r in rows if (r["case"], r["model"]) == (case, model)]
        err = statistics.mean(next(iter(r["test"].values())) for r in rs)
        sp = statistics.median(r["s_per_epoch"] for r in rs)
        print(f"| {case} | {model} | {rs[0]['params']:,} | {err:.4f} ({len(rs)} seeds) | {sp:.2f} | {rs[0]['epochs']} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--anie-seeds", type=int, default=1)
    parser.add_argument("--n-train", type=int, default=100)
    parser.add_argument("--n-val", type=int, default=25)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--anie", action="store_true", help="also ANIE's rows against FNO (Darcy 64, Burgers 256)")
    parser.add_argument("--only", choices=["options", "anie"], help="one part only (merged into the JSON)")
    parser.add_argument("--json", default=str(JSON))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from oplab.bench.machine import describe

    path = Path(args.json)
    record = json.loads(path.read_text()) if args.only and path.exists() else {}
    record.update({"command": "python benchmarks/options.py " + " ".join(sys.argv[1:] if argv is None else argv),
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": describe(),
                   "threads": 1})
    tic = time.perf_counter()
    if args.only != "anie":
        rows = options_table(args)
        print_options(rows, args)
        record["options"] = {"epochs": args.epochs, "seeds": args.seeds, "n_train": args.n_train, "n_val": args.n_val,
                             "n_test": args.n_test, "rows": rows}
    if args.anie or args.only == "anie":
        rows = anie_rows(args)
        for r in rows:
            r["epochs"] = args.epochs
        print_anie(rows)
        record["anie"] = {"epochs": args.epochs, "n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test,
                          "rows": rows}
    record["seconds"] = round(time.perf_counter() - tic, 1)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nwrote {path} ({record['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
