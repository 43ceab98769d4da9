"""Experiment loggers (oplab.train.loggers): drive each with a fake trainer, then read the scalars back."""

import sys
import types
from dataclasses import dataclass

import pytest

from oplab.errors import OplabError, ParameterError
from oplab.train.loggers import make_loggers, metrics


@dataclass
class _Cfg:
    epochs: int = 5
    lr: float = 1e-3
    scheduler: str = "cosine"
    grad_clip: float = 0.0
    amp: bool = False
    device: str | None = None


def _trainer(run_dir, start_epoch=0):
    info = {"model": {"name": "fno", "modes": [12, 12], "width": 32}, "data": {"train": "darcy.h5", "resolution": 33}}
    return types.SimpleNamespace(run_dir=run_dir, main=True, cfg=_Cfg(), info=info, start_epoch=start_epoch)


def _record(epoch, shift=0.0):
    """Epochs 1 and 3 are evaluation epochs; ``shift`` tells a re-run epoch from the crashed one."""
    rec = {"epoch": epoch, "lr": 1e-3 / (epoch + 1), "train_loss": 0.5 / (epoch + 1) + shift, "epoch_seconds": 1.25}
    if epoch % 2 == 1:
        rec["val"] = {"l2": 0.1 / epoch + shift, "h1": 0.2 / epoch}
        rec["test"] = {"33": {"l2": 0.11 / epoch + shift, "h1": 0.21 / epoch}, "darcy_128_test@128": {"l2": 0.3}}
        rec["eval_seconds"] = 0.2
    return rec


def _fit(logger, trainer, epochs, shift=0.0, finish=True):
    logger.on_fit_start(trainer)
    for epoch in epochs:
        logger.on_epoch_start(trainer, epoch)
        logger.on_batch_end(trainer, 0, 0.5)
        logger.on_epoch_end(trainer, _record(epoch, shift))
    if finish:
        logger.on_fit_end(trainer)


def test_metrics_names():
    assert metrics(_record(1) | {"note": "x", "flag": True, "budget_epochs": 40}) == pytest.approx({
        "train/lr": 5e-4, "train/loss": 0.25, "train/epoch_seconds": 1.25, "val/l2": 0.1, "val/h1": 0.2,
        "test/33/l2": 0.11, "test/33/h1": 0.21, "test/darcy_128_test@128/l2": 0.3, "train/eval_seconds": 0.2,
        "train/budget_epochs": 40})


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc, lambda tag: [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_writes_and_resumes(tmp_path):
    pytest.importorskip("tensorboard")
    from oplab.train.loggers import TensorBoardLogger

    _fit(TensorBoardLogger(), _trainer(tmp_path), range(4), finish=False)  # crashes after epoch 3
    acc, scalars = _scalars(tmp_path / "tensorboard")
    assert scalars("train/loss") == [(e, pytest.approx(_record(e)["train_loss"], rel=1e-6)) for e in range(4)]
    assert scalars("val/l2") == [(e, pytest.approx(0.1 / e, rel=1e-6)) for e in (1, 3)]
    assert scalars("test/33/l2") == [(e, pytest.approx(0.11 / e, rel=1e-6)) for e in (1, 3)]
    assert "test/darcy_128_test@128/l2" in acc.Tags()["scalars"]
    assert acc.Tags()["tensors"] == ["config/text_summary"]  # add_text: the configuration once

    _fit(TensorBoardLogger(tmp_path / "tensorboard"), _trainer(tmp_path, start_epoch=2), range(2, 5), shift=1.0)
    _, scalars = _scalars(tmp_path / "tensorboard")
    loss = scalars("train/loss")
    assert [s for s, _ in loss] == [0, 1, 2, 3, 4]  # the crashed attempt's epochs 2, 3 are purged
    assert loss == [(e, pytest.approx(_record(e, 1.0 if e >= 2 else 0.0)["train_loss"], rel=1e-6)) for e in range(5)]
    assert scalars("val/l2") == [(1, pytest.approx(0.1, rel=1e-6)), (3, pytest.approx(0.1 / 3 + 1.0, rel=1e-6))]


def _latest(history):
    """The authoritative value per step: the latest point (MLflow keeps re-logged steps)."""
    out = {}
    for m in sorted(history, key=lambda m: m.timestamp):
        out[m.step] = m.value
    return out


def test_mlflow_writes_and_resumes(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from oplab.train.loggers import MLflowLogger

    run_dir = tmp_path / "darcy_fno"
    first = MLflowLogger()
    _fit(first, _trainer(run_dir), range(4), finish=False)  # crashes after epoch 3
    run_id = first.run_id
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "darcy_fno" and run.info.status == "RUNNING"
    assert run.data.params["train.lr"] == "0.001" and run.data.params["train.device"] == "None"
    assert run.data.params["model.name"] == "fno" and run.data.params["model.modes"] == "[12, 12]"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val/l2")] == \
        [(e, pytest.approx(0.1 / e)) for e in (1, 3)]
    assert [m.step for m in client.get_metric_history(run_id, "test/33/l2")] == [1, 3]
    assert [m.value for m in client.get_metric_history(run_id, "test/darcy_128_test_128/l2")] == [0.3, 0.3]

    resumed = MLflowLogger()
    _fit(resumed, _trainer(run_dir, start_epoch=2), range(2, 5), shift=1.0)
    assert resumed.run_id is None  # terminated
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1  # the same run continued
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == [0, 1, 2, 2, 3, 3, 4]  # MLflow keeps the crashed attempt's points
    loss = _latest(history)
    assert loss == {e: pytest.approx(_record(e, 1.0 if e >= 2 else 0.0)["train_loss"]) for e in range(5)}
    assert _latest(client.get_metric_history(run_id, "val/l2")) == {1: pytest.approx(0.1), 3: pytest.approx(0.1 / 3 + 1)}
    assert client.get_run(run_id).data.metrics["val/l2"] == pytest.approx(0.1 / 3 + 1)

    fresh = MLflowLogger()  # a new fit (start_epoch 0) in the same folder is a new run
    _fit(fresh, _trainer(run_dir), range(1))
    assert len(client.search_runs([run.info.experiment_id])) == 2


def test_non_main_process_logs_nothing(tmp_path):
    pytest.importorskip("tensorboard")
    trainer = _trainer(tmp_path)
    trainer.main = False
    for logger in make_loggers(["tensorboard"], tmp_path):
        _fit(logger, trainer, range(2))
    assert list(tmp_path.iterdir()) == []


def test_make_loggers_errors(tmp_path, monkeypatch):
    assert make_loggers([], tmp_path) == []
    with pytest.raises(ParameterError, match=r"^train.loggers: unknown logger 'x'; valid: \['mlflow', 'tensorboard'\]$"):
        make_loggers(["tensorboard", "x"], tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(OplabError, match=r'pip install "oplab\[mlflow\]"$') as err:
        make_loggers(["mlflow"], tmp_path)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(OplabError, match=r'pip install "oplab\[tensorboard\]"$'):
        make_loggers(["tensorboard"], tmp_path)
