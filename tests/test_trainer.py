"""The training core's parts as a user meets them: the recorded split and honest model selection,
callbacks from Python (early stopping), the run folder's resume and completion, what ``oplab.load``
imports, and the newcomer's command-line details (``--version``, help labels, channel-less input)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import oplab
from oplab import problems
from oplab.cli import main
from oplab.data.generation import generate
from oplab.errors import OplabError, ParameterError
from oplab.train import Callback, EarlyStopping, Trainer, resume_run
from oplab.train import config as tc
from oplab.train import run
from oplab.train.data import plan, prepare

SMALL_FNO = {"name": "fno", "modes": [6, 6], "width": 12, "n_layers": 2, "lifting_channels": 16,
             "projection_channels": 16}


@pytest.fixture(scope="module")
def darcy(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    path, other = root / "darcy33.h5", root / "darcy33_seed1.h5"
    generate(problems.create("darcy", resolution=33), 48, path, seed=0)
    generate(problems.create("darcy", resolution=33), 8, other, seed=1)
    return path, other


def cfg(data, out, epochs=6, test=None, **train):
    raw = {"data": {"train": str(data), "test": test and str(test), "n_train": 40, "n_test": 8},
           "model": dict(SMALL_FNO), "train": {"epochs": epochs, "batch_size": 8, "lr": 5e-3, "eval_every": 1, **train},
           "out": str(out)}
    return tc.from_dict(raw)


def quiet(text):
    pass


def test_the_split_is_recorded_and_best_is_chosen_on_validation_samples_only(darcy, tmp_path):
    data, other = darcy
    a = run(cfg(data, tmp_path / "a"), log=quiet)
    split = json.loads((tmp_path / "a" / "config.json").read_text())["data"]["split"]
    assert split["train"]["ranges"] == [[0, 36]] and split["val"]["ranges"] == [[36, 40]]  # n_val: a tenth
    assert [t["ranges"] for t in split["tests"]] == [[[40, 48]]]
    # "best" holds the epoch of the lowest validation error, marked in metrics.jsonl
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    best_epoch = min(lines, key=lambda r: r["val"]["l2"])["epoch"]
    assert [r["epoch"] for r in lines if r.get("best")][-1] == best_epoch
    assert a["best_val"] == min(r["val"]["l2"] for r in lines)
    # the test samples choose nothing: the same run tested on other samples keeps the same "best"
    b = run(cfg(data, tmp_path / "b", test=other), log=quiet)
    wa = load_file(str(tmp_path / "a/checkpoints/best/weights.safetensors"))
    wb = load_file(str(tmp_path / "b/checkpoints/best/weights.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa) and a["best_val"] == b["best_val"]
    assert a["history"][-1]["test"] != b["history"][-1]["test"]


def test_evaluate_scores_the_runs_test_samples_and_says_which(darcy, tmp_path, capsys):
    data, other = darcy
    run(cfg(data, tmp_path / "r", epochs=1), log=quiet)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "r"), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "the run's test samples" in out and "samples 40-47 of darcy33.h5" in out
    # the same samples in a copied file are recognised by content
    copy = tmp_path / "copy.h5"
    shutil.copy(data, copy)
    assert main(["evaluate", str(tmp_path / "r"), "--data", str(copy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["33"]["samples"] == 8
    # a file the run never saw is scored whole, and says so
    assert main(["evaluate", str(tmp_path / "r"), "--data", str(other), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)["33"]
    assert scored["samples"] == 8 and scored["scored"] == "all"
    # a run tested on another file: in its training file only the samples it never saw are scored
    run(cfg(data, tmp_path / "sep", epochs=1, test=other), log=quiet)
    assert main(["evaluate", str(tmp_path / "sep"), "--data", str(data), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)["33"]
    assert scored["samples"] == 8 and scored["scored"] == "unseen"  # 40-47: neither trained on nor validated
    whole = cfg(data, tmp_path / "whole", epochs=1, test=other).to_dict()
    whole["data"]["n_train"] = 48
    run(tc.from_dict(whole), log=quiet)
    assert main(["evaluate", str(tmp_path / "whole"), "--data", str(data)]) == 2
    assert "only this run's training and validation samples" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "whole"), "--data", str(data), "--all", "--n", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["33"]["samples"] == 5
    # a longer generation with the same seed holds the same first samples: only the test ones count
    longer = tmp_path / "longer.h5"
    generate(problems.create("darcy", resolution=33), 52, longer, seed=0)
    assert main(["evaluate", str(tmp_path / "r"), "--data", str(longer), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)["33"]
    assert scored["samples"] == 8 and scored["scored"] == "test"
    for bad in (["--n", "0"], ["--n", "-3"], ["--checkpoint", "foo"]):
        assert main(["evaluate", str(tmp_path / "r"), "--data", str(data), *bad]) == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_a_callback_from_python_stops_training_and_the_run_is_then_complete(darcy, tmp_path):
    data, _ = darcy

    class StopAtEpoch2(Callback):
        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 2:
                trainer.stop("enough")

    lines = []
    result = run(cfg(data, tmp_path / "s", epochs=10, eval_every=5), log=lines.append, callbacks=[StopAtEpoch2()])
    assert len(result["history"]) == 3 and result["stopped"] == "enough"
    assert "test" in result["history"][-1]  # a stopped run's last epoch is evaluated
    state = json.loads((tmp_path / "s/checkpoints/last/state.json").read_text())
    assert state["epoch"] == 2 and state["stopped"] == "enough"
    before = (tmp_path / "s/checkpoints/last/weights.safetensors").read_bytes()
    lines.clear()
    again = resume_run(tmp_path / "s", log=lines.append)
    assert "already complete" in lines[-1] and len(again["history"]) == 3
    assert (tmp_path / "s/checkpoints/last/weights.safetensors").read_bytes() == before


def test_early_stopping_and_the_trainer_used_directly(darcy):
    data, _ = darcy
    prepared = prepare(plan(tc.DataConfig(train=str(data), n_train=40, n_test=8)))
    model = oplab.models.create("fno", in_channels=1, out_channels=1, modes=[4, 4], width=8, n_layers=1)
    train_cfg = tc.TrainConfig(epochs=50, batch_size=8, lr=1e-9, eval_every=1, scheduler="none")  # no progress
    trainer = Trainer(model, prepared.train, train_cfg, val=prepared.val, tests=prepared.tests,
                      callbacks=[EarlyStopping(patience=2)], log=quiet)
    result = trainer.fit()
    assert len(result["history"]) < 10 and result["stopped"].startswith("early stopping")
    with pytest.raises(OplabError, match="needs a validation split"):
        Trainer(model, prepared.train, train_cfg, tests=prepared.tests, callbacks=[EarlyStopping()], log=quiet).fit()


def test_no_validation_split_keeps_no_best_and_load_uses_last(darcy, tmp_path):
    data, _ = darcy
    lines = []
    raw = cfg(data, tmp_path / "nv", epochs=2).to_dict()
    raw["data"]["n_val"] = 0
    run(tc.from_dict(raw), log=lines.append)
    assert any("no validation split" in line for line in lines)
    assert not (tmp_path / "nv/checkpoints/best").exists()
    op = oplab.load(tmp_path / "nv")
    assert op.checkpoint == "last"
    raw["data"]["n_val"] = 40
    raw["out"] = str(tmp_path / "nv2")
    with pytest.raises(ParameterError, match="n_val = 40 leaves no training sample"):
        run(tc.from_dict(raw), log=quiet)
    for key, value in (("n_val", -5), ("n_test", -1), ("n_train", -3)):
        with pytest.raises(ParameterError, match=f"{key} must be a non-negative int"):
            tc.from_dict({**raw, "data": {**raw["data"], "n_val": None, key: value}})
    with pytest.raises(ParameterError, match="needs test samples"):
        run(tc.from_dict({**raw, "data": {**raw["data"], "n_val": None, "n_test": 0}}), log=quiet)


def test_load_imports_no_training_code_and_takes_one_channel_arrays(darcy, tmp_path, capsys):
    data, _ = darcy
    run(cfg(data, tmp_path / "r", epochs=1), log=quiet)
    code = ("import sys, oplab; op = oplab.load(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.startswith('oplab.train') or m == 'oplab.eval'))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    op = oplab.load(tmp_path / "r")
    a = oplab.data.open(data).arrays(range(40, 43), outputs=False)[0]  # [3, 1, 33, 33]
    full = op(a)
    np.testing.assert_array_equal(op(a[:, 0]), full[:, 0])  # [B, S, S] -> [B, S, S]
    np.testing.assert_array_equal(op(a[0, 0]), op(a[:1])[0, 0])  # [S, S] -> [S, S]
    np.save(tmp_path / "a.npy", a[:, 0])
    assert main(["predict", str(tmp_path / "r"), "--input", str(tmp_path / "a.npy"), "--out", str(tmp_path / "u")]) == 0
    assert "u.npy" in capsys.readouterr().out and np.load(tmp_path / "u.npy").shape == (3, 33, 33)
    with pytest.raises(OplabError, match=r"expected \[1, x, y\] or \[B, 1, x, y\] \(or \[x, y\] / \[B, x, y\]"):
        op(np.concatenate([a, a], axis=1))  # two channels


def test_a_run_interrupted_before_its_first_checkpoint_resumes_from_the_start(darcy, tmp_path, capsys):
    data, _ = darcy
    straight = run(cfg(data, tmp_path / "straight", epochs=3, eval_every=10), log=quiet)

    def interrupt(line):
        if line.startswith("epoch    0"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # epoch 0 is neither evaluated nor checkpointed
        run(cfg(data, tmp_path / "cut", epochs=3, eval_every=10, checkpoint_seconds=1000), log=lambda s: None,
            callbacks=[type("Stop", (Callback,), {"on_epoch_end": lambda self, t, r: interrupt("epoch    0")})()])
    assert not (tmp_path / "cut/checkpoints/last").exists()
    assert main(["train", "--resume", str(tmp_path / "cut"), "--lr", "1"]) == 2
    assert "takes only --epochs; got --lr" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    assert "starting it again from epoch 0" in capsys.readouterr().out
    a = load_file(str(tmp_path / "straight/checkpoints/last/weights.safetensors"))
    b = load_file(str(tmp_path / "cut/checkpoints/last/weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a) and len(straight["history"]) == 3


def test_version_and_help_labels(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"oplab {oplab.__version__}"
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--physics-only " in text and "<bool>" not in text and "--data FILE" in text and "--n-val N" in text


def test_oplab_train_logs_to_tensorboard_and_mlflow(darcy, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data, _ = darcy
    out = tmp_path / "logged"
    assert main(["train", "--data", str(data), "--model", "fno", "--set", "model.width=8", "--set", "model.n_layers=1",
                 "--epochs", "3", "--n-train", "40", "--n-test", "8", "--set", "train.eval_every=1",
                 "--logger", "tensorboard", "--logger", "mlflow", "--out", str(out)]) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("val/l2")] == \
        [(r["epoch"], pytest.approx(r["val"]["l2"], rel=1e-6)) for r in lines]
    assert [e.value for e in events.Scalars("test/33/l2")] == [pytest.approx(r["test"]["33"]["l2"], rel=1e-6) for r in lines]
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")] == \
        [(r["epoch"], pytest.approx(r["train_loss"])) for r in lines]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert main(["train", "--data", str(data), "--model", "fno", "--logger", "wandb", "--out", str(tmp_path / "x")]) == 2

    # an interrupted run closes its logs: the TensorBoard writer's thread ends, MLflow marks the run KILLED
    class Interrupt(Callback):
        def on_epoch_end(self, trainer, record):
            self.loggers = [c for c in trainer.callbacks if hasattr(c, "writer") or hasattr(c, "run_id")]
            raise KeyboardInterrupt

    stop = Interrupt()
    with pytest.raises(KeyboardInterrupt):
        run(cfg(data, tmp_path / "cut", epochs=3, loggers=["tensorboard", "mlflow"]), log=quiet, callbacks=[stop])
    assert len(stop.loggers) == 2 and all(getattr(c, "writer", None) is None and getattr(c, "run_id", None) is None
                                          for c in stop.loggers)
    cut = MlflowClient(f"sqlite:///{tmp_path / 'cut' / 'mlflow.db'}")
    cut_id = json.loads((tmp_path / "cut" / "mlflow_run.json").read_text())["run_id"]
    assert cut.get_run(cut_id).info.status == "KILLED"


def test_early_stopping_stops_a_resumed_run_where_it_would_have(darcy, tmp_path):
    data, _ = darcy
    settings = dict(epochs=40, lr=1e-9, scheduler="none", checkpoint_seconds=0)  # no progress after epoch 0
    straight = run(cfg(data, tmp_path / "straight", **settings), log=quiet, callbacks=[EarlyStopping(patience=3)])
    stopped_at = len(straight["history"])
    assert stopped_at < 40

    def crash(line):
        if line.startswith("epoch    2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg(data, tmp_path / "cut", **settings), log=crash, callbacks=[EarlyStopping(patience=3)])
    resumed = resume_run(tmp_path / "cut", log=quiet, callbacks=[EarlyStopping(patience=3)])
    assert len(resumed["history"]) == stopped_at and resumed["stopped"] == straight["stopped"]


def test_one_writer_per_run_folder_and_a_dead_writers_lock_is_taken_over(darcy, tmp_path, capsys):
    import os
    import signal
    import time

    from oplab.rundir import RunDir

    data, _ = darcy
    run(cfg(data, tmp_path / "r", epochs=1), log=quiet)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from oplab.rundir import RunDir; "
                               "r = RunDir.open(sys.argv[1]).lock(); print('locked', flush=True); time.sleep(60)",
                               str(tmp_path / "r")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (tmp_path / "r/metrics.jsonl").read_text()
        assert main(["train", "--resume", str(tmp_path / "r"), "--epochs", "3"]) == 2
        assert f"another oplab process (PID {holder.pid}) is writing it now" in capsys.readouterr().err
        assert (tmp_path / "r/metrics.jsonl").read_text() == before  # nothing written by the refused one
        RunDir.create(tmp_path / "r2", {}).unlock()  # another folder is free
        with pytest.raises(OplabError, match=f"PID {holder.pid}"):
            RunDir.open(tmp_path / "r").lock()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    time.sleep(0.1)
    assert main(["train", "--resume", str(tmp_path / "r"), "--epochs", "2"]) == 0  # the dead holder's lock is taken


def test_a_checkpoint_is_never_written_with_non_finite_weights(darcy, tmp_path):
    from oplab.train import TrainingDiverged

    data, _ = darcy

    class Poison(Callback):
        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 2:
                next(trainer.bundle.model.parameters()).data.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match="weights became NaN or Inf in epoch 2.*Last good checkpoint: .*last"):
        run(cfg(data, tmp_path / "p", epochs=5, checkpoint_seconds=0), log=quiet, callbacks=[Poison()])
    state = json.loads((tmp_path / "p/checkpoints/last/state.json").read_text())
    assert state["epoch"] == 1
    for which in ("last", "best"):
        w = load_file(str(tmp_path / f"p/checkpoints/{which}/weights.safetensors"))
        assert all(torch.isfinite(v).all() for v in w.values())


def test_metrics_are_buffered_but_every_finished_epoch_reaches_the_file(darcy, tmp_path):
    """metrics.jsonl is written in batches (issue 22, item 4: no file append per one-step epoch), yet
    a finished run has one line per epoch and a run stopped by an error keeps its finished epochs."""
    data, _ = darcy
    run(cfg(data, tmp_path / "all", epochs=4, eval_every=10, checkpoint_seconds=1000), log=quiet)
    assert [json.loads(x)["epoch"] for x in (tmp_path / "all/metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]

    class Fail(Callback):  # before Checkpointing (order 90) sees epoch 2
        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 2:
                raise RuntimeError("boom")

    class LateStop(Callback):  # after Checkpointing: the last epoch's record is written at the end
        order = 95

        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 1:
                trainer.stop("late")

    run(cfg(data, tmp_path / "late", epochs=4, eval_every=10, checkpoint_seconds=1000), log=quiet,
        callbacks=[LateStop()])
    assert [json.loads(x)["epoch"] for x in (tmp_path / "late/metrics.jsonl").read_text().splitlines()] == [0, 1]
    state = json.loads((tmp_path / "late/checkpoints/last/state.json").read_text())  # and `last` is that epoch's
    assert state["epoch"] == 1 and state["stopped"] == "late"
    # the same when that epoch's `last` was already written (an evaluation every epoch) before the stop
    run(cfg(data, tmp_path / "late1", epochs=4, eval_every=1, checkpoint_seconds=1000), log=quiet,
        callbacks=[LateStop()])
    state = json.loads((tmp_path / "late1/checkpoints/last/state.json").read_text())
    assert state["epoch"] == 1 and state["stopped"] == "late"

    with pytest.raises(RuntimeError, match="boom"):
        run(cfg(data, tmp_path / "cut", epochs=4, eval_every=10, checkpoint_seconds=1000), log=quiet,
            callbacks=[Fail()])
    assert [json.loads(x)["epoch"] for x in (tmp_path / "cut/metrics.jsonl").read_text().splitlines()] == [0, 1]
