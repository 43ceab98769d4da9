"""Training: from a run configuration (CLI, YAML) or from Python objects.

>>> import oplab
>>> ds = oplab.data.open("darcy.h5", resolution=85)
>>> model = oplab.models.create("fno", in_channels=1, out_channels=1, modes=[12, 12], width=32)
>>> result = oplab.train(model, ds, epochs=500, out="runs/darcy_fno")

The parts, one job each: ``config`` (typed settings), ``data`` (the one data
preparation: split, read), ``trainer`` (the steps), ``callbacks`` (evaluation,
time budget, NaN guard, console, progress, checkpoints, early stopping),
``loggers`` (TensorBoard, MLflow), ``schedule`` (learning rates),
``distributed`` (device, torchrun), ``api`` (the entry points), ``refine``
(Spectral-Refiner fine-tuning), ``finetune`` (transfer to new data: full, LoRA, head; a
MAML-style meta-initialisation), ``plots``. The run folder is
:class:`oplab.rundir.RunDir`; the trained model, :mod:`oplab.predictor`.
"""

from __future__ import annotations

import sys
import types

from .callbacks import Callback, EarlyStopping, TrainingDiverged
from .config import DataConfig, RunConfig, TrainConfig
from .api import resume_run, run, run_or_resume, train
from .trainer import Trainer, fit

__all__ = ["Callback", "DataConfig", "EarlyStopping", "RunConfig", "TrainConfig", "Trainer", "TrainingDiverged",
           "fit", "resume_run", "run", "run_or_resume", "train"]


class _CallableModule(types.ModuleType):
    """``oplab.train`` is both this package and, called, :func:`train` (the
    DESIGN's ``oplab.train(model, ds, ...)``): a package attribute and a
    function of the same name cannot coexist otherwise."""

    def __call__(self, model, data, **kwargs):
        return train(model, data, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
