"""The classical route for the Darcy inverse problem: the numerical solver with its adjoint.

:class:`DarcySolve` is ``a -> u`` for ``-div(a grad u) = f`` on the unit square with ``u = 0`` on
the boundary, the same five-point flux-form discretisation as the ``darcy`` problem's solver
(:func:`oplab.solvers.fd.diffusion_matrix`, sparse LU from scipy), as a torch function whose
gradient is the discrete adjoint: for an output gradient ``g``, solve ``A^T lam = g`` (``A`` is
symmetric: the same factorisation) and return ``-d/da <lam, A(a) u>`` at fixed ``u``, computed by
differentiating the residual (:func:`oplab.losses.physics.elliptic_operator`). One forward and
one adjoint solve per evaluation, whatever the number of unknowns.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg as spla
import torch

from ..losses.physics import elliptic_operator
from ..solvers.fd import diffusion_matrix


class _Solve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, forcing):
        a64 = a.detach().double().cpu().numpy()
        n = a64.shape[-1]
        u = np.zeros_like(a64)
        factors = []
        rhs = np.full((n - 2) ** 2, float(forcing))
        for b in range(a64.shape[0]):
            lu = spla.splu(diffusion_matrix(a64[b]).tocsc())
            u[b, 1:-1, 1:-1] = lu.solve(rhs).reshape(n - 2, n - 2)
            factors.append(lu)
        u = torch.from_numpy(u).to(a.dtype)
        ctx.factors = factors
        ctx.save_for_backward(a, u)
        return u

    @staticmethod
    def backward(ctx, grad):
        a, u = ctx.saved_tensors
        n = a.shape[-1]
        g = grad.detach().double().cpu().numpy()[:, 1:-1, 1:-1]
        lam = np.stack([lu.solve(g[b].ravel()).reshape(n - 2, n - 2) for b, lu in enumerate(ctx.factors)])
        lam = torch.from_numpy(lam).to(a.dtype)
        with torch.enable_grad():
            a_ = a.detach().requires_grad_(True)
            inner = (lam * elliptic_operator(u.detach(), a_)).sum()
            (da,) = torch.autograd.grad(inner, a_)
        return -da, None


class DarcySolve:
    """``forward(a [B, 1, n, n]) -> u [B, 1, n, n]`` by the numerical solver, differentiable by its
    adjoint (module docstring); ``forcing`` is the constant source ``f``."""

    def __init__(self, forcing: float = 1.0):
        self.forcing = float(forcing)

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        return _Solve.apply(a[:, 0], self.forcing).unsqueeze(1)


__all__ = ["DarcySolve"]
