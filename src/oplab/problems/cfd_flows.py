"""The CFDBench flows (Luo, Chen & Zhang 2023, arXiv:2310.05963) on oplab's own incompressible solver.

CFDBench trains operators on four 2D flows, each in three subsets that vary one kind of case
parameter: ``bc`` (the inlet or lid speed), ``prop`` (density and viscosity) and ``geo`` (the
geometry). Its data came from ANSYS Fluent. Here the same set-ups are solved with
:class:`~oplab.solvers.incompressible.IncompressibleFlow` (projection method, MAC grid, staircase
obstacles), in scaled units on a CPU-sized grid:

* ``cavity``: lid-driven cavity, ``width x height`` box, the top wall moving at ``speed``.
* ``tube``: channel flow, a uniform inflow of ``speed`` on the left, no-slip walls on the top and
  bottom, an outflow on the right (``width`` long, ``height`` high).
* ``cylinder``: flow past a circular cylinder (radius, centre) in a ``2 x 1`` channel with a
  uniform inflow on the left, free-slip top and bottom, an outflow on the right. The base centre
  is ``(0.5, 0.49)``: an exactly symmetric discrete set-up never sheds (round-off stays
  symmetric), the 0.01 offset starts the Karman street (at the defaults it is established by
  ``t ~ 10``; ``t_end=20`` takes about 2.5 s per sample).
* ``barrier``: SINGLE-PHASE flow over a rectangular barrier on the floor of a ``1.5 x 0.4``
  channel (the barrier at ``x = 0.5``; uniform inflow on the left, no-slip floor, free-slip top,
  outflow on the right). CFDBench's "dam" case is a two-phase (VOF water and air) flow over the
  same barrier; that free-surface flow is the ``dam`` problem (:mod:`oplab.problems.dam`), and
  this problem is not it: it has one fluid filling the channel.

Every case starts at ``t = 0`` from the solver's initial state (rest for the cavity; the
potential flow that the first projection makes of the impulsively started inflow for the
others) and is recorded at ``record_every, 2 record_every, ..., t_end`` (default every 0.1 time
unit, as CFDBench's frames are 0.1 s apart; here the units are scaled, see the ranges below).

Channels (the same in the inputs and in every output frame, as the autoregressive task needs):
``u``, ``v`` (cell-centred velocity, zero in solids), ``mask`` (1 in fluid, 0 in solid cells,
CFDBench's convention) and one constant channel per case parameter, as CFDBench feeds the case
parameters to its models (``speed, density, viscosity`` and two or three geometry numbers).
Inputs ``[C, n, n]`` are the state at ``t = 0``; outputs ``[T, C, n, n]``. Arrays are
``[y, x]`` (rows = y, CFDBench's ``[H, W]``). The solver grid has ``resolution * refine`` cells
on each axis of each case's box (so a geometry case is resampled to the same ``n x n`` frame,
as CFDBench interpolates every case to 64x64); frames are block averages when ``refine > 1``.

Ranges (scaled units; CFDBench's from its generation scripts, generation-code/fluent-scheme/
create_scheme.py, or its dataset code, src/dataset/*.py). The solver refuses cell Reynolds numbers
``U h / nu > 25``, so ranges whose Reynolds numbers a 64x64 grid cannot resolve are narrowed:

============  ===========  ======================================  =================================
problem       subset       here (defaults)                         CFDBench
============  ===========  ======================================  =================================
cavity        bc           lid speed 1-50 (rho 1, mu 0.05, box 1)   lid speed 1-50 m/s (rho 1, mu 1e-5)
cavity        prop         rho 1-10, nu 0.01-0.1 (speed 10)         rho 0.1-10, mu 1e-5..1e-2
cavity        geo          width, height 0.5-1.5                    width and height (25 cases)
tube          bc           inlet 0.1-1.5 (rho 100, mu 0.1)          inlet 0.1-5 (rho 100, mu 0.1)
tube          prop         rho 10-1000, nu 1e-3..1e-2              rho 10-1000, mu 0.01-1
tube          geo          width 0.5-1.5, height 0.1-0.3            width and height
cylinder      bc           inlet 0.5-1.5 (rho 10, mu 0.02, r 0.1)   inlet speed (rho 10, mu 1e-3)
cylinder      prop         rho 1-100, nu 2e-3..1e-2                 density and viscosity
cylinder      geo          r 0.05-0.15, centre x, y 0.3-0.7         radius and position
barrier       bc           inlet 0.05-1 (rho 100, mu 0.1)           inlet 0.05-2 (rho 100, mu 0.1)
barrier       prop         rho 10-1000, nu 1e-3..1e-2              rho 10-1000, mu 0.01-1
barrier       geo          barrier h 0.05-0.2, w 0.05-0.15          barrier height and width
============  ===========  ======================================  =================================

In ``prop`` subsets the density and the kinematic viscosity ``nu = mu / rho`` are drawn
log-uniformly (``mu = rho nu``), which keeps the Reynolds number resolvable; other draws are
uniform. The barrier's channel (1.5 x 0.4, barrier at x = 0.5, h 0.1, w 0.05, rho 100, mu 0.1,
inlet 1) is CFDBench's dam case.json example; a 64x64 frame of it has CFDBench's dx, dy.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ParameterError
from ..solvers.incompressible import BC, IncompressibleFlow, box_mask, disk_mask
from .base import Axis, Param, Problem, positive, record_times

SUBSETS = ("bc", "prop", "geo")
REFERENCE = ("CFDBench (Luo, Chen & Zhang 2023, arXiv:2310.05963) set-ups, solved by oplab's projection-method "
             "solver (oplab.solvers.incompressible)")


class _Flow(Problem):
    """Common machinery: case parameters -> solver -> frames ``[T, C, n, n]``."""

    #: base case: name -> value (speed, density, viscosity = dynamic mu, geometry numbers)
    BASE: dict = {}
    #: the case parameters carried as constant channels, in order
    CASE_KEYS: tuple = ()
    #: subset -> {quantity: (lo, hi)}; "nu" means kinematic viscosity (prop, with density)
    VARY: dict = {}
    default_resolution = 64
    min_resolution = 8

    @classmethod
    def _spec(cls) -> tuple:
        params = [
            Param("subset", "bc", "CFDBench subset: bc (inlet/lid speed), prop (density, viscosity), geo (geometry)",
                  choices=SUBSETS),
            positive("t_end", 1.0, "final time (scaled units); a multiple of record_every"),
            positive("record_every", 0.1, "time between frames (CFDBench: 0.1 s)"),
            Param("refine", 1, "solver cells per frame cell on each axis (frames are block averages)",
                  check=lambda v: 1 <= v <= 8, expect="in [1, 8]"),
        ]
        for key, value in cls.BASE.items():
            params.append(positive(key, float(value), f"base {key} (used unless the subset varies it)"))
        seen = set()
        for subset, ranges in cls.VARY.items():
            for key, (lo, hi) in ranges.items():
                if key in seen:
                    continue
                seen.add(key)
                params.append(positive(f"{key}_min", float(lo), f"{subset} subset: smallest {key}"))
                params.append(positive(f"{key}_max", float(hi), f"{subset} subset: largest {key}"))
        return tuple(params)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.params_spec = cls._spec()
        cls.input_channels = ("u", "v", "mask", *cls.CASE_KEYS)
        cls.output_channels = cls.input_channels
        cls.static_channels = ("mask", *cls.CASE_KEYS)

    # ------------------------------------------------------------ checks
    def _check(self) -> None:
        self.output_times()
        p = self.params
        for key in {k for r in self.VARY.values() for k in r}:
            if not p[f"{key}_min"] <= p[f"{key}_max"]:
                raise ParameterError(f"{self.name}: {key}_min {p[key + '_min']!r} must be <= {key}_max "
                                     f"{p[key + '_max']!r}")
        # every corner of the varied ranges must give a valid, resolvable case
        ranges = self.VARY[p["subset"]]
        keys = list(ranges)
        for corner in range(2 ** len(keys)):
            draw = {k: p[f"{k}_{'max' if corner >> i & 1 else 'min'}"] for i, k in enumerate(keys)}
            case = self._case(draw)
            self._geometry(case)
            self._check_cell_re(case)

    def _case(self, draw: dict) -> dict:
        """The case parameters (``CASE_KEYS``) of a draw of the varied quantities."""
        case = {k: self.params[k] for k in self.BASE}
        nu = draw.pop("nu", None)
        case.update(draw)
        if nu is not None:
            case["viscosity"] = case["density"] * nu
        return case

    def _check_cell_re(self, case: dict) -> None:
        lx, ly = self._box(case)
        n = self.resolution * self.params["refine"]
        nu = case["viscosity"] / case["density"]
        h = max(lx, ly) / n
        re = case["speed"] * h / nu
        if re > 25.0:
            raise ParameterError(
                f"{self.name}: subset {self.params['subset']!r} reaches cell Reynolds number U h / nu = "
                f"{case['speed']:g} * {h:.3g} / {nu:.3g} = {re:.1f} > 25 (Re = {case['speed'] * max(lx, ly) / nu:.4g}) "
                f"on the {n}x{n} solver grid; narrow the speed/viscosity ranges or raise refine")

    # ------------------------------------------------------------ geometry
    def _box(self, case: dict) -> tuple[float, float]:
        """The domain ``(lx, ly)``: the case's ``width, height`` (fixed-channel flows override it)."""
        return case["width"], case["height"]

    def _solid(self, case: dict, n: int) -> np.ndarray | None:
        """Solid cells ``[nx, ny]`` (solver layout) or None."""
        return None

    def _bcs(self, case: dict) -> dict:
        raise NotImplementedError

    def _geometry(self, case: dict):
        n = self.resolution * self.params["refine"]
        return self._solid(case, n)

    # ------------------------------------------------------------ grid
    def input_axes(self) -> list[Axis]:
        lx, ly = self._box(dict(self.BASE) | {k: self.params[k] for k in self.BASE})
        n = self.resolution
        return [Axis("y", n, 0.5 * ly / n, ly - 0.5 * ly / n), Axis("x", n, 0.5 * lx / n, lx - 0.5 * lx / n)]

    def output_times(self) -> np.ndarray:
        return record_times(self.name, self.params["t_end"], self.params["record_every"])

    @property
    def solver_name(self) -> str:
        return "IncompressibleFlow (projection method, MAC grid, SSP-RK3)"

    # ------------------------------------------------------------ sampling / solving
    def draw_case(self, rng: np.random.Generator) -> dict:
        draw = {}
        for key, _ in self.VARY[self.params["subset"]].items():
            lo, hi = self.params[f"{key}_min"], self.params[f"{key}_max"]
            if self.params["subset"] == "prop":  # density and kinematic viscosity: log-uniform
                draw[key] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            else:
                draw[key] = float(rng.uniform(lo, hi))
        return self._case(draw)

    def _flow(self, case: dict) -> IncompressibleFlow:
        lx, ly = self._box(case)
        n = self.resolution * self.params["refine"]
        return IncompressibleFlow(n, n, lx, ly, rho=case["density"], mu=case["viscosity"],
                                  mask=self._solid(case, n), **self._bcs(case))

    def _frame(self, flow: IncompressibleFlow, u: np.ndarray, v: np.ndarray, case: dict) -> np.ndarray:
        """``[C, n, n]`` from cell fields ``[nx, ny]`` (solver layout)."""
        return self._channels([u, v, (~flow.solid).astype(np.float64)], case)

    def _channels(self, fields: list, case: dict) -> np.ndarray:
        """``[C, n, n]``: cell fields ``[nx, ny]`` (solver layout) as ``[y, x]`` frames, block-averaged
        when ``refine > 1``, then one constant channel per case parameter."""
        r, n = self.params["refine"], self.resolution
        frames = [a.T.reshape(n, r, n, r).mean(axis=(1, 3)) if r > 1 else a.T for a in fields]
        return np.stack(frames + [np.full((n, n), case[k]) for k in self.CASE_KEYS])

    def sample_inputs(self, rng: np.random.Generator) -> np.ndarray:
        case = self.draw_case(rng)
        flow = self._flow(case)
        u, v = flow.cell_velocity()
        return self._frame(flow, u, v, case)

    def case_of(self, inputs: np.ndarray) -> dict:
        """The case parameters read back from the constant channels of ``inputs``."""
        return {k: float(inputs[3 + i, 0, 0]) for i, k in enumerate(self.CASE_KEYS)} | {
            k: self.params[k] for k in self.BASE if k not in self.CASE_KEYS}

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        case = self.case_of(np.asarray(inputs))
        flow = self._flow(case)
        times = self.output_times()
        rec = flow.run(times[-1], times)
        return np.stack([self._frame(flow, rec.u[k], rec.v[k], case) for k in range(len(times))])

    def describe(self) -> dict:
        d = super().describe()
        d["case_keys"] = list(self.CASE_KEYS)
        return d


