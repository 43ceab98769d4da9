"""PROSE at CPU size: solution error with and without the symbolic input, and equation decoding.

Y. Liu, Z. Zhang, H. Schaeffer, "PROSE: Predicting Multiple Operators and Symbolic Expressions
using Multimodal Transformers", Neural Networks 2024 (:mod:`oplab.models.prose`). The paper trains
on 15 ODE systems of dimension <= 3 (hundreds of thousands of samples, a GPU, hours); here nine
families (:data:`oplab.models.prose.FAMILIES`), a few thousand samples and a few minutes on one
CPU thread, so the numbers are a small-scale check of the method's claims, not a reproduction.

Data: :func:`make_dataset` with ``t in [0, 6]`` on 96 times, the first 32 (``t <= 2``) observed,
the other 64 queried; coefficients +-10% around nominal, 3 significant digits. Train, validation
and test sets are generated from different seeds (0, 1, 2). The symbol input of every training
sample is the exact equation, a noisy one (each coefficient times ``1 + N(0, 0.05^2)``) or masked
(probabilities ``1 - p_noisy - p_masked``, ``p_noisy``, ``p_masked``). The checkpoint is chosen on
the validation split (:func:`validation_score`); the test split is only reported.

Reported on the test split:

* the relative L2 error of the predicted solution at the query times with the exact equation,
  the noisy equation, and no equation (symbols masked: data only); for reference, the error of
  holding the last observed state constant and the error of *integrating* the noisy equation
  (what a solver would make of the wrong coefficients);
* greedy decoding of the equation (from data only, and from data + noisy / exact equation): the
  fraction decoded token for token, valid (parses, with the data's dimension), with the right
  structure (same tokens up to the numbers), within 5% in every coefficient, and the relative L2
  error at the query times of the decoded equation integrated from the true initial state (median
  over the test samples, a failed decoding counting as infinite; and the fraction below 5%).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/prose.py          # writes benchmarks/prose.json
    OMP_NUM_THREADS=1 python benchmarks/prose.py --steps 200 --n-train 600 --json /tmp/p.json  # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from oplab.models import prose as P

HERE = Path(__file__).resolve().parent


def _per_family(values: np.ndarray, ds: dict) -> dict:
    return {name: float(np.mean(values[ds["family"] == k])) for k, name in enumerate(ds["families"])}


def _decoding(model, ds, symbols: str) -> dict:
    t0 = time.perf_counter()
    decoded = P.decode(model, ds, symbols)
    m = P.decoded_metrics(decoded, ds, tol=0.05)
    traj = m["traj_rel_l2"]
    return {
        "symbols": symbols, "exact": float(m["exact"].mean()), "valid": float(m["valid"].mean()),
        "structure": float(m["structure"].mean()), "within_5pct": float(m["within_tol"].mean()),
        "traj_rel_l2_median": float(np.median(traj)), "traj_below_5pct": float((traj < 0.05).mean()),
        "structure_by_family": _per_family(m["structure"].astype(float), ds),
        "within_5pct_by_family": _per_family(m["within_tol"].astype(float), ds),
        "examples": [{"family": ds["families"][ds["family"][i]], "true": " ".join(ds["tokens"][i]),
                      "decoded": " ".join(decoded[i])} for i in range(0, len(decoded), max(1, len(decoded) // 9))][:9],
        "seconds": time.perf_counter() - t0,
    }


def _integrated(ds: dict, key: str) -> np.ndarray:
    """Relative L2 at the query times of the equations ``ds[key]`` integrated from the true y(0)."""
    out = np.full(len(ds["dim"]), np.inf)
    n_in = len(ds["t_input"])
    for i, toks in enumerate(ds[key]):
        d = int(ds["dim"][i])
        y = P.solve_system(P.decode_system(toks), ds["y0"][i, :d], ds["t"], rtol=1e-6, atol=1e-9, bound=100.0,
                           stop_early=True)
        if y is not None:
            tq = ds["query"][i, :, :d].astype(np.float64)
            out[i] = np.linalg.norm(y[n_in:] - tq) / np.linalg.norm(tq)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=2700)
    parser.add_argument("--n-val", type=int, default=270)
    parser.add_argument("--n-test", type=int, default=450)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--p-noisy", type=float, default=0.3)
    parser.add_argument("--p-masked", type=float, default=0.3)
    parser.add_argument("--time-budget", type=float, default=300.0, help="safety stop for training (seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=HERE / "prose.json")
    parser.add_argument("--save", type=Path, default=None, help="write the trained model there")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    t0 = time.perf_counter()
    train = P.make_dataset(args.n_train, seed=0)
    val = P.make_dataset(args.n_val, seed=1)
    test = P.make_dataset(args.n_test, seed=2)
    gen_s = time.perf_counter() - t0
    print(f"data: {args.n_train}/{args.n_val}/{args.n_test} samples of {len(P.FAMILIES)} families in {gen_s:.0f}s")

    torch.manual_seed(args.seed)
    config = dict(d_model=args.d_model, heads=4, ffn=2 * args.d_model, data_layers=2, symbol_layers=1,
                  fusion_layers=2, decoder_layers=1, symbol_decoder_layers=2)
    model = P.PROSE(**config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters, {config}")
    hist = P.train_prose(model, train, val, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         p_noisy=args.p_noisy, p_masked=args.p_masked, eval_every=max(1, args.steps // 8),
                         time_budget=args.time_budget, seed=args.seed, log=print)
    if args.save:
        P.save_prose(model, args.save)

    t0 = time.perf_counter()
    rows = {}
    for symbols in ("exact", "noisy", "none"):
        err = P.rel_l2(P.predict_values(model, test, symbols), test["query"], test["dim"])
        rows[symbols] = {"mean": float(err.mean()), "median": float(np.median(err)), "by_family": _per_family(err, test)}
    hold = np.repeat(test["data"][:, -1:], test["query"].shape[1], axis=1)
    err = P.rel_l2(hold, test["query"], test["dim"])
    rows["hold_last"] = {"mean": float(err.mean()), "median": float(np.median(err)), "by_family": _per_family(err, test)}
    err = _integrated(test, "noisy_tokens")
    rows["noisy_equation_integrated"] = {"mean": float(np.mean(np.minimum(err, 1e3))), "median": float(np.median(err)),
                                         "by_family": _per_family(np.minimum(err, 1e3), test)}
    decoding = {s: _decoding(model, test, s) for s in ("none", "noisy", "exact")}
    eval_s = time.perf_counter() - t0

    print(f"\nPROSE on {args.n_test} test samples ({hist['steps_done']} steps, best at {hist['best_step']}, "
          f"training {hist['train_seconds']:.0f}s)")
    print(f"{'solution at the query times':42s} {'mean rel L2':>12s} {'median':>8s}")
    labels = {"exact": "PROSE, data + exact equation", "noisy": "PROSE, data + noisy equation (5%)",
              "none": "PROSE, data only (symbols masked)", "hold_last": "reference: hold the last observed state",
              "noisy_equation_integrated": "reference: integrate the noisy equation"}
    for key, label in labels.items():
        print(f"{label:42s} {rows[key]['mean']:12.4f} {rows[key]['median']:8.4f}")
    print(f"\n{'decoded equation (greedy), input':26s} {'exact':>6s} {'valid':>6s} {'struct':>7s} {'<=5%':>6s} "
          f"{'traj med':>9s} {'traj<5%':>8s}")
    for s, d in decoding.items():
        label = {"none": "data only", "noisy": "data + noisy equation", "exact": "data + exact equation"}[s]
        print(f"{label:26s} {d['exact']:6.3f} {d['valid']:6.3f} {d['structure']:7.3f} {d['within_5pct']:6.3f} "
              f"{d['traj_rel_l2_median']:9.4f} {d['traj_below_5pct']:8.3f}")
    print("\nper family (data only): rel L2 / structure / within 5%")
    for name in test["families"]:
        print(f"  {name:15s} {rows['none']['by_family'][name]:.4f}  {decoding['none']['structure_by_family'][name]:.2f}"
              f"  {decoding['none']['within_5pct_by_family'][name]:.2f}")

    result = {
        "benchmark": "prose", "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s); shared VM (loaded)",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "families": test["families"], "model": config, "parameters": n_params,
        "data_seconds": gen_s, "train_seconds": hist["train_seconds"], "eval_seconds": eval_s,
        "total_seconds": time.perf_counter() - t_start,
        "history": hist, "solution_rel_l2": rows, "decoding": decoding,
    }
    args.json.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.json} ({result['total_seconds']:.0f}s in all)")


if __name__ == "__main__":
    main()
