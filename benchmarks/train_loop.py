"""The training loop's speed through ``oplab train``, for two code trees in one run, beside DeepXDE.

Issue 12: "the loop gets no slower: FNO epoch at Darcy-64 and DeepONet step on the antiderivative,
both through ``oplab train``; DeepONet per-step time through the loop at most 1.0x DeepXDE's".

    git worktree add /tmp/oplab-before HEAD       # the "before" code (leaves the working tree alone)
    bash benchmarks/setup_peers.sh                # DeepXDE's interpreter
    python benchmarks/train_loop.py               # trees before=/tmp/oplab-before/src after=src, ~6-9 min
    python benchmarks/train_loop.py --tree before=/tmp/oplab-before/src     # one tree, ~4-5 min

Defaults: 2 repeats, 4 FNO epochs (two clean epoch-to-epoch intervals besides the first epoch and
the evaluated last one), 3000 DeepONet steps.

The "before" tree is a worktree of the last commit (``git worktree add /tmp/oplab-before HEAD``);
each tree is used by running ``[sys.executable, "-m", "oplab", ...]`` with ``PYTHONPATH=TREE`` (it
comes before the editable install, checked: the tree's ``oplab.__file__`` is recorded). DeepXDE runs
in the peers' virtual environment (``bash benchmarks/setup_peers.sh``). A tree that fails (import,
non-zero exit) is reported as failed and the rest still run; every command's stdout and stderr are
kept in ``WORK/logs``.

Cases (interleaved: for each repeat, FNO per tree, then DeepXDE, then DeepONet per tree):

* ``fno``: the quickstart's model and settings (``oplab/quickstart.py``: FNO modes [12, 12], width
  32, padding 0; AdamW lr 1e-3, weight decay 1e-4, cosine, batch 10, relative L2 loss) on Darcy 64
  (``oplab generate darcy --n 1200 --resolution 64 --seed 0 --workers 2``, made once into ``WORK``),
  1000 train / 200 test, ``--fno-epochs`` epochs, ``train.eval_every=100`` (evaluated only at the
  end). Figures: the median ``epoch_seconds`` of metrics.jsonl over the epochs after the first
  (the batch loop only); the loop's time per epoch from the log-line timestamps (everything the loop
  does per epoch, checkpoint included; intervals that end in an evaluated epoch are left out); and
  the whole command's wall time divided by the epochs.
* ``deeponet``: the cpu suite's case ``antiderivative-deeponet`` (branch_layers [40], trunk_layers
  [40], latent 40, relu; Adam lr 1e-3, weight decay 0, no schedule, batch 150 = one step per epoch,
  oplab's defaults otherwise: normalisation, relative L2 loss) on ``oplab generate antiderivative
  --n 1150 --resolution 100 --seed 0`` (150 train / the last 1000 test; checked equal to the data of
  ``peers_deeponet.py``), ``--deeponet-steps`` epochs, ``train.eval_every`` = steps.
  Figures, per step:
  - ``loop``: through the loop, from timestamps: the parent reads the command's stdout as it comes
    (``PYTHONUNBUFFERED=1``: the log line, every ``steps // 200`` epochs, is flushed when printed, as
    on a terminal) and stamps each ``epoch N`` line; per step = (t_b - t_a) / (N_b - N_a) from the
    first line at >= 10% of the steps to the last line before the final (evaluated) epoch. It holds
    everything the loop does per epoch (batch, metrics line, checkpoint), and no start-up, data
    loading, final evaluation or plots. ``loop_median``: the median over the intervals between
    consecutive lines (robust to another program's bursts).
  - ``wall_minus_startup``: (wall of the command - wall of the same command with 1 epoch) / (steps - 1).
  - ``epoch_seconds``: median of metrics.jsonl's ``epoch_seconds`` (the batch loop only).
* ``deepxde``: ``peers_deeponet.run_deepxde`` (its data from ``peers_deeponet.make_data``, DeepXDE's
  own recipe: ``TripleCartesianProd``, ``DeepONetCartesianProd`` [100, 40, 40] / [1, 40, 40], relu,
  ``Model.compile("adam", lr=1e-3)``, ``train(iterations=steps)`` with its default test evaluation
  every 1000 iterations), the same number of steps, seed 0, in the peers' interpreter. Its
  ``on_batch_begin`` stamps give ``loop`` (same window: 10% of the steps to the start of the last
  step) and ``loop_median`` (intervals of the same length as oplab's log interval); ``train_total``
  is its ``train()`` call / steps.

A tree whose ``DataConfig`` has ``n_val`` (validation samples carved out of ``n_train``) is run with
``--set data.n_val=0``, so that every tree trains on the same samples with the same batches.

Ratios: DeepONet ``loop`` / DeepXDE ``loop`` (medians over repeats), and each tree / the first tree.

Before each timed command the script waits (``--quiet-wait`` s at most) until other programs use
under ``--quiet-threshold`` cores over a second; the wait and the load are recorded per command.
A command during which they used more than ``--noisy`` cores is run again (``--retries`` times at
most; the dropped attempts are kept).
"Other programs" is the CPU (in cores) that everything but this process and its commands used
while a command ran (``oplab.bench.machine.Foreign`` less the children's CPU); on this 2-core
machine anything above ~0.1 spoils a tiny-model timing (torch's 2 threads then wait on each other).

The script's own process imports ``oplab`` (for ``Foreign``, ``describe`` and the data check) from
the first tree that imports (else the installed package); the data sets are generated, and
``peers_deeponet.py`` run, with that same oplab (``harness_oplab`` in the JSON).

Writes ``--out`` (default ``benchmarks/train_loop.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EPOCH_LINE = re.compile(r"^\s*epoch\s+(\d+)\b")

FNO_MODEL = ["--model", "fno", "--set", "model.modes=[12,12]", "--set", "model.width=32",
             "--set", "model.padding=0.0"]
FNO_TRAIN = ["--batch-size", "10", "--lr", "1e-3", "--seed", "0", "--device", "cpu",
             "--set", "train.optimizer=adamw", "--set", "train.weight_decay=1.0e-4",
             "--set", "train.scheduler=cosine", "--set", "train.loss=l2", "--set", "train.eval_every=100"]
DEEPONET_MODEL = ["--model", "deeponet", "--set", "model.branch_layers=[40]", "--set", "model.trunk_layers=[40]",
                  "--set", "model.latent=40", "--set", "model.activation=relu"]
DEEPONET_TRAIN = ["--batch-size", "150", "--lr", "1e-3", "--seed", "0", "--device", "cpu",
                  "--set", "train.optimizer=adam", "--set", "train.weight_decay=0",
                  "--set", "train.scheduler=none"]


# ---------------------------------------------------------------- the harness's own oplab

def _harness(srcs: list):
    """``Foreign`` and ``describe`` from the first of ``srcs`` that imports (None: the installed
    oplab); returns them and the src folder they came from."""
    candidates = srcs
    for src in candidates:
        if src is not None:
            for name in [m for m in sys.modules if m == "oplab" or m.startswith("oplab.")]:
                del sys.modules[name]
            sys.path.insert(0, str(src))
        try:
            import oplab
            from oplab.bench.machine import Foreign, describe

            return Foreign, describe, Path(oplab.__file__).resolve().parent.parent
        except Exception as exc:  # noqa: BLE001 - any breakage of a tree being edited
            print(f"harness: oplab from {src or 'the installed package'} does not import ({exc!r})", file=sys.stderr)
            if src is not None:
                sys.path.remove(str(src))
    raise SystemExit("no importable oplab for the harness")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------- running a command

QUIET = {"threshold": 0.2, "max_wait": 90.0, "noisy": 0.25, "retries": 1}  # set from the command line


def wait_quiet(foreign_cls) -> tuple:
    """Wait (at most QUIET["max_wait"] s) until other programs use under QUIET["threshold"] cores
    over a second; returns (seconds waited, the last second's load)."""
    t0 = time.perf_counter()
    while True:
        with foreign_cls() as f:
            time.sleep(1.0)
        if f.cores is None or f.cores < QUIET["threshold"] or time.perf_counter() - t0 >= QUIET["max_wait"]:
            return time.perf_counter() - t0, f.cores


def run_command(cmd: list, env: dict, log: Path, timeout: float, foreign_cls, quiet: bool = True) -> dict:
    """Run ``cmd``, stamping each ``epoch N`` line of its stdout on arrival; stdout and stderr
    go to ``log``.stdout / ``log``.stderr. Returns rc, wall, stamps [(epoch, seconds)], foreign
    (other programs' cores while it ran) and the wait for a quiet machine before it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    waited, load = wait_quiet(foreign_cls) if quiet and QUIET["max_wait"] > 0 else (0.0, None)
    stamps = []
    kids = _children_cpu()
    with open(log.with_suffix(".stdout"), "w") as out_fh, open(log.with_suffix(".stderr"), "w") as err_fh:
        out_fh.write("$ " + " ".join(cmd) + "\n")
        out_fh.flush()
        with foreign_cls() as busy:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_fh, env=env, text=True, bufsize=1,
                                    cwd=str(log.parent))
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
            try:
                for line in proc.stdout:
                    t = time.perf_counter() - t0
                    m = EPOCH_LINE.match(line)
                    if m:
                        stamps.append((int(m.group(1)), t))
                    out_fh.write(line)
                rc = proc.wait()
            finally:
                timer.cancel()
            wall = time.perf_counter() - t0
    cores = busy.cores
    if cores is not None and wall > 0:
        cores = max(0.0, cores - (_children_cpu() - kids) / wall)
    res = {"rc": rc, "wall_seconds": wall, "stamps": stamps, "foreign_cpu_cores": cores, "log": str(log),
           "quiet_wait_seconds": waited, "foreign_cpu_cores_before": load}
    if rc != 0:
        tail = log.with_suffix(".stderr").read_text().strip().splitlines()[-6:]
        res["error"] = ("killed after timeout " if rc < 0 else "") + " | ".join(tail)
    return res


def retried(fn):
    """``fn()`` again (at most QUIET["retries"] times) while other programs took more than
    QUIET["noisy"] cores during it; the discarded attempts are kept under ``noisy_attempts``."""
    r, dropped = fn(), []
    while (r.get("foreign_cpu_cores") or 0.0) > QUIET["noisy"] and len(dropped) < QUIET["retries"]:
        dropped.append({k: v for k, v in r.items() if k not in ("stamps", "epoch_seconds")})
        r = fn()
    if dropped:
        r["noisy_attempts"] = dropped
    return r


def tree_env(src: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def check_tree(name: str, src: Path, work: Path) -> dict:
    """Does the tree import (oplab, its CLI) as itself? Plus its git state, read-only."""
    info = {"src": str(src)}
    code = ("import dataclasses, oplab, oplab.cli; print(oplab.__file__); print(oplab.__version__)\n"
            "try:\n from oplab.train.config import DataConfig\n"
            " print('n_val' in {f.name for f in dataclasses.fields(DataConfig)})\n"
            "except Exception:\n print(False)")
    p = subprocess.run([sys.executable, "-c", code], env=tree_env(src), capture_output=True, text=True,
                       cwd=str(work))
    if p.returncode != 0:
        info["error"] = "import failed: " + " | ".join(p.stderr.strip().splitlines()[-4:])
    else:
        where, version, n_val = p.stdout.split()[:3]
        # a tree whose data config carves validation samples out of n_train gets data.n_val=0: the
        # same training samples (and so the same work per epoch) as a tree without validation
        info.update(oplab_file=where, oplab_version=version, extra_args=["--set", "data.n_val=0"] if n_val == "True" else [])
        if not Path(where).resolve().is_relative_to(src.resolve()):
            info["error"] = f"PYTHONPATH={src} imports oplab from {where}"
    git = lambda *a: subprocess.run(["git", "-C", str(src), *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
    info["git_head"] = git("rev-parse", "HEAD") or None
    diff = git("diff", "HEAD", "--", ".")
    info["git_dirty_files"] = len([ln for ln in git("status", "--porcelain", "--", ".").splitlines() if ln])
    info["git_diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None
    return info


def read_metrics(run_dir: Path) -> list:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def window_rates(stamps: list, start: int, stop: int) -> tuple:
    """(mean seconds per step, median over consecutive intervals) of stamps (epoch, t) with
    start <= epoch <= stop; None where fewer than two stamps."""
    pts = sorted((e, t) for e, t in stamps if start <= e <= stop)
    if len(pts) < 2 or pts[-1][0] == pts[0][0]:
        return None, None
    mean = (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])
    per = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(pts, pts[1:]) if b[0] > a[0]]
    return mean, statistics.median(per)


# ---------------------------------------------------------------- cases

def fno_run(tree: str, src: Path, rep: int, args, data: Path, foreign_cls, extra: list) -> dict:
    run_dir = args.work / "runs" / f"fno-{tree}-r{rep}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "oplab", "train", "--data", str(data), "--n-train", "1000", "--n-test", "200",
           *FNO_MODEL, "--epochs", str(args.fno_epochs), *FNO_TRAIN, *extra, "--out", str(run_dir)]
    r = run_command(cmd, tree_env(src), args.work / "logs" / f"fno-{tree}-r{rep}", args.timeout, foreign_cls)
    hist = read_metrics(run_dir)
    r["epochs_done"] = len(hist)
    if r["rc"] == 0 and len(hist) == args.fno_epochs:
        later = [h["epoch_seconds"] for h in hist[1:]] or [hist[0]["epoch_seconds"]]
        r["epoch_seconds_median"] = statistics.median(later)
        r["epoch_seconds"] = [h["epoch_seconds"] for h in hist]
        r["eval_seconds"] = sum(h.get("eval_seconds", 0.0) for h in hist)
        r["wall_per_epoch"] = r["wall_seconds"] / args.fno_epochs
        evaluated = {h["epoch"] for h in hist if "test" in h}
        st = dict(r["stamps"])
        loop = [st[e] - st[e - 1] for e in range(2, args.fno_epochs) if e in st and e - 1 in st and e not in evaluated]
        loop = loop or [st[e] - st[e - 1] for e in range(1, args.fno_epochs) if e in st and e - 1 in st
                        and e not in evaluated]
        r["loop_epoch_seconds"] = statistics.median(loop) if loop else None
        last = hist[-1].get("test", {})
        r["test_l2"] = next(iter(last.values()))["l2"] if last else None
    return r


def deeponet_run(tree: str, src: Path, rep: int, args, data: Path, steps: int, foreign_cls, extra: list) -> dict:
    tag = f"deeponet{'-1ep' if steps == 1 else ''}-{tree}-r{rep}"
    run_dir = args.work / "runs" / tag
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "oplab", "train", "--data", str(data), "--n-train", "150", "--n-test", "1000",
           *DEEPONET_MODEL, "--epochs", str(steps), *DEEPONET_TRAIN, "--set", f"train.eval_every={steps}",
           *extra, "--out", str(run_dir)]
    r = run_command(cmd, tree_env(src), args.work / "logs" / tag, args.timeout, foreign_cls)
    hist = read_metrics(run_dir)
    r["epochs_done"] = len(hist)
    if r["rc"] == 0 and len(hist) == steps:
        r["epoch_seconds_median"] = statistics.median(h["epoch_seconds"] for h in hist)
        r["epoch_seconds_sum"] = sum(h["epoch_seconds"] for h in hist)
        if steps > 1:
            r["loop_step_seconds"], r["loop_step_seconds_median"] = window_rates(r["stamps"], steps // 10, steps - 2)
        last = hist[-1].get("test", {})
        r["test_l2"] = next(iter(last.values()))["l2"] if last else None
        r["train_loss_last"] = hist[-1]["train_loss"]
    if steps > 1:
        r.pop("stamps")  # kept as summary figures; thousands of pairs are not worth the JSON
    return r


def deepxde_run(rep: int, args, harness_src: Path, foreign_cls) -> dict:
    tag = f"deepxde-r{rep}"
    result = args.work / "runs" / f"{tag}.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    result.unlink(missing_ok=True)
    cmd = [str(args.peers_python), str(Path(__file__).resolve()), "--deepxde-worker", str(result),
           "--deeponet-steps", str(args.deeponet_steps)]
    env = tree_env(harness_src)  # peers_deeponet imports oplab.bench; a stable tree for it
    env["DDE_BACKEND"] = "pytorch"
    r = run_command(cmd, env, args.work / "logs" / tag, args.timeout, foreign_cls)
    r.pop("stamps")
    if r["rc"] == 0 and result.exists():
        r.update(json.loads(result.read_text()))
    elif r["rc"] == 0:
        r["rc"], r["error"] = 1, "worker wrote no result"
    return r


def deepxde_worker(path: str, steps: int) -> int:
    """In the peers' interpreter: peers_deeponet.run_deepxde, its stamps kept."""
    sys.path.insert(0, str(HERE))
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    import numpy as np
    import torch

    import peers_deeponet as pd

    made = []
    original = pd.step_stamps

    def keep(dde):
        made.append(original(dde))
        return made[-1]

    pd.step_stamps = keep
    threads = torch.get_num_threads()
    data = pd.make_data(150, 1000, 0)
    args = argparse.Namespace(lr=1e-3, threads=threads, iterations=steps)
    r = pd.run_deepxde(0, args, data)
    t = made[0].t  # on_batch_begin of every step, then on_train_end
    stamps = list(enumerate(t[:steps]))
    every = max(1, steps // 200)  # oplab's log interval
    mean, _ = window_rates(stamps, steps // 10, steps - 1)
    chunks = [(b - a) / every for a, b in zip(t[steps // 10:steps:every], t[steps // 10 + every:steps:every])]
    import deepxde

    out = {"loop_step_seconds": mean, "loop_step_seconds_median": statistics.median(chunks),
           "iter_seconds_median": r["iter_seconds_median"], "train_total_step_seconds": r["iter_seconds_mean"],
           "train_seconds_total": r["train_seconds_total"], "test_rel_l2": r["test_rel_l2"],
           "params": r["params"], "threads": threads, "deepxde": deepxde.__version__,
           "intervals_over_10ms": int(np.sum(np.diff(t) > 0.01))}
    Path(path).write_text(json.dumps(out, indent=1))
    return 0


# ---------------------------------------------------------------- data

def make_data(args, harness_src: Path, foreign_cls) -> dict:
    d = args.work / "data"
    d.mkdir(parents=True, exist_ok=True)
    files = {"darcy": d / "darcy_64.h5", "antiderivative": d / "antiderivative_100.h5"}
    specs = {"darcy": ["--n", "1200", "--resolution", "64", "--seed", "0", "--workers", "2"],
             "antiderivative": ["--n", "1150", "--resolution", "100", "--seed", "0"]}
    need = {"darcy": "fno" in args.cases, "antiderivative": "deeponet" in args.cases}
    info = {}
    for name, path in files.items():
        if not need[name]:
            continue
        cmd = [sys.executable, "-m", "oplab", "generate", name, *specs[name], "--out", str(path), "--resume"]
        r = run_command(cmd, tree_env(harness_src), args.work / "logs" / f"generate-{name}", 3600, foreign_cls,
                        quiet=False)
        if r["rc"] != 0:
            raise SystemExit(f"generating {path} failed: {r.get('error')}")
        info[name] = {"file": str(path), "command": " ".join(["oplab", "generate", name, *specs[name]]),
                      "seconds": r["wall_seconds"]}
    if need["antiderivative"]:  # the same functions as peers_deeponet.py's (first 150 train, last 1000 test)
        import h5py
        import numpy as np

        sys.path.insert(0, str(HERE))
        import peers_deeponet as pd

        ref = pd.make_data(150, 1000, 0)
        with h5py.File(files["antiderivative"], "r") as f:
            x, y = np.asarray(f["inputs"][:, 0], np.float32), np.asarray(f["outputs"][:, 0], np.float32)
        diff = max(float(np.abs(x[:150] - ref["v_train"]).max()), float(np.abs(y[:150] - ref["u_train"]).max()),
                   float(np.abs(x[-1000:] - ref["v_test"]).max()), float(np.abs(y[-1000:] - ref["u_test"]).max()))
        info["antiderivative"]["max_abs_diff_vs_peers_deeponet"] = diff
        if diff > 1e-6:
            raise SystemExit(f"{files['antiderivative']} differs from peers_deeponet.make_data by {diff}")
    return {"files": files, "info": info}


# ---------------------------------------------------------------- summary

def _med(runs: list, key: str):
    vals = [r[key] for r in runs if r.get("rc") == 0 and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(results: dict, trees: dict) -> dict:
    s = {"fno": {}, "deeponet": {}, "deepxde": {}}
    for tree in trees:
        fno = results["fno"].get(tree, [])
        if fno:
            ok = [r for r in fno if r["rc"] == 0]
            s["fno"][tree] = {"runs_ok": len(ok), "runs": len(fno),
                              "epoch_seconds": _med(fno, "epoch_seconds_median"),
                              "loop_epoch_seconds": _med(fno, "loop_epoch_seconds"),
                              "wall_per_epoch": _med(fno, "wall_per_epoch"), "test_l2": _med(fno, "test_l2"),
                              "foreign_cpu_cores_max": max((r["foreign_cpu_cores"] or 0.0) for r in fno)}
        don = results["deeponet"].get(tree, [])
        if don:
            full = [r["full"] for r in don]
            wms = [(r["full"]["wall_seconds"] - r["one"]["wall_seconds"]) / (r["steps"] - 1) for r in don
                   if r["full"]["rc"] == 0 and r["one"]["rc"] == 0]
            s["deeponet"][tree] = {"runs_ok": len([r for r in full if r["rc"] == 0]), "runs": len(full),
                                   "loop_ms": _ms(_med(full, "loop_step_seconds")),
                                   "loop_median_ms": _ms(_med(full, "loop_step_seconds_median")),
                                   "wall_minus_startup_ms": _ms(statistics.median(wms)) if wms else None,
                                   "epoch_seconds_ms": _ms(_med(full, "epoch_seconds_median")),
                                   "startup_seconds": _med([r["one"] for r in don], "wall_seconds"),
                                   "test_l2": _med(full, "test_l2"),
                                   "foreign_cpu_cores_max": max((r["full"]["foreign_cpu_cores"] or 0.0) for r in don)}
    dx = results["deepxde"]
    if dx:
        s["deepxde"] = {"runs_ok": len([r for r in dx if r["rc"] == 0]), "runs": len(dx),
                        "loop_ms": _ms(_med(dx, "loop_step_seconds")),
                        "loop_median_ms": _ms(_med(dx, "loop_step_seconds_median")),
                        "iter_median_ms": _ms(_med(dx, "iter_seconds_median")),
                        "train_total_ms": _ms(_med(dx, "train_total_step_seconds")),
                        "test_rel_l2": _med(dx, "test_rel_l2"),
                        "foreign_cpu_cores_max": max((r["foreign_cpu_cores"] or 0.0) for r in dx)}
    ratios = {"deeponet_vs_deepxde": {}, "vs_first_tree": {}}
    for tree, d in s["deeponet"].items():
        ratios["deeponet_vs_deepxde"][tree] = {
            k: _ratio(d.get(k), s["deepxde"].get(k)) for k in ("loop_ms", "loop_median_ms")}
        ratios["deeponet_vs_deepxde"][tree]["goal"] = 1.0
    first = next(iter(trees))
    for tree in list(trees)[1:]:
        ratios["vs_first_tree"][tree] = {
            "fno": {k: _ratio(s["fno"].get(tree, {}).get(k), s["fno"].get(first, {}).get(k))
                    for k in ("epoch_seconds", "loop_epoch_seconds", "wall_per_epoch")},
            "deeponet": {k: _ratio(s["deeponet"].get(tree, {}).get(k), s["deeponet"].get(first, {}).get(k))
                         for k in ("loop_ms", "loop_median_ms", "wall_minus_startup_ms", "epoch_seconds_ms")}}
    return {"summary": s, "ratios": ratios}


def _ms(v):
    return None if v is None else 1e3 * v


def _ratio(a, b):
    return None if a is None or not b else a / b


def _progress(label: str, r: dict, figures) -> None:
    """One progress line: ``figures()`` of a finished command, or why it failed, and the load."""
    body = figures() if r["rc"] == 0 else f"FAILED rc {r['rc']}: {r.get('error')}"
    print(f"{label} {body}  others {_f(r['foreign_cpu_cores'], '{:.2f}')}", flush=True)


def _f(v, fmt="{:.3f}"):
    return "-" if v is None else fmt.format(v)


def print_table(summ: dict, trees: dict, tree_info: dict, args) -> None:
    s, ratios = summ["summary"], summ["ratios"]
    first = next(iter(trees))
    print()
    if s["fno"]:
        print(f"FNO, Darcy 64, {args.fno_epochs} epochs (seconds per epoch; medians over repeats)")
        print(f"{'tree':10s} {'ok':>5s} {'epoch_seconds':>13s} {'loop/epoch':>10s} {'wall/epoch':>10s} "
              f"{'test L2':>8s} {'others':>6s} {'x ' + first:>10s}")
        for tree, d in s["fno"].items():
            rr = ratios["vs_first_tree"].get(tree, {}).get("fno", {})
            print(f"{tree:10s} {d['runs_ok']:>2d}/{d['runs']:<2d} {_f(d['epoch_seconds']):>13s} "
                  f"{_f(d['loop_epoch_seconds']):>10s} {_f(d['wall_per_epoch']):>10s} {_f(d['test_l2'], '{:.4f}'):>8s} "
                  f"{_f(d['foreign_cpu_cores_max'], '{:.2f}'):>6s} {_f(rr.get('epoch_seconds'), 'x{:.3f}'):>10s}")
    if s["deeponet"] or s["deepxde"]:
        print(f"\nDeepONet, antiderivative, {args.deeponet_steps} steps (ms per step; medians over repeats)")
        print(f"{'tree':10s} {'ok':>5s} {'loop':>7s} {'loop med':>8s} {'wall-start':>10s} {'epoch_s':>7s} "
              f"{'start s':>7s} {'test L2':>8s} {'others':>6s} {'x DeepXDE':>9s} {'x ' + first:>10s}")
        for tree, d in s["deeponet"].items():
            rx = ratios["deeponet_vs_deepxde"].get(tree, {})
            rr = ratios["vs_first_tree"].get(tree, {}).get("deeponet", {})
            print(f"{tree:10s} {d['runs_ok']:>2d}/{d['runs']:<2d} {_f(d['loop_ms']):>7s} {_f(d['loop_median_ms']):>8s} "
                  f"{_f(d['wall_minus_startup_ms']):>10s} {_f(d['epoch_seconds_ms']):>7s} "
                  f"{_f(d['startup_seconds'], '{:.2f}'):>7s} {_f(d['test_l2'], '{:.4f}'):>8s} "
                  f"{_f(d['foreign_cpu_cores_max'], '{:.2f}'):>6s} {_f(rx.get('loop_ms'), 'x{:.3f}'):>9s} "
                  f"{_f(rr.get('loop_ms'), 'x{:.3f}'):>10s}")
        d = s["deepxde"]
        if d:
            print(f"{'DeepXDE':10s} {d['runs_ok']:>2d}/{d['runs']:<2d} {_f(d['loop_ms']):>7s} {_f(d['loop_median_ms']):>8s} "
                  f"{'':>10s} {_f(d['iter_median_ms']):>7s} {'':>7s} {_f(d['test_rel_l2'], '{:.4f}'):>8s} "
                  f"{_f(d['foreign_cpu_cores_max'], '{:.2f}'):>6s}")
        print("loop: mean per step from the log-line stamps (10% .. last step before the final evaluation); "
              "loop med: median over log intervals;\nwall-start: (wall - wall of 1 epoch) / (steps - 1); "
              "epoch_s: median epoch_seconds (DeepXDE: median step interval); others: max other-program cores")
    for tree, info in tree_info.items():
        if info.get("error"):
            print(f"tree {tree} ({info['src']}): FAILED: {info['error']}")
    print()


# ---------------------------------------------------------------- main

def parse_trees(items: list) -> dict:
    trees = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--tree {item!r}: expected NAME=PATH")
        name, path = item.split("=", 1)
        trees[name.strip()] = Path(path).expanduser().resolve()
    return trees


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", default=None, metavar="NAME=PATH",
                   help="a code tree's src folder (repeatable; default before=/tmp/oplab-before/src after=REPO/src)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cases", nargs="+", default=["fno", "deeponet", "deepxde"], choices=["fno", "deeponet", "deepxde"])
    p.add_argument("--fno-epochs", type=int, default=4)
    p.add_argument("--deeponet-steps", type=int, default=3000)
    p.add_argument("--work", type=Path, default=Path("/tmp/oplab-train-loop"), help="data cache, run folders, logs")
    p.add_argument("--peers-python", type=Path, default=HERE / ".venv-peers" / "bin" / "python")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per command")
    p.add_argument("--quiet-threshold", type=float, default=QUIET["threshold"],
                   help="before each timed command, wait until other programs use fewer cores than this ...")
    p.add_argument("--quiet-wait", type=float, default=QUIET["max_wait"],
                   help="... for at most this many seconds (0: do not wait)")
    p.add_argument("--noisy", type=float, default=QUIET["noisy"],
                   help="a timed command during which other programs used more cores than this is run again ...")
    p.add_argument("--retries", type=int, default=QUIET["retries"], help="... at most this many times")
    p.add_argument("--out", type=Path, default=HERE / "train_loop.json")
    p.add_argument("--deepxde-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.deepxde_worker:
        return deepxde_worker(args.deepxde_worker, args.deeponet_steps)

    QUIET.update(threshold=args.quiet_threshold, max_wait=args.quiet_wait, noisy=args.noisy, retries=args.retries)
    trees = parse_trees(args.tree or ["before=/tmp/oplab-before/src", f"after={REPO / 'src'}"])
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    tic = time.perf_counter()
    tree_info = {name: check_tree(name, src, args.work) for name, src in trees.items()}
    for name, info in tree_info.items():
        print(f"tree {name}: {info['src']} -> {info.get('oplab_file', '?')} "
              f"(HEAD {str(info['git_head'])[:10]}, {info['git_dirty_files']} changed files)"
              + (f"  FAILED: {info['error']}" if info.get("error") else ""), flush=True)
    live = [t for t in trees if not tree_info[t].get("error")]
    # the harness's oplab: the first tree that imports (the installed one may be mid-rewrite)
    ForeignOthers, describe, harness_src = _harness([trees[t] for t in live] + [None])
    print(f"harness oplab: {harness_src}", flush=True)
    if "deepxde" in args.cases and not args.peers_python.exists():
        raise SystemExit(f"{args.peers_python}: missing; run bash benchmarks/setup_peers.sh")
    data = make_data(args, harness_src, ForeignOthers)
    print(f"data: {json.dumps(data['info'])}", flush=True)

    results = {"fno": {t: [] for t in trees}, "deeponet": {t: [] for t in trees}, "deepxde": []}
    for rep in range(args.repeats):
        if "fno" in args.cases:
            for tree in live:
                extra = tree_info[tree]["extra_args"]
                r = retried(lambda: fno_run(tree, trees[tree], rep, args, data["files"]["darcy"], ForeignOthers, extra))
                results["fno"][tree].append(r)
                r.pop("stamps", None)
                _progress(f"r{rep} fno      {tree:8s}", r, lambda: (
                    f"epoch_seconds {_f(r.get('epoch_seconds_median'))}  loop/epoch {_f(r.get('loop_epoch_seconds'))}  "
                    f"wall/epoch {_f(r.get('wall_per_epoch'))}  test L2 {_f(r.get('test_l2'), '{:.4f}')}"))
        if "deepxde" in args.cases:
            r = retried(lambda: deepxde_run(rep, args, harness_src, ForeignOthers))
            results["deepxde"].append(r)
            _progress(f"r{rep} deepxde          ", r, lambda: (
                f"loop {_f(_ms(r.get('loop_step_seconds')))} ms  median {_f(_ms(r.get('loop_step_seconds_median')))} ms  "
                f"train()/steps {_f(_ms(r.get('train_total_step_seconds')))} ms  test {_f(r.get('test_rel_l2'), '{:.4f}')}"))
        if "deeponet" in args.cases:
            for tree in live:
                extra, path = tree_info[tree]["extra_args"], data["files"]["antiderivative"]
                one = retried(lambda: deeponet_run(tree, trees[tree], rep, args, path, 1, ForeignOthers, extra))
                full = retried(lambda: deeponet_run(tree, trees[tree], rep, args, path, args.deeponet_steps,
                                                    ForeignOthers, extra))
                results["deeponet"][tree].append({"steps": args.deeponet_steps, "one": one, "full": full})
                wms = ((full["wall_seconds"] - one["wall_seconds"]) / (args.deeponet_steps - 1)
                       if full["rc"] == 0 and one["rc"] == 0 else None)
                print(f"r{rep} deeponet {tree:8s} " + (
                    f"loop {_f(_ms(full.get('loop_step_seconds')))} ms  median {_f(_ms(full.get('loop_step_seconds_median')))} ms  "
                    f"wall-startup {_f(_ms(wms))} ms  epoch_seconds {_f(_ms(full.get('epoch_seconds_median')))} ms  "
                    f"start-up {one['wall_seconds']:.2f} s  test L2 {_f(full.get('test_l2'), '{:.4f}')}"
                    if full["rc"] == 0 and one["rc"] == 0 else
                    f"FAILED rc {full['rc']}/{one['rc']}: {full.get('error') or one.get('error')}")
                    + f"  others {_f(full['foreign_cpu_cores'], '{:.2f}')}", flush=True)

    summ = summarize(results, {t: trees[t] for t in trees})
    print_table(summ, trees, tree_info, args)
    report = {
        "benchmark": "training loop through `oplab train`: FNO epoch (Darcy 64), DeepONet step (antiderivative), DeepXDE",
        "date": started, "seconds": time.perf_counter() - tic,
        "command": " ".join(["python", "benchmarks/train_loop.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": describe("cpu"), "harness_oplab": str(harness_src),
        "settings": {"repeats": args.repeats, "quiet": dict(QUIET), "cases": args.cases, "fno_epochs": args.fno_epochs,
                     "deeponet_steps": args.deeponet_steps, "work": str(args.work),
                     "fno_args": FNO_MODEL + FNO_TRAIN, "deeponet_args": DEEPONET_MODEL + DEEPONET_TRAIN},
        "data": data["info"], "trees": tree_info, **summ, "runs": results,
    }
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
