"""Second-order finite differences for elliptic problems on the unit square.

The grid is the node grid ``x_i = i h``, ``h = 1 / (n - 1)``, boundary nodes
included; the unknowns are the ``(n - 2)^2`` interior nodes, ordered with the
first (x) index slowest. The operator is the five-point, flux-form
discretisation

    -div(a grad u)_ij ~ [ a_{i+1/2,j} (u_ij - u_{i+1,j}) + a_{i-1/2,j} (u_ij - u_{i-1,j})
                        + a_{i,j+1/2} (u_ij - u_{i,j+1}) + a_{i,j-1/2} (u_ij - u_{i,j-1}) ] / h^2

with face coefficients the arithmetic mean of the two nodes (the bilinear
interpolation used by the FNO paper's Darcy generator). It is second-order
accurate for smooth ``a`` and ``u``; tests measure the order.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _faces(a: np.ndarray) -> tuple[np.ndarray, ...]:
    """East, west, north, south face coefficients at the interior nodes, each ``[m, m]``."""
    n = a.shape[0]
    ax = 0.5 * (a[1:, :] + a[:-1, :])  # [n-1, n]: face (i+1/2, j)
    ay = 0.5 * (a[:, 1:] + a[:, :-1])  # [n, n-1]: face (i, j+1/2)
    inner = slice(1, n - 1)
    east, west = ax[1 : n - 1, inner], ax[0 : n - 2, inner]
    north, south = ay[inner, 1 : n - 1], ay[inner, 0 : n - 2]
    return east, west, north, south


def diffusion_matrix(a: np.ndarray, shift: np.ndarray | float | None = None) -> sp.csr_matrix:
    """Matrix of ``-div(a grad .) + shift`` on the interior nodes, ``[(n-2)^2, (n-2)^2]``.

    ``a`` and ``shift`` are given at all ``n x n`` nodes (``shift`` may be a
    scalar); a negative shift gives the Helmholtz operator ``-Lap - k^2``.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 3:
        raise ValueError(f"coefficient must be a square grid with >= 3 points per side, got {a.shape}")
    n = a.shape[0]
    m = n - 2
    inv_h2 = float((n - 1) ** 2)
    east, west, north, south = _faces(a)
    diag = (east + west + north + south) * inv_h2
    if shift is not None:
        diag = diag + (np.broadcast_to(shift, a.shape)[1:-1, 1:-1] if np.ndim(shift) else shift)
    up_j = -north * inv_h2
    up_j[:, -1] = 0.0  # no coupling across the end of a row of unknowns
    down_j = -south * inv_h2
    down_j[:, 0] = 0.0
    return sp.diags(
        [
            diag.ravel(),
            (-east * inv_h2)[:-1].ravel(),
            (-west * inv_h2)[1:].ravel(),
            up_j.ravel()[:-1],
            down_j.ravel()[1:],
        ],
        [0, m, -m, 1, -1],
        shape=(m * m, m * m),
        format="csr",
    )


def boundary_rhs(a: np.ndarray, f: np.ndarray, g: np.ndarray | None) -> np.ndarray:
    """Right-hand side on the interior nodes: ``f`` plus the Dirichlet data ``g``
    (values on the boundary nodes of an ``n x n`` array) moved across."""
    rhs = np.array(f[1:-1, 1:-1], dtype=np.float64)
    if g is not None:
        g = np.asarray(g, dtype=np.float64)
        n = g.shape[0]
        gb = g.copy()
        gb[1:-1, 1:-1] = 0.0
        east, west, north, south = _faces(a)
        rhs += (n - 1) ** 2 * (
            east * gb[2:, 1:-1] + west * gb[:-2, 1:-1] + north * gb[1:-1, 2:] + south * gb[1:-1, :-2]
        )
    return rhs.ravel()


def with_boundary(interior: np.ndarray, n: int, g: np.ndarray | None = None) -> np.ndarray:
    """Place interior values ``[(n-2)^2]`` into an ``n x n`` field whose boundary is ``g`` (or 0)."""
    u = np.zeros((n, n)) if g is None else np.array(g, dtype=np.float64)
    u[1:-1, 1:-1] = interior.reshape(n - 2, n - 2)
    return u


def solve_dirichlet(
    a: np.ndarray,
    f: np.ndarray | float,
    g: np.ndarray | None = None,
    shift: np.ndarray | float | None = None,
    method: str = "direct",
    tol: float = 1e-10,
) -> np.ndarray:
    """Solve ``-div(a grad u) + shift u = f`` on the unit square with ``u = g`` on
    the boundary (``g = 0`` when None); all fields on the ``n x n`` node grid.
    Returns ``u`` on all nodes, boundary included."""
    from . import linear

    a = np.asarray(a, dtype=np.float64)
    n = a.shape[0]
    f = np.broadcast_to(np.asarray(f, dtype=np.float64), a.shape)
    A = diffusion_matrix(a, shift)
    rhs = boundary_rhs(a, f, g)
    return with_boundary(linear.solve(A, rhs, method=method, tol=tol), n, g)
