"""Load test of ``oplab serve`` on loopback (issue 19, part 3): requests per second and p50 / p99
latency at 1, 8 and 32 concurrent clients, failed requests, and the server's memory over 10^4 requests.

    python benchmarks/serve_load.py                    # makes a Darcy-64 FNO run in --work first (~2 min)
    python benchmarks/serve_load.py --run RUN_DIR      # an existing run

The run (without ``--run``): ``oplab generate darcy --n 200 --resolution 64 --seed 0`` and ``oplab train
--model fno-darcy`` (FNO modes 12, width 32, 4 layers) on 160 of the samples for ``--epochs`` epochs,
kept in ``--work`` and reused. The server is ``python -m oplab serve RUN --port 0`` in a subprocess
(``OMP_NUM_THREADS=--threads``, access log off); the clients are closed-loop ``httpx.AsyncClient``
coroutines in this process, each sending one sample (``[1, 64, 64]`` float32 as .npy, 16 kB) at a time,
the next when its answer is back. Every answer is checked against ``oplab.load(RUN)(x)`` (relative
1e-4); a non-200 answer, a wrong one or a transport error counts as failed. Bounded: ``--requests``
in total over the levels (split evenly) and ``--seconds`` per level at most. ``/health`` gives the
number of batched model calls per level (mean batch size).

Memory: the server's RSS (psutil) rises over the first few thousand requests, while the allocator
(glibc) builds up the working set of the largest batches and keeps freed memory for reuse, and then
moves in a band (measured in a soak: 265 -> 570 MB over ~4,000 requests of mixed batch sizes, then
535-650 MB over the next 10,000; the Python heap stays at ~12 MB). So warm-up cycles come first
(``--warmup-cycles`` times 100, 160 and 640 requests at 1, 8 and 32 clients; the idle RSS after each
is recorded), then the timed levels: the RSS is read with no request in flight before them and after
each level, and every second during them. A JSON-body level (``--json-requests`` at 8 clients)
follows, outside the memory window. (``MALLOC_MMAP_THRESHOLD_=1048576`` keeps the RSS at ~300 MB
from the start, at 40-80 % more time per sample: not the default.)

Writes ``--out`` (default benchmarks/serve_load.json) and prints a table.
"""

import argparse
import asyncio
import datetime
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

HERE = Path(__file__).resolve().parent


