"""Sparse linear solvers for the elliptic reference problems.

* ``amg``: conjugate gradients preconditioned by a classical (Ruge-Stuben)
  algebraic multigrid V-cycle (pyamg), to a relative residual ``tol``; for
  symmetric positive definite matrices (Darcy, Poisson). If it does not
  reach ``tol`` within 200 iterations the system is solved directly
  instead, so a sample never fails for the solver's sake;
* ``direct``: scipy's SuperLU with the minimum-degree ordering of ``A^T + A``
  (``MMD_AT_PLUS_A``), the right ordering for the structurally symmetric
  five-point matrices here; any matrix, including indefinite Helmholtz ones;
* ``direct-colamd``: ``spsolve`` with scipy's default (COLAMD) ordering, the
  baseline.

Measured on the 421 x 421 Darcy problem (``benchmarks/generate.py``, see
``benchmarks/RESULTS.md``): one process at a time, ``amg`` is the fastest
(1.76x ``direct-colamd`` per sample), then ``direct`` (1.59x); but two AMG
processes side by side share the memory bandwidth badly (the full 1024-sample
set took 676 s against 420 s with ``direct``), and on small grids AMG's set-up
dominates (Poisson at 101: 94 ms against 17 ms). So ``direct`` is the
default and ``amg`` (pyamg, the ``amg`` extra) an option. Smoothed
aggregation, Jacobi smoothing, a geometric nested-dissection ordering for
SuperLU and MKL Pardiso were measured too and were slower.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

METHODS = ("amg", "direct", "direct-colamd")


def solve(A: sp.spmatrix, b: np.ndarray, method: str = "direct", tol: float = 1e-10) -> np.ndarray:
    """Solve ``A x = b`` with ``method`` (see module docstring)."""
    if method == "direct":
        return spla.spsolve(A.tocsc(), b, permc_spec="MMD_AT_PLUS_A")
    if method == "direct-colamd":
        return spla.spsolve(A.tocsc(), b)
    if method == "amg":
        try:
            import pyamg
        except ImportError:
            raise ImportError("solver 'amg' needs pyamg: pip install 'oplab[amg]'") from None

        ml = pyamg.ruge_stuben_solver(A.tocsr(), max_coarse=500)
        x = ml.solve(b, tol=tol, accel="cg", maxiter=200)
        rel = np.linalg.norm(b - A @ x) / max(np.linalg.norm(b), np.finfo(float).tiny)
        if not rel <= tol:
            return spla.spsolve(A.tocsc(), b, permc_spec="MMD_AT_PLUS_A")
        return x
    raise ValueError(f"unknown linear solver {method!r}; expected one of {METHODS}")
