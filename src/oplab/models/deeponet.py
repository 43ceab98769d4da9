"""The DeepONet family: point operators that pair a branch net on sensor values
with a trunk net (or a fixed basis) on query coordinates.

* :class:`DeepONet` (``"deeponet"``): Lu, Jin, Pang, Zhang & Karniadakis
  2021, "Learning nonlinear operators via DeepONet based on the universal
  approximation theorem of operators", Nat. Mach. Intell. 3:218
  (arXiv:1910.03193), with the multiple-output extension of Lu, Meng, Cai,
  Mao, Goswami, Zhang & Karniadakis 2022, "A comprehensive and fair
  comparison of two neural operators (with practical extensions) based on
  FAIR data", CMAME 393:114778 (arXiv:2111.05512);
* :class:`PODDeepONet` (``"pod_deeponet"``): the POD-DeepONet of Lu et al.
  2022, whose trunk is the leading principal components of the training
  outputs;
* :class:`MultiONet` (``"multionet"``): Zang & Koutsourelakis 2025, "DGNO: a
  novel physics-aware neural operator ..." (arXiv:2502.06250), which pairs
  the branch and trunk features of every hidden layer, not only the last.

Inputs and outputs
------------------
All three follow the :class:`~oplab.models.base.Operator` call
``y = model(x, coords)``. The branch net reads the flattened input grid
``x: [B, C_in, *S_in] -> [B, n_sensors]`` (``n_sensors = C_in * prod(S_in)``,
the paper's ``m`` sensor values); the trunk net is evaluated on the mesh of
``coords`` (a tuple of ``d`` 1D tensors, ``'ij'`` indexing, flattened to
``[P, d]``), and the output is ``[B, C_out, *S_out]``. This is the
*Cartesian-product* form: every function of the batch is queried at the same
``P`` points, so the trunk runs once per batch, not once per sample.

``forward_points(x, points)`` (DeepONet and MultiONet) takes per-sample query
points ``[B, P, d]`` and returns ``[B, C_out, P]``. Naming in DeepXDE: its
*aligned* data (``TripleCartesianProd`` + ``DeepONetCartesianProd``) is our
``forward`` -- all functions share the query points; its *unaligned* data
(``Triple`` + ``DeepONet``) has each function with its own points, which is
our ``forward_points``. The two agree when every sample's points are the grid.

Training-data hook
------------------
:func:`fit_data` lets a model see the (normalized) training set once before
training; it is a no-op for models without a ``fit_data`` method and fills
the POD basis of :class:`PODDeepONet`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .._fused import hooked, plain_autograd
from .._memo import TensorMemo
from ..errors import ParameterError, check_choice, check_floats, check_int, check_ints
from ..layers.grid import grid_points
from ..layers.pointwise import ACTIVATIONS, MLP, StackedMLP, glorot_linear, make_activation
from . import register
from .base import Operator

_MULTI_OUTPUT = ("split", "independent")


# ----------------------------------------------------------------------------- training-data hook


def fit_data(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """Show ``model`` its training set once before training.

    Calls ``model.fit_data(x, y)`` when the model defines one (the POD basis
    of :class:`PODDeepONet`) and does nothing otherwise; returns ``model``.
    """
    method = getattr(model, "fit_data", None)
    if callable(method):
        method(x, y)
    return model


# ----------------------------------------------------------------------------- branch-trunk base


_POINTS = TensorMemo()  # grid points per coordinate grid (rebuilding them took 0.19 ms of a DeepONet step)


class _BranchTrunk(Operator):
    """Shared plumbing: ``G(u)(y)_c = sum_k b_{c,k}(u) t_{c,k}(y) + bias_c``.

    Subclasses provide ``_branch(u: [B, n_sensors]) -> [B, C, K]`` and
    ``_trunk(points: [..., d]) -> [..., C, K]``.
    """

    kind = "point"
    n_sensors: int
    coord_dim: int
    out_channels: int

    def _sensors(self, x: torch.Tensor) -> torch.Tensor:
        u = x.reshape(x.shape[0], -1)  # [B, C_in * prod(S_in)]
        if u.shape[1] != self.n_sensors:
            raise ValueError(
                f"{type(self).__name__}: expected n_sensors={self.n_sensors} input values per sample "
                f"(C_in * prod(S_in)), got x of shape {tuple(x.shape)} ({u.shape[1]} values)"
            )
        return u

    def _add_bias(self, y: torch.Tensor) -> torch.Tensor:  # y: [B, C, P]
        return y if self.bias is None else y + self.bias[:, None]

    def _inputs(self, x: torch.Tensor, coords: Sequence[torch.Tensor]) -> tuple:
        """The branch's input ``[B, n_sensors]``, the grid's points ``[P, d]`` and its shape."""
        return (self._sensors(x), *self._grid(coords))

    def _grid(self, coords: Sequence[torch.Tensor]) -> tuple:
        """The grid's points ``[P, d]`` (in the weights' dtype and device) and its shape."""
        if isinstance(coords, torch.Tensor) and coords.dim() == 1:
            coords = (coords,)
        if len(coords) != self.coord_dim:
            raise ValueError(f"{type(self).__name__}: expected {self.coord_dim} coordinate axes (coord_dim), got {len(coords)}")
        shape = tuple(int(torch.as_tensor(c).numel()) for c in coords)
        weight = next(self.parameters())
        coords = [torch.as_tensor(c) for c in coords]
        points = _POINTS.get(coords, (weight.dtype, str(weight.device)),
                             lambda: grid_points(coords, dtype=weight.dtype, device=weight.device))  # [P, d]
        return points, shape

    def vjp(self, x: torch.Tensor, coords: Sequence[torch.Tensor]):
        """``(y, pullback)`` without autograd, as ``torch.func.vjp`` gives them for the parameters:
        ``y = self(x, coords)`` and ``pullback(g, into=None)``, the pairs ``(parameter, d <g, y> / d
        parameter)`` for the parameters that require grad, from the fused path's hand-written backward,
        each written into ``into[parameter]`` where given (the optimizer's gradient buffer). None
        where the fused path does not apply (see :meth:`_dense_chains`): then use autograd. It is
        the model's half of :meth:`oplab.train.tasks.MapTask.direct_stepper`."""
        run = self.vjp_plan(coords)
        return None if run is None else run(x)

    def vjp_plan(self, coords: Sequence[torch.Tensor]):
        """:meth:`vjp` on one grid, set up once: ``run(x)`` is ``vjp(x, coords)``, the grid's points and
        the trunk's inputs made here (a training step repeats them; about 60 us of a 0.9 ms step).
        What can change between steps (hooks, the layers, autocast) is checked on every call. None
        for a model without the fused path."""
        if type(self)._dense_chains is _BranchTrunk._dense_chains:
            return None
        points, shape = self._grid(coords)
        with torch.no_grad():
            z = self._embed(points)

        def run(x: torch.Tensor):
            u = self._sensors(x)
            with torch.no_grad():
                chains = self._dense_chains(u, points)
                if chains is None:
                    return None
                kept, bias, c = [], self.bias, self.out_channels
                y = _dense_run(u, z, bias, chains, c, kept)
            params = [bias, *(p for chain in chains for layer in chain for p in layer[:2])]
            needs = [p is not None and p.requires_grad for p in params]

            def pullback(g: torch.Tensor, into: dict | None = None) -> list:
                with torch.no_grad():
                    grads = _dense_backward(g.reshape(y.shape), bias, chains, kept, c, needs, into)
                return [(p, d) for p, d, need in zip(params, grads, needs) if need]

            return y.reshape(x.shape[0], c, *shape), pullback

        return run

    def forward(self, x: torch.Tensor, coords: Sequence[torch.Tensor]) -> torch.Tensor:
        u, points, shape = self._inputs(x, coords)
        chains = self._dense_chains(u, points)
        if chains is not None:  # one autograd node with a hand-written backward (see _dense_forward)
            y = _dense_forward(u, self._embed(points), self.bias, chains, self.out_channels)
            return y.reshape(x.shape[0], self.out_channels, *shape)
        b = self._branch(u)  # [B, C, K]
        t = self._trunk(points)  # [P, C, K]
        y = torch.einsum("bck,pck->bcp", b, t)  # [B, C, P]
        return self._add_bias(y).reshape(x.shape[0], self.out_channels, *shape)

    def _dense_chains(self, u: torch.Tensor, points: torch.Tensor):
        """The branch and trunk as plain chains (see :func:`_chain`) when the fused forward applies,
        else None (subclasses, stacked nets, forward or backward hooks, autocast, ``torch.func``,
        forward-mode AD and inputs that require grad take the module path)."""
        return None

    def forward_points(self, x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Per-sample query points ``[B, P, d]`` (or shared ``[P, d]``) -> ``[B, C_out, P]``."""
        weight = next(self.parameters())
        points = points.to(dtype=weight.dtype, device=weight.device)
        shared = points.dim() == 2  # one set of points for the whole batch: the trunk runs once
        if (points.dim() != 3 or points.shape[0] != x.shape[0]) and not shared or points.shape[-1] != self.coord_dim:
            raise ValueError(
                f"{type(self).__name__}: expected points [B={x.shape[0]}, P, d={self.coord_dim}], got {tuple(points.shape)}"
            )
        b = self._branch(self._sensors(x))  # [B, C, K]
        t = self._trunk(points)  # [(B,) P, C, K]
        return self._add_bias(torch.einsum("bck,pck->bcp" if shared else "bck,bpck->bcp", b, t))


# ----------------------------------------------------------------------------- DeepONet


@register("deeponet")
class DeepONet(_BranchTrunk):
    """DeepONet (Lu et al. 2021), Cartesian-product form.

    For output channel ``c`` and query point ``y``::

        G(u)(y)_c = sum_{k=1}^{p} b_{c,k}(u) t_{c,k}(y) + b0_c

    with ``b`` the branch net on the ``n_sensors`` input values and ``t`` the
    trunk net on ``y`` (``coord_dim`` values). As in the paper, the trunk
    applies the activation after its last layer too (its outputs are basis
    functions), the branch's last layer is linear, and ``b0`` is a trainable
    output bias (``output_bias``). Weights are Glorot-normal, biases zero.

    ``stacked``: False is the paper's *unstacked* DeepONet (one branch net
    ``n_sensors -> branch_layers -> p * out_channels``); True is the *stacked*
    form, ``p * out_channels`` independent branch nets
    ``n_sensors -> branch_layers -> 1``. The paper reports lower test errors
    for the unstacked form with bias, which also has far fewer parameters.

    ``multi_output`` (``out_channels > 1``): the branch always gives
    ``p * out_channels`` values, grouped as ``[out_channels, p]``.

    * ``"split"``: one trunk net ``d -> trunk_layers -> p * out_channels``,
      its output split into ``out_channels`` groups of ``p``; channel ``c``
      pairs branch group ``c`` with trunk group ``c``. This is the "split
      both the branch and the trunk outputs into n groups" extension of Lu et
      al. 2022 (their latent width is our ``p * out_channels``).
    * ``"independent"``: ``out_channels`` separate trunk nets ``d ->
      trunk_layers -> p``, one per channel (hidden layers not shared).

    With ``out_channels == 1`` the two are the same network.

    DeepXDE's antiderivative example (branch ``[100, 40, 40]``, trunk
    ``[1, 40, 40]``, ReLU) is ``n_sensors=100, coord_dim=1,
    branch_layers=[40], trunk_layers=[40], latent=40, activation="relu"``:
    ``branch_layers``/``trunk_layers`` list the *hidden* widths only.

    Trunk inputs: ``coord_scale`` (one factor per coordinate) multiplies the
    query points first, so that coordinates in different units (seconds and
    metres) reach the trunk at comparable size; ``fourier_features`` (a list
    of frequencies ``f``) expands the scaled point ``y`` to
    ``[y, cos(2 pi f y), sin(2 pi f y)]`` for every ``f`` (applied to each
    coordinate), the trunk's feature expansion of Borrel-Jensen et al. 2024,
    "Sound propagation in realistic interactive 3D scenes with parameterized
    sources using deep neural operators", PNAS 121:e2312159120, whose
    frequencies follow the source's highest frequency.
    """

    reference = (
        "Lu et al. 2021, 'Learning nonlinear operators via DeepONet based on the universal approximation "
        "theorem of operators', Nat. Mach. Intell. 3:218; multiple outputs: Lu et al. 2022, CMAME 393:114778"
    )

    def __init__(
        self,
        n_sensors: int,
        coord_dim: int,
        out_channels: int = 1,
        branch_layers: Sequence[int] = (128, 128),
        trunk_layers: Sequence[int] = (128, 128),
        latent: int = 128,
        activation: str = "relu",  # the DeepONet paper's choice; tanh plateaus on the antiderivative benchmark
        stacked: bool = False,
        output_bias: bool = True,
        multi_output: str = "split",
        coord_scale: Sequence[float] | None = None,
        fourier_features: Sequence[float] = (),
    ):
        super().__init__()
        owner = type(self).__name__
        self.n_sensors = check_int(owner, "n_sensors", n_sensors)
        self.coord_dim = check_int(owner, "coord_dim", coord_dim)
        self.out_channels = check_int(owner, "out_channels", out_channels)
        self.latent = check_int(owner, "latent", latent)
        scale = [1.0] * self.coord_dim if coord_scale is None else check_floats(owner, "coord_scale", coord_scale, self.coord_dim)
        frequencies = check_floats(owner, "fourier_features", fourier_features)
        self.register_buffer("coord_factors", torch.tensor(scale), persistent=False)
        self.register_buffer("frequencies", 2 * math.pi * torch.tensor(frequencies), persistent=False)
        trunk_in = self.coord_dim * (1 + 2 * len(frequencies))
        branch_layers = check_ints(owner, "branch_layers", branch_layers)
        trunk_layers = check_ints(owner, "trunk_layers", trunk_layers)
        check_choice(owner, "activation", activation, ACTIVATIONS)
        self.multi_output = check_choice(owner, "multi_output", multi_output, _MULTI_OUTPUT)
        width = self.latent * self.out_channels

        if stacked:
            self.branch = StackedMLP(n_sensors, branch_layers, 1, width, activation)  # [B, pC, 1]
        else:
            self.branch = MLP(n_sensors, branch_layers, width, activation)  # [B, pC]
        if multi_output == "split" or self.out_channels == 1:
            self.trunk = MLP(trunk_in, trunk_layers, width, activation, final_activation=True)
        else:
            self.trunk = StackedMLP(trunk_in, trunk_layers, latent, out_channels, activation, final_activation=True)
        self.bias = nn.Parameter(torch.zeros(self.out_channels)) if output_bias else None

    def _branch(self, u: torch.Tensor) -> torch.Tensor:
        return self.branch(u).reshape(u.shape[0], self.out_channels, self.latent)  # [B, C, p]

    def _dense_chains(self, u: torch.Tensor, points: torch.Tensor):
        if (type(self)._branch is not DeepONet._branch or type(self)._trunk is not DeepONet._trunk
                or u.requires_grad or points.requires_grad or hooked(self) or torch.is_autocast_enabled(u.device.type)
                or (torch.is_grad_enabled() and not plain_autograd(u.device.type))):
            return None
        branch, trunk = _chain(self.branch), _chain(self.trunk)
        return None if branch is None or trunk is None else (branch, trunk)

    def _embed(self, points: torch.Tensor) -> torch.Tensor:
        """The trunk's input: scaled points ``[..., d]``, then their Fourier features."""
        y = points * self.coord_factors.to(points.dtype)
        if not self.frequencies.numel():
            return y
        z = (y[..., None, :] * self.frequencies.to(points.dtype)[:, None]).flatten(-2)  # [..., F d]
        return torch.cat([y, torch.cos(z), torch.sin(z)], dim=-1)

    def _trunk(self, points: torch.Tensor) -> torch.Tensor:
        t = self.trunk(self._embed(points))  # [..., C*p] or [..., C, p]
        return t.reshape(*points.shape[:-1], self.out_channels, self.latent)


