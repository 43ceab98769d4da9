"""Streamed training data against data held in memory: peak memory and epoch time.

Issue 13: "FNO on the Darcy-421 set of 1024 samples (1.4 GB) trained at 421 (or strided) with peak
RSS below 1 GB, against in-memory, epoch time within 1.2x".

    oplab generate darcy --n 1024 --resolution 421 --out benchmarks/.cache/darcy421-1024.h5 --workers 2
    python benchmarks/streaming.py                      # ~15 min on a 2-core CPU

Each mode runs ``oplab train`` in its own process (so its memory is its own) on the same split
(1000 train, no validation, the last 24 test) with the same small FNO (width 12, modes [12, 12],
4 layers) for ``--epochs`` epochs at ``--resolution`` (421: the stored grid):

* ``memory``: ``data.in_memory=true`` (every split read into tensors first);
* ``stream-w0``: ``data.in_memory=false, data.workers=0`` (batches read in the training process);
* ``stream-w2``: ``data.in_memory=false, data.workers=2`` (two reader processes, 4 batches ahead).

Memory: a sampler thread reads the process tree's memory every 0.25 s (psutil): ``peak_rss`` of
the training process alone, and ``peak_pss_tree``, the proportional set size summed over the
training process and its reader processes (shared pages, e.g. torch's libraries, counted once:
the memory the job really takes). Time: the median ``epoch_seconds`` of metrics.jsonl (the batch
loop, reading included) and the whole command's wall time. Writes ``benchmarks/streaming.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
DATA = HERE / ".cache" / "darcy421-1024.h5"
MODES = {
    "memory": ["data.in_memory=true"],
    "stream-w0": ["data.in_memory=false", "data.workers=0"],
    "stream-w2": ["data.in_memory=false", "data.workers=2"],
}


def sample_memory(proc: psutil.Process, stop: threading.Event, peaks: dict) -> None:
    while not stop.is_set():
        try:
            rss = proc.memory_info().rss
            pss = proc.memory_full_info().pss
            for child in proc.children(recursive=True):
                try:
                    pss += child.memory_full_info().pss
                except psutil.Error:
                    pass
            peaks["rss"] = max(peaks.get("rss", 0), rss)
            peaks["pss_tree"] = max(peaks.get("pss_tree", 0), pss)
        except psutil.Error:
            break
        stop.wait(0.25)


def run_mode(name: str, settings: list[str], args, work: Path) -> dict:
    out = work / name
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "oplab", "train", "--data", str(args.data), "--model", "fno", "--out", str(out),
           "--n-train", "1000", "--n-test", "24", "--n-val", "0", "--epochs", str(args.epochs), "--batch-size", "10"]
    if args.resolution:
        cmd += ["--resolution", str(args.resolution)]
    for item in ["model.width=12", "model.modes=[12, 12]", "model.n_layers=4", "model.lifting_channels=24",
                 "model.projection_channels=24", f"train.eval_every={args.epochs}", "train.plot_samples=0",
                 *settings]:
        cmd += ["--set", item]
    tic = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict = {}
    stop = threading.Event()
    thread = threading.Thread(target=sample_memory, args=(proc, stop, peaks), daemon=True)
    thread.start()
    output = proc.communicate()[0]
    stop.set()
    thread.join()
    wall = time.perf_counter() - tic
    (work / f"{name}.log").write_text(output)
    if proc.returncode:
        return {"mode": name, "failed": output.strip().splitlines()[-1:]}
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    test = lines[-1].get("test", {})
    return {"mode": name, "settings": settings, "epoch_seconds": statistics.median(r["epoch_seconds"] for r in lines),
            "epochs": [r["epoch_seconds"] for r in lines], "wall_seconds": wall,
            "peak_rss_mb": peaks.get("rss", 0) / 2**20, "peak_pss_tree_mb": peaks.get("pss_tree", 0) / 2**20,
            "test_l2": next(iter(test.values()))["l2"] if test else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--resolution", type=int, default=None, help="train at this resolution (default: 421)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument("--work", type=Path, default=HERE / ".cache" / "streaming")
    parser.add_argument("--json", type=Path, default=HERE / "streaming.json")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data}: missing; make it with: oplab generate darcy --n 1024 --resolution 421 "
                 f"--out {args.data} --workers 2")
    args.work.mkdir(parents=True, exist_ok=True)
    rows = [run_mode(name, MODES[name], args, args.work) for name in args.modes]
    base = next((r for r in rows if r["mode"] == "memory" and "failed" not in r), None)
    print(f"{'mode':<10} {'epoch s':>8} {'x memory':>8} {'wall s':>7} {'peak RSS MB':>11} {'peak PSS tree MB':>16} {'test L2':>8}")
    for r in rows:
        if "failed" in r:
            print(f"{r['mode']:<10} failed: {r['failed']}")
            continue
        ratio = r["epoch_seconds"] / base["epoch_seconds"] if base else float("nan")
        r["epoch_ratio_vs_memory"] = ratio
        print(f"{r['mode']:<10} {r['epoch_seconds']:>8.1f} {ratio:>8.2f} {r['wall_seconds']:>7.0f} "
              f"{r['peak_rss_mb']:>11.0f} {r['peak_pss_tree_mb']:>16.0f} {r['test_l2'] or float('nan'):>8.4f}")
    info = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
            "cpus": psutil.cpu_count(), "data": str(args.data), "data_bytes": args.data.stat().st_size,
            "resolution": args.resolution or 421, "epochs": args.epochs, "rows": rows}
    args.json.write_text(json.dumps(info, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
