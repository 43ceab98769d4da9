"""Helmholtz equation ``Laplacian u + k(x)^2 u = 0`` on the unit square with a random
wave-number field and Dirichlet data.

The indefinite linear family of the Sorting Krylov Recycling paper (Wang et
al. 2024, "Accelerating Data Generation for Neural Operators via Krylov
Subspace Recycling", ICLR, table 1: the largest speed-ups, n = 10000). The
wave number is ``k(x) = wavenumber * exp(amplitude * mu(x))`` with ``mu`` a
cosine Gaussian random field, so it stays positive; the boundary data is a
wave entering through the left edge, ``u(0, y) = sin(pi y)``, ``u = 0`` on the
other edges (continuous at the corners). Second-order five-point
differences; the matrix ``-Lap - k^2`` is indefinite, so the default solver
is the sparse direct one.

A wave-number field close to a Dirichlet eigenvalue of the Laplacian
(``pi^2 (p^2 + q^2)``) gives a near-resonant, large solution; that is the
physics of the problem, not a solver failure. The defaults (k0 = 12,
amplitude 0.1) put ``k^2`` between the eigenvalues ``13 pi^2`` and
``17 pi^2``: over 40 samples at 50 x 50 the largest ``|u|`` was 1.7, whereas
k0 = 10 (``k^2`` near ``10 pi^2``) gave a median of 17 and a maximum of 386.
"""

from __future__ import annotations

import numpy as np

from ..solvers.random_fields import cosine_grf
from .base import nonnegative, positive
from .elliptic import INDEFINITE_SOLVER_PARAMS, UnitSquareProblem


class Helmholtz(UnitSquareProblem):
    name = "helmholtz"
    summary = "2D Helmholtz Lap u + k(x)^2 u = 0, random wave number, wave entering at x = 0"
    reference = "Wang et al. 2024, Sorting Krylov Recycling, ICLR, sec. 5 (Helmholtz family)"
    default_resolution = 100
    input_channels = ("k",)
    output_channels = ("u",)
    params_spec = (
        positive("wavenumber", 12.0, "mean wave number k0"),
        nonnegative("amplitude", 0.1, "log-amplitude of the wave-number variation"),
        positive("alpha", 2.0, "GRF smoothness"),
        positive("tau", 3.0, "GRF inverse length scale"),
        *INDEFINITE_SOLVER_PARAMS,
    )

    def boundary_data(self) -> np.ndarray:
        n = self.resolution
        g = np.zeros((n, n))
        g[0, :] = np.sin(np.pi * np.linspace(0.0, 1.0, n))
        return g

    def sample_inputs(self, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        mu = cosine_grf(rng, self.resolution, dim=2, alpha=p["alpha"], tau=p["tau"])
        return (p["wavenumber"] * np.exp(p["amplitude"] * mu))[None]  # [1, n, n]

    def pde(self, inputs: np.ndarray) -> dict:
        k = inputs[0]
        return {"a": np.ones_like(k), "f": 0.0, "g": self.boundary_data(), "shift": -(k**2)}

    def torch_pde(self, x):
        """:meth:`pde` for a torch batch ``[B, 1, n, n]`` (the physics residual loss)."""
        import torch

        k = x[:, 0]
        g = torch.as_tensor(self.boundary_data(), dtype=x.dtype, device=x.device)
        return {"a": torch.ones_like(k), "f": 0.0, "g": g, "shift": -(k**2)}
