"""Cost of one model at a stated size: parameters, time per call, peak memory per sample.

``measure(model, x_shape, y_shape)`` runs each mode (``"infer"``: a forward
pass under ``torch.inference_mode``; ``"train"``: forward, relative-L2 loss,
backward, no optimizer state) in fresh child processes
(``python -m oplab.bench.modelcard JSON``), so that the peak memory is the
model's own: one child measures the memory, another the time (the memory
child's allocator setting, below, makes every large allocation a system call
and nearly doubled the measured times). In a child:

1. build the model (``oplab.models.presets.derive`` fills channels and the
   grid-derived arguments; a preset name works) and one warm-up call on a
   single sample (lazy imports, FFT plans, allocator pools);
2. peak memory of the first call on the full batch: on CUDA,
   ``torch.cuda.max_memory_allocated`` minus the allocation before it; on the
   CPU, with ``cur`` the resident set before the call (``/proc/self/statm``)
   and ``hw`` the high-water mark then (``ru_maxrss``), the call's peak is
   ``ru_maxrss_after - cur`` when the call raised the mark, else at most
   ``hw - cur`` (then marked as an upper bound ``"<="``). The child runs with
   ``MALLOC_MMAP_THRESHOLD_=131072``: glibc then serves every block over
   128 KiB by ``mmap`` and returns it when freed, so the resident set follows
   the live tensors (with glibc's adaptive threshold, freed heap blocks can
   stay resident and inflate the mark of runs that free and reallocate a lot
   by up to 2x);
3. time (the other child, default allocator): the median of ``repeats`` further
   calls, with ``threads`` torch threads.

The parameter gradients are allocated by the warm-up, so the peak counts what
grows with the batch (activations, workspace), not the model's fixed memory.
"Per sample" is that peak divided by the batch: a model whose peak does not
grow in proportion to the batch (MG-TFNO with ``patch_batch``) has a per-sample
figure that falls as the batch grows, so compare models at the same batch.

Used by ``benchmarks/models.py`` (which writes ``docs/models.md``) and
``benchmarks/mgtfno_memory.py``.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time

MODES = ("infer", "train")


def _resident_kib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


def _measure_here(spec: dict) -> dict:
    import math

    import torch

    from ..models import from_config
    from ..models.presets import derive

    torch.manual_seed(0)
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    x_shape, y_shape = spec["x_shape"], spec["y_shape"]
    sizes = y_shape[2:]
    coords = tuple(((torch.arange(n) + 0.5) / n).to(device) for n in sizes)
    periodic = spec.get("periodic") or [False] * len(sizes)
    config = derive(spec["model"], x_shape, y_shape, coords, periodic)
    model = from_config(config).to(device)
    train = spec["mode"] == "train"
    model.train(train)

    def call(x, y):
        if train:
            model.zero_grad(set_to_none=False)  # the gradients stay allocated after the warm-up: a fixed cost
            out = model(x, coords)
            ((out - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)).mean().backward()
        else:
            with torch.inference_mode():
                model(x, coords)
        if cuda:
            torch.cuda.synchronize()

    batch = x_shape[0]
    call(torch.randn(1, *x_shape[1:], device=device), torch.randn(1, *y_shape[1:], device=device))  # warm-up
    x, y = torch.randn(*x_shape, device=device), torch.randn(*y_shape, device=device)
    gc.collect()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        cur, hw = _resident_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    call(x, y)
    if cuda:
        peak, bound = (torch.cuda.max_memory_allocated() - before) / 2**20, "="
    else:
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak, bound = ((after - cur) / 1024, "=") if after > hw else ((hw - cur) / 1024, "<=")
    times = []
    for _ in range(spec["repeats"]):
        tic = time.perf_counter()
        call(x, y)
        times.append(time.perf_counter() - tic)
    return {"model": config, "params": model.n_params(), "points": math.prod(sizes),
            "peak_mib": peak, "bound": bound, "mib_per_sample": peak / batch,
            "ms": statistics.median(times) * 1e3 if times else None}


def measure(model: dict | str, x_shape, y_shape, periodic=None, threads: int = 1, device: str = "cpu",
            repeats: int = 5, modes=MODES, timeout: float = 1800) -> dict:
    """Measure ``model`` (a preset name or ``{"name": ..., **args}``), one fresh process per mode
    (module docstring). Returns ``model`` (the full config), ``params`` and, per mode ``m``,
    ``m_ms`` (median time per call), ``m_mib_per_sample`` and ``m_bound`` (``"="`` or ``"<="``)."""
    base = {"model": {"name": model} if isinstance(model, str) else dict(model), "x_shape": list(x_shape),
            "y_shape": list(y_shape), "periodic": periodic, "threads": threads, "device": device, "repeats": repeats}
    threads_env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    record = {"x_shape": list(x_shape), "y_shape": list(y_shape), "threads": threads, "device": device}

    def child(spec: dict, env: dict) -> dict:
        done = subprocess.run([sys.executable, "-m", "oplab.bench.modelcard", json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"measuring {base['model']} ({spec['mode']}) failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    for mode in modes:
        memory = child({**base, "mode": mode, "repeats": 0}, {**threads_env, "MALLOC_MMAP_THRESHOLD_": "131072"})
        timing = child({**base, "mode": mode}, threads_env) if repeats else {"ms": None}
        record.update(model=memory["model"], params=memory["params"], points=memory["points"])
        record.update({f"{mode}_ms": timing["ms"], f"{mode}_mib_per_sample": memory["mib_per_sample"],
                       f"{mode}_peak_mib": memory["peak_mib"], f"{mode}_bound": memory["bound"]})
    return record


if __name__ == "__main__":
    print(json.dumps(_measure_here(json.loads(sys.argv[1]))))
