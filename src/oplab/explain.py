"""Sensitivity maps of a trained operator: which parts of the input field a prediction depends on.

For one input sample ``a`` and a scalar target ``J(a) = sum_j w_j u_j`` of the predicted field
``u = F(a)`` (the value at one output node, the domain mean, or any weights ``w``):

* :func:`gradient`: ``dJ/da``, one map per input channel, by reverse-mode differentiation through
  the run's :class:`~oplab.predictor.Bundle` (normalisers included, so it is in physical units);
* :func:`integrated_gradients`: ``(a - b) * int_0^1 dJ/da(b + t (a - b)) dt`` for a baseline
  ``b`` (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks", ICML, eq. 1),
  the path integral by the composite trapezoid rule on ``steps`` intervals (the paper's Riemann sum
  with half weights at the two ends: error ``O(steps^-2)`` for a smooth model, exact for an affine
  one). Completeness (the paper's proposition 1): the attributions sum to ``J(a) - J(b)``; the
  returned ``gap`` is the difference, the quadrature error.

Density convention. The gradient is the discrete one: ``dJ/da_j`` answers "how much does ``J``
change when the input value at node ``j`` changes", so it scales with the cell size. For an
operator that approximates an integral operator ``u(x) = int G(x, y) a(y) dy`` on a grid of cell
measure ``h^d``, ``du_i/da_j ~ G(x_i, y_j) h^d``; ``density=True`` divides by ``h^d`` (the product of
the input axes' spacings, the same at every node, boundary nodes included) and returns a kernel
approximation comparable across resolutions. For the five-point Poisson solver the discrete
Green's function satisfies this exactly: ``(A^-1)_ij = G_h(x_i, x_j) h^2`` with the eigen-expansion
``G_h(x, y) = sum_{k,l} 4 sin(k pi x1) sin(l pi x2) sin(k pi y1) sin(l pi y2) / lambda_kl``,
``lambda_kl = 4 h^-2 (sin^2(k pi h / 2) + sin^2(l pi h / 2))`` (LeVeque 2007, "Finite Difference
Methods for Ordinary and Partial Differential Equations", SIAM, sec. 3.4; tests/test_explain.py).

:func:`input_gradient` and :func:`path_attributions` do the work on any torch callable
``f: [B, C_in, *S] -> [B, C_out, *S']``; nothing here imports the training code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import OplabError, is_int
from .problems.base import Axis

METHODS = ("gradient", "integrated-gradients")


# ----------------------------------------------------------------- any torch callable
def input_gradient(f, x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``d <weight, f(x)> / dx`` and ``<weight, f(x)>`` for one sample ``x [C_in, *S]`` of a
    batched callable ``f``; ``weight`` has the shape of ``f(x)[0]``."""
    x = x.detach().clone().requires_grad_(True)
    value = (f(x[None])[0] * weight).sum()
    (grad,) = torch.autograd.grad(value, x)
    return grad, float(value.detach())


def path_attributions(f, x: torch.Tensor, baseline: torch.Tensor, weight: torch.Tensor, steps: int = 32,
                      batch: int = 16) -> tuple[torch.Tensor, float, float]:
    """Integrated gradients of ``J = <weight, f(.)>`` from ``baseline`` to ``x`` (both ``[C_in, *S]``):
    ``(attributions [C_in, *S] (float64 sums), J(x), J(baseline))``, the path integral by the trapezoid rule on
    ``steps`` intervals, the ``steps + 1`` path points evaluated ``batch`` at a time."""
    t = torch.linspace(0.0, 1.0, steps + 1, dtype=x.dtype)
    w = torch.full_like(t, 1.0 / steps)
    w[0] = w[-1] = 0.5 / steps
    x, baseline = x.detach(), baseline.detach().to(x.dtype)
    total, ends = torch.zeros_like(x, dtype=torch.float64), {}
    for start in range(0, steps + 1, batch):
        tt = t[start:start + batch]
        path = (baseline + tt.view(-1, *[1] * x.ndim) * (x - baseline)).requires_grad_(True)
        values = (f(path) * weight).flatten(1).sum(1)
        (grad,) = torch.autograd.grad(values.sum(), path)
        total += (w[start:start + batch].view(-1, *[1] * x.ndim) * grad).sum(0, dtype=torch.float64)
        for k in (0, steps):
            if start <= k < start + len(tt):
                ends[k] = float(values[k - start].detach())
    return (x - baseline).double() * total, ends[steps], ends[0]