class Cavity(_Flow):
    """Lid-driven cavity flow (CFDBench ``cavity``)."""

    name = "cavity"
    summary = "CFDBench lid-driven cavity (subset bc/prop/geo): first frame + case parameters -> frames u, v, mask"
    reference = REFERENCE
    BASE = {"speed": 10.0, "density": 1.0, "viscosity": 0.05, "width": 1.0, "height": 1.0}
    CASE_KEYS = ("speed", "density", "viscosity", "height", "width")
    VARY = {"bc": {"speed": (1.0, 50.0)},
            "prop": {"density": (1.0, 10.0), "nu": (0.01, 0.1)},
            "geo": {"width": (0.5, 1.5), "height": (0.5, 1.5)}}

    def _bcs(self, case):
        return {"left": BC.wall(), "right": BC.wall(), "bottom": BC.wall(), "top": BC.wall(case["speed"])}


class Tube(_Flow):
    """Channel ("tube") flow from a uniform inlet (CFDBench ``tube``)."""

    name = "tube"
    summary = "CFDBench flow in a tube/channel (subset bc/prop/geo): first frame + case parameters -> frames u, v, mask"
    reference = REFERENCE
    BASE = {"speed": 1.0, "density": 100.0, "viscosity": 0.1, "width": 1.0, "height": 0.2}
    CASE_KEYS = ("speed", "density", "viscosity", "height", "width")
    VARY = {"bc": {"speed": (0.1, 1.5)},
            "prop": {"density": (10.0, 1000.0), "nu": (1e-3, 1e-2)},
            "geo": {"width": (0.5, 1.5), "height": (0.1, 0.3)}}

    def _bcs(self, case):
        return {"left": BC.inflow(case["speed"]), "right": BC.outflow(), "bottom": BC.wall(), "top": BC.wall()}


