"""Callbacks: everything the :class:`~oplab.train.trainer.Trainer` does beyond the steps.

A callback overrides any of the hooks below; ``order`` places it among the
others (lower first): evaluation (10) and the time budget (20) complete an
epoch's record, user callbacks (50) see it whole, then come the console log
(80), experiment loggers (85) and the run folder (90: metrics and checkpoints),
so that a stop asked for by a user callback is in the checkpoint it writes (and the stopped
epoch is evaluated, 60).

Example, early stopping on the validation error (also :class:`EarlyStopping`)::

    class StopWhenGoodEnough(Callback):
        def on_epoch_end(self, trainer, record):
            if "val" in record and record["val"]["l2"] < 0.01:
                trainer.stop("validation L2 below 0.01")

    oplab.train(model, ds, epochs=500, callbacks=[StopWhenGoodEnough()])
"""

from __future__ import annotations

import math
import time

import torch

from ..errors import OplabError


class TrainingDiverged(OplabError):
    """The loss became NaN or Inf."""


class Callback:
    order = 50
    #: whether :meth:`on_loss` may use the loss's autograd graph. A callback that reads only the
    #: value sets False; while every ``on_loss`` callback does, a model and loss that write out their
    #: gradient train without autograd (:meth:`oplab.train.tasks.MapTask.direct_stepper`); there each
    #: parameter's ``grad`` is its slot in the optimizer's buffer, rewritten every step (the next batch's
    #: is written before ``on_loss``): clone a gradient you keep
    loss_graph = True

    def on_fit_start(self, trainer) -> None:
        """Before the first epoch (after a resumed run's state is loaded: ``trainer.start_epoch``)."""

    def on_epoch_start(self, trainer, epoch: int) -> None:
        """Before the epoch's batches; the epoch's learning rate is set."""

    def on_loss(self, trainer, batch: int, loss: torch.Tensor) -> None:
        """After a batch's loss, before its backward pass and step."""

    def on_batch_end(self, trainer, batch: int, loss: float) -> None:
        """After a batch's optimizer step."""

    def on_epoch_end(self, trainer, record: dict) -> None:
        """After an epoch; ``record`` (epoch, lr, train_loss, epoch_seconds; errors under ``val`` and
        ``test`` on evaluation epochs) may be read and extended; it goes to ``metrics.jsonl``."""

    def on_fit_end(self, trainer) -> None:
        """After the last epoch (not after an exception)."""

    def on_exception(self, trainer, exc: BaseException) -> None:
        """Training stops on ``exc`` (an error, a divergence, Ctrl-C): release what ``on_fit_start``
        took; the exception then propagates."""


class Evaluate(Callback):
    """Validation and test errors every ``eval_every`` epochs, at the last epoch, at a stop and
    when another callback asks (:meth:`Trainer.request_evaluation`)."""

    order = 10

    def on_epoch_end(self, trainer, record):
        if trainer.evaluation_due(record["epoch"]):
            trainer.evaluate_into(record)


class EvaluateLast(Callback):
    """The last epoch is always evaluated, also when a callback before this one stopped the run
    or a time budget made this epoch the last."""

    order = 60

    def on_epoch_end(self, trainer, record):
        last = trainer.should_stop or record["epoch"] + 1 >= trainer.epochs
        if last and "eval_seconds" not in record:
            trainer.evaluate_into(record)


class TimeBudget(Callback):
    """Fit the run into ``train.budget_minutes`` of wall-clock time: the epoch count is planned after
    epoch 0 (always evaluated, to time it) and again after epoch 2 (epoch 0 carries warm-up costs)
    from the measured times, at most ``epochs``; the step schedule's period shrinks with it."""

    order = 20

    def on_fit_start(self, trainer):
        self.clock = time.perf_counter()
        self.cap, self.step0 = trainer.cfg.epochs, trainer.cfg.step_size

    def on_epoch_start(self, trainer, epoch):
        if epoch == 0:
            trainer.request_evaluation()

    def on_epoch_end(self, trainer, record):
        epoch = record["epoch"]
        if not (epoch == 0 or epoch == 2 < trainer.epochs - 1):
            return
        seen = trainer.history[1:] + [record] if epoch else [record]
        per_epoch = min(r["epoch_seconds"] for r in seen)
        eval_s = (trainer.history[0] if epoch else record).get("eval_seconds", 0.0)
        left = max(trainer.cfg.budget_minutes * 60.0 - (time.perf_counter() - self.clock), 0.0)
        fit_in = epoch + 1 + int(left / max(per_epoch + eval_s / trainer.cfg.eval_every, 1e-9))
        trainer.epochs = trainer.dist.from_main(max(epoch + 1, 1, min(self.cap, fit_in)))
        trainer.step_size = max(1, round(self.step0 * trainer.epochs / self.cap))
        record["budget_epochs"] = trainer.epochs
        trainer.log(f"time budget {trainer.cfg.budget_minutes:g} min: {trainer.epochs} epochs")


