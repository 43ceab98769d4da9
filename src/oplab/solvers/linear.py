"""Sparse linear solvers for the elliptic reference problems.

* ``direct``: scipy's SuperLU with the minimum-degree ordering of ``A^T + A``
  (``MMD_AT_PLUS_A``), the right ordering for the structurally symmetric
  five-point matrices here: about 2x faster than scipy's default on the
  421x421 Darcy problem (``benchmarks/generate.py``), same solution;
* ``direct-colamd``: ``spsolve`` with scipy's default (COLAMD) ordering, the
  baseline;
* ``amg``: conjugate gradients preconditioned by a smoothed-aggregation
  algebraic multigrid V-cycle (pyamg), symmetric positive definite matrices
  only, to a relative residual ``tol``.

``benchmarks/generate.py`` measures them side by side on the Darcy problem.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

METHODS = ("direct", "direct-colamd", "amg")


def solve(A: sp.spmatrix, b: np.ndarray, method: str = "direct", tol: float = 1e-10) -> np.ndarray:
    """Solve ``A x = b`` with ``method`` (see module docstring)."""
    if method == "direct":
        return spla.spsolve(A.tocsc(), b, permc_spec="MMD_AT_PLUS_A")
    if method == "direct-colamd":
        return spla.spsolve(A.tocsc(), b)
    if method == "amg":
        import pyamg

        ml = pyamg.smoothed_aggregation_solver(A.tocsr(), symmetry="symmetric", max_coarse=500)
        residuals: list[float] = []
        x = ml.solve(b, tol=tol, accel="cg", maxiter=500, residuals=residuals)
        rel = np.linalg.norm(b - A @ x) / max(np.linalg.norm(b), np.finfo(float).tiny)
        if not rel <= 10 * tol:
            raise RuntimeError(f"AMG-CG did not reach tol={tol:g} (relative residual {rel:.2e})")
        return x
    raise ValueError(f"unknown linear solver {method!r}; expected one of {METHODS}")
