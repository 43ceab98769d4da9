"""Steady Darcy flow: ``-div(a grad u) = f`` on the unit square, ``u = 0`` on the boundary.

The FNO paper's benchmark (Li et al. 2021, "Fourier Neural Operator for
Parametric Partial Differential Equations", ICLR, section 5.2 and table 4):

* ``mu`` is a Gaussian random field with covariance ``(-Laplacian + 9 I)^-2``
  (alpha = 2, tau = 3) and Neumann boundary, drawn from its cosine
  Karhunen-Loeve expansion with ``sigma = tau^(alpha - 1)`` and the constant
  mode removed, as the paper's original generator does;
* the coefficient is ``a = psi(mu)``: ``contrast_high`` (12) where ``mu >= 0``
  and ``contrast_low`` elsewhere. The paper's text says 3 and the released
  generator script uses 4; oplab defaults to the paper (3) and both are
  parameters;
* ``f = 1``; the solution is computed with second-order finite differences
  (``oplab.solvers.fd``) on the full grid, default 421 x 421. The paper's
  coarser sets (85, 141, 211) are strides of the 421 grid (``oplab.data``
  strides on load).

``coefficient="lognormal"`` gives the smooth variant ``a = exp(mu)``.
"""

from __future__ import annotations

import numpy as np

from ..solvers.random_fields import cosine_grf
from .base import Param, nonnegative, positive
from .elliptic import SPD_SOLVER_PARAMS, UnitSquareProblem


class Darcy(UnitSquareProblem):
    name = "darcy"
    summary = "2D Darcy flow -div(a grad u) = f, piecewise-constant or log-normal a (FNO benchmark)"
    reference = "Li et al. 2021, Fourier Neural Operator, ICLR, sec. 5.2"
    default_resolution = 421
    input_channels = ("a",)
    output_channels = ("u",)
    params_spec = (
        Param("coefficient", "piecewise", "coefficient map psi(mu)", choices=("piecewise", "lognormal")),
        positive("contrast_high", 12.0, "a where mu >= 0 (piecewise)"),
        positive("contrast_low", 3.0, "a where mu < 0 (piecewise; the FNO script used 4)"),
        positive("alpha", 2.0, "GRF smoothness: covariance (-Lap + tau^2)^-alpha"),
        positive("tau", 3.0, "GRF inverse length scale"),
        nonnegative("sigma", 0.0, "GRF amplitude (0: tau^(alpha-1), the FNO generator's)"),
        Param("modes", 0, "KL modes per axis (0: the grid resolution)", check=lambda v: v >= 0, expect=">= 0"),
        Param("forcing", 1.0, "constant source f"),
        *SPD_SOLVER_PARAMS,
    )

    def sample_inputs(self, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        mu = cosine_grf(
            rng, self.resolution, dim=2, alpha=p["alpha"], tau=p["tau"],
            sigma=p["sigma"] or None, modes=p["modes"] or None,
        )
        if p["coefficient"] == "lognormal":
            a = np.exp(mu)
        else:
            a = np.where(mu >= 0.0, p["contrast_high"], p["contrast_low"])
        return a[None]  # [1, n, n]

    def pde(self, inputs: np.ndarray) -> dict:
        return {"a": inputs[0], "f": self.params["forcing"]}

    def torch_pde(self, x):
        """:meth:`pde` for a torch batch ``[B, 1, n, n]`` (the physics residual loss)."""
        return {"a": x[:, 0], "f": self.params["forcing"]}
