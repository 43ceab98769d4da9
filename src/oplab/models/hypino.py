"""HyPINO: a hypernetwork that writes the weights of a small PINN from a PDE's specification.

After Bischof & Bickel 2025, "HyPINO: Multi-Physics Neural Operators via HyperPINNs and the
Method of Manufactured Solutions" (arXiv:2509.05117; code rbischof/hypino, read for the facts
below, none of it copied). The paper's hypernetwork (a Swin transformer with FiLM conditioning on
the PDE coefficients and attention pooling) reads the PDE's fields on a grid (Dirichlet /
Neumann masks, boundary values, the source with a signed-log transform) and writes the weights of
a target PINN, an MLP ``(x, y) -> u`` on ``[-1, 1]^2`` with Fourier features and tanh; it is
trained on manufactured solutions with a supervised loss on ``u`` plus the PDE residual and the
boundary losses of the generated PINN. At test time it is used zero-shot, in *iterative
refinement* (the residual of the current sum of PINNs, with the boundary mismatch as boundary
data, is fed back to get a correcting PINN, added to the ensemble; the PDE is linear, so the sum
solves the original problem when the correction solves the residual problem), and as the
initialisation of ordinary PINN fine-tuning.

oplab's CPU-sized version, for the family

    -Lap u + k u = f   in Omega,      u = g   on dOmega,      Omega in [-1, 1]^2,

(``k = 0`` Poisson, ``k < 0`` Helmholtz-type, ``k > 0`` screened Poisson):

* :class:`Domain`: square, disk, square with a circular hole, L-shape; analytic inside test and
  boundary sampling (collocation points), and the masks on the encoder's ``grid x grid`` nodes
  (``linspace(-1, 1, grid)``): a node is in the domain if inside or on the boundary, a boundary
  node if it is in the domain and a 4-neighbour is not (or it lies on the square's edge).
* the encoder input (:func:`spec_fields`): 7 channels on the grid: domain mask, boundary mask,
  ``g / s`` on boundary nodes, ``slog(f / s)`` on domain nodes (``slog(v) = sign(v) log(1 + |v|)``,
  the paper's transform), ``k / 10`` on domain nodes, and the node coordinates ``x, y``.
* **scale equivariance (oplab's choice, not in the paper)**: the fields are divided by
  ``s = rms_boundary(g) + rms_domain(f) / 10`` and the generated PINN's last layer is multiplied
  by ``s``; for a linear PDE the solution scales with the data, so the map is exactly
  1-homogeneous by construction and the tiny residuals of the refinement rounds look like training
  data to the encoder (the paper relies on the signed-log of the source only).
* :class:`HyPINO`: a small CNN (stride-2 convolutions 32 -> 4) and an MLP (with ``k``) to a
  latent vector; a linear head writes a *correction* to learned base weights ``theta_0`` of the
  target PINN (the hypernetwork output is ``theta_0 + head(z)``, the head starts near zero).
* the target PINN (:class:`PINN`, and its batched functional twin :func:`pinn_apply`): fixed
  random Fourier features ``[x, y, sin(pi B xy), cos(pi B xy)]`` (the paper: a Fourier mapping of
  the input), ``depth`` tanh layers of ``width``, a linear output. The paper's target net is a
  modulated MLP (gates ``u, v`` as in Wang et al.'s modified MLP) with 32 latent units; here a
  plain MLP keeps the PINN an ``nn.Sequential``-equivalent that ordinary fine-tuning can use.
* training (:func:`train_hypino`): a pool of random manufactured problems (:func:`manufactured`:
  sums of random plane waves ``a sin(w . x + phi)`` and Gaussian bumps, ``f`` and ``g`` exact),
  loss = supervised ``u`` (domain points) + boundary ``u = g`` + ``w_phys`` x PDE residual by
  autograd, each normalised by the problem's scale; Adam with cosine decay; the step with the best
  validation error (a separate pool) is kept.
* :func:`refine` (the refinement rounds), :func:`finetune_pinn` (residual + boundary loss, Adam;
  from a generated PINN or a random one of the same architecture), :func:`save_hypino` /
  :func:`load_hypino` (``weights.safetensors`` + ``config.json``, no pickle).

``oplab hypino-train --out DIR`` (:func:`pretrain`) trains and saves one. Measured
(``benchmarks/hypino.py``, 1200 steps of 32 problems from a pool of 4000, 211 s on one thread of a
loaded 2-core machine; 64 held-out manufactured test problems): median relative L2 error 0.18
zero-shot, 0.13 / 0.11 / 0.11 / 0.11 after refinement rounds 1-4 (lower on 95% of the problems);
on oplab's ``poisson`` (GRF source, unlike training) 0.42 -> 0.33. Fine-tuning the generated PINN
(Adam, lr 1e-3) against a random one of the same architecture: median error 0.046 against 0.59
after 100 steps, 0.024 against 0.13 after 200 (6 test problems).

Not implemented: Neumann data and the paper's other operators (advection, time-dependent
families), the Swin encoder, the modulated target MLP, and the paper's derivative-supervision
loss. HyPINO is a problem-to-PINN map, not a grid operator, so it is not in the model registry.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ParameterError, check_int
DOMAIN_KINDS = ("square", "disk", "hole", "lshape")
K_SCALE = 10.0  # k enters the encoder as k / K_SCALE
F_SCALE = 10.0  # s = rms(g) + rms(f) / F_SCALE


# ---------------------------------------------------------------------------------------------
# domains and problems
# ---------------------------------------------------------------------------------------------


@dataclass
class Domain:
    """A domain in ``[-1, 1]^2``: ``kind`` square | disk (``center``, ``radius``) | hole (the square
    minus the disk ``center``, ``radius``) | lshape (the square minus ``[0, 1]^2``)."""

    kind: str = "square"
    center: tuple = (0.0, 0.0)
    radius: float = 0.5

    def __post_init__(self):
        if self.kind not in DOMAIN_KINDS:
            raise ParameterError(f"Domain: kind must be one of {', '.join(DOMAIN_KINDS)}, got {self.kind!r}")
        cx, cy = (float(c) for c in self.center)
        r = float(self.radius)
        if self.kind in ("disk", "hole") and not (r > 0 and abs(cx) + r <= 1 and abs(cy) + r <= 1):
            raise ParameterError(f"Domain: the circle (center {self.center}, radius {self.radius}) must lie "
                                 "inside [-1, 1]^2 with a positive radius")
        self.center, self.radius = (cx, cy), r

    def inside(self, xy: torch.Tensor) -> torch.Tensor:
        """Boolean ``[...]``: ``xy [..., 2]`` strictly inside the domain."""
        x, y = xy[..., 0], xy[..., 1]
        sq = (x.abs() < 1) & (y.abs() < 1)
        r2 = (x - self.center[0]) ** 2 + (y - self.center[1]) ** 2
        if self.kind == "square":
            return sq
        if self.kind == "disk":
            return r2 < self.radius**2
        if self.kind == "hole":
            return sq & (r2 > self.radius**2)
        return sq & ~((x >= 0) & (y >= 0))

    def sample_interior(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` uniform points inside (rejection sampling), ``[n, 2]``."""
        out, have = [], 0
        while have < n:
            xy = torch.rand(2 * n + 16, 2, generator=gen, dtype=torch.float64) * 2 - 1
            xy = xy[self.inside(xy)]
            out.append(xy)
            have += len(xy)
        return torch.cat(out)[:n].float()

    def sample_boundary(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` points on the boundary, uniform in arc length, ``[n, 2]``."""
        cx, cy, r = self.center[0], self.center[1], self.radius
        t = torch.rand(n, generator=gen, dtype=torch.float64)
        circle = lambda s: torch.stack([cx + r * torch.cos(2 * math.pi * s), cy + r * torch.sin(2 * math.pi * s)], -1)
        if self.kind == "disk":
            return circle(t).float()
        if self.kind == "lshape":
            # perimeter 8: (-1,-1)->(1,-1)->(1,0)->(0,0)->(0,1)->(-1,1)->(-1,-1), lengths 2,1,1,1,1,2
            pts = torch.tensor([[-1, -1], [1, -1], [1, 0], [0, 0], [0, 1], [-1, 1], [-1, -1]], dtype=torch.float64)
            return _polyline(pts, t).float()
        pts = torch.tensor([[-1, -1], [1, -1], [1, 1], [-1, 1], [-1, -1]], dtype=torch.float64)
        if self.kind == "square":
            return _polyline(pts, t).float()
        frac = 2 * math.pi * r / (8 + 2 * math.pi * r)  # the hole's share of the boundary length
        on_circle = t < frac
        xy = _polyline(pts, (t - frac) / (1 - frac))
        xy[on_circle] = circle(t[on_circle] / frac)
        return xy.float()

    def masks(self, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(domain, boundary)`` boolean masks on the ``grid x grid`` nodes ``linspace(-1, 1, grid)``
        (``[i, j]``: ``x = nodes[i]``, ``y = nodes[j]``). Nodes with ``inside`` false but within half a
        spacing of the boundary count as domain (the square's edge nodes, for instance)."""
        xy = grid_nodes(grid)
        h = 2.0 / (grid - 1)
        near = torch.zeros(grid, grid, dtype=torch.bool)
        for dx, dy in ((0.5, 0), (-0.5, 0), (0, 0.5), (0, -0.5), (0.5, 0.5), (-0.5, -0.5), (0.5, -0.5), (-0.5, 0.5)):
            shifted = xy + torch.tensor([dx * h, dy * h])
            near |= self.inside(shifted)
        dom = self.inside(xy) | (near & self._on_closure(xy, h))
        pad = F.pad(dom[None, None].float(), (1, 1, 1, 1), value=0.0)[0, 0]
        all_nb = (pad[:-2, 1:-1] * pad[2:, 1:-1] * pad[1:-1, :-2] * pad[1:-1, 2:]) > 0
        return dom, dom & ~all_nb

    def _on_closure(self, xy: torch.Tensor, h: float) -> torch.Tensor:
        x, y = xy[..., 0], xy[..., 1]
        tol = 0.26 * h
        sq = (x.abs() <= 1 + 1e-9) & (y.abs() <= 1 + 1e-9)
        r = ((x - self.center[0]) ** 2 + (y - self.center[1]) ** 2).sqrt()
        if self.kind == "square":
            return sq
        if self.kind == "disk":
            return r <= self.radius + tol
        if self.kind == "hole":
            return sq & (r >= self.radius - tol)
        return sq & ~((x > tol) & (y > tol))

    def config(self) -> dict:
        return {"kind": self.kind, "center": list(self.center), "radius": self.radius}


def _polyline(pts: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points at fraction ``t`` in ``[0, 1)`` of the arc length of the closed polyline ``pts``."""
    seg = pts[1:] - pts[:-1]
    length = seg.norm(dim=1)
    cum = torch.cat([torch.zeros(1, dtype=pts.dtype), length.cumsum(0)])
    s = t.clamp(0, 1 - 1e-12) * cum[-1]
    i = torch.searchsorted(cum[1:], s, right=True).clamp(max=len(seg) - 1)
    frac = (s - cum[i]) / length[i]
    return pts[i] + frac[:, None] * seg[i]


def grid_nodes(grid: int) -> torch.Tensor:
    """``[grid, grid, 2]`` node coordinates, ``[i, j] = (nodes[i], nodes[j])``, nodes ``linspace(-1, 1, grid)``."""
    t = torch.linspace(-1, 1, grid)
    return torch.stack(torch.meshgrid(t, t, indexing="ij"), -1)


@dataclass
class PDEProblem:
    """``-Lap u + k u = f`` in ``domain``, ``u = g`` on its boundary: ``source(xy)``, ``boundary(xy)``
    and (if known) ``exact(xy)`` map ``[..., 2]`` coordinates to ``[...]`` values."""

    domain: Domain
    k: float
    source: Callable[[torch.Tensor], torch.Tensor]
    boundary: Callable[[torch.Tensor], torch.Tensor]
    exact: Callable[[torch.Tensor], torch.Tensor] | None = None
    info: dict = field(default_factory=dict)


def manufactured(domain: Domain, k: float, gen: torch.Generator, waves: int = 4, bumps: int = 2,
                 max_freq: float = 2 * math.pi) -> PDEProblem:
    """A random manufactured problem: ``u = sum_j a_j sin(w_j . x + phi_j) + sum_i c_i exp(-|x - x_i|^2
    / (2 sigma_i^2))`` (``|w_j| <= max_freq``, ``a_j ~ N(0, 1) / (1 + |w_j| / pi)``, ``c_i ~ N(0, 1)``,
    ``sigma_i`` in ``[0.2, 0.5]``), ``f = -Lap u + k u`` and ``g = u`` in closed form (the method of
    manufactured solutions, as in the paper's training data)."""
    r = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)
    nrm = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    rad, ang = max_freq * r(waves).sqrt(), 2 * math.pi * r(waves)
    w = torch.stack([rad * torch.cos(ang), rad * torch.sin(ang)], -1)
    a = nrm(waves) / (1 + rad / math.pi)
    phi = 2 * math.pi * r(waves)
    nb = int(torch.randint(0, bumps + 1, (1,), generator=gen)) if bumps else 0
    c, x0, sig = nrm(nb), r(nb, 2) * 1.6 - 0.8, 0.2 + 0.3 * r(nb)
    k = float(k)

    def parts(xy):
        xy = xy.double()
        ph = xy @ w.T + phi  # [..., waves]
        wave = (a * torch.sin(ph)).sum(-1)
        lap_wave = -(a * (w**2).sum(-1) * torch.sin(ph)).sum(-1)
        d2 = ((xy[..., None, :] - x0) ** 2).sum(-1)  # [..., nb]
        e = c * torch.exp(-d2 / (2 * sig**2))
        bump = e.sum(-1)
        lap_bump = (e * (d2 / sig**4 - 2 / sig**2)).sum(-1)
        return wave + bump, lap_wave + lap_bump

    exact = lambda xy: parts(xy)[0].float()
    source = lambda xy: (lambda u, lap: (-lap + k * u).float())(*parts(xy))
    return PDEProblem(domain, k, source, exact, exact, info={"kind": "manufactured", "waves": waves, "bumps": nb})


def random_domain(gen: torch.Generator, kinds: Sequence[str] = DOMAIN_KINDS) -> Domain:
    """A random :class:`Domain` of one of ``kinds``."""
    kind = kinds[int(torch.randint(0, len(kinds), (1,), generator=gen))]
    u = torch.rand(3, generator=gen).tolist()
    if kind == "disk":
        r = 0.6 + 0.35 * u[0]
        m = 0.98 - r
        return Domain("disk", ((2 * u[1] - 1) * m, (2 * u[2] - 1) * m), r)
    if kind == "hole":
        r = 0.15 + 0.25 * u[0]
        m = 0.9 - r
        return Domain("hole", ((2 * u[1] - 1) * m, (2 * u[2] - 1) * m), r)
    return Domain(kind)


def random_problem(gen: torch.Generator, k_range: tuple = (-4.0, 10.0), kinds: Sequence[str] = DOMAIN_KINDS,
                   max_freq: float = 2 * math.pi) -> PDEProblem:
    """A random manufactured problem on a random domain: ``k = 0`` (Poisson) with probability 1/3,
    else uniform in ``k_range``."""
    dom = random_domain(gen, kinds)
    u = torch.rand(2, generator=gen).tolist()
    k = 0.0 if u[0] < 1 / 3 else k_range[0] + (k_range[1] - k_range[0]) * u[1]
    return manufactured(dom, k, gen, max_freq=max_freq)


def grid_problem(f_grid, u_grid=None, k: float = 0.0, domain: Domain | None = None) -> PDEProblem:
    """A problem on ``[-1, 1]^2`` from a source given on nodes ``linspace(-1, 1, n)^2`` (``[i, j]`` =
    ``(x_i, y_j)``), zero Dirichlet data; values between nodes are bilinear. ``u_grid``: a reference
    solution on the same nodes (the ``exact`` of the problem, exact at the nodes)."""
    f_grid = torch.as_tensor(f_grid, dtype=torch.float32)
    if f_grid.ndim != 2 or f_grid.shape[0] != f_grid.shape[1] or f_grid.shape[0] < 2:
        raise ParameterError(f"grid_problem: f_grid must be a square [n, n] array, got shape {tuple(f_grid.shape)}")

    def interp(values):
        img = values.T[None, None]  # grid_sample: x along the last axis

        def fn(xy):
            shape = xy.shape[:-1]
            g = xy.reshape(1, -1, 1, 2).float()
            return F.grid_sample(img, g, mode="bilinear", align_corners=True).reshape(shape)

        return fn

    exact = None if u_grid is None else interp(torch.as_tensor(u_grid, dtype=torch.float32))
    return PDEProblem(domain or Domain("square"), float(k), interp(f_grid), lambda xy: torch.zeros(xy.shape[:-1]),
                      exact, info={"kind": "grid"})


# ---------------------------------------------------------------------------------------------
# the target PINN: module and batched functional form
# ---------------------------------------------------------------------------------------------


def _pinn_shapes(features: int, width: int, depth: int) -> list[tuple[str, tuple]]:
    shapes, d_in = [], features
    for i in range(depth):
        shapes += [(f"w{i}", (d_in, width)), (f"b{i}", (width,))]
        d_in = width
    return shapes + [(f"w{depth}", (width, 1)), (f"b{depth}", (1,))]


class FourierFeatures(nn.Module):
    """``[x, y, sin(pi xy B^T), cos(pi xy B^T)]`` with a fixed frequency matrix ``B [n, 2]``."""

    def __init__(self, freqs: torch.Tensor):
        super().__init__()
        self.register_buffer("freqs", freqs.clone().float())

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        return fourier_features(xy, self.freqs)


def fourier_features(xy: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    ph = math.pi * xy @ freqs.T
    return torch.cat([xy, torch.sin(ph), torch.cos(ph)], -1)


class PINN(nn.Sequential):
    """The target network as a plain module: :class:`FourierFeatures`, ``depth`` x (Linear, tanh),
    Linear to one output; ``forward(xy [..., 2]) -> [..., 1]``."""

    def __init__(self, freqs: torch.Tensor, width: int = 32, depth: int = 2):
        layers: list[nn.Module] = [FourierFeatures(freqs)]
        d_in = 2 + 2 * len(freqs)
        for _ in range(depth):
            layers += [nn.Linear(d_in, width), nn.Tanh()]
            d_in = width
        layers.append(nn.Linear(d_in, 1))
        super().__init__(*layers)
        self.width, self.depth = width, depth

    def linears(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]

    @classmethod
    def from_params(cls, params: dict, freqs: torch.Tensor, index: int = 0) -> "PINN":
        """The ``index``-th PINN of a batched parameter dict (:meth:`HyPINO.generate`) as a module."""
        depth = sum(1 for k in params if k.startswith("w")) - 1
        width = params["w0"].shape[-1]
        net = cls(freqs, width, depth)
        with torch.no_grad():
            for i, lin in enumerate(net.linears()):
                lin.weight.copy_(params[f"w{i}"][index].T)
                lin.bias.copy_(params[f"b{i}"][index])
        return net

    def params(self) -> dict:
        """Its weights as a batched parameter dict with batch size 1 (differentiable views)."""
        out = {}
        for i, lin in enumerate(self.linears()):
            out[f"w{i}"], out[f"b{i}"] = lin.weight.T[None], lin.bias[None]
        return out


def pinn_apply(params: dict, xy: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Batched functional PINNs: ``params[wi] [B, d_in, d_out]``, ``params[bi] [B, d_out]``,
    ``xy [B, N, 2]`` -> ``u [B, N]`` (one PINN per batch entry, by ``bmm``)."""
    depth = sum(1 for k in params if k.startswith("w")) - 1
    h = fourier_features(xy, freqs)
    for i in range(depth):
        h = torch.tanh(torch.baddbmm(params[f"b{i}"][:, None, :], h, params[f"w{i}"]))
    return torch.baddbmm(params[f"b{depth}"][:, None, :], h, params[f"w{depth}"])[..., 0]


def ensemble_apply(ensemble: Sequence[dict], xy: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """The sum of the PINNs of ``ensemble`` (a list of batched parameter dicts) at ``xy [B, N, 2]``."""
    return sum(pinn_apply(p, xy, freqs) for p in ensemble)


def laplacian(u_fn: Callable[[torch.Tensor], torch.Tensor], xy: torch.Tensor, create_graph: bool = False):
    """``(u, Lap u)`` at ``xy [..., N, 2]`` by autograd, for a pointwise ``u_fn`` (each output depends
    on its own point only, so gradients of the sum are the pointwise derivatives)."""
    xy = xy.detach().requires_grad_(True)
    with torch.enable_grad():
        u = u_fn(xy)
        (g,) = torch.autograd.grad(u.sum(), xy, create_graph=True)
        lap = 0
        for d in range(2):
            (gd,) = torch.autograd.grad(g[..., d].sum(), xy, create_graph=create_graph, retain_graph=True)
            lap = lap + gd[..., d]
    return u, lap


def pde_residual(u_fn, xy: torch.Tensor, k, f: torch.Tensor, create_graph: bool = False):
    """``(u, -Lap u + k u - f)`` at ``xy [B, N, 2]``; ``k`` a number or ``[B]``."""
    u, lap = laplacian(u_fn, xy, create_graph)
    k = torch.as_tensor(k, dtype=u.dtype)
    k = k[:, None] if k.ndim == 1 else k
    return u, -lap + k * u - f


# ---------------------------------------------------------------------------------------------
# the hypernetwork
# ---------------------------------------------------------------------------------------------


def _slog(v: torch.Tensor) -> torch.Tensor:
    return torch.sign(v) * torch.log1p(v.abs())


def field_scale(f_grid: torch.Tensor, g_grid: torch.Tensor, dom: torch.Tensor, bnd: torch.Tensor) -> torch.Tensor:
    """``s = rms_boundary(g) + rms_domain(f) / 10`` per sample (``[B]``; at least 1e-12)."""
    dom, bnd = dom.float(), bnd.float()
    rg = ((g_grid**2 * bnd).sum((-2, -1)) / bnd.sum((-2, -1)).clamp(min=1)).sqrt()
    rf = ((f_grid**2 * dom).sum((-2, -1)) / dom.sum((-2, -1)).clamp(min=1)).sqrt()
    return (rg + rf / F_SCALE).clamp(min=1e-12)


def spec_fields(dom, bnd, f_grid, g_grid, k) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The encoder's input ``[B, 7, G, G]``, ``k [B]`` and the scale ``s [B]`` from the masks, the
    source and boundary values on the grid (``[B, G, G]``) and ``k`` (module docstring)."""
    dom, bnd = dom.float(), bnd.float()
    k = torch.as_tensor(k, dtype=torch.float32).reshape(-1).expand(len(dom))
    s = field_scale(f_grid, g_grid, dom, bnd)
    sc = s[:, None, None]
    xy = grid_nodes(dom.shape[-1]).permute(2, 0, 1)[None].expand(len(dom), 2, -1, -1)
    x = torch.stack([dom, bnd, bnd * g_grid / sc, dom * _slog(f_grid / sc), dom * k[:, None, None] / K_SCALE], 1)
    return torch.cat([x, xy], 1), k, s


def problem_grids(problems: Sequence[PDEProblem], grid: int) -> dict:
    """Masks, source and boundary values of ``problems`` on the ``grid x grid`` nodes, stacked."""
    xy = grid_nodes(grid)
    dom, bnd, f, g = [], [], [], []
    for p in problems:
        d, b = p.domain.masks(grid)
        dom.append(d), bnd.append(b)
        f.append(p.source(xy) * d), g.append(p.boundary(xy) * b)
    return {"dom": torch.stack(dom), "bnd": torch.stack(bnd), "f": torch.stack(f), "g": torch.stack(g),
            "k": torch.tensor([float(p.k) for p in problems])}


class HyPINO(nn.Module):
    """Hypernetwork: PDE specification on a ``grid x grid`` grid -> weights of a :class:`PINN`.

    ``grid``: encoder resolution (a power of two >= 8); ``width``, ``depth``: the target PINN's hidden
    width and number of hidden layers; ``fourier``, ``fourier_scale``: number and spread (std of the
    Gaussian frequency matrix, drawn from ``seed``) of its Fourier features; ``channels``,
    ``latent``: the encoder's convolution channels and latent size.
    """

    def __init__(self, grid: int = 32, width: int = 32, depth: int = 2, fourier: int = 8, fourier_scale: float = 1.0,
                 channels: int = 16, latent: int = 256, seed: int = 0):
        super().__init__()
        self.grid = check_int("HyPINO", "grid", grid, minimum=8)
        if self.grid & (self.grid - 1):
            raise ParameterError(f"HyPINO: grid must be a power of two >= 8, got {grid}")
        self.width = check_int("HyPINO", "width", width)
        self.depth = check_int("HyPINO", "depth", depth)
        self.fourier = check_int("HyPINO", "fourier", fourier, minimum=0)
        if not (isinstance(fourier_scale, (int, float)) and math.isfinite(fourier_scale) and fourier_scale > 0):
            raise ParameterError(f"HyPINO: fourier_scale must be a positive number, got {fourier_scale!r}")
        self.fourier_scale = float(fourier_scale)
        self.channels = check_int("HyPINO", "channels", channels)
        self.latent = check_int("HyPINO", "latent", latent)
        self.seed = int(seed)
        gen = torch.Generator().manual_seed(self.seed)
        self.register_buffer("freqs", torch.randn(self.fourier, 2, generator=gen) * self.fourier_scale)
        c = self.channels
        convs, c_in, n = [nn.Conv2d(7, c, 3, padding=1), nn.GELU()], c, self.grid
        while n > 4:
            c_out = min(2 * c_in, 4 * c)
            convs += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GELU()]
            c_in, n = c_out, n // 2
        self.encoder = nn.Sequential(*convs)
        self.mlp = nn.Sequential(nn.Linear(c_in * 16 + 1, self.latent), nn.GELU(), nn.Linear(self.latent, self.latent), nn.GELU())
        self.shapes = _pinn_shapes(2 + 2 * self.fourier, self.width, self.depth)
        n_par = sum(math.prod(s) for _, s in self.shapes)
        self.head = nn.Linear(self.latent, n_par)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()
        base = PINN(self.freqs, self.width, self.depth).params()
        self.base = nn.ParameterDict({k: nn.Parameter(v[0].detach().clone()) for k, v in base.items()})

    @property
    def config(self) -> dict:
        return {"grid": self.grid, "width": self.width, "depth": self.depth, "fourier": self.fourier,
                "fourier_scale": self.fourier_scale, "channels": self.channels, "latent": self.latent, "seed": self.seed}

    def forward(self, fields: torch.Tensor, k: torch.Tensor, s: torch.Tensor) -> dict:
        """Batched PINN parameters from the encoder input ``fields [B, 7, G, G]``, ``k [B]`` and the
        data scale ``s [B]`` (:func:`spec_fields`); the last layer carries the factor ``s``."""
        if fields.ndim != 4 or fields.shape[1:] != (7, self.grid, self.grid):
            raise ParameterError(f"HyPINO: fields must be [B, 7, {self.grid}, {self.grid}], got {tuple(fields.shape)}")
        z = self.encoder(fields).flatten(1)
        z = self.mlp(torch.cat([z, k[:, None] / K_SCALE], 1))
        flat = self.head(z)
        out, i = {}, 0
        for name, shape in self.shapes:
            n = math.prod(shape)
            out[name] = self.base[name] + flat[:, i:i + n].reshape(-1, *shape)
            i += n
        last = f"{self.depth}"
        out["w" + last] = out["w" + last] * s[:, None, None]
        out["b" + last] = out["b" + last] * s[:, None]
        return out

    def generate(self, grids: dict) -> dict:
        """Batched PINN parameters for the grid data of :func:`problem_grids` (or :func:`correction_grids`)."""
        fields, k, s = spec_fields(grids["dom"], grids["bnd"], grids["f"], grids["g"], grids["k"])
        return self(fields, k, s)

    def pinns(self, problems: Sequence[PDEProblem]) -> dict:
        """Zero-shot PINN parameters (batched) for ``problems``."""
        return self.generate(problem_grids(problems, self.grid))


# ---------------------------------------------------------------------------------------------
# refinement rounds
# ---------------------------------------------------------------------------------------------


def correction_grids(grids: dict, ensemble: Sequence[dict], freqs: torch.Tensor) -> dict:
    """The residual problem of the current sum of PINNs: source ``f - (-Lap u + k u)`` on the domain
    nodes and boundary data ``g - u`` on the boundary nodes, ``u`` the ensemble's sum (the PDE is
    linear, so ``u + delta`` solves the original problem iff ``delta`` solves this one)."""
    B, G = grids["f"].shape[0], grids["f"].shape[-1]
    xy = grid_nodes(G).reshape(1, -1, 2).expand(B, -1, -1)
    u, res = pde_residual(lambda p: ensemble_apply(ensemble, p, freqs), xy, grids["k"], grids["f"].reshape(B, -1))
    u, res = u.detach().reshape(B, G, G), res.detach().reshape(B, G, G)
    return {**grids, "f": -res * grids["dom"], "g": (grids["g"] - u) * grids["bnd"]}


def refine(model: HyPINO, problems: Sequence[PDEProblem] | dict, rounds: int) -> list[dict]:
    """The zero-shot PINN and ``rounds`` correcting PINNs (the paper's iterative refinement): a list
    of ``rounds + 1`` batched parameter dicts whose running sums are the solutions after each round.
    ``problems``: a list of :class:`PDEProblem` or their :func:`problem_grids`; ``model``: anything
    with ``generate(grids)`` and ``freqs``."""
    rounds = check_int("refine", "rounds", rounds, minimum=0)
    grids = problems if isinstance(problems, dict) else problem_grids(problems, model.grid)
    with torch.no_grad():
        ensemble = [{k: v.detach() for k, v in model.generate(grids).items()}]
    for _ in range(rounds):
        corr = correction_grids(grids, ensemble, model.freqs)
        with torch.no_grad():
            ensemble.append({k: v.detach() for k, v in model.generate(corr).items()})
    return ensemble


# ---------------------------------------------------------------------------------------------
# evaluation and training
# ---------------------------------------------------------------------------------------------


def eval_points(problem: PDEProblem, n: int = 64) -> torch.Tensor:
    """The nodes of ``linspace(-1, 1, n)^2`` in the problem's domain (masks of :meth:`Domain.masks`)."""
    dom, _ = problem.domain.masks(n)
    return grid_nodes(n)[dom]


def relative_l2(u_fn: Callable[[torch.Tensor], torch.Tensor], problem: PDEProblem, n: int = 64) -> float:
    """``||u - u_exact|| / ||u_exact||`` on the domain nodes of an ``n x n`` grid."""
    if problem.exact is None:
        raise ParameterError("relative_l2: the problem has no exact/reference solution")
    xy = eval_points(problem, n)
    with torch.no_grad():
        u, ref = u_fn(xy).reshape(-1), problem.exact(xy).reshape(-1)
    return float((u - ref).norm() / ref.norm().clamp(min=1e-30))


def ensemble_errors(model: HyPINO, problems: Sequence[PDEProblem], ensemble: Sequence[dict], n: int = 64) -> list[list[float]]:
    """Relative L2 errors ``[problem][round]`` of the running sums of ``ensemble``."""
    out = []
    for b, p in enumerate(problems):
        errs = []
        for r in range(len(ensemble)):
            part = [{k: v[b:b + 1] for k, v in e.items()} for e in ensemble[:r + 1]]
            errs.append(relative_l2(lambda xy: ensemble_apply(part, xy[None], model.freqs)[0], p, n))
        out.append(errs)
    return out


@dataclass
class _Pool:
    """Pre-drawn problems: encoder grids and fixed collocation sets with exact values."""

    grids: dict
    xy_in: torch.Tensor   # [P, N, 2]
    u_in: torch.Tensor    # [P, N]
    f_in: torch.Tensor    # [P, N]
    xy_bd: torch.Tensor   # [P, M, 2]
    g_bd: torch.Tensor    # [P, M]
    problems: list

    def batch(self, idx: torch.Tensor) -> dict:
        g = {k: v[idx] for k, v in self.grids.items()}
        return {"grids": g, "xy_in": self.xy_in[idx], "u_in": self.u_in[idx], "f_in": self.f_in[idx],
                "xy_bd": self.xy_bd[idx], "g_bd": self.g_bd[idx]}


def make_pool(problems: Sequence[PDEProblem], grid: int, gen: torch.Generator, n_in: int = 256, n_bd: int = 64) -> _Pool:
    """A :class:`_Pool` of ``problems`` (``n_in`` interior and ``n_bd`` boundary points each)."""
    grids = problem_grids(problems, grid)
    xi = torch.stack([p.domain.sample_interior(n_in, gen) for p in problems])
    xb = torch.stack([p.domain.sample_boundary(n_bd, gen) for p in problems])
    ui = torch.stack([p.exact(x) for p, x in zip(problems, xi)])
    fi = torch.stack([p.source(x) for p, x in zip(problems, xi)])
    gb = torch.stack([p.boundary(x) for p, x in zip(problems, xb)])
    return _Pool(grids, xi, ui, fi, xb, gb, list(problems))


def hypino_loss(model: HyPINO, batch: dict, w_phys: float = 0.1, w_bnd: float = 1.0,
                n_phys: int | None = 128) -> tuple[torch.Tensor, dict]:
    """Supervised ``u`` + ``w_bnd`` boundary + ``w_phys`` residual loss of the generated PINNs, each
    term divided per problem by its scale (``s^2``; the residual by ``(s F_SCALE)^2``); the residual
    (second derivatives, the costly part) at the first ``n_phys`` interior points only (None: all)."""
    grids = batch["grids"]
    fields, k, s = spec_fields(grids["dom"], grids["bnd"], grids["f"], grids["g"], grids["k"])
    params = model(fields, k, s)
    u_fn = lambda xy: pinn_apply(params, xy, model.freqs)
    u = u_fn(batch["xy_in"])
    phys = torch.zeros(())
    if w_phys > 0:
        sl = slice(None, n_phys)
        _, res = pde_residual(u_fn, batch["xy_in"][:, sl], k, batch["f_in"][:, sl], create_graph=True)
        phys = ((res / (s[:, None] * F_SCALE)) ** 2).mean()
    sup = (((u - batch["u_in"]) / s[:, None]) ** 2).mean()
    bnd = (((u_fn(batch["xy_bd"]) - batch["g_bd"]) / s[:, None]) ** 2).mean()
    loss = sup + w_bnd * bnd + w_phys * phys
    return loss, {"sup": float(sup.detach()), "bnd": float(bnd.detach()), "phys": float(phys.detach())}


def pool_error(model: HyPINO, pool: _Pool) -> float:
    """Mean relative L2 error of the zero-shot PINNs at the pool's interior points."""
    with torch.no_grad():
        params = model.generate(pool.grids)
        u = pinn_apply(params, pool.xy_in, model.freqs)
    return float(((u - pool.u_in).norm(dim=1) / pool.u_in.norm(dim=1).clamp(min=1e-30)).mean())


def train_hypino(model: HyPINO, train: _Pool, val: _Pool | None = None, steps: int = 1000, batch: int = 32,
                 lr: float = 1e-3, w_phys: float = 0.1, w_bnd: float = 1.0, seed: int = 0, eval_every: int = 100,
                 n_phys: int | None = 128, time_budget: float | None = None,
                 log: Callable[[str], None] | None = None) -> dict:
    """Train ``model`` on the pool ``train`` (Adam, cosine decay to ``lr / 20`` over ``steps`` or
    ``time_budget`` seconds, whichever ends first; the gradient norm clipped at 1); with ``val`` the
    weights of the evaluation with the lowest validation error (:func:`pool_error`) are restored.
    Returns ``{"history": losses, "val": [(step, error)], "best_step", "seconds"}``."""
    steps = check_int("train_hypino", "steps", steps)
    batch = check_int("train_hypino", "batch", batch)
    eval_every = check_int("train_hypino", "eval_every", eval_every)
    if not (lr > 0 and w_phys >= 0 and w_bnd >= 0):
        raise ParameterError("train_hypino: lr must be positive and w_phys, w_bnd non-negative")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(train.problems)
    history, val_hist, best = [], [], (math.inf, 0, None)
    t0 = time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (min(batch, n),), generator=gen)
        loss, parts = hypino_loss(model, train.batch(idx), w_phys, w_bnd, n_phys)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        # cosine decay to lr / 20 over the steps, or over the time budget if that runs out first
        done = step / steps
        if time_budget is not None:
            done = max(done, (time.perf_counter() - t0) / time_budget)
        for group in opt.param_groups:
            group["lr"] = lr / 20 + (lr - lr / 20) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        history.append(float(loss.detach()))
        over = time_budget is not None and time.perf_counter() - t0 > time_budget
        if val is not None and (step % eval_every == 0 or step == steps or over):
            err = pool_error(model, val)
            val_hist.append((step, err))
            if err < best[0]:
                best = (err, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
            if log:
                log(f"step {step}: loss {sum(history[-eval_every:]) / len(history[-eval_every:]):.4g} "
                    f"(sup {parts['sup']:.3g} bnd {parts['bnd']:.3g} phys {parts['phys']:.3g}) val {err:.4f}")
        if over:
            break
    if best[2] is not None:
        model.load_state_dict(best[2])
    model.eval()
    return {"history": history, "val": val_hist, "best_step": best[1], "seconds": time.perf_counter() - t0}


def pretrain(steps: int = 1500, n_train: int = 4000, n_val: int = 64, seed: int = 0, batch: int = 32,
             lr: float = 1e-3, w_phys: float = 0.1, time_budget: float | None = None, out: str | Path | None = None,
             log: Callable[[str], None] | None = None, **model_kw) -> tuple[HyPINO, dict]:
    """A :class:`HyPINO` (``model_kw``) trained on ``n_train`` random manufactured problems
    (:func:`random_problem`, generator seed ``seed``), the checkpoint chosen on ``n_val`` others
    (seed ``seed + 1``); saved to ``out`` (:func:`save_hypino`) when given. Returns the model and
    :func:`train_hypino`'s record (plus ``"val_error"``)."""
    n_train = check_int("pretrain", "n_train", n_train)
    n_val = check_int("pretrain", "n_val", n_val)
    check_int("train_hypino", "steps", steps)  # before the pools are drawn
    check_int("train_hypino", "batch", batch)
    torch.manual_seed(seed)
    model = HyPINO(**model_kw)
    g_train, g_val = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    train = make_pool([random_problem(g_train) for _ in range(n_train)], model.grid, g_train)
    val = make_pool([random_problem(g_val) for _ in range(n_val)], model.grid, g_val)
    rec = train_hypino(model, train, val, steps=steps, batch=batch, lr=lr, w_phys=w_phys, seed=seed,
                       time_budget=time_budget, log=log)
    rec["val_error"] = min(e for _, e in rec["val"])
    if out is not None:
        save_hypino(model, out, info={"steps": len(rec["history"]), "best_step": rec["best_step"], "n_train": n_train,
                                      "n_val": n_val, "seed": seed, "lr": lr, "w_phys": w_phys,
                                      "val_error": rec["val_error"], "seconds": round(rec["seconds"], 1)})
    return model, rec


# ---------------------------------------------------------------------------------------------
# fine-tuning a single PINN
# ---------------------------------------------------------------------------------------------


def finetune_pinn(pinn: PINN, problem: PDEProblem, steps: int = 500, lr: float = 1e-3, n_in: int = 1024,
                  n_bd: int = 256, w_bnd: float = 10.0, seed: int = 0, eval_at: Sequence[int] = (),
                  n_eval: int = 64) -> tuple[PINN, list[tuple[int, float]]]:
    """Ordinary PINN training of ``pinn`` (in place) on ``problem``: Adam on ``mean(res^2) / S^2 +
    w_bnd mean((u - g)^2) / s^2`` at fixed random collocation points (``S = rms(f) + s``, ``s`` the
    data scale at those points). Returns the net and ``[(step, relative L2 error)]`` at the steps in
    ``eval_at`` (0 = before training; needs ``problem.exact``)."""
    steps = check_int("finetune_pinn", "steps", steps, minimum=0)
    if not lr > 0:
        raise ParameterError(f"finetune_pinn: lr must be positive, got {lr!r}")
    gen = torch.Generator().manual_seed(seed)
    xi = problem.domain.sample_interior(n_in, gen)
    xb = problem.domain.sample_boundary(n_bd, gen)
    fi, gb = problem.source(xi).detach(), problem.boundary(xb).detach()
    s = float(gb.pow(2).mean().sqrt() + fi.pow(2).mean().sqrt() / F_SCALE) or 1.0
    S = float(fi.pow(2).mean().sqrt()) + s
    opt = torch.optim.Adam(pinn.parameters(), lr=lr)
    u_fn = lambda xy: pinn(xy)[..., 0]
    want, hist = set(int(e) for e in eval_at), []
    if 0 in want:
        hist.append((0, relative_l2(u_fn, problem, n_eval)))
    for step in range(1, steps + 1):
        _, res = pde_residual(u_fn, xi, problem.k, fi, create_graph=True)
        loss = (res / S).pow(2).mean() + w_bnd * ((u_fn(xb) - gb) / s).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in want:
            hist.append((step, relative_l2(u_fn, problem, n_eval)))
    return pinn, hist


# ---------------------------------------------------------------------------------------------
# save / load (safetensors + JSON, never pickle)
# ---------------------------------------------------------------------------------------------


def save_hypino(model: HyPINO, folder: str | Path, info: dict | None = None) -> Path:
    """``folder/weights.safetensors`` and ``folder/config.json`` (the constructor's arguments; ``info``:
    how it was trained, under ``"info"``): :func:`oplab.checkpoint.save_net`."""
    from ..checkpoint import save_net

    return save_net(folder, "hypino", {**model.config, "info": info or {}}, model.state_dict())


def load_hypino(folder: str | Path) -> HyPINO:
    """A :class:`HyPINO` written by :func:`save_hypino` (in eval mode)."""
    from ..checkpoint import load_net

    def build(config: dict) -> HyPINO:
        config.pop("info", None)
        return HyPINO(**config)

    return load_net(folder, "hypino", build, "a HyPINO")


__all__ = ["Domain", "HyPINO", "PDEProblem", "PINN", "correction_grids", "ensemble_apply", "ensemble_errors",
           "finetune_pinn", "grid_problem", "hypino_loss", "laplacian", "load_hypino", "make_pool", "manufactured",
           "pde_residual", "pinn_apply", "pool_error", "pretrain", "problem_grids", "random_domain", "random_problem", "refine",
           "relative_l2", "save_hypino", "train_hypino"]
