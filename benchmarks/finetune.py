"""Few-shot transfer: pretrain an operator on one data set, fine-tune it on another with K samples.

    python benchmarks/finetune.py [--pretrain A.h5 ...] [--target B.h5] [--ks 10 20 50 100]
                                  [--methods scratch full lora head] [--steps 400]

LeMON's protocol (Sun, Zhang, Schaeffer 2024, arXiv:2408.16168, tables of error against K) on
whatever files are given: the parent is trained on ``--pretrain`` (several files: one run on the
first, or ``--meta`` for a first-order-MAML initialisation over all of them), then for each K the
target's first K samples train, the next ``--n-val`` validate (they choose the checkpoint), and
the last ``--n-test`` samples are the test set reported. ``scratch`` trains the same architecture
from a random start on the same K samples; ``full``, ``lora`` and ``head`` start from the parent
(:func:`oplab.train.finetune.finetune`). Every method gets the same number of optimizer steps
(``--steps``, as epochs over K samples), batch size and schedule; the learning rate is fixed per
method in advance (``LR``), not tuned on the test set. ``--normalizers``: the fine-tunes keep the
parent's normalisers (``parent``) or refit them to the K samples as ``scratch`` does (``refit``).

Default data (generated with oplab, cached in /tmp): viscous Burgers on 64 points, the parent's set
at nu = 0.1 and the target at nu = 0.02 (steeper fronts). The real transfer table across PDE
families uses the ``pde1d`` families' files with the same script. Writes ``benchmarks/finetune.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from oplab import problems
from oplab.data.dataset import open_dataset
from oplab.data.generation import generate
from oplab.train import config as tc
from oplab.train import run
from oplab.train.finetune import finetune, meta_init

#: learning rate per method (fixed before the runs: adapters and a head take larger steps)
LR = {"scratch": 1e-3, "full": 1e-3, "lora": 5e-3, "head": 5e-3}
MODEL = {"name": "fno", "modes": [16], "width": 32, "n_layers": 4, "lifting_channels": 64, "projection_channels": 64}


def burgers(nu: float, n: int, resolution: int, seed: int) -> Path:
    path = Path(tempfile.gettempdir()) / f"oplab-bench-ft-burgers{resolution}-nu{nu}-s{seed}-{n}.h5"
    generate(problems.create("burgers", resolution=resolution, nu=nu), n, path, seed=seed, resume=True)
    return path


def best_test(history: list) -> float:
    """The test error (first test set) at the evaluation that chose ``best`` (validation)."""
    chosen = [r for r in history if r.get("best")] or [r for r in history if "test" in r]
    test = chosen[-1]["test"]
    return test[next(iter(test))]["l2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain", type=Path, nargs="+", help="Parent training file(s) (default: Burgers nu=0.1).")
    parser.add_argument("--target", type=Path, help="The new data set (default: Burgers nu=0.02).")
    parser.add_argument("--resolution", type=int, default=64, help="Grid of the default Burgers sets.")
    parser.add_argument("--pretrain-nus", type=float, nargs="+", default=[0.1],
                        help="Without --pretrain: the default Burgers sets' viscosities (one file each; --meta needs 2+).")
    parser.add_argument("--n-pretrain", type=int, default=200)
    parser.add_argument("--parent-epochs", type=int, default=60)
    parser.add_argument("--meta", action="store_true", help="Parent by first-order MAML over the --pretrain files.")
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50, 100])
    parser.add_argument("--methods", nargs="+", default=["scratch", "full", "lora", "head"], choices=list(LR))
    parser.add_argument("--steps", type=int, default=400, help="Optimizer steps per fine-tune (epochs = steps / batches).")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--n-val", type=int, default=20)
    parser.add_argument("--n-test", type=int, default=50)
    parser.add_argument("--normalizers", choices=["parent", "refit"], default="refit",
                        help="The fine-tunes' normalisers: the parent's, or refitted to the K samples as scratch does.")
    parser.add_argument("--lora-rank", type=int, default=4)
    parser.add_argument("--lora-alpha", type=float, default=8.0)
    parser.add_argument("--model", type=json.loads, default=MODEL, help="Parent model as JSON.")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/finetune.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    quiet = lambda s: None  # noqa: E731
    tic = time.perf_counter()
    n_target = max(*args.ks, 100) + args.n_val + args.n_test  # (one test set whatever --ks lists)
    pretrain = args.pretrain or [burgers(nu, args.n_pretrain, args.resolution, 0) for nu in args.pretrain_nus]
    target = args.target or burgers(0.02, n_target, args.resolution, 1)
    if len(open_dataset(target)) < n_target:
        raise SystemExit(f"{target}: needs {n_target} samples (max K + n_val + n_test)")
    data_seconds = time.perf_counter() - tic
    work = Path(tempfile.mkdtemp(prefix="oplab-bench-ft-"))
    try:
        parent = work / "parent"
        tic = time.perf_counter()
        if args.meta:
            # about the parent run's sample passes: each meta step reads 20 samples of each task
            steps = max(1, args.parent_epochs * args.n_pretrain // (20 * len(pretrain)))
            meta_init(pretrain, dict(args.model), parent, steps=steps, meta_batch=len(pretrain), support=10, query=10,
                      eval_every=max(1, steps // 10), log=quiet)
        else:
            raw = {"data": {"train": str(pretrain[0])}, "model": dict(args.model),
                   "train": {"epochs": args.parent_epochs, "batch_size": 20, "lr": 1e-3, "eval_every": 10,
                             "threads": 1, "plot_samples": 0}, "out": str(parent)}
            run(tc.from_dict(raw), log=quiet)
        parent_seconds = time.perf_counter() - tic
        rows, zero_shot = [], None
        for k in args.ks:
            epochs = max(1, math.ceil(args.steps / math.ceil(k / args.batch_size)))
            train = {"epochs": epochs, "batch_size": args.batch_size, "eval_every": max(1, epochs // 10), "threads": 1,
                     "plot_samples": 0, "weight_decay": 1e-4, "scheduler": "cosine", "seed": 0}
            for method in args.methods:
                out = work / f"{method}-{k}"
                tic = time.perf_counter()
                if method == "scratch":
                    raw = {"data": {"train": str(target), "n_train": k + args.n_val, "n_val": args.n_val,
                                    "n_test": args.n_test, "in_memory": True},
                           "model": dict(json.loads((parent / "config.json").read_text())["model"]),
                           "train": {**train, "lr": LR[method]}, "out": str(out)}
                    r = run(tc.from_dict(raw), log=quiet)
                    trainable = total = sum(p.numel() for p in r["bundle"].model.parameters())
                else:
                    r = finetune(parent, target, method, k, out, n_val=args.n_val, n_test=args.n_test,
                                 lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, normalizers=args.normalizers,
                                 log=quiet,
                                 **{**train, "lr": LR[method]})
                    trainable, total = r["finetune"]["trainable_params"], r["finetune"]["total_params"]
                    if zero_shot is None:
                        zero_shot = next(iter(r["parent_errors"]["test"].values()))["l2"]
                seconds = time.perf_counter() - tic
                rows.append({"k": k, "method": method, "test_l2": best_test(r["history"]), "trainable": trainable,
                             "total": total, "epochs": epochs, "seconds": seconds, "lr": LR[method]})
                print(f"K={k:4d} {method:8s} test L2 {rows[-1]['test_l2']:.4f}  trainable {trainable:8,d} / {total:,}  "
                      f"{seconds:6.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nparent on {', '.join(p.name for p in pretrain)}: {parent_seconds:.0f} s; its zero-shot test L2 on "
          f"{target.name}: {zero_shot if zero_shot is None else round(zero_shot, 4)}")
    header = "| K | " + " | ".join(args.methods) + " |"
    print(header + "\n|" + "---|" * (len(args.methods) + 1))
    for k in args.ks:
        cells = {r["method"]: r for r in rows if r["k"] == k}
        print(f"| {k} | " + " | ".join(f"{cells[m]['test_l2']:.4f} ({cells[m]['seconds']:.0f} s)" for m in args.methods)
              + " |")
    report = {"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(), "torch": torch.__version__,
              "threads": 1, "pretrain": [str(p) for p in pretrain], "target": str(target), "meta": args.meta,
              "model": args.model, "parent_epochs": args.parent_epochs, "parent_seconds": parent_seconds,
              "data_seconds": data_seconds, "steps": args.steps, "batch_size": args.batch_size, "n_val": args.n_val,
              "n_test": args.n_test, "lora": {"rank": args.lora_rank, "alpha": args.lora_alpha},
              "normalizers": args.normalizers,
              "zero_shot_test_l2": zero_shot, "rows": rows}
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
