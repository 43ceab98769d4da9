"""Learning-rate schedules: the rate is a pure function of the epoch (so a resumed run replays it)."""

from __future__ import annotations

import math


def learning_rate(cfg, epoch: int, epochs: int | None = None, step_size: int | None = None) -> float:
    """The rate of ``epoch`` under ``cfg.scheduler`` for a run of ``epochs`` epochs (default
    ``cfg.epochs``; a time budget plans fewer) and, for ``step``, decays every ``step_size``."""
    epochs = cfg.epochs if epochs is None else epochs
    step_size = cfg.step_size if step_size is None else step_size
    if cfg.scheduler == "step":
        return cfg.lr * cfg.gamma ** (epoch // step_size)
    if cfg.scheduler == "cosine":
        return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * epoch / epochs))
    if cfg.scheduler == "onecycle":
        # one cycle (Smith & Topin 2019; torch's OneCycleLR) per run, with the factors of MgNO's Darcy
        # script: cosine from lr/2 up to lr over the first 30% of the epochs, then cosine down to lr/200
        warm = max(1, round(0.3 * epochs))
        if epoch < warm:
            return cfg.lr / 2 + cfg.lr / 2 * 0.5 * (1.0 - math.cos(math.pi * epoch / warm))
        low = cfg.lr / 200
        t = (epoch - warm) / max(1, epochs - 1 - warm)
        return low + (cfg.lr - low) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    return cfg.lr
