"""What the unit-square elliptic problems (Darcy, Poisson, Helmholtz) share:
the node grid ``linspace(0, 1, n)^2``, the five-point solver of
:mod:`oplab.solvers.fd` and a choice of linear solver, Sorting Krylov
Recycling (``solver=skr``) and the Deep Conjugate Direction Method
(``solver=dcdm``, :mod:`oplab.solvers.dcdm`) included.

With ``solver=skr`` (:mod:`oplab.solvers.krylov`) the samples of each aligned
chunk of ``skr_chunk`` indices are sorted by their parameter fields
(greedy nearest neighbour on block means) and solved in that order by one
GCRO-DR solver that carries its recycle space from system to system. A
chunk is always solved whole and in the same order, whichever worker takes
it, so files stay byte-identical across worker counts and Dask; a sample
differs from the direct solver's by the iterative tolerance ``tol`` (relative
residual), and a sample solved alone (``problem.solve``) or in another
grouping differs from its value in a generated file by that tolerance, not
bit for bit.

With ``solver=dcdm`` each sample's system is solved alone by DCDM with the
net in the folder ``dcdm_net`` (written by ``oplab dcdm-train``, trained from
the problem's matrices alone) to the relative residual ``tol``; the net runs
on one torch thread, so a sample's bits depend on (problem, parameters, seed,
index) and the net's weights only (their SHA-256 is in :attr:`solver_name`,
stored with the data), not on the worker count. A net trained at one
resolution runs at any (it is fully convolutional), so no resolution is
refused: a Poisson net trained at 33 took 23 iterations against CG's 222 on
Poisson at 65, 56 against 390 on piecewise Darcy (tol 1e-10).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..solvers import fd, linear
from .base import Axis, Param, Problem, positive, rng_for

_SKR_PARAMS = (
    Param("skr_precond", "ilu", "SKR: preconditioner", choices=("none", "jacobi", "ilu", "amg")),
    Param("skr_m", 40, "SKR: GCRO-DR cycle length m", check=lambda v: v >= 4, expect=">= 4"),
    Param("skr_k", 10, "SKR: recycled dimension k (< m)", check=lambda v: v >= 1, expect=">= 1"),
    Param("skr_chunk", 64, "SKR: systems sorted and recycled together (one chunk)", check=lambda v: v >= 1,
          expect=">= 1"),
)

#: the linear-solver parameters of symmetric positive definite problems
SPD_SOLVER_PARAMS = (
    Param("solver", "direct", "linear solver (oplab.solvers.linear, skr, or dcdm)",
          choices=(*linear.METHODS, "skr", "dcdm")),
    positive("tol", 1e-10, "relative residual of iterative solvers"),
    *_SKR_PARAMS,
    Param("dcdm_net", "", "DCDM: folder of the net (written by oplab dcdm-train; solver=dcdm)"),
)

#: the same for indefinite problems (Helmholtz): no AMG
INDEFINITE_SOLVER_PARAMS = (
    Param("solver", "direct", "linear solver: direct | direct-colamd | skr", choices=("direct", "direct-colamd", "skr")),
    positive("tol", 1e-10, "relative residual of iterative solvers"),
    *_SKR_PARAMS,
)


class UnitSquareProblem(Problem):
    """A problem on the ``n x n`` node grid of the unit square, solved by finite
    differences. Subclasses give :meth:`pde`: the fields of
    ``-div(a grad u) + shift u = f``, ``u = g`` on the boundary."""

    min_resolution = 5

    def __init__(self, resolution=None, **params):
        super().__init__(resolution, **params)
        if self.params.get("solver") == "skr":
            if self.params["skr_k"] >= self.params["skr_m"]:
                from ..errors import ParameterError

                raise ParameterError(f"{self.name}: skr_k = {self.params['skr_k']} must be < skr_m = {self.params['skr_m']}")
            self.chunk_size = self.params["skr_chunk"]  # instance attribute: generation cuts chunks by it
        if self.params.get("solver") == "dcdm":
            from ..solvers.dcdm import open_net

            # fully convolutional: a net trained at one resolution runs at any (it helps most near its own)
            self._dcdm_net, self._dcdm_info = open_net(self.params["dcdm_net"], self.name)

    def input_axes(self) -> list[Axis]:
        n = self.resolution
        return [Axis("x", n), Axis("y", n)]

    @property
    def solver_name(self) -> str:
        p = self.params
        if p["solver"] == "skr":
            return f"fd5-flux/skr(gcro-dr m={p['skr_m']} k={p['skr_k']}, {p['skr_precond']}, tol={p['tol']:g})"
        if p["solver"] == "dcdm":
            i = self._dcdm_info
            trained = f", trained on {i['problem']} {i['resolution']}" if "problem" in i else ""
            return f"fd5-flux/dcdm(net {p['dcdm_net']} sha256:{i['sha256']}{trained}, tol={p['tol']:g})"
        return f"fd5-flux/{p['solver']}"

    def pde(self, inputs: np.ndarray) -> dict:
        """``{"a": [n, n], "f": [n, n] or scalar, "g": [n, n] or None, "shift": [n, n] or None}``."""
        raise NotImplementedError

    def system(self, inputs: np.ndarray):
        """The interior linear system ``(A, rhs)`` and the boundary data ``g``."""
        p = self.pde(inputs)
        a = np.asarray(p["a"], dtype=np.float64)
        f = np.broadcast_to(np.asarray(p["f"], dtype=np.float64), a.shape)
        return fd.diffusion_matrix(a, p.get("shift")), fd.boundary_rhs(a, f, p.get("g")), p.get("g")

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        if self.params["solver"] == "skr":
            return self.solve_batch(inputs[None])[0]
        A, rhs, g = self.system(inputs)
        if self.params["solver"] == "dcdm":
            from ..solvers.dcdm import solve_system

            x = solve_system(A, rhs, self._dcdm_net, tol=self.params["tol"], owner=self.name)
        else:
            x = linear.solve(A, rhs, method=self.params["solver"], tol=self.params["tol"])
        return fd.with_boundary(x, self.resolution, g)[None]

    def solve_batch(self, inputs: np.ndarray) -> np.ndarray:
        if self.params["solver"] != "skr":
            return super().solve_batch(inputs)
        from ..solvers.krylov import GCRODR, features, sort_greedy

        p = self.params
        solver = GCRODR(m=p["skr_m"], k=p["skr_k"], tol=p["tol"], precond=p["skr_precond"])
        out = np.empty((len(inputs), 1, self.resolution, self.resolution))
        for i in sort_greedy(features(inputs)):
            A, rhs, g = self.system(inputs[i])
            x, info = solver.solve(A, rhs)
            if not info.converged:
                from ..errors import OplabError

                raise OplabError(f"{self.name}: SKR did not reach tol {p['tol']:g} (relative residual "
                                 f"{info.residual:.2e} after {info.iterations} iterations); try skr_precond=ilu "
                                 f"or solver=direct")
            out[i, 0] = fd.with_boundary(x, self.resolution, g)
        return out

    def generate(self, indices: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`Problem.generate`; with SKR, samples are solved in groups of their aligned
        chunk ``i // skr_chunk``, so a sample's bits do not depend on which other chunks were asked for."""
        indices = [int(i) for i in indices]
        x = np.stack([self.sample_inputs(rng_for(seed, i)) for i in indices])
        if self.params.get("solver") != "skr":
            return x, self.solve_batch(x)
        groups: dict[int, list[int]] = {}
        for pos, i in enumerate(indices):
            groups.setdefault(i // self.chunk_size, []).append(pos)
        y = np.empty((len(indices), *self.output_shape()))
        for positions in groups.values():
            y[positions] = self.solve_batch(x[positions])
        return x, y
