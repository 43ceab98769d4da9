"""The main job on its embedded default: ``oplab quickstart``.

Generates the FNO recipe's Darcy problem (Li et al. 2021, sec. 5.2: thresholded
Gaussian random field, contrast 12/3, f = 1) at 64x64 (1000 training and 200
test samples) plus 200 test samples at 128x128, trains an FNO within a time
budget, and reports: the test relative L2 at 64 and, zero-shot, at 128; the
training time; the inference time per sample; the numerical solver's time per
sample and the speed-up. Figures go to ``OUT/run/predictions.png`` (input,
truth, prediction, error) and ``OUT/run/loss.png``; the numbers to
``OUT/summary.json``.

Defaults, measured on a 2-core CPU (benchmarks/RESULTS.md): FNO with 12x12
modes (oplab's count), width 32, no padding; AdamW, lr 4e-3 (chosen on validation samples:
benchmarks/quickstart_recipe.py and RESULTS.md), cosine schedule
over the epochs that fit in the budget, batch 10, relative L2 loss, each batch turned by a random
symmetry of the square (``train.augment: dihedral``: the Darcy problem is invariant under them;
chosen on validation samples too). Rerunning
the command reuses the data, resumes an interrupted training run, and prints
the summary of a finished one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

DEFAULT_MODEL = {"name": "fno", "modes": [12, 12], "width": 32, "padding": 0.0}


def solver_seconds_per_sample(problem, n: int = 5, seed: int = 12345) -> float:
    """Mean time of the reference solver on ``n`` fresh inputs, one process."""
    from .problems.base import rng_for

    inputs = [problem.sample_inputs(rng_for(seed, i)) for i in range(n)]
    problem.solve(inputs[0])  # warm-up (factorisation caches, imports)
    tic = time.perf_counter()
    for a in inputs:
        problem.solve(a)
    return (time.perf_counter() - tic) / n


def quickstart(out: str | Path = "oplab-quickstart", resolution: int = 64, super_resolution: int = 128,
               n_train: int = 1000, n_test: int = 200, n_val: int = 100, budget_minutes: float = 6.0, max_epochs: int = 100,
               batch_size: int = 10, workers: int = 2, device: str = "auto", model: dict | None = None,
               log=print, data_progress=None, train_progress=None, lr: float = 4e-3,
               augment: str = "dihedral") -> dict:
    """Run the quickstart into folder ``out``; returns (and writes) the summary."""
    from . import problems
    from .data.generation import generate
    from .eval import inference_seconds_per_sample
    from .rundir import RunDir
    from .train.api import run_or_resume
    from .train.config import DataConfig, RunConfig, TrainConfig
    from .train.data import recorded_split

    out = Path(out)
    summary_path = out / "summary.json"
    if summary_path.exists():
        log(f"{out}: finished before; showing its summary (delete the folder to start over)")
        return json.loads(summary_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    coarse = problems.create("darcy", resolution)
    fine = problems.create("darcy", super_resolution)
    data = out / "data"
    data.mkdir(exist_ok=True)
    train_file = data / f"darcy_{resolution}_n{n_train + n_val + n_test}.h5"
    test_file = data / f"darcy_{super_resolution}_test.h5"
    tic = time.perf_counter()
    for prob, n, path, seed in ((coarse, n_train + n_val + n_test, train_file, 0), (fine, n_test, test_file, 1)):
        bar = data_progress(f"darcy {prob.resolution}") if data_progress else None
        if bar is not None:
            with bar:
                generate(prob, n, path, seed=seed, workers=workers, resume=True, progress=bar)
        else:
            generate(prob, n, path, seed=seed, workers=workers, resume=True)
    generation_seconds = time.perf_counter() - tic

    run_dir = out / "run"
    cfg = RunConfig(
        data=DataConfig(train=str(train_file), n_train=n_train + n_val, n_val=n_val, n_test=n_test,
                        test_files=[str(test_file)]),
        model=dict(model or {**DEFAULT_MODEL, "modes": [min(m, resolution // 2) for m in DEFAULT_MODEL["modes"]]}),
        train=TrainConfig(epochs=max_epochs, budget_minutes=budget_minutes, batch_size=batch_size, lr=lr,
                          scheduler="cosine", optimizer="adamw", eval_every=5, device=device, augment=augment),
        out=str(run_dir))
    tic = time.perf_counter()
    result = run_or_resume(cfg, log=log, progress=train_progress)
    wall = time.perf_counter() - tic
    history, bundle = result["history"], result["bundle"]
    final = next(r for r in reversed(history) if "test" in r)["test"]
    labels = list(final)
    saved = RunDir.open(run_dir)
    tests = recorded_split(saved).tests
    infer = {p.label: inference_seconds_per_sample(bundle, p.load(outputs=False)) for p in tests}  # inputs only
    solve = {labels[0]: solver_seconds_per_sample(coarse), labels[1]: solver_seconds_per_sample(fine)}
    summary = {
        "problem": "darcy", "train_resolution": resolution, "n_train": n_train, "n_val": n_val, "n_test": n_test,
        "model": saved.model,
        "params": sum(p.numel() for p in bundle.model.parameters()),
        "epochs": len(history), "budget_minutes": budget_minutes,
        "generation_seconds": generation_seconds,
        "train_seconds": sum(r["epoch_seconds"] + r.get("eval_seconds", 0.0) for r in history),
        "train_wall_seconds": wall,
        "test": {k: {"l2": final[k]["l2"], "h1": final[k]["h1"], "inference_seconds_per_sample": infer[k],
                     "solver_seconds_per_sample": solve[k], "speedup": solve[k] / infer[k]} for k in labels},
        "figures": {"predictions": str(saved.figure("predictions")), "loss": str(saved.figure("loss"))},
        "run_dir": str(run_dir), "device": str(next(bundle.parameters()).device), "threads": torch.get_num_threads(),
    }
    tmp = summary_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, summary_path)
    return summary
