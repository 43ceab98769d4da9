"""HyPINO: zero-shot PINNs from a hypernetwork, refinement rounds, and fine-tuning from the generated PINN.

    python benchmarks/hypino.py                      # ~5-7 min on two loaded cores
    python benchmarks/hypino.py --steps 100 --n-train 500 --rounds 2 --ft-steps 50   # a quick look

Bischof & Bickel 2025 ("HyPINO: Multi-Physics Neural Operators via HyperPINNs and the Method of
Manufactured Solutions", arXiv:2509.05117) report (i) zero-shot errors of the generated PINNs,
(ii) the error after each round of residual-based iterative refinement (an ensemble of correcting
PINNs), and (iii) PINN fine-tuning from the generated weights against a random initialisation.
Here, with :mod:`oplab.models.hypino` at CPU size:

* training: :func:`oplab.models.hypino.pretrain` on ``--n-train`` random manufactured problems
  of ``-Lap u + k u = f`` (``k = 0`` for a third, else uniform in ``[-4, 10]``) on random
  domains (square, disk, square with a hole, L-shape), ``--steps`` Adam steps (a fixed
  count, so the result does not depend on the machine's load; ``--train-seconds`` caps it); the checkpoint is chosen on 64 validation problems (another seed), and no
  other setting was tuned on the test problems below;
* test problems (never trained or validated on): ``--n-test`` manufactured problems (a third
  seed), reported per domain kind; and ``--n-poisson`` samples of oplab's own ``poisson``
  problem (:mod:`oplab.problems.poisson`: GRF source, zero Dirichlet data, solved by the verified
  five-point scheme at 63^2 on the unit square), mapped to ``[-1, 1]^2`` (``f -> f / 4``,
  every second node: the 32^2 nodes of the encoder grid), a source distribution unlike training;
* refinement: the sum of the PINNs after rounds ``0..--rounds`` (:func:`refine`), relative L2
  error at the domain nodes of a 64^2 grid (manufactured) or at the reference's 63^2 nodes;
* fine-tuning (:func:`finetune_pinn`): the first test problem of each domain kind and two
  Poisson samples, the generated PINN against a randomly initialised PINN of the same
  architecture (PyTorch's default initialisation, same Fourier features), Adam, same ``lr``,
  same collocation points, error after N steps.

Writes ``benchmarks/hypino.json`` (``--json``) and prints the tables. Wall times are on a shared,
loaded 2-core machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from oplab.models import hypino as hp

ROOT = Path(__file__).resolve().parent


def poisson_problems(n: int, seed: int = 7, resolution: int = 63) -> list:
    """oplab's poisson samples on [-1, 1]^2 (f / 4, every second node), exact at the nodes."""
    from oplab.problems.poisson import Poisson

    prob = Poisson(resolution)
    out = []
    for i in range(n):
        f = prob.sample_inputs(np.random.default_rng(seed + i))
        u = prob.solve(f)
        # the 63^2 nodes of [0, 1]^2 are those of [-1, 1]^2 (every second one is on the encoder's 32^2 grid);
        # -Lap in x' = 2x - 1 is -Lap / 4, so the source is f / 4
        p = hp.grid_problem(f[0] / 4.0, u[0])
        p.info.update(kind="poisson", index=i)
        out.append(p)
    return out


