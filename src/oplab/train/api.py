"""The entry points: a run from its configuration (``oplab train``), a resumed run, and
``oplab.train(model, ds, ...)`` from Python objects. Each plans the split
(:func:`oplab.train.data.plan`), reads it, and trains with a :class:`~oplab.train.trainer.Trainer`
that writes the run folder (:class:`~oplab.rundir.RunDir`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..rundir import RunDir
from .config import DataConfig, RunConfig, TrainConfig
from .data import Prepared, plan, prepare, recorded_split
from ..errors import ParameterError
from .distributed import is_main
from .trainer import fit


def run(cfg: RunConfig, resume: bool = False, log=print, progress=None, callbacks=()) -> dict:
    """Train as ``cfg`` says (``resume``: continue ``cfg.out`` from its last checkpoint, on the
    split it recorded); returns the history, best validation error and trained bundle."""
    from .. import models
    from ..models.presets import derive

    out = Path(cfg.out) if cfg.out else None
    if out is not None and not resume and is_main():  # rank 0 creates the folder; the others never write
        RunDir.check_fresh(out)
    split = recorded_split(RunDir.open(out)) if resume else plan(cfg.data)
    data = prepare(split, outputs=not cfg.train.physics_only, in_memory=cfg.data.in_memory, workers=cfg.data.workers)
    train = data.train
    x_shape, y_shape = task_shapes(cfg.train, data)
    periodic = tuple(train.periodic) + ((False,) if cfg.train.task == "spacetime" else ())  # time last
    from . import tasks

    model_y = tasks.predicted(cfg.train, y_shape, len(train.static))
    model_cfg = derive(cfg.model, (len(train), *x_shape), (len(train), *model_y), train.out_coords, periodic)
    torch.manual_seed(cfg.train.seed)
    model = models.from_config(model_cfg)
    info = {"model": model_cfg, "data": {**dataclasses.asdict(cfg.data), **data.info(),
                                         "train_input_shape": list(x_shape), "train_output_shape": list(y_shape)}}
    streamed = "" if train.in_memory else " (streamed from the file)"
    log(f"model {model_cfg['name']}: {model.n_params():,} parameters; {len(train)} training samples at "
        f"{list(train.x_shape[1:])}{streamed}, {len(data.val) if data.val else 0} validation, test at {list(data.tests)}")
    return _train(model, data, cfg.train, out, info, resume, log, progress, callbacks)


def _train(model, data: Prepared, cfg: TrainConfig, out: Path | None, info: dict, resume: bool, log, progress,
           callbacks) -> dict:
    if cfg.points and not hasattr(model, "forward_points"):
        raise ParameterError(f"train.points: model {type(model).__name__} answers on whole grids only; random "
                             f"query points need a point operator with forward_points (deeponet, multionet, seq_deeponet)")
    if getattr(model, "reg", "none") != "none" and cfg.task != "map":
        raise ParameterError(f"model.reg={model.reg!r}: the neural ODE's penalty is added to the one-shot map's loss "
                             f"(train.task: map); with train.task: {cfg.task} it would be dropped")
    import contextlib

    from .distributed import resolve_device
    from .threads import using

    cpu = resolve_device(cfg.device).type == "cpu"
    with using(cfg.threads, log) if cpu else contextlib.nullcontext() as threads:
        if cpu and not cfg.threads:  # the count chosen is recorded: a resumed run replays its epochs with it
            threads = _small_model_threads(model, data.train, cfg, threads, log)
            cfg = dataclasses.replace(cfg, threads=threads)
        result = fit(model, data.train, data.tests, cfg, out, info, resume=resume, log=log, progress=progress,
                     val=data.val, callbacks=callbacks)
    if out is not None and result["history"] and is_main():
        from .plots import write_plots, write_rollout_plots

        first = data.tests[next(iter(data.tests))] if data.tests else data.val
        if cfg.task == "autoregressive":
            write_rollout_plots(out, result["bundle"], first, cfg)
        if cfg.task != "map":  # the figure of inputs, truth and prediction is a one-shot map's
            first = None
        write_plots(out, result["bundle"], first and first.head(cfg.plot_samples), result["history"], info,
                    cfg.plot_samples)
    return result


#: models below this many parameters have their thread count timed (one thread against the free cores)
SMALL_MODEL = 1_000_000


def _small_model_threads(model, train, cfg: TrainConfig, threads: int, log) -> int:
    """For a small model on several free cores, the faster of one thread and ``threads`` for its
    training step, timed on a throwaway copy (:func:`oplab.train.threads.fastest`); else ``threads``.
    Not when ``OMP_NUM_THREADS`` or ``--threads`` says how many."""
    import os

    from .threads import fastest, probe_step

    if threads <= 1 or os.environ.get("OMP_NUM_THREADS") or model.n_params() >= SMALL_MODEL:
        return threads
    try:  # a speed choice: whatever goes wrong in it, the run trains with the free cores
        step = probe_step(model, train, cfg)
        if step is None:
            return threads
        best, medians = fastest(step, [threads, 1])
    except Exception:  # noqa: BLE001  (the real step reports real errors, with the run's context)
        torch.set_num_threads(threads)
        return threads
    if best != threads:
        log(f"threads: a training step of this small model takes {1e3 * medians[1]:.2f} ms on one thread against "
            f"{1e3 * medians[threads]:.2f} ms on {threads}: training on one (--threads N to choose)")
    return best


def task_shapes(cfg: TrainConfig, data: Prepared) -> tuple[tuple, tuple]:
    """The model's input and output shapes ``[C, *S]`` for ``cfg.task`` (:func:`oplab.train.tasks.shapes`),
    after checking that every part is a trajectory set long enough for the window and the rollout."""
    train = data.train
    if cfg.task == "map":
        return tuple(train.x_shape), tuple(train.y_shape)
    from . import tasks
    from .data import check_trajectories

    parts = [("training", data.split.train, train)] + ([("validation", data.split.val, data.val)] if data.val else [])
    parts += [(f"test {label}", part, data.tests[part.label]) for part, label in
              ((p, p.label) for p in data.split.tests)]
    for name, part, d in parts:
        where = f"train.task autoregressive: the {name} samples ({part.describe()})"
        check_trajectories(d.n_times, d.x_shape, d.y_shape, where)
        if cfg.task == "autoregressive":
            tasks.check_horizon(d.n_times + 1 - cfg.first_state, cfg.window, cfg.bundle,
                                cfg.unroll if name == "training" else 1, where)
        elif d.n_times != train.n_times:
            raise ParameterError(f"{where}: {d.n_times} records, the training trajectories {train.n_times}: "
                                 f"train.task spacetime predicts a fixed number of states")
        else:
            tasks.check_horizon(d.n_times + 1 - cfg.first_state, cfg.window, 1, 1, where)
    return tasks.shapes(cfg, train.x_shape, train.y_shape, train.n_times)


def resume_run(out: str | Path, epochs: int | None = None, log=print, progress=None, callbacks=()) -> dict:
    """Continue the run in folder ``out`` from its last checkpoint (``epochs``: a new total); a
    fine-tuned run (:mod:`oplab.train.finetune`) with its frozen weights or adapters."""
    saved = RunDir.open(out)
    if isinstance(saved.config.get("finetune"), dict):
        from .finetune import resume

        return resume(out, epochs=epochs, log=log, progress=progress, callbacks=callbacks)
    known = {f.name for f in dataclasses.fields(DataConfig)}
    data = {k: v for k, v in saved.data.items() if k in known}
    train = {k: v for k, v in saved.config["train"].items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    if epochs is not None:  # a new total replaces the plan of a time budget
        train["epochs"], train["budget_minutes"] = epochs, 0.0
    cfg = RunConfig(data=DataConfig(**data), model=saved.model, train=TrainConfig(**train), out=str(out))
    return run(cfg, resume=True, log=log, progress=progress, callbacks=callbacks)


def run_or_resume(cfg: RunConfig, log=print, progress=None) -> dict:
    """Run ``cfg`` into ``cfg.out``, or continue the run there (a job rerun after an interruption:
    the quickstart, a benchmark case)."""
    if (Path(cfg.out) / "config.json").exists():
        return resume_run(cfg.out, log=log, progress=progress)
    return run(cfg, log=log, progress=progress)


def train(model, data, test=None, out=None, n_train=None, n_test=None, n_val=None, in_memory="auto", log=print,
          callbacks=(), **train_kwargs) -> dict:
    """Train a model object on a data set (``oplab.data.open(...)`` or a path).

    The split is :func:`oplab.train.data.plan`'s: ``n_train`` training samples from the start of
    ``data`` (the last ``n_val`` of them validate and choose ``best``), ``n_test`` test samples from
    its end or from ``test``; ``in_memory``: ``"auto"``, True or False (``data.in_memory``). ``train_kwargs`` are :class:`TrainConfig` fields (epochs, lr,
    batch_size, ...); ``callbacks`` extra :class:`~oplab.train.callbacks.Callback` objects.
    """
    from ..data.dataset import H5Dataset
    from ..models import config_of

    path = lambda d: str(d.path) if isinstance(d, H5Dataset) else str(d)  # noqa: E731
    resolution = data.resolution if isinstance(data, H5Dataset) else None
    data_cfg = DataConfig(train=path(data), test=None if test is None else path(test), n_train=n_train,
                          n_test=n_test, n_val=n_val, resolution=resolution, in_memory=in_memory)
    cfg = TrainConfig(**train_kwargs)
    if out is not None and is_main():
        RunDir.check_fresh(out)
    prepared = prepare(plan(data_cfg), outputs=not cfg.physics_only, in_memory=data_cfg.in_memory)
    x_shape, y_shape = task_shapes(cfg, prepared)
    info = {"model": config_of(model), "data": {**dataclasses.asdict(data_cfg), **prepared.info(),
                                                "train_input_shape": list(x_shape), "train_output_shape": list(y_shape)}}
    return _train(model, prepared, cfg, Path(out) if out is not None else None, info, False, log, None, callbacks)


__all__ = ["resume_run", "run", "run_or_resume", "train"]
