"""A learned proximal network (oplab.inverse.lpn) for the Darcy coefficient fields.

    OMP_NUM_THREADS=1 python benchmarks/lpn_darcy.py [--data FILE.h5] [--n 1000] [--sigma 0.5] ...

Trains an LPN (Fang, Buchanan & Sulam, ICLR 2024) as a denoiser of the two-phase permeability
``a`` (3 / 12) of the FNO Darcy benchmark: L1 pretraining, then proximal matching with a
decreasing ``gamma`` (:func:`oplab.inverse.lpn.train_lpn`), on the first ``n - test`` fields of
the data set (``--data``; default: ``--n`` fields generated at ``--resolution`` 32 into
``--work``), normalised by their mean and std, noise ``--sigma`` in those units (0.5: half the
field's std; the two phases sit at about -0.9 and +1.1). On the last ``--test`` fields (never
seen in training), with fresh noise, it reports

* the learned regulariser ``R_theta`` on clean against noisy fields (mean, and the fraction of
  fields where the noisy one scores higher), normalised units, up to one common constant;
* the denoising error: relative L2 of ``f(y)`` and of the noisy input ``y`` against the clean
  field (physical units), and the fraction of nodes in the right phase (threshold at the mid
  value) of ``f(y)`` and of ``y``.

Writes ``--json`` (default ``benchmarks/lpn_darcy.json``) and, with ``--save DIR``, the LPN
(safetensors + JSON, :func:`oplab.inverse.lpn.save_lpn`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent


def fields(args) -> tuple[np.ndarray, dict, str]:
    from oplab import data, problems

    path = args.data
    if path is None:
        from oplab.data.generation import generate

        args.work.mkdir(parents=True, exist_ok=True)
        path = args.work / f"darcy{args.resolution}-{args.n}.h5"
        generate(problems.create("darcy", resolution=args.resolution), args.n, path, seed=args.seed, resume=True)
    ds = data.open(path)
    n = min(len(ds), args.n)
    a, _ = ds.arrays(list(range(n)), outputs=False)
    return a.astype(np.float32), dict(ds.meta.get("params") or {}), str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="a Darcy data set (default: generate one)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/oplab-lpn"))
    parser.add_argument("--n", type=int, default=1000, help="fields to use (train + test)")
    parser.add_argument("--test", type=int, default=50, help="held-out fields (the last ones)")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--sigma", type=float, default=0.5, help="noise std in normalised units")
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--beta", type=float, default=4.0)
    parser.add_argument("--pretrain-steps", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--crop", type=int, default=16, help="random crops of this size (0: whole fields)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--lr-pm", type=float, default=1e-3)
    parser.add_argument("--gamma", type=float, nargs=2, default=None, metavar=("START", "END"),
                        help="proximal matching gamma (default: sigma .. sigma / 4)")
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, default=None, help="write the LPN to this folder")
    parser.add_argument("--json", type=Path, default=ROOT / "lpn_darcy.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from oplab.inverse.lpn import save_lpn, train_lpn

    a, params, source = fields(args)
    if not 0 < args.test < len(a):
        raise SystemExit(f"--test must be between 1 and {len(a) - 1} (the set has {len(a)} fields)")
    train, test = a[:-args.test], a[-args.test:]
    print(f"{source}: {len(train)} training and {len(test)} test fields {list(a.shape[1:])}", flush=True)
    gamma = tuple(args.gamma) if args.gamma else (args.sigma, args.sigma / 4)
    tic = time.perf_counter()
    model, history = train_lpn(train, args.sigma, hidden=args.hidden, layers=args.layers, kernel_size=args.kernel,
                               beta=args.beta, pretrain_steps=args.pretrain_steps, steps=args.steps,
                               batch_size=args.batch, lr=args.lr, lr_pm=args.lr_pm, gamma=gamma,
                               stages=args.stages, crop=args.crop or None, seed=args.seed,
                               log=lambda s: print(s, flush=True),
                               log_every=max(1, (args.pretrain_steps + args.steps) // 20))
    train_seconds = time.perf_counter() - tic
    if args.save:
        save_lpn(model, args.save)

    a_clean = torch.from_numpy(test)
    x = model.normalise(a_clean)
    y = x + args.sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(args.seed + 1))
    with torch.no_grad():
        fy = model(y)
    a_noisy, a_den = model.denormalise(y), model.denormalise(fy)
    tic = time.perf_counter()
    r_clean, res_clean = model.regulariser(x, return_residual=True, tol=1e-5)
    r_noisy, res_noisy = model.regulariser(y, return_residual=True, tol=1e-5)
    r_den, res_den = model.regulariser(fy, return_residual=True, tol=1e-5)
    reg_seconds = time.perf_counter() - tic

    def rel(u):
        return float(((u - a_clean).flatten(1).norm(dim=1) / a_clean.flatten(1).norm(dim=1)).mean())

    lo, hi = float(params.get("contrast_low", a.min())), float(params.get("contrast_high", a.max()))
    mid = 0.5 * (lo + hi)

    def phase(u):
        return float(((u > mid) == (a_clean > mid)).float().mean())

    d = x[0].numel()
    pre = history["loss"][:args.pretrain_steps]
    result = {
        "benchmark": "lpn_darcy", "date": datetime.date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": args.threads, "data": source, "fields": list(a.shape[1:]),
        "n_train": len(train), "n_test": len(test), "sigma": args.sigma,
        "normalisation": {"mean": model.config["mean"], "std": model.config["std"]},
        "model": {k: model.config[k] for k in ("hidden", "layers", "kernel_size", "alpha", "beta", "quadratic",
                                                 "padding_mode")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": {"pretrain_steps": args.pretrain_steps, "steps": args.steps, "batch": args.batch,
                     "crop": args.crop or None, "lr": args.lr, "lr_pm": args.lr_pm, "gamma": list(gamma),
                     "stages": args.stages, "seconds": train_seconds,
                     "final_pretrain_loss": float(np.mean(pre[-50:])) if pre else None,
                     "final_pm_loss": float(np.mean(history["loss"][-50:])) if args.steps else None},
        "regulariser": {"clean_mean": float(r_clean.mean()), "noisy_mean": float(r_noisy.mean()),
                        "denoised_mean": float(r_den.mean()),
                        "clean_per_value": float(r_clean.mean()) / d, "noisy_per_value": float(r_noisy.mean()) / d,
                        "noisy_above_clean": float((r_noisy > r_clean).float().mean()),
                        "inversion_residual": max(res_clean, res_noisy, res_den), "seconds": reg_seconds},
        "denoising": {"rel_l2_noisy": rel(a_noisy), "rel_l2_lpn": rel(a_den),
                      "phase_accuracy_noisy": phase(a_noisy), "phase_accuracy_lpn": phase(a_den),
                      "rmse_normalised_noisy": float((y - x).square().mean().sqrt()),
                      "rmse_normalised_lpn": float((fy - x).square().mean().sqrt())},
    }
    reg, den = result["regulariser"], result["denoising"]
    print(f"trained in {train_seconds:.0f} s; R_theta (normalised units, common constant): "
          f"clean {reg['clean_mean']:.4g}, "
          f"noisy {reg['noisy_mean']:.4g}, denoised {reg['denoised_mean']:.4g}; noisy > clean on "
          f"{reg['noisy_above_clean']:.0%} of the test fields (inversion residual {reg['inversion_residual']:.1e})")
    print(f"denoising (relative L2, physical units): noisy input {den['rel_l2_noisy']:.4f}, "
          f"LPN {den['rel_l2_lpn']:.4f}; "
          f"phase accuracy: noisy {den['phase_accuracy_noisy']:.4f}, LPN {den['phase_accuracy_lpn']:.4f}")
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
