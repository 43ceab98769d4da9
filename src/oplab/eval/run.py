"""``oplab evaluate``: a trained run scored on a data file, on the run's own test samples.

A run folder records its split (:class:`~oplab.train.data.Split`). Given a file,
the scored samples are the run's test samples in it (the file is recognised
by path or by its content's fingerprint); a file the run never saw is scored
whole; a file that holds only the run's training and validation samples is
refused (``every=True`` scores every sample of any file, and says so).
"""

from __future__ import annotations

from pathlib import Path

from ..data.dataset import open_dataset
from ..errors import ParameterError
from .metrics import evaluate


def evaluate_run(run_dir, file, resolutions=(None,), n: int | None = None, every: bool = False,
                 checkpoint: str = "best") -> dict:
    """Errors of ``run_dir``'s model on ``file`` at each resolution: ``{"checkpoint": ..., "scored":
    "test" | "all", "samples": "samples 1000-1199 of darcy.h5", "results": {label: {l2, h1, samples}}}``;
    ``n``: only the last ``n`` of the scored samples."""
    from ..predictor import load
    from ..rundir import RunDir
    from ..train.data import Part, grid_label, recorded_split

    if n is not None and n < 1:
        raise ParameterError(f"--n must be a positive number of samples, got {n}")
    op = load(run_dir, checkpoint)
    ds = open_dataset(file)
    split = recorded_split(RunDir.open(run_dir))
    scored, indices = "all", None
    if not every:
        tests = [p for p in split.tests if p.matches(ds)]
        if tests:
            scored, indices = "test", tests[0].indices
        elif split.train.matches(ds):
            raise ParameterError(f"{file}: holds only this run's training and validation samples (its test samples: "
                                 f"{split.tests[0].describe()}); pass --all to score every sample anyway")
    if n is not None:
        indices = list(indices if indices is not None else range(len(ds)))[-n:]
    results = {}
    for res in resolutions or (None,):
        part = Part(str(file), indices, res)
        data = part.load()
        _check_fits(op, data, file)
        label = str(res) if res is not None else grid_label(part.dataset())
        results[label] = {**evaluate(op.bundle, data), "samples": len(data)}
    described = Part(str(file), indices, None).describe()
    return {"checkpoint": op.checkpoint, "scored": scored, "samples": described, "results": results}


def _check_fits(op, data, path) -> None:
    want_in, want_out = op.data["train_input_shape"][0], op.data["train_output_shape"][0]
    if data.x.shape[1] != want_in or data.y.shape[1] != want_out:
        raise ParameterError(f"{path}: {data.x.shape[1]} input / {data.y.shape[1]} output channels, "
                             f"the model takes {want_in} / {want_out}")
    if op.kind == "point" and list(data.x.shape[1:]) != op.data["train_input_shape"]:
        raise ParameterError(f"{path}: inputs on {list(data.x.shape[2:])}, this point operator takes its "
                             f"training sensors {op.data['train_input_shape'][1:]}; pass --resolution")


__all__ = ["evaluate_run"]
