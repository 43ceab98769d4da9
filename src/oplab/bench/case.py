"""One benchmark case, run in its own process: ``python -m oplab.bench.case CASE_DIR``.

Reads ``CASE_DIR/case.json`` (written by :func:`oplab.bench.run_case`), trains
(or resumes ``CASE_DIR/run`` after an interruption), measures, and writes
``CASE_DIR/result.json`` atomically; a case without ``result.json`` is not done.

Measured: parameters; time per epoch (median of the epochs' training loops,
evaluation excluded) and total training time; the test errors of the final
model (relative L2 and H1, mean over the test samples, per test set); the
inference time per sample (the full predictor on a batch of the first test
set, median of 5 timed calls after a warm-up; one step of an autoregressive
model, whose rollout errors per step on the first test set are recorded too; with ``protocol:
cfdbench`` also CFDBench's one-step and rollout metrics there, :mod:`oplab.eval.cfdbench`); the peak memory (the
process's maximum resident set on the CPU, which includes torch itself, or
``torch.cuda.max_memory_allocated`` on a GPU); how busy the rest of the
machine was (``foreign_cores``: other programs' mean CPU use while training).

A case of another ``kind`` (finetune, hypino, prose, invert) is run by :mod:`oplab.bench.kinds`,
which writes the same common fields (name, kind, case, dataset, params, train_seconds, figures)
and its measurements.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
from pathlib import Path

import torch


def main(case_dir: str) -> int:
    from ..eval import inference_seconds_per_sample
    from ..eval.run import task_config
    from ..rundir import RunDir
    from ..train.api import run_or_resume
    from ..train.config import from_dict
    from ..train.data import Part, recorded_split
    from .machine import Foreign

    case_dir = Path(case_dir)
    spec = json.loads((case_dir / "case.json").read_text())
    if spec["case"].get("kind", "train") != "train":
        from .kinds import run_kind

        name = spec["case"]["name"]
        record = run_kind(spec, case_dir, log=lambda text: print(f"[{name}] {text}", flush=True))
        write_result(case_dir, record)
        return 0
    cfg = from_dict(spec["config"])
    run_dir = Path(cfg.out)
    name = spec["case"]["name"]
    log = lambda text: print(f"[{name}] {text}", flush=True)  # noqa: E731
    device = cfg.train.device
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with Foreign() as foreign:
        result = run_or_resume(cfg, log=log)
    history = result["history"]
    bundle = result["bundle"]
    final = next(r for r in reversed(history) if "test" in r)
    first_label = next(iter(final["test"]))
    saved = RunDir.open(run_dir)
    first_test = recorded_split(saved).tests[0]
    timing = Part(first_test.file, (first_test.indices or list(range(len(first_test))))[:50], first_test.resolution)
    task_cfg = task_config(saved.config["train"])
    rollout = cfdbench = None
    if task_cfg.task == "map":
        infer = inference_seconds_per_sample(bundle, timing.load(outputs=False))  # timing needs inputs only
    else:  # one application of the model: an autoregressive step, or the whole space-time field
        from ..train import tasks

        data = timing.load()
        task = tasks.TASKS[task_cfg.task]
        coords = tuple(data.out_coords)
        if task_cfg.task == "spacetime":
            coords += (tasks.SpaceTime.time_coords(data.n_times + 1 - task_cfg.first_state - task_cfg.window),)
        infer = inference_seconds_per_sample(bundle, data, x=task.sample_inputs(task_cfg, data, 50), coords=coords)
        if task_cfg.task == "autoregressive":
            from ..eval.rollout import rollout_errors

            test_data = first_test.load()
            rollout = rollout_errors(bundle, test_data, task_cfg.window, task_cfg.bundle, first=task_cfg.first_state)
            if spec["case"].get("protocol") == "cfdbench":  # (load_suite checked the task and the u, v channels)
                from ..eval.cfdbench import cfdbench_scores

                names = saved.data["output_channels"]
                cfdbench = cfdbench_scores(bundle, test_data, [names.index("u"), names.index("v")],
                                           names.index("mask") if "mask" in names else None, task_cfg.window,
                                           task_cfg.bundle, task_cfg.first_state)
    peak, peak_kind = peak_memory(device)
    epoch_s = [r["epoch_seconds"] for r in history]
    info = saved.config
    record = {
        "name": name, "case": spec["case"], "dataset": spec["dataset"],
        "model": info["model"], "train": info["train"],
        "params": sum(p.numel() for p in bundle.model.parameters()),
        "epochs": len(history), "epoch_seconds": statistics.median(epoch_s),
        "train_seconds": sum(epoch_s) + sum(r.get("eval_seconds", 0.0) for r in history),
        "test": final["test"], "best_val": result["best_val"], "test_label": first_label,
        "inference_seconds_per_sample": infer, "task": task_cfg.task, "rollout": rollout, "cfdbench": cfdbench, "peak_memory_mib": peak, "peak_memory_kind": peak_kind,
        "foreign_cores": foreign.cores, "seed": cfg.train.seed, "run_dir": str(run_dir),
        "figures": {k: str(saved.figure(k)) for k in ("predictions", "loss", "rollout_error") if saved.figure(k).exists()},
        "curve": [{"epoch": r["epoch"], "train_loss": r["train_loss"],
                   **({"test_l2": r["test"][first_label]["l2"]} if "test" in r else {})} for r in history],
    }
    write_result(case_dir, record)
    log("done: L2 " + ", ".join(f"{k} {m['l2']:.4f}" for k, m in final["test"].items()))
    return 0


def write_result(case_dir: Path, record: dict) -> None:
    """``case_dir/result.json``, atomically (a case without it is not done)."""
    tmp = case_dir / "result.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, case_dir / "result.json")


def peak_memory(device: str) -> tuple[float, str]:
    """The process's peak memory in MiB and what it is (CUDA's max allocated, or the max RSS)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20, "cuda max allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "max RSS"  # KiB on Linux


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1]))
    except KeyboardInterrupt:
        sys.exit(130)
