"""Experiment loggers: Trainer callbacks that send each epoch's record to TensorBoard or MLflow.

Both are :class:`~oplab.train.callbacks.Callback` objects (``train.loggers: [tensorboard, mlflow]``
makes them), log only in the main (rank-0) process, and name an epoch record's numbers the same
way (:func:`metrics`)::

    {"epoch": 3, "lr": 1e-3, "train_loss": 0.12, "val": {"l2": 0.05}, "test": {"33": {"l2": 0.051}}}
    -> step 3: train/lr, train/loss, val/l2, test/33/l2

The packages are optional extras, imported only when a logger is made::

    pip install "oplab[tensorboard]"   # TensorBoardLogger
    pip install "oplab[mlflow]"        # MLflowLogger (mlflow-skinny with SQLAlchemy for its SQLite store)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import numbers
import re
import time
import warnings
from pathlib import Path

from ..errors import OplabError, ParameterError
from .callbacks import Callback

__all__ = ["TensorBoardLogger", "MLflowLogger", "make_loggers", "metrics"]


def _flatten(tree: dict, prefix: str = "", sep: str = "/") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``: every leaf under its ``sep``-joined path."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(_flatten(value, path, sep))
        else:
            flat[path] = value
    return flat


def metrics(record: dict) -> dict[str, float]:
    """The numeric leaves of an epoch record under slash-joined names, ``epoch`` left out (it is the step).

    Nested dicts keep their path (``val/l2``, ``test/33/h1``); a top-level number goes under
    ``train/`` without a ``train_`` prefix (``train_loss`` -> ``train/loss``, ``lr`` -> ``train/lr``,
    ``epoch_seconds`` -> ``train/epoch_seconds``). Strings, bools and None are skipped.
    """
    out = {}
    for key, value in record.items():
        if key == "epoch":
            continue
        if isinstance(value, dict):
            leaves = _flatten(value, str(key))
        else:
            leaves = {"train/" + str(key).removeprefix("train_"): value}
        out.update({k: float(v) for k, v in leaves.items()
                    if isinstance(v, numbers.Real) and not isinstance(v, bool)})
    return out


def _config(trainer) -> dict:
    """``{"train": {...}, "model": {...}, "data": {...}}``: the run's settings as plain values."""
    cfg = trainer.cfg
    train = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg or {})
    info = dict(getattr(trainer, "info", None) or {})
    return {"train": train, **{k: v for k, v in info.items() if k in ("model", "data")}}


def _missing(name: str, package: str) -> OplabError:
    return OplabError(f'train.loggers: {name!r} needs the {package} package: pip install "oplab[{name}]"')


def _run_dir(trainer, name: str) -> Path:
    if getattr(trainer, "run_dir", None) is None:
        raise OplabError(f"train.loggers: {name!r} needs a run folder (out) or an explicit location")
    return Path(trainer.run_dir)


class _Logger(Callback):
    """A logger runs after the epoch's record is complete, before the run folder is written."""

    order = 85


