"""Poisson's equation ``-Laplacian u = f`` (or ``-div(a grad u) = f``) on the unit
square with zero Dirichlet data and a random source.

A linear family with one matrix for every sample in the constant-coefficient
case and one matrix per sample in the ``variable`` case; the Sorting Krylov
Recycling paper (Wang et al. 2024, "Accelerating Data Generation for Neural
Operators via Krylov Subspace Recycling", ICLR, table 1) uses such Poisson
sets as the case where recycling gains least. The source ``f`` (and the
coefficient, ``a = exp(mu)``) are cosine Gaussian random fields (see
``oplab.solvers.random_fields.cosine_grf``); the discretisation is the
second-order five-point scheme of ``oplab.solvers.fd``.
"""

from __future__ import annotations

import numpy as np

from ..solvers import linear
from ..solvers.random_fields import cosine_grf
from .base import Param, nonnegative, positive
from .elliptic import SPD_SOLVER_PARAMS, UnitSquareProblem


class Poisson(UnitSquareProblem):
    name = "poisson"
    summary = "2D Poisson -Lap u = f (or -div(a grad u) = f), random source, zero Dirichlet data"
    reference = "Wang et al. 2024, Sorting Krylov Recycling, ICLR, sec. 5 (Poisson family)"
    default_resolution = 101
    input_channels = ("f",)
    output_channels = ("u",)
    params_spec = (
        Param("variable", False, "variable coefficient a = exp(mu_a) (adds input channel 'a')"),
        positive("alpha", 2.0, "GRF smoothness of f (and a)"),
        positive("tau", 3.0, "GRF inverse length scale"),
        nonnegative("sigma", 0.0, "GRF amplitude of f (0: tau^(alpha-1))"),
        positive("coef_scale", 1.0, "scale of log a (variable only)"),
        Param("solver", "direct", "linear solver, or wos (walk-on-spheres Monte Carlo: noisy, unbiased)",
              choices=(*linear.METHODS, "skr", "dcdm", "wos")),
        *SPD_SOLVER_PARAMS[1:],
        Param("wos_walks", 16, "walk-on-spheres: walks per grid node", check=lambda v: v >= 1, expect=">= 1"),
        positive("wos_eps", 1e-3, "walk-on-spheres: stopping distance to the boundary"),
    )

    def __init__(self, resolution=None, **params):
        super().__init__(resolution, **params)
        # instance attribute: the variable-coefficient variant has two input channels
        self.input_channels = ("f", "a") if self.params["variable"] else ("f",)
        if self.params["solver"] == "wos" and self.params["variable"]:
            from ..errors import ParameterError

            raise ParameterError("poisson: solver=wos is for -Lap u = f (variable=false)")

    @property
    def solver_name(self) -> str:
        p = self.params
        if p["solver"] == "wos":
            return f"walk-on-spheres (walks={p['wos_walks']}, eps={p['wos_eps']:g}; Monte Carlo, noisy)"
        return super().solver_name

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        if self.params["solver"] != "wos":
            return super().solve(inputs)
        import hashlib

        from ..solvers.wos import solve_grid

        # the walks' randomness is a function of the input, so sample i is reproducible
        seed = int.from_bytes(hashlib.sha256(np.ascontiguousarray(inputs).tobytes()).digest()[:8], "little")
        u = solve_grid(inputs[0], walks=self.params["wos_walks"], eps=self.params["wos_eps"],
                       rng=np.random.default_rng(seed))
        return u[None]

    def sample_inputs(self, rng: np.random.Generator) -> np.ndarray:
        p, n = self.params, self.resolution
        grf = dict(dim=2, alpha=p["alpha"], tau=p["tau"])
        f = cosine_grf(rng, n, sigma=p["sigma"] or None, zero_mean=False, **grf)
        if not p["variable"]:
            return f[None]  # [1, n, n]
        a = np.exp(p["coef_scale"] * cosine_grf(rng, n, **grf))
        return np.stack([f, a])  # [2, n, n]

    def pde(self, inputs: np.ndarray) -> dict:
        a = inputs[1] if self.params["variable"] else np.ones_like(inputs[0])
        return {"a": a, "f": inputs[0]}

    def torch_pde(self, x):
        """:meth:`pde` for a torch batch ``[B, C, n, n]`` (the physics residual loss)."""
        import torch

        return {"a": x[:, 1] if self.params["variable"] else torch.ones_like(x[:, 0]), "f": x[:, 0]}
