"""2D incompressible Navier-Stokes on a rectangle with staircase obstacles.

    u_t + (u . grad) u = -grad(p) / rho + nu Lap u + g,      div u = 0,

on ``[0, Lx] x [0, Ly]``, solved by the projection (fractional-step) method of
Chorin (1968, "Numerical solution of the Navier-Stokes equations", Math.
Comp. 22) on the staggered MAC grid of Harlow & Welch (1965, Phys. Fluids 8),
in the form of Kim & Moin (1985, J. Comput. Phys. 59): an explicit momentum
step to a tentative velocity, then a pressure Poisson equation whose solution
makes the velocity discretely divergence-free.

Grid (``nx x ny`` uniform cells of size ``dx = Lx / nx``, ``dy = Ly / ny``;
arrays are indexed ``[x, y]``, x along axis 0):

* pressure ``p[i, j]`` at cell centres ``((i + 1/2) dx, (j + 1/2) dy)``, ``[nx, ny]``;
* ``u[i, j]`` at the vertical faces ``(i dx, (j + 1/2) dy)``, ``[nx + 1, ny]``;
* ``v[i, j]`` at the horizontal faces ``((i + 1/2) dx, j dy)``, ``[nx, ny + 1]``.

Space: the momentum equation in conservative (flux) form with second-order
central differences -- the energy-conserving MAC discretisation (Harlow &
Welch 1965; Morinishi et al. 1998, J. Comput. Phys. 143) -- and the five-point
viscous Laplacian. Tangential boundary values enter through ghost faces
(mirror ``2 U_wall - u`` for no-slip walls, copy for free-slip and outflow).

Time: the three-stage strong-stability-preserving Runge-Kutta method of Shu &
Osher (1988, J. Comput. Phys. 77), each stage a forward-Euler step followed by
a projection; the convex stage combinations keep the velocity divergence-free.
Its stability region reaches ``sqrt(3)`` along the imaginary axis (central
advection) and ``2.51`` along the negative real axis (diffusion); the step is

    dt = cfl / ((|u|max / dx + |v|max / dy) / sqrt(3) + 4 nu (1 / dx^2 + 1 / dy^2) / 2.51),

``cfl = 0.8`` by default, recomputed every step and shortened to hit output
times exactly. The pressure of the last stage is kept as ``p`` (first-order
in time, as in any non-incremental projection).

Pressure: the Poisson equation ``L q = div u*`` (``q = p dt / rho``) has the
five-point matrix over fluid cells, homogeneous Neumann conditions on walls,
inflow, slip faces and obstacle faces, and ``p = 0`` on outflow faces (the
pressure reference). A connected fluid region without an outflow face has a
constant nullspace: its right-hand side is made mean-free and one cell is
pinned to ``q = 0``. The matrix is factorised once per geometry
(``scipy.sparse.linalg.splu``) and reused by every projection, so the
projected velocity is divergence-free to round-off. Without obstacles the same
matrix is diagonalised by fast cosine/sine transforms (Schumann & Sweet 1988,
J. Comput. Phys. 75), several times faster than the triangular solves; both
give the same velocity to round-off (tested).

Boundary conditions, one per side (:class:`BC`): ``wall`` (no-slip, with an
optional tangential wall speed: a moving lid), ``inflow`` (prescribed normal
velocity profile, zero tangential velocity), ``outflow`` (``p = 0``, zero
normal gradient of the velocity; mass leaves as the projection dictates, so
outflow equals inflow to round-off) and ``slip`` (free-slip: no normal flow,
no shear).

Obstacles: a boolean cell mask (``True`` = solid). This is a staircase
immersed boundary: every face touching a solid cell is held at zero velocity
(no-penetration through the staircase faces, no-slip along them), solid cells
carry no pressure unknown, and a fluid face whose tangential neighbour lies
wholly inside the body (both cells solid) sees the mirror value ``-u`` there,
which puts the no-slip wall exactly on the staircase edge (as for the domain
walls). Where only one of the two cells is solid (a staircase corner) the
neighbour value is zero. The geometry is thus resolved to first order (a
curved wall moves by up to half a cell); away from obstacles the scheme is
second order (tests measure it on Poiseuille flow).

Forces on obstacles (:meth:`IncompressibleFlow.forces`): the momentum the
discrete equations pass from the fluid to the body per unit time, link by
link between an updated fluid face and a held solid face: the pressure ``p dy``
(or ``p dx``) of every fluid cell facing a solid cell, the viscous flux
``mu w u_f / h`` times the link's length (``w = 2`` across a mirror link, else
1) and the advective flux through the link (nonzero only at staircase
corners). Because the discretisation is conservative this is exactly the
control-volume momentum balance of any box around the body (at a steady state:
inflow minus outflow of momentum and pressure force, minus wall shear), which
a test checks to round-off. Drag and lift coefficients are ``2 F / (rho U^2 D)``.

All operations are vectorised numpy over the whole grid; float64 throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..errors import ParameterError, check_int

SIDES = ("left", "right", "bottom", "top")
KINDS = ("wall", "inflow", "outflow", "slip")
RK3_IMAG = math.sqrt(3.0)  # SSP-RK3 stability limit along the imaginary axis
RK3_REAL = 2.512  # ... and along the negative real axis
MAX_CELL_RE = 25.0  # default limit on the cell Reynolds number U h / nu


# ------------------------------------------------------------- conditions
@dataclass(frozen=True)
class BC:
    """A boundary condition for one side of the rectangle.

    ``kind``: ``"wall"``, ``"inflow"``, ``"outflow"`` or ``"slip"``.
    ``speed``: for a wall, its tangential speed (along +x on the bottom and top
    sides, along +y on the left and right sides: a moving lid); for an inflow,
    the normal speed *into* the domain -- the uniform speed, or the centreline
    (peak) speed when ``profile="parabolic"``. ``profile`` may also be a
    callable ``f(s) -> speed`` of the coordinate ``s`` along the side, or an
    array of the speeds at the side's face centres.
    """

    kind: str
    speed: float = 0.0
    profile: str | Callable | Sequence[float] = "uniform"

    @classmethod
    def wall(cls, speed: float = 0.0) -> "BC":
        """No-slip wall, moving tangentially at ``speed``."""
        return cls("wall", speed)

    @classmethod
    def inflow(cls, speed: float = 1.0, profile="uniform") -> "BC":
        """Prescribed inflow: ``speed`` into the domain, ``"uniform"`` or ``"parabolic"``
        (``speed`` is then the peak), a callable of the side coordinate, or face values."""
        return cls("inflow", speed, profile)

    @classmethod
    def outflow(cls) -> "BC":
        """Outflow: ``p = 0`` on the side and zero normal gradient of the velocity."""
        return cls("outflow")

    @classmethod
    def slip(cls) -> "BC":
        """Free-slip wall: no normal flow, no shear stress."""
        return cls("slip")


def _as_bc(side: str, value) -> BC:
    """``BC``, a kind name, or ``(kind, speed[, profile])``."""
    if isinstance(value, BC):
        bc = value
    elif isinstance(value, str):
        bc = BC(value)
    elif isinstance(value, (tuple, list)) and 1 <= len(value) <= 3 and isinstance(value[0], str):
        bc = BC(*value)
    else:
        raise ParameterError(f"incompressible: {side} boundary must be a BC, a kind in {list(KINDS)} "
                             f"or (kind, speed), got {value!r}")
    if bc.kind not in KINDS:
        raise ParameterError(f"incompressible: {side} boundary kind must be one of {list(KINDS)}, got {bc.kind!r}")
    if not (isinstance(bc.speed, (int, float)) and not isinstance(bc.speed, bool) and math.isfinite(bc.speed)):
        raise ParameterError(f"incompressible: {side} boundary speed must be a finite number, got {bc.speed!r}")
    return bc


# ------------------------------------------------------------------ masks
def disk_mask(nx: int, ny: int, lx: float, ly: float, center: Sequence[float], radius: float) -> np.ndarray:
    """Cells whose centre lies inside the disk; the disk must lie inside the domain,
    clear of its sides, and cover at least one cell centre."""
    cx, cy = (float(c) for c in center)
    r = float(radius)
    if not (r > 0 and math.isfinite(r)):
        raise ParameterError(f"disk obstacle: radius must be > 0, got {radius!r}")
    if not (r < cx < lx - r and r < cy < ly - r):
        raise ParameterError(f"disk obstacle: center {tuple(center)} with radius {r:g} is not inside the "
                             f"domain [0, {lx:g}] x [0, {ly:g}]")
    x = (np.arange(nx) + 0.5) * (lx / nx)
    y = (np.arange(ny) + 0.5) * (ly / ny)
    mask = (x[:, None] - cx) ** 2 + (y[None, :] - cy) ** 2 < r * r
    if not mask.any():
        raise ParameterError(f"disk obstacle: radius {r:g} covers no cell centre on the {nx}x{ny} grid "
                             f"(cells {lx / nx:.3g} x {ly / ny:.3g})")
    return mask


def box_mask(nx: int, ny: int, lx: float, ly: float, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Cells whose centre lies in ``[x0, x1] x [y0, y1]`` (it may touch the sides, as a
    barrier on the floor does, but not leave the domain)."""
    if not (0 <= x0 < x1 <= lx and 0 <= y0 < y1 <= ly):
        raise ParameterError(f"box obstacle: [{x0:g}, {x1:g}] x [{y0:g}, {y1:g}] is not inside the domain "
                             f"[0, {lx:g}] x [0, {ly:g}]")
    x = (np.arange(nx) + 0.5) * (lx / nx)
    y = (np.arange(ny) + 0.5) * (ly / ny)
    mask = ((x >= x0) & (x <= x1))[:, None] & ((y >= y0) & (y <= y1))[None, :]
    if not mask.any():
        raise ParameterError(f"box obstacle: [{x0:g}, {x1:g}] x [{y0:g}, {y1:g}] covers no cell centre on the "
                             f"{nx}x{ny} grid")
    return mask


