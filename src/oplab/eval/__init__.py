"""Evaluation of a trained operator: errors per test set and resolution, inference time.

:func:`evaluate` gives the relative L2 and H1 errors (means over the samples,
with the grid's quadrature, :mod:`oplab.losses`); :func:`inference_seconds_per_sample`
times the whole predictor (normalise, model, de-normalise); :func:`evaluate_run`
scores a run folder on a file, on the run's own test samples (``oplab evaluate``);
:mod:`oplab.eval.rollout` rolls an autoregressive operator out and scores each step
(``oplab evaluate --rollout``).
"""

from __future__ import annotations

from .metrics import evaluate, inference_seconds_per_sample
from .rollout import evaluate_rollout, rollout, rollout_errors
from .run import evaluate_run

__all__ = ["evaluate", "evaluate_rollout", "evaluate_run", "inference_seconds_per_sample", "rollout", "rollout_errors"]
