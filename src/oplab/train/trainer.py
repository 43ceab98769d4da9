"""The Trainer: the steps of training, and hooks for everything optional.

A :class:`Trainer` owns the model with its normalisers (:class:`~oplab.predictor.Bundle`),
the optimizer, the device and the epoch loop. Everything else is a callback
(:mod:`oplab.train.callbacks`): evaluation, the time budget, the NaN guard,
the console log, the progress bar, experiment loggers, the run folder's metrics
and checkpoints, early stopping, and any callback a user passes::

    from oplab.train import EarlyStopping, Trainer
    trainer = Trainer(model, data.train, cfg, val=data.val, tests=data.tests,
                      callbacks=[EarlyStopping(patience=3)])
    result = trainer.fit()

Determinism and resume: the model is initialised from ``seed`` by the caller;
the batch order of epoch ``e`` comes from a generator seeded with ``(seed, e)`` (a set that
fits one batch keeps its order);
the learning rate is a pure function of the epoch. So a run resumed from
``checkpoints/last`` after a ``kill -9`` ends with the same weights as an
uninterrupted one, whichever epoch the checkpoint holds.
"""

from __future__ import annotations

import dataclasses
import math
import time
import torch

from .. import losses
from ..errors import OplabError
from ..losses.physics import residual_loss
from ..errors import ParameterError
from ..predictor import Bundle
from ..rundir import RunDir
from . import callbacks as cb
from . import tasks
from .config import TrainConfig
from .data import GridData
from .distributed import Dist, is_main, resolve_device
from .optim import FlatAdam, flat_eligible
from .schedule import learning_rate


