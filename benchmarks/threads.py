"""Two training processes on one machine: epoch times by thread setting (issue 22, item 5).

    python benchmarks/threads.py [--work DIR] [--epochs 6]

The issue's case: ``oplab train`` of an FNO on Darcy-32 (300 samples) while a second torch process
trains too. Each row starts a competitor (the same training, on its own data copy, running for the
whole measurement) and then the measured run, and reports the measured run's epoch times (median
and worst, epochs 1.. : epoch 0 includes start-up):

* alone, torch's default (every core), and with ``OMP_WAIT_POLICY=PASSIVE`` (its cost alone);
* beside a competitor, both with torch's default threads (the old behaviour: 2 + 2 threads on 2 cores);
* beside a competitor, both with ``OMP_WAIT_POLICY=PASSIVE`` (waiting OpenMP threads sleep at once);
* beside a competitor, the measured run with oplab's default (``train.threads: 0``: the free cores).

Writes the table and ``benchmarks/threads.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _train(data: Path, out: Path, epochs: int, env: dict, threads: int | None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "oplab", "train", "--data", str(data), "--model", "fno", "--n-train", "250",
            "--n-test", "50", "--epochs", str(epochs), "--batch-size", "10", "--out", str(out),
            "--set", "train.eval_every=1000", "--set", "train.plot_samples=0"]
    if threads is not None:
        argv += ["--threads", str(threads)]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _epoch_seconds(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["epoch_seconds"] for r in rows if "epoch_seconds" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/oplab-threads"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--json", type=Path, default=ROOT / "threads.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from oplab import problems
    from oplab.data.generation import generate
    from oplab.train.threads import cores

    data = args.work / "darcy32.h5"
    generate(problems.create("darcy", resolution=32), 300, data, seed=0, resume=True)
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    passive = {**base, "OMP_WAIT_POLICY": "PASSIVE"}
    n = cores()
    rows = [("alone, torch's default threads", None, base, n),
            ("alone, OMP_WAIT_POLICY=PASSIVE", None, passive, n),
            ("beside a competitor, both torch's default threads", base, base, n),
            ("beside a competitor, both OMP_WAIT_POLICY=PASSIVE", passive, passive, n),
            ("beside a competitor, oplab's default (the free cores)", base, base, 0)]
    results = []
    for i, (label, competitor_env, env, threads) in enumerate(rows):
        for old in (args.work / f"competitor{i}", args.work / f"run{i}"):
            shutil.rmtree(old, ignore_errors=True)
        competitor = None
        if competitor_env is not None:
            competitor = _train(data, args.work / f"competitor{i}", 1000, competitor_env, n)
            time.sleep(8)  # let it reach its training loop
        out = args.work / f"run{i}"
        tic = time.perf_counter()
        proc = _train(data, out, args.epochs, env, threads)
        log = proc.communicate()[0]
        wall = time.perf_counter() - tic
        if competitor is not None:
            competitor.kill()
            competitor.wait()
        if proc.returncode != 0:
            raise SystemExit(f"{label}: the run failed:\n{log}")
        seconds = _epoch_seconds(out)[1:]
        note = next((line for line in log.splitlines() if line.startswith("threads:")), "")
        results.append({"setting": label, "epoch_median_s": statistics.median(seconds), "epoch_max_s": max(seconds),
                        "epochs": seconds, "wall_s": wall, "log": note})
        print(f"{label}: epoch median {statistics.median(seconds):.2f} s, worst {max(seconds):.2f} s {note}", flush=True)
    print("\n| setting | epoch, median (s) | epoch, worst (s) |\n|---|---|---|")
    for r in results:
        print(f"| {r['setting']} | {r['epoch_median_s']:.2f} | {r['epoch_max_s']:.2f} |")
    out = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
           "cores": n, "epochs": args.epochs, "results": results}
    args.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