class Cylinder(_Flow):
    """Flow past a circular cylinder (CFDBench ``cylinder``; Karman vortex street above Re ~ 47)."""

    name = "cylinder"
    summary = "CFDBench flow around a cylinder (subset bc/prop/geo): first frame + case parameters -> frames u, v, mask"
    reference = REFERENCE
    BASE = {"speed": 1.0, "density": 10.0, "viscosity": 0.02, "radius": 0.1, "center_x": 0.5, "center_y": 0.49}
    CASE_KEYS = ("speed", "density", "viscosity", "radius", "center_x", "center_y")
    VARY = {"bc": {"speed": (0.5, 1.5)},
            "prop": {"density": (1.0, 100.0), "nu": (2e-3, 1e-2)},
            "geo": {"radius": (0.05, 0.15), "center_x": (0.3, 0.7), "center_y": (0.3, 0.7)}}
    LX, LY = 2.0, 1.0

    def _box(self, case):
        return self.LX, self.LY

    def _solid(self, case, n):
        return disk_mask(n, n, self.LX, self.LY, (case["center_x"], case["center_y"]), case["radius"])

    def _bcs(self, case):
        return {"left": BC.inflow(case["speed"]), "right": BC.outflow(), "bottom": BC.slip(), "top": BC.slip()}