# ----------------------------------------------------------------------------- the fused forward

# The activations the fused path differentiates by hand: module -> (its name, whether its backward
# reads the layer's output rather than the pre-activation).
_DENSE_ACTS = {
    nn.ReLU: lambda m: ("relu", True),
    nn.Tanh: lambda m: ("tanh", True),
    nn.GELU: lambda m: ("gelu-" + m.approximate, False),
    nn.SiLU: lambda m: ("silu", False),
}


def _chain(mlp: nn.Module):
    """``[(weight, bias, activation or None), ...]`` for an :class:`MLP` made of exactly
    ``nn.Linear`` (with bias) and the activations of ``_DENSE_ACTS``, none with hooks; else
    None: a LoRA-wrapped or parametrized layer (its class is not ``nn.Linear``), a sine or any other
    module takes the module path. (Written for speed: it runs every forward, about 5 us.)"""
    if type(mlp) is not MLP or hooked(mlp):
        return None
    out = []
    for layer in mlp._modules.values():
        kind = type(layer)
        if hooked(layer):
            return None
        if kind is nn.Linear and layer.bias is not None:
            out.append([layer.weight, layer.bias, None])
        elif kind in _DENSE_ACTS and out and out[-1][2] is None:
            out[-1][2] = _DENSE_ACTS[kind](layer)
        else:
            return None
    return out