# ------------------------------------------------------------------ result
def record_schedule(t: float, t_end: float, record_times, owner: str) -> np.ndarray:
    """The record times of a run from ``t`` to ``t_end`` (default ``[t_end]``), checked to increase
    strictly within ``(t, t_end]``; a one-line ParameterError naming ``owner`` otherwise."""
    times = np.array([t_end] if record_times is None else record_times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0 or np.any(np.diff(times) <= 0) or times[0] <= t \
            or times[-1] > t_end * (1 + 1e-12) or not np.all(np.isfinite(times)):
        raise ParameterError(f"{owner}: record_times must increase strictly within ({t:g}, {t_end:g}], "
                             f"got {record_times!r}")
    return times


def advance_to(flow, target: float, callback=None) -> None:
    """Step ``flow`` (``t``, ``max_dt()``, ``step(dt)``) to exactly ``target``: equal steps no longer
    than the stable one, the last round-off absorbed; ``callback(flow)`` after every step."""
    while flow.t < target - 1e-12 * max(1.0, abs(target)):
        remaining = target - flow.t
        flow.step(remaining / max(1, math.ceil(remaining / flow.max_dt() - 1e-9)))
        if callback is not None:
            callback(flow)
    flow.t = float(target)


def staggered_velocity(flow, u, v, owner: str) -> list[np.ndarray]:
    """``u [nx+1, ny]``, ``v [nx, ny+1]`` on the MAC faces of ``flow`` (``nx, ny, dx, dy``) from arrays
    or callables ``f(x, y)`` at the face centres (None: zero), checked (one-line errors naming ``owner``)."""
    nx, ny, dx, dy = flow.nx, flow.ny, flow.dx, flow.dy
    xu, yu = np.meshgrid(np.arange(nx + 1) * dx, (np.arange(ny) + 0.5) * dy, indexing="ij")
    xv, yv = np.meshgrid((np.arange(nx) + 0.5) * dx, np.arange(ny + 1) * dy, indexing="ij")
    out = []
    for name, f, shape, (X, Y) in (("u", u, (nx + 1, ny), (xu, yu)), ("v", v, (nx, ny + 1), (xv, yv))):
        arr = np.zeros(shape) if f is None else (np.asarray(f(X, Y), dtype=np.float64) * np.ones(shape)
                                                  if callable(f) else np.array(f, dtype=np.float64))
        if arr.shape != shape:
            raise ParameterError(f"{owner}: initial {name} must have the staggered shape {shape}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ParameterError(f"{owner}: initial {name} has non-finite values")
        out.append(arr)
    return out


def check_obstacle_mask(mask, shape: tuple, owner: str) -> np.ndarray:
    """A solid-cell mask ``[nx, ny]`` (bool or 0/1; None: no obstacle) as a fresh bool array, or a
    one-line ParameterError naming ``owner``."""
    if mask is None:
        return np.zeros(shape, dtype=bool)
    m = np.asarray(mask)
    if m.shape != shape:
        raise ParameterError(f"{owner}: obstacle mask must have shape (nx, ny) = {shape}, got {m.shape}")
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.number) or not np.all(np.isin(m, (0, 1))):
            raise ParameterError(f"{owner}: obstacle mask must be boolean (or 0/1), got dtype {m.dtype}")
        m = m.astype(bool)
    if m.all():
        raise ParameterError(f"{owner}: obstacle mask covers every cell; no fluid left")
    return m.copy()


@dataclass
class FlowRecord:
    """Cell-centred snapshots: ``t [T]``, ``u, v, p [T, nx, ny]`` (zero in solid cells)."""

    t: np.ndarray
    u: np.ndarray
    v: np.ndarray
    p: np.ndarray
    steps: int = 0


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value) or value <= 0:
        raise ParameterError(f"incompressible: {name} must be a finite number > 0, got {value!r}")
    return float(value)