# ----------------------------------------------------------------- a trained operator
@dataclass
class Sensitivity:
    """A sensitivity map and what it is the sensitivity of."""

    map: np.ndarray  #: ``[C_in, *S]``, like the input (divided by ``cell`` where ``density``)
    method: str  #: ``gradient`` or ``integrated-gradients``
    target: str  #: in words: ``u at node (8, 8) = (0.5, 0.5)``, ``mean of u``, ``<w, u>``
    value: float  #: ``J(a)``
    output: np.ndarray  #: the prediction ``[C_out, *S']`` (bundle channels)
    channel: int  #: the output channel ``J`` reads
    cell: float  #: the input cell measure ``h^d``
    density: bool = False
    node: tuple | None = None  #: the output node of a point target
    point: tuple | None = None  #: its coordinates
    baseline_value: float | None = None  #: ``J(baseline)`` (integrated gradients)
    gap: float | None = None  #: ``sum(attributions) - (J(a) - J(baseline))`` (integrated gradients)
    steps: int | None = None
    names: dict = field(default_factory=dict)  #: channel names and input axes, for the plot

    def summary(self) -> str:
        text = f"{self.method} of {self.target}: J = {self.value:.6g}"
        if self.gap is not None:
            text += (f"; completeness: sum of attributions - (J(a) - J(baseline)) = {self.gap:.3g} "
                     f"(J(baseline) = {self.baseline_value:.6g}, {self.steps} steps)")
        return text + ("; map is a density (divided by the cell measure "
                       f"{self.cell:.3g})" if self.density else "")


def gradient(op, a, point=None, node=None, functional=None, channel: int = 0, density: bool = False) -> Sensitivity:
    """``dJ/da`` for one sample ``a`` (``[C_in, *S]``, or ``[*S]`` for one channel) of the
    :class:`~oplab.predictor.Predictor` ``op``. The target ``J`` of output ``channel``: ``point``
    (physical coordinates, snapped to the nearest output node), ``node`` (grid indices), or
    ``functional``: ``"mean"`` (the mean over the output nodes) or weights of the output grid's shape.
    ``density``: divide by the input cell measure (module docstring)."""
    x, weight, info = _setup(op, a, point, node, functional, channel)
    grad, value = input_gradient(_bundle(op, x), x, weight)
    return _result(op, grad, info, "gradient", value, density)


def integrated_gradients(op, a, point=None, node=None, functional=None, channel: int = 0, baseline=None,
                         steps: int = 32, density: bool = False) -> Sensitivity:
    """Integrated gradients (module docstring) of the target of :func:`gradient`; ``baseline``:
    ``None``/``"zero"`` (zeros), ``"mean"`` (the training inputs' channel means, from the input
    normaliser) or an array like ``a``. The result's ``gap`` is the completeness error."""
    if not is_int(steps):
        raise OplabError(f"steps must be a positive int, got {steps!r}")
    x, weight, info = _setup(op, a, point, node, functional, channel)
    if baseline is None or (isinstance(baseline, str) and baseline == "zero"):
        b = torch.zeros_like(x)
    elif isinstance(baseline, str) and baseline == "mean":
        b = op.bundle.in_norm.mean.detach().cpu().float().view(-1, *[1] * (x.ndim - 1)).expand_as(x).clone()
    elif isinstance(baseline, str):
        raise OplabError(f"baseline must be 'zero', 'mean' or an array like the input, got {baseline!r}")
    else:
        b = torch.as_tensor(np.asarray(baseline), dtype=torch.float32)
        b = b[None] if b.shape == x.shape[1:] and x.shape[0] == 1 else b
        if b.shape != x.shape:
            raise OplabError(f"baseline of shape {list(b.shape)}: expected the input's shape {list(x.shape)}")
    attr, value, base = path_attributions(_bundle(op, x), x, b, weight, steps)
    result = _result(op, attr, info, "integrated-gradients", value, density)
    result.baseline_value, result.steps = base, steps
    result.gap = float(attr.double().sum()) - (value - base)
    return result


