"""Gas-flow dynamics of a diesel engine with EGR and VGT: actuator sequences -> state trajectories.

The operator of the neural-operator digital twins of Kumar, Goswami, Karniadakis et al. ("Real-time
prediction of gas flow dynamics in diesel engines using a deep neural operator framework"; "From
PINNs to neural operators: a digital twin of a diesel engine"), who learn the sequence-to-sequence
map of the mean-value engine model of Wahlstrom & Eriksson 2011 (Proc. IMechE Part D 225(7):960-986;
equations and parameters in :mod:`oplab.solvers.engine`)::

    G: (u_delta, u_egr, u_vgt, n_e)(t)  ->  x(t),    t in [0, t_end],

inputs: fuel injection u_delta [mg/cycle/cylinder], EGR valve command u_egr [%] (0 closed),
VGT command u_vgt [%] (100 open), engine speed n_e [rpm]; outputs: all eight states of the model,
in SI units,

    p_im [Pa], p_em [Pa], X_Oim [-], X_Oem [-], omega_t [rad/s],
    u_egr1 [%], u_egr2 [%], u_vgt_act [%]

(intake and exhaust manifold pressures and oxygen mass fractions, turbocharger speed, and the
three actuator states: the two first-order EGR-valve states whose combination
``K_egr u_egr1 - (K_egr - 1) u_egr2`` is the valve position with its overshoot, and the VGT
position). Inputs ``[4, n]`` and outputs ``[8, n]`` live on the same time grid
``Axis("t", n, 0, t_end)`` (``n`` = resolution): a time series is a 1D "grid", as in the
antiderivative problem; ``output_times()`` is None.

Input distribution: each channel independently is piecewise constant with ``segments`` levels drawn
uniformly from its range, switching at times drawn uniformly in (0, t_end), each switch a linear
ramp of ``ramp`` seconds (``speed_ramp`` for n_e: an engine's speed does not jump); the sequence is
sampled on the grid. The default ranges (u_delta 80-200 mg/cycle, n_e 1000-2000 rpm, u_egr 0-100 %,
u_vgt 20-100 %) keep the model inside its region of validity: the steady states in it have air
excess lambda_O > 1 and the efficiency models inside their fitted range (low fuel with an open VGT
at low speed drives the compressor-efficiency model towards zero and below; the model saturates
the efficiencies at 0.2, see :data:`oplab.solvers.engine.ETA_MIN`). Transients may still be rich
for a moment (a fuel step is faster than the turbocharger: lambda_O < 1 in about 5 % of the
default samples, where the exhaust oxygen fraction is clipped at 0) or touch the efficiency bound
(about 1 %): measured on 150 default samples.

Reference solver: the inputs are the piecewise-linear interpolants of the samples (so the sampled
sequence *is* the input); the trajectory starts in equilibrium, at the steady state of the first
input values (``steady_state``: Powell's hybrid root finder on the right-hand side, the delayed
commands held at their first values before t = 0), and is integrated with LSODA (``rtol``, absolute
tolerances ``rtol`` times the state magnitudes) from kink to kink of the inputs, so the integrator
never steps across a slope discontinuity. Verified in tests/test_engine.py: tolerance convergence,
agreement with fixed-step RK4 and with Radau, zero residual and mass balance at steady states.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from ..solvers.engine import INPUTS, LIMITS, STATES, Inputs, simulate, steady_state
from .base import Axis, Param, Problem, positive

UNITS = {"u_delta": "mg/cycle", "u_egr": "%", "u_vgt": "%", "n_e": "rpm", "p_im": "Pa", "p_em": "Pa",
         "X_Oim": "-", "X_Oem": "-", "omega_t": "rad/s", "u_egr1": "%", "u_egr2": "%", "u_vgt_act": "%"}
#: the default sampling ranges (inside :data:`oplab.solvers.engine.LIMITS`)
RANGES = {"u_delta": (80.0, 200.0), "u_egr": (0.0, 100.0), "u_vgt": (20.0, 100.0), "n_e": (1000.0, 2000.0)}


def _range_params() -> tuple:
    out = []
    for name in INPUTS:
        lo, hi = RANGES[name]
        out.append(Param(f"{name}_min", lo, f"lowest sampled {name} ({UNITS[name]})"))
        out.append(Param(f"{name}_max", hi, f"highest sampled {name} ({UNITS[name]})"))
    return tuple(out)


def piecewise_ramps(rng: np.random.Generator, t: np.ndarray, lo: float, hi: float, segments: int,
                    ramp: float) -> np.ndarray:
    """A sequence on ``t``: ``segments`` levels uniform in ``[lo, hi]``, switching at sorted uniform
    times in ``(t[0], t[-1])`` with linear ramps of ``ramp`` seconds (a ramp starting before the
    previous one ended starts from wherever that one has got to)."""
    levels = rng.uniform(lo, hi, size=segments)
    switches = np.sort(rng.uniform(t[0], t[-1], size=segments - 1))
    u = np.full(t.shape, levels[0])
    for s, level in zip(switches, levels[1:]):
        w = np.clip((t - s) / ramp, 0.0, 1.0)
        u = u + w * (level - np.interp(s, t, u))
    return np.clip(u, lo, hi)


class Engine(Problem):
    """Actuator sequences ``[4, n]`` (u_delta, u_egr, u_vgt, n_e) -> the eight states ``[8, n]`` of
    the Wahlstrom-Eriksson diesel engine model on the same time grid, starting in equilibrium."""

    name = "engine"
    summary = "diesel engine with EGR and VGT (Wahlstrom & Eriksson 2011): actuator sequences -> gas-flow states"
    reference = (
        "Wahlstrom & Eriksson 2011, 'Modelling diesel engines with a variable-geometry turbocharger and exhaust "
        "gas recirculation by optimization of model parameters for capturing non-linear system dynamics', "
        "Proc. IMechE Part D 225(7):960-986 (model and parameters); Kumar, Goswami, Karniadakis et al., "
        "'Real-time prediction of gas flow dynamics in diesel engines using a deep neural operator framework' "
        "(the operator)"
    )
    params_spec = (
        positive("t_end", 10.0, "length of a sequence (s)"),
        Param("segments", 4, "levels per input channel (segments - 1 switches)", check=lambda v: v >= 1,
              expect=">= 1"),
        positive("ramp", 0.3, "duration of a switch of u_delta, u_egr, u_vgt (s)"),
        positive("speed_ramp", 2.0, "duration of a switch of the engine speed n_e (s)"),
        *_range_params(),
        positive("rtol", 1e-7, "relative tolerance of the integrator (absolute: rtol x state magnitudes)"),
    )
    default_resolution = 201  # 0.05 s between samples at t_end = 10 s
    min_resolution = 11
    input_channels = INPUTS
    output_channels = STATES
    units = UNITS
    limits = LIMITS

    def _check(self) -> None:
        p = self.params
        for name in INPUTS:
            lo, hi = p[f"{name}_min"], p[f"{name}_max"]
            a, b = LIMITS[name]
            if not a <= lo < hi <= b:
                raise ParameterError(
                    f"{self.name}: sampled range of {name} [{lo:g}, {hi:g}] must be increasing and inside the "
                    f"model's limits [{a:g}, {b:g}] {UNITS[name]}"
                )
        if p["rtol"] >= 1e-2:
            raise ParameterError(f"{self.name}: parameter 'rtol' must be < 1e-2, got {p['rtol']!r}")

    def input_axes(self) -> list[Axis]:
        return [Axis("t", self.resolution, 0.0, self.params["t_end"])]

    @property
    def solver_name(self) -> str:
        return "mean-value model, steady initial state (hybrid root finder), LSODA between input kinks"

    def sample_inputs(self, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        t = self.input_axes()[0].coords()
        rows = []
        for name in INPUTS:
            ramp = p["speed_ramp"] if name == "n_e" else p["ramp"]
            rows.append(piecewise_ramps(rng, t, p[f"{name}_min"], p[f"{name}_max"], p["segments"], ramp))
        return np.stack(rows)  # [4, n]

    def check_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """``inputs`` as float64 ``[4, n]``; a ParameterError naming the channel, the value, the time
        and the allowed range when an actuator leaves its limits (or a value is not finite)."""
        inputs = np.asarray(inputs, dtype=np.float64)
        if inputs.shape != self.input_shape():
            raise ParameterError(
                f"{self.name}: expected inputs of shape {self.input_shape()} (channels {', '.join(INPUTS)} on "
                f"{self.resolution} times), got {inputs.shape}"
            )
        t = self.input_axes()[0].coords()
        for row, name in zip(inputs, INPUTS):
            lo, hi = LIMITS[name]
            bad = ~np.isfinite(row) | (row < lo) | (row > hi)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise ParameterError(
                    f"{self.name}: input {name} = {row[k]:g} {UNITS[name]} at t = {t[k]:g} s is outside its "
                    f"allowed range [{lo:g}, {hi:g}] {UNITS[name]} ({int(bad.sum())} such sample(s))"
                )
        return inputs

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        """``[4, n] -> [8, n]``: the trajectory from the steady state of the first input values."""
        inputs = self.check_inputs(inputs)
        t = self.input_axes()[0].coords()
        try:
            x0 = steady_state(*inputs[:, 0])
            return simulate(Inputs(t, inputs), t, x0=x0, rtol=self.params["rtol"])
        except RuntimeError as exc:  # no equilibrium, or an integration that stalls
            raise ParameterError(f"{self.name}: {exc} (inputs outside the model's region of validity?)") from None
