"""How many CPU threads a training process uses.

torch runs its CPU kernels on OpenMP threads, by default one per core. Two such processes on one
machine ask for twice the cores there are; an OpenMP thread that waits at the end of a parallel
region keeps spinning for a while before it sleeps, so each process's waiting threads burn the
cores the other's working threads need, and an epoch can take many times longer than alone (the
issue's 4 s against 184 s on this 2-core machine; ``benchmarks/threads.py`` measures it). A
training process therefore takes the cores that are free when it starts (``train.threads: 0``, the
default), or the number it is told (``--threads N``), and says in its log when other programs
hold cores. A small model (under ``oplab.train.api.SMALL_MODEL`` parameters, a one-shot map) times
its training step on a throwaway copy at one thread and at that count and trains with the faster
(:func:`fastest`): a DeepONet's millisecond steps do not pay for a second thread.
"""

from __future__ import annotations

import contextlib
import os
import time

import torch

from ..bench.machine import Foreign


def cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_cores(seconds: float = 0.1) -> float | None:
    """Other programs' CPU use over the next ``seconds``, in cores (None where /proc/stat is missing)."""
    with Foreign() as foreign:
        time.sleep(seconds)
    return foreign.cores


@contextlib.contextmanager
def using(threads: int = 0, log=print):
    """Train with :func:`choose`'s thread count, and give the process its previous count back after."""
    before = torch.get_num_threads()
    try:
        yield choose(threads, log)
    finally:
        torch.set_num_threads(before)


def choose(threads: int = 0, log=print) -> int:
    """Set torch's thread count: ``threads`` if positive; else, when ``OMP_NUM_THREADS`` says nothing,
    the cores not busy right now (at least one); returns it. Logs a line when other programs hold a
    core or more."""
    have = cores()
    if threads <= 0 and os.environ.get("OMP_NUM_THREADS"):  # the user's setting stands
        return torch.get_num_threads()
    busy = busy_cores()
    if threads > 0:
        n = threads
        if n > have:
            log(f"threads: {n} asked for, this process may use {have} cores; expect slower epochs")
    else:
        n = have if busy is None else max(1, min(have, int(round(have - busy))))
    if busy is not None and busy >= 0.5:
        log(f"threads: other programs are using {busy:.1f} of {have} cores; training with {n} thread(s)"
            + ("" if threads > 0 else " (--threads N to choose)"))
    torch.set_num_threads(n)
    return n


def fastest(step, counts, repeats: int = 8, warmup: int = 2, limit: float = 0.05, margin: float = 0.1) -> tuple[int, dict]:
    """The thread count of ``counts`` under which ``step()`` runs fastest (the median of ``repeats``
    timed calls after ``warmup``, 24 for steps under 5 ms, the counts interleaved call by call so that
    a change in the machine's load hits them alike), and the medians by count; torch's count is left at
    the winner. A larger count wins only when it is faster by more than ``margin`` (a tenth): on this
    VM the timings of 1 ms steps spread by +-25%, and a tie is better left to fewer threads (the
    DeepONet's step took 1.28-1.56 ms on two threads that such a timing chose, 0.95 ms on one;
    benchmarks/RESULTS.md, issue 22). A step longer than ``limit`` seconds on the first count ends the
    timing there: the first count wins (steps that long use several threads well, and the timing would
    cost seconds)."""
    import statistics

    times: dict[int, list[float]] = {n: [] for n in counts}
    i = 0
    while i < warmup + repeats:
        slowest = 0.0
        for n in counts:
            torch.set_num_threads(n)
            tic = time.perf_counter()
            step()
            spent = time.perf_counter() - tic
            if n == counts[0] and spent > limit:
                torch.set_num_threads(counts[0])
                return counts[0], {counts[0]: spent}
            if i >= warmup:
                times[n].append(spent)
            slowest = max(slowest, spent)
        if i == max(warmup - 1, 0) and slowest < 0.005:  # short steps, noisy timings: more of them
            repeats = max(repeats, 24)
        i += 1
    medians = {n: statistics.median(t) for n, t in times.items()}
    best = fewest = min(counts)
    for n in counts:
        if medians[n] < (1 - margin) * medians[fewest] and medians[n] < medians[best]:
            best = n
    torch.set_num_threads(best)
    return best, medians


def probe_step(model, train, cfg):
    """One training step of a throwaway copy of ``model`` (a one-shot map on its first batch, the
    configured loss, the run's optimizer; the gradients written out where the model and loss can, as
    the Trainer's direct step takes them), or None where the run is not a plain map: what :func:`fastest`
    times to choose between one thread and several for small models, whose steps are too short for
    several threads to pay (the DeepONet paper's 7,401-parameter model; benchmarks/RESULTS.md)."""
    import copy

    from .. import losses
    from .trainer import _optimizer

    if (cfg.task != "map" or cfg.points or cfg.physics_weight > 0 or cfg.loss_mask or not train.in_memory
            or hasattr(model, "fit_data")):  # (a POD basis is fitted by the Trainer, after this)
        return None
    net = copy.deepcopy(model)
    opt = _optimizer(cfg, [p for p in net.parameters() if p.requires_grad], torch.device("cpu"))
    loss_fn, value_and_grad = losses.get(cfg.loss), losses.VALUE_AND_GRAD.get(cfg.loss)
    x, y = train.x[: cfg.batch_size], train.y[: cfg.batch_size]
    coords = tuple(train.out_coords)
    plan = getattr(net, "vjp_plan", None) if value_and_grad is not None else None
    run = plan(coords) if plan is not None else None
    root = losses.quadrature_weights(coords, train.periodic, root=True).float()
    slots = getattr(opt, "grad_views", lambda: None)()  # (FlatAdam's buffer, as the Trainer's step writes it)

    def step():
        with torch.random.fork_rng():  # (dropout draws nothing from the run's random state)
            opt.zero_grad(set_to_none=True)
            out = run(x) if run is not None else None
            if out is None:
                loss_fn(net(x, coords), y, coords, train.periodic).backward()
            else:  # the gradients written out, as the Trainer's direct step takes them
                pred, pullback = out
                for p, grad in pullback(value_and_grad(pred, y, coords, train.periodic, root=root)[1], slots):
                    p.grad = grad
            opt.step()

    return step


__all__ = ["busy_cores", "choose", "cores", "fastest", "probe_step", "using"]
