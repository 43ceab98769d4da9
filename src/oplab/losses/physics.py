"""Physics residual losses: the problem's own discretisation, applied to a prediction.

A problem that supports them has ``torch_pde(x)`` (elliptic problems on the unit
square) or ``residual(pred, x)`` (its own); :func:`residual_loss` dispatches.

Elliptic problems (Darcy, Poisson, Helmholtz): the five-point flux-form
operator of :mod:`oplab.solvers.fd`, written in torch for a batch,

    r = A u - b   on the interior nodes,

with ``u``'s boundary values replaced by the Dirichlet data ``g`` (so the interior
residual is that of the discrete problem whatever the network says on the
boundary), and per sample

    loss = ||r||^2 / ||b||^2  +  bc_weight * ||u_boundary - g||^2 / ||u_interior||^2

(the second denominator detached): the squared relative residual of the
discretised PDE, LordNet's data-free objective (mean squared residual), made
scale-free so one weight works for every problem and resolution; the second
term makes the network's own boundary values right. On the reference
solver's solution the first term is zero to the solver's round-off.

``norm="preconditioned"`` (the default for training) measures the residual
after one solve with the constant-coefficient Dirichlet Laplacian ``L`` (by
type-I discrete sine transforms, O(n^2 log n)):
``||L^-1 (A u - b)||^2 / ||L^-1 b||^2``. Since ``L^-1 A`` is close to
``a`` times the identity, this is about the squared relative L2 error of
``u`` itself, with a condition number near the coefficient contrast instead
of ``(n^2)^2``: measured on Darcy 17x17, an FNO trained on the plain residual
stalled at relative L2 ~1 (the loss is dominated by the highest frequencies),
the preconditioned one learned the solution. ``norm="residual"`` is the plain
(LordNet) form.

``norm="weak"`` is the weak form of DGNO (Zang & Koutsourelakis 2025): for
compactly supported radial test functions ``phi_j`` (Wendland C2, centres on a
lattice inside the square, support radius 1.5 lattice spacings)

    R_j = int a grad u . grad phi_j + shift u phi_j - f phi_j,

with ``grad u`` by central differences and the integrals by the trapezoidal
rule, so no second derivative of ``u`` is taken; the loss is
``sum_j R_j^2 / sum_j (|int a grad u . grad phi_j + shift u phi_j| + |int f phi_j|)^2``
(denominator detached) plus the boundary term.
"""

from __future__ import annotations

import torch