# ---------------------------------------------------------- fast Poisson
_TRANSFORMS = {  # (left, right) ends -> (scipy.fft transform, its type, -h^2 / 4 x the eigenvalue of mode k)
    "NN": ("dct", 2, lambda k, n: np.sin(np.pi * k / (2 * n)) ** 2),
    "DD": ("dst", 2, lambda k, n: np.sin(np.pi * (k + 1) / (2 * n)) ** 2),
    "ND": ("dct", 4, lambda k, n: np.sin(np.pi * (2 * k + 1) / (4 * n)) ** 2),
    "DN": ("dst", 4, lambda k, n: np.sin(np.pi * (2 * k + 1) / (4 * n)) ** 2),
}


class _SpectralPoisson:
    """The cell-centred five-point Laplacian of an obstacle-free rectangle, diagonalised
    by discrete cosine/sine transforms: Neumann (``N``, ghost ``= p``) or face-Dirichlet
    (``D``, ghost ``= -p``) ends per axis give DCT-II, DST-II, DCT-IV or DST-IV
    eigenvectors with eigenvalues ``-4 / h^2 sin^2(theta_k / 2)`` (Schumann & Sweet
    1988, J. Comput. Phys. 75). The all-Neumann zero mode is dropped (mean-free ``q``)."""

    def __init__(self, nx: int, ny: int, dx: float, dy: float, x_ends: str, y_ends: str):
        import scipy.fft as sfft

        self._fft = sfft
        self._x, self._y = _TRANSFORMS[x_ends][:2], _TRANSFORMS[y_ends][:2]
        lx = -4.0 / dx**2 * _TRANSFORMS[x_ends][2](np.arange(nx), nx)
        ly = -4.0 / dy**2 * _TRANSFORMS[y_ends][2](np.arange(ny), ny)
        eig = lx[:, None] + ly[None, :]
        singular = eig == 0.0
        eig[singular] = 1.0
        self._inv = np.where(singular, 0.0, 1.0 / eig)

    def _apply(self, x, which, axis, inverse):
        kind, typ = which
        fn = getattr(self._fft, ("i" if inverse else "") + kind)
        return fn(x, type=typ, axis=axis, norm="ortho")

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        hat = self._apply(self._apply(rhs, self._x, 0, False), self._y, 1, False)
        hat *= self._inv
        return self._apply(self._apply(hat, self._y, 1, True), self._x, 0, True)


