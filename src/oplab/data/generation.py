"""Resumable, deterministic data set generation.

The ``n`` samples are cut into aligned chunks of ``problem.chunk_size``
indices; chunk ``c`` holds samples ``[c * size, (c + 1) * size)`` and is
computed from ``rng_for(seed, i)`` of its own samples only, so the result
does not depend on the number of workers, their order, or the machine.

Each finished chunk is saved at once (atomically: write, then rename) as
``FILE.parts/chunk_XXXXXX.npz``. Rerunning the same command after an
interruption (Ctrl-C, ``kill -9``, a lost Dask worker) computes only the
missing chunks. When all are there, they are assembled into ``FILE.tmp``,
which is marked complete and renamed to ``FILE``; only then is the parts
folder removed. A file under its final name is therefore always complete.

Workers: a local process pool (``workers`` processes), or a Dask cluster
(``scheduler="local"`` for a ``LocalCluster``, or a scheduler address).

Progress: ``progress(done, total)`` is called as chunks are saved; problems
whose ``generate`` takes a ``progress`` callable (``navier_stokes``) also
report how far a chunk's computation has come, and ``done`` then moves in
fractions of a sample in between (it reaches the next whole number only when
the chunk is saved). That works in this process and across a local pool
(the workers send their fractions through a queue, at most every
``PROGRESS_INTERVAL`` seconds); with Dask only whole chunks are reported.
Progress reporting never changes what is computed.

The pool starts its processes with "spawn" (never "fork": the caller may
hold torch/BLAS threads), and a spawned process re-runs the caller's main
script before it takes work ("forkserver" does the same, with or without a
preload list). A script that calls ``generate(..., workers=N)`` at its top
level, outside ``if __name__ == "__main__":``, would call it again in every
worker. Such a worker notes this in the parts folder and exits at once; the
caller then raises one :class:`OplabError` that says to add the guard (or to
pass ``workers=1``), instead of a ``BrokenProcessPool``.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import multiprocessing
import os
import queue as queue_module
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .. import __version__
from ..locking import FileLock
from ..errors import DataFileError, OplabError, ParameterError
from ..problems import create as create_problem
from ..problems.base import LATER_DEFAULTS, Problem
from . import format as fmt

Progress = Callable[[float, int], None]  # (samples done, fractional while a chunk runs; samples total)
Partial = Callable[[int, float], None]  # (first index of a chunk, fraction of the chunk computed)

#: seconds between two reports of a chunk's partial progress
PROGRESS_INTERVAL = 0.25

_PROGRESS_QUEUE = None  # in a pool worker: where compute_chunk sends partial progress


def _chunks(n: int, size: int) -> list[range]:
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


_WORKER_PROBLEMS: dict = {}


def tune_allocator() -> None:
    """Keep freed large buffers in the process instead of returning them to the OS.

    glibc hands every large FFT buffer back with ``munmap`` and maps it again
    on the next step; raising the mmap and trim thresholds (``mallopt``) makes
    the batched Navier-Stokes solver 1.5-2.6x faster on the CPU. Applied to
    generation processes only (workers and the ``oplab generate`` command),
    never at import. A no-op where glibc is absent.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _die_with_parent() -> None:
    """Linux: end this worker when the process that started it dies (``kill -9``
    of ``oplab generate`` must not leave orphans computing chunks nobody saves)."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


_POOL_ENV = "OPLAB_GENERATE_POOL"  # "<pid>:<note path>" of the generate whose pool is starting


def _starting_child() -> bool:
    """True while this process is a multiprocessing child that is still starting:
    spawn and forkserver re-run the parent's main script (as ``__mp_main__``)
    at that point (before ``multiprocessing.parent_process()`` is set).
    ``_inheriting`` is the flag multiprocessing's own check
    (``spawn._check_not_importing_main``) reads."""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def _main_guard_message(workers) -> str:
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    script = f"the script {main}" if main else "the main script"
    return (f"generate(workers={workers}) is reached from the top level of {script}, which every "
            f"worker process re-runs as it starts: put the call under `if __name__ == \"__main__\":`, "
            f"or pass workers=1")


def _leave_if_pool_worker() -> None:
    """In a worker of a generate pool that is re-running the caller's unguarded
    main script: note that in the parts folder and end the worker quietly (the
    caller raises the one clear error)."""
    mark = os.environ.get(_POOL_ENV, "")
    pid, _, note = mark.partition(":")
    if note and _starting_child() and pid == str(os.getppid()):
        try:
            open(note, "w").close()
        except OSError:
            pass
        raise SystemExit(3)


def _init_worker(progress_queue=None) -> None:
    """Pool/Dask worker set-up: one thread per process (the pool is the parallelism);
    ``progress_queue`` (pool workers) receives ``(first index, fraction)`` of running chunks."""
    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = progress_queue
    tune_allocator()
    _die_with_parent()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:  # torch is only imported by problems that use it (navier_stokes)
        import sys

        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
    except Exception:  # pragma: no cover - best effort
        pass


def _reports_progress(problem: Problem) -> bool:
    """Whether ``problem.generate`` takes a ``progress`` callable (fraction of its samples done)."""
    try:
        return "progress" in inspect.signature(problem.generate).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False


def _send_to_queue(first: int, fraction: float) -> None:
    try:
        _PROGRESS_QUEUE.put_nowait((first, fraction))
    except (queue_module.Full, OSError, ValueError):  # progress is best effort
        pass


def compute_chunk(spec: dict, indices: list[int], partial: Partial | None = None) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Solve samples ``indices`` of the data set described by ``spec``; float32 arrays.

    Runs in a worker process; the problem object is built once per process.
    ``partial(indices[0], fraction)`` is called at most every
    :data:`PROGRESS_INTERVAL` seconds while a problem that reports progress
    computes (in a pool worker: sent to the pool's progress queue).
    """
    key = json.dumps(spec, sort_keys=True)
    problem = _WORKER_PROBLEMS.get(key)
    if problem is None:
        problem = create_problem(spec["problem"], spec["resolution"], **spec["params"])
        _WORKER_PROBLEMS.clear()
        _WORKER_PROBLEMS[key] = problem
    if partial is None and _PROGRESS_QUEUE is not None:
        partial = _send_to_queue
    kwargs = {}
    if partial is not None and indices and _reports_progress(problem):
        first, last = indices[0], [time.monotonic()]

        def report(fraction: float) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                partial(first, fraction)

        kwargs["progress"] = report
    x, y = problem.generate(indices, spec["seed"], **kwargs)
    for name, arr in (("inputs", x), ("outputs", y)):
        bad = ~np.isfinite(arr.reshape(len(indices), -1)).all(axis=1)
        if bad.any():
            raise OplabError(
                f"{spec['problem']}: the solver produced non-finite {name} for sample(s) "
                f"{[indices[j] for j in np.flatnonzero(bad)]} (seed {spec['seed']})"
            )
    return list(indices), x.astype(np.float32), y.astype(np.float32)