def _activate(h: torch.Tensor, act) -> torch.Tensor:
    name = act[0]
    if name == "relu":
        return torch.relu(h)
    if name == "tanh":
        return torch.tanh(h)
    if name == "silu":
        return nn.functional.silu(h)
    return nn.functional.gelu(h, approximate=name[5:])


def _activate_backward(g: torch.Tensor, pre: torch.Tensor, out: torch.Tensor, act) -> torch.Tensor:
    name, aten = act[0], torch.ops.aten
    if name == "relu":
        return aten.threshold_backward(g, out, 0)
    if name == "tanh":
        return aten.tanh_backward(g, out)
    if name == "silu":
        return aten.silu_backward(g, pre)
    return aten.gelu_backward(g, pre, approximate=name[5:])


def _chain_run(h: torch.Tensor, chain, keep: list | None) -> torch.Tensor:
    """``h`` through the chain; ``keep`` collects each layer's (input, pre-activation, output)."""
    for weight, bias, act in chain:
        pre = nn.functional.linear(h, weight, bias)
        out = pre if act is None else _activate(pre, act)
        if keep is not None:
            keep.append((h, pre if act is not None and not act[1] else None, out))
        h = out
    return h


def _chain_backward(g: torch.Tensor, chain, kept, needs, into: dict | None = None) -> list:
    """The gradients of the chain's weights and biases (None where ``needs`` says not wanted),
    written into ``into[parameter]`` where given."""
    grads = [None] * (2 * len(chain))
    for i in reversed(range(len(chain))):
        weight, bias, act = chain[i]
        h, pre, out = kept[i]
        if act is not None:
            g = _activate_backward(g, pre, out, act)
        if needs[2 * i]:
            grads[2 * i] = torch.mm(g.t(), h, out=into.get(weight) if into else None)
        if needs[2 * i + 1]:
            grads[2 * i + 1] = torch.sum(g, 0, out=into.get(bias) if into else None)
        if i > 0:
            g = g.mm(weight)
    return grads