def pick_sample(op, inputs: np.ndarray, sample: int = 0) -> np.ndarray:
    """Sample ``sample`` of the inputs read from a file (``[B, C_in, *S]``, ``[C_in, *S]``, and for a
    one-channel operator ``[B, *S]`` / ``[*S]``), as ``[C_in, *S]``."""
    c_in, d = op.data["train_input_shape"][0], len(op.in_axes)
    a = np.asarray(inputs)
    if a.ndim == d + 1:  # [B, *S] of a one-channel operator ([1, *S]: the same values), else [C_in, *S]
        batch = a[:, None] if c_in == 1 else a[None]
    elif a.ndim in (d, d + 2):
        batch = a[None, None] if a.ndim == d else a
    else:
        raise OplabError(f"input of shape {list(a.shape)}: expected [B, {c_in}, *S] or [{c_in}, *S] "
                         f"with {d} grid axes")
    if not is_int(sample, 0) or sample >= len(batch):
        raise OplabError(f"sample {sample!r} is out of range: the input holds {len(batch)} sample(s) "
                         f"(0..{len(batch) - 1})")
    return batch[sample]


# ----------------------------------------------------------------- helpers
def _bundle(op, x: torch.Tensor):
    coords = tuple(c.to(op.device) for c in op.coords_for(tuple(x.shape[1:])))
    return lambda batch: op.bundle(batch.to(op.device), coords).cpu()


def _field(op, a) -> torch.Tensor:
    """``a`` as a finite float32 ``[C_in, *S]`` tensor, or one OplabError."""
    c_in, d = op.data["train_input_shape"][0], len(op.in_axes)
    axes = ", ".join(ax.name for ax in op.in_axes)
    try:
        x = torch.as_tensor(np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a), dtype=torch.float32)
    except (TypeError, ValueError):
        raise OplabError(f"input is not an array of real numbers of shape [{c_in}, {axes}]") from None
    if x.ndim == d and c_in == 1:
        x = x[None]
    if x.ndim != d + 1 or x.shape[0] != c_in or x.numel() == 0:
        also = f" (or [{axes}])" if c_in == 1 else ""
        raise OplabError(f"input of shape {list(np.shape(a))}: explain takes one sample [{c_in}, {axes}]{also}")
    if op.kind == "point" and list(x.shape) != op.data["train_input_shape"]:
        raise OplabError(f"input of shape {list(x.shape)}: this point operator takes its training sensors "
                         f"{op.data['train_input_shape']}")
    if not torch.isfinite(x).all():
        raise OplabError("input holds NaN or Inf: the operator answers finite inputs only")
    return x


def _setup(op, a, point, node, functional, channel):
    """The input tensor, the weights ``w`` of ``J = <w, u>`` and what ``J`` is."""
    x = _field(op, a)
    if op.task != "map" or op.data.get("n_times"):
        raise OplabError(f"{op.run_dir}: explain reads one-shot maps of a state; this run predicts a "
                         f"trajectory (train.task: {op.task})")
    with torch.no_grad():
        y = _bundle(op, x)(x[None])[0]
    if not is_int(channel, 0) or channel >= y.shape[0]:
        raise OplabError(f"channel {channel!r} is out of range: the output has {y.shape[0]} channel(s)")
    if sum(v is not None for v in (point, node, functional)) != 1:
        raise OplabError("give one target: a point (x,y), a node (grid indices) or a functional ('mean' or weights)")
    names = {"in": op.data.get("input_channels") or [f"a{i}" for i in range(x.shape[0])],
             "out": op.data.get("output_channels") or [f"u{i}" for i in range(y.shape[0])]}
    uname = names["out"][channel]
    axes = [Axis(ax.name, n, ax.lo, ax.hi, ax.periodic) for ax, n in zip(op.out_axes, y.shape[1:])]
    weight = torch.zeros_like(y)
    info = {"output": y, "channel": channel, "names": names, "in_shape": tuple(x.shape[1:])}
    if functional is not None:
        if isinstance(functional, str):
            if functional != "mean":
                raise OplabError(f"functional must be 'mean' or an array of weights, got {functional!r}")
            weight[channel] = 1.0 / y[channel].numel()
            info["target"] = f"mean of {uname}"
        else:
            w = torch.as_tensor(np.asarray(functional), dtype=torch.float32)
            if w.shape != y.shape[1:]:
                raise OplabError(f"functional weights of shape {list(w.shape)}: expected the output grid "
                                 f"{list(y.shape[1:])}")
            weight[channel] = w
            info["target"] = f"<w, {uname}>"
        return x, weight, info
    if len(axes) != y.ndim - 1:
        raise OplabError(f"the output has {y.ndim - 1} grid axes but the run describes {len(axes)}: "
                         "give a functional")
    if point is not None:
        node = _snap(axes, point)
    node = _check_node(axes, node)
    weight[(channel, *node)] = 1.0
    where = tuple(float(ax.coords()[i]) for ax, i in zip(axes, node))
    info.update(node=node, point=where,
                target=f"{uname} at node {node} = ({', '.join(f'{c:.4g}' for c in where)})")
    return x, weight, info