class TensorBoardLogger(_Logger):
    """Writes TensorBoard event files (``torch.utils.tensorboard.SummaryWriter``) to ``log_dir``,
    by default ``<run_dir>/tensorboard``.

    - fit start: the run's configuration (train settings, model, data) once, as the text ``config``
      at step ``start_epoch``;
    - epoch end: every number of the record as a scalar at step = epoch (:func:`metrics`:
      ``train/loss``, ``train/lr``, ``train/epoch_seconds``, ``val/l2``, ``test/<label>/h1``, ...),
      then a flush;
    - fit end: closes the writer.

    On resume (``trainer.start_epoch > 0``) the writer opens with ``purge_step=start_epoch``, so the
    points that a crashed attempt wrote at the re-run epochs are hidden and each epoch shows once.
    Hyper-parameters are logged as text, not with ``add_hparams`` (that writes a separate sub-run).
    """

    def __init__(self, log_dir: str | Path | None = None):
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboard") from None
        self._writer_cls = SummaryWriter
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.writer = None

    def on_fit_start(self, trainer):
        if not trainer.main:
            return
        log_dir = self.log_dir or _run_dir(trainer, "tensorboard") / "tensorboard"
        start = int(getattr(trainer, "start_epoch", 0) or 0)
        self.writer = self._writer_cls(str(log_dir), purge_step=start if start > 0 else None)
        text = json.dumps(_config(trainer), indent=2, default=str)
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), global_step=start)

    def on_epoch_end(self, trainer, record: dict):
        if self.writer is None:
            return
        for name, value in metrics(record).items():
            self.writer.add_scalar(name, value, global_step=record["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def on_exception(self, trainer, exc):
        self.on_fit_end(trainer)  # what was logged stays; the writer's thread ends


_INVALID = re.compile(r"[^\w.\- /]")  # MLflow names: alphanumerics, _ - . space / (':' not on Windows)
_RUN_FILE = "mlflow_run.json"


def _mlflow_name(name: str) -> str:
    """``name`` with each character MLflow rejects (``@``, ``:``, ...) replaced by ``_``, and no path
    segment that is empty, ``.`` or ``..`` (MLflow rejects names that normalise to another path)."""
    parts = [_INVALID.sub("_", part) for part in str(name).split("/")]
    return "/".join("_" if part in ("", ".", "..") else part for part in parts)[:250]


def _default_uri(run_dir) -> str:
    """The run folder's own MLflow store: ``sqlite:///<absolute run_dir>/mlflow.db``."""
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


@contextlib.contextmanager
def _quiet_store():
    """Creating a SQLite store runs MLflow's migrations: silence their INFO lines and SQLAlchemy's
    ``noload`` deprecation warning that MLflow's models raise (neither is the user's business)."""
    log = logging.getLogger("mlflow.store.db.utils")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*``noload`` loader strategy is deprecated")
            yield
    finally:
        log.setLevel(level)


class MLflowLogger(_Logger):
    """Logs to an MLflow tracking store through ``mlflow.tracking.MlflowClient`` (not the global
    fluent API, so two runs in one process do not interfere).

    The default store is SQLite, ``sqlite:///<run_dir>/mlflow.db`` (view it with
    ``mlflow ui --backend-store-uri sqlite:///<run_dir>/mlflow.db``): MLflow 3's file store
    (``./mlruns``) is in maintenance mode and refuses to open unless ``MLFLOW_ALLOW_FILE_STORE=true``
    is set; a ``file:`` URI still works as ``tracking_uri`` with that variable set.

    - fit start: gets or creates ``experiment``, creates a run named after the run folder (or
      ``run_name``), and logs as params the train settings (``train.lr``), the model (``model.name``,
      ``model.width``) and the data settings, each stringified and cut to MLflow's 6000 characters;
    - epoch end: every number of the record as a metric at step = epoch (:func:`metrics`, with
      characters MLflow rejects, such as the ``@`` of ``test/darcy@128/l2``, replaced by ``_``);
    - fit end: marks the run FINISHED (a run that crashed stays RUNNING).

    The run id is kept in ``<run_dir>/mlflow_run.json``; a resumed fit (``trainer.start_epoch > 0``)
    with the same tracking URI continues that run and logs only params the run does not have yet
    (MLflow params cannot change). MLflow cannot delete single metric points, so the epochs
    ``>= start_epoch`` that the crashed attempt logged stay in the history beside their re-runs:
    for each step the latest point (by timestamp) is the authoritative one, and it is what MLflow
    shows as the run's current value.
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "oplab", run_name: str | None = None):
        try:
            import mlflow  # noqa: F401
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow", "mlflow-skinny") from None
        self._client_cls, self._Metric, self._Param = MlflowClient, Metric, Param
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.client = self.run_id = None

    def on_fit_start(self, trainer):
        if not trainer.main:
            return
        run_dir = Path(trainer.run_dir) if getattr(trainer, "run_dir", None) is not None else None
        uri = self.tracking_uri or _default_uri(_run_dir(trainer, "mlflow"))
        own = run_dir is not None and uri == _default_uri(run_dir)  # the run folder's own store
        if own:
            run_dir.mkdir(parents=True, exist_ok=True)
        with _quiet_store():
            self.client = client = self._client_cls(uri)
        run = self._resumed(trainer, run_dir, uri)
        if run is None:
            exp = client.get_experiment_by_name(self.experiment)
            if exp is not None:
                exp_id = exp.experiment_id
            else:  # the run folder's own store keeps its (unused) artifact root there, not in the cwd
                where = (run_dir.resolve() / "mlartifacts").as_uri() if own else None
                exp_id = client.create_experiment(self.experiment, artifact_location=where)
            name = self.run_name or (run_dir.resolve().name if run_dir is not None else None)
            run = client.create_run(exp_id, run_name=name)
            if run_dir is not None:
                (run_dir / _RUN_FILE).write_text(json.dumps({"tracking_uri": uri, "run_id": run.info.run_id}) + "\n")
        self.run_id = run.info.run_id
        params = {}
        for key, value in _flatten(_config(trainer), sep=".").items():
            params.setdefault(_mlflow_name(key), str(value)[:6000])
        new = [self._Param(k, v) for k, v in params.items() if k not in run.data.params]
        for i in range(0, len(new), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(self.run_id, params=new[i:i + 100])

    def _resumed(self, trainer, run_dir, uri):
        """The run to continue, or None: on resume, the one named in the run folder's file, if it is in this store."""
        path = run_dir / _RUN_FILE if run_dir is not None else None
        if not int(getattr(trainer, "start_epoch", 0) or 0) or path is None or not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text())
            if saved.get("tracking_uri") != uri:
                return None
            run = self.client.get_run(saved["run_id"])
        except Exception:  # unreadable file, or a run this store no longer has: start a new one
            return None
        self.client.update_run(run.info.run_id, status="RUNNING")
        return run

    def on_epoch_end(self, trainer, record: dict):
        if self.run_id is None:
            return
        stamp, step = int(time.time() * 1000), int(record["epoch"])
        points = [self._Metric(_mlflow_name(k), v, stamp, step) for k, v in metrics(record).items()]
        for i in range(0, len(points), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=points[i:i + 1000])

    def on_fit_end(self, trainer):
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status="FINISHED")
            self.run_id = None

    def on_exception(self, trainer, exc):
        if self.run_id is not None:  # a resumed run reopens it (mlflow_run.json)
            self.client.set_terminated(self.run_id, status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            self.run_id = None


_LOGGERS = {"mlflow": MLflowLogger, "tensorboard": TensorBoardLogger}


def check_names(names) -> list[str]:
    """``names`` as a list, or ParameterError naming an unknown logger and the valid ones."""
    names = [names] if isinstance(names, str) else list(names or [])
    for name in names:
        if name not in _LOGGERS:
            raise ParameterError(f"train.loggers: unknown logger {name!r}; valid: {sorted(_LOGGERS)}")
    return names


def make_loggers(names, run_dir=None) -> list:
    """One logger per name (``"tensorboard"``, ``"mlflow"``; repeats count once), writing into ``run_dir``
    (TensorBoard: ``<run_dir>/tensorboard``; MLflow: ``<run_dir>/mlflow.db``); with ``run_dir`` None
    they use the trainer's run folder.

    Raises ParameterError for an unknown name and OplabError, naming the pip extra, for a missing package.
    """
    names = check_names(names)
    loggers = []
    for name in dict.fromkeys(names):
        if name == "tensorboard":
            loggers.append(TensorBoardLogger(Path(run_dir) / "tensorboard" if run_dir is not None else None))
        else:
            loggers.append(MLflowLogger(_default_uri(run_dir) if run_dir is not None else None))
    return loggers
