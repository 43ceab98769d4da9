"""Multi-operator pretraining on LeMON's 1D families and few-shot transfer to unseen ones (issue 17).

LeMON (Sun, Zhang & Schaeffer, "LeMON: Learning to learn multi-operator networks", arXiv:2408.16168)
pretrains one operator on several PDE families and fine-tunes it on an unseen family with K = 10,
20, 50, 100 samples (full fine-tuning or LoRA), against training from scratch on the K samples;
its PAML variant meta-learns the initialisation. This benchmark does that at a CPU size with
oplab's pieces:

* data: ``pde1d`` (``oplab.problems.pde1d``): the seven pretraining families in one file (sample i
  of family ``i % 7``), each unseen family in its own file; inputs ``[u0, c_1 .. c_15]`` (the
  equation's coefficients on a common term library: the conditioning), output ``u(t_end)``;
* pretraining: one FNO-1D (``oplab.train``) on the multi-family file, the ``best`` checkpoint on its
  validation samples; per-family test errors on a separate test file;
* meta-initialisation: first-order MAML (``oplab.train.finetune.meta_init``) over one file per
  pretraining family, the same model;
* transfer: for each unseen family and K, scratch / full / LoRA / head from the pretrained run
  and full from the meta-initialisation (``oplab.train.finetune.finetune``), every run the same
  number of optimizer steps; the normalisers (the parent's, or refitted to the K samples) chosen
  per (family, K, method) on the K-run's validation samples; test errors on held-out samples.

Prints the tables and writes ``benchmarks/transfer1d.json``::

    OMP_NUM_THREADS=1 python benchmarks/transfer1d.py --work /tmp/oplab-transfer1d

Options for the robustness study (``benchmarks/transfer1d_strong*.json``): ``--pretrain-minutes`` (a wall-clock
cap on the pretraining), ``--gen-workers``, ``--seeds`` (the transfer runs' training seeds: initialisation of
scratch and LoRA, batch order), ``--lora-rank/--lora-alpha`` and method names ``lora:R:A`` (a second LoRA
variant, e.g. ``lora:64:320``), and the budget protocol: ``--steps S`` (default: every run S optimizer steps of
batch ``--batch``), ``--epochs E`` (every run E epochs over its own K samples), ``--batch 0`` (full batch: one
step per epoch). LeMON's own fine-tuning scripts (github.com/JingminSun/LeMON, ``scripts/loraexperiments.sh``,
``scripts/fno.sh``) use ``batch_size=K n_steps_per_epoch=1 max_epoch=100``: 100 full-batch AdamW steps for
every K (equal steps and equal epochs at once), LoRA ``lora_r=64 lora_alpha=5``, where their layer
(``src/models/finetune_model.py``) adds ``alpha * x A B`` with ``A ~ N(0, 1/r)``: oplab's scaling is
``alpha / r``, so their update's scale 5 is oplab's ``lora:64:320`` (at width 64 the two initialisations of
``A`` coincide, std 1/8): ``--batch 0 --epochs 100`` is their protocol.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

import oplab
from oplab import problems
from oplab.data.generation import generate
from oplab.problems.pde1d import GROUPS, family_of
from oplab.train.api import run as train_run
from oplab.train.config import from_dict
from oplab.train.finetune import finetune, meta_init

HERE = Path(__file__).resolve().parent


def make(work: Path, name: str, family: str, n: int, seed: int, resolution: int, workers: int = 2) -> Path:
    path = work / f"{name}.h5"
    if not path.exists():
        tic = time.perf_counter()
        generate(problems.create("pde1d", resolution, family=family), n, path, seed=seed, workers=workers)
        print(f"generated {path.name}: {n} samples of {family} in {time.perf_counter() - tic:.0f} s", flush=True)
    return path


def rel_l2(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    d = (pred - true).reshape(len(true), -1)
    return np.linalg.norm(d, axis=1) / np.linalg.norm(true.reshape(len(true), -1), axis=1)


def per_family(run: Path, test: Path) -> dict:
    """Test error of the run's ``best`` model per family of the multi-family file ``test``."""
    op = oplab.load(run)
    ds = oplab.data.open(test)
    x, y = ds.arrays()
    err = rel_l2(op(x), y)
    out: dict = {}
    for i, e in enumerate(err):
        out.setdefault(family_of(ds.meta["params"], i), []).append(float(e))
    return {f: float(np.mean(v)) for f, v in out.items()}