def sh(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def make_run(work: Path, epochs: int) -> Path:
    """A Darcy-64 FNO run in ``work`` (made once)."""
    oplab = [sys.executable, "-m", "oplab"]
    data, run = work / "darcy64.h5", work / "run-fno-darcy64"
    if not (run / "checkpoints" / "last").exists():
        work.mkdir(parents=True, exist_ok=True)
        sh([*oplab, "generate", "darcy", "--n", "200", "--resolution", "64", "--seed", "0", "--workers", "2",
            "--out", str(data), "--resume"])
        sh([*oplab, "train", "--data", str(data), "--model", "fno-darcy", "--out", str(run), "--n-train", "160",
            "--n-test", "40", "--epochs", str(epochs), "--batch-size", "10", "--seed", "0"])
    return run


def start_server(run: Path, args) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "oplab", "serve", str(run), "--port", "0", "--log-level", "warning",
           "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    print("$", " ".join(cmd[1:]), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if not match:
        proc.kill()
        raise SystemExit(f"oplab serve did not start: {line!r}")
    for _ in range(200):
        try:
            httpx.get(match.group(0) + "health", timeout=1)
            return proc, match.group(0)
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit("oplab serve does not answer /health")


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


async def level(url: str, name: str, clients: int, n: int, seconds: float, pool, fmt: str, rss=None) -> dict:
    """``n`` requests (or ``seconds``) from ``clients`` closed-loop clients; latencies and failures."""
    bodies = [npy(x) if fmt == "npy" else json.dumps({"input": x.tolist()}).encode() for x, _ in pool]
    headers = {"Content-Type": "application/x-npy" if fmt == "npy" else "application/json"}
    latencies, failed, errors, sent = [], 0, [], 0
    deadline = time.perf_counter() + seconds

    async def client(c: httpx.AsyncClient):
        nonlocal failed, sent
        while sent < n and time.perf_counter() < deadline:
            i = sent % len(pool)
            sent += 1
            t0 = time.perf_counter()
            try:
                r = await c.post(f"/models/{name}/predict", content=bodies[i], headers=headers)
                ok = r.status_code == 200
                if ok:
                    y = np.load(io.BytesIO(r.content)) if fmt == "npy" else np.array(r.json()["output"], np.float32)
                    want = pool[i][1]
                    ok = y.shape == want.shape and np.linalg.norm(y - want) <= 1e-4 * np.linalg.norm(want)
                if not ok and len(errors) < 5:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
            except httpx.HTTPError as exc:
                ok = False
                if len(errors) < 5:
                    errors.append(repr(exc))
            latencies.append(time.perf_counter() - t0)
            failed += not ok

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        before = (await c.get("/health")).json()["models"][name]
        stop = asyncio.Event()

        async def watch():  # the server's RSS every second
            while not stop.is_set() and rss is not None:
                rss.append(rss_mb())
                try:
                    await asyncio.wait_for(stop.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass

        watcher = asyncio.create_task(watch())
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
        stop.set()
        await watcher
        after = (await c.get("/health")).json()["models"][name]
    ms = np.array(latencies) * 1e3
    batches = after["batches"] - before["batches"]
    return {"format": fmt, "clients": clients, "requests": len(latencies), "failed": int(failed),
            "seconds": round(wall, 2), "rps": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2), "max_ms": round(float(ms.max()), 2),
            "batches": batches, "mean_batch": round((after["samples"] - before["samples"]) / max(batches, 1), 2),
            "stopped_by": "count" if len(latencies) >= n else "time", "errors": errors}


SERVER: psutil.Process | None = None
LOAD: list = []


def rss_mb() -> float:
    return round(SERVER.memory_info().rss / 2**20, 1)


def idle_rss() -> float:
    """The server's RSS with no request in flight (after a second's rest)."""
    time.sleep(1.0)
    return rss_mb()


def main() -> None:
    global SERVER
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, help="a trained run folder (default: make a Darcy-64 FNO run in --work)")
    p.add_argument("--work", type=Path, default=Path("/tmp/oplab-serve-load"))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--requests", type=int, default=10_000, help="timed requests in total, split over the levels")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=120.0, help="time limit per level")
    p.add_argument("--json-requests", type=int, default=500)
    p.add_argument("--warmup-cycles", type=int, default=6, help="warm-up cycles over the levels")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the server")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=HERE / "serve_load.json")
    args = p.parse_args()

    import torch

    import oplab

    torch.set_num_threads(1)
    global LOAD
    LOAD = [round(v, 2) for v in os.getloadavg()]
    run = args.run or make_run(args.work, args.epochs)
    op = oplab.load(run)
    name = run.resolve().name
    split = op.data.get("split") or {}
    part = (split.get("tests") or [None])[0]
    if part and Path(part["file"]).is_file():
        idx = [i for a, b in part["ranges"] for i in range(a, b)][:16]
        xs = oplab.data.open(part["file"], part.get("resolution")).arrays(idx)[0]
    else:  # no data at hand: random fields of the training shape
        xs = np.random.default_rng(0).uniform(3, 12, (16, *op.data["train_input_shape"])).astype(np.float32)
    pool = [(x, op(x)) for x in xs]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    test = next((r["test"] for r in reversed(metrics) if r.get("test")), None)

    proc, url = start_server(run, args)
    SERVER = psutil.Process(proc.pid)
    try:
        per_level = args.requests // len(args.levels)
        warm = [idle_rss()]
        for _ in range(args.warmup_cycles):  # until the allocator holds its working set (module docstring)
            for clients in args.levels:
                asyncio.run(level(url, name, clients, max(100, 20 * clients), args.seconds, pool, "npy"))
            warm.append(idle_rss())
            print(f"  warm-up cycle: idle RSS {warm[-1]} MB", flush=True)
        rss = []
        before = idle_rss()
        rows, idle = [], [before]
        for clients in args.levels:
            rows.append(asyncio.run(level(url, name, clients, per_level, args.seconds, pool, "npy", rss)))
            idle.append(idle_rss())
            print(f"  {clients:>3} clients: {rows[-1]['rps']} req/s, p50 {rows[-1]['p50_ms']} ms, "
                  f"p99 {rows[-1]['p99_ms']} ms, failed {rows[-1]['failed']}, idle RSS {idle[-1]} MB", flush=True)
        after = idle[-1]
        timed = sum(r["requests"] for r in rows)
        if args.json_requests:
            rows.append(asyncio.run(level(url, name, 8, args.json_requests, args.seconds, pool, "json")))
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    report = {
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu, "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_average_at_start": LOAD, "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        "run": {"folder": str(run), "model": op.config["model"]["name"], "problem": op.data.get("problem"),
                "input_shape": op.data["train_input_shape"], "test": test,
                "parameters": sum(p.numel() for p in op.bundle.model.parameters())},
        "server": {"threads": args.threads, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
                   "body": "one sample [1, 64, 64] float32 per request as .npy (JSON row: nested list)"},
        "levels": rows,
        "memory": {"warmup_cycles": args.warmup_cycles, "warmup_idle_rss_mb": warm,
                   "requests": timed, "rss_before_mb": before, "rss_after_mb": after,
                   "growth_mb": round(after - before, 1), "idle_rss_mb_after_each_level": idle[1:],
                   "rss_max_mb": max(rss), "rss_samples_mb": rss,
                   "note": "RSS with no request in flight, after the warm-up cycles; samples: every second "
                           "during the timed levels (in flight: a batch's tensors come and go)"},
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{report['run']['model']} on {report['run']['problem']} {report['run']['input_shape']}, "
          f"{report['run']['parameters']:,} parameters; server: {args.threads} thread(s), max batch "
          f"{args.max_batch}, max wait {args.max_wait_ms} ms; {os.cpu_count()} CPUs")
    print(f"{'body':>5} {'clients':>7} {'requests':>8} {'failed':>6} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'mean batch':>10}")
    for r in rows:
        print(f"{r['format']:>5} {r['clients']:>7} {r['requests']:>8} {r['failed']:>6} {r['rps']:>7} "
              f"{r['p50_ms']:>7} {r['p99_ms']:>7} {r['mean_batch']:>10}")
    print(f"server RSS {before} MB before, {after} MB after {timed} requests (max {max(rss)} MB); wrote {args.out}")


if __name__ == "__main__":
    main()
