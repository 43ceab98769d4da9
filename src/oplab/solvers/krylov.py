"""Krylov subspace recycling for families of linear systems: GCRO-DR and the SKR sorting step.

Sorting Krylov Recycling (SKR; Wang et al. 2024, "Accelerating Data Generation
for Neural Operators via Krylov Subspace Recycling", ICLR) generates a data
set's linear systems ``A_i x_i = b_i`` in an order where neighbours are similar
(:func:`sort_greedy`) and solves them one after another with GCRO-DR, which
carries a ``k``-dimensional subspace ``U`` of approximate eigenvectors from one
system to the next.

GCRO-DR(m, k) (Parks, de Sturler, Mackey, Johnson & Maiti 2006, "Recycling
Krylov subspaces for sequences of linear systems", SIAM J. Sci. Comput. 28,
algorithm 2), in real arithmetic with right preconditioning (the operator is
``A M^-1``; the residual is the true one, ``b - A x``):

* a new system with a recycled ``U``: ``[Q, R] = qr(A U)``, ``C = Q``,
  ``U = U R^-1`` (so ``A U = C``, ``C^T C = I``); ``x += U C^T r``,
  ``r -= C C^T r``;
* the first system: one GMRES(m) cycle, then ``U`` from the ``k`` harmonic
  Ritz vectors of smallest magnitude, ``(H_m + h^2 H_m^-T e_m e_m^T) g = theta g``;
* each cycle: ``m - k`` Arnoldi steps with ``(I - C C^T) A``, giving
  ``A V_j = C B_j + V_{j+1} Hbar_j``; since ``C^T r = 0`` the least-squares
  problem separates: ``y = argmin ||beta e1 - Hbar y||`` (Givens rotations,
  which also give the residual after every step, so a cycle stops as soon as
  the tolerance is met), ``x += V y - U B y``, ``r -= V_{j+1} Hbar y``;
* after each cycle the recycle space is refreshed from the harmonic Ritz
  vectors of the cycle's ``Gbar = [[D, B], [0, Hbar]]`` (``D`` scales ``U`` to
  unit columns): ``Gbar^T Gbar z = theta Gbar^T What^T Vhat z``, the ``k``
  smallest ``|theta|``; ``[Q, R] = qr(Gbar P)``, ``C = What Q``,
  ``U = Vhat P R^-1``.

Complex harmonic Ritz pairs are replaced by their real and imaginary parts
(which span the same real subspace).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

PRECONDITIONERS = ("none", "jacobi", "ilu", "amg")


def preconditioner(A: sp.spmatrix, kind: str = "none", drop_tol: float = 1e-4, fill_factor: float = 10.0):
    """``v -> M^-1 v`` for ``kind`` (none | jacobi | ilu | amg), or None for none."""
    if kind == "none":
        return None
    if kind == "jacobi":
        inv = 1.0 / A.diagonal()
        return lambda v: inv * v
    if kind == "ilu":
        ilu = spla.spilu(A.tocsc(), drop_tol=drop_tol, fill_factor=fill_factor)
        return ilu.solve
    if kind == "amg":
        import pyamg

        ml = pyamg.smoothed_aggregation_solver(A.tocsr(), max_coarse=200)
        return lambda v: ml.solve(v, tol=1e-12, maxiter=1, cycle="V")
    raise ValueError(f"unknown preconditioner {kind!r}; expected one of {PRECONDITIONERS}")


@dataclass
class SolveInfo:
    iterations: int = 0  # operator applications (Arnoldi steps; the recycle space's k products per system aside)
    matvecs: int = 0  # products with A, all included
    residual: float = np.inf  # final relative residual ||b - A x|| / ||b||
    converged: bool = False
    history: list = field(default_factory=list)  # relative residual after each step


class GCRODR:
    """GCRO-DR(m, k) that keeps its recycle space between :meth:`solve` calls.

    >>> solver = GCRODR(m=40, k=10, tol=1e-8)
    >>> for A, b in systems:          # similar systems, in a good order
    ...     x, info = solver.solve(A, b)
    """

    def __init__(self, m: int = 40, k: int = 10, tol: float = 1e-8, maxiter: int = 5000,
                 precond: str = "none", **precond_options):
        if not 0 < k < m:
            raise ValueError(f"GCRO-DR needs 0 < k < m, got k={k}, m={m}")
        if precond not in PRECONDITIONERS:
            raise ValueError(f"unknown preconditioner {precond!r}; expected one of {PRECONDITIONERS}")
        self.m, self.k, self.tol, self.maxiter = m, k, tol, maxiter
        self.precond, self.precond_options = precond, precond_options
        self.U: np.ndarray | None = None  # [n, k]: the recycled subspace (preconditioned variable)

    def reset(self) -> None:
        self.U = None

    def solve(self, A: sp.spmatrix, b: np.ndarray, x0: np.ndarray | None = None) -> tuple[np.ndarray, SolveInfo]:
        A = A.tocsr()
        b = np.asarray(b, dtype=np.float64)
        n = b.shape[0]
        Minv = preconditioner(A, self.precond, **self.precond_options)
        info = SolveInfo()

        def op(v):
            info.matvecs += 1
            return A @ (Minv(v) if Minv is not None else v)

        bnorm = np.linalg.norm(b) or 1.0
        target = self.tol * bnorm
        y = np.zeros(n)  # preconditioned unknown: x = M^-1 y; x0 is taken as an initial x
        if x0 is not None:
            r = b - A @ x0
            info.matvecs += 1
        else:
            r = b.copy()
        base = np.zeros(n) if x0 is None else np.asarray(x0, dtype=np.float64)
        C = U = None
        if self.U is not None and self.U.shape[0] == n:
            Q, R = np.linalg.qr(np.column_stack([op(u) for u in self.U.T]))
            if (np.abs(np.diag(R)) > 1e-12 * np.abs(np.diag(R)).max()).all():
                C, U = Q, self.U @ sla.solve_triangular(R, np.eye(R.shape[0]))  # A U = C, C^T C = I
                coef = C.T @ r
                y += U @ coef
                r -= C @ coef
        while np.linalg.norm(r) > target and info.iterations < self.maxiter:
            if C is None:  # no recycle space yet (first system): a GMRES(m) cycle, which yields one
                y, r, V, Hbar, steps, _ = self._cycle(op, r, y, None, None, self.m, target, info)
                if steps >= self.k:
                    C, U = self._from_gmres(V[: steps + 1], Hbar[: steps + 1, :steps])
                continue
            y, r, V, Hbar, steps, B = self._cycle(op, r, y, C, U, self.m - self.k, target, info)
            if steps == 0:
                break
            C, U = self._refresh(C, U, V[: steps + 1], Hbar[: steps + 1, :steps], B[:, :steps])
        if U is not None:
            self.U = U
        x = base + (Minv(y) if Minv is not None else y)
        info.residual = float(np.linalg.norm(b - A @ x) / bnorm)
        info.matvecs += 1
        info.converged = info.residual <= 1.01 * self.tol  # the recurrence's residual may drift a little
        return x, info

    # one cycle ---------------------------------------------------------------
    def _cycle(self, op, r, y, C, U, steps_max, target, info):
        """``steps_max`` Arnoldi steps on ``(I - C C^T) op`` from ``r`` (fewer once the
        residual estimate meets ``target``); updates ``y`` and ``r``."""
        n = r.shape[0]
        beta = np.linalg.norm(r)
        V = np.zeros((steps_max + 1, n))  # rows are the Arnoldi vectors
        H = np.zeros((steps_max + 1, steps_max))
        B = np.zeros((0 if C is None else C.shape[1], steps_max))
        cs, sn = np.zeros(steps_max), np.zeros(steps_max)
        g = np.zeros(steps_max + 1)
        g[0] = beta
        V[0] = r / beta
        steps = 0
        for j in range(steps_max):
            w = op(V[j])
            # classical Gram-Schmidt against C and V, repeated only when it cancelled most of w
            # ("twice is enough", Kahan-Parlett criterion): orthogonal to working precision at
            # about half the memory traffic of always doing it twice
            for _ in range(2):
                before = np.linalg.norm(w)
                if C is not None:
                    c = w @ C
                    w -= C @ c
                    B[:, j] += c
                h = V[: j + 1] @ w
                w -= h @ V[: j + 1]
                H[: j + 1, j] += h
                if np.linalg.norm(w) > 0.7 * before:
                    break
            H[j + 1, j] = np.linalg.norm(w)
            if H[j + 1, j] > 0:
                V[j + 1] = w / H[j + 1, j]
            # Givens rotations: the residual of the small least-squares problem
            col = H[: j + 2, j].copy()
            for i in range(j):
                col[i], col[i + 1] = cs[i] * col[i] + sn[i] * col[i + 1], -sn[i] * col[i] + cs[i] * col[i + 1]
            rho = np.hypot(col[j], col[j + 1])
            cs[j], sn[j] = (col[j] / rho, col[j + 1] / rho) if rho > 0 else (1.0, 0.0)
            g[j + 1] = -sn[j] * g[j]
            g[j] = cs[j] * g[j]
            steps = j + 1
            info.iterations += 1
            info.history.append(abs(g[j + 1]) * self.tol / target)  # relative residual estimate
            if abs(g[j + 1]) <= target or H[j + 1, j] == 0 or info.iterations >= self.maxiter:
                break
        Hs = H[: steps + 1, :steps]
        coef = np.linalg.lstsq(Hs, np.concatenate([[beta], np.zeros(steps)]), rcond=None)[0]
        y = y + coef @ V[:steps]
        r = r - (Hs @ coef) @ V[: steps + 1]
        if C is not None:
            y = y - U @ (B[:, :steps] @ coef)
        return y, r, V, H, steps, B

    # recycle space -------------------------------------------------------------
    def _smallest(self, vals: np.ndarray, vecs: np.ndarray) -> np.ndarray:
        """Real basis of the eigenvectors of the ``k`` smallest ``|theta|`` (pairs split into Re, Im)."""
        order = np.argsort(np.abs(vals))
        cols, taken = [], 0
        for i in order:
            if taken >= self.k:
                break
            v = vecs[:, i]
            if abs(vals[i].imag) > 1e-14 * max(abs(vals[i]), 1e-300):
                if vals[i].imag < 0:  # use each conjugate pair once, from its + member
                    continue
                cols += [v.real, v.imag]
                taken += 2
            else:
                cols.append(v.real)
                taken += 1
        P, _ = np.linalg.qr(np.column_stack(cols[: self.k]))
        return P

    def _from_gmres(self, V: np.ndarray, Hbar: np.ndarray):
        """``C, U`` from a GMRES cycle ``A V_j = V_{j+1} Hbar``: the harmonic Ritz vectors of smallest
        magnitude, ``(H_j + h^2 H_j^-T e_j e_j^T) g = theta g``, i.e. ``Hbar^T Hbar g = theta H_j^T g``."""
        j = Hbar.shape[1]
        vals, vecs = sla.eig(Hbar.T @ Hbar, Hbar[:j, :j].T)
        P = self._smallest(vals, vecs)
        Q, R = np.linalg.qr(Hbar @ P)
        return V.T @ Q, (V[:j].T @ P) @ sla.solve_triangular(R, np.eye(R.shape[0]))

    def _refresh(self, C, U, V, Hbar, B):
        k, j = U.shape[1], Hbar.shape[1]
        d = 1.0 / np.linalg.norm(U, axis=0)
        Ut = U * d  # unit columns
        G = np.zeros((k + j + 1, k + j))
        G[:k, :k] = np.diag(d)  # A Ut = C diag(d)
        G[:k, k:] = B
        G[k:, k:] = Hbar
        WtV = np.zeros((k + j + 1, k + j))
        WtV[:k, :k] = C.T @ Ut
        WtV[k:, :k] = V @ Ut
        WtV[k:, k:] = np.eye(j + 1, j)
        vals, vecs = sla.eig(G.T @ G, G.T @ WtV)
        vals = np.where(np.isfinite(vals), vals, np.inf)
        P = self._smallest(vals, vecs)
        Q, R = np.linalg.qr(G @ P)
        Rinv = sla.solve_triangular(R, np.eye(R.shape[0]))
        # C = [C, V^T] Q and U = [Ut, V_j^T] P R^-1, without forming the n x (k + j) blocks
        C_new = C @ Q[:k] + V.T @ Q[k:]
        U_new = (Ut @ P[:k] + V[:j].T @ P[k:]) @ Rinv
        return C_new, U_new


def gmres(A: sp.spmatrix, b: np.ndarray, tol: float = 1e-8, restart: int = 40, maxiter: int = 5000,
          precond: str = "none", **precond_options) -> tuple[np.ndarray, SolveInfo]:
    """Restarted GMRES(restart) from scipy with the same preconditioners (the SKR paper's baseline)."""
    A = A.tocsr()
    Minv = preconditioner(A, precond, **precond_options)
    M = None if Minv is None else spla.LinearOperator(A.shape, matvec=Minv)
    info = SolveInfo()

    def count(pr_norm):
        info.iterations += 1
        info.history.append(float(pr_norm))

    x, flag = spla.gmres(A, b, rtol=tol, atol=0.0, restart=restart, maxiter=max(1, maxiter // restart),
                         M=M, callback=count, callback_type="pr_norm")
    info.residual = float(np.linalg.norm(b - A @ x) / (np.linalg.norm(b) or 1.0))
    info.converged = flag == 0
    info.matvecs = info.iterations
    return x, info


def features(fields: np.ndarray, size: int = 16) -> np.ndarray:
    """Sorting features of parameter fields ``[N, C, n, n]``: block means on a ``size x size`` grid."""
    fields = np.asarray(fields, dtype=np.float64)
    N, n = fields.shape[0], fields.shape[-1]
    edges = np.linspace(0, n, min(size, n) + 1).astype(int)
    rows = np.add.reduceat(fields, edges[:-1], axis=2) / np.diff(edges)[None, None, :, None]
    blocks = np.add.reduceat(rows, edges[:-1], axis=3) / np.diff(edges)[None, None, None, :]
    return blocks.reshape(N, -1)


def sort_greedy(feats: np.ndarray) -> list[int]:
    """An order of the rows of ``feats`` in which consecutive rows are close: greedy nearest
    neighbour from the first row (ties to the lower index). Costs ``O(N^2)`` distances."""
    feats = np.asarray(feats, dtype=np.float64)
    N = feats.shape[0]
    if N == 0:
        return []
    sq = (feats**2).sum(1)
    dist = sq[:, None] + sq[None, :] - 2 * feats @ feats.T
    order, left = [0], np.ones(N, bool)
    left[0] = False
    for _ in range(N - 1):
        d = np.where(left, dist[order[-1]], np.inf)
        nxt = int(np.argmin(d))
        order.append(nxt)
        left[nxt] = False
    return order