class Trainer:
    """Train ``model`` on ``train`` (:class:`~oplab.train.data.GridData`) as ``cfg`` says.

    ``val``: the validation set (chooses ``best``; None: no choice is made);
    ``tests``: test sets by label (reported only); ``run``: the run folder to
    write (None: nothing is written); ``info``: the model and data description
    (the physics loss reads the problem from it); ``callbacks``: extra
    :class:`~oplab.train.callbacks.Callback` objects; ``progress(done, total, text)``:
    called after every batch on rank 0.
    """

    def __init__(self, model, train: GridData, cfg: TrainConfig, *, val: GridData | None = None,
                 tests: dict | None = None, run: RunDir | None = None, info: dict | None = None,
                 callbacks=(), log=print, progress=None):
        self.cfg = cfg
        #: the plan: epochs in all and the step schedule's period (a time budget changes both)
        self.epochs, self.step_size = cfg.epochs, cfg.step_size
        self.dist = Dist(resolve_device(cfg.device))
        self.device, self.main = self.dist.device, self.dist.main
        self.run = run  # written by rank 0 only (the callbacks that write run there)
        self.info = info or {}
        self.train_data, self.val_data, self.tests = train, val, dict(tests or {})
        self.log = log if self.main else (lambda text: None)

        self.task = tasks.make(train, cfg, (self.info.get("data") or {}).get("input_channels"))
        self.bundle = Bundle(model, self.task.in_channels, self.task.out_channels, getattr(self.task, "static", ()),
                             getattr(self.task, "c", 0)).to(self.device)
        if cfg.normalize:  # without solutions (physics only) the output normaliser stays the identity
            self.task.fit_normalizers(self.bundle, outputs=not cfg.physics_only)
        self.physics = _physics_problem(self.info, train) if cfg.physics_weight > 0 else None
        if hasattr(model, "fit_data"):  # data-dependent parts (POD basis)
            if not train.in_memory or cfg.task != "map":
                raise ParameterError(f"model {type(model).__name__} fits a basis to the whole training set: it "
                                     f"needs train.task: map and the data in memory (data.in_memory: true)")
            model.fit_data(self.bundle.in_norm.encode(train.x.to(self.device)),
                           self.bundle.out_norm.encode(train.y.to(self.device)))
        self.params = [p for p in self.bundle.parameters() if p.requires_grad]
        self.optimizer = _optimizer(cfg, self.params, self.device, self.dist.world)
        self.loss_fn = losses.get(cfg.loss)
        #: the validation metric that chooses ``best`` (the physics residual when no solution is read)
        self.monitor = "residual" if cfg.physics_only else "l2"

        self.start_epoch, self.epoch = 0, 0
        self.best = math.inf
        self.history: list[dict] = []
        self.loss_value = math.nan  # the current batch's loss (set every step)
        #: where a direct step writes each parameter's gradient (FlatAdam's buffer), during a fit
        self.grad_slots: dict | None = None
        self.should_stop, self.stop_reason = False, ""
        self._eval_requested = False
        self.callbacks = cb.default_callbacks(self, progress) + list(callbacks)
        self.callbacks.sort(key=lambda c: c.order)  # stable: equal orders keep their places
        self._hooks = {name: [getattr(c, name) for c in self.callbacks if _overrides(c, name)]
                       for name in ("on_fit_start", "on_epoch_start", "on_loss", "on_batch_end",
                                    "on_epoch_end", "on_fit_end", "on_exception")}

    # ----------------------------------------------------------------- for callbacks
    @property
    def run_dir(self):
        return self.run.path if self.run is not None else None

    def stop(self, reason: str) -> None:
        """End training after this epoch (its checkpoint is written and marked final)."""
        self.should_stop, self.stop_reason = True, reason

    def request_evaluation(self) -> None:
        """Evaluate at the end of the current epoch even if it is not an evaluation epoch."""
        self._eval_requested = True

    def evaluation_due(self, epoch: int) -> bool:
        return self._eval_requested or (epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 >= self.epochs

    def evaluate_into(self, record: dict) -> None:
        """Add the validation (``val``) and test errors to ``record``; a better validation error
        than any before marks it ``best``."""
        tic = time.perf_counter()
        if self.val_data is not None:
            record["val"] = (self._val_residual() if self.monitor == "residual"
                             else self.task.evaluate(self.bundle, self.val_data, self.device))
            if record["val"][self.monitor] < self.best:
                self.best = record["val"][self.monitor]
                record["best"] = True
        if self.tests:
            record["test"] = {label: self.task.evaluate(self.bundle, data, self.device)
                              for label, data in self.tests.items()}
        record["eval_seconds"] = time.perf_counter() - tic

    def _val_residual(self, batch_size: int = 50) -> dict:
        """Mean physics loss on the validation inputs (physics-only runs read no solution)."""
        data, total = self.val_data, 0.0
        coords = tuple(c.to(self.device) for c in data.out_coords)
        self.bundle.eval()
        with torch.no_grad():
            for xb, _ in data.chunks(batch_size):
                xb = xb.to(self.device)
                loss = residual_loss(self.physics, self.bundle(xb, coords), xb, self.cfg.bc_weight, self.cfg.physics_norm)
                total += loss.item() * len(xb)
        self.bundle.train()
        return {"residual": total / len(data)}

    # ----------------------------------------------------------------- training
    def restore(self) -> bool:
        """Load the run folder's ``last`` checkpoint; False if the run had already finished. A run
        stopped before its first checkpoint starts again from epoch 0 (its split is recorded)."""
        if self.run is None:
            raise OplabError("resume needs a run folder")
        folder = self.run
        if not folder.has_checkpoint("last"):
            self.history = folder.metrics(0, truncate=self.main)
            self.log(f"{folder.path}: stopped before its first checkpoint; starting it again from epoch 0")
            return True
        folder.load_into(self.bundle, "last")
        tensors, state = folder.load_state()
        from ..checkpoint import optimizer_from_flat

        self.optimizer.load_state_dict(optimizer_from_flat(tensors, state["optimizer"]))
        torch.set_rng_state(tensors["rng.torch"])
        self.start_epoch = state["epoch"] + 1
        self.best = math.inf if state.get("best") is None else state["best"]
        if self.cfg.budget_minutes > 0:  # keep the epoch count (and step size) the budget chose
            self.epochs, self.step_size = state.get("epochs", self.epochs), state.get("step_size", self.step_size)
        self.history = folder.metrics(self.start_epoch, truncate=self.main)
        if state.get("stopped"):
            self.log(f"{folder.path}: already complete: it stopped at epoch {state['epoch']} ({state['stopped']})")
            return False
        if self.start_epoch >= self.epochs:
            self.log(f"{folder.path}: already complete: {self.start_epoch} of {self.epochs} epochs "
                     f"(oplab train --resume {folder.path} --epochs N continues it to N)")
            return False
        self.log(f"resuming {folder.path} at epoch {self.start_epoch} of {self.epochs}")
        return True

    def fit(self, resume: bool = False) -> dict:
        """Train (from the run folder's last checkpoint if ``resume``); returns the history, the
        best validation error (``inf`` without validation) and the trained bundle."""
        try:
            if resume and not self.restore():
                return self._result()
            try:
                return self._fit()
            except BaseException as exc:
                for hook in self._hooks["on_exception"]:
                    try:
                        hook(self, exc)
                    except Exception:  # noqa: BLE001  the training error is the one to report
                        pass
                raise
        finally:
            self.grad_slots = None
            if isinstance(self.optimizer, FlatAdam):
                self.optimizer.release()  # the weights get their own storage again

    def _fit(self) -> dict:
        for hook in self._hooks["on_fit_start"]:
            hook(self)
        net = self.dist.wrap(self.bundle)
        if self.cfg.compile and self.device.type == "cuda":
            net = torch.compile(net)
        cfg = self.cfg
        coords = self.task.coords(self.train_data, self.device)
        n = len(self.task)
        whole = range(n) if n <= cfg.batch_size and self.dist.world == 1 else None  # (batches of views)
        # gradients written out by the model and loss where they can be (task.direct_stepper, which also
        # steps aside for hooks, every step): not under DDP (its hooks reduce autograd's gradients), a
        # compiled net, autocast, a Trainer or loss replaced, or a callback whose on_loss may use the graph
        direct = (net is self.bundle and not (cfg.amp and self.device.type == "cuda")
                  and type(self).forward is Trainer.forward and self.loss_fn is losses.get(cfg.loss)
                  and not any(getattr(getattr(hook, "__self__", None), "loss_graph", True)
                              for hook in self._hooks["on_loss"]))
        self.grad_slots = self.optimizer.grad_views() if direct and isinstance(self.optimizer, FlatAdam) else None
        stepper = self.task.direct_stepper(self, coords) if direct else None
        self.epoch = self.start_epoch
        while self.epoch < self.epochs and not self.should_stop:
            epoch = self.epoch
            lr = learning_rate(cfg, epoch, self.epochs, self.step_size)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            for hook in self._hooks["on_epoch_start"]:
                hook(self, epoch)
            if whole is not None:  # one batch holds the set: its order would only reorder the loss's sum
                order = whole
            else:
                order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
            plan = [order[s : s + cfg.batch_size][self.dist.rank :: self.dist.world] for s in range(0, n, cfg.batch_size)]
            tic = time.perf_counter()
            total, seen = 0.0, 0
            for k, batch in enumerate(self.task.batches(plan)):
                step = stepper(batch) if stepper is not None else None
                if step is None:
                    loss, size = self.task.loss(self, net, batch, coords)
                else:
                    loss, size, grads = step
                #: the current batch's loss as a float (read once: one host synchronisation per step on a GPU)
                self.loss_value = value = loss.item()
                for hook in self._hooks["on_loss"]:
                    hook(self, k, loss)
                self.optimizer.zero_grad(set_to_none=True)
                if step is None:
                    loss.backward()
                else:
                    for p, grad in grads:
                        p.grad = grad
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                if cfg.grad_noise > 0:  # the step's index over the run: a pure function of (epoch, k)
                    add_gradient_noise(self.params, cfg.grad_noise, cfg.grad_noise_gamma, cfg.seed,
                                       epoch * len(plan) + k)
                self.optimizer.step()
                total += value * size
                seen += size
                for hook in self._hooks["on_batch_end"]:
                    hook(self, k, value)
            record = {"epoch": epoch, "lr": lr, "train_loss": total / max(seen, 1),
                      "epoch_seconds": time.perf_counter() - tic}
            for hook in self._hooks["on_epoch_end"]:
                hook(self, record)
            self.should_stop = bool(self.dist.from_main(int(self.should_stop)))  # every rank stops together
            self._eval_requested = False
            self.history.append(record)
            self.epoch += 1
        for hook in self._hooks["on_fit_end"]:
            hook(self)
        self.dist.barrier()
        return self._result()

    def forward(self, net, x, coords):
        """``net(x, coords)``, under bf16 autocast when ``train.amp`` is on (CUDA)."""
        if self.cfg.amp and self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return net(x, coords)
        return net(x, coords)

    def _result(self) -> dict:
        return {"history": self.history, "best_val": self.best, "bundle": self.bundle,
                "stopped": self.stop_reason or None}


def fit(model, train: GridData, tests: dict, cfg: TrainConfig, out=None, info: dict | None = None,
        resume: bool = False, log=print, progress=None, val: GridData | None = None, callbacks=()) -> dict:
    """Train with a :class:`Trainer`; ``out``: the run folder, created (or, with ``resume``,
    continued) there. ``info`` is recorded in its ``config.json`` with ``cfg``."""
    tasks.check_model(model, cfg, train)
    run = None
    if out is not None:
        if resume:
            run = RunDir.open(out)
        elif is_main():
            run = RunDir.create(out, {**(info or {}), "train": dataclasses.asdict(cfg)})
    try:
        if run is not None and is_main():
            run.lock()  # before anything is written (a resumed run truncates its metrics)
        try:
            trainer = Trainer(model, train, cfg, val=val, tests=tests, run=run, info=info, callbacks=callbacks,
                              log=log, progress=progress)
        except BaseException:
            if run is not None and not resume and is_main():
                run.discard()  # refused before any training: no run folder is left behind
                run = None
            raise
        return trainer.fit(resume=resume)
    finally:
        if run is not None:
            run.unlock()


def add_gradient_noise(params, eta: float, gamma: float, seed: int, step: int) -> float:
    """Add annealed Gaussian noise to the gradients of ``params`` in place (``train.grad_noise``).

    Neelakantan et al. 2015, "Adding gradient noise improves learning for very deep networks",
    arXiv:1511.06807, eq. (1): ``g_t <- g_t + N(0, sigma_t^2)``, ``sigma_t^2 = eta / (1 + t)^gamma``,
    for every real number of every gradient (a complex weight's real and imaginary parts each).
    The noise comes from a CPU generator seeded with ``(seed, step)`` alone, so it is the same
    on every device and in a run resumed at any epoch. Returns ``sigma_t``.
    """
    std = math.sqrt(eta / (1.0 + step) ** gamma)
    generator = torch.Generator().manual_seed((int(seed) * 0x9E3779B1 + int(step) * 0x85EBCA77 + 0x27D4EB2F) % 2**63)
    for p in params:
        if p.grad is None:
            continue
        grad = torch.view_as_real(p.grad) if p.grad.is_complex() else p.grad
        noise = torch.randn(grad.shape, generator=generator, dtype=torch.float32).to(grad.device, grad.dtype)
        grad.add_(noise, alpha=std)
    return std


def _overrides(callback, name: str) -> bool:
    return getattr(type(callback), name) is not getattr(cb.Callback, name)


def _optimizer(cfg: TrainConfig, params, device: torch.device, world: int = 1) -> torch.optim.Optimizer:
    if world == 1 and flat_eligible(params):  # one kernel call on one buffer (oplab.train.optim)
        return FlatAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, decoupled=cfg.optimizer == "adamw")
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    try:  # one fused kernel per step: -26% epoch time for FNO, -17% per DeepONet step (benchmarks/RESULTS.md)
        return opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):  # older torch or a device without the fused kernel
        return opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _physics_problem(info: dict, train: GridData):
    """The data set's problem at the training grid, for its physics residual loss."""
    from .. import problems

    data = info.get("data") or {}
    if "problem" not in data:
        raise OplabError("a physics loss needs the data set's problem (train from an oplab data file)")
    return problems.create(data["problem"], train.y.shape[-1], **data.get("params", {}))