def _snap(axes: list[Axis], point) -> tuple[int, ...]:
    """The output node nearest to ``point`` (physical coordinates, one per axis)."""
    names = ", ".join(ax.name for ax in axes)
    try:
        p = [float(v) for v in np.atleast_1d(np.asarray(point, dtype=float))]
    except (TypeError, ValueError):
        raise OplabError(f"point {point!r}: expected {len(axes)} numbers ({names})") from None
    if len(p) != len(axes):
        raise OplabError(f"point {tuple(p)} has {len(p)} coordinate(s); the output grid has {len(axes)} ({names})")
    node = []
    for ax, v in zip(axes, p):
        if not math.isfinite(v) or not (ax.lo - 1e-9 * (ax.hi - ax.lo) <= v <= ax.hi + 1e-9 * (ax.hi - ax.lo)):
            raise OplabError(f"point {ax.name} = {v:g} is outside the domain [{ax.lo:g}, {ax.hi:g}]")
        dist = np.abs(ax.coords() - v)
        if ax.periodic:
            dist = np.minimum(dist, (ax.hi - ax.lo) - dist)
        node.append(int(np.argmin(dist)))
    return tuple(node)


def _check_node(axes: list[Axis], node) -> tuple[int, ...]:
    node = tuple(np.atleast_1d(np.asarray(node)).tolist())
    sizes = [ax.n for ax in axes]
    if len(node) != len(axes) or not all(is_int(i, 0) and i < n for i, n in zip(node, sizes)):
        raise OplabError(f"node {node}: expected {len(axes)} grid indices within the output grid {sizes}")
    return node


def _cell(op, sizes) -> float:
    """The input cell measure ``h^d``: the product of the input axes' spacings at these sizes."""
    return math.prod((ax.hi - ax.lo) / (n if ax.periodic else n - 1) for ax, n in zip(op.in_axes, sizes))


def _result(op, grad, info, method, value, density) -> Sensitivity:
    cell = _cell(op, info["in_shape"])
    m = grad.double().numpy() / (cell if density else 1.0)
    return Sensitivity(map=m, method=method, target=info["target"], value=value, output=info["output"].numpy(),
                       channel=info["channel"], cell=cell, density=density, node=info.get("node"),
                       point=info.get("point"), names={**info["names"], "axes": op.in_axes})


def plot(result: Sensitivity, a, path: str | Path) -> Path:
    """A figure: the input (first channel), the predicted output channel with the target node
    marked, and the sensitivity map of each input channel (2D: images, 1D: curves)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.asarray(a, dtype=float).reshape(result.map.shape)
    panels = [(a[0], f"input {result.names['in'][0]}"),
              (result.output[result.channel], f"prediction {result.names['out'][result.channel]}")]
    panels += [(m, f"{result.method} w.r.t. {name}") for m, name in zip(result.map, result.names["in"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for i, (ax, (f, title)) in enumerate(zip(axes[0], panels)):
        grid = [Axis(g.name, n, g.lo, g.hi, g.periodic).coords() for g, n in zip(result.names["axes"], f.shape)]
        if f.ndim == 2 and len(grid) == 2:
            half = [(c[1] - c[0]) / 2 if len(c) > 1 else 0.5 for c in grid]  # pixels centred on the nodes
            (x0, x1), (y0, y1) = [(c[0] - d, c[-1] + d) for c, d in zip(grid, half)]
            lim = np.abs(f).max() or 1.0
            style = dict(cmap="RdBu_r", vmin=-lim, vmax=lim) if i >= 2 else dict(cmap="viridis")
            im = ax.imshow(f.T, origin="lower", extent=(x0, x1, y0, y1), aspect="auto", **style)
            fig.colorbar(im, ax=ax)
            if result.point is not None and len(result.point) == 2:
                ax.plot(*result.point, "x", color="red" if i < 2 else "black", ms=9, mew=2)
        elif f.ndim == 1 and len(grid) == 1:
            ax.plot(grid[0], f)
            if result.point is not None:
                ax.axvline(result.point[0], color="red", lw=0.8)
        ax.set_title(title, fontsize=9)
    fig.suptitle(result.target, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


__all__ = ["METHODS", "Sensitivity", "gradient", "input_gradient", "integrated_gradients", "path_attributions",
           "pick_sample", "plot"]
