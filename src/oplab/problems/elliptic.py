"""What the unit-square elliptic problems (Darcy, Poisson, Helmholtz) share:
the node grid ``linspace(0, 1, n)^2`` and the five-point solver of
:mod:`oplab.solvers.fd` with a choice of linear solver."""

from __future__ import annotations

from ..solvers import linear
from .base import Axis, Param, Problem, positive

#: the linear-solver parameters of symmetric positive definite problems
SPD_SOLVER_PARAMS = (
    Param("solver", "direct", "linear solver (oplab.solvers.linear)", choices=linear.METHODS),
    positive("tol", 1e-10, "relative residual of iterative solvers"),
)


class UnitSquareProblem(Problem):
    """A problem on the ``n x n`` node grid of the unit square, solved by finite differences."""

    min_resolution = 5

    def input_axes(self) -> list[Axis]:
        n = self.resolution
        return [Axis("x", n), Axis("y", n)]

    @property
    def solver_name(self) -> str:
        return f"fd5-flux/{self.params['solver']}"
