"""Peak memory of MG-TFNO against FNO and TFNO: one training step and one inference pass.

    python benchmarks/mgtfno_memory.py [--resolutions 128 256] [--batch 2] [--threads 1] [--device cpu]

Every configuration runs in fresh Python processes, one for a training step
(forward, relative-L2 loss, backward; no optimizer state) and one for an
inference pass, through :func:`oplab.bench.modelcard.measure`, whose docstring
gives the method (peak resident memory above the built model on the CPU with
glibc's mmap threshold pinned, or CUDA's max allocated); the wall time of one
call is reported too (indicative only). Reported per sample: the step's peak divided by ``--batch``.

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
import json
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


# ------------------------------------------------------------------ driver
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--json", type=Path, default=HERE / "mgtfno_memory.json")
    args = parser.parse_args()

    import torch

    from oplab.bench.machine import describe
    from oplab.bench.modelcard import measure

    torch.set_num_threads(args.threads)  # as in the workers, so describe() reports it
    rows = []
    header = f"{'model':<18}{'res':>5}{'params':>10}{'train MiB/sample':>19}{'infer MiB/sample':>19}{'train s':>9}{'infer s':>9}"
    print(f"batch {args.batch}, {args.threads} thread(s), {args.device}; peak memory added by one step, per sample")
    print(header)
    for resolution in args.resolutions:
        for label in args.cases:
            shape = [args.batch, 1, resolution, resolution]
            result = measure(model_args(CASES[label]), shape, shape, threads=args.threads, device=args.device,
                             repeats=1)
            row = {"model": label, "resolution": resolution, "batch": args.batch, "args": result["model"],
                   "params": result["params"]}
            for mode in ("train", "infer"):
                row[f"{mode}_mib_per_sample"] = result[f"{mode}_mib_per_sample"]
                row[f"{mode}_bound"] = result[f"{mode}_bound"]
                row[f"{mode}_seconds"] = result[f"{mode}_ms"] / 1e3
            rows.append(row)

            def cell(mode: str) -> str:
                mark = "<=" if row[f"{mode}_bound"] == "<=" else ""
                return f"{mark}{row[f'{mode}_mib_per_sample']:.1f}"

            print(f"{label:<18}{resolution:>5}{row['params']:>10}{cell('train'):>19}{cell('infer'):>19}"
                  f"{row['train_seconds']:>9.2f}{row['infer_seconds']:>9.2f}", flush=True)
    record = {"date": time.strftime("%Y-%m-%d"), "machine": describe(args.device),
              "command": " ".join(["python", "benchmarks/mgtfno_memory.py", *sys.argv[1:]]),
              "method": "oplab.bench.modelcard: fresh process per model and mode, warm-up on one sample; CPU: "
                        "ru_maxrss high-water mark minus resident set before the step, glibc MALLOC_MMAP_THRESHOLD_="
                        "131072; CUDA: max_memory_allocated minus allocated before the step",
              "threads": args.threads, "batch": args.batch, "rows": rows}
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
