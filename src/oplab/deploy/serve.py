"""``oplab serve``: trained operators behind HTTP (FastAPI + uvicorn), with a page to try them.

::

    GET  /                              the page: pick a model and an example (or upload a .npy), see
                                        input, prediction, truth and error (``/?model=NAME&example=0``
                                        runs at once)
    GET  /health                        {"status": "ok", ...} and the request / batch counts
    GET  /models                        the served models (named after their run folders)
    GET  /models/{name}                 metadata: problem, shapes and grid axes, errors, checkpoint, versions
    POST /models/{name}/predict         JSON {"input": nested list} -> {"output": ..., "shape": [...]}, or a
                                        .npy body (application/x-npy or application/octet-stream) -> .npy
                                        (``Accept`` picks the other answer format)
    GET  /models/{name}/examples        a few of the run's test samples, where its data file is at hand
    GET  /models/{name}/examples/{i}    one of them: {"input": ..., "truth": ...}

Inputs take the forms :class:`oplab.predictor.Predictor` takes and answers equal ``oplab.load(RUN)(x)``.
Errors answer ``{"error": "<one line>"}``: the predictor's own message (422) for an input it refuses,
400 for a body that is not JSON / .npy, 404 for an unknown model, 413 for a body over the limit.
Concurrent requests for one model are batched (:class:`Batcher`). Nothing here imports the
training loop; .npy bodies are read without pickle.
"""

import asyncio
import io
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import OplabError, ParameterError
from ..predictor import Predictor

NPY_TYPES = ("application/x-npy", "application/octet-stream")
STATIC = Path(__file__).with_name("static")
N_EXAMPLES = 4
log = logging.getLogger("oplab.serve")


