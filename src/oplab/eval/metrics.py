"""Errors and inference time of a predictor (a :class:`~oplab.predictor.Bundle`) on a data set."""

from __future__ import annotations

import statistics
import time

import torch

from .. import losses


def check_grid(sizes, periodic, names, where: str) -> None:
    """A ParameterError naming ``where`` and the axis unless every axis has the points the relative
    H1 error (second-order differences) needs: 3 on a non-periodic axis, 2 on a periodic one."""
    from ..errors import ParameterError

    for n, per, name in zip(sizes, periodic, names):
        need = 2 if per else 3
        if n < need:
            raise ParameterError(f"{where}: axis {name!r} has {n} point(s); the relative H1 error needs at least "
                                 f"{need} on a{' periodic' if per else ' non-periodic'} axis")


def evaluate(bundle, data, batch_size: int = 50, device=None, mask: int | None = None) -> dict:
    """Relative L2 and H1 errors (means over samples) of ``bundle`` on ``data`` (a
    :class:`~oplab.train.data.GridData` or a streamed :class:`~oplab.train.data.StreamData`);
    ``mask``: the index of an input channel whose zeros are left out (``train.loss_mask``,
    :func:`masked`): the errors over the domain only."""
    device = device or next(bundle.parameters()).device
    coords = tuple(c.to(device) for c in data.out_coords)
    l2 = h1 = 0.0
    was_training = bundle.training
    bundle.eval()
    with torch.no_grad():
        for xb, yb in data.chunks(batch_size):
            xb, yb = xb.to(device), yb.to(device)
            pred = bundle(xb, coords)
            if mask is not None:
                pred, yb = masked(xb, mask, pred, yb)
            l2 += losses.relative_l2(pred, yb, coords, data.periodic, reduce=False).sum().item()
            h1 += losses.relative_h1(pred, yb, coords, data.periodic, reduce=False).sum().item()
    bundle.train(was_training)
    return {"l2": l2 / len(data), "h1": h1 / len(data)}


def masked(x: torch.Tensor, channel: int, *fields: torch.Tensor) -> tuple:
    """``fields`` (each ``[B, C, *S]``) set to 0 where input channel ``channel`` of ``x [B, C_in, *S]``
    (the same points) is 0: the points outside the domain then count in no relative error and get
    no gradient, whatever the prediction there (NaN included)."""
    keep = x[:, channel : channel + 1] != 0
    return tuple(torch.where(keep, f, torch.zeros((), dtype=f.dtype, device=f.device)) for f in fields)


def inference_seconds_per_sample(bundle, data, batch: int = 50, repeats: int = 5, x=None, coords=None) -> float:
    """Median time of the predictor (normalise, model, de-normalise) on a batch, per sample (``x``
    and ``coords``: the model's inputs and grid when they are not ``data``'s, e.g. one autoregressive step)."""
    device = next(bundle.parameters()).device
    x = (data.x[:batch] if x is None else x[:batch]).to(device)
    coords = tuple(c.to(device) for c in (data.out_coords if coords is None else coords))
    was_training = bundle.training
    bundle.eval()
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            tic = time.perf_counter()
            bundle(x, coords)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - tic)
    bundle.train(was_training)
    return statistics.median(times) / x.shape[0]
