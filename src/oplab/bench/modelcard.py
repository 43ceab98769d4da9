"""Cost of one model at a stated size: parameters, forward and forward+backward time, peak memory.

``measure(preset, x_shape, y_shape)`` runs in a fresh child process
(``python -m oplab.bench.modelcard JSON``) so that the peak memory is the
model's own:

* time: median of ``repeats`` calls after one warm-up, with ``threads`` torch
  threads; forward under ``torch.no_grad``, forward+backward of the mean
  squared output (parameter gradients included);
* peak memory on the CPU: the rise of the process's maximum resident set
  (``ru_maxrss``) above its value after the model and the batch were built,
  first over the inference calls, then over the training steps (the high-water
  mark only grows, so the second figure covers both); on CUDA,
  ``torch.cuda.max_memory_allocated`` above the allocation after the build.

Used by ``benchmarks/models.py`` (which writes ``docs/models.md``) and by the
MG-TFNO memory benchmark.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time


def _rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _measure_here(spec: dict) -> dict:
    import math

    import torch

    from ..models import from_config
    from ..models.presets import derive

    torch.manual_seed(0)
    torch.set_num_threads(spec.get("threads", 1))
    device = torch.device(spec.get("device", "cpu"))
    x_shape, y_shape = spec["x_shape"], spec["y_shape"]
    sizes = y_shape[2:]
    coords = tuple(((torch.arange(n) + 0.5) / n).to(device) for n in sizes)
    periodic = spec.get("periodic") or [False] * len(sizes)
    config = derive(spec["model"], x_shape, y_shape, coords, periodic)
    model = from_config(config).to(device)
    x = torch.randn(*x_shape, device=device)
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def timed(fn, repeats):
        out = []
        for i in range(repeats + 1):
            sync()
            tic = time.perf_counter()
            fn()
            sync()
            if i:
                out.append(time.perf_counter() - tic)
        return statistics.median(out)

    def forward():
        with torch.no_grad():
            model(x, coords)

    def step():
        model.zero_grad(set_to_none=True)
        model(x, coords).square().mean().backward()

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
        peak = lambda: torch.cuda.max_memory_allocated() / 2**20 - base  # noqa: E731
    else:
        base = _rss_peak_mib()
        peak = lambda: _rss_peak_mib() - base  # noqa: E731
    repeats = spec.get("repeats", 5)
    forward_s = timed(forward, repeats)
    infer_peak = peak()
    step_s = timed(step, repeats)
    train_peak = peak()
    batch = x_shape[0]
    return {"model": config, "params": model.n_params(), "x_shape": x_shape, "y_shape": y_shape,
            "threads": torch.get_num_threads(), "device": str(device),
            "forward_ms": forward_s * 1e3, "forward_backward_ms": step_s * 1e3,
            "inference_peak_mib_per_sample": infer_peak / batch, "train_peak_mib_per_sample": train_peak / batch,
            "points": math.prod(sizes)}


def measure(model: dict | str, x_shape, y_shape, periodic=None, threads: int = 1, device: str = "cpu",
            repeats: int = 5, timeout: float = 900) -> dict:
    """Measure ``model`` (a preset name or ``{"name": ..., **args}``) in a fresh process (module docstring)."""
    spec = {"model": {"name": model} if isinstance(model, str) else dict(model), "x_shape": list(x_shape),
            "y_shape": list(y_shape), "periodic": periodic, "threads": threads, "device": device, "repeats": repeats}
    done = subprocess.run([sys.executable, "-m", "oplab.bench.modelcard", json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"measuring {spec['model']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(_measure_here(json.loads(sys.argv[1]))))