class Problem(Exception):
    """An HTTP error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# --------------------------------------------------------------------------- batching
@dataclass
class _Item:
    x: np.ndarray  # [b, C_in, *S]
    future: asyncio.Future


@dataclass
class Batcher:
    """One model's request queue: the worker takes up to ``max_batch`` samples of one input shape,
    waiting at most ``max_wait_ms`` for more after the first, runs the predictor once on them in
    ``executor`` (the event loop stays free) and hands each request its own rows. ``stats`` counts
    requests, batches and samples; ``on_batch(n_requests, n_samples)`` is called per batch."""

    op: Predictor
    executor: ThreadPoolExecutor
    max_batch: int = 32
    max_wait_ms: float = 5.0
    on_batch: object = None
    stats: dict = field(default_factory=lambda: {"requests": 0, "batches": 0, "samples": 0})

    def __post_init__(self):
        self._waiting: list[_Item] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._loop = None

    async def predict(self, a) -> np.ndarray:
        """``op(a)``, computed in a batch with other requests where ``a`` is a valid input."""
        loop = asyncio.get_running_loop()
        x, form = self.op.batch_of(a)  # the predictor's own rule and messages (OplabError)
        x = x.numpy()
        if self._loop is not loop or self._task is None or self._task.done():  # first call on this loop
            self._loop, self._wakeup, self._waiting = loop, asyncio.Event(), []
            self._task = loop.create_task(self._work())
        item = _Item(x, loop.create_future())
        self._waiting.append(item)
        self._wakeup.set()
        return self.op.unbatch(await item.future, form)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
            key = self._waiting[0].x.shape[1:]
            deadline = loop.time() + self.max_wait_ms / 1e3
            while sum(len(it.x) for it in self._waiting if it.x.shape[1:] == key) < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch, rest, n = [], [], 0
            for it in self._waiting:
                if it.x.shape[1:] == key and (not batch or n + len(it.x) <= self.max_batch):
                    batch.append(it)
                    n += len(it.x)
                else:
                    rest.append(it)
            self._waiting = rest
            try:
                await self._answer([it for it in batch if not it.future.done()])
            except Exception as exc:  # noqa: BLE001 - e.g. a failing on_batch hook: the worker lives on
                log.exception("batch failed")
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(exc)

    async def _answer(self, batch: list[_Item]) -> None:
        if not batch:
            return
        loop = asyncio.get_running_loop()
        x = batch[0].x if len(batch) == 1 else np.concatenate([it.x for it in batch])
        try:
            y = await loop.run_in_executor(self.executor, self.op, x)
        except Exception as exc:  # noqa: BLE001 - handed to the request(s)
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            for it in batch:  # an input the checks did not foresee spoils no other request
                await self._answer([it])
            return
        self.stats["requests"] += len(batch)
        self.stats["batches"] += 1
        self.stats["samples"] += len(x)
        if self.on_batch is not None:
            self.on_batch(len(batch), len(x))
        start = 0
        for it in batch:
            if not it.future.done():
                it.future.set_result(y[start:start + len(it.x)])
            start += len(it.x)


# --------------------------------------------------------------------------- one served run
class Served:
    """A loaded run with its metadata and example samples."""

    def __init__(self, name: str, run_dir: str | Path, checkpoint: str = "best"):
        self.name = name
        self.op = Predictor(run_dir, checkpoint)
        self.info = metadata(name, self.op)
        self._examples: list | None = None
        self._cache: dict[int, dict] = {}

    def example_source(self) -> tuple[list, str]:
        """``([(file, sample index, resolution), ...], description)`` of the run's first test samples;
        an empty list and the reason where there are none at hand."""
        if self._examples is not None:
            return self._examples
        data = self.op.data
        found, why = [], ""
        if self.op.task != "map":
            why = f"a {self.op.task} model's inputs are not the data file's samples; upload a .npy"
        else:
            split = data.get("split") or {}
            if split.get("tests"):
                part = split["tests"][0]
                file, res = part["file"], part.get("resolution")
                indices = [i for a, b in part["ranges"] for i in range(a, b)] if part.get("ranges") else None
            else:  # a version-1 run: the last n_test samples of its test (or training) file
                file, res, indices = data.get("test") or data.get("train"), data.get("resolution"), None
            if not file or not Path(file).is_file():
                why = f"the run's test data file {file} is not on this machine; upload a .npy"
            else:
                try:
                    from ..data.dataset import open_dataset

                    ds = open_dataset(file, res)
                    n = len(ds)
                    ds.close()
                    if indices is None:
                        indices = list(range(max(0, n - int(data.get("n_test") or 1)), n))
                    found = [(file, i, res) for i in indices if i < n][:N_EXAMPLES]
                    why = f"samples {', '.join(str(i) for _, i, _ in found)} of {Path(file).name} (test)"
                except OplabError as exc:
                    why = f"the run's test data file cannot be read ({exc}); upload a .npy"
        self._examples = (found, why)
        return self._examples

    def example(self, i: int) -> dict:
        found, why = self.example_source()
        if not 0 <= i < len(found):
            raise Problem(404, f"model {self.name!r} has {len(found)} example(s) ({why}); "
                               f"expected an index 0..{len(found) - 1}" if found else
                          f"model {self.name!r} has no examples: {why}")
        if i not in self._cache:
            from ..data.dataset import open_dataset

            file, index, res = found[i]
            ds = open_dataset(file, res)
            item = ds[index]
            ds.close()
            x, y = item["x"].numpy(), item["y"].numpy()
            self._cache[i] = {"index": i, "sample": index, "file": Path(file).name, "input_shape": list(x.shape),
                              "truth_shape": list(y.shape), "input": x.tolist(), "truth": y.tolist()}
        return self._cache[i]


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def metadata(name: str, op: Predictor) -> dict:
    """What ``GET /models/{name}`` answers: the run's problem, model, shapes and grid axes, errors
    (from ``metrics.jsonl``), checkpoint and versions."""
    from ..rundir import RunDir

    data, model = op.data, op.config["model"]
    records = RunDir.open(op.run_dir).metrics()
    best = [r for r in records if r.get("best")]
    val = best[-1] if op.checkpoint == "best" and best else next((r for r in reversed(records) if r.get("val")), None)
    test = next((r for r in reversed(records) if r.get("test")), None)
    errors = {"epochs": len(records),
              "train_loss": _finite(records[-1].get("train_loss")) if records else None,
              "validation": {"epoch": val["epoch"], **val["val"]} if val and val.get("val") else None,
              "test": {"epoch": test["epoch"], **test["test"]} if test else None}
    c_in = data["train_input_shape"][0]
    axes = ", ".join(a.name for a in op.in_axes)
    accepts = f"[{c_in}, {axes}] or [B, {c_in}, {axes}]" + (f" (one channel: also [{axes}] or [B, {axes}])"
                                                              if c_in == 1 else "")
    side = lambda k: {"shape": data[f"train_{k}_shape"], "channels": data.get(f"{k}_channels"),  # noqa: E731
                      "axes": data[f"{k}_axes"]}
    return {
        "name": name,
        "problem": data.get("problem"), "params": data.get("params"),
        "model": {"name": model["name"], "kind": op.kind,
                  "parameters": sum(p.numel() for p in op.bundle.model.parameters())},
        "task": op.task, "n_times": data.get("n_times"),
        "input": {**side("input"), "accepts": accepts, "any_resolution": op.kind == "grid"},
        "output": side("output"),
        "errors": errors,
        "checkpoint": op.checkpoint,
        "trained_with": op.config.get("oplab_version"), "oplab_version": __version__,
    }


# --------------------------------------------------------------------------- the app
def parse_runs(runs) -> dict[str, Path]:
    """``["RUN", "NAME=RUN", ...]`` -> ``{name: folder}`` (a model is named after its folder unless given)."""
    named: dict[str, Path] = {}
    for spec in runs:
        spec = str(spec)
        name, _, path = spec.partition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
        path = Path(path)
        name = name or path.resolve().name
        if not name or "/" in name:
            raise ParameterError(f"{spec!r}: expected RUN_DIR or NAME=RUN_DIR with a NAME without '/'")
        if name in named:
            raise ParameterError(f"two runs named {name!r} ({named[name]} and {path}); name them: NAME=RUN_DIR")
        named[name] = path
    if not named:
        raise ParameterError("expected at least one run folder to serve")
    return named


def create_app(run_dirs, max_batch: int = 32, max_wait_ms: float = 5.0, max_bytes: int = 64 * 2**20,
               checkpoint: str = "best"):
    """A FastAPI app serving the runs ``run_dirs`` (folders, or ``NAME=FOLDER``) as in the module
    docstring; each run is loaded here, so a bad folder raises its OplabError now. ``app.state``
    holds ``models`` ({name: :class:`Served`}) and ``batchers`` ({name: :class:`Batcher`}, whose
    ``stats`` count requests and batches)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import FileResponse, JSONResponse, Response
        from starlette.exceptions import HTTPException
    except ImportError:
        raise OplabError("oplab serve needs FastAPI and uvicorn: pip install 'oplab[serve]'") from None
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ParameterError(f"max_batch (--max-batch) must be a positive int, got {max_batch!r}")
    if not (isinstance(max_wait_ms, (int, float)) and 0 <= max_wait_ms <= 10_000):
        raise ParameterError(f"max_wait_ms (--max-wait-ms) must be a number of milliseconds in [0, 10000], "
                             f"got {max_wait_ms!r}")
    if not (isinstance(max_bytes, int) and max_bytes >= 1):
        raise ParameterError(f"max_bytes must be a positive int, got {max_bytes!r}")
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    models = {name: Served(name, path, checkpoint) for name, path in parse_runs(run_dirs).items()}
    # one thread runs the models (one call at a time), one parses and encodes bodies beside the event
    # loop: few threads, few malloc arenas, so the memory settles sooner (benchmarks/serve_load.py)
    executor = ThreadPoolExecutor(1, thread_name_prefix="oplab-model")
    io_thread = ThreadPoolExecutor(1, thread_name_prefix="oplab-io")
    batchers = {name: Batcher(s.op, executor, max_batch, max_wait_ms) for name, s in models.items()}
    started = time.time()

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        for b in batchers.values():
            b.close()

    app = FastAPI(title="oplab", version=__version__, lifespan=lifespan,
                  description="Trained neural operators: predictions, metadata and a page.")
    app.state.models, app.state.batchers = models, batchers
    app.state.limits = {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_bytes": max_bytes}

    def served(name: str) -> Served:
        if name not in models:
            raise Problem(404, f"no model {name!r}; served: {sorted(models)}")
        return models[name]

    @app.exception_handler(Problem)
    async def _problem(request, exc: Problem):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(OplabError)
    async def _refused(request, exc: OplabError):
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def _crash(request, exc: Exception):
        log.exception("request %s failed", request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}".splitlines()[0]},
                            status_code=500)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    async def health():
        return {"status": "ok", "oplab_version": __version__, "uptime_s": round(time.time() - started, 1),
                "models": {n: dict(b.stats) for n, b in batchers.items()}, "limits": app.state.limits}

    @app.get("/models")
    async def list_models():
        return {"models": [{k: s.info[k] for k in ("name", "problem", "task")} | {"model": s.info["model"]["name"]}
                           for s in models.values()]}

    @app.get("/models/{name}")
    async def model_info(name: str):
        return served(name).info

    @app.get("/models/{name}/examples")
    async def examples(name: str):
        s = served(name)
        found, why = await asyncio.get_running_loop().run_in_executor(io_thread, s.example_source)
        return {"examples": [{"index": i, "sample": j, "file": Path(f).name} for i, (f, j, _) in enumerate(found)],
                "source": why}

    @app.get("/models/{name}/examples/{index}")
    async def example(name: str, index: int):
        s = served(name)
        return await asyncio.get_running_loop().run_in_executor(io_thread, s.example, index)

    @app.post("/models/{name}/predict")
    async def predict(name: str, request: Request):
        s = served(name)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in NPY_TYPES and not kind.endswith("json"):
            raise Problem(415, f"Content-Type {kind or 'none'}: expected application/json ({{\"input\": [...]}}) "
                               f"or application/x-npy / application/octet-stream (a .npy file)")
        body = await read_body(request, max_bytes)
        loop = asyncio.get_running_loop()  # parsing and encoding off the event loop (large JSON takes a while)
        a = await loop.run_in_executor(io_thread, parse_npy if kind in NPY_TYPES else parse_json, body)
        y = await batchers[name].predict(a)
        accept = request.headers.get("accept", "")
        if any(t in accept for t in NPY_TYPES) or (kind in NPY_TYPES and "json" not in accept):
            return Response(await loop.run_in_executor(io_thread, npy_bytes, y), media_type="application/x-npy")
        if not np.isfinite(y).all():
            raise Problem(500, f"model {s.name!r} answered NaN or Inf, which JSON cannot hold; ask for .npy")
        text = await loop.run_in_executor(io_thread, json_bytes, y)
        return Response(text, media_type="application/json")

    return app


