"""Darcy flow ``-div(a grad u) = f`` on domains given as binary masks inside the unit square.

The multi-task DeepONet of Kumar, Goswami et al. (2024, "Synergistic learning with multi-task
DeepONet for efficient PDE problem solving", arXiv:2408.02198; code varunsingh88/MT-DeepONet)
trains one operator on Darcy flow over several geometries: the geometry enters the network as a
binary mask channel beside the (log-)conductivity, only points inside the domain count in the
loss, and the trained model is fine-tuned on a new geometry (their source geometries are a square,
a circle and a triangle, the target a square with a cross cut out) with few samples. This problem
makes such data with oplab's own Darcy coefficients and solver.

Geometries (``geometry``: one name, or a comma-separated list; sample ``i`` has geometry
``list[i % G]``, so a file holds the geometries in turn and sample ``i``'s geometry is known from
its index and from its mask channel):

=========== =========================================================================
``square``  the whole unit square (the same problem as ``darcy``, sample for sample)
``disk``    ``|x - c| <= 0.45``, ``c = (0.5, 0.5)``
``lshape``  the square without its open upper-right quarter ``(0.5, 1] x (0.5, 1]``
``annulus`` ``0.2 <= |x - c| <= 0.45``
``hole``    the square without the open disk ``|x - c| < 0.2``
``triangle`` the isosceles triangle with vertices ``(0, 0), (1, 0), (0.5, 1)``
=========== =========================================================================

Discretisation (a staircase domain): the grid is ``darcy``'s node grid ``linspace(0, 1, n)^2``;
``mask`` is 1 at the nodes of the closed domain. A mask node whose four neighbours are all mask
nodes (and that is not on the square's edge) is an unknown; every other mask node is a boundary
node with ``u = 0``, and ``u = 0`` outside. The equations at the unknowns are ``darcy``'s
five-point flux form (``oplab.solvers.fd.diffusion_matrix``), restricted to the unknowns: they
only read ``a`` at mask nodes, so the stored inputs ``[a * mask, mask]`` determine the solution.
On the square this is ``darcy``'s system exactly (tests check it). On a curved boundary the
boundary nodes lie up to one grid step inside the true boundary, so the error is first order in
``h`` (the disk test measures order ~1 against ``u = (R^2 - r^2) / 4`` for ``-Lap u = 1``), not
the second order of ``darcy``; a polygon whose edges pass through nodes (square, L-shape) keeps
second order.

Inputs ``[a, mask]`` (``a`` zero outside the domain), outputs ``[u]`` (zero outside and on the
boundary nodes). The coefficient is ``darcy``'s (``a = psi(mu)`` of a cosine Gaussian random field
on the whole square, the same draw for sample ``i`` of the same seed), cut to the domain.
Train with ``train.loss_mask: mask`` so that only the domain's points count.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..errors import ParameterError
from ..solvers import fd, linear
from .base import Param, positive, rng_for
from .darcy import Darcy

_C, _R, _R_IN = 0.5, 0.45, 0.2


def _radius(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.hypot(x - _C, y - _C)


#: geometry name -> (indicator of the closed domain at points (x, y), description)
GEOMETRIES: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], str]] = {
    "square": (lambda x, y: np.ones_like(x, dtype=bool), "the unit square"),
    "disk": (lambda x, y: _radius(x, y) <= _R + 1e-12, f"disk of radius {_R} about (0.5, 0.5)"),
    "lshape": (lambda x, y: ~((x > 0.5 + 1e-12) & (y > 0.5 + 1e-12)), "L-shape: square minus (0.5,1]^2"),
    "annulus": (lambda x, y: (_radius(x, y) >= _R_IN - 1e-12) & (_radius(x, y) <= _R + 1e-12),
                f"annulus {_R_IN} <= r <= {_R} about (0.5, 0.5)"),
    "hole": (lambda x, y: _radius(x, y) >= _R_IN - 1e-12, f"square minus the disk r < {_R_IN} about (0.5, 0.5)"),
    "triangle": (lambda x, y: (y <= 2 * x + 1e-12) & (y <= 2 * (1 - x) + 1e-12),
                 "triangle (0,0), (1,0), (0.5,1)"),
}


def parse_geometries(text: str, owner: str = "darcy_domain") -> list[str]:
    """The geometry names of ``text`` (one name or a comma-separated list); a one-line
    ParameterError naming the first unknown one."""
    names = [t.strip().lower() for t in str(text).split(",")]
    if not names or any(not n for n in names):
        raise ParameterError(f"{owner}: parameter 'geometry' must be one name or a comma-separated list of names "
                             f"from {sorted(GEOMETRIES)}, got {text!r}")
    for name in names:
        if name not in GEOMETRIES:
            raise ParameterError(f"{owner}: unknown geometry {name!r} in parameter 'geometry'; valid: "
                                 f"{', '.join(sorted(GEOMETRIES))}")
    return names


def geometry_mask(name: str, n: int) -> np.ndarray:
    """The ``n x n`` mask (1.0 at the nodes of the closed domain, 0.0 elsewhere) of geometry ``name``
    on the node grid ``linspace(0, 1, n)^2`` (first index x)."""
    (name,) = parse_geometries(name)
    t = np.linspace(0.0, 1.0, n)
    x, y = np.meshgrid(t, t, indexing="ij")
    return GEOMETRIES[name][0](x, y).astype(np.float64)


def unknown_nodes(mask: np.ndarray) -> np.ndarray:
    """Boolean ``[n, n]``: the mask nodes off the square's edge whose four neighbours are mask
    nodes (the others of the mask are the boundary nodes, where ``u = 0``)."""
    m = np.asarray(mask) != 0
    inside = np.zeros_like(m)
    inside[1:-1, 1:-1] = (m[1:-1, 1:-1] & m[2:, 1:-1] & m[:-2, 1:-1] & m[1:-1, 2:] & m[1:-1, :-2])
    return inside


def solve_masked(a: np.ndarray, mask: np.ndarray, f: np.ndarray | float = 1.0, method: str = "direct",
                 tol: float = 1e-10) -> np.ndarray:
    """Solve ``-div(a grad u) = f`` on the domain ``mask`` (module docstring) with ``u = 0`` on its
    boundary nodes and outside; ``a`` and ``f`` on the ``n x n`` nodes (only their values at mask
    nodes are read). Returns ``u`` on all nodes."""
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[0]
    unknown = unknown_nodes(mask)
    u = np.zeros((n, n))
    if not unknown.any():
        return u
    inside = np.asarray(mask) != 0
    coef = np.where(inside, a, 0.0)  # faces at the unknowns only reach mask nodes
    idx = np.flatnonzero(unknown[1:-1, 1:-1].ravel())  # in fd's order of the interior nodes
    A = fd.diffusion_matrix(coef).tocsr()[idx][:, idx]
    rhs = np.broadcast_to(np.asarray(f, dtype=np.float64), a.shape)[1:-1, 1:-1].ravel()[idx]
    interior = np.zeros((n - 2) * (n - 2))
    interior[idx] = linear.solve(A, rhs, method=method, tol=tol)
    u[1:-1, 1:-1] = interior.reshape(n - 2, n - 2)
    return u


class DarcyDomain(Darcy):
    """``darcy`` on masked geometries (module docstring): ``[a, mask] -> [u]``."""

    name = "darcy_domain"
    summary = "2D Darcy flow -div(a grad u) = f on a domain given as a mask (square, disk, L, annulus, ...)"
    reference = ("Kumar, Goswami et al. 2024, multi-task DeepONet, arXiv:2408.02198 (geometry masks); "
                 "coefficients of Li et al. 2021, FNO, sec. 5.2")
    default_resolution = 64
    min_resolution = 9
    input_channels = ("a", "mask")
    output_channels = ("u",)
    params_spec = (
        Param("geometry", ",".join(GEOMETRIES), "a geometry or a comma-separated list of G (sample i takes number "
              "i mod G): " + ", ".join(GEOMETRIES), expect="name[,name,...]"),
        *(p for p in Darcy.params_spec if p.name not in ("solver", "tol") and not p.name.startswith(("skr_", "dcdm"))),
        Param("solver", "direct", "linear solver (oplab.solvers.linear)", choices=linear.METHODS),
        positive("tol", 1e-10, "relative residual of the iterative solver (amg)"),
    )

    def _check(self) -> None:
        self.geometries = parse_geometries(self.params["geometry"], self.name)
        for name in dict.fromkeys(self.geometries):
            if not unknown_nodes(geometry_mask(name, self.resolution)).any():
                raise ParameterError(f"{self.name}: geometry {name!r} has no interior node at resolution "
                                     f"{self.resolution}; use a finer grid")

    @property
    def solver_name(self) -> str:
        return f"fd5-flux on the mask (staircase boundary)/{self.params['solver']}"

    def geometry_of(self, index: int) -> str:
        """The geometry of sample ``index``."""
        return self.geometries[int(index) % len(self.geometries)]

    def sample_inputs(self, rng: np.random.Generator, geometry: str | None = None) -> np.ndarray:
        """``[a * mask, mask]`` with ``darcy``'s coefficient draw (``geometry``: the first of the
        list unless given; :meth:`generate` gives sample ``i`` its own)."""
        mask = geometry_mask(geometry or self.geometries[0], self.resolution)
        a = super().sample_inputs(rng)[0]
        return np.stack([a * mask, mask])

    def generate(self, indices: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
        indices = [int(i) for i in indices]
        x = np.stack([self.sample_inputs(rng_for(seed, i), self.geometry_of(i)) for i in indices])
        return x, self.solve_batch(x)

    def solve(self, inputs: np.ndarray) -> np.ndarray:
        a, mask = inputs[0], inputs[1]
        return solve_masked(a, mask, self.params["forcing"], self.params["solver"], self.params["tol"])[None]

    def system(self, inputs: np.ndarray):
        raise ParameterError(f"{self.name}: the system lives on the mask's unknowns (solve_masked), not on the "
                             f"whole square; solver=skr|dcdm do not apply")

    def torch_pde(self, x):
        raise ParameterError(f"{self.name}: no physics residual loss on masked domains (train.physics_weight 0)")