class NaNGuard(Callback):
    """Stop with one clear message when the loss is NaN or Inf (before the step applies it)."""

    order = 0
    loss_graph = False

    def on_loss(self, trainer, batch, loss):
        if not math.isfinite(trainer.loss_value):  # (the Trainer's one read of the loss; a float test)
            run = trainer.run
            where = (f"{run.path}/checkpoints/last" if run is not None and run.has_checkpoint("last")
                     else "none yet")
            raise TrainingDiverged(
                f"loss is {trainer.loss_value} at epoch {trainer.epoch}, batch {batch}; stopped. Last good checkpoint: "
                f"{where} (lower train.lr or set train.grad_clip)")


class EarlyStopping(Callback):
    """Stop when the validation error has not improved by ``min_delta`` in ``patience``
    evaluations in a row (needs a validation split, ``data.n_val > 0``). A resumed run counts
    from the epochs it had done (``trainer.history``), so it stops where it would have."""

    def __init__(self, patience: int = 5, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta

    def on_fit_start(self, trainer):
        if trainer.val_data is None:
            raise OplabError("EarlyStopping needs a validation split (data.n_val > 0)")
        self.best, self.waited = float("inf"), 0
        for record in trainer.history:
            self._count(trainer, record)

    def on_epoch_end(self, trainer, record):
        self._count(trainer, record)
        if self.waited >= self.patience:
            trainer.stop(f"early stopping: no validation improvement in {self.patience} evaluations")

    def _count(self, trainer, record) -> None:
        if "val" not in record:
            return
        value = record["val"][trainer.monitor]
        if value < self.best - self.min_delta:
            self.best, self.waited = value, 0
        else:
            self.waited += 1


class ConsoleLog(Callback):
    """One line per evaluated or re-planned epoch, and about 200 lines in all for long runs
    (a DeepONet runs 10^4 one-batch epochs; ``metrics.jsonl`` has every epoch)."""

    order = 80

    def on_fit_start(self, trainer):
        if trainer.val_data is None and trainer.start_epoch == 0:
            trainer.log("no validation split (data.n_val = 0): no 'best' checkpoint is chosen; "
                        "oplab.load uses 'last'")

    def on_epoch_end(self, trainer, record):
        if ("eval_seconds" in record or "budget_epochs" in record
                or (record["epoch"] + 1) % max(1, trainer.epochs // 200) == 0):
            trainer.log(line(record))

    def on_fit_end(self, trainer):
        if trainer.stop_reason:
            trainer.log(f"stopped at epoch {trainer.epoch - 1}: {trainer.stop_reason}")


def line(record: dict) -> str:
    text = (f"epoch {record['epoch']:4d}  lr {record['lr']:.2e}  train {record['train_loss']:.4f}  "
            f"{record['epoch_seconds']:.2f}s")
    for key, value in record.get("val", {}).items():
        text += f"  val {key} {value:.4f}" + ("*" if record.get("best") and key != "h1" else "")
    for label, m in record.get("test", {}).items():
        text += f"  test@{label} l2 {m['l2']:.4f} h1 {m['h1']:.4f}"
    return text


class Progress(Callback):
    """Feeds ``progress(done, total, text)`` after every batch: batches done and planned (the
    plan changes under a time budget), and the latest errors."""

    order = 70

    def __init__(self, progress):
        self.progress, self.text, self.batches = progress, "", 1

    def on_fit_start(self, trainer):
        self.batches = -(-len(trainer.task) // trainer.cfg.batch_size)

    def on_batch_end(self, trainer, batch, loss):
        self.progress(trainer.epoch * self.batches + batch + 1, trainer.epochs * self.batches, self.text)

    def on_epoch_end(self, trainer, record):
        self.text = f"epoch {record['epoch']}  train {record['train_loss']:.4f}" + "".join(
            f"  val {m:.4f}" for m in [record.get("val", {}).get(trainer.monitor)] if m is not None) + "".join(
            f"  test@{k} {m['l2']:.4f}" for k, m in record.get("test", {}).items())


class Checkpointing(Callback):
    """The run folder: every epoch's record to ``metrics.jsonl``; ``best`` when the validation
    error improves; ``last`` (resumable: weights, optimizer, random state, the plan) at least
    every ``checkpoint_seconds``, at every evaluation, at a stop and at the end.

    Records are written at least every :attr:`flush_seconds` and with every checkpoint (and when
    training stops on an error), not one file append per epoch: a DeepONet's epochs are single
    millisecond steps. A resumed run keeps only the records up to its checkpoint anyway."""

    order = 90
    flush_seconds = 1.0

    def on_fit_start(self, trainer):
        self.saved = self.flushed = time.perf_counter()
        self.pending: list[dict] = []
        self.checkpointed = (trainer.start_epoch - 1, trainer.stop_reason)  # what ``last`` holds: epoch, stop

    def _flush(self, trainer) -> None:
        if self.pending:
            trainer.run.append_metrics(*self.pending)
            self.pending = []
        self.flushed = time.perf_counter()

    def on_exception(self, trainer, exc):
        self._flush(trainer)  # the finished epochs' records

    def on_fit_end(self, trainer):
        self._flush(trainer)  # (a callback after this one may have stopped the run)
        if trainer.history and (trainer.history[-1]["epoch"], trainer.stop_reason) != self.checkpointed:
            self._save_last(trainer, trainer.history[-1]["epoch"])  # (... after its epoch's save, or before it)

    def on_epoch_end(self, trainer, record):
        run, epoch = trainer.run, record["epoch"]
        self.pending.append(record)
        now = time.perf_counter()
        due = ("eval_seconds" in record or trainer.should_stop or epoch + 1 >= trainer.epochs
               or now - self.saved >= trainer.cfg.checkpoint_seconds)
        if due or record.get("best") or now - self.flushed >= self.flush_seconds:
            self._flush(trainer)
        if not (due or record.get("best")):
            return
        weights = self._finite_weights(trainer, epoch)
        if record.get("best"):
            run.save_checkpoint("best", weights)
        if due:
            self._save_last(trainer, epoch, weights)

    @staticmethod
    def _finite_weights(trainer, epoch: int) -> dict:
        weights = trainer.bundle.state_dict()
        bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:  # a checkpoint is only ever written with finite weights
            run = trainer.run
            last = f"{run.path}/checkpoints/last" if run.has_checkpoint("last") else "none yet"
            raise TrainingDiverged(f"weights became NaN or Inf in epoch {epoch} ({bad[0]}, {len(bad)} tensors); "
                                   f"stopped. Last good checkpoint: {last} (lower train.lr or set train.grad_clip)")
        return weights

    def _save_last(self, trainer, epoch: int, weights: dict | None = None) -> None:
        """``last`` for the finished ``epoch``: weights, optimizer, random state and the plan."""
        from ..checkpoint import optimizer_to_flat

        weights = self._finite_weights(trainer, epoch) if weights is None else weights
        opt_tensors, opt_struct = optimizer_to_flat(trainer.optimizer)
        trainer.run.save_checkpoint("last", weights,
                                    {**opt_tensors, "rng.torch": torch.get_rng_state()},
                                    {"epoch": epoch, "best": None if trainer.best == float("inf") else trainer.best,
                                     "monitor": trainer.monitor, "optimizer": opt_struct, "epochs": trainer.epochs,
                                     "step_size": trainer.step_size, "stopped": trainer.stop_reason or False})
        self.saved, self.checkpointed = time.perf_counter(), (epoch, trainer.stop_reason)


def default_callbacks(trainer, progress=None) -> list[Callback]:
    """What every run has: evaluation, the NaN guard, the console log; with a budget the time
    budget; on rank 0 the progress bar, the configured loggers and the run folder."""
    out: list[Callback] = [Evaluate(), EvaluateLast(), NaNGuard(), ConsoleLog()]
    if trainer.cfg.budget_minutes > 0:
        out.append(TimeBudget())
    if trainer.main:
        if progress is not None:
            out.append(Progress(progress))
        if trainer.cfg.loggers:
            from .loggers import make_loggers

            out.extend(make_loggers(trainer.cfg.loggers, trainer.run_dir))
        if trainer.run is not None:
            out.append(Checkpointing())
    return out