class _Parts:
    """The folder of finished chunks beside the output file."""

    def __init__(self, out: Path, spec: dict):
        self.out = out
        self.dir = out.with_name(out.name + ".parts")
        self.spec = spec

    def path(self, chunk: int) -> Path:
        return self.dir / f"chunk_{chunk:06d}.npz"

    def lock(self) -> None:
        """Hold an exclusive lock on the parts folder (released by the OS even
        after ``kill -9``): two commands writing one file are refused."""
        self._lock = FileLock(self.out.with_name(self.out.name + ".lock"))
        try:
            self._lock.acquire(f"{self.out}: this data set")
        except OplabError:
            if _starting_child():  # the parent's main script, re-run in a child it is starting
                raise OplabError(f"{self.out}: generate is called at the top level of the main script, which "
                                 f"this starting child process re-runs: put the call under "
                                 f"`if __name__ == \"__main__\":`") from None
            raise

    def unlock(self) -> None:
        self._lock.release()
        self._lock.path.unlink(missing_ok=True)

    def open(self, overwrite: bool) -> None:
        spec_file = self.dir / "spec.json"
        if self.dir.exists():
            old = None
            try:
                old = json.loads(spec_file.read_text())
            except (OSError, ValueError):
                pass
            if _with_new_defaults(old, self.spec) != self.spec:
                if not overwrite:
                    raise OplabError(
                        f"{self.dir}: holds a partial generation with other settings "
                        f"({_spec_diff(old, self.spec)}); rerun that command, or pass --overwrite"
                    )
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not spec_file.exists():
            tmp = spec_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.spec, sort_keys=True, indent=1))
            os.replace(tmp, spec_file)

    def done(self, chunk: int) -> bool:
        return self.path(chunk).exists()

    def save(self, chunk: int, x: np.ndarray, y: np.ndarray) -> None:
        final = self.path(chunk)
        tmp = final.with_name(final.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, inputs=x, outputs=y)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)

    def load(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.path(chunk)) as z:
            return z["inputs"], z["outputs"]