# ------------------------------------------------------------------ solver
class IncompressibleFlow:
    """A 2D incompressible flow on the MAC grid of ``[0, lx] x [0, ly]`` (see the module docstring).

    Parameters: grid ``nx, ny``; size ``lx, ly``; density ``rho`` and exactly one of
    dynamic viscosity ``mu`` or kinematic ``nu``; ``left, right, bottom, top``: a
    :class:`BC`, a kind name or ``(kind, speed)``; ``mask``: solid cells ``[nx, ny]``
    (or None); ``body_force``: a constant acceleration ``(gx, gy)``; ``cfl``: the
    step's safety factor (<= 1); ``velocity_scale``: the speed for the cell
    Reynolds check (default: the largest boundary speed); ``max_cell_re``: the
    largest accepted ``U max(dx, dy) / nu`` -- the energy-conserving central scheme
    stays bounded beyond it, but the flow is under-resolved and wiggles (the cavity
    at Re = 1000 has cell Reynolds number 15.6 on 64 x 64 and is within 0.018 of
    Ghia's centreline values there); ``dt_max``: an upper bound on the step; ``poisson``: the
    pressure solver, ``"splu"`` (sparse LU, any geometry), ``"dct"`` (fast cosine/sine
    transforms, obstacle-free domains only: the same matrix, diagonalised) or
    ``"auto"`` (``"dct"`` when there is no obstacle).

    State: ``t``, staggered ``u [nx+1, ny]``, ``v [nx, ny+1]`` and the pressure
    ``p [nx, ny]``; start from rest or from :meth:`set_velocity`.
    """

    def __init__(self, nx: int, ny: int, lx: float = 1.0, ly: float = 1.0, *, rho: float = 1.0,
                 mu: float | None = None, nu: float | None = None, left="wall", right="wall",
                 bottom="wall", top="wall", mask: np.ndarray | None = None,
                 body_force: Sequence[float] = (0.0, 0.0), cfl: float = 0.8,
                 velocity_scale: float | None = None, max_cell_re: float = MAX_CELL_RE,
                 dt_max: float = math.inf, poisson: str = "auto"):
        self.nx = check_int("incompressible", "nx", nx, minimum=2)
        self.ny = check_int("incompressible", "ny", ny, minimum=2)
        self.lx, self.ly = _positive("lx", lx), _positive("ly", ly)
        self.rho = _positive("rho", rho)
        if (mu is None) == (nu is None):
            raise ParameterError(f"incompressible: give exactly one of mu (dynamic) or nu (kinematic) viscosity, "
                                 f"got mu={mu!r}, nu={nu!r}")
        self.nu = _positive("nu", nu) if nu is not None else _positive("mu", mu) / self.rho
        self.mu = self.rho * self.nu
        self.cfl = _positive("cfl", cfl)
        if self.cfl > 1:
            raise ParameterError(f"incompressible: cfl must be in (0, 1], got {cfl!r}")
        self.dt_max = float(dt_max) if dt_max == math.inf else _positive("dt_max", dt_max)
        self.dx, self.dy = self.lx / self.nx, self.ly / self.ny
        try:
            ok = len(body_force) == 2 and all(math.isfinite(g) for g in body_force)
        except TypeError:
            ok = False
        if not ok:
            raise ParameterError(f"incompressible: body_force must be two finite numbers (gx, gy), got {body_force!r}")
        self.gx, self.gy = float(body_force[0]), float(body_force[1])

        self.bc = {s: _as_bc(s, b) for s, b in zip(SIDES, (left, right, bottom, top))}
        self.solid = self._check_mask(mask)
        self.fluid = ~self.solid
        self._has_solid = bool(self.solid.any())
        if poisson not in ("auto", "splu", "dct"):
            raise ParameterError(f"incompressible: poisson must be one of ['auto', 'splu', 'dct'], got {poisson!r}")
        if poisson == "dct" and self._has_solid:
            raise ParameterError("incompressible: poisson='dct' needs a domain without obstacles; use 'splu'")
        self.poisson = ("splu" if self._has_solid else "dct") if poisson == "auto" else poisson
        self._faces()
        self._boundary_values()
        self._check_resolution(velocity_scale, max_cell_re)
        self._factorise()
        self._U = np.empty((self.nx + 1, self.ny + 2))
        self._V = np.empty((self.nx + 2, self.ny + 1))

        self.t = 0.0
        self.steps = 0
        self.u = np.zeros((self.nx + 1, self.ny))
        self.v = np.zeros((self.nx, self.ny + 1))
        self.p = np.zeros((self.nx, self.ny))
        self._apply_fixed(self.u, self.v)
        self._project(self.u, self.v)  # an inflow/outflow channel starts from its potential flow
        self.p[:] = 0.0

    # -------------------------------------------------------------- set-up
    def _check_mask(self, mask) -> np.ndarray:
        return check_obstacle_mask(mask, (self.nx, self.ny), "incompressible")

    def _faces(self) -> None:
        """Solid faces, free (pressure-corrected) faces and the mirror counts of the staircase walls."""
        s, nx, ny = self.solid, self.nx, self.ny
        su = np.zeros((nx + 1, ny), dtype=bool)  # faces touching a solid cell: held at zero
        fu = np.zeros((nx + 1, ny), dtype=bool)  # faces inside the body (both cells solid)
        su[1:-1] = s[:-1] | s[1:]
        su[0], su[-1] = s[0], s[-1]
        fu[1:-1] = s[:-1] & s[1:]
        sv = np.zeros((nx, ny + 1), dtype=bool)
        fv = np.zeros((nx, ny + 1), dtype=bool)
        sv[:, 1:-1] = s[:, :-1] | s[:, 1:]
        sv[:, 0], sv[:, -1] = s[:, 0], s[:, -1]
        fv[:, 1:-1] = s[:, :-1] & s[:, 1:]
        self.solid_u, self.solid_v = su, sv
        self._open_u = (~su[1:-1]).astype(float)  # interior faces updated by the momentum equation
        self._open_v = (~sv[:, 1:-1]).astype(float)
        # mirror values: an open face whose tangential neighbour lies inside the body (both
        # cells solid) sees -u there, i.e. an extra -u / h^2 in its Laplacian
        mu_ = np.zeros((nx - 1, ny))
        mu_[:, :-1] += fu[1:-1, 1:]
        mu_[:, 1:] += fu[1:-1, :-1]
        mv_ = np.zeros((nx, ny - 1))
        mv_[:-1] += fv[1:, 1:-1]
        mv_[1:] += fv[:-1, 1:-1]
        self._mirror_u = mu_ * self._open_u
        self._mirror_v = mv_ * self._open_v
        self._links_all = None  # force links of the whole mask, built on first use

    def _side_coordinate(self, side: str) -> np.ndarray:
        if side in ("left", "right"):
            return (np.arange(self.ny) + 0.5) * self.dy
        return (np.arange(self.nx) + 0.5) * self.dx

    def _inflow_profile(self, side: str, bc: BC) -> np.ndarray:
        s = self._side_coordinate(side)
        length = self.ly if side in ("left", "right") else self.lx
        prof = bc.profile
        if isinstance(prof, str):
            if prof == "uniform":
                vals = np.full(s.shape, float(bc.speed))
            elif prof == "parabolic":
                vals = 4.0 * bc.speed * s * (length - s) / length**2
            else:
                raise ParameterError(f"incompressible: {side} inflow profile must be 'uniform', 'parabolic', "
                                     f"a callable or face values, got {prof!r}")
        elif callable(prof):
            vals = np.asarray(prof(s), dtype=np.float64) * np.ones_like(s)
        else:
            vals = np.asarray(prof, dtype=np.float64)
            if vals.shape != s.shape:
                raise ParameterError(f"incompressible: {side} inflow profile must have {s.size} face values, "
                                     f"got shape {vals.shape}")
        if not np.all(np.isfinite(vals)):
            raise ParameterError(f"incompressible: {side} inflow profile has non-finite values")
        return vals

    def _boundary_values(self) -> None:
        """Normal velocities on the fixed sides, tangential ghost rules ``ghost = a * inner + b``."""
        nx, ny = self.nx, self.ny
        self._normal = {}  # side -> normal velocity array (in the +x / +y convention), None for outflow
        self._ghost = {}
        sign = {"left": 1.0, "right": -1.0, "bottom": 1.0, "top": -1.0}
        blocked = {"left": self.solid[0], "right": self.solid[-1], "bottom": self.solid[:, 0], "top": self.solid[:, -1]}
        speeds = [0.0]
        for side, bc in self.bc.items():
            n = ny if side in ("left", "right") else nx
            if bc.kind == "outflow":
                self._normal[side] = None
            elif bc.kind == "inflow":
                vals = self._inflow_profile(side, bc)
                speeds.append(float(np.abs(vals).max()))
                self._normal[side] = np.where(blocked[side], 0.0, sign[side] * vals)
            else:
                self._normal[side] = np.zeros(n)
            if bc.kind == "wall":
                self._ghost[side] = (-1.0, 2.0 * bc.speed)
                speeds.append(abs(bc.speed))
            elif bc.kind == "inflow":
                self._ghost[side] = (-1.0, 0.0)
            else:  # slip, outflow: zero normal gradient of the tangential velocity
                self._ghost[side] = (1.0, 0.0)
        self._bc_speed = max(speeds)
        self._outflow = [s for s, bc in self.bc.items() if bc.kind == "outflow"]
        if not self._outflow:
            flux = self._fixed_flux()
            scale = max(self._bc_speed * max(self.lx, self.ly), 1e-300)
            if abs(flux) > 1e-12 * scale:
                raise ParameterError(f"incompressible: net inflow {flux:.3g} (volume per time) with no outflow "
                                     f"side; add an outflow boundary or balance the inflows")

    def _fixed_flux(self) -> float:
        """Net volume flux into the domain through the fixed (non-outflow) sides."""
        total = 0.0
        for side, vals in self._normal.items():
            if vals is None:
                continue
            h = self.dy if side in ("left", "right") else self.dx
            total += (1.0 if side in ("left", "bottom") else -1.0) * float(vals.sum()) * h
        return total

    def _check_resolution(self, velocity_scale, max_cell_re) -> None:
        max_cell_re = _positive("max_cell_re", max_cell_re)
        scale = self._bc_speed if velocity_scale is None else _positive("velocity_scale", velocity_scale)
        self.velocity_scale = scale
        self._speed_ref = max(scale, self._bc_speed)  # blow-up threshold: 1e3 times this
        h = max(self.dx, self.dy)
        cell_re = scale * h / self.nu
        self.cell_reynolds = cell_re
        if cell_re > max_cell_re:
            need_x = math.ceil(scale * self.lx / (self.nu * max_cell_re))
            need_y = math.ceil(scale * self.ly / (self.nu * max_cell_re))
            raise ParameterError(
                f"incompressible: cell Reynolds number U h / nu = {scale:g} * {h:.3g} / {self.nu:.3g} = {cell_re:.1f} "
                f"exceeds {max_cell_re:g}; the {self.nx}x{self.ny} grid cannot resolve Re = U L / nu = "
                f"{scale * max(self.lx, self.ly) / self.nu:.4g}: use at least {need_x}x{need_y} cells")

    def _factorise(self) -> None:
        """Assemble the pressure Laplacian over fluid cells and factorise it once."""
        nx, ny, dx, dy = self.nx, self.ny, self.dx, self.dy
        fluid = self.fluid
        idx = np.arange(nx * ny).reshape(nx, ny)
        diag = np.zeros((nx, ny))
        rows, cols, vals = [], [], []
        for a, b, link, h2 in ((idx[:-1], idx[1:], fluid[:-1] & fluid[1:], dx * dx),
                               (idx[:, :-1], idx[:, 1:], fluid[:, :-1] & fluid[:, 1:], dy * dy)):
            ia, ib = a[link], b[link]
            rows += [ia, ib]
            cols += [ib, ia]
            vals += [np.full(ia.size, 1.0 / h2)] * 2
            np.subtract.at(diag.ravel(), ia, 1.0 / h2)
            np.subtract.at(diag.ravel(), ib, 1.0 / h2)
        touches = np.zeros((nx, ny), dtype=bool)
        for side in self._outflow:  # p = 0 on the face: ghost p = -p
            cells = {"left": (0, slice(None)), "right": (-1, slice(None)),
                     "bottom": (slice(None), 0), "top": (slice(None), -1)}[side]
            h2 = dx * dx if side in ("left", "right") else dy * dy
            diag[cells] -= 2.0 / h2 * fluid[cells]
            touches[cells] |= fluid[cells]
        # fluid regions that touch no outflow face: constant nullspace -> mean-free rhs, one pinned cell
        labels, count = ndi.label(fluid)
        free = np.setdiff1d(np.arange(1, count + 1), np.unique(labels[touches]))
        remap = np.zeros(count + 1, dtype=np.intp)
        remap[free] = np.arange(1, free.size + 1)
        self._labels = remap[labels].ravel()
        self._label_count = np.bincount(self._labels, minlength=free.size + 1).astype(float)
        self._label_count[0] = 1.0
        _, first = np.unique(self._labels, return_index=True)  # first cell of each label, label order
        self._pins = first[1:].astype(np.intp) if self._labels[first[0]] == 0 else first.astype(np.intp)
        diag[self.solid] = 1.0  # solid cells: q = 0, uncoupled
        d = diag.ravel()
        A = sp.coo_matrix((np.concatenate(vals + [d]), (np.concatenate(rows + [idx.ravel()]),
                                                        np.concatenate(cols + [idx.ravel()]))),
                          shape=(nx * ny, nx * ny)).tocsr()
        if self._pins.size:
            A = A.tolil()
            for k in self._pins:
                A.rows[k], A.data[k] = [k], [1.0]
            A = A.tocsr()
        self._poisson = A
        if self.poisson == "dct":
            kinds = {s: "D" if bc.kind == "outflow" else "N" for s, bc in self.bc.items()}
            self._fast = _SpectralPoisson(nx, ny, dx, dy, kinds["left"] + kinds["right"],
                                          kinds["bottom"] + kinds["top"])
            self._lu = None
        else:
            self._lu = spla.splu(A.tocsc(), permc_spec="MMD_AT_PLUS_A")

    def _solve_poisson(self, rhs: np.ndarray) -> np.ndarray:
        """``q [nx, ny]`` with ``L q = rhs`` (rhs over all cells, flattened, already mean-free
        and pinned where needed); equal, to round-off, whichever solver runs."""
        if self._lu is None:
            q = self._fast.solve(rhs.reshape(self.nx, self.ny))
            if self._pins.size:
                q -= q.flat[self._pins[0]]
            return q
        return self._lu.solve(rhs).reshape(self.nx, self.ny)

    # ------------------------------------------------------------ operators
    def _apply_fixed(self, u: np.ndarray, v: np.ndarray) -> None:
        """Set the fixed normal velocities of the sides and zero the solid faces."""
        for side, arr, idx in (("left", u, 0), ("right", u, -1)):
            if self._normal[side] is not None:
                arr[idx] = self._normal[side]
        for side, idx in (("bottom", 0), ("top", -1)):
            if self._normal[side] is not None:
                v[:, idx] = self._normal[side]
        u[self.solid_u] = 0.0
        v[self.solid_v] = 0.0

    def _extrapolate_outflow(self, u: np.ndarray, v: np.ndarray) -> None:
        """Tentative normal velocity on outflow sides: zero normal gradient."""
        for side in self._outflow:
            if side == "left":
                u[0] = u[1] * ~self.solid_u[0]
            elif side == "right":
                u[-1] = u[-2] * ~self.solid_u[-1]
            elif side == "bottom":
                v[:, 0] = v[:, 1] * ~self.solid_v[:, 0]
            else:
                v[:, -1] = v[:, -2] * ~self.solid_v[:, -1]

    def divergence(self, u: np.ndarray | None = None, v: np.ndarray | None = None) -> np.ndarray:
        """Discrete divergence per cell, ``[nx, ny]``."""
        u = self.u if u is None else u
        v = self.v if v is None else v
        return (u[1:] - u[:-1]) / self.dx + (v[:, 1:] - v[:, :-1]) / self.dy

    def _project(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Make ``(u, v)`` divergence-free in place; returns ``q`` with ``u -= grad q``."""
        rhs = np.diff(u, axis=0)
        rhs *= 1.0 / self.dx
        dv = np.diff(v, axis=1)
        dv *= 1.0 / self.dy
        rhs += dv
        rhs = rhs.ravel()
        if self._pins.size and self._lu is not None:  # (the transforms drop the constant mode themselves)
            mean = np.bincount(self._labels, weights=rhs, minlength=self._label_count.size) / self._label_count
            mean[0] = 0.0
            rhs -= mean[self._labels]
            rhs[self._pins] = 0.0  # the pinned rows (their equations follow from the others)
        q = self._solve_poisson(rhs)
        if self._has_solid:
            q[self.solid] = 0.0
        gx = np.diff(q, axis=0)
        gx *= 1.0 / self.dx
        gy = np.diff(q, axis=1)
        gy *= 1.0 / self.dy
        if self._has_solid:
            gx *= self._open_u
            gy *= self._open_v
        u[1:-1] -= gx
        v[:, 1:-1] -= gy
        for side in self._outflow:  # ghost q = -q: the face gradient is -+2 q / h
            if side == "left":
                u[0] -= 2.0 * q[0] / self.dx * self.fluid[0]
            elif side == "right":
                u[-1] += 2.0 * q[-1] / self.dx * self.fluid[-1]
            elif side == "bottom":
                v[:, 0] -= 2.0 * q[:, 0] / self.dy * self.fluid[:, 0]
            else:
                v[:, -1] += 2.0 * q[:, -1] / self.dy * self.fluid[:, -1]
        return q

    def _padded(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``u`` with ghost rows below/above ``[nx+1, ny+2]``, ``v`` with ghost columns ``[nx+2, ny+1]``
        (two reused buffers)."""
        U, V = self._U, self._V
        U[:, 1:-1] = u
        a, b = self._ghost["bottom"]
        np.multiply(u[:, 0], a, out=U[:, 0])
        U[:, 0] += b
        a, b = self._ghost["top"]
        np.multiply(u[:, -1], a, out=U[:, -1])
        U[:, -1] += b
        V[1:-1] = v
        a, b = self._ghost["left"]
        np.multiply(v[0], a, out=V[0])
        V[0] += b
        a, b = self._ghost["right"]
        np.multiply(v[-1], a, out=V[-1])
        V[-1] += b
        return U, V

    def _rhs(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advection + diffusion + body force at the interior faces: ``[nx-1, ny]``, ``[nx, ny-1]``.

        Fluxes: ``uu``, ``vv`` at cell centres and ``uv`` at cell corners, each the product
        of two-point averages; their differences are the conservative central advection.
        Written with in-place operations: this is the inner loop."""
        cx, cy = self.nu / self.dx**2, self.nu / self.dy**2
        U, V = self._padded(u, v)
        uu = u[1:] + u[:-1]  # 2 x cell-centre u; squared: 4 uu
        uu *= uu
        vv = v[:, 1:] + v[:, :-1]
        vv *= vv
        uv = U[:, 1:] + U[:, :-1]  # 4 uv at the corners [nx+1, ny+1]
        uv *= V[1:] + V[:-1]
        ui, vi = u[1:-1], v[:, 1:-1]
        fu = np.diff(uu, axis=0)
        fu *= -0.25 / self.dx
        t = np.diff(uv[1:-1], axis=1)
        t *= 0.25 / self.dy
        fu -= t
        np.add(u[2:], u[:-2], out=t)
        t -= 2.0 * ui
        t *= cx
        fu += t
        np.add(U[1:-1, 2:], U[1:-1, :-2], out=t)
        t -= 2.0 * ui
        t *= cy
        fu += t
        fv = np.diff(vv, axis=1)
        fv *= -0.25 / self.dy
        t = np.diff(uv[:, 1:-1], axis=0)
        t *= 0.25 / self.dx
        fv -= t
        np.add(V[2:, 1:-1], V[:-2, 1:-1], out=t)
        t -= 2.0 * vi
        t *= cx
        fv += t
        np.add(v[:, 2:], v[:, :-2], out=t)
        t -= 2.0 * vi
        t *= cy
        fv += t
        if self._has_solid:  # mirror values on the staircase walls
            fu -= self._mirror_u * cy * ui
            fv -= self._mirror_v * cx * vi
        if self.gx:
            fu += self.gx
        if self.gy:
            fv += self.gy
        return fu, fv

    def _stage(self, u: np.ndarray, v: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One forward-Euler step and its projection."""
        fu, fv = self._rhs(u, v)
        us, vs = u.copy(), v.copy()
        fu *= dt
        fv *= dt
        us[1:-1] += fu
        vs[:, 1:-1] += fv
        if self._has_solid:
            us[1:-1] *= self._open_u
            vs[:, 1:-1] *= self._open_v
        self._extrapolate_outflow(us, vs)
        q = self._project(us, vs)
        return us, vs, q

    # ------------------------------------------------------------- stepping
    def max_dt(self) -> float:
        """The stable step for the current velocity (see the module docstring)."""
        umax = max(float(np.abs(self.u).max()), self._bc_speed)
        vmax = max(float(np.abs(self.v).max()), self._bc_speed)
        if not (math.isfinite(umax) and math.isfinite(vmax)):
            self._blow_up()
        adv = umax / self.dx + vmax / self.dy
        visc = 4.0 * self.nu * (1.0 / self.dx**2 + 1.0 / self.dy**2)
        return min(self.dt_max, self.cfl / (adv / RK3_IMAG + visc / RK3_REAL))

    def _blow_up(self):
        raise ParameterError(f"incompressible: the velocity blew up (non-finite or > 1e3 x the velocity scale) at "
                             f"t = {self.t:.4g} after {self.steps} steps on the {self.nx}x{self.ny} grid; refine "
                             f"the grid or lower cfl (now {self.cfl:g})")

    def step(self, dt: float | None = None) -> float:
        """Advance one SSP-RK3 step of ``dt`` (default :meth:`max_dt`); returns the step taken."""
        dt = self.max_dt() if dt is None else _positive("dt", dt)
        with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported below, not warned
            return self._rk3(dt)

    def _rk3(self, dt: float) -> float:
        u0, v0 = self.u, self.v
        u1, v1, _ = self._stage(u0, v0, dt)
        u2, v2, _ = self._stage(u1, v1, dt)
        u2 *= 0.25
        u2 += 0.75 * u0
        v2 *= 0.25
        v2 += 0.75 * v0
        u3, v3, q = self._stage(u2, v2, dt)
        u3 *= 2.0 / 3.0
        u3 += u0 / 3.0
        v3 *= 2.0 / 3.0
        v3 += v0 / 3.0
        self.u, self.v = u3, v3
        self.p = q * (self.rho / dt)
        self.t += dt
        self.steps += 1
        limit = 1e3 * self._speed_ref if self._speed_ref > 0 else math.inf
        if not (np.abs(self.u).max() <= limit and np.abs(self.v).max() <= limit):  # also catches NaN
            self._blow_up()
        return dt

    def run(self, t_end: float, record_times: Sequence[float] | None = None,
            callback: Callable[["IncompressibleFlow"], None] | None = None) -> FlowRecord:
        """Integrate to ``t_end`` (absolute time), recording the cell-centred ``u, v, p`` at
        ``record_times`` (increasing, in ``(t, t_end]``; default ``[t_end]``), each hit
        exactly. ``callback(self)`` runs after every step."""
        t_end = float(t_end)
        if not (math.isfinite(t_end) and t_end > self.t):
            raise ParameterError(f"incompressible: t_end must be finite and > the current time {self.t:g}, "
                                 f"got {t_end!r}")
        times = record_schedule(self.t, t_end, record_times, "incompressible")
        out_u, out_v, out_p = [], [], []
        start = self.steps
        for target in times:
            advance_to(self, target, callback)
            uc, vc = self.cell_velocity()
            out_u.append(uc)
            out_v.append(vc)
            out_p.append(np.where(self.solid, 0.0, self.p))
        if self.t < t_end:
            self.run(t_end, callback=callback)
        return FlowRecord(times, np.stack(out_u), np.stack(out_v), np.stack(out_p), self.steps - start)

    def run_to_steady(self, tol: float = 1e-6, t_max: float = 100.0, check_every: float = 0.5,
                      callback=None) -> float:
        """Integrate until ``max |u(t) - u(t - check_every)| / (check_every U) < tol`` (``U``: the
        velocity scale), or ``t_max``; returns the last measured rate of change."""
        scale = max(self._speed_ref, 1e-300)
        rate = math.inf
        while self.t < t_max - 1e-12:
            u0, v0 = self.u.copy(), self.v.copy()
            span = min(check_every, t_max - self.t)
            self.run(self.t + span, callback=callback)
            rate = max(np.abs(self.u - u0).max(), np.abs(self.v - v0).max()) / (span * scale)
            if rate < tol:
                break
        return float(rate)

    def set_velocity(self, u=None, v=None, project: bool = True) -> None:
        """Set the velocity from staggered arrays (``[nx+1, ny]``, ``[nx, ny+1]``) or callables
        ``f(x, y)`` evaluated at the face centres (None: zero); the boundary values and
        solid faces are then imposed and the field projected to be divergence-free."""
        self.u, self.v = staggered_velocity(self, u, v, "incompressible")
        self._speed_ref = max(self._speed_ref, float(np.abs(self.u).max()), float(np.abs(self.v).max()))
        self._apply_fixed(self.u, self.v)
        if project:
            self._extrapolate_outflow(self.u, self.v)
            self._project(self.u, self.v)

    # -------------------------------------------------------------- outputs
    def cell_velocity(self) -> tuple[np.ndarray, np.ndarray]:
        """``u, v`` averaged to the cell centres, ``[nx, ny]`` each (zero in solid cells)."""
        return 0.5 * (self.u[1:] + self.u[:-1]), 0.5 * (self.v[:, 1:] + self.v[:, :-1])

    def cell_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Cell-centre coordinates ``x [nx]``, ``y [ny]``."""
        return (np.arange(self.nx) + 0.5) * self.dx, (np.arange(self.ny) + 0.5) * self.dy

    def boundary_flux(self, side: str) -> float:
        """Volume flux out of the domain through ``side`` (per unit depth)."""
        if side not in SIDES:
            raise ParameterError(f"incompressible: side must be one of {list(SIDES)}, got {side!r}")
        face = {"left": -self.u[0], "right": self.u[-1], "bottom": -self.v[:, 0], "top": self.v[:, -1]}[side]
        return float(face.sum() * (self.dy if side in ("left", "right") else self.dx))

    def _links(self, body: np.ndarray) -> dict:
        """Where momentum passes from the fluid to the solid cells ``body``, face by face.

        For each velocity component, with ``open`` the interior faces the momentum
        equation updates and ``into`` the interior faces touching ``body``: links along
        the component (through the cell centre between two faces) and across it
        (through a cell corner), each from an open face to a body face (``+1``: the body
        face lies on the + side, ``-1``: on the - side), and the viscous weight of the
        cross links (2 where the mirror value applies)."""
        s = body
        nx, ny = self.nx, self.ny
        op_u = np.zeros((nx + 1, ny), dtype=bool)
        op_u[1:-1] = self._open_u > 0
        op_v = np.zeros((nx, ny + 1), dtype=bool)
        op_v[:, 1:-1] = self._open_v > 0
        in_u = np.zeros((nx + 1, ny), dtype=bool)
        in_u[1:-1] = s[:-1] | s[1:]
        in_v = np.zeros((nx, ny + 1), dtype=bool)
        in_v[:, 1:-1] = s[:, :-1] | s[:, 1:]
        full_u = np.zeros((nx + 1, ny), dtype=bool)
        full_u[1:-1] = self.solid[:-1] & self.solid[1:]
        full_v = np.zeros((nx, ny + 1), dtype=bool)
        full_v[:, 1:-1] = self.solid[:, :-1] & self.solid[:, 1:]
        f, b = self.fluid, s
        return {
            # u: along x through the centres [nx, ny]; across y through the inner corners [nx+1, ny-1]
            "u_along": (op_u[:-1] & in_u[1:]).astype(float) - (in_u[:-1] & op_u[1:]),
            "u_along_fluid": np.where(op_u[:-1] & in_u[1:], 1, 0) + np.where(in_u[:-1] & op_u[1:], 2, 0),
            "u_up": op_u[:, :-1] & in_u[:, 1:], "u_down": in_u[:, :-1] & op_u[:, 1:],
            "u_w_up": np.where(full_u[:, 1:], 2.0, 1.0), "u_w_down": np.where(full_u[:, :-1], 2.0, 1.0),
            # v: along y through the centres [nx, ny]; across x through the inner corners [nx-1, ny+1]
            "v_along": (op_v[:, :-1] & in_v[:, 1:]).astype(float) - (in_v[:, :-1] & op_v[:, 1:]),
            "v_along_fluid": np.where(op_v[:, :-1] & in_v[:, 1:], 1, 0) + np.where(in_v[:, :-1] & op_v[:, 1:], 2, 0),
            "v_up": op_v[:-1] & in_v[1:], "v_down": in_v[:-1] & op_v[1:],
            "v_w_up": np.where(full_v[1:], 2.0, 1.0), "v_w_down": np.where(full_v[:-1], 2.0, 1.0),
            # pressure: fluid cell with the body on its + side, on its - side
            "px": (f[:-1] & b[1:]).astype(float) - (b[:-1] & f[1:]),
            "py": (f[:, :-1] & b[:, 1:]).astype(float) - (b[:, :-1] & f[:, 1:]),
        }

    def forces(self, body: np.ndarray | None = None) -> tuple[float, float]:
        """Force ``(Fx, Fy)`` per unit depth of the fluid on the solid cells (or on the part
        ``body`` of them): the momentum the discrete equations pass from the fluid to the
        body's faces per unit time -- pressure, viscous and advective fluxes through the
        staircase links (see the module docstring). At a steady state it equals the
        momentum balance of any control volume around the body, to round-off."""
        if body is None:
            if self._links_all is None:
                self._links_all = self._links(self.solid)
            L = self._links_all
        else:
            b = np.asarray(body, dtype=bool)
            if b.shape != self.solid.shape:
                raise ParameterError(f"incompressible: body mask must have shape {self.solid.shape}, got {b.shape}")
            L = self._links(b & self.solid)
        dx, dy, rho, mu = self.dx, self.dy, self.rho, self.mu
        u, v, p = self.u, self.v, self.p
        U, V = self._padded(u, v)
        uv = 0.25 * (U[:, 1:] + U[:, :-1]) * (V[1:] + V[:-1])  # corners [nx+1, ny+1]
        uc = 0.5 * (u[1:] + u[:-1])
        vc = 0.5 * (v[:, 1:] + v[:, :-1])
        # pressure on the staircase faces
        fx = dy * np.sum(L["px"] * (p[:-1] * (L["px"] > 0) + p[1:] * (L["px"] < 0)))
        fy = dx * np.sum(L["py"] * (p[:, :-1] * (L["py"] > 0) + p[:, 1:] * (L["py"] < 0)))
        # advection through the links
        fx += rho * (dy * np.sum(L["u_along"] * uc * uc)
                     + dx * np.sum((L["u_up"].astype(float) - L["u_down"]) * uv[:, 1:-1]))
        fy += rho * (dx * np.sum(L["v_along"] * vc * vc)
                     + dy * np.sum((L["v_up"].astype(float) - L["v_down"]) * uv[1:-1, :]))
        # viscous fluxes: the fluid face loses mu w u_f / h per unit area to the zero body face
        ua = L["u_along_fluid"]
        fx += mu * dy / dx * (np.sum(u[:-1] * (ua == 1)) + np.sum(u[1:] * (ua == 2)))
        fx += mu * dx / dy * (np.sum(L["u_up"] * L["u_w_up"] * u[:, :-1])
                              + np.sum(L["u_down"] * L["u_w_down"] * u[:, 1:]))
        va = L["v_along_fluid"]
        fy += mu * dx / dy * (np.sum(v[:, :-1] * (va == 1)) + np.sum(v[:, 1:] * (va == 2)))
        fy += mu * dy / dx * (np.sum(L["v_up"] * L["v_w_up"] * v[:-1]) + np.sum(L["v_down"] * L["v_w_down"] * v[1:]))
        return float(fx), float(fy)

    def coefficients(self, speed: float, length: float, body: np.ndarray | None = None) -> tuple[float, float]:
        """Drag and lift coefficients ``2 F / (rho U^2 D)`` of :meth:`forces`."""
        fx, fy = self.forces(body)
        scale = 0.5 * self.rho * speed * speed * length
        return fx / scale, fy / scale


def cavity(n: int, reynolds: float, lid_speed: float = 1.0, size: float = 1.0, **kwargs) -> IncompressibleFlow:
    """The lid-driven square cavity (Ghia, Ghia & Shin 1982): walls, the top one moving at
    ``lid_speed``, ``nu = lid_speed * size / reynolds``."""
    return IncompressibleFlow(n, n, size, size, nu=lid_speed * size / reynolds, top=BC.wall(lid_speed), **kwargs)
