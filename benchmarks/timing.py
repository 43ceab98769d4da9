"""Interleaved timing shared by the benchmark scripts (imported as ``timing`` from ``benchmarks/``)."""

from __future__ import annotations

import time


def interleaved(paths: dict, x, rounds: int, repeats: int, per: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each ``paths[name](x)``, divided by ``per`` (e.g. the batch: per sample).
    In each of ``rounds`` rounds every path makes 2 warm-up calls then ``repeats`` timed calls in a
    row, so slow drifts of a shared machine fall on all paths alike."""
    times = {name: [] for name in paths}
    for _ in range(rounds):
        for name, f in paths.items():
            for k in range(2 + repeats):
                tic = time.perf_counter()
                f(x)
                if k >= 2:
                    times[name].append((time.perf_counter() - tic) / per)
    return times
