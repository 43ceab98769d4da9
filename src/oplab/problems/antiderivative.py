"""The antiderivative operator, DeepONet's first benchmark.

Lu, Jin, Pang, Zhang & Karniadakis 2021, "Learning nonlinear operators via
DeepONet based on the universal approximation theorem of operators", Nature
Machine Intelligence 3, 218-229 (arXiv:1910.03193). Section "Simple 1D
dynamic systems" studies ``ds/dx = g(s(x), v(x), x)`` on ``[0, 1]`` with
``s(0) = 0``; its first case ``g = v`` is the (linear) antiderivative operator

    G: v  ->  u,      u(x) = integral_0^x v(s) ds,      x in [0, 1].

The input space (section "Function spaces" of the Methods) is a zero-mean
Gaussian process with the squared-exponential kernel

    k(x, y) = variance * exp(-|x - y|^2 / (2 l^2)),     l = 0.2,

observed at ``m = 100`` equispaced sensors ``x_j = j / (m - 1)`` (the paper's
``m``), here the problem's resolution.

Reference solver
----------------
The sensor values define ``v`` through its not-a-knot cubic spline
interpolant ``S`` (:class:`scipy.interpolate.CubicSpline`), whose
antiderivative is a piecewise quartic evaluated exactly:

    u(x_j) = integral_0^{x_j} S(s) ds.

Not-a-knot splines reproduce cubic polynomials, so the operator is exact (to
round-off) for ``v`` of degree <= 3. For a smooth ``v`` the interpolation
error is ``O(h^4)`` with ``h = 1 / (m - 1)`` and so is the error of ``u``.
Four sensors are the minimum of a not-a-knot cubic spline.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline

from ..solvers.random_fields import rbf_gp
from .base import Axis, Problem, positive


def spline_antiderivative(x: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
    """``integral_{x[0]}^{x_j} S(s) ds`` at every node ``x_j``, with ``S`` the
    not-a-knot cubic spline through ``(x, v)`` along ``axis`` (same shape as ``v``)."""
    spline = CubicSpline(x, v, axis=axis, bc_type="not-a-knot")
    integral = spline.antiderivative()(x)
    # PPoly.antiderivative already vanishes at x[0]; subtracting makes it exact.
    return integral - np.take(integral, [0], axis=axis)


class Antiderivative(Problem):
    """``u(x) = integral_0^x v(s) ds`` for ``v`` a GP sample (RBF kernel) at
    ``resolution`` sensors; inputs ``[1, m]`` ("v"), outputs ``[1, m]`` ("u")."""

    name = "antiderivative"
    summary = "u(x) = int_0^x v: DeepONet's antiderivative operator on a GP with RBF kernel"
    reference = (
        "Lu et al. 2021, 'Learning nonlinear operators via DeepONet based on the universal "
        "approximation theorem of operators', Nat. Mach. Intell. 3:218, "
        "section 'Simple 1D dynamic systems' (case g = v)"
    )
    params_spec = (
        positive("length_scale", 0.2, "length scale l of the RBF kernel of the input GP"),
        positive("variance", 1.0, "variance of the input GP (kernel amplitude)"),
    )
    default_resolution = 100  # the paper's m sensors
    min_resolution = 4  # a not-a-knot cubic spline needs four nodes
    input_channels = ("v",)
    output_channels = ("u",)
    chunk_size = 1

    def input_axes(self) -> list[Axis]:
        return [Axis("x", self.resolution, 0.0, 1.0)]

    @property
    def solver_name(self) -> str:
        return "not-a-knot cubic spline, exact antiderivative"

    def sample_inputs(self, rng: np.random.Generator) -> np.ndarray:
        v = rbf_gp(
            rng,
            self.resolution,
            length_scale=self.params["length_scale"],
            variance=self.params["variance"],
        )
        return v[None, :]  # [1, m]

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        """``[1, m] -> [1, m]``.

        One sample at a time (the base class's ``solve_batch`` loops), so a
        sample's output is bit-for-bit the same whatever batch it is in.
        """
        inputs = np.asarray(inputs, dtype=np.float64)
        if inputs.shape != self.input_shape():
            raise ValueError(
                f"{self.name}: expected inputs of shape {self.input_shape()}, got {inputs.shape}"
            )
        x = self.input_axes()[0].coords()
        return spline_antiderivative(x, inputs, axis=-1)  # [1, m]