def _product(b: torch.Tensor, t: torch.Tensor, bias, channels: int) -> torch.Tensor:
    """``y[n, c, p] = sum_k b[n, c k] t[p, c k] + bias[c]`` from ``b [B, C p]`` and ``t [P, C p]``."""
    if channels == 1:
        y = torch.addmm(bias, b, t.t()) if bias is not None else b.mm(t.t())
        return y[:, None]
    p = b.shape[1] // channels  # (explicit: -1 cannot be inferred on an empty grid)
    bb = b.view(b.shape[0], channels, p).transpose(0, 1)  # [C, B, p]
    tt = t.view(t.shape[0], channels, p).permute(1, 2, 0)  # [C, p, P]
    y = torch.bmm(bb, tt) if bias is None else torch.baddbmm(bias[:, None, None], bb, tt)
    return y.transpose(0, 1)  # [B, C, P]


class _DenseDeepONet(torch.autograd.Function):
    """The Cartesian-product DeepONet with plain MLP branch and trunk nets as one autograd node:
    the forward of both nets and their product, and a hand-written backward (``addmm`` / ``mm`` and
    the activations' own backward kernels). The same operations as the module path, without its
    roughly 20 autograd nodes and their views (a small DeepONet's step is mostly that overhead:
    benchmarks/RESULTS.md, issue 22). Its backward is not differentiable again; the module path
    serves inputs that require grad (physics-informed losses), ``torch.func`` and forward-mode AD."""

    @staticmethod
    def forward(ctx, u, z, bias, acts, channels, *params):
        kept = []
        y = _dense_run(u, z, bias, _rebuild(acts, params), channels, kept)
        ctx.acts, ctx.channels, ctx.n_params = acts, channels, len(params)
        # the layers' (input, pre-activation, output) are saved with the inputs: autograd frees them
        # after the backward (unless the graph is retained) and checks the inputs for in-place changes
        ctx.save_for_backward(bias, *params, *(t_ for k in kept for t_ in k))
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        bias, *rest = ctx.saved_tensors
        params, flat = rest[: ctx.n_params], rest[ctx.n_params :]
        kept = [flat[3 * i : 3 * i + 3] for i in range(len(flat) // 3)]
        chains = _rebuild(ctx.acts, params)
        grads = _dense_backward(g, bias, chains, kept, ctx.channels, ctx.needs_input_grad[2:3] + ctx.needs_input_grad[5:])
        return (None, None, *grads[:1], None, None, *grads[1:])


def _dense_run(u, z, bias, chains, channels: int, keep: list | None = None) -> torch.Tensor:
    """``[B, C, P]``: the branch on ``u``, the trunk on ``z`` and their product; ``keep`` collects every
    layer's (input, pre-activation, output), the branch's first (what :func:`_dense_backward` reads)."""
    return _product(_chain_run(u, chains[0], keep), _chain_run(z, chains[1], keep), bias, channels)


def _dense_backward(g, bias, chains, kept, channels: int, needs, into: dict | None = None) -> list:
    """The gradients ``[bias, *weights and biases of the chains]`` of the fused DeepONet for the
    output's gradient ``g [B, C, P]`` (None where ``needs`` says not wanted; written into
    ``into[parameter]`` where given); ``kept``: every layer's (input, pre-activation, output) as
    :func:`_chain_run` collects them, the branch's first."""
    branch, trunk = chains
    kb, kt = kept[: len(branch)], kept[len(branch) :]
    b, t, c = kb[-1][2], kt[-1][2], channels
    if c == 1:
        g2 = g.reshape(g.shape[0], g.shape[2])  # [B, P]
        gb, gt = g2.mm(t), g2.t().mm(b)
    else:
        gc, p = g.transpose(0, 1), b.shape[1] // c  # [C, B, P], the latent width
        gb = torch.bmm(gc, t.view(t.shape[0], c, p).transpose(0, 1)).transpose(0, 1).reshape(b.shape)
        gt = torch.bmm(gc.transpose(1, 2), b.view(b.shape[0], c, p).transpose(0, 1)).transpose(0, 1).reshape(t.shape)
    nb = 1 + 2 * len(branch)
    gbias = torch.sum(g, (0, 2), out=into.get(bias) if into else None) if bias is not None and needs[0] else None
    return [gbias, *_chain_backward(gb, branch, kb, needs[1:nb], into), *_chain_backward(gt, trunk, kt, needs[nb:], into)]


def _rebuild(acts, params) -> tuple:
    """The two chains from their activations (``(branch's, trunk's)``) and the flat weights."""
    chains, k = [], 0
    for names in acts:
        chains.append([(params[k + 2 * i], params[k + 2 * i + 1], a) for i, a in enumerate(names)])
        k += 2 * len(names)
    return tuple(chains)


def _dense_forward(u, z, bias, chains, channels: int) -> torch.Tensor:
    """``[B, C, P]``: through :class:`_DenseDeepONet` when autograd records, else directly."""
    params = [p for chain in chains for layer in chain for p in layer[:2]]
    if torch.is_grad_enabled() and (any(p.requires_grad for p in params) or (bias is not None and bias.requires_grad)):
        acts = tuple(tuple(layer[2] for layer in chain) for chain in chains)
        return _DenseDeepONet.apply(u, z, bias, acts, channels, *params)
    return _dense_run(u, z, bias, chains, channels)


# ----------------------------------------------------------------------------- sequence DeepONet

_SEQUENCE_BRANCHES = ("gru", "tcn")


@register("seq_deeponet")
class SeqDeepONet(DeepONet):
    """A DeepONet whose branch reads its input as a multichannel time series.

    Input sequences ``x: [B, C_in, T]`` (e.g. an engine's actuator signals on ``T``
    samples), outputs ``[B, C_out, *S_out]`` at any query times (the trunk, as in
    :class:`DeepONet`, with ``coord_scale`` and ``fourier_features``). The branch is

    * ``"gru"``: a ``branch_depth``-layer GRU (width ``hidden``) over the ``T`` steps;
      its last hidden state, through a linear layer, gives the ``p * C_out`` coefficients;
    * ``"tcn"``: a temporal convolution network, ``branch_depth`` layers of kernel 3
      with dilations ``1, 2, 4, ...`` (GELU), averaged over time, then linear.

    This is the sequence-to-sequence DeepONet of Kumar, Goswami, Smith & Karniadakis
    2023, "Real-time prediction of gas flow dynamics in diesel engines using a deep
    neural operator framework" (arXiv:2304.00567), whose branch reads the engine's
    input sequences with a recurrent network instead of a flat MLP on the samples.
    The input length ``T`` is fixed by ``n_sensors = C_in * T`` (the sensors), as for
    any DeepONet.
    """

    reference = ("Kumar, Goswami, Smith & Karniadakis 2023, 'Real-time prediction of gas flow dynamics in diesel "
                 "engines using a deep neural operator framework', arXiv:2304.00567 (sequence branch)")

    def __init__(
        self,
        n_sensors: int,
        in_channels: int,
        coord_dim: int = 1,
        out_channels: int = 1,
        branch: str = "gru",
        hidden: int = 64,
        branch_depth: int = 2,
        trunk_layers: Sequence[int] = (64, 64),
        latent: int = 64,
        activation: str = "relu",  # the trunk's; on the antiderivative: relative L2 0.11 after 300 steps, tanh 0.24
        coord_scale: Sequence[float] | None = None,
        fourier_features: Sequence[float] = (),
    ):
        owner = type(self).__name__
        in_channels = check_int(owner, "in_channels", in_channels)
        if check_int(owner, "n_sensors", n_sensors) % in_channels:
            raise ParameterError(f"{owner}: n_sensors={n_sensors} is not in_channels={in_channels} x a sequence length")
        super().__init__(n_sensors, coord_dim, out_channels, branch_layers=(), trunk_layers=trunk_layers,
                         latent=latent, activation=activation, coord_scale=coord_scale,
                         fourier_features=fourier_features)
        self.in_channels = in_channels
        self.kind_of_branch = check_choice(owner, "branch", branch, _SEQUENCE_BRANCHES)
        hidden = check_int(owner, "hidden", hidden)
        depth = check_int(owner, "branch_depth", branch_depth)
        if branch == "gru":
            self.branch = nn.GRU(in_channels, hidden, num_layers=depth, batch_first=True)
        else:
            layers = []
            for i in range(depth):
                layers += [nn.Conv1d(in_channels if i == 0 else hidden, hidden, 3, padding=2 ** i, dilation=2 ** i),
                           nn.GELU()]
            self.branch = nn.Sequential(*layers)
        self.head = glorot_linear(hidden, self.latent * self.out_channels)

    def _branch(self, u: torch.Tensor) -> torch.Tensor:
        seq = u.reshape(u.shape[0], self.in_channels, -1)  # [B, C_in, T]
        if self.kind_of_branch == "gru":
            _, last = self.branch(seq.transpose(1, 2))  # last: [depth, B, hidden]
            summary = last[-1]
        else:
            summary = self.branch(seq).mean(dim=-1)  # [B, hidden]
        return self.head(summary).reshape(u.shape[0], self.out_channels, self.latent)


# ----------------------------------------------------------------------------- MultiONet


@register("multionet")
class MultiONet(_BranchTrunk):
    """MultiONet (Zang & Koutsourelakis 2025): inner products at every depth.

    Branch and trunk nets have the same depth ``L`` and width ``p``::

        b_1 = s(W^b_1 u + c^b_1),      b_l = s(W^b_l b_{l-1} + c^b_l),
        t_1 = s(W^t_1 y + c^t_1),      t_l = s(W^t_l t_{l-1} + c^t_l),

        G(u)(y) = (1 / L) sum_{l=1}^{L} w_l <b_l(u), t_l(y)> + b0

    A DeepONet pairs only the last features (``l = L``); MultiONet pairs the
    features of every hidden layer, so shallow features reach the output
    directly. The DGNO paper's abstract calls it a more expressive
    generalisation of DeepONet; the ``1/L`` average with learnable scalar
    layer weights ``w_l`` follows the authors' public implementation
    (``out = (w_1 b_1 t_1 + ... + w_L b_L t_L) / L + b``). Here ``w_l``
    starts at 1, so at initialisation the output is the plain mean of the
    layer-wise inner products plus bias.

    Equivalently, MultiONet is a DeepONet whose latent vector is the
    concatenation of all hidden features, the branch half scaled by
    ``w_l / L``; with ``depth=1`` it is the single inner product
    ``w_1 <s(W^b u + c^b), s(W^t y + c^t)> + b0``.

    Keep a sign-changing activation (``tanh``, the default): every paired
    feature is activated, so with ``relu`` each inner product is a sum of
    non-negative terms and the output loses most of its expressivity
    (measured on the antiderivative, 150 functions, 3000 Adam steps: relative
    L2 0.30 with ``relu``, 0.054 with ``tanh``).

    Multiple outputs split the width: channel ``c`` uses features
    ``[c p/C, (c+1) p/C)`` of every layer and its own weights ``w_{l,c}``
    (``width`` must be divisible by ``out_channels``).

    Every feature is activated, on both sides: with ``relu`` all ``b_l`` and
    ``t_l`` are non-negative, so each layer's product is too and the sign of
    the output comes only from ``w_l`` and ``b0``; prefer ``tanh``, ``silu``
    or ``gelu`` (the authors pair SiLU-type activations).
    """

    reference = (
        "Zang & Koutsourelakis 2025, 'DGNO: a novel physics-aware neural operator for solving forward and "
        "inverse PDE problems based on deep, generative probabilistic modeling', arXiv:2502.06250 (MultiONet)"
    )

    def __init__(
        self,
        n_sensors: int,
        coord_dim: int,
        out_channels: int = 1,
        width: int = 128,
        depth: int = 4,
        activation: str = "tanh",
        output_bias: bool = True,
    ):
        super().__init__()
        owner = type(self).__name__
        self.n_sensors = check_int(owner, "n_sensors", n_sensors)
        self.coord_dim = check_int(owner, "coord_dim", coord_dim)
        self.out_channels = check_int(owner, "out_channels", out_channels)
        self.width = check_int(owner, "width", width)
        self.depth = check_int(owner, "depth", depth)
        check_choice(owner, "activation", activation, ACTIVATIONS)
        if width % out_channels:
            raise ParameterError(f"{owner}: width={width} must be divisible by out_channels={out_channels}")
        self.branch = nn.ModuleList(glorot_linear(n_sensors if l == 0 else width, width) for l in range(depth))
        self.trunk = nn.ModuleList(glorot_linear(coord_dim if l == 0 else width, width) for l in range(depth))
        self.act = make_activation(activation)
        self.layer_weights = nn.Parameter(torch.ones(depth, out_channels))  # w_{l,c}
        self.bias = nn.Parameter(torch.zeros(out_channels)) if output_bias else None

    def _features(self, h: torch.Tensor, layers: nn.ModuleList) -> list[torch.Tensor]:
        out = []
        for layer in layers:
            h = self.act(layer(h))
            out.append(h.reshape(*h.shape[:-1], self.out_channels, self.width // self.out_channels))
        return out  # L x [..., C, p/C]

    def _branch(self, u: torch.Tensor) -> torch.Tensor:
        scale = self.layer_weights / self.depth  # [L, C]
        features = self._features(u, self.branch)
        return torch.cat([f * scale[l, :, None] for l, f in enumerate(features)], dim=-1)  # [B, C, L p/C]

    def _trunk(self, points: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._features(points, self.trunk), dim=-1)  # [..., C, L p/C]


# ----------------------------------------------------------------------------- POD-DeepONet


@register("pod_deeponet")
class PODDeepONet(Operator):
    """POD-DeepONet (Lu et al. 2022): a branch net on the POD basis of the outputs.

    For channel ``c`` at grid point ``xi_j``::

        G(u)(xi_j)_c = sum_{k=1}^{K} b_{c,k}(u) phi_{c,k}(xi_j) + phi_{c,0}(xi_j)

    where ``phi_{c,0}`` is the mean of the training outputs and
    ``phi_{c,1..K}`` (``K = n_modes``) their leading principal components
    (per channel), computed by :meth:`fit_data` from the training set; only
    the branch net ``n_sensors -> branch_layers -> K * out_channels`` (last
    layer linear) is trained. The modes are scaled to unit root-mean-square
    over the grid (``(1/P) sum_j phi_k(xi_j)^2 = 1``), so the branch's
    coefficients are the modal amplitudes in the units of the field; their
    sign is fixed so that each mode's largest-magnitude entry is positive.

    The basis lives on the training grid: ``forward`` accepts only coords
    with ``prod(len) == n_points``. ``mean``, ``basis`` and ``fitted`` are
    buffers, saved in the state dict (a checkpoint restores them);
    ``forward`` before ``fit_data`` (or loading a fitted state) is an error.
    """

    kind = "point"
    reference = (
        "Lu et al. 2022, 'A comprehensive and fair comparison of two neural operators (with practical "
        "extensions) based on FAIR data', CMAME 393:114778 (POD-DeepONet)"
    )

    def __init__(
        self,
        n_sensors: int,
        n_points: int,
        out_channels: int = 1,
        n_modes: int = 32,
        branch_layers: Sequence[int] = (128, 128),
        activation: str = "relu",
    ):
        super().__init__()
        owner = type(self).__name__
        self.n_sensors = check_int(owner, "n_sensors", n_sensors)
        self.n_points = check_int(owner, "n_points", n_points)
        self.out_channels = check_int(owner, "out_channels", out_channels)
        self.n_modes = check_int(owner, "n_modes", n_modes)
        if n_modes > n_points:
            raise ParameterError(f"{owner}: n_modes={n_modes} exceeds n_points={n_points}")
        branch_layers = check_ints(owner, "branch_layers", branch_layers)
        check_choice(owner, "activation", activation, ACTIVATIONS)
        self.branch = MLP(n_sensors, branch_layers, n_modes * out_channels, activation)
        self.register_buffer("mean", torch.zeros(out_channels, n_points))  # phi_0: [C, P]
        self.register_buffer("basis", torch.zeros(out_channels, n_points, n_modes))  # phi_k: [C, P, K]
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    @torch.no_grad()
    def fit_data(self, x: torch.Tensor, y: torch.Tensor) -> PODDeepONet:
        """Mean and leading ``n_modes`` principal components of ``y: [N, C_out, *S_out]``
        (``x: [N, C_in, *S_in]`` is checked against ``n_sensors``); returns self."""
        owner = type(self).__name__
        x = torch.as_tensor(x)
        y = torch.as_tensor(y)
        n = y.shape[0]
        if x.shape[0] != n or x[0].numel() != self.n_sensors:
            raise ValueError(
                f"{owner}.fit_data: expected x [N={n}, C_in, *S_in] with {self.n_sensors} values per sample, "
                f"got {tuple(x.shape)}"
            )
        if y.dim() < 2 or y.shape[1] != self.out_channels or y[0, 0].numel() != self.n_points:
            raise ValueError(
                f"{owner}.fit_data: expected y [N, C_out={self.out_channels}, *S_out] with "
                f"prod(S_out) = n_points = {self.n_points}, got {tuple(y.shape)}"
            )
        rank = min(n, self.n_points)
        if self.n_modes > rank:
            raise ParameterError(f"{owner}.fit_data: n_modes={self.n_modes} exceeds min(N, n_points) = {rank}")
        data = y.reshape(n, self.out_channels, self.n_points).to(torch.float64).transpose(0, 1)  # [C, N, P]
        mean = data.mean(dim=1)  # [C, P]
        _, _, vh = torch.linalg.svd(data - mean[:, None], full_matrices=False)  # [C, r, P], orthonormal rows
        modes = vh[:, : self.n_modes].transpose(1, 2)  # [C, P, K]
        peak = modes.abs().argmax(dim=1, keepdim=True)  # sign convention
        modes = modes * torch.sign(torch.gather(modes, 1, peak))
        self.mean.copy_(mean)
        self.basis.copy_(modes * math.sqrt(self.n_points))
        self.fitted.fill_(True)
        return self

    def forward(self, x: torch.Tensor, coords: Sequence[torch.Tensor]) -> torch.Tensor:
        owner = type(self).__name__
        if not torch.compiler.is_compiling() and not self.is_fitted:  # (no data-dependent branch in a graph)
            raise RuntimeError(
                f"{owner}: the POD basis is not set; call fit_data(x_train, y_train) (or load a fitted state dict) first"
            )
        if isinstance(coords, torch.Tensor) and coords.dim() == 1:
            coords = (coords,)
        shape = tuple(int(torch.as_tensor(c).numel()) for c in coords)
        if math.prod(shape) != self.n_points:
            raise ValueError(
                f"{owner}: the POD basis lives on the training grid of n_points={self.n_points} points; "
                f"got coords of lengths {list(shape)} ({math.prod(shape)} points)"
            )
        u = x.reshape(x.shape[0], -1)
        if u.shape[1] != self.n_sensors:
            raise ValueError(
                f"{owner}: expected n_sensors={self.n_sensors} input values per sample, got x of shape {tuple(x.shape)}"
            )
        b = self.branch(u).reshape(u.shape[0], self.out_channels, self.n_modes)  # [B, C, K]
        y = torch.einsum("bck,cpk->bcp", b, self.basis) + self.mean  # [B, C, P]
        return y.reshape(x.shape[0], self.out_channels, *shape)


__all__ = ["DeepONet", "MultiONet", "PODDeepONet", "SeqDeepONet", "fit_data"]
