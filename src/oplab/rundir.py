"""The run folder: the one place that knows its format.

::

    RUN/config.json           format + version, model config, train config, data description and
                              the split the run was trained on (files, sample ranges)
    RUN/metrics.jsonl         one JSON line per finished epoch
    RUN/checkpoints/last/     model + normalisers + optimizer + random state + epoch (resume)
    RUN/checkpoints/best/     the weights with the best validation error so far
    RUN/predictions.png, RUN/loss.png, RUN/tensorboard/, RUN/mlflow.db   (figures, optional logs)
    RUN/writer.lock           held by the one process that trains or resumes the run

Training creates a folder (:meth:`RunDir.create`, which refuses one that
already holds a run); resuming, ``oplab.load``, refining, evaluating and the
benchmark cases open one (:meth:`RunDir.open`, which checks the format and
version). Checkpoints are safetensors + JSON (:mod:`oplab.checkpoint`),
written atomically; nothing here unpickles anything.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import __version__
from . import checkpoint as ckpt
from .errors import DataFileError, OplabError, ParameterError
from .locking import FileLock

FORMAT = "oplab-run"
#: 2: the data section records the split (train / validation / test) and ``best`` is chosen on
#: the validation samples; version-1 folders (no split, ``best`` chosen on the test set) still load
VERSION = 2
READABLE = (1, 2)
CHECKPOINTS = ("best", "last")


class RunDir:
    """A run folder (see the module docstring). ``RunDir.open(path)`` or ``RunDir.create(path, config)``."""

    def __init__(self, path: str | Path, config: dict):
        self.path = Path(path)
        self.config = config
        self._lock = FileLock(self.path / "writer.lock")

    # ----------------------------------------------------------------- one writer
    def lock(self) -> "RunDir":
        """Become the folder's one writer (another process training or resuming it is refused,
        naming its PID; the lock of a dead process is taken over). ``create`` takes it."""
        self._lock.acquire(f"{self.path}: this run folder")
        return self

    def unlock(self) -> None:
        self._lock.release()

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(cls, path: str | Path, config: dict) -> "RunDir":
        """A new run folder holding ``config`` (plus format and version), locked for this process
        (:meth:`lock`); refuses an existing run."""
        path = cls.check_fresh(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OplabError(f"{path}: cannot make the run folder here ({exc.strerror or exc})") from None
        config = {"format": FORMAT, "run_version": VERSION, "oplab_version": __version__, **config}
        run = cls(path, config).lock()
        cls.check_fresh(path)  # again, as the writer: another process may have created it meanwhile
        run._write_json("config.json", config)
        (path / "metrics.jsonl").write_text("")
        return run

    def discard(self) -> None:
        """Remove a run folder that :meth:`create` made and nothing trained into (its config, empty
        metrics and lock); a folder holding anything else is left as it is."""
        import shutil

        made = {"config.json", "metrics.jsonl", "writer.lock"}
        names = {p.name for p in self.path.iterdir()} if self.path.is_dir() else set()
        if names <= made and not (self.path / "metrics.jsonl").read_text().strip():
            self.unlock()
            shutil.rmtree(self.path, ignore_errors=True)

    @staticmethod
    def check_fresh(path: str | Path) -> Path:
        """``path``, if it holds no run yet (a run folder is never overwritten)."""
        path = Path(path)
        if (path / "config.json").exists():
            raise OplabError(f"{path}: already holds a run; use --resume {path} to continue it, or another --out")
        return path

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run folder, its format and version checked."""
        path = Path(path)
        file = path / "config.json"
        if not file.exists():
            raise OplabError(f"{path}: not a run folder (no config.json)")
        try:
            config = json.loads(file.read_text())
        except ValueError:
            raise DataFileError(f"{file}: not valid JSON") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT or config.get("run_version") not in READABLE:
            got = config.get("format") if isinstance(config, dict) else None
            version = config.get("run_version") if isinstance(config, dict) else None
            raise OplabError(f"{file}: run format {got!r} v{version}, this oplab reads {FORMAT!r} "
                             f"v{'/'.join(map(str, READABLE))}")
        for key in ("model", "data", "train"):
            if not isinstance(config.get(key), dict):
                raise DataFileError(f"{file}: no {key!r} section")
        if not isinstance(config["model"].get("name"), str):
            raise DataFileError(f"{file}: the model section names no model ('name')")
        check_model_section(config["model"], file)
        check_data_section(config["data"], config["train"], file)
        return cls(path, config)

    # ----------------------------------------------------------------- contents
    @property
    def model(self) -> dict:
        return self.config["model"]

    @property
    def data(self) -> dict:
        return self.config["data"]

    @property
    def split(self) -> dict | None:
        """The recorded split (``oplab.train.data.Split.to_json``), None for version-1 runs."""
        return self.data.get("split")

    def figure(self, name: str) -> Path:
        return self.path / f"{name}.png"

    # ----------------------------------------------------------------- metrics
    def append_metrics(self, *records: dict) -> None:
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write("".join(json.dumps(record) + "\n" for record in records))

    def metrics(self, before_epoch: int | None = None, truncate: bool = False) -> list[dict]:
        """The epoch records (those before ``before_epoch``); ``truncate`` rewrites the file to them
        (resume: lines written after the last checkpoint are replayed, so they go)."""
        path = self.path / "metrics.jsonl"
        limit = math.inf if before_epoch is None else before_epoch
        records = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if isinstance(record, dict) and record.get("epoch", math.inf) < limit:
                records.append(record)
        if truncate:
            path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return records

    # ----------------------------------------------------------------- checkpoints
    @staticmethod
    def check_name(name: str) -> str:
        if name not in CHECKPOINTS:
            raise ParameterError(f"checkpoint must be one of {list(CHECKPOINTS)}, got {name!r}")
        return name

    def checkpoint_dir(self, name: str) -> Path:
        return self.path / "checkpoints" / self.check_name(name)

    def has_checkpoint(self, name: str) -> bool:
        try:
            ckpt.locate(self.checkpoint_dir(name))
        except DataFileError:
            return False
        return True

    def save_checkpoint(self, name: str, weights: dict, state_tensors: dict | None = None,
                        state: dict | None = None) -> None:
        ckpt.save(self.checkpoint_dir(name), weights, state_tensors, state)

    def load_weights(self, name: str = "best") -> tuple[dict, str]:
        """Weights of checkpoint ``name``; ``best`` falls back to ``last`` where no ``best`` was kept
        (no validation split, or stopped before the first evaluation) and in version-1 runs (their
        ``best`` was chosen on the test samples). Returns (weights, name used)."""
        if name == "best" and (self.config["run_version"] == 1 or not self.has_checkpoint("best")):
            name = "last"
        return ckpt.load_weights(self.checkpoint_dir(name)), name

    def load_into(self, module, name: str = "best") -> str:
        """Load checkpoint ``name`` (as :meth:`load_weights`) into ``module`` (a Bundle), or one
        DataFileError where the weights do not fit the model this folder's config builds.
        Returns the checkpoint used."""
        weights, name = self.load_weights(name)
        load_matching(module, weights, self.checkpoint_dir(name) / "weights.safetensors", self.path / "config.json")
        return name

    def load_state(self) -> tuple[dict, dict]:
        """The training state of ``last``: (tensors, JSON state)."""
        return ckpt.load_state(self.checkpoint_dir("last"))

    def state(self) -> dict | None:
        """The JSON training state of ``last`` (epoch, planned epochs, best), None before the first."""
        if not self.has_checkpoint("last"):
            return None
        return self.load_state()[1]

    # ----------------------------------------------------------------- helpers
    def _write_json(self, name: str, value: dict) -> None:
        import os

        tmp = self.path / (name + ".tmp")
        tmp.write_text(json.dumps(value, indent=1, allow_nan=False))
        os.replace(tmp, self.path / name)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def check_model_section(model: dict, file) -> None:
    """The model section of ``file`` names a registered model and holds every argument its
    constructor requires and no other (the values themselves are the constructor's to check);
    else one DataFileError naming ``file`` and the key."""
    import inspect

    from . import models

    try:
        cls = models.get(model["name"])
    except ParameterError as exc:
        raise DataFileError(f"{file}: model.name: {exc}") from None
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    given = {k for k in model if k != "name"}
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and k not in given]
    if missing:
        raise DataFileError(f"{file}: the model section lacks {', '.join(f'model.{k}' for k in missing)} "
                            f"(required by model {cls.name!r})")
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(given - set(params))
        if unknown:
            raise DataFileError(f"{file}: model {cls.name!r} takes no argument(s) "
                                f"{', '.join(f'model.{k}' for k in unknown)} (valid: {list(params)})")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_data_section(data: dict, train: dict, file) -> None:
    """The data description a loaded run needs (:class:`oplab.predictor.Predictor`): the model's
    input and output shapes ``[C, *S]`` (lists of positive ints) and the grid axes
    (``{name, n, lo, hi, periodic}``), one axis per spatial axis of the shapes (a space-time
    model has the time axis last); else one DataFileError naming ``file`` and the key."""
    import dataclasses

    from .problems.base import Axis

    fields = {f.name for f in dataclasses.fields(Axis)}
    for key in ("input_axes", "output_axes"):
        axes = data.get(key)
        ok = isinstance(axes, list) and len(axes) >= 1 and all(
            isinstance(a, dict) and set(a) <= fields and isinstance(a.get("name"), str)
            and _is_count(a.get("n")) and all(isinstance(a.get(k, 0.0), (int, float)) and not isinstance(a.get(k), bool)
                                              and math.isfinite(a.get(k, 0.0)) for k in ("lo", "hi"))
            and isinstance(a.get("periodic", False), bool) for a in axes)
        if not ok:
            raise DataFileError(f"{file}: data.{key} must be a non-empty list of grid axes "
                                f"{{name, n, lo, hi, periodic}}, got {_short(axes)}")
    time_axis = int(isinstance(train, dict) and train.get("task") == "spacetime")
    for key, axes in (("train_input_shape", "input_axes"), ("train_output_shape", "output_axes")):
        shape = data.get(key)
        if not (isinstance(shape, list) and len(shape) >= 2 and all(_is_count(v) for v in shape)):
            raise DataFileError(f"{file}: data.{key} must be a list of positive ints [C, *S], got {_short(shape)}")
        if len(shape) - 1 != len(data[axes]) + time_axis:
            d = len(shape) - 1
            also = " and the time axis" if time_axis else ""
            raise DataFileError(f"{file}: data.{key} is {shape} ({d} grid {'axis' if d == 1 else 'axes'} after the "
                                f"channels), but data.{axes} has {len(data[axes])} axes{also}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def load_matching(module, weights: dict, weights_path, config_path) -> None:
    """``module.load_state_dict(weights)``, or, where the weights do not fit the module built from
    ``config_path``, one DataFileError naming both files and the first 3 missing keys, unexpected
    keys and shape mismatches."""
    want = module.state_dict()
    missing = [k for k in want if k not in weights]
    unexpected = [k for k in weights if k not in want]
    shapes = [f"shape of {k} is {list(weights[k].shape)} not {list(want[k].shape)}"
              for k in want if k in weights and tuple(weights[k].shape) != tuple(want[k].shape)]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected", unexpected)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{label} {items[:3]}{more}")
    if shapes:
        problems.append(", ".join(shapes[:3]) + (f" and {len(shapes) - 3} more" if len(shapes) > 3 else ""))
    if problems:
        raise DataFileError(f"{weights_path}: does not fit the model in {config_path} ({'; '.join(problems)})")
    module.load_state_dict(weights)