async def read_body(request, max_bytes: int) -> bytes:
    """The request body, refused with 413 once it is over ``max_bytes`` (by its Content-Length, or by
    the bytes as they arrive)."""
    over = lambda n: Problem(413, f"request body of {n} bytes is over this server's limit of {max_bytes} "  # noqa: E731
                                  f"bytes (oplab serve --max-mb)")
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise Problem(400, f"Content-Length {length!r}: expected a number of bytes")
        if int(length) > max_bytes:
            raise over(int(length))
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > max_bytes:
            raise over(f"more than {max_bytes}")
        chunks.append(chunk)
    return b"".join(chunks)


def npy_bytes(y: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, y, allow_pickle=False)
    return buf.getvalue()


def json_bytes(y: np.ndarray) -> bytes:
    return json.dumps({"output": y.tolist(), "shape": list(y.shape)}).encode()


def parse_json(body: bytes):
    """The ``input`` of a JSON body ``{"input": nested list of numbers}``, as an array (a ragged
    nest stays a list, for the predictor to refuse in its words)."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise Problem(400, f"request body is not valid JSON ({exc}): expected {{\"input\": [...]}}") from None
    if not isinstance(doc, dict) or "input" not in doc:
        raise Problem(400, "JSON body: expected an object {\"input\": [...]} holding a nested list of numbers")
    if not isinstance(doc["input"], (list, int, float)) or isinstance(doc["input"], bool):
        raise Problem(422, f"JSON body: \"input\" is a {type(doc['input']).__name__}, "
                           f"expected a nested list of numbers")
    try:
        return np.asarray(doc["input"])
    except ValueError:
        return doc["input"]


def parse_npy(body: bytes) -> np.ndarray:
    """A .npy body as an array (no pickle: object arrays are refused)."""
    if not body.startswith(b"\x93NUMPY"):
        raise Problem(400, f"request body of {len(body)} bytes is not a .npy file (no \\x93NUMPY header): expected "
                           f"what np.save writes, or Content-Type application/json")
    try:
        return np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Problem(400, f"request body is not a plain .npy array ({why})") from None


def serve(runs, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 32, max_wait_ms: float = 5.0,
          max_mb: float = 64.0, checkpoint: str = "best", log_level: str = "info", announce=print) -> None:
    """Run the app on ``host:port`` (0: a free port) until interrupted; the runs are loaded and the
    port is bound first, so a bad folder or a taken port is one OplabError before anything serves."""
    import socket

    if not 0 <= port <= 65535:
        raise ParameterError(f"--port must be in 0..65535, got {port}")
    if log_level not in ("critical", "error", "warning", "info", "debug", "trace"):
        raise ParameterError(f"--log-level {log_level!r}: expected critical, error, warning, info, debug or trace")
    if not max_mb > 0:
        raise ParameterError(f"--max-mb must be a positive number of megabytes, got {max_mb}")
    app = create_app(runs, max_batch, max_wait_ms, int(max_mb * 2**20), checkpoint)
    try:
        import uvicorn
    except ImportError:
        raise OplabError("oplab serve needs FastAPI and uvicorn: pip install 'oplab[serve]'") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # (asyncio sets TCP_NODELAY on such)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OplabError(f"{host}:{port}: cannot listen there ({exc.strerror or exc}); "
                         f"choose another --host/--port") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(app, host=host, port=bound, log_level=log_level)
    announce(f"serving {', '.join(app.state.models)} at http://{shown}:{bound}/ (Ctrl-C to stop)")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it shut down on
        pass
    finally:
        sock.close()
