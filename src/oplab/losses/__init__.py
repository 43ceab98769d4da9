"""Relative Sobolev losses that integrate with the grid's quadrature.

For fields ``u`` (prediction) and ``v`` (truth) on a grid with coordinates
``coords`` (one 1D tensor per spatial axis):

    rel_L2(u, v) = ||u - v||_L2 / ||v||_L2
    rel_H1(u, v) = sqrt(||u - v||_L2^2 + ||grad(u - v)||_L2^2) / sqrt(||v||_L2^2 + ||grad v||_L2^2)

Integrals use the trapezoidal rule on non-periodic axes and the rectangle rule
on periodic ones, so a loss means the same at every resolution; gradients are
second-order central differences (one-sided at non-periodic ends, wrapped on
periodic axes) with the actual grid spacing. Channel (and time) axes are
summed inside the norm; the loss of a batch is the **mean** over samples.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.autograd.function import once_differentiable

from .._fused import plain_autograd

Coords = Sequence[torch.Tensor]


_WEIGHTS = None


def quadrature_weights(coords: Coords, periodic: Sequence[bool], root: bool = False) -> torch.Tensor:
    """Tensor-product weights ``[*S]`` (trapezoid / rectangle per axis), or with ``root`` their
    square roots; cached per grid (rebuilding them took 0.17 ms of a 1.4 ms DeepONet step)."""
    global _WEIGHTS
    if _WEIGHTS is None:
        from .._memo import TensorMemo

        _WEIGHTS = TensorMemo()
    coords = [torch.as_tensor(c) for c in coords]
    key = (tuple(bool(p) for p in periodic), root)
    return _WEIGHTS.get(coords, key, lambda: _build_weights(coords, periodic).sqrt() if root
                        else _build_weights(coords, periodic))


def _build_weights(coords: Coords, periodic: Sequence[bool]) -> torch.Tensor:
    weights = None
    for c, per in zip(coords, periodic):
        n = c.numel()
        if per:
            span = (c[1] - c[0]) * n if n > 1 else torch.ones((), dtype=c.dtype)
            w = torch.full((n,), float(span) / n, dtype=c.dtype, device=c.device)
        else:
            d = torch.diff(c)
            w = torch.zeros_like(c)
            w[:-1] += d / 2
            w[1:] += d / 2
        weights = w if weights is None else weights[..., None] * w
    return weights


def _gradient(u: torch.Tensor, coords: Coords, periodic: Sequence[bool]) -> list[torch.Tensor]:
    """Partial derivatives of ``u [..., *S]`` along each of the last ``d`` axes."""
    d = len(coords)
    out = []
    for axis, (c, per) in enumerate(zip(coords, periodic)):
        dim = u.ndim - d + axis
        if per:
            h = (c[1] - c[0]).to(u.dtype)
            out.append((torch.roll(u, -1, dim) - torch.roll(u, 1, dim)) / (2 * h))
        else:
            out.append(torch.gradient(u, spacing=(c.to(u.dtype),), dim=dim, edge_order=2)[0])
    return out


def _sq_norm(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-sample squared L2 norm of ``u [B, ..., *S]`` with weights ``w [*S]``."""
    return (u.square() * w).reshape(u.shape[0], -1).sum(dim=1)


def relative_l2(pred: torch.Tensor, target: torch.Tensor, coords: Coords, periodic: Sequence[bool],
                reduce: bool = True) -> torch.Tensor:
    """``||pred - target||_w / ||target||_w`` per sample (the grid's quadrature weights ``w``), as
    2-norms of the values scaled by ``sqrt(w)``: fewer operations than summing ``u^2 w`` and a
    zero gradient (not NaN) where the error vanishes; the weights' roots are cached with them
    (the whole loss took 0.24 ms of forward and backward per DeepONet step before, 0.15 ms after)."""
    root = quadrature_weights(coords, periodic, root=True).to(pred.dtype)  # .to: a no-op on a matching dtype
    if reduce and pred.requires_grad and not target.requires_grad and plain_autograd(pred.device.type):
        return _RelativeL2.apply(pred, target, root)  # a training step's loss: one autograd node
    num, den = _relative_l2_parts(pred, target, root)[1:]
    err = num / den
    return err.mean() if reduce else err