class Barrier(_Flow):
    """Single-phase channel flow over a barrier on the floor (the geometry of CFDBench's two-phase
    ``dam`` case, which is the ``dam`` problem)."""

    name = "barrier"
    summary = ("single-phase flow over a floor barrier (geometry of CFDBench's two-phase 'dam', the dam problem; "
               "subset bc/prop/geo): first frame + case parameters -> frames u, v, mask")
    reference = REFERENCE
    BASE = {"speed": 1.0, "density": 100.0, "viscosity": 0.1, "barrier_height": 0.1, "barrier_width": 0.05}
    CASE_KEYS = ("speed", "density", "viscosity", "barrier_height", "barrier_width")
    VARY = {"bc": {"speed": (0.05, 1.0)},
            "prop": {"density": (10.0, 1000.0), "nu": (1e-3, 1e-2)},
            "geo": {"barrier_height": (0.05, 0.2), "barrier_width": (0.05, 0.15)}}
    LX, LY, X0 = 1.5, 0.4, 0.5

    def _box(self, case):
        return self.LX, self.LY

    def _solid(self, case, n):
        return box_mask(n, n, self.LX, self.LY, self.X0, self.X0 + case["barrier_width"], 0.0, case["barrier_height"])

    def _bcs(self, case):
        return {"left": BC.inflow(case["speed"]), "right": BC.outflow(), "bottom": BC.wall(), "top": BC.slip()}
