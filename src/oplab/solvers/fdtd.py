"""Linear acoustics in a rectangular room: a staggered-grid (Yee) FDTD solver and analytic references.

The equations (pressure ``p``, particle velocity ``v``, sound speed ``c``, density ``rho``) are

    p_t = -rho c^2 div v,        rho v_t = -grad p,                                   (1)

in the box ``[0, L_1] x ... x [0, L_dim]`` (``dim`` = 1, 2 or 3), started from a pressure field
``p(x, 0) = p0(x)`` at rest (``v(x, 0) = 0``); the walls are locally reacting with a
frequency-independent impedance ``Z``: ``p = Z v.n`` on the wall (``n`` the outward normal).

Discretisation
--------------
Yee's staggered grid as used for room acoustics by Botteldooren (1995, "Finite-difference
time-domain simulation of low-frequency room acoustic problems", J. Acoust. Soc. Am. 98(6):3302):
pressure at the nodes ``x_i = i h`` (the walls are node planes, ``i = 0 .. N_d``, ``N_d = L_d / h``),
the velocity component ``v_d`` at the midpoints between nodes along axis ``d``; pressure at the
integer steps ``t_n = n dt``, velocity at the half steps (leapfrog)::

    rho (v_d^{n+1/2} - v_d^{n-1/2}) / dt = -(p_{i+1}^n - p_i^n) / h                    (2)
    (p^{n+1} - p^n) / dt = -rho c^2 sum_d (v_{d,i+1/2}^{n+1/2} - v_{d,i-1/2}^{n+1/2}) / (w_d h)

``w_d = 1`` in the interior and ``w_d = 1/2`` at a wall node, whose control volume is half a cell
thick (a corner node: a quarter, ...). At the wall the missing outer velocity is the wall's,
``v_wall . n = p_wall / Z``, with the wall pressure averaged over the step, ``(p^{n+1} + p^n) / 2``
(Botteldooren's centred impedance condition, written for a wall pressure node; this half-cell,
finite-volume boundary node is the one of Bilbao 2013, "Modeling of complex geometries and
boundary conditions in finite difference/finite volume time domain room acoustics simulation",
IEEE Trans. Audio Speech Lang. Process. 21(7):1524, and Kowalczyk & van Walstijn 2008,
"Formulation of locally reacting surfaces in FDTD/K-DWM modelling of acoustic spaces", Acta
Acust. united Ac. 94(6):891). Solving the wall node's update for ``p^{n+1}``::

    p^{n+1} = ((1 - g) p^n - rho c^2 dt D v^{n+1/2}) / (1 + g),    g = sum_walls lambda beta,   (3)

with ``D`` the divergence of (2) without the wall velocities, ``lambda = c dt / h`` the Courant
number and ``beta = rho c / Z`` the wall's specific admittance (``g = 0`` off the walls). The wall
is set by its energy absorption coefficient ``alpha`` at normal incidence:
``R = sqrt(1 - alpha)``, ``Z = rho c (1 + R) / (1 - R)``, ``beta = (1 - R) / (1 + R)``;
``alpha = 0`` is rigid (``v.n = 0``).

Properties (the tests check each):

* second order in space and time; stable for ``lambda <= 1 / sqrt(dim)``;
* the discrete energy ``E^n = sum V p^2 / (2 rho c^2) + (rho / 2) sum V_f v^{n-1/2} v^{n+1/2}``
  (``V`` the node control volumes, ``V_f`` the face ones) is conserved exactly by rigid walls and
  decreases by ``dt sum_wall A p_bar^2 / Z`` from step ``n`` to ``n + 1`` otherwise (``A`` a wall
  node's share of the wall area, ``p_bar = (p^n + p^{n+1}) / 2``);
* a rigid wall node is a mirror plane of the scheme: the rigid room is the unbounded grid with
  the mirrored (image) initial data, the discrete image-source method;
* the start at rest is second order: ``v^{1/2} = -(dt / (2 rho)) grad p0`` (``v_t(0) = -grad p0 /
  rho``, ``v_tt(0) = 0``). A pressure increment ``q`` injected at step ``m`` is started the same
  way, so its response is the time-shifted response to the initial condition ``p0 = q`` and the
  solver is linear and time-invariant to round-off (a moving source's superposition is exact).

Analytic references
-------------------
For a Gaussian pulse ``p0 = exp(-|x - x_s|^2 / sigma^2)`` at rest in free space:

* 1D (d'Alembert): ``p = (p0(x - ct) + p0(x + ct)) / 2``;
* 3D (spherical waves; e.g. Pierce, "Acoustics", 1981/2019, section 4-1 / Kirchhoff-Poisson):
  ``p(r, t) = ((r - ct) g(r - ct) + (r + ct) g(r + ct)) / (2 r)``, ``g(s) = exp(-s^2 / sigma^2)``,
  with the limit ``d/ds (s g(s))`` at ``s = ct`` for ``r -> 0``;
* 2D (Hankel transform of the radial initial data, each mode ``J0(k r)`` oscillating as
  ``cos(c k t)``): ``p(r, t) = int_0^inf k P0(k) J0(k r) cos(c k t) dk``,
  ``P0(k) = (sigma^2 / 2) exp(-sigma^2 k^2 / 4)`` (numerical quadrature);
* a rigid rectangular room (Allen & Berkley 1979, "Image method for efficiently simulating
  small-room acoustics", J. Acoust. Soc. Am. 65(4):943): the sum of the free-field solutions of
  the image sources ``2 a_d L_d +- x_{s,d}``, all with the same sign; exact with every image, and
  to first order (the source and its ``2 dim`` mirror images) until the second-order reflections
  arrive. (Only when the Gaussian's tail beyond the walls is negligible: the room's initial
  condition is the Gaussian restricted to the room.)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.integrate import quad_vec
from scipy.special import j0


def reflection_to_admittance(alpha: float) -> float:
    """Specific admittance ``beta = rho c / Z = (1 - R) / (1 + R)`` of a wall with normal-incidence
    energy absorption ``alpha`` in [0, 1), ``R = sqrt(1 - alpha)``; 0 for a rigid wall."""
    alpha = float(alpha)
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"absorption coefficient alpha must be in [0, 1), got {alpha!r}")
    r = math.sqrt(1.0 - alpha)
    return (1.0 - r) / (1.0 + r)


def impedance(alpha: float, c: float = 343.0, rho: float = 1.2) -> float:
    """Wall impedance ``Z = rho c (1 + R) / (1 - R)`` with ``R = sqrt(1 - alpha)`` (inf if rigid)."""
    beta = reflection_to_admittance(alpha)
    return math.inf if beta == 0.0 else rho * c / beta


def gaussian(coords: Sequence[np.ndarray], center: Sequence[float], sigma: float) -> np.ndarray:
    """``exp(-|x - center|^2 / sigma^2)`` on the tensor grid of ``coords`` (an outer product)."""
    field = np.ones(())
    for x, x0 in zip(coords, center):
        g = np.exp(-((np.asarray(x, dtype=np.float64) - float(x0)) ** 2) / sigma**2)
        field = np.multiply.outer(field, g)
    return field


# ------------------------------------------------------------------------- solver
@dataclass
class _Recording:
    """Which steps a set of record times needs, and how to combine them (linear in time)."""

    lower: np.ndarray  # step below (or at) each record time
    theta: np.ndarray  # weight of the step above
    needed: np.ndarray  # sorted unique steps


class WaveFDTD:
    """Staggered-grid pressure-velocity FDTD of linear acoustics in a box with impedance walls.

    ``lengths``: the room ``(L_1, ..., L_dim)`` in metres (``dim`` 1, 2 or 3), each a multiple of
    the grid spacing ``h``. ``alpha``: the walls' absorption coefficient in [0, 1), one number for
    all walls or ``[[low_1, high_1], ..., [low_dim, high_dim]]`` per wall. ``cfl``: the Courant
    number ``c dt / h`` (default ``0.9 / sqrt(dim)``, the stability limit is ``1 / sqrt(dim)``).
    ``record_every``: if given, ``dt`` is lowered so that ``record_every`` is a whole number of
    steps (the largest such ``dt`` at or below the Courant limit). ``dt`` overrides all of this.
    See the module docstring for the scheme and its references.
    """

    def __init__(self, lengths: Sequence[float], h: float, c: float = 343.0, rho: float = 1.2,
                 alpha: float | Sequence[Sequence[float]] = 0.0, cfl: float | None = None,
                 record_every: float | None = None, dt: float | None = None):
        lengths = [float(L) for L in np.atleast_1d(lengths)]
        self.dim = len(lengths)
        if self.dim not in (1, 2, 3):
            raise ValueError(f"WaveFDTD: 1, 2 or 3 room lengths expected, got {lengths}")
        if not (h > 0 and c > 0 and rho > 0):
            raise ValueError(f"WaveFDTD: h, c and rho must be > 0, got h={h!r}, c={c!r}, rho={rho!r}")
        self.h, self.c, self.rho = float(h), float(c), float(rho)
        cells = []
        for L in lengths:
            m = L / self.h
            if L <= 0 or round(m) < 1 or abs(m - round(m)) > 1e-6 * max(1.0, m):
                raise ValueError(f"WaveFDTD: room length {L!r} must be a positive multiple of h = {h!r}")
            cells.append(int(round(m)))
        self.lengths = tuple(lengths)
        self.cells = tuple(cells)
        self.shape = tuple(m + 1 for m in cells)
        limit = 1.0 / math.sqrt(self.dim)
        if dt is None:
            cfl = 0.9 * limit if cfl is None else float(cfl)
            if not 0 < cfl <= limit:
                raise ValueError(f"WaveFDTD: cfl {cfl!r} must be in (0, 1/sqrt(dim) = {limit:.4f}]")
            dt = cfl * self.h / self.c
            if record_every is not None:
                dt = float(record_every) / math.ceil(float(record_every) / dt * (1 - 1e-12))
        self.dt = float(dt)
        self.courant = self.c * self.dt / self.h
        if not 0 < self.courant <= limit * (1 + 1e-12):
            raise ValueError(f"WaveFDTD: dt {dt!r} gives Courant number {self.courant:.4f} > 1/sqrt(dim)")
        # wall admittances beta[d][side]
        a = np.asarray(alpha, dtype=np.float64)
        a = np.full((self.dim, 2), float(a)) if a.ndim == 0 else a
        if a.shape != (self.dim, 2):
            raise ValueError(f"WaveFDTD: alpha must be a number or [[low, high]] per axis ({self.dim} axes), "
                             f"got {alpha!r}")
        self.alpha = a
        self.beta = np.vectorize(reflection_to_admittance)(a).reshape(self.dim, 2)
        # g = sum over the walls touching each node of lambda beta, for update (3)
        g = np.zeros(self.shape)
        for d in range(self.dim):
            for side, index in ((0, 0), (1, -1)):
                sl = [slice(None)] * self.dim
                sl[d] = index
                g[tuple(sl)] += self.courant * self.beta[d, side]
        self._lossy = bool(np.any(g > 0))
        self._a = (1.0 - g) / (1.0 + g)
        self._inv_1g = 1.0 / (1.0 + g)
        # work arrays of the step
        self._div = np.zeros(self.shape)
        self._vbuf = [np.zeros(self._face_shape(d)) for d in range(self.dim)]

    def _face_shape(self, d: int) -> tuple[int, ...]:
        return tuple(m - (e == d) for e, m in enumerate(self.shape))

    # -------------------------------------------------------------- grid
    def coords(self) -> list[np.ndarray]:
        """The node coordinates ``i h`` along each axis (walls included)."""
        return [self.h * np.arange(n) for n in self.shape]

    def node_volumes(self) -> np.ndarray:
        """Control volume of each pressure node: ``h^dim`` times 1/2 per wall it lies on."""
        vol = np.full(self.shape, self.h**self.dim)
        for d in range(self.dim):
            for index in (0, -1):
                sl = [slice(None)] * self.dim
                sl[d] = index
                vol[tuple(sl)] *= 0.5
        return vol

    def face_volumes(self, d: int) -> np.ndarray:
        """Volume attached to each ``v_d`` face: ``h^dim`` times 1/2 per wall (of another axis) it lies on."""
        shape = list(self.shape)
        shape[d] -= 1
        vol = np.full(shape, self.h**self.dim)
        for e in range(self.dim):
            if e != d:
                for index in (0, -1):
                    sl = [slice(None)] * self.dim
                    sl[e] = index
                    vol[tuple(sl)] *= 0.5
        return vol

    def gaussian(self, center: Sequence[float], sigma: float) -> np.ndarray:
        """The pulse ``exp(-|x - center|^2 / sigma^2)`` on the nodes."""
        return gaussian(self.coords(), center, sigma)

    def receiver_matrix(self, points: np.ndarray) -> sp.csr_matrix:
        """Sparse ``[R, n_nodes]`` matrix of multilinear interpolation from the nodes to ``points``
        (``[R, dim]`` in metres, inside the room up to 1e-9 relative)."""
        pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
        if pts.shape[1] != self.dim:
            raise ValueError(f"WaveFDTD: receiver points must be [R, {self.dim}], got {pts.shape}")
        lo, hi = np.zeros(self.dim), np.asarray(self.lengths)
        tol = 1e-9 * hi
        if np.any(pts < lo - tol) or np.any(pts > hi + tol):
            bad = pts[np.any((pts < lo - tol) | (pts > hi + tol), axis=1)][0]
            raise ValueError(f"WaveFDTD: receiver {bad.tolist()} lies outside the room {list(self.lengths)}")
        s = np.clip(pts, lo, hi) / self.h
        i0 = np.clip(np.floor(s).astype(np.int64), 0, np.asarray(self.cells) - 1)
        frac = s - i0
        rows, cols, vals = [], [], []
        r = np.arange(len(pts))
        for corner in itertools.product((0, 1), repeat=self.dim):
            weight = np.ones(len(pts))
            idx = []
            for d, k in enumerate(corner):
                weight = weight * (frac[:, d] if k else 1.0 - frac[:, d])
                idx.append(i0[:, d] + k)
            rows.append(r)
            cols.append(np.ravel_multi_index(tuple(idx), self.shape))
            vals.append(weight)
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(len(pts), int(np.prod(self.shape))))

    # ------------------------------------------------------------- time
    def step_of(self, t: float) -> int:
        """The step index of time ``t``; a ValueError unless ``t`` is on the step grid."""
        s = float(t) / self.dt
        k = int(round(s))
        if k < 0 or abs(s - k) > 1e-6:
            raise ValueError(f"WaveFDTD: time {t!r} is not a non-negative multiple of dt = {self.dt!r}")
        return k

    def _recording(self, times: np.ndarray) -> _Recording:
        s = np.asarray(times, dtype=np.float64) / self.dt
        if np.any(s < -1e-9):
            raise ValueError("WaveFDTD: record times must be >= 0")
        near = np.round(s)
        on_grid = np.abs(s - near) <= 1e-6
        lower = np.where(on_grid, near, np.floor(s)).astype(np.int64)
        theta = np.where(on_grid, 0.0, s - np.floor(s))
        needed = np.unique(np.concatenate([lower, lower[theta > 0] + 1]))
        return _Recording(lower, theta, needed)

    # -------------------------------------------------------------- run
    def _velocity(self, v: list[np.ndarray], p: np.ndarray) -> None:
        """``v^{n+1/2} = v^{n-1/2} - dt / (rho h) grad p`` in place."""
        k = self.dt / (self.rho * self.h)
        for d in range(self.dim):
            buf = self._vbuf[d]
            np.subtract(self._sl(p, d, 1, None), self._sl(p, d, 0, -1), out=buf)
            buf *= k
            v[d] -= buf

    @staticmethod
    def _sl(a: np.ndarray, d: int, start, stop) -> np.ndarray:
        index = [slice(None)] * a.ndim
        index[d] = slice(start, stop)
        return a[tuple(index)]

    def _divergence(self, v: list[np.ndarray]) -> np.ndarray:
        """``D v``: the divergence of (2) at every node without the wall velocities, times ``h``
        (the sum of ``(v_{i+1/2} - v_{i-1/2}) / w_d`` over the axes; a buffer of the solver's)."""
        div = self._div
        div.fill(0.0)
        for d in range(self.dim):
            self._sl(div, d, 0, -1)[...] += v[d]  # outflow through the face above node i
            self._sl(div, d, 1, None)[...] -= v[d]  # inflow through the face below node i + 1
            # half cells at the walls (w_d = 1/2): twice the single face's flux
            self._sl(div, d, 0, 1)[...] += self._sl(v[d], d, 0, 1)
            self._sl(div, d, -1, None)[...] -= self._sl(v[d], d, -1, None)
        return div

    def _pressure(self, p: np.ndarray, v: list[np.ndarray]) -> None:
        """Update (3) in place: ``p^{n+1} = ((1 - g) p^n - rho c^2 dt D v^{n+1/2}) / (1 + g)``."""
        div = self._divergence(v)
        div *= self.rho * self.c**2 * self.dt / self.h
        if self._lossy:
            p *= self._a
            div *= self._inv_1g
        p -= div

    def march(self, n_steps: int, p0: np.ndarray | None = None,
              injections: Iterable[tuple[float, np.ndarray | Callable[[], np.ndarray]]] = ()):
        """Generator of ``(n, p^n, v^{n+1/2})`` for ``n = 0 .. n_steps`` (``v`` is None at the last).

        ``p0`` (node array) is the pressure at ``t = 0`` at rest; ``injections`` are
        ``(time, increment)`` pairs (``time`` on the step grid, ``increment`` a node array or a
        function returning one), each added to ``p`` at its step and started at rest, like ``p0``.
        The arrays yielded are the solver's own: copy them to keep them.
        """
        events: dict[int, list] = {}
        if p0 is not None:
            events.setdefault(0, []).append(p0)
        for t, q in injections:
            events.setdefault(self.step_of(t), []).append(q)
        p = np.zeros(self.shape)
        v = [np.zeros(self._face_shape(d)) for d in range(self.dim)]
        for n in range(n_steps + 1):
            q = None
            for item in events.pop(n, ()):
                arr = np.asarray(item() if callable(item) else item, dtype=np.float64)
                if arr.shape != self.shape:
                    raise ValueError(f"WaveFDTD: pressure field of shape {arr.shape}, expected {self.shape}")
                q = arr.copy() if q is None else q + arr
            if q is not None:
                p += q
            if n == n_steps:
                yield n, p, None
                return
            # a pressure increment starts at rest: its first velocity step is half a step's
            self._velocity(v, p if q is None else p - 0.5 * q)
            yield n, p, v
            self._pressure(p, v)

    def run(self, p0: np.ndarray | None, record_times: Sequence[float],
            receivers: np.ndarray | sp.spmatrix | None = None,
            injections: Iterable[tuple[float, np.ndarray | Callable[[], np.ndarray]]] = ()) -> np.ndarray:
        """The pressure at ``record_times``: ``[T, *shape]`` on the nodes, or ``[T, R]`` at
        ``receivers`` (points ``[R, dim]`` in metres, interpolated multilinearly, or a matrix of
        :meth:`receiver_matrix`). Times off the step grid are interpolated linearly between steps
        (second order, like the scheme). ``p0`` and ``injections``: see :meth:`march`."""
        rec = self._recording(np.atleast_1d(record_times))
        W = None
        if receivers is not None:
            W = receivers if sp.issparse(receivers) else self.receiver_matrix(receivers)
        wanted = set(rec.needed.tolist())
        saved = {}
        n_end = int(rec.needed.max()) if len(rec.needed) else 0
        for n, p, _ in self.march(n_end, p0, injections):
            if n in wanted:
                saved[n] = (W @ p.ravel()) if W is not None else p.copy()
        out = [saved[lo] if th == 0 else (1 - th) * saved[lo] + th * saved[lo + 1]
               for lo, th in zip(rec.lower.tolist(), rec.theta.tolist())]
        return np.stack(out)

    def energy(self, p: np.ndarray, v_before: list[np.ndarray], v_after: list[np.ndarray]) -> float:
        """The discrete energy ``sum V p^2 / (2 rho c^2) + (rho / 2) sum V_f v^{n-1/2} v^{n+1/2}``,
        conserved exactly by the scheme with rigid walls."""
        e = float(np.sum(self.node_volumes() * p**2)) / (2 * self.rho * self.c**2)
        for d in range(self.dim):
            e += 0.5 * self.rho * float(np.sum(self.face_volumes(d) * v_before[d] * v_after[d]))
        return e

    def energies(self, p0: np.ndarray, n_steps: int) -> np.ndarray:
        """The discrete energy at steps ``1 .. n_steps`` of the run from ``p0`` at rest."""
        out = []
        before = None
        for n, p, v in self.march(n_steps + 1, p0):
            if v is None:
                break
            if before is not None:
                out.append(self.energy(p, before, v))
            before = [x.copy() for x in v]
        return np.asarray(out)


# ----------------------------------------------------------------- analytic references
def gaussian_pulse_1d(x: np.ndarray, t: np.ndarray | float, x0: float, sigma: float, c: float = 343.0) -> np.ndarray:
    """d'Alembert: ``(g(x - x0 - ct) + g(x - x0 + ct)) / 2``, ``g(s) = exp(-s^2 / sigma^2)``
    (broadcast over ``x`` and ``t``)."""
    g = lambda s: np.exp(-(s**2) / sigma**2)  # noqa: E731
    s = np.asarray(x, dtype=np.float64) - x0
    ct = c * np.asarray(t, dtype=np.float64)
    return 0.5 * (g(s - ct) + g(s + ct))


def gaussian_pulse_3d(r: np.ndarray, t: np.ndarray | float, sigma: float, c: float = 343.0) -> np.ndarray:
    """Spherical Gaussian pulse at rest at ``t = 0``: ``((r - ct) g(r - ct) + (r + ct) g(r + ct)) / (2 r)``
    (``r -> 0``: ``d/ds (s g(s))`` at ``s = ct``); broadcast over ``r`` and ``t``."""
    r, ct = np.broadcast_arrays(np.abs(np.asarray(r, dtype=np.float64)), c * np.asarray(t, dtype=np.float64))
    g = lambda s: np.exp(-(s**2) / sigma**2)  # noqa: E731
    small = r < 1e-3 * sigma
    rs = np.where(small, 1.0, r)
    far = ((r - ct) * g(r - ct) + (r + ct) * g(r + ct)) / (2 * rs)
    # (f(ct + r) - f(ct - r)) / (2 r) with f(s) = s g(s): f'(ct) + f'''(ct) r^2 / 6 + ...
    s = ct
    f1 = g(s) * (1 - 2 * s**2 / sigma**2)
    f3 = g(s) * (-6 / sigma**2 + 24 * s**2 / sigma**4 - 8 * s**4 / sigma**6)
    near = f1 + f3 * r**2 / 6
    return np.where(small, near, far)


def gaussian_pulse_2d(r: np.ndarray, t: np.ndarray | float, sigma: float, c: float = 343.0,
                      epsabs: float = 1e-12) -> np.ndarray:
    """Cylindrical Gaussian pulse at rest at ``t = 0`` by its Hankel transform:
    ``p(r, t) = int_0^inf k P0(k) J0(k r) cos(c k t) dk``, ``P0(k) = (sigma^2 / 2) exp(-sigma^2 k^2 / 4)``
    (adaptive quadrature, :func:`scipy.integrate.quad_vec`, over ``k <= 2 sqrt(40) / sigma``
    where the integrand has decayed to ``e^-40``); broadcast over ``r`` and ``t``."""
    r, t = np.broadcast_arrays(np.abs(np.asarray(r, dtype=np.float64)), np.asarray(t, dtype=np.float64))
    rr, ct = r.ravel(), c * t.ravel()
    k_max = 2.0 * math.sqrt(40.0) / sigma

    def integrand(k: float) -> np.ndarray:
        return k * 0.5 * sigma**2 * math.exp(-0.25 * sigma**2 * k**2) * j0(k * rr) * np.cos(k * ct)

    # split [0, k_max] so that each piece holds a few oscillations of the fastest term
    span = float(np.max(rr + ct, initial=0.0))
    pieces = max(1, int(math.ceil(k_max * span / (4 * math.pi))))
    edges = np.linspace(0.0, k_max, pieces + 1)
    total = np.zeros_like(rr)
    for a, b in zip(edges[:-1], edges[1:]):
        total += quad_vec(integrand, a, b, epsabs=epsabs / pieces, epsrel=1e-12, limit=200)[0]
    return total.reshape(r.shape)


def free_field(points: np.ndarray, times: np.ndarray, source: Sequence[float], sigma: float,
               c: float = 343.0) -> np.ndarray:
    """Free-field pressure ``[T, R]`` of the Gaussian pulse ``exp(-|x - source|^2 / sigma^2)`` at
    rest at ``t = 0``, at ``points`` ``[R, dim]`` and ``times`` ``[T]`` (1D, 2D or 3D by ``len(source)``)."""
    src = np.asarray(source, dtype=np.float64)
    pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
    times = np.atleast_1d(np.asarray(times, dtype=np.float64))
    dim = len(src)
    if dim == 1:
        return gaussian_pulse_1d(pts[None, :, 0], times[:, None], src[0], sigma, c)
    r = np.linalg.norm(pts - src, axis=1)
    if dim == 2:
        return gaussian_pulse_2d(r[None, :], times[:, None], sigma, c)
    if dim == 3:
        return gaussian_pulse_3d(r[None, :], times[:, None], sigma, c)
    raise ValueError(f"free_field: 1, 2 or 3 coordinates expected, got {dim}")


def image_sources(source: Sequence[float], lengths: Sequence[float], max_order: int | None = None,
                  reach: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image sources of a rigid rectangular room (Allen & Berkley 1979): positions ``[M, dim]``
    and reflection orders ``[M]``. Along axis ``d`` the images are ``2 a L_d + x_d`` (``|2a|``
    reflections) and ``2 a L_d - x_d`` (``|2a - 1|`` reflections); an image's order is the sum
    over the axes. ``max_order`` keeps those of order <= it; ``reach`` those within that distance
    of the room (at least one of the two must be given)."""
    src = np.asarray(source, dtype=np.float64)
    L = np.asarray(lengths, dtype=np.float64)
    if max_order is None and reach is None:
        raise ValueError("image_sources: give max_order or reach")
    per_axis = []
    for d in range(len(src)):
        if reach is not None:
            a_max = int(math.ceil((reach + L[d]) / (2 * L[d]))) + 1
        else:
            a_max = (max_order + 1) // 2 + 1
        opts = []
        for a in range(-a_max, a_max + 1):
            opts.append((2 * a * L[d] + src[d], abs(2 * a)))
            opts.append((2 * a * L[d] - src[d], abs(2 * a - 1)))
        per_axis.append(opts)
    positions, orders = [], []
    for combo in itertools.product(*per_axis):
        order = sum(o for _, o in combo)
        pos = [x for x, _ in combo]
        if max_order is not None and order > max_order:
            continue
        if reach is not None:
            gap = np.maximum(np.maximum(-np.asarray(pos), np.asarray(pos) - L), 0.0)
            if np.linalg.norm(gap) > reach:
                continue
        positions.append(pos)
        orders.append(order)
    return np.asarray(positions), np.asarray(orders)


def image_source_pressure(points: np.ndarray, times: np.ndarray, source: Sequence[float],
                          lengths: Sequence[float], sigma: float, c: float = 343.0,
                          max_order: int | None = None) -> np.ndarray:
    """Pressure ``[T, R]`` in a rigid rectangular room by the image-source method: the sum of the
    free-field Gaussian pulses (:func:`free_field`) of the image sources (all of the same sign) of
    order <= ``max_order``, or, with ``max_order=None``, of every image close enough to matter
    (within ``c t_max + 10 sigma`` of the room: exact up to the Gaussian's tail beyond the walls)."""
    times = np.atleast_1d(np.asarray(times, dtype=np.float64))
    reach = None if max_order is not None else c * float(times.max()) + 10 * sigma
    images, _ = image_sources(source, lengths, max_order=max_order, reach=reach)
    return sum(free_field(points, times, img, sigma, c) for img in images)