def _relative_l2_parts(pred, target, root):
    """The scaled difference ``[B, N]``, its norms ``[B]`` and the target's (clamped) norms ``[B]``."""
    d = torch.sub(pred, target).mul_(root).reshape(pred.shape[0], -1)
    den = torch.linalg.vector_norm((target * root).reshape(target.shape[0], -1), dim=1).clamp_min(1e-30)
    return d, torch.linalg.vector_norm(d, dim=1), den


class _RelativeL2(torch.autograd.Function):
    """The batch mean of :func:`relative_l2` with its gradient in the prediction written out,
    ``d err_i / d pred = w (pred - target)_i / (B ||pred - target||_i ||target||_i)`` and 0 where the
    error vanishes: one autograd node instead of eight (0.15 ms of a 1.2 ms DeepONet step). First
    order only; :func:`oplab._fused.plain_autograd` says when it is used."""

    @staticmethod
    def forward(ctx, pred, target, root):
        d, num, den = _relative_l2_parts(pred, target, root)
        ctx.save_for_backward(root, d, num, den)
        ctx.shape = pred.shape
        return (num / den).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        root, d, num, den = ctx.saved_tensors
        return _relative_l2_grad(g, d, num, den, root, ctx.shape), None, None


def _relative_l2_grad(g, d, num, den, root, shape) -> torch.Tensor:
    """``g`` times the gradient of the batch mean of ``num / den`` in the prediction (of ``shape``;
    ``d``, ``num``, ``den``: :func:`_relative_l2_parts`; ``root``: the weights' roots)."""
    # autograd's order: d / |d| first (at most 1), then 1 / |target| (up to 1e30 for a zero target)
    unit = d * num.reciprocal().nan_to_num_(nan=math.nan, posinf=0.0)[:, None]  # (1 / 0 -> 0; NaN stays)
    return unit.mul_(((g / d.shape[0]) / den)[:, None]).view(shape).mul_(root)


