"""Sound in a room: the source position -> the pressure field p(t, x, y[, z]) of a Gaussian pulse.

Borrel-Jensen, Goswami, Engsig-Karup, Karniadakis & Jeong 2024, "Sound propagation in realistic
interactive 3D scenes with parameterized sources using deep neural operators", PNAS,
doi:10.1073/pnas.2312159120 (code: github.com/dtu-act/deeponet-acoustic-wave-prop) train a
DeepONet whose branch net reads the source position ``x_s`` and whose trunk net reads ``(x, t)``,
for the linear acoustic wave equation in a room,

    p_t = -rho c^2 div v,    rho v_t = -grad p,    p(x, 0) = exp(-|x - x_s|^2 / sigma0^2),  v(x, 0) = 0,

with ``c = 343 m/s``, ``rho = 1.2 kg/m^3`` and walls of frequency-independent (locally reacting)
impedance. Here the room is a rectangle (2D, the paper's 2 m x 2 m room by default) or a box (3D,
its 2 m cube), ``sigma0 = 0.2 m``, and the walls' impedance is set by their normal-incidence
energy absorption coefficient ``alpha``: ``R = sqrt(1 - alpha)``, ``Z = rho c (1 + R) / (1 - R)``
(``alpha = 0``: rigid). The paper generates its data with a DG/spectral-element solver; this
problem uses the verified second-order staggered FDTD solver of :mod:`oplab.solvers.fdtd`
(Botteldooren 1995), whose errors, convergence order, impedance walls and image-source agreement
tests/test_room_acoustics.py measures.

Input: the source position, one channel ``"source"`` on an axis ``"component"`` of ``dim`` points,
``[1, dim]`` (metres), drawn uniformly at least ``margin`` from every wall.

Output: ``p`` on axes ``(t, x, y[, z])``, ``[1, n_t, n_x, n_y(, n_z)]``: the record times
``record_every, 2 record_every, ..., t_end`` and a receiver grid with walls included, ``n_x =
resolution`` points across ``x`` (spacing ``s = lx / (resolution - 1)``) and the same spacing
along ``y`` (and ``z``): ``n_y = ly / s + 1``, so ``ly`` (and ``lz``) must be a multiple of ``s``
(a ParameterError otherwise). Receivers are read from the FDTD nodes by multilinear interpolation
(exact copies when ``s`` is a multiple of the FDTD spacing ``h``). The output is a map
(``output_times()`` is None): time is an output axis, like space, as for a DeepONet trunk.

Defaults: 21 x 21 (x 21) receivers, 40 records of 0.5 ms up to 20 ms (the pulse travels 6.9 m,
crossing the 2 m room about 3.4 times), Courant number ``0.9 / sqrt(dim)`` lowered so that
``record_every`` is a whole number of steps, and ``h = 1 / cells_per_metre`` = 0.01 m in 2D (20
cells per ``sigma0``; largest difference to a run at h = 0.005 m: 0.6% of the peak pressure; at
0.02 m it is 3.4%) and 0.02 m in 3D (10 cells per ``sigma0``). Measured on one core of a 2-core
CPU: a 2D sample 0.2 s, a 3D sample 10 s.

:meth:`RoomAcoustics.impulse_response` gives the response at any receivers and times;
:meth:`RoomAcoustics.moving_source` the direct FDTD run of a moving source that emits one pulse per
time step weighted by a dry signal (the reference a surrogate's superposition is checked against).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ParameterError
from ..solvers.fdtd import WaveFDTD, gaussian
from .base import Axis, Param, Problem, nonnegative, positive, record_times


@dataclass
class MovingSourceRun:
    """The result of :meth:`RoomAcoustics.moving_source`: the pressure ``[T, R]`` at the receivers
    and the pulses that made it, one per FDTD step: emission times ``[M]``, positions ``[M, dim]``
    and weights ``[M]`` (``p(x, t) = sum_m w_m G(x, t - t_m; x_m)`` with ``G`` the single-pulse
    response, :meth:`RoomAcoustics.impulse_response`)."""

    pressure: np.ndarray
    emit_times: np.ndarray
    emit_points: np.ndarray
    emit_weights: np.ndarray


def _alpha_ok(value: float) -> bool:
    return 0.0 <= value < 1.0


class RoomAcoustics(Problem):
    """Source position ``[1, dim]`` -> pressure ``[1, n_t, n_x, n_y(, n_z)]`` of a Gaussian pulse in
    a rectangular room with impedance walls (linear acoustics, staggered FDTD)."""

    name = "room_acoustics"
    summary = "linear acoustics in a room: source position -> p(t, x, y[, z]) of a Gaussian pulse (FDTD)"
    reference = (
        "Borrel-Jensen et al. 2024, 'Sound propagation in realistic interactive 3D scenes with parameterized "
        "sources using deep neural operators', PNAS, doi:10.1073/pnas.2312159120; solver: staggered FDTD "
        "(Botteldooren 1995, J. Acoust. Soc. Am. 98(6):3302)"
    )
    params_spec = (
        Param("dim", 2, "space dimension (2: rectangle lx x ly, 3: box lx x ly x lz)", choices=(2, 3)),
        positive("lx", 2.0, "room length along x (m)"),
        positive("ly", 2.0, "room length along y (m); a multiple of the receiver spacing lx / (resolution - 1)"),
        positive("lz", 2.0, "room length along z (m; 3D only); a multiple of the receiver spacing"),
        positive("c", 343.0, "speed of sound (m/s)"),
        positive("rho", 1.2, "air density (kg/m^3)"),
        positive("sigma", 0.2, "width sigma0 of the initial pulse exp(-|x - x_s|^2 / sigma0^2) (m)"),
        Param("alpha", 0.0, "energy absorption coefficient of the walls at normal incidence "
              "(R = sqrt(1 - alpha); 0: rigid)", check=_alpha_ok, expect="in [0, 1)"),
        positive("t_end", 0.02, "final time (s); a multiple of record_every"),
        positive("record_every", 0.0005, "time between records (s)"),
        nonnegative("cells_per_metre", 0.0, "FDTD grid: 1 / h, every room length times it a whole number; "
                    "0: 100 in 2D (20 cells per sigma0 = 0.2 m), 50 in 3D"),
        Param("cfl", 0.9, "Courant number c dt / h as a fraction of the stability limit 1 / sqrt(dim) "
              "(dt is lowered further so that record_every is a whole number of steps)",
              check=lambda v: 0 < v <= 1, expect="in (0, 1]"),
        nonnegative("margin", 0.5, "sources are drawn at least this far from every wall (m)"),
    )
    default_resolution = 21
    min_resolution = 2
    input_channels = ("source",)
    output_channels = ("p",)
    chunk_size = 1

    # ------------------------------------------------------------ set-up
    @property
    def lengths(self) -> tuple[float, ...]:
        p = self.params
        return (p["lx"], p["ly"], p["lz"])[: p["dim"]]

    def _check(self) -> None:
        p = self.params
        if p["cells_per_metre"] == 0.0:  # automatic: stored resolved, so the data file says what was used
            p["cells_per_metre"] = 100.0 if p["dim"] == 2 else 50.0
        self.times = record_times(self.name, p["t_end"], p["record_every"])
        h = 1.0 / p["cells_per_metre"]
        for axis, L in zip("xyz", self.lengths):
            m = L * p["cells_per_metre"]
            if abs(m - round(m)) > 1e-6 * max(1.0, m) or round(m) < 2:
                raise ParameterError(f"{self.name}: l{axis} = {L!r} m is not a multiple of the FDTD spacing "
                                     f"h = 1 / cells_per_metre = {h:g} m (at least 2 cells)")
        spacing = p["lx"] / (self.resolution - 1)
        self._counts = [self.resolution]
        for axis, L in zip("yz", self.lengths[1:]):
            m = L / spacing
            if abs(m - round(m)) > 1e-6 * max(1.0, m) or round(m) < 1:
                raise ParameterError(
                    f"{self.name}: l{axis} = {L!r} m must be a multiple of the receiver spacing lx / (resolution - 1)"
                    f" = {spacing:g} m (n_{axis} = l{axis} / spacing + 1 receivers); change l{axis} or the resolution")
            self._counts.append(int(round(m)) + 1)
        if 2 * p["margin"] >= min(self.lengths):
            raise ParameterError(f"{self.name}: margin {p['margin']!r} m leaves no room for sources in a room of "
                                 f"{' x '.join(f'{L:g}' for L in self.lengths)} m (need 2 margin < the shortest side)")
        self._solver: WaveFDTD | None = None
        self._receivers = None

    @property
    def solver(self) -> WaveFDTD:
        """The FDTD solver (built on first use): spacing ``1 / cells_per_metre``, ``dt`` a whole
        fraction of ``record_every``."""
        if self._solver is None:
            p = self.params
            self._solver = WaveFDTD(self.lengths, 1.0 / p["cells_per_metre"], c=p["c"], rho=p["rho"],
                                    alpha=p["alpha"], cfl=p["cfl"] / math.sqrt(p["dim"]),
                                    record_every=p["record_every"])
        return self._solver

    def input_axes(self) -> list[Axis]:
        dim = self.params["dim"]
        return [Axis("component", dim, 0.0, float(dim - 1))]

    def output_axes(self) -> list[Axis]:
        p = self.params
        t = Axis("t", len(self.times), p["record_every"], p["t_end"])
        return [t, *(Axis(a, n, 0.0, L) for a, n, L in zip("xyz", self._counts, self.lengths))]

    def output_times(self) -> None:
        return None  # a map [C, t, x, y(, z)], not a trajectory [T, C, *S]

    def receiver_points(self) -> np.ndarray:
        """The receiver grid as points ``[n_x n_y (n_z), dim]`` (x slowest)."""
        axes = [a.coords() for a in self.output_axes()[1:]]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)

    @property
    def solver_name(self) -> str:
        s = self.solver
        return (f"staggered-grid pressure-velocity FDTD (Yee/Botteldooren), 2nd order, h = {s.h:g} m, "
                f"dt = {s.dt:.6g} s (Courant {s.courant:.4f}), impedance walls")

    def working_memory(self, together: int) -> int:
        nodes = math.prod(int(round(L * self.params["cells_per_metre"])) + 1 for L in self.lengths)
        return super().working_memory(together) + 8 * nodes * (self.params["dim"] + 8)

    # ------------------------------------------------------------ data
    def sample_inputs(self, rng: np.random.Generator) -> np.ndarray:
        L = np.asarray(self.lengths)
        m = self.params["margin"]
        return (m + rng.uniform(size=len(L)) * (L - 2 * m))[None, :]  # [1, dim]

    def _room(self) -> str:
        return " x ".join(f"[0, {L:g}]" for L in self.lengths)

    def check_source(self, source, margin: float | None = None) -> np.ndarray:
        """``source`` as a ``[dim]`` array; a ParameterError unless it lies in the room at least
        ``margin`` (default the problem's) from every wall."""
        src = np.asarray(source, dtype=np.float64).ravel()
        dim = self.params["dim"]
        if src.shape != (dim,) or not np.all(np.isfinite(src)):
            raise ParameterError(f"{self.name}: a source position is {dim} finite coordinates, "
                                 f"got {np.asarray(source).tolist()!r}")
        m = self.params["margin"] if margin is None else margin
        L = np.asarray(self.lengths)
        tol = 1e-9 * L
        if np.any(src < m - tol) or np.any(src > L - m + tol):
            where = "outside" if np.any(src < 0) or np.any(src > L) else f"closer than {m:g} m to a wall of"
            raise ParameterError(f"{self.name}: source {src.tolist()} lies {where} the room {self._room()} (m)"
                                 + (f"; sources must keep at least {m:g} m from every wall" if m > 0 else ""))
        return src

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        """``[1, dim] -> [1, n_t, n_x, n_y(, n_z)]``: one FDTD run, recorded on the receiver grid."""
        inputs = np.asarray(inputs, dtype=np.float64)
        if inputs.shape != self.input_shape():
            raise ParameterError(f"{self.name}: expected an input of shape {self.input_shape()} (the source "
                                 f"position), got {inputs.shape}")
        src = self.check_source(inputs[0])
        s = self.solver
        if self._receivers is None:
            self._receivers = s.receiver_matrix(self.receiver_points())
        p = s.run(s.gaussian(src, self.params["sigma"]), self.times, self._receivers)  # [T, R]
        return p.reshape(1, len(self.times), *self._counts)

    # ------------------------------------------------------------ references
    def impulse_response(self, source: Sequence[float], receivers: np.ndarray, times: Sequence[float]) -> np.ndarray:
        """Pressure ``[T, R]`` at ``receivers`` (``[R, dim]``, m) and ``times`` (s, any; off the step
        grid interpolated linearly) of the pulse ``exp(-|x - source|^2 / sigma^2)`` released at rest at
        ``t = 0`` (``source`` anywhere in the room)."""
        src = self.check_source(source, margin=0.0)
        s = self.solver
        return s.run(s.gaussian(src, self.params["sigma"]), np.asarray(times, dtype=np.float64), receivers)

    def moving_source(self, path_times: Sequence[float], path_points: np.ndarray, weights: Sequence[float],
                      receivers: np.ndarray, times: Sequence[float]) -> MovingSourceRun:
        """Direct FDTD run of a moving source: at every FDTD step ``t_m = m dt`` in
        ``[path_times[0], path_times[-1]]`` a pulse ``w_m exp(-|x - x_m|^2 / sigma^2)`` is injected
        (started at rest), with ``x_m`` and ``w_m`` (the dry signal) interpolated linearly from
        ``path_points`` (``[K, dim]``) and ``weights`` (``[K]``) given at ``path_times`` (``[K]``,
        increasing, >= 0). By linearity and time invariance the result equals
        ``sum_m w_m impulse_response(x_m, receivers, times - t_m)`` (for ``times >= t_m``) to
        round-off when ``times`` are on the step grid. Returns the pressure ``[T, R]`` with the pulses."""
        pt = np.asarray(path_times, dtype=np.float64)
        pts = np.asarray(path_points, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
        dim = self.params["dim"]
        if pt.ndim != 1 or pts.shape != (len(pt), dim) or w.shape != pt.shape or len(pt) < 1:
            raise ParameterError(f"{self.name}: moving_source needs path_times [K], path_points [K, {dim}] and "
                                 f"weights [K], got {pt.shape}, {pts.shape}, {w.shape}")
        if np.any(np.diff(pt) <= 0) or pt[0] < 0:
            raise ParameterError(f"{self.name}: path_times must be increasing and >= 0")
        for x in pts:
            self.check_source(x, margin=0.0)
        s = self.solver
        first = int(math.ceil(pt[0] / s.dt - 1e-9))
        last = int(math.floor(pt[-1] / s.dt + 1e-9))
        steps = np.arange(first, last + 1)
        t_emit = steps * s.dt
        x_emit = np.stack([np.interp(t_emit, pt, pts[:, d]) for d in range(dim)], axis=1)
        w_emit = np.interp(t_emit, pt, w)
        sigma = self.params["sigma"]
        coords = s.coords()

        def pulse(x, wm):
            return lambda: wm * gaussian(coords, x, sigma)

        injections = [(t, pulse(x, wm)) for t, x, wm in zip(t_emit, x_emit, w_emit) if wm != 0.0]
        p = s.run(None, np.asarray(times, dtype=np.float64), receivers, injections=injections)
        return MovingSourceRun(p, t_emit, x_emit, w_emit)