def _spec_diff(old: dict | None, new: dict) -> str:
    if old is None:
        return "unreadable spec.json"
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} there vs {new.get(k)!r} now" for k in keys)


def _run_pool(spec: dict, todo: list[range], workers: int, note: Path,
              partial: Partial | None = None) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
    """Chunks computed by ``workers`` spawned processes; ``note`` is where a worker
    that re-ran an unguarded main script says so (see the module docstring);
    ``partial`` receives the running chunks' progress (in this process)."""
    if workers <= 1:
        for chunk in todo:
            yield compute_chunk(spec, list(chunk), partial)
        return
    ctx = get_context("spawn")  # no fork of a process that may hold torch/BLAS threads
    note.unlink(missing_ok=True)
    mark, before = f"{os.getpid()}:{note}", os.environ.get(_POOL_ENV)
    os.environ[_POOL_ENV] = mark  # inherited by the workers spawned below
    reports = ctx.Queue() if partial is not None else None
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(reports,))

    def drain() -> None:
        while reports is not None:
            try:
                first, fraction = reports.get_nowait()
            except (queue_module.Empty, OSError, ValueError):
                return
            partial(first, fraction)

    try:
        pending = set()
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < 2 * workers:  # bounded look-ahead: bounded memory
                pending.add(pool.submit(compute_chunk, spec, list(queue.pop(0))))
            finished, pending = wait(pending, timeout=PROGRESS_INTERVAL if reports is not None else None,
                                     return_when=FIRST_COMPLETED)
            drain()
            for fut in finished:
                yield fut.result()
    except BrokenProcessPool:
        if note.exists():
            note.unlink(missing_ok=True)
            raise OplabError(_main_guard_message(workers)) from None
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if reports is not None:
            reports.close()
        if os.environ.get(_POOL_ENV) == mark:
            if before is None:
                os.environ.pop(_POOL_ENV, None)
            else:
                os.environ[_POOL_ENV] = before