def elliptic_operator(u: torch.Tensor, a: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """``-div(a grad u) + shift u`` on the interior nodes of ``n x n`` node grids: ``[B, n, n] -> [B, n-2, n-2]``
    (the flux form of :func:`oplab.solvers.fd.diffusion_matrix`: face coefficients are node means)."""
    n = u.shape[-1]
    inv_h2 = float((n - 1) ** 2)
    ax = 0.5 * (a[:, 1:, :] + a[:, :-1, :])  # faces (i+1/2, j)
    ay = 0.5 * (a[:, :, 1:] + a[:, :, :-1])  # faces (i, j+1/2)
    east, west = ax[:, 1:, 1:-1], ax[:, :-1, 1:-1]
    north, south = ay[:, 1:-1, 1:], ay[:, 1:-1, :-1]
    c = u[:, 1:-1, 1:-1]
    out = (east * (c - u[:, 2:, 1:-1]) + west * (c - u[:, :-2, 1:-1])
           + north * (c - u[:, 1:-1, 2:]) + south * (c - u[:, 1:-1, :-2])) * inv_h2
    if shift is not None:
        out = out + shift[:, 1:-1, 1:-1] * c
    return out


def _dst1(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Type-I discrete sine transform along ``dim`` (unnormalised: applying it twice gives ``(m + 1) / 2`` x)."""
    x = x.movedim(dim, -1)
    m = x.shape[-1]
    zero = torch.zeros(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)
    ext = torch.cat([zero, x, zero, -x.flip(-1)], dim=-1)  # odd extension, length 2 (m + 1)
    out = -torch.fft.rfft(ext, dim=-1).imag[..., 1 : m + 1] / 2
    return out.movedim(-1, dim)


def laplacian_solve(r: torch.Tensor) -> torch.Tensor:
    """``L^-1 r`` for the five-point Dirichlet Laplacian ``L = -Lap_h`` on ``[B, m, m]`` interior grids (h = 1/(m+1))."""
    m = r.shape[-1]
    k = torch.arange(1, m + 1, dtype=r.dtype, device=r.device)
    lam1 = 4 * (m + 1) ** 2 * torch.sin(k * torch.pi / (2 * (m + 1))).square()
    lam = lam1[:, None] + lam1[None, :]
    coef = _dst1(_dst1(r, -1), -2) / lam
    return _dst1(_dst1(coef, -1), -2) * (2.0 / (m + 1)) ** 2


def _boundary_mask(n: int, device) -> torch.Tensor:
    m = torch.ones(n, n, dtype=torch.bool, device=device)
    m[1:-1, 1:-1] = False
    return m


def pde_scale(a: torch.Tensor) -> torch.Tensor:
    """Per-sample mean coefficient: ``u ~ L^-1 b / mean(a)``."""
    return a.flatten(1).mean(1)


def elliptic_residual(u: torch.Tensor, pde: dict, bc_weight: float = 1.0, norm: str = "residual") -> torch.Tensor:
    """Per-sample loss (module docstring) of ``u [B, n, n]`` for ``pde = {a, f, g, shift}``
    (``a [B, n, n]``; ``f`` a tensor ``[B, n, n]`` or a number; ``g [n, n]``, ``[B, n, n]`` or None)."""
    B, n = u.shape[0], u.shape[-1]
    a = pde["a"]
    g = pde.get("g")
    g = torch.zeros_like(u) if g is None else torch.as_tensor(g, dtype=u.dtype, device=u.device).expand_as(u)
    mask = _boundary_mask(n, u.device)
    u_bc = torch.where(mask, g, u)
    f = pde.get("f", 0.0)
    f = torch.as_tensor(f, dtype=u.dtype, device=u.device).expand(B, n, n)[:, 1:-1, 1:-1]
    shift = pde.get("shift")
    r = elliptic_operator(u_bc, a, shift) - f
    b = f - elliptic_operator(torch.where(mask, g, torch.zeros_like(u)), a, shift)  # f + boundary data moved across
    pb = laplacian_solve(b)  # a data-only scale of the solution (u = L^-1 b when a = 1)
    if norm == "preconditioned":
        r, b = laplacian_solve(r), pb
    elif norm != "residual":
        raise ValueError(f"unknown residual norm {norm!r}; expected residual or preconditioned")
    loss = r.square().flatten(1).sum(1) / b.square().flatten(1).sum(1).clamp_min(1e-30)
    if bc_weight:
        edge = (u - g)[:, mask].square().mean(1)
        scale = pb.square().flatten(1).mean(1).clamp_min(1e-30) / pde_scale(a).square()
        loss = loss + bc_weight * edge / scale
    return loss


def _wendland(n: int, centres: int, dtype, device):
    """Test functions ``[J, n, n]`` and their gradients ``[2, J, n, n]`` on the node grid, trapezoid-weighted."""
    c = torch.linspace(0, 1, n, dtype=dtype, device=device)
    X, Y = torch.meshgrid(c, c, indexing="ij")
    radius = 1.5 / (centres + 2)  # 1.5 lattice spacings, and every support inside the square
    pos = torch.linspace(radius, 1 - radius, centres, dtype=dtype, device=device)
    cx, cy = torch.meshgrid(pos, pos, indexing="ij")
    dx = X[None] - cx.reshape(-1, 1, 1)
    dy = Y[None] - cy.reshape(-1, 1, 1)
    r = torch.sqrt(dx.square() + dy.square())
    q = (r / radius).clamp(max=1.0)
    phi = (1 - q) ** 4 * (4 * q + 1)
    dphi_dr = -20 * q * (1 - q) ** 3 / radius  # d/dr of the Wendland C2 function; 0 at r = 0
    safe = torch.where(r > 0, r, torch.ones_like(r))
    grad = torch.stack([dphi_dr * dx / safe, dphi_dr * dy / safe])
    w = torch.full((n,), 1.0 / (n - 1), dtype=dtype, device=device)
    w[0] = w[-1] = 0.5 / (n - 1)
    W = w[:, None] * w[None, :]
    return phi * W, grad * W


_WENDLAND_CACHE: dict = {}


def weak_residual(u: torch.Tensor, pde: dict, centres: int = 12, bc_weight: float = 1.0) -> torch.Tensor:
    """Per-sample weak-form (DGNO) loss of ``u [B, n, n]`` (module docstring)."""
    B, n = u.shape[0], u.shape[-1]
    key = (n, centres, u.dtype, str(u.device))
    if key not in _WENDLAND_CACHE:
        _WENDLAND_CACHE.clear()
        _WENDLAND_CACHE[key] = _wendland(n, centres, u.dtype, u.device)
    phi, gphi = _WENDLAND_CACHE[key]
    a = pde["a"]
    g = pde.get("g")
    g = torch.zeros_like(u) if g is None else torch.as_tensor(g, dtype=u.dtype, device=u.device).expand_as(u)
    mask = _boundary_mask(n, u.device)
    u_bc = torch.where(mask, g, u)
    h = 1.0 / (n - 1)
    ux, uy = torch.gradient(u_bc, spacing=h, dim=(1, 2), edge_order=2)
    f = torch.as_tensor(pde.get("f", 0.0), dtype=u.dtype, device=u.device).expand(B, n, n)
    stiff = torch.einsum("bxy,jxy->bj", a * ux, gphi[0]) + torch.einsum("bxy,jxy->bj", a * uy, gphi[1])
    shift = pde.get("shift")
    mass = torch.einsum("bxy,jxy->bj", shift * u_bc, phi) if shift is not None else torch.zeros_like(stiff)
    load = torch.einsum("bxy,jxy->bj", f, phi)
    R = stiff + mass - load
    # scale: the size of the equation's terms per test function (detached), so u = 0 scores 1 when
    # f drives the solution, and the loss stays relative when boundary data drive it (Helmholtz)
    scale = (stiff.abs() + mass.abs() + load.abs()).detach().square().sum(1)
    loss = R.square().sum(1) / scale.clamp_min(1e-30)
    if bc_weight:
        pb = laplacian_solve(f[:, 1:-1, 1:-1])
        edge = (u - g)[:, mask].square().mean(1)
        ref = torch.maximum(pb.square().flatten(1).mean(1) / pde_scale(a).square(), g[:, mask].square().mean(1))
        loss = loss + bc_weight * edge / ref.clamp_min(1e-30)
    return loss


def residual_loss(problem, pred: torch.Tensor, x: torch.Tensor, bc_weight: float = 1.0,
                  norm: str = "residual") -> torch.Tensor:
    """Mean over the batch of ``problem``'s residual loss for predictions ``pred`` of inputs ``x``."""
    from ..errors import ParameterError

    if hasattr(problem, "residual"):
        return problem.residual(pred, x).mean()
    if hasattr(problem, "torch_pde"):
        if pred.shape[1] != 1:
            raise ParameterError(f"{problem.name}: the residual loss takes one output channel, got {pred.shape[1]}")
        if norm == "weak":
            return weak_residual(pred[:, 0], problem.torch_pde(x), bc_weight=bc_weight).mean()
        return elliptic_residual(pred[:, 0], problem.torch_pde(x), bc_weight, norm).mean()
    raise ParameterError(f"problem {problem.name!r} has no physics residual loss (available for darcy, poisson, "
                         f"helmholtz, navier_stokes, and burgers with trajectory=true)")
