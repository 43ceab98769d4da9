"""The Deep Conjugate Direction Method (DCDM) for symmetric positive definite grid systems.

Kaneda, Akar, Chen, Kim & Teran 2023, "A deep conjugate direction method for
iteratively solving linear systems", ICML. ``A x = b`` with ``A`` SPD on the
``m x m`` interior grid of an ``n x n`` node grid (``m = n - 2``, unknowns
ordered as in :mod:`oplab.solvers.fd`) is solved by a conjugate-direction
iteration whose search directions come from a network applied to the residual
(the paper's algorithm 1):

* ``d = f_theta(r / ||r||)`` (:class:`DCDMNet`, a fully convolutional net on
  the ``m x m`` grid, so a net trained at one size serves all sizes);
* ``d`` is A-orthogonalised (modified Gram-Schmidt in the A inner product)
  against the last ``window`` directions (``s = 2`` in the paper);
* exact line search: ``alpha = (d . r) / (d . A d)``, ``x += alpha d``,
  ``r -= alpha A d``; each step minimises the error's A-norm along ``d``, so
  the A-norm of the error never grows, whatever the net.

Safeguard (not in the paper): when the conjugated network direction is almost
orthogonal to the residual (``|cos(d, r)| < restart_cos``), the residual itself
is used instead (conjugated in the same way), so an untrained or badly
generalising net cannot stall the iteration; with the identity map as the net
and ``window >= 1`` the method is conjugate gradients in exact arithmetic.

Training (:func:`train_dcdm`) needs no solutions: the inputs are random
combinations ``b = sum_i c_i q_i`` of Ritz vectors ``q_i`` of ``A`` from a
Lanczos run (full reorthogonalisation) started at a random vector, sorted by
Ritz value, with ``c_i ~ N(0, 1)`` multiplied by ``low_weight`` (9, the paper's
choice) for the lower part of the spectrum (``low_fraction`` of the Ritz
vectors), so the data are biased towards the low eigenmodes that the
iteration has to remove. The loss is the paper's scale-invariant one,

    L(theta) = mean_b || b - (b . f) / (f . A f) A f ||^2,   f = f_theta(b), ||b|| = 1,

the squared residual after one exact line search along ``f`` from ``x = 0``;
it is zero exactly when ``f`` is a multiple of ``A^-1 b``.

In oplab (issue 20): ``solver=dcdm`` of darcy and poisson
(:mod:`oplab.problems.elliptic`) solves each sample's system with
:func:`solve_system` and the net of the folder ``dcdm_net`` (:func:`open_net`);
``oplab dcdm-train PROBLEM`` (:func:`train_for_problem`) trains that net from
the matrices of the problem's own inputs (:func:`problem_matrices`; no
solution is computed). Measured (2-core CPU, one thread, tol 1e-10): the
default net (width 16, 3 levels) after ``oplab dcdm-train poisson
--resolution 33 --steps 600`` (39 s) takes 16-18 iterations against CG's
110-111 on Poisson 33^2, 39-44 against 190-209 on piecewise Darcy and 22-38
against 140-177 on log-normal Darcy (5 samples each); the tests' nets (width
12, 2 levels, 300 steps at 17^2): 14 against 54 on Poisson.
A net trained on piecewise-constant Darcy matrices (discontinuous, a
different one per sample) does worse than CG (17^2: 228-379 against 97), and
an undertrained one can need thousands of iterations: the iteration only
guarantees that the error's A-norm never grows. Each iteration runs the net
(about 1 ms at 17^2), so at these sizes DCDM takes 10-30x CG's time on a CPU.

Obstacles: :func:`obstacle_system` writes Dirichlet obstacles (u = 0 at solid nodes) as identity
rows of the full grid, so the same network serves them. Not implemented: the paper's Neumann
solid cells (their matrices drop rows of the grid).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import OplabError, ParameterError, check_int
from .fd import diffusion_matrix


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------


class DCDMNet(nn.Module):
    """A small fully convolutional U-shaped CNN ``[B, 1, m, m] -> [B, 1, m, m]``.

    ``width`` channels, ``levels`` average-pooling levels (each: two 3x3
    convolutions, pooled by 2, and on the way up upsampled back to the skip's
    size and added to it), so the receptive field grows with ``levels`` while
    the net stays independent of the grid size (any ``m >= 1``). Zero padding
    matches the zero Dirichlet boundary. The paper (sec. 3.3) uses the same
    ingredients (3x3 convolutions, skips, pooling/upsampling) with more layers.
    """

    def __init__(self, width: int = 16, levels: int = 3):
        super().__init__()
        self.width = check_int("DCDMNet", "width", width)
        self.levels = check_int("DCDMNet", "levels", levels, minimum=0)
        self.lift = nn.Conv2d(1, width, 3, padding=1)
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
            for _ in range(levels + 1)
        )
        self.up = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(levels))
        self.proj = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        h = self.lift(r)
        skips = []
        for k, block in enumerate(self.down):
            h = h + F.relu(block(h))
            if k < self.levels:
                skips.append(h)
                h = F.avg_pool2d(h, 2, ceil_mode=True)
        for k in reversed(range(self.levels)):
            s = skips[k]
            h = F.interpolate(h, size=s.shape[-2:], mode="bilinear", align_corners=False)
            h = s + F.relu(self.up[k](h))
        return self.proj(h)

    def config(self) -> dict:
        return {"width": self.width, "levels": self.levels}


class IdentityNet(nn.Module):
    """``f(r) = r``: with it DCDM is conjugate gradients (the baseline the paper compares with)."""

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return r


def save_net(net: DCDMNet, folder: str | Path, info: dict | None = None) -> None:
    """Write ``net`` to ``folder/weights.safetensors`` (its config in the header) via
    :func:`oplab.checkpoint.save` (atomic, no pickle); ``info``: more header pairs
    (``dcdm.KEY``: how it was trained, :func:`train_for_problem`)."""
    from ..checkpoint import save

    meta = {f"dcdm.{k}": str(v) for k, v in (info or {}).items()}
    meta.update({f"dcdm.{k}": str(v) for k, v in net.config().items()})
    save(Path(folder), {f"model.{k}": v for k, v in net.state_dict().items()}, metadata=meta)


def load_net(folder: str | Path) -> DCDMNet:
    """The :class:`DCDMNet` saved by :func:`save_net`."""
    from safetensors import safe_open

    from ..checkpoint import load_weights, locate

    folder = locate(Path(folder))
    with safe_open(str(folder / "weights.safetensors"), framework="pt") as fh:
        meta = fh.metadata() or {}
    net = DCDMNet(width=int(meta.get("dcdm.width", 16)), levels=int(meta.get("dcdm.levels", 3)))
    weights = load_weights(folder)
    net.load_state_dict({k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")})
    return net.eval()


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------


def _grid_side(A, owner: str) -> int:
    """``m`` for a square sparse/dense ``A`` of size ``m^2``, else a ParameterError."""
    shape = getattr(A, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != shape[1]:
        raise ParameterError(f"{owner}: A must be a square matrix, got shape {shape}")
    m = int(round(np.sqrt(shape[0])))
    if m < 1 or m * m != shape[0]:
        raise ParameterError(f"{owner}: A must have m^2 rows (an m x m interior grid), got {shape[0]}")
    return m


def _check_tol(owner: str, tol) -> float:
    if not isinstance(tol, (int, float, np.floating)) or isinstance(tol, bool) or not np.isfinite(tol) or tol <= 0:
        raise ParameterError(f"{owner}: tol must be a positive number, got {tol!r}")
    return float(tol)


def _check_rhs(owner: str, A, b) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64)
    if b.ndim != 1 or b.shape[0] != A.shape[0]:
        raise ParameterError(f"{owner}: b must be a vector of length {A.shape[0]}, got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ParameterError(f"{owner}: b must be finite")
    return b


# ---------------------------------------------------------------------------------------------
# solvers
# ---------------------------------------------------------------------------------------------


def cg(A, b, tol: float = 1e-6, max_iter: int | None = None, x0: np.ndarray | None = None):
    """Plain (unpreconditioned) conjugate gradients to ``||b - A x|| <= tol ||b||``.

    Returns ``(x, info)``, ``info``: ``iterations``, ``residuals`` (relative,
    one per iteration, the initial one first), ``converged``, ``seconds``.
    """
    if getattr(A, "ndim", 2) != 2 or A.shape[0] != A.shape[1]:
        raise ParameterError(f"cg: A must be a square matrix, got shape {getattr(A, 'shape', None)}")
    b = _check_rhs("cg", A, b)
    tol = _check_tol("cg", tol)
    max_iter = check_int("cg", "max_iter", max_iter if max_iter is not None else 10 * A.shape[0])
    t0 = time.perf_counter()
    bnorm = np.linalg.norm(b) or 1.0
    x = np.zeros_like(b) if x0 is None else np.array(x0, dtype=np.float64)
    r = b - A @ x
    p = r.copy()
    rr = r @ r
    hist = [np.sqrt(rr) / bnorm]
    it = 0
    while hist[-1] > tol and it < max_iter:
        Ap = A @ p
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
        it += 1
        hist.append(np.sqrt(rr) / bnorm)
    return x, {"iterations": it, "residuals": hist, "converged": bool(hist[-1] <= tol),
               "seconds": time.perf_counter() - t0}


def obstacle_system(a: np.ndarray, solid: np.ndarray, f: np.ndarray | float = 1.0):
    """``-div(a grad u) = f`` on the ``n x n`` node grid with ``u = 0`` on the square's edge and at
    the ``solid`` nodes (obstacles, Dirichlet), as ``(A, b)`` over EVERY interior node, so that DCDM's
    grid network applies unchanged: a solid node's row is ``d u_i = 0`` (``d``: the mean diagonal of
    the fluid rows, keeping the spectrum's scale), and the fluid rows lose their couplings to solid
    nodes (those values are known zeros). ``A`` stays symmetric positive definite. With ``a`` zero
    outside a domain mask and ``solid`` its nodes that are not unknowns, the fluid part is the system
    :func:`oplab.problems.domains.solve_masked` solves (tested). (The paper's solids are Neumann
    walls, whose rows it drops; Dirichlet obstacles are the variant oplab's problems have.)"""
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[0]
    solid_in = np.asarray(solid, dtype=bool)[1:-1, 1:-1].ravel()
    A = sp.csr_matrix(diffusion_matrix(a))
    keep = sp.diags((~solid_in).astype(np.float64))
    A = (keep @ A @ keep).tocsr()
    d = float(A.diagonal()[~solid_in].mean()) if (~solid_in).any() else 1.0
    A = (A + sp.diags(np.where(solid_in, d, 0.0))).tocsr()
    rhs = np.broadcast_to(np.asarray(f, dtype=np.float64), (n, n))[1:-1, 1:-1].ravel().copy()
    rhs[solid_in] = 0.0
    return A, rhs


def _net_direction(net: nn.Module, r: np.ndarray, m: int) -> np.ndarray:
    rn = np.linalg.norm(r)
    inp = torch.from_numpy((r / rn).astype(np.float32)).view(1, 1, m, m)
    with torch.no_grad():
        d = net(inp)
    return d.reshape(-1).double().numpy()


def dcdm_solve(A, b, net: nn.Module, tol: float = 1e-6, max_iter: int | None = None, window: int = 2,
               restart_cos: float = 1e-4, x0: np.ndarray | None = None, keep_directions: bool = False,
               solid: np.ndarray | None = None):
    """Solve SPD ``A x = b`` by DCDM (module docstring) to ``||b - A x|| <= tol ||b||``.

    ``net`` maps ``[1, 1, m, m]`` residuals to directions (a :class:`DCDMNet`, or
    :class:`IdentityNet`); ``window``: how many previous directions each new one
    is A-orthogonalised against (paper: 2). Returns ``(x, info)``, ``info``:
    ``iterations``, ``residuals`` (relative, initial first), ``converged``,
    ``fallbacks`` (steps that used the residual instead of the net, see the
    safeguard), ``seconds``, and with ``keep_directions`` the list
    ``directions`` of the search directions actually used. ``solid``: the unknowns known to be zero
    (boolean, length ``m^2``: the obstacles of :func:`obstacle_system`), where the net's directions
    are set to zero, so that the iteration works on the fluid unknowns only.
    """
    m = _grid_side(A, "dcdm_solve")
    b = _check_rhs("dcdm_solve", A, b)
    tol = _check_tol("dcdm_solve", tol)
    max_iter = check_int("dcdm_solve", "max_iter", max_iter if max_iter is not None else 10 * A.shape[0])
    window = check_int("dcdm_solve", "window", window, minimum=0)
    if not isinstance(net, nn.Module):
        raise ParameterError(f"dcdm_solve: net must be a torch module, got {type(net).__name__}")
    t0 = time.perf_counter()
    bnorm = np.linalg.norm(b) or 1.0
    x = np.zeros_like(b) if x0 is None else np.array(x0, dtype=np.float64)
    r = b - A @ x
    hist = [np.linalg.norm(r) / bnorm]
    prev: list[tuple[np.ndarray, np.ndarray, float]] = []  # (p, A p, p . A p)
    used = [] if keep_directions else None
    fallbacks = 0
    it = 0

    def conjugate(d):
        for p, Ap, pAp in prev:  # modified Gram-Schmidt in the A inner product
            d = d - ((d @ Ap) / pAp) * p
        return d

    fluid = None if solid is None else ~np.asarray(solid, dtype=bool).reshape(-1)
    if fluid is not None and fluid.shape[0] != A.shape[0]:
        raise ParameterError(f"dcdm_solve: solid must have {A.shape[0]} entries, got {fluid.shape[0]}")
    while hist[-1] > tol and it < max_iter:
        d = _net_direction(net, r, m)
        d = conjugate(d if fluid is None else d * fluid)
        dr = d @ r
        rnorm = np.linalg.norm(r)
        if not np.isfinite(dr) or abs(dr) < restart_cos * np.linalg.norm(d) * rnorm:
            d = conjugate(r / rnorm)
            dr = d @ r
            fallbacks += 1
        Ad = A @ d
        dAd = d @ Ad
        alpha = dr / dAd
        x += alpha * d
        r -= alpha * Ad
        if window:
            prev.append((d, Ad, dAd))
            if len(prev) > window:
                prev.pop(0)
        if used is not None:
            used.append(d)
        it += 1
        hist.append(np.linalg.norm(r) / bnorm)
    info = {"iterations": it, "residuals": hist, "converged": bool(hist[-1] <= tol), "fallbacks": fallbacks,
            "seconds": time.perf_counter() - t0}
    if used is not None:
        info["directions"] = used
    return x, info


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


def ritz_vectors(A, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``k`` Ritz pairs of SPD ``A`` from ``k`` Lanczos steps (full reorthogonalisation)
    from a random start; values ascending, vectors ``[N, k]`` orthonormal."""
    N = A.shape[0]
    k = min(k, N)
    Q = np.zeros((N, k))
    alpha, beta = np.zeros(k), np.zeros(k)
    q = rng.standard_normal(N)
    q /= np.linalg.norm(q)
    for j in range(k):
        Q[:, j] = q
        w = A @ q
        alpha[j] = q @ w
        w -= Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
        w -= Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
        beta[j] = np.linalg.norm(w)
        if beta[j] < 1e-12 * abs(alpha[j]):
            k = j + 1
            break
        q = w / beta[j]
    T = np.diag(alpha[:k]) + np.diag(beta[: k - 1], 1) + np.diag(beta[: k - 1], -1)
    vals, S = np.linalg.eigh(T)
    return vals, Q[:, :k] @ S


def _torch_sparse(A) -> torch.Tensor:
    A = sp.coo_matrix(A)
    scale = float(np.abs(A.diagonal()).max()) or 1.0  # the loss is scale-invariant; keep float32 tame
    idx = torch.from_numpy(np.vstack([A.row, A.col]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy((A.data / scale).astype(np.float32)), A.shape,
                                   check_invariants=False).coalesce()


def dcdm_loss(net: nn.Module, A_t: torch.Tensor, r: torch.Tensor, m: int) -> torch.Tensor:
    """The paper's scale-invariant loss ``mean ||r - (r . f)/(f . A f) A f||^2`` for unit rows ``r [B, m^2]``."""
    f = net(r.view(-1, 1, m, m)).reshape(r.shape[0], -1)
    Af = torch.sparse.mm(A_t, f.T).T
    alpha = (r * f).sum(1, keepdim=True) / (f * Af).sum(1, keepdim=True).clamp_min(1e-30)
    return ((r - alpha * Af) ** 2).sum(1).mean()


def train_dcdm(matrices, n: int, *, steps: int = 600, batch: int = 32, lr: float = 1e-3, ritz: int = 200,
               low_fraction: float = 0.5, low_weight: float = 9.0, width: int = 16, levels: int = 3,
               net: DCDMNet | None = None, seed: int = 0, time_limit: float | None = None, log_every: int = 0):
    """Train a :class:`DCDMNet` on SPD ``matrices`` (one, or a list) of an ``n x n`` node grid.

    Unsupervised (module docstring): each step draws one matrix and ``batch``
    unit vectors from its ``ritz`` Lanczos-Ritz vectors (low end weighted by
    ``low_weight``), and takes an Adam step on :func:`dcdm_loss`. Stops after
    ``steps`` steps or ``time_limit`` seconds. Returns ``(net, history)`` with
    the loss per step.
    """
    if sp.issparse(matrices) or isinstance(matrices, np.ndarray):
        matrices = [matrices]
    matrices = list(matrices)
    n = check_int("train_dcdm", "n", n, minimum=3)
    m = n - 2
    if not matrices:
        raise ParameterError("train_dcdm: need at least one matrix")
    for A in matrices:
        if _grid_side(A, "train_dcdm") != m:
            raise ParameterError(f"train_dcdm: every matrix must be {m * m} x {m * m} for n={n}, got {A.shape}")
    steps = check_int("train_dcdm", "steps", steps)
    batch = check_int("train_dcdm", "batch", batch)
    ritz = check_int("train_dcdm", "ritz", ritz, minimum=2)
    if not 0.0 <= low_fraction <= 1.0:
        raise ParameterError(f"train_dcdm: low_fraction must be in [0, 1], got {low_fraction!r}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    data = []
    for A in matrices:
        _, Qk = ritz_vectors(sp.csr_matrix(A), ritz, rng)
        k = Qk.shape[1]
        w = np.ones(k)
        w[: int(round(low_fraction * k))] = low_weight
        data.append((_torch_sparse(A), torch.from_numpy(Qk.T.astype(np.float32)), torch.from_numpy(w).float()))
    net = net if net is not None else DCDMNet(width=width, levels=levels)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    gen = torch.Generator().manual_seed(seed)
    history = []
    t0 = time.perf_counter()
    for step in range(steps):
        A_t, QT, w = data[step % len(data)]
        c = torch.randn(batch, QT.shape[0], generator=gen) * w
        r = c @ QT
        r = r / r.norm(dim=1, keepdim=True)
        loss = dcdm_loss(net, A_t, r, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"dcdm step {step:5d} loss {history[-1]:.4e} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
    return net.eval(), history


# ---------------------------------------------------------------------------------------------
# oplab's linear solver: solver=dcdm of darcy and poisson, and its training from a problem
# ---------------------------------------------------------------------------------------------


def open_net(folder: str | Path, owner: str = "dcdm") -> tuple[DCDMNet, dict]:
    """The net in ``folder`` (written by :func:`save_net`) and its header: ``{"sha256": first 12
    hex digits of the weights file, "width", "levels", and what training recorded}``; a one-line
    ParameterError naming ``folder`` when it is missing, unreadable or not a DCDM net."""
    from safetensors import safe_open

    if not str(folder):
        raise ParameterError(f"{owner}: solver=dcdm needs dcdm_net=DIR, a folder written by `oplab dcdm-train`")
    path = Path(folder) / "weights.safetensors"
    if not Path(folder).is_dir():
        what = "not a folder" if Path(folder).exists() else "no such folder"
        raise ParameterError(f"{owner}: dcdm_net {folder}: {what} (train a net with `oplab dcdm-train`)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if "dcdm.width" not in meta:
            raise ValueError("no dcdm.* header; not written by oplab dcdm-train")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        net = load_net(folder)
    except Exception as exc:  # missing file, not safetensors, foreign weights, bad header
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise ParameterError(f"{owner}: dcdm_net {folder}: not a readable DCDM net ({text})") from None
    info = {k[len("dcdm."):]: v for k, v in meta.items() if k.startswith("dcdm.")}
    return net, {"sha256": digest, **info}


@contextlib.contextmanager
def _one_torch_thread():
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


def solve_system(A, b, net: nn.Module, tol: float, owner: str = "dcdm") -> np.ndarray:
    """:func:`dcdm_solve` as a problem's linear solver: the net runs on one torch thread (so the bits
    of a solution do not depend on the process's thread count: worker counts give identical
    files), and an OplabError when ``tol`` is not reached."""
    with _one_torch_thread():
        x, info = dcdm_solve(A, b, net, tol=tol)
    if not info["converged"]:
        raise OplabError(f"{owner}: DCDM did not reach tol {tol:g} (relative residual {info['residuals'][-1]:.2e} "
                         f"after {info['iterations']} iterations); try solver=direct")
    return x


def problem_matrices(problem, samples: int, seed: int = 0) -> list:
    """The distinct system matrices of samples ``0 .. samples - 1`` (seed ``seed``) of ``problem``
    (an :class:`oplab.problems.elliptic.UnitSquareProblem`): inputs drawn as a data set's are,
    no system solved."""
    from ..problems.base import rng_for

    samples = check_int("dcdm", "samples", samples)
    out, seen = [], set()
    for i in range(samples):
        A = sp.csr_matrix(problem.system(problem.sample_inputs(rng_for(seed, i)))[0])
        A.sort_indices()
        key = hashlib.sha256(A.indptr.tobytes() + A.indices.tobytes() + A.data.tobytes()).hexdigest()
        if key not in seen:  # constant-coefficient Poisson: one matrix for every sample
            seen.add(key)
            out.append(A)
    return out


def train_for_problem(problem, out: str | Path | None = None, *, samples: int = 8, steps: int = 600,
                      seed: int = 0, log_every: int = 0, **train_kwargs) -> dict:
    """Train a DCDM net for ``problem``'s systems (darcy, poisson) at its resolution, unsupervised:
    the matrices of ``samples`` inputs from the problem's own distribution (:func:`problem_matrices`,
    no solution computed), then :func:`train_dcdm` (``steps``, ``seed``, ``train_kwargs``); saved to
    ``out`` (a new or empty folder) with :func:`save_net`, how it was trained in the header.
    Returns ``{"net", "history", "matrices", "seconds", "out"}``."""
    owner = "dcdm-train"
    solver = {p.name: p for p in problem.params_spec}.get("solver")
    if solver is None or "dcdm" not in (solver.choices or ()) or not hasattr(problem, "system"):
        raise ParameterError(f"{owner}: {problem.name} has no DCDM solver (solver=dcdm is for the symmetric "
                             f"positive definite problems darcy and poisson)")
    if out is not None:
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ParameterError(f"{owner}: {out} exists and is not an empty folder; choose a new --out")
    samples = check_int(owner, "samples", samples)
    steps = check_int(owner, "steps", steps)
    t0 = time.perf_counter()
    matrices = problem_matrices(problem, samples, seed)
    net, history = train_dcdm(matrices, problem.resolution, steps=steps, seed=seed, log_every=log_every,
                              **train_kwargs)
    seconds = time.perf_counter() - t0
    if out is not None:
        info = {"problem": problem.name, "resolution": problem.resolution, "samples": samples,
                "matrices": len(matrices), "steps": len(history), "seed": seed,
                "loss": f"{np.mean(history[-10:]):.4g}", "params": json.dumps(problem.params, sort_keys=True)}
        save_net(net, out, info=info)
    return {"net": net, "history": history, "matrices": len(matrices), "seconds": seconds, "out": out}