def relative_l2_value_and_grad(pred: torch.Tensor, target: torch.Tensor, coords: Coords,
                               periodic: Sequence[bool], weight: float = 1.0,
                               root: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` times the batch mean of :func:`relative_l2`, and its gradient in ``pred`` (same
    shape), computed directly, without autograd: what a training step's backward gives, bit for bit
    (the loss's half of :meth:`oplab.train.tasks.MapTask.direct_stepper`). ``root``: the quadrature
    weights' roots in ``pred``'s dtype, where the caller keeps them (else looked up)."""
    if root is None:
        root = quadrature_weights(coords, periodic, root=True).to(pred.dtype)
    with torch.no_grad():
        d, num, den = _relative_l2_parts(pred, target, root)
        g = torch.full((), weight, dtype=pred.dtype, device=pred.device)  # as autograd hands it down
        loss = (num / den).mean()
        return (loss if weight == 1.0 else weight * loss), _relative_l2_grad(g, d, num, den, root, pred.shape)


def channel_l2(pred: torch.Tensor, target: torch.Tensor, coords: Coords, periodic: Sequence[bool],
               reduce: bool = True) -> torch.Tensor:
    """The relative L2 error of each output channel, averaged over the channels: outputs in different
    units (an engine's pressures in Pa beside its oxygen fractions) count alike, where the joint
    :func:`relative_l2` is dominated by the largest (PDEBench likewise reports errors per channel)."""
    w = quadrature_weights(coords, periodic).to(pred.dtype)
    per = lambda u: (u.square() * w).reshape(u.shape[0], u.shape[1], -1).sum(dim=2)  # noqa: E731  [B, C]
    err = (per(pred - target).sqrt() / per(target).sqrt().clamp_min(1e-30)).mean(dim=1)
    return err.mean() if reduce else err


def relative_h1(pred: torch.Tensor, target: torch.Tensor, coords: Coords, periodic: Sequence[bool],
                reduce: bool = True) -> torch.Tensor:
    w = quadrature_weights(coords, periodic).to(pred.dtype)
    diff = pred - target
    num = _sq_norm(diff, w) + sum(_sq_norm(g, w) for g in _gradient(diff, coords, periodic))
    den = _sq_norm(target, w) + sum(_sq_norm(g, w) for g in _gradient(target, coords, periodic))
    err = num.sqrt() / den.sqrt().clamp_min(1e-30)
    return err.mean() if reduce else err


def _sine_coefficients(u: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """Type-I sine coefficients of the interior values along ``dims`` (Dirichlet axes)."""
    from .physics import _dst1

    for dim in dims:
        u = _dst1(u.narrow(dim, 1, u.shape[dim] - 2), dim)
    return u


def relative_hm1(pred: torch.Tensor, target: torch.Tensor, coords: Coords, periodic: Sequence[bool],
                 reduce: bool = True) -> torch.Tensor:
    """Relative negative-order Sobolev norm ``||u - v||_{H^-1} / ||v||_{H^-1}``.

    ``||e||_{H^-1}^2 = sum_k |e_k|^2 / (1 + |k|^2)`` in the Fourier basis of
    periodic axes (``k = 2 pi m / L``) or the sine basis of Dirichlet axes
    (``k = pi m / L``, boundary values taken as zero). It weighs low
    frequencies most, the loss of the Spectral-Refiner paper (Cao et al. 2024,
    "Spectral-Refiner: fine-tuning of accurate spatiotemporal neural operator
    for turbulent flows", where it is an a posteriori error estimator for NSE),
    evaluated here by Parseval. All axes periodic or all not.
    """
    d = len(coords)
    dims = list(range(pred.ndim - d, pred.ndim))
    e = pred - target
    if all(periodic):
        eh, vh = torch.fft.fftn(e, dim=dims), torch.fft.fftn(target, dim=dims)
        ks = [2 * torch.pi * torch.fft.fftfreq(c.numel(), d=float(c[1] - c[0]) if c.numel() > 1 else 1.0)
              .to(pred.dtype).to(pred.device) for c in coords]
    elif not any(periodic):
        eh, vh = _sine_coefficients(e, dims), _sine_coefficients(target, dims)
        ks = [torch.pi * torch.arange(1, c.numel() - 1, dtype=pred.dtype, device=pred.device)
              / float(c[-1] - c[0]) for c in coords]
    else:
        raise ValueError("relative_hm1: mixed periodic and non-periodic axes are not supported")
    k2 = sum(k.reshape([-1 if i == j else 1 for j in range(d)]).square() for i, k in enumerate(ks))
    w = 1.0 / (1.0 + k2)
    num = (eh.abs().square() * w).reshape(e.shape[0], -1).sum(1)
    den = (vh.abs().square() * w).reshape(e.shape[0], -1).sum(1)
    err = num.sqrt() / den.sqrt().clamp_min(1e-30)
    return err.mean() if reduce else err


def mse(pred: torch.Tensor, target: torch.Tensor, coords: Coords, periodic: Sequence[bool],
        reduce: bool = True) -> torch.Tensor:
    """Mean squared error ``||u - v||_L2^2 / |domain|`` (not relative): its minimiser over noisy
    targets is their conditional mean, the right loss for unbiased Monte Carlo targets (WoS-NO)."""
    w = quadrature_weights(coords, periodic).to(pred.dtype)
    err = _sq_norm(pred - target, w) / w.sum()
    return err.mean() if reduce else err


LOSSES = {"l2": relative_l2, "channel_l2": channel_l2, "h1": relative_h1, "hm1": relative_hm1, "mse": mse}
#: the losses whose gradient in the prediction is written out (``name -> (pred, target, coords,
#: periodic) -> (loss, d loss / d pred)``), for a training step without autograd
VALUE_AND_GRAD = {"l2": relative_l2_value_and_grad}


def get(name: str):
    from ..errors import ParameterError

    if name not in LOSSES:
        raise ParameterError(f"unknown loss {name!r}; valid: {sorted(LOSSES)}")
    return LOSSES[name]
