"""Training: from a run configuration (CLI, YAML) or from Python objects.

>>> import oplab
>>> ds = oplab.data.open("darcy.h5", resolution=85)
>>> model = oplab.models.create("fno", in_channels=1, out_channels=1, modes=[12, 12], width=32)
>>> result = oplab.train(model, ds, epochs=500, out="runs/darcy_fno")
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import torch

from ..errors import OplabError, ParameterError
from .config import DataConfig, RunConfig, TrainConfig
from .loop import fit


def _datasets(cfg: DataConfig, outputs: bool = True):
    """Training GridData (without its solutions if not ``outputs``) and test GridData per resolution label."""
    from ..data.dataset import open_dataset
    from .data import load

    train_ds = open_dataset(cfg.train, cfg.resolution)
    if cfg.test:
        test_path = cfg.test
        test_n = len(open_dataset(cfg.test))
        n_test = test_n if cfg.n_test is None else cfg.n_test
        if n_test > test_n:
            raise ParameterError(f"data.n_test = {n_test} but {cfg.test} holds {test_n} samples")
        test_idx = list(range(test_n - n_test, test_n))
        n_train = len(train_ds) if cfg.n_train is None else cfg.n_train
        if n_train > len(train_ds):
            raise ParameterError(f"data.n_train = {n_train} but {cfg.train} holds {len(train_ds)} samples")
        train_idx = list(range(n_train))
    else:
        test_path = cfg.train
        tr, te = train_ds.split(cfg.n_train, cfg.n_test)
        train_idx, test_idx = list(tr.indices), list(te.indices)
    train = load(train_ds, train_idx, outputs=outputs)
    resolutions = [cfg.resolution] + [r for r in cfg.test_resolutions if r != cfg.resolution]
    tests = {}
    for res in resolutions:
        ds = open_dataset(test_path, res)
        label = str(res if res is not None else ds.output_grid[0].shape[0])
        tests[label] = load(ds, test_idx)
    for path in cfg.test_files:
        ds = open_dataset(path)
        label = str(ds.output_grid[0].shape[0])
        if label in tests:
            label = f"{Path(path).stem}@{label}"
        tests[label] = load(ds)
    return train_ds, train, tests


def _data_info(ds, train) -> dict:
    meta = ds.meta
    return {
        "problem": meta["problem"], "params": meta["params"],
        "input_channels": meta["input_channels"], "output_channels": meta["output_channels"],
        "input_axes": [dataclasses.asdict(a) for a in meta["input_axes"]],
        "output_axes": [dataclasses.asdict(a) for a in meta["output_axes"]],
        "n_times": train.n_times,
        "train_input_shape": list(train.x.shape[1:]),
        "train_output_shape": list(train.y.shape[1:]),
        "times": None if meta["times"] is None else [float(t) for t in meta["times"]],
    }


def run(cfg: RunConfig, resume: bool = False, log=print, progress=None) -> dict:
    """Train as ``cfg`` says; returns the history and best test error."""
    from .. import models
    from ..models.presets import derive
    from .plots import write_plots

    out = Path(cfg.out) if cfg.out else None
    train_ds, train, tests = _datasets(cfg.data, outputs=not cfg.train.physics_only)
    model_cfg = derive(cfg.model, train.x.shape, train.y.shape, train.out_coords, train.periodic)
    torch.manual_seed(cfg.train.seed)
    model = models.from_config(model_cfg)
    info = {"model": model_cfg, "data": {**dataclasses.asdict(cfg.data), **_data_info(train_ds, train)}}
    if out is not None and not resume:
        _check_fresh(out)
    log(f"model {model_cfg['name']}: {model.n_params():,} parameters; "
        f"{len(train)} training samples at {list(train.x.shape[2:])}, test at {list(tests)}")
    result = fit(model, train, tests, cfg.train, out, info, resume=resume, log=log, progress=progress)
    if out is not None and int(__import__("os").environ.get("RANK", "0")) == 0:
        write_plots(out, result["bundle"], tests[next(iter(tests))], result["history"], info, cfg.train.plot_samples)
    return result


def _check_fresh(out: Path) -> None:
    if (out / "config.json").exists():
        raise OplabError(f"{out}: already holds a run; use --resume {out} to continue it, or another --out")


def resume_run(out: str | Path, epochs: int | None = None, log=print, progress=None) -> dict:
    """Continue the run in folder ``out`` from its last checkpoint."""
    out = Path(out)
    path = out / "config.json"
    if not path.exists():
        raise OplabError(f"{out}: not a run folder (no config.json)")
    saved = json.loads(path.read_text())
    from .loop import RUN_FORMAT, RUN_VERSION

    if saved.get("format") != RUN_FORMAT or saved.get("run_version") != RUN_VERSION:
        raise OplabError(f"{path}: run format {saved.get('format')!r} v{saved.get('run_version')}, "
                         f"this oplab reads {RUN_FORMAT!r} v{RUN_VERSION}")
    data = {k: saved["data"][k] for k in (f.name for f in dataclasses.fields(DataConfig))}
    train = dict(saved["train"])
    if epochs is not None:
        train["epochs"] = epochs
    cfg = RunConfig(data=DataConfig(**data), model=saved["model"], train=TrainConfig(**train), out=str(out))
    return run(cfg, resume=True, log=log, progress=progress)


def train(model, data, test=None, out=None, n_train=None, n_test=None, log=print, **train_kwargs) -> dict:
    """Train a model object on a dataset (``oplab.data.open(...)`` or a path).

    ``train_kwargs`` are :class:`TrainConfig` fields (epochs, lr, batch_size, ...).
    """
    from ..data.dataset import H5Dataset, open_dataset
    from .data import load

    ds = data if isinstance(data, H5Dataset) else open_dataset(data)
    cfg = TrainConfig(**train_kwargs)
    if test is None:
        tr, te = ds.split(n_train, n_test)
        test_ds, test_idx = ds, list(te.indices)
        train_idx = list(tr.indices)
    else:
        test_ds = test if isinstance(test, H5Dataset) else open_dataset(test)
        test_idx, train_idx = None, list(range(n_train or len(ds)))
    train_data = load(ds, train_idx, outputs=not cfg.physics_only)
    tests = {str(train_data.x.shape[-1]): load(test_ds, test_idx)}
    from ..models import config_of

    info = {"model": config_of(model),
            "data": {"train": str(ds.path), "test": str(test_ds.path), "n_train": len(train_idx),
                     "n_test": len(tests[next(iter(tests))]), "resolution": ds.resolution,
                     "test_resolutions": [], "test_files": [], **_data_info(ds, train_data)}}
    if out is not None:
        _check_fresh(Path(out))  # as `oplab train`: never overwrite a run folder
    result = fit(model, train_data, tests, cfg, Path(out) if out else None, info, log=log)
    if out is not None:
        from .plots import write_plots

        write_plots(Path(out), result["bundle"], tests[next(iter(tests))], result["history"], info, cfg.plot_samples)
    return result


__all__ = ["DataConfig", "RunConfig", "TrainConfig", "fit", "resume_run", "run", "train"]


class _CallableModule(types.ModuleType):
    """``oplab.train`` is both this package and, called, :func:`train` (the
    DESIGN's ``oplab.train(model, ds, ...)``): a package attribute and a
    function of the same name cannot coexist otherwise."""

    def __call__(self, model, data, **kwargs):
        return train(model, data, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
