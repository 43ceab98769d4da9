"""TFNO against FNO on Darcy: accuracy at a fraction of the parameters.

    python benchmarks/tfno.py [--resolution 64] [--n-train 1000] [--n-test 200] [--epochs 30]

Generates (or reuses) an FNO-recipe Darcy set with oplab, trains FNO (modes
12, width 32, 4 layers) and TFNO (the same with Tucker-factorised spectral
weights at rank 0.1, and CP at 0.1) with the same optimizer, schedule and
epochs, and prints parameters, time per epoch and test relative L2/H1.
Writes ``benchmarks/tfno.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from oplab import models, problems
from oplab.data.dataset import open_dataset
from oplab.data.generation import generate
from oplab.train.config import TrainConfig
from oplab.train.data import load
from oplab.train import fit

CASES = {
    "fno": {"name": "fno"},
    "tfno-tucker-0.1": {"name": "tfno", "factorization": "tucker", "rank": 0.1},
    "tfno-cp-0.1": {"name": "tfno", "factorization": "cp", "rank": 0.1},
    "tfno-tucker-0.3": {"name": "tfno", "factorization": "tucker", "rank": 0.3},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--data", type=Path, default=Path("/tmp/oplab-bench-darcy.h5"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/tfno.json"))
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    torch.set_num_threads(2)

    n = args.n_train + args.n_test
    prob = problems.create("darcy", resolution=args.resolution)
    generate(prob, n, args.data, seed=0, workers=2, resume=True)
    ds = open_dataset(args.data)
    train = load(ds, list(range(args.n_train)))
    test = {str(args.resolution): load(ds, list(range(n - args.n_test, n)))}
    cfg = TrainConfig(epochs=args.epochs, batch_size=20, lr=1e-3, weight_decay=1e-4, scheduler="cosine",
                      loss="l2", eval_every=args.epochs, seed=0)
    rows = []
    for label in args.cases:
        spec = CASES[label]
        torch.manual_seed(0)
        model = models.create(spec["name"], in_channels=1, out_channels=1, modes=[12, 12], width=32, n_layers=4,
                              **{k: v for k, v in spec.items() if k != "name"})
        start = time.perf_counter()
        result = fit(model, train, test, cfg, out=None, log=lambda s: None)
        total = time.perf_counter() - start
        final = result["history"][-1]["test"][str(args.resolution)]
        epoch_s = sorted(r["epoch_seconds"] for r in result["history"])[len(result["history"]) // 2]
        rows.append({"model": label, "params": model.n_params(), "seconds_per_epoch": epoch_s,
                     "train_seconds": total, "test_l2": final["l2"], "test_h1": final["h1"]})
        print(f"{label:<18}{model.n_params():>11,}{epoch_s:>9.2f}s/epoch  L2 {final['l2']:.4f}  H1 {final['h1']:.4f}",
              flush=True)
    base = rows[0]  # the first case is the reference (fno by default)
    for row in rows:
        row["param_ratio"] = row["params"] / base["params"]
        row["l2_ratio"] = row["test_l2"] / base["test_l2"]
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                                     "resolution": args.resolution, "n_train": args.n_train, "n_test": args.n_test,
                                     "epochs": args.epochs, "rows": rows}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
