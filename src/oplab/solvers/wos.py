"""Walk-on-spheres: a Monte Carlo estimator of Poisson's equation on the unit square.

For ``-Lap u = f`` in the unit square with ``u = g`` on its boundary, the
solution at ``x`` is an expectation over Brownian paths started at ``x``
(Muller 1956). Walk on spheres samples it without time steps: from ``x_k``
jump to a uniform point on the largest circle around it inside the domain
(radius ``r_k`` = distance to the boundary) until within ``eps`` of the
boundary, then read ``g`` at the nearest boundary point. Each step adds an
unbiased one-sample estimate of the source's contribution in its disk,

    int_B G_r(x_k, y) f(y) dy  ~  pi r_k^2 G_r(x_k, y_k) f(y_k),   y_k uniform in the disk,
    G_r(x, y) = log(r / |x - y|) / (2 pi),

the disk's Green's function. The estimate is unbiased up to the ``eps``
shell (a bias of order ``eps``) and its standard error falls like
``1 / sqrt(walks)``; tests measure both. This is the weak supervision of
WoS-NO (Viswanath et al., "Operator learning using weak supervision from
walk-on-spheres"): many cheap noisy targets instead of few exact ones.
``f`` and ``g`` are given on the node grid and read between nodes by
bilinear interpolation.
"""

from __future__ import annotations

import numpy as np


def _bilinear(field: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """``field`` on the ``n x n`` node grid of the unit square, at points ``(px, py)`` in [0, 1]^2."""
    n = field.shape[0]
    s = np.clip(px, 0.0, 1.0) * (n - 1)
    t = np.clip(py, 0.0, 1.0) * (n - 1)
    i = np.minimum(s.astype(np.int64), n - 2)
    j = np.minimum(t.astype(np.int64), n - 2)
    a, b = s - i, t - j
    return ((1 - a) * (1 - b) * field[i, j] + a * (1 - b) * field[i + 1, j]
            + (1 - a) * b * field[i, j + 1] + a * b * field[i + 1, j + 1])


def walk_on_spheres(points: np.ndarray, f=None, g=None, walks: int = 16, eps: float = 1e-3,
                    rng: np.random.Generator | None = None, max_steps: int = 1000) -> np.ndarray:
    """Estimates of ``u`` at ``points [P, 2]`` (mean of ``walks`` walks each).

    ``f``, ``g``: ``n x n`` node-grid arrays (or callables ``(x, y) -> value``, or None for zero).
    """
    rng = rng or np.random.default_rng()
    fget = (lambda x, y: _bilinear(f, x, y)) if isinstance(f, np.ndarray) else f
    gget = (lambda x, y: _bilinear(g, x, y)) if isinstance(g, np.ndarray) else g
    P = points.shape[0]
    x = np.repeat(points[:, 0], walks).astype(np.float64)
    y = np.repeat(points[:, 1], walks).astype(np.float64)
    total = np.zeros_like(x)
    alive = np.ones(x.shape, dtype=bool)
    for _ in range(max_steps):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        cx, cy = x[idx], y[idx]
        r = np.minimum.reduce([cx, 1 - cx, cy, 1 - cy])
        done = r < eps
        if done.any():
            alive[idx[done]] = False
            keep = ~done
            idx, cx, cy, r = idx[keep], cx[keep], cy[keep], r[keep]
            if idx.size == 0:
                break
        if fget is not None:  # source term: one uniform point in the disk
            rho = r * np.sqrt(rng.random(idx.size))
            phi = 2 * np.pi * rng.random(idx.size)
            green = np.log(r / np.maximum(rho, 1e-300)) / (2 * np.pi)
            total[idx] += np.pi * r**2 * green * fget(cx + rho * np.cos(phi), cy + rho * np.sin(phi))
        theta = 2 * np.pi * rng.random(idx.size)
        x[idx] = cx + r * np.cos(theta)
        y[idx] = cy + r * np.sin(theta)
    if gget is not None:  # boundary data at the nearest boundary point
        bx, by = x.copy(), y.copy()
        d = np.stack([x, 1 - x, y, 1 - y])
        side = d.argmin(axis=0)
        bx[side == 0], bx[side == 1] = 0.0, 1.0
        by[side == 2], by[side == 3] = 0.0, 1.0
        total += gget(bx, by)
    return total.reshape(P, walks).mean(axis=1)


def solve_grid(f: np.ndarray, g: np.ndarray | None = None, walks: int = 16, eps: float = 1e-3,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """WoS estimate of ``u`` on every node of the ``n x n`` grid (boundary nodes = ``g``, or 0)."""
    n = f.shape[0]
    c = np.linspace(0.0, 1.0, n)
    X, Y = np.meshgrid(c[1:-1], c[1:-1], indexing="ij")
    u = np.zeros((n, n)) if g is None else np.array(g, dtype=np.float64)
    inner = walk_on_spheres(np.stack([X.ravel(), Y.ravel()], 1), f, g, walks=walks, eps=eps, rng=rng)
    u[1:-1, 1:-1] = inner.reshape(n - 2, n - 2)
    return u