def errors_by_round(model, problems, rounds, n_eval):
    ens = hp.refine(model, problems, rounds)
    return np.array(hp.ensemble_errors(model, problems, ens, n=n_eval))  # [problem, round]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--train-seconds", type=float, default=None, help="stop training after this many seconds")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=64)
    ap.add_argument("--n-poisson", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--ft-steps", type=int, default=200)
    ap.add_argument("--ft-lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", type=Path, default=None, help="folder for the trained hypernetwork")
    ap.add_argument("--json", type=Path, default=ROOT / "hypino.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_all = time.perf_counter()

    model, rec = hp.pretrain(steps=args.steps, n_train=args.n_train, seed=args.seed, time_budget=args.train_seconds,
                             out=args.save, log=lambda s: print(s, flush=True))
    print(f"trained {len(rec['history'])} steps in {rec['seconds']:.0f} s; best validation error "
          f"{rec['val_error']:.4f} at step {rec['best_step']}")

    # held-out test problems: a seed used neither for training (seed) nor validation (seed + 1)
    g_test = torch.Generator().manual_seed(args.seed + 2)
    test = [hp.random_problem(g_test) for _ in range(args.n_test)]
    t0 = time.perf_counter()
    err = errors_by_round(model, test, args.rounds, 64)
    t_refine = time.perf_counter() - t0
    pois = poisson_problems(args.n_poisson)
    err_p = errors_by_round(model, pois, args.rounds, 63)

    groups = {kind: [i for i, p in enumerate(test) if p.domain.kind == kind] for kind in hp.DOMAIN_KINDS}
    groups["helmholtz-type (k<0)"] = [i for i, p in enumerate(test) if p.k < 0]
    groups["all manufactured"] = list(range(len(test)))
    table = {}
    for name, idx in groups.items():
        if not idx:
            continue
        e = err[idx]
        table[name] = {"n": len(idx), "mean": e.mean(0).tolist(), "median": np.median(e, 0).tolist()}
    table["oplab poisson (GRF source)"] = {"n": len(pois), "mean": err_p.mean(0).tolist(),
                                          "median": np.median(err_p, 0).tolist()}
    head = "| test set | n | " + " | ".join(["zero-shot"] + [f"round {r}" for r in range(1, args.rounds + 1)]) + " |"
    print("\nrelative L2 error (median; mean in brackets) of the sum of PINNs after each refinement round")
    print(head + "\n|" + "---|" * (args.rounds + 3))
    for name, row in table.items():
        cells = [f"{m:.3f} ({a:.3f})" for m, a in zip(row["median"], row["mean"])]
        print(f"| {name} | {row['n']} | " + " | ".join(cells) + " |")
    frac_better = float((err[:, -1] < err[:, 0]).mean())
    print(f"refinement lowered the error on {100 * frac_better:.0f}% of the manufactured test problems "
          f"({t_refine / len(test) * 1000:.0f} ms per problem for {args.rounds} rounds)")

    # fine-tuning: generated vs random initialisation, same architecture, optimiser and points
    ft_probs = [test[idx[0]] for kind, idx in groups.items() if kind in hp.DOMAIN_KINDS and idx] + pois[:2]
    eval_at = sorted({0, *[s for s in (25, 50, 100, 200, 300, 500, 1000) if s <= args.ft_steps], args.ft_steps})
    ft = []
    for j, p in enumerate(ft_probs):
        with torch.no_grad():
            params = model.pinns([p])
        gen_net = hp.PINN.from_params(params, model.freqs)
        torch.manual_seed(100 + j)
        rand_net = hp.PINN(model.freqs, model.width, model.depth)
        n_eval = 63 if p.info.get("kind") == "poisson" else 64
        row = {"problem": p.info.get("kind") if p.info.get("kind") == "poisson" else p.domain.kind, "k": p.k}
        for name, net in (("generated", gen_net), ("random", rand_net)):
            t0 = time.perf_counter()
            _, hist = hp.finetune_pinn(net, p, steps=args.ft_steps, lr=args.ft_lr, eval_at=eval_at, seed=j,
                                       n_eval=n_eval)
            row[name] = {str(s): e for s, e in hist}
            row[name + "_seconds"] = time.perf_counter() - t0
        ft.append(row)
    print(f"\nfine-tuning (Adam, lr {args.ft_lr:g}, 1024 interior + 256 boundary points): relative L2 error after N steps, "
          "generated init / random init")
    print("| problem | k | " + " | ".join(f"N={s}" for s in eval_at) + " |\n|" + "---|" * (len(eval_at) + 2))
    for row in ft:
        cells = [f"{row['generated'][str(s)]:.3f} / {row['random'][str(s)]:.3f}" for s in eval_at]
        print(f"| {row['problem']} | {row['k']:.2f} | " + " | ".join(cells) + " |")
    gm = {s: float(np.median([r["generated"][str(s)] for r in ft])) for s in eval_at}
    rm = {s: float(np.median([r["random"][str(s)] for r in ft])) for s in eval_at}
    print("| median | | " + " | ".join(f"{gm[s]:.3f} / {rm[s]:.3f}" for s in eval_at) + " |")

    result = {
        "benchmark": "hypino", "date": time.strftime("%Y-%m-%d"), "machine": "shared 2-core VM, loaded, 1 thread",
        "config": {**model.config, **{k: (v.name if isinstance(v, Path) else v) for k, v in vars(args).items()}},
        "training": {"steps": len(rec["history"]), "seconds": rec["seconds"], "best_step": rec["best_step"],
                     "val_error": rec["val_error"], "val_curve": rec["val"],
                     "loss_first_last": [rec["history"][0], float(np.mean(rec["history"][-50:]))]},
        "refinement": {"rounds": args.rounds, "table": table, "fraction_improved": frac_better,
                       "per_problem": err.tolist(), "poisson_per_problem": err_p.tolist(),
                       "seconds_per_problem": t_refine / len(test)},
        "finetune": {"lr": args.ft_lr, "eval_at": eval_at, "rows": ft, "median_generated": gm, "median_random": rm},
        "seconds_total": time.perf_counter() - t_all,
    }
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json} ({result['seconds_total']:.0f} s)")


if __name__ == "__main__":
    main()
