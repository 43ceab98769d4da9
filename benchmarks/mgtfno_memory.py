"""Peak memory of MG-TFNO against FNO and TFNO: one training step and one inference pass.

    python benchmarks/mgtfno_memory.py [--resolutions 128 256] [--batch 2] [--threads 1] [--device cpu]

Every configuration runs in a fresh Python process (``--worker``), which builds
the model, runs one warm-up step on a 32x32 grid (lazy imports, FFT plans),
makes a batch of random inputs, then runs once either a training step
(forward, relative-L2 loss, backward; no optimizer state) or an inference pass
(``torch.inference_mode``); its wall time is reported too (one run, indicative). On CPU the memory the step adds is read from the
process's high-water mark: with ``cur`` the resident set after building (from
``/proc/self/statm``) and ``hw`` the high-water mark then (``ru_maxrss``), the
step's peak is ``ru_maxrss_after - cur`` exactly when the step raised the mark
(``ru_maxrss_after > hw``), else at most ``hw - cur`` (reported as an upper
bound, marked ``<=``). On CUDA it is ``torch.cuda.max_memory_allocated()`` after
``reset_peak_memory_stats()``, minus the memory allocated before the step.
The workers run with ``MALLOC_MMAP_THRESHOLD_=131072``: glibc then serves every
block over 128 KiB by ``mmap`` and unmaps it when freed, so the resident set
follows the live tensors (glibc's default raises that threshold after the first
large free, and freed heap blocks can stay resident, which inflates the high-water
mark of runs that free and reallocate a lot, e.g. the chunked ones, by up to 2x).
Reported per sample: the step's peak divided by ``--batch``.

Models (channels 1 -> 1, width 32, 4 layers, lifting and projection 128, as
FNO's defaults): ``fno`` (modes 12), ``tfno`` (modes 12, Tucker 0.1 per layer)
and MG-TFNO (joint Tucker 0.1, modes 12 on the padded patch, context padding an
eighth of the patch, periodic axes, no inner domain padding) with 2x2 and 4x4
patches, 1 or 2 coarse levels, and ``patch_batch`` ``None`` (all patches at
once), one sample's patches, or one patch. Writes ``benchmarks/mgtfno_memory.json``
next to this script, with the machine (``oplab.bench.machine.describe``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

COMMON = dict(width=32, n_layers=4, lifting_channels=128, projection_channels=128)

# label -> model arguments (patch_batch "sample": the patches of one sample, prod(patches))
CASES = {
    "fno": {"name": "fno", "modes": [12, 12]},
    "tfno": {"name": "tfno", "modes": [12, 12]},
    "mg 2x2 L1": {"name": "mgtfno", "patches": 2, "levels": 1, "patch_batch": None},
    "mg 2x2 L1 pb=1": {"name": "mgtfno", "patches": 2, "levels": 1, "patch_batch": 1},
    "mg 2x2 L2 pb=4": {"name": "mgtfno", "patches": 2, "levels": 2, "patch_batch": "sample"},
    "mg 4x4 L1": {"name": "mgtfno", "patches": 4, "levels": 1, "patch_batch": None},
    "mg 4x4 L1 pb=16": {"name": "mgtfno", "patches": 4, "levels": 1, "patch_batch": "sample"},
    "mg 4x4 L2 pb=16": {"name": "mgtfno", "patches": 4, "levels": 2, "patch_batch": "sample"},
    "mg 4x4 L2 pb=4": {"name": "mgtfno", "patches": 4, "levels": 2, "patch_batch": 4},
}


def model_args(case: dict) -> dict:
    case = dict(case)
    if case["name"] == "mgtfno":
        if case["patch_batch"] == "sample":
            case["patch_batch"] = case["patches"] ** 2
        case.update(modes=[12, 12], padding=0.125, periodic=True, domain_padding=0.0)
    return {**COMMON, **case}


# -------------------------------------------------------------- one run
def _rss_kib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


def worker(spec: dict) -> dict:
    import torch

    from oplab import models

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    kwargs = dict(spec["model"])
    name = kwargs.pop("name")
    model = models.create(name, in_channels=1, out_channels=1, **kwargs).to(device)
    train = spec["mode"] == "train"
    model.train(train)

    def inputs(n: int, batch: int):
        x = torch.randn(batch, 1, n, n, device=device)
        y = torch.randn(batch, 1, n, n, device=device)
        return x, y, tuple((torch.arange(n, device=device) + 0.5) / n for _ in range(2))

    def step(x, y, coords):
        if train:
            out = model(x, coords)
            loss = ((out - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)).mean()
            loss.backward()
        else:
            with torch.inference_mode():
                model(x, coords)

    step(*inputs(32, 1))  # warm-up on a small grid: lazy imports, FFT plans, allocator pools
    model.zero_grad(set_to_none=True)
    x, y, coords = inputs(spec["resolution"], spec["batch"])
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        cur, hw = _rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    step(x, y, coords)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak_mib, bound = (torch.cuda.max_memory_allocated() - before) / 2**20, "="
    else:
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mib, bound = ((after - cur) / 1024, "=") if after > hw else ((hw - cur) / 1024, "<=")
    return {"peak_mib": peak_mib, "bound": bound, "seconds": seconds, "params": model.n_params()}


# ------------------------------------------------------------------ driver
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--json", type=Path, default=HERE / "mgtfno_memory.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import torch

    from oplab.bench.machine import describe

    torch.set_num_threads(args.threads)  # as in the workers, so describe() reports it
    rows = []
    header = f"{'model':<18}{'res':>5}{'params':>10}{'train MiB/sample':>19}{'infer MiB/sample':>19}{'train s':>9}{'infer s':>9}"
    print(f"batch {args.batch}, {args.threads} thread(s), {args.device}; peak memory added by one step, per sample")
    print(header)
    for resolution in args.resolutions:
        for label in args.cases:
            row = {"model": label, "resolution": resolution, "batch": args.batch, "args": model_args(CASES[label])}
            for mode in ("train", "infer"):
                spec = {"model": row["args"], "resolution": resolution, "batch": args.batch, "mode": mode,
                        "threads": args.threads, "device": args.device}
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
                       "MALLOC_MMAP_THRESHOLD_": "131072"}  # see the module docstring
                done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                                      capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{label} at {resolution} ({mode}) failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                row["params"] = result["params"]
                row[f"{mode}_peak_mib"] = result["peak_mib"]
                row[f"{mode}_bound"] = result["bound"]
                row[f"{mode}_mib_per_sample"] = result["peak_mib"] / args.batch
                row[f"{mode}_seconds"] = result["seconds"]
            rows.append(row)

            def cell(mode: str) -> str:
                mark = "<=" if row[f"{mode}_bound"] == "<=" else ""
                return f"{mark}{row[f'{mode}_mib_per_sample']:.1f}"

            print(f"{label:<18}{resolution:>5}{row['params']:>10}{cell('train'):>19}{cell('infer'):>19}"
                  f"{row['train_seconds']:>9.2f}{row['infer_seconds']:>9.2f}", flush=True)
    record = {"date": time.strftime("%Y-%m-%d"), "machine": describe(args.device),
              "command": " ".join(["python", "benchmarks/mgtfno_memory.py", *sys.argv[1:]]),
              "method": "fresh process per run, one warm-up step on 32x32; CPU: ru_maxrss high-water mark minus resident "
                        "set after build, glibc MALLOC_MMAP_THRESHOLD_=131072; "
                        "CUDA: max_memory_allocated minus allocated before the step",
              "threads": args.threads, "batch": args.batch, "rows": rows}
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
