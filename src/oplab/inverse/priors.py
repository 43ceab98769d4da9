"""Priors for :func:`oplab.inverse.invert`: each owns the parametrisation of the unknown field.

A prior has ``init(restarts, generator) -> params``, ``field(params) -> a [R, C, *S]`` and
``penalty(params) -> [R]`` (the ``R(a)`` of the objective).

* :class:`Smooth`: the field itself (optionally squashed into ``bounds`` by a sigmoid), with
  ``weight * mean |grad a|^2`` (a discrete H1 seminorm: Tikhonov regularisation).
* :class:`TotalVariation`: the same field with ``weight * mean sqrt(|grad a|^2 + eps^2)``, which
  keeps edges (Rudin, Osher & Fatemi 1992).
* :class:`Latent`: two-phase fields ``a = lo + (hi - lo) sigmoid(mu(z) / width)``, ``mu`` a Gaussian
  random field with covariance ``sigma^2 (-Lap + tau^2)^-alpha`` (Neumann, the Darcy benchmark's
  own prior, :func:`oplab.solvers.random_fields.cosine_grf`) written as its truncated Karhunen-Loeve
  expansion with coefficients ``z``, and ``R = |z|^2 / 2`` (``z ~ N(0, I)`` a priori). With a small
  ``width`` this is the thresholded field of the data's generator, kept differentiable.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ParameterError
from ..solvers.random_fields import _cosine_basis, cosine_eigenvalues


def _gradients(a: torch.Tensor, spacing: tuple) -> list[torch.Tensor]:
    """Forward differences of ``a [R, C, *S]`` along each spatial axis (physical units)."""
    return [a.diff(dim=2 + i) / h for i, h in enumerate(spacing)]


class _Pixels:
    """The field on the grid, optionally squashed into ``bounds`` (``a = lo + (hi - lo) sigmoid(s)``)."""

    def __init__(self, shape: tuple, spacing: tuple, weight: float, bounds=None, start=None):
        if not weight >= 0:
            raise ParameterError(f"prior weight must be >= 0, got {weight!r}")
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ParameterError(f"prior bounds must be lo < hi, got {list(bounds)}")
        self.shape, self.spacing, self.weight, self.bounds = tuple(shape), tuple(spacing), float(weight), bounds
        self.start = start  # the centre of the random starts (default: the middle of the bounds, or 0)

    def init(self, restarts: int, gen: torch.Generator) -> torch.Tensor:
        noise = 0.5 * torch.randn(restarts, *self.shape, generator=gen, dtype=torch.float64)
        if self.bounds is None:
            return noise + (0.0 if self.start is None else torch.as_tensor(self.start, dtype=torch.float64))
        return noise  # sigmoid(0) is the middle of the bounds

    def field(self, p: torch.Tensor) -> torch.Tensor:
        if self.bounds is None:
            return p
        lo, hi = self.bounds
        return lo + (hi - lo) * torch.sigmoid(p)


class Smooth(_Pixels):
    """``weight * mean |grad a|^2`` over the grid (module docstring)."""

    def penalty(self, p: torch.Tensor) -> torch.Tensor:
        a = self.field(p)
        return self.weight * sum(g.square().flatten(1).mean(1) for g in _gradients(a, self.spacing))


class TotalVariation(_Pixels):
    """``weight * mean sqrt(|grad a|^2 + eps^2)`` (module docstring)."""

    def __init__(self, shape, spacing, weight, bounds=None, eps: float = 1e-2, start=None):
        super().__init__(shape, spacing, weight, bounds, start)
        self.eps = float(eps)

    def penalty(self, p: torch.Tensor) -> torch.Tensor:
        a = self.field(p)
        grads = _gradients(a, self.spacing)
        crop = [g[(slice(None), slice(None), *[slice(0, -1) if j != i else slice(None) for j in range(len(grads))])]
                for i, g in enumerate(grads)]  # the forward differences on the common cells
        return self.weight * (sum(c.square() for c in crop) + self.eps**2).sqrt().flatten(1).mean(1)


class Latent:
    """Two-phase fields from the latent coefficients of a Gaussian random field (module docstring).

    ``n``: grid points per axis (a node grid on the unit cube, as the Darcy problem's); ``modes``:
    KL modes kept per axis; ``alpha, tau, sigma``: the field's covariance (the Darcy defaults);
    ``bounds``: the two phases' values (``lo`` where ``mu < 0``); ``width``: the sigmoid's width
    relative to the field's standard deviation."""

    def __init__(self, n: int, dim: int = 2, bounds=(3.0, 12.0), modes: int = 16, alpha: float = 2.0,
                 tau: float = 3.0, sigma: float | None = None, width: float = 0.05, channels: int = 1):
        if not bounds[0] < bounds[1]:
            raise ParameterError(f"latent prior: bounds must be lo < hi, got {list(bounds)}")
        if not 1 <= modes <= n:
            raise ParameterError(f"latent prior: modes must be in [1, {n}] (the grid's points), got {modes}")
        if not width > 0:
            raise ParameterError(f"latent prior: width must be > 0, got {width!r}")
        sigma = tau ** (alpha - 1.0) if sigma is None else sigma
        coef = np.sqrt(cosine_eigenvalues(modes, dim, alpha, tau, sigma))
        coef[(0,) * dim] = 0.0  # zero mean, as the Darcy generator draws it
        self.coef = torch.from_numpy(coef)
        self.basis = torch.from_numpy(np.array(_cosine_basis(n, modes)))  # [n, modes]
        self.dim, self.n, self.modes, self.channels = dim, n, modes, channels
        self.bounds = bounds
        self.scale = width * math.sqrt(float((coef**2).sum()))  # width x the field's pointwise std

    def init(self, restarts: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(restarts, self.channels, *([self.modes] * self.dim), generator=gen, dtype=torch.float64)

    def gaussian(self, z: torch.Tensor) -> torch.Tensor:
        """``mu(z)``: ``[R, C, modes^d] -> [R, C, n^d]``."""
        field = z * self.coef.to(z.dtype)
        basis = self.basis.to(z.dtype)
        for axis in range(self.dim):
            field = torch.movedim(torch.tensordot(field, basis, dims=([2 + axis], [1])), -1, 2 + axis)
        return field

    def field(self, z: torch.Tensor) -> torch.Tensor:
        lo, hi = self.bounds
        return lo + (hi - lo) * torch.sigmoid(self.gaussian(z) / self.scale)

    def penalty(self, z: torch.Tensor) -> torch.Tensor:
        return 0.5 * z.square().flatten(1).sum(1)


PRIORS = ("smooth", "tv", "latent")  # and "lpn" in oplab invert: a learned proximal network (oplab.inverse.lpn)

__all__ = ["Latent", "PRIORS", "Smooth", "TotalVariation"]
