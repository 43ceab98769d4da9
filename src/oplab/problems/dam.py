"""CFDBench's "dam" flow (Luo, Chen & Zhang 2023, arXiv:2310.05963): water flowing into a channel
and over a rectangular barrier on its floor, a TWO-PHASE (water and air) free-surface flow, solved
with :class:`~oplab.solvers.free_surface.FreeSurfaceFlow` (volume of fluid, MAC grid, projection
method; its module docstring has the numerics and the verification against Martin & Moyce's dam
break).

Set-up, as read from CFDBench's generation scripts (ANSYS Fluent VOF; ``generation-code/icem-rpl``
for the mesh, ``generation-code/fluent-scheme/sample_step*.txt`` for the run, ``src/dataset/dam.py``
for the exported window), in CFDBench's units (m, s, kg/m^3, Pa s):

* the channel is 1.5 long; the frames cover its lowest 0.4 (CFDBench interpolates ``[0, 1.5] x
  [0, 0.4]`` to 64x64: its ``case.json`` has ``width 1.5, height 0.4``); the Fluent mesh goes up to
  1.0 -- here the domain is the frame window and its top is open (``p = 0``: air leaves and enters
  there as if the air space went on); the water stays below it in the runs checked (up to y ~ 0.37
  at speed 2, and what might cross it would count as outflow);
* the barrier (a solid staircase box) stands on the floor at ``0.5 <= x <= 0.5 + barrier_width``,
  ``barrier_height`` high;
* water enters through the lower part ``0 <= y <= 0.1`` of the left side at the uniform ``speed``
  (Fluent's ``inlet_velocity``); the rest of the left side is open (Fluent's ``inlet_pressure``,
  gauge 0: air, and water above the inlet's height, may cross it) unless ``upper_left=wall``; the
  right side is an open outlet (``p = 0``: water leaves as over a free overfall); the floor is a
  no-slip wall; gravity ``9.81`` downwards (not in the scripts; a free-surface flow needs it);
* at ``t = 0`` the water fills ``[0, 0.5] x [0, 0.1]`` (Fluent patches a ``region_0`` with water
  at the inlet speed; the mesh's blocks suggest this one, the block upstream of the barrier below
  the inlet's height -- an assumption) and moves at ``speed`` (made divergence-free by the first
  projection); air at rest elsewhere;
* air: Fluent's default air, density 1.225, viscosity 1.7894e-5; water: ``density``, ``viscosity``.

Channels: ``u``, ``v`` (cell-centred velocity of the mixture, zero in solids), ``alpha`` (the water
fraction, dynamic), ``mask`` (1 in fluid, 0 in solid cells) and one constant channel per case
parameter (``speed, density, viscosity, barrier_height, barrier_width``); ``static_channels`` are
the mask and the case parameters. The mixture velocity includes the air's: where the falling sheet
closes over an air pocket behind the barrier the (incompressible) air escapes at up to 10-20 m/s for
a few steps, and frames show air speeds of several m/s (3-8 m/s in six 64x64 samples). Inputs ``[C, n, n]`` are the state at ``t = 0``, outputs ``[T, C,
n, n]`` at ``record_every, ..., t_end`` (CFDBench exports every 0.1 s for 10 s; the default
``t_end`` here is 2 s to keep a 64x64 sample near 15-30 s of CPU; ``t_end=10`` is CFDBench's).
Arrays are ``[y, x]``; the solver grid has ``resolution * refine`` cells on each axis (frames are
block averages when ``refine > 1``).

Ranges (CFDBench's from ``create_scheme.py`` "4. For step flow" and ``icem-rpl/mesh.py``):

=======  =========================================  ===========================================
subset   here (defaults)                            CFDBench
=======  =========================================  ===========================================
bc       speed 0.05-2 (rho 100, mu 0.1, h 0.15,     inlet velocity 0.05-1 (step 0.05) and
         w 0.05)                                    1.02-2 (step 0.02)
prop     density 10-1000 and mu / density           density 10-1000 x viscosity 0.01-1
         1e-4..1e-2, log-uniform (speed 1)          (10 x 10 cases: mu / density 1e-5..0.1)
geo      barrier_height 0.11-0.15, barrier_width    h 0.11-0.15 (5 values) x w 0.01-0.10
         0.05-0.10                                  (10 values)
=======  =========================================  ===========================================

Why narrowed: the barrier width starts at 0.05 because a 64-cell frame has cells 1.5 / 64 =
0.023 wide, and a barrier must cover at least two of them to exist as more than a line (0.01 is
less than half a cell); the kinematic viscosity ``mu / density`` is capped at 1e-2 because the
viscous term is explicit and its step, ``~ dy^2 / (8 nu)``, falls below the advective one above
about 3e-3 on a 64-cell grid (at 1e-2 a sample costs three times the base case, at CFDBench's 0.1
thirty); below 1e-4 the water's viscous layers are far thinner than a cell and the result no
longer changes. The base barrier is 0.15 high and 0.05 wide as in CFDBench's meshing record
(``record_icem_rpl.md``: points (0.5, 0.15), (0.55, 0.15)); the ``case.json`` example in
``dam.py`` has 0.1 x 0.05, and the meshing script needs the barrier above the inlet's 0.1.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from ..solvers.free_surface import FreeSurfaceFlow, Inlet, box_fractions
from ..solvers.incompressible import box_mask
from .base import Param, positive
from .cfd_flows import _Flow

AIR_DENSITY, AIR_VISCOSITY = 1.225, 1.7894e-5  # ANSYS Fluent's default air
GRAVITY = 9.81


class Dam(_Flow):
    """Two-phase (water and air) flow over a barrier on a channel floor (CFDBench ``dam``)."""

    name = "dam"
    summary = ("CFDBench two-phase dam flow (water over a floor barrier, VOF; subset bc/prop/geo): first frame "
               "+ case parameters -> frames u, v, alpha, mask")
    reference = ("CFDBench (Luo, Chen & Zhang 2023, arXiv:2310.05963) dam set-up, solved by oplab's two-phase "
                 "VOF solver (oplab.solvers.free_surface)")
    BASE = {"speed": 1.0, "density": 100.0, "viscosity": 0.1, "barrier_height": 0.15, "barrier_width": 0.05}
    CASE_KEYS = ("speed", "density", "viscosity", "barrier_height", "barrier_width")
    VARY = {"bc": {"speed": (0.05, 2.0)},
            "prop": {"density": (10.0, 1000.0), "nu": (1e-4, 1e-2)},
            "geo": {"barrier_height": (0.11, 0.15), "barrier_width": (0.05, 0.10)}}
    LX, LY, X0, INLET = 1.5, 0.4, 0.5, 0.1
    default_resolution = 64
    min_resolution = 16

    @classmethod
    def _spec(cls) -> tuple:
        params = []
        for p in super()._spec():
            if p.name == "t_end":
                p = positive("t_end", 2.0, "final time (s); a multiple of record_every (CFDBench: 10)")
            params.append(p)
        params.append(Param("upper_left", "open", "the left side above the inlet: open (p = 0, CFDBench's pressure "
                            "inlet) or a no-slip wall", choices=("open", "wall")))
        return tuple(params)

    # ------------------------------------------------------------ checks
    def _check_cell_re(self, case: dict) -> None:
        """The solver's upwind-biased advection is bounded at any cell Reynolds number; what must hold
        is that the grid resolves the barrier and the inlet."""
        n = self.resolution * self.params["refine"]
        dx, dy = self.LX / n, self.LY / n
        h, w = case["barrier_height"], case["barrier_width"]
        if not (0.0 < h < self.LY and self.X0 + w < self.LX):
            raise ParameterError(f"{self.name}: the barrier (height {h:g}, width {w:g} at x = {self.X0:g}) must lie "
                                 f"inside the {self.LX:g} x {self.LY:g} channel")
        if w < dx * (1 - 1e-9):
            raise ParameterError(f"{self.name}: barrier_width {w:g} is less than one solver cell ({dx:.3g}) on the "
                                 f"{n}x{n} grid; raise the resolution or the width")
        if h < 2.0 * dy:
            raise ParameterError(f"{self.name}: barrier_height {h:g} is less than two solver cells ({dy:.3g}) on "
                                 f"the {n}x{n} grid; raise the resolution or the height")

    # ------------------------------------------------------------ geometry
    def _box(self, case):
        return self.LX, self.LY

    def _solid(self, case, n):
        return box_mask(n, n, self.LX, self.LY, self.X0, self.X0 + case["barrier_width"], 0.0, case["barrier_height"])

    def _flow(self, case: dict) -> FreeSurfaceFlow:
        n = self.resolution * self.params["refine"]
        speed = case["speed"]
        flow = FreeSurfaceFlow(n, n, self.LX, self.LY, rho=(case["density"], AIR_DENSITY),
                               mu=(case["viscosity"], AIR_VISCOSITY), gravity=(0.0, -GRAVITY),
                               left="outflow" if self.params["upper_left"] == "open" else "wall",
                               right="outflow", bottom="wall", top="outflow",
                               inlets=[Inlet("left", speed, 0.0, self.INLET)], mask=self._solid(case, n))
        x0, h = self.X0, self.INLET
        flow.set_alpha(box_fractions(n, n, self.LX, self.LY, 0.0, x0, 0.0, h))
        flow.set_velocity(lambda x, y: speed * ((x <= x0) & (y < h)), None)
        return flow

    # ------------------------------------------------------------ frames
    @property
    def solver_name(self) -> str:
        return "FreeSurfaceFlow (two-phase VOF, MAC grid, projection method)"

    def _frame(self, flow: FreeSurfaceFlow, u: np.ndarray, v: np.ndarray, alpha: np.ndarray, case: dict) -> np.ndarray:
        return self._channels([u, v, alpha, (~flow.solid).astype(np.float64)], case)

    def sample_inputs(self, rng: np.random.Generator) -> np.ndarray:
        case = self.draw_case(rng)
        flow = self._flow(case)
        u, v = flow.cell_velocity()
        return self._frame(flow, u, v, flow.alpha, case)

    def case_of(self, inputs: np.ndarray) -> dict:
        """The case parameters read back from the constant channels of ``inputs``."""
        return {k: float(inputs[4 + i, 0, 0]) for i, k in enumerate(self.CASE_KEYS)}

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        case = self.case_of(np.asarray(inputs))
        flow = self._flow(case)
        times = self.output_times()
        rec = flow.run(times[-1], times)
        return np.stack([self._frame(flow, rec.u[k], rec.v[k], rec.alpha[k], case) for k in range(len(times))])


Dam.input_channels = ("u", "v", "alpha", "mask", *Dam.CASE_KEYS)
Dam.output_channels = Dam.input_channels
Dam.static_channels = ("mask", *Dam.CASE_KEYS)