def test_error(run: Path, data: Path, n_test: int) -> float:
    """Mean relative L2 of the run's ``best`` model on the last ``n_test`` samples of ``data``."""
    ds = oplab.data.open(data)
    n = len(ds)
    x, y = ds.arrays(range(n - n_test, n))
    return float(rel_l2(oplab.load(run)(x), y).mean())


def steps_epochs(k: int, batch: int, steps: int) -> int:
    return max(1, math.ceil(steps / math.ceil(k / batch)))


def parse_method(spec: str, rank: int, alpha: float) -> tuple[str, int, float]:
    """``lora:R:A`` -> (``lora``, R, A); any other method name keeps ``--lora-rank/--lora-alpha``."""
    name, *rest = spec.split(":")
    if rest and (name != "lora" or len(rest) != 2):
        raise SystemExit(f"--methods: {spec!r}: only lora takes a rank and alpha (lora:RANK:ALPHA)")
    return (name, int(rest[0]), float(rest[1])) if rest else (name, rank, alpha)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/oplab-transfer1d")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--per-family", type=int, default=150, help="pretraining samples per family")
    ap.add_argument("--pretrain-epochs", type=int, default=40)
    ap.add_argument("--unseen", default="burgers,kdv,wave")
    ap.add_argument("--ks", default="10,20,50,100")
    ap.add_argument("--steps", type=int, default=500, help="optimizer steps of every transfer run")
    ap.add_argument("--epochs", type=int, default=0,
                    help="instead of --steps: this many epochs over its own K samples for every transfer run")
    ap.add_argument("--batch", type=int, default=10, help="transfer batch size; 0: K (full batch, LeMON's)")
    ap.add_argument("--seeds", default="0", help="training seeds of the transfer runs (comma-separated)")
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--lora-alpha", type=float, default=8.0, help="oplab's LoRA scale is alpha / rank")
    ap.add_argument("--pretrain-minutes", type=float, default=0.0, help="wall-clock cap of the pretraining (0: off)")
    ap.add_argument("--gen-workers", type=int, default=2, help="processes generating the data")
    ap.add_argument("--n-test", type=int, default=50, help="held-out test samples per unseen family")
    ap.add_argument("--meta-steps", type=int, default=300)
    ap.add_argument("--modes", type=int, default=24)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--methods", default="scratch,full,lora,head,meta")
    ap.add_argument("--normalizers", default="refit,parent",
                    help="the fine-tunes' normaliser choices, one chosen per run on validation (oplab finetune --normalizers)")
    ap.add_argument("--json", default=str(HERE / "transfer1d.json"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    res = args.resolution
    pre = GROUPS["pretrain"]
    unseen = [f.strip() for f in args.unseen.split(",") if f.strip()]
    ks = [int(k) for k in args.ks.split(",")]
    methods = args.methods.split(",")
    torch.set_num_threads(1)

    # data: the multi-family pretraining file (+ its validation part at its end), a test file, one file per
    # pretraining family for the meta-initialisation, one file per unseen family
    n_pre = args.per_family * len(pre)
    gw = args.gen_workers
    pre_file = make(work, "pretrain", "pretrain", n_pre, 0, res, gw)
    pre_test = make(work, "pretrain_test", "pretrain", 20 * len(pre), 1, res, gw)
    n_unseen = max(ks) + max(2, max(ks) // 4) + args.n_test
    unseen_files = {f: make(work, f"unseen_{f}", f, n_unseen, 2, res, gw) for f in unseen}
    task_files = [make(work, f"task_{f}", f, 60, 10, res, gw) for f in pre] if "meta" in methods else []
    seeds = [int(s) for s in args.seeds.split(",")]

    model = {"name": "fno", "modes": [args.modes], "width": args.width}
    batch = 10
    record: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "machine": "the shared 2-core VM, loaded by other jobs", "command": " ".join(sys.argv),
                    "settings": vars(args), "model": model, "pretrain": {}, "transfer": []}

    # pretraining
    parent = work / "pretrained"
    if not (parent / "config.json").exists() or not any((parent / "checkpoints").glob("best*")):
        shutil.rmtree(parent, ignore_errors=True)
        cfg = from_dict({"data": {"train": str(pre_file), "test": str(pre_test), "n_val": 10 * len(pre)},
                         "model": model,
                         "train": {"epochs": args.pretrain_epochs, "batch_size": batch, "lr": 1e-3, "eval_every": 5,
                                   "threads": 1, "plot_samples": 0, "budget_minutes": args.pretrain_minutes},
                         "out": str(parent)})
        tic = time.perf_counter()
        result = train_run(cfg, log=lambda s: None)
        record["pretrain"]["seconds"] = time.perf_counter() - tic
        record["pretrain"]["epochs"] = len(result["history"])
        record["pretrain"]["best_val"] = min(r["val"]["l2"] for r in result["history"] if "val" in r)
    fam_err = per_family(parent, pre_test)
    record["pretrain"]["per_family_test"] = fam_err
    print("\npretrained FNO, test relative L2 per pretraining family:")
    for f, e in fam_err.items():
        print(f"  {f:14s} {e:.4f}")

    meta = work / "meta"
    if "meta" in methods and not (meta / "config.json").exists():
        shutil.rmtree(meta, ignore_errors=True)
        tic = time.perf_counter()
        meta_init([str(p) for p in task_files], dict(model), meta, n_train=50, n_val=10, steps=args.meta_steps,
                  log=lambda s: None)
        record["meta_seconds"] = time.perf_counter() - tic

    # transfer
    rows = record["transfer"]
    for fam in unseen:
        data = unseen_files[fam]
        for k, seed, spec in [(k, s, m) for k in ks for s in seeds for m in methods]:
            method, rank, alpha = parse_method(spec, args.lora_rank, args.lora_alpha)
            n_val = max(2, k // 4)
            tb = args.batch or k
            epochs = args.epochs or steps_epochs(k, tb, args.steps)
            steps = epochs * math.ceil(k / tb)
            common = dict(epochs=epochs, batch_size=tb, eval_every=max(1, epochs // 10), threads=1, plot_samples=0,
                          seed=seed)
            best = None
            for norms in (("refit",) if method == "scratch" else args.normalizers.split(",")):
                tag = spec.replace(":", "_") + (f"-s{seed}" if seed else "") + (
                    "" if (args.steps, args.epochs, args.batch) == (500, 0, 10) else f"-{steps}x{tb}")
                out = work / "runs" / f"{fam}-k{k}-{tag}-{norms}"
                shutil.rmtree(out, ignore_errors=True)
                tic = time.perf_counter()
                if method == "scratch":
                    cfg = from_dict({"data": {"train": str(data), "n_train": k + n_val, "n_val": n_val,
                                              "n_test": args.n_test, "in_memory": True},
                                     "model": model, "train": dict(common, lr=1e-3), "out": str(out)})
                    result = train_run(cfg, log=lambda s: None)
                    trainable = result["bundle"].model.n_params()
                else:
                    source = meta if method == "meta" else parent
                    result = finetune(source, data, method="full" if method == "meta" else method, n_train=k,
                                      n_val=n_val, n_test=args.n_test, out=out, normalizers=norms,
                                      lora_rank=rank, lora_alpha=alpha, log=lambda s: None, **common)
                    trainable = result["finetune"]["trainable_params"]
                seconds = time.perf_counter() - tic
                hist = result["history"]
                val = min(r["val"]["l2"] for r in hist if "val" in r)
                test = test_error(out, data, args.n_test)  # the best checkpoint (chosen on validation)
                row = {"family": fam, "k": k, "method": spec, "normalizers": norms, "val": val, "test": test,
                       "trainable": int(trainable), "seconds": seconds, "epochs": epochs, "steps": steps,
                       "batch": tb, "seed": seed}
                if best is None or val < best["val"]:
                    best = row
                print(f"  {fam:14s} K={k:3d} {spec:7s} s{seed} {norms:6s} {steps} steps val {val:.4f} "
                      f"test {test:.4f} trainable {trainable:,} {seconds:.1f}s", flush=True)
            best["chosen"] = True
            rows.append(best)
        Path(args.json).write_text(json.dumps(record, indent=1))

    print("\n| family | K | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for fam in unseen:
        for k in ks:
            cells = []
            for m in methods:
                errs = [r["test"] for r in rows if r["family"] == fam and r["k"] == k and r["method"] == m]
                cells.append("-" if not errs else f"{np.mean(errs):.4f}" + (
                    "" if len(errs) == 1 else " (" + ", ".join(f"{e:.4f}" for e in errs) + ")"))
            print(f"| {fam} | {k} | " + " | ".join(cells) + " |")
    Path(args.json).write_text(json.dumps(record, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