def _run_dask(spec: dict, todo: list[range], scheduler: str, workers: int) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(
            n_workers=max(workers, 1), threads_per_worker=1, processes=True,
            dashboard_address=None, silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise OplabError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
        except (ValueError, TypeError) as exc:  # a malformed address
            raise OplabError(_address_message(scheduler, exc)) from None
    try:
        client.run(_init_worker)
        futures = [client.submit(compute_chunk, spec, list(c), pure=False) for c in todo]
        for fut in as_completed(futures):
            yield fut.result()
            fut.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _address_message(scheduler: str, exc: Exception) -> str:
    return f"--scheduler {scheduler!r} is not a Dask scheduler address (expected local or tcp://HOST:PORT): {exc}"


def _check_address(scheduler: str) -> None:
    """A ParameterError unless ``scheduler`` parses as a Dask address of a known scheme (checked
    before anything is written; whether it answers is found out when connecting)."""
    from distributed.comm import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    try:
        scheme, location = parse_address(scheduler)
        get_backend(scheme)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise ParameterError(_address_message(scheduler, exc)) from None


def generate(
    problem: Problem,
    n: int,
    out: str | Path,
    seed: int = 0,
    workers: int = 1,
    scheduler: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Generate ``n`` samples of ``problem`` into the HDF5 file ``out``.

    An existing complete ``out`` is refused unless ``overwrite`` (replace it)
    or ``resume`` (keep it when its settings match). A partial generation of
    the same settings (``out.parts``) is always resumed.
    """
    _leave_if_pool_worker()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ParameterError(f"n must be a positive integer, got {n!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ParameterError(f"workers must be an integer >= 1, got {workers!r}")
    out = Path(out)
    spec = {
        "problem": problem.name,
        "resolution": problem.resolution,
        "params": problem.params,
        "seed": int(seed),
        "n": int(n),
        "oplab_version": __version__,
    }
    if out.is_dir():
        raise ParameterError(f"{out}: is a folder; --out names the HDF5 file to write (e.g. {out / 'data.h5'})")
    if out.exists():
        if resume and not overwrite:
            _check_matches(out, spec)
            if progress:
                progress(n, n)
            return out
        if not overwrite:
            raise OplabError(f"{out}: exists; pass --overwrite to replace it or --resume to keep it")
    if not out.parent.exists():
        raise ParameterError(f"{out}: the folder {out.parent} does not exist; create it first")
    if not out.parent.is_dir():
        raise ParameterError(f"{out}: {out.parent} is a file, not a folder")
    check_size(problem, n, out)
    if scheduler and scheduler != "local":
        _check_address(scheduler)

    parts = _Parts(out, spec)
    try:
        parts.lock()
    except OSError as exc:
        raise ParameterError(f"{out}: cannot create files in {out.parent} ({exc.strerror or exc})") from None
    try:
        _fill(problem, n, out, seed, workers, scheduler, overwrite, progress, parts, spec)
    finally:
        parts.unlock()
    return out


def _bytes(n: float) -> str:
    """``n`` bytes in binary units: "7.3 TiB", "22 GiB", "512 B"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            break
        n /= 1024
    return f"{n:.0f} {unit}" if n >= 10 or unit == "B" else f"{n:.1f} {unit}"


def available_memory() -> int | None:
    """Bytes of memory this process may still take: the machine's available memory (psutil's
    ``available`` where psutil is importable, else the free physical pages), at most the
    process's address-space limit (``ulimit -v``) less what it already maps; None where nothing
    says."""
    free = None
    try:
        import psutil

        free = int(psutil.virtual_memory().available)
    except Exception:  # not installed, or no /proc
        try:
            free = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            pass
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as fh:
                mapped = int(fh.read().split()[0]) * int(os.sysconf("SC_PAGE_SIZE"))
            room = max(limit - mapped, 0)
            free = room if free is None else min(free, room)
    except (ImportError, OSError, ValueError, AttributeError):
        pass
    return free


def check_size(problem: Problem, n: int, out: Path) -> None:
    """Refuse up front (a ParameterError with the estimate) a generation whose file would not fit
    the free disk space of ``out``'s folder, or whose samples' arrays would not fit in memory.

    Both estimates are lower bounds, from the problem's shapes: the file holds ``n x (inputs +
    outputs)`` float32 values; a worker holds at least the float64 inputs and outputs of the
    samples it solves together (``chunk_size``) and what the problem says its solver holds
    besides (:meth:`~oplab.problems.base.Problem.working_memory`), so only requests that cannot
    succeed are refused."""
    values = math.prod(problem.input_shape()) + math.prod(problem.output_shape())
    what = f"{problem.name} at resolution {problem.resolution}"
    together = min(int(problem.chunk_size), int(n))
    memory = problem.working_memory(together)
    free = available_memory()
    if free is not None and memory > free:
        whose = "one sample" if together == 1 else f"a chunk of {together} samples (solved together)"
        raise ParameterError(f"{what}: {whose} needs at least {_bytes(memory)} of memory (its float64 inputs, "
                             f"outputs and the solver's own arrays), {_bytes(free)} are available; use a lower "
                             f"--resolution")
    size = int(n) * values * 4
    try:
        disk = shutil.disk_usage(out.parent)
    except OSError:
        return
    if disk.total and size > disk.free:  # total 0: a pseudo file system that says nothing
        raise ParameterError(f"{what}: {int(n)} samples make a file of about {_bytes(size)}, "
                             f"{out.parent} has {_bytes(disk.free)} free; use a smaller --n or another folder")


def _fill(problem, n, out, seed, workers, scheduler, overwrite, progress, parts, spec) -> None:
    """Compute the missing chunks into ``parts``, then assemble ``out`` (see module docstring)."""
    parts.open(overwrite)
    chunks = _chunks(n, problem.chunk_size)
    todo_ids = [c for c in range(len(chunks)) if not parts.done(c)]
    done = n - sum(len(chunks[c]) for c in todo_ids)
    if progress:
        progress(done, n)
    first_of = {chunks[c][0]: c for c in todo_ids}
    running: dict[int, float] = {}  # first index of a chunk being computed -> samples' worth done

    def partial(first: int, fraction: float) -> None:
        if first in first_of:  # a report that arrives after its chunk was saved is ignored
            running[first] = min(max(fraction, 0.0), 1.0) * len(chunks[first_of[first]])
            progress(min(done + sum(running.values()), n), n)

    if todo_ids:
        todo = [chunks[c] for c in todo_ids]
        runner = (_run_dask(spec, todo, scheduler, workers) if scheduler
                  else _run_pool(spec, todo, workers, parts.dir / "main-reimported", partial if progress else None))
        for indices, x, y in runner:
            parts.save(first_of.pop(indices[0]), x, y)
            running.pop(indices[0], None)
            done += len(indices)
            if progress:
                progress(done + sum(running.values()), n)

    tmp = out.with_name(out.name + ".tmp")
    f = fmt.create(tmp, problem, n, seed)
    try:
        for c, chunk in enumerate(chunks):
            x, y = parts.load(c)
            f["inputs"][chunk.start : chunk.stop] = x
            f["outputs"][chunk.start : chunk.stop] = y
        fmt.finish(f)
    except BaseException:
        f.close()
        raise
    os.replace(tmp, out)
    shutil.rmtree(parts.dir)


def _with_new_defaults(old: dict | None, spec: dict) -> dict | None:
    """``old`` settings with the parameters it lacks but ``spec`` sets to the value that reproduces
    files written before they existed (:data:`oplab.problems.base.LATER_DEFAULTS`, the rule the data
    fingerprint follows too) filled in."""
    if not isinstance(old, dict) or not isinstance(old.get("params"), dict):
        return old
    params = dict(old["params"])
    for key, value in spec["params"].items():
        if key not in params and key in LATER_DEFAULTS and value == LATER_DEFAULTS[key]:
            params[key] = value
    return {**old, "params": params}


def _check_matches(out: Path, spec: dict) -> None:
    meta = fmt.read_meta(out)
    have = _with_new_defaults({k: meta[k] for k in ("problem", "resolution", "params", "seed", "n")}, spec)
    want = {k: spec[k] for k in have}
    if have != want:
        raise DataFileError(f"{out}: exists with other settings ({_spec_diff(have, want)}); pass --overwrite to replace it")
