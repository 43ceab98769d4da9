"""How many CPU threads a training process uses.

torch runs its CPU kernels on OpenMP threads, by default one per core. Two such processes on one
machine ask for twice the cores there are; an OpenMP thread that waits at the end of a parallel
region keeps spinning for a while before it sleeps, so each process's waiting threads burn the
cores the other's working threads need, and an epoch can take many times longer than alone (the
issue's 4 s against 184 s on this 2-core machine; ``benchmarks/threads.py`` measures it). A
training process therefore takes the cores that are free when it starts (``train.threads: 0``, the
default), or the number it is told (``--threads N``), and says in its log when other programs
hold cores.
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


__all__ = ["busy_cores", "choose", "cores", "using"]
