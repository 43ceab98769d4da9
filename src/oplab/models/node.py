"""Neural ODE operator on a grid, with the solver-heuristic regularisers of Pal et al.

Chen, Rubanova, Bettencourt, Duvenaud, "Neural ordinary differential
equations" (NeurIPS 2018) for the model; the regularisers from

* A. Pal, Y. Ma, V. Shah, C. Rackauckas, "Opening the blackbox: accelerating
  neural differential equations by regularizing internal solver heuristics",
  ICML 2021 (arXiv:2105.03918): global regularisation by the accumulated
  local error estimates ``R_E`` or stiffness estimates ``R_S`` of the adaptive
  solver;
* A. Pal, A. Edelman, C. Rackauckas, "Locally regularized neural differential
  equations: some black boxes were meant to remain closed!", ICML 2023: the
  same penalty of one step at a random time (local regularisation).

Written here from the papers (the reference code, RegNeuralODE.jl, is Julia).

As an oplab grid operator (``[B, C_in, *S] -> [B, C_out, *S]``, like FNO):

* ``h(0) = P([a, p])``: the input channels and (``positional``) the
  coordinates lifted pointwise to ``width`` channels;
* ``dh/dt = f_theta(h)``, ``t`` in ``[0, 1]``, with ``f_theta`` = convolution
  (``kernel_size``, ``width -> hidden``), ``activation``, convolution
  (``hidden -> width``): a local, translation-equivariant vector field on the
  grid (``padding``: ``"zeros"`` or ``"circular"`` for periodic axes), the
  same at every time (autonomous);
* ``u = Q(h(1))``: pointwise ``width -> 2 width -> out_channels``.

**Solvers.** ``h(1)`` is computed by adaptive Dormand-Prince 5(4) with
``rtol`` and ``atol`` (the same pair and step-size controller either way):

* ``solver="oplab"`` (default): :func:`oplab.layers.ode.dopri5` with
  ``per_sample=True``: every sample of the batch is its own ODE, with its own
  steps, so a batch answers as its samples one by one (oplab's model
  contract, tests/test_fuzz.py); gradients through its operations
  (discretise-then-optimise, the papers' discrete sensitivities);
* ``solver="torchdiffeq"``: ``torchdiffeq.odeint(method="dopri5")``, the batch
  one system (one step size, the error norm over all samples, so a sample's
  answer depends on its batch within the tolerance); with ``adjoint``
  (unregularised training only) ``odeint_adjoint``, memory independent of the
  steps. Training with a regulariser uses oplab's loop with the batch as one
  system, the estimates being needed (torchdiffeq does not expose them).

**Regularisers** (``reg``; :mod:`oplab.layers.ode` for the estimates):

* ``"error"``: ``R_E = sum_n E_n |h_n|`` (Pal et al. 2021), ``E_n`` the
  scaled RMS local error estimate of accepted step ``n`` of length ``h_n``;
* ``"stiffness"``: ``R_S = sum_n |h_n lambda_n|`` (ibid.),
  ``|lambda_n| = ||k_7 - k_6|| / ||y_{n+1} - Y_6||`` the stiffness estimate of
  dopri5 (the dominant eigenvalue of ``df/dh``);
* ``reg_local``: the term of a single step, the first accepted step from a time
  ``t_s ~ U(0, 1)`` drawn per forward pass (the 2023 paper's unbiased
  sampling), instead of the sum over the trajectory.

With ``solver="oplab"`` each sample has its own steps and ``R`` is the mean over
the samples of their sums (terms); with ``"torchdiffeq"`` the batch's one sum.

**How the penalty enters training.** A forward pass in training mode with
``reg != "none"`` sets ``model.regularization = reg_weight * R`` (a scalar
tensor in the autograd graph); otherwise ``model.regularization`` is ``None``.
The trainer adds it to the data loss when it is not ``None``; a loop of one's
own does ``loss = loss_fn(model(x, coords), y) + model.regularization``.

**Counting.** After every forward pass ``model.nfe`` holds the calls of
``f_theta`` it made on the batch (forward only; the adjoint's backward
evaluations are not counted) and ``model.solver_stats`` the solver's
statistics: ``nfe``; with oplab's loop also the means over the samples (over
the one system) of ``nfe_per_sample`` (what a sample needs alone), ``steps``,
``rejected``, ``error`` (``R_E``) and ``stiffness`` (``R_S``).

Not resolution invariant: the convolution kernels are fixed in cells.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import nn

from ..errors import ParameterError, check_choice, check_int, is_int
from ..layers.conv import CONV
from ..layers.grid import append_positions, check_channels
from ..layers.ode import dopri5
from ..layers.pointwise import ACTIVATIONS, Pointwise, channel_mlp, make_activation
from . import register
from .base import Operator

#: the regularisers by name
REGULARIZERS = ("none", "error", "stiffness")
#: the solvers: oplab's loop, every sample its own steps; torchdiffeq's, the batch one system
SOLVERS = ("oplab", "torchdiffeq")


class ConvField(nn.Module):
    """The vector field ``f_theta(t, h) = conv(act(conv(h)))`` on ``[B, width, *S]`` (autonomous);
    counts its evaluations in ``calls``."""

    def __init__(self, dim: int, width: int, hidden: int, kernel_size: int, activation: str, padding: str):
        super().__init__()
        conv = CONV[dim]
        pad = kernel_size // 2
        self.inner = conv(width, hidden, kernel_size, padding=pad, padding_mode=padding)
        self.act = make_activation(activation)
        self.outer = conv(hidden, width, kernel_size, padding=pad, padding_mode=padding)
        self.calls = 0

    def forward(self, t, h: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.outer(self.act(self.inner(h)))


@register("neural_ode")
class NeuralODE(Operator):
    """Neural ODE grid operator ``[B, in_channels, *S] -> [B, out_channels, *S]``: lift, integrate
    ``dh/dt = f_theta(h)`` over ``[0, 1]`` adaptively, project (module docstring), with the
    error / stiffness regularisers of Pal et al. (2021, 2023).

    Args:
        in_channels, out_channels: channels of the input and output functions.
        dim: number of spatial axes (1, 2 or 3).
        width: channels of the ODE state ``h``.
        hidden: channels between the two convolutions of ``f_theta`` (``None``: ``width``).
        kernel_size: odd kernel size of the convolutions of ``f_theta``.
        activation: of ``f_theta`` and of the projection (``tanh``, ``gelu``, ``relu``, ``silu``).
        padding: ``"zeros"`` or ``"circular"`` (periodic axes) for the convolutions.
        positional: append the coordinates (from ``coords``) to the input channels.
        rtol, atol: tolerances of the adaptive solver.
        adjoint: train an unregularised model with torchdiffeq's adjoint (``solver="torchdiffeq"``, no ``reg``).
        reg: ``"none"``, ``"error"`` (``R_E``) or ``"stiffness"`` (``R_S``).
        reg_weight: the penalty is ``reg_weight * R``.
        reg_local: penalise one step at a random time (2023) instead of the trajectory (2021).
        solver: ``"oplab"`` (every sample its own steps) or ``"torchdiffeq"`` (the batch one system).
        max_steps: at most this many attempted steps per solve (oplab's loop: a RuntimeError;
            torchdiffeq: its ``max_num_steps``).

    ``forward(x, coords)``: ``x [B, in_channels, *S]``, ``coords`` a tuple of ``dim`` 1D coordinate
    tensors (required when ``positional``) -> ``[B, out_channels, *S]``; sets ``nfe``,
    ``solver_stats`` and ``regularization``.
    """

    kind = "grid"
    reference = (
        "R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, \"Neural ordinary differential equations\", "
        "NeurIPS 2018; A. Pal, Y. Ma, V. Shah, C. Rackauckas, \"Opening the blackbox: accelerating neural "
        "differential equations by regularizing internal solver heuristics\", ICML 2021; A. Pal, A. Edelman, "
        "C. Rackauckas, \"Locally regularized neural differential equations: some black boxes were meant to "
        "remain closed!\", ICML 2023"
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dim: int = 2,
        width: int = 16,
        hidden: int | None = None,
        kernel_size: int = 3,
        activation: str = "tanh",
        padding: str = "zeros",
        positional: bool = True,
        rtol: float = 1e-3,
        atol: float = 1e-4,
        adjoint: bool = False,
        reg: str = "none",
        reg_weight: float = 0.1,
        reg_local: bool = False,
        solver: str = "oplab",
        max_steps: int = 1000,
    ):
        super().__init__()
        name = "NeuralODE"
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width),
                           ("kernel_size", kernel_size), ("max_steps", max_steps)):
            check_int(name, key, value)
        check_int(name, "hidden", hidden, optional=True)
        if not is_int(dim) or dim > 3:
            raise ParameterError(f"{name}: dim must be 1, 2 or 3, got {dim!r}")
        if kernel_size % 2 == 0:
            raise ParameterError(f"{name}: kernel_size must be odd, got {kernel_size}")
        check_choice(name, "activation", activation, tuple(ACTIVATIONS))
        check_choice(name, "padding", padding, ("zeros", "circular"))
        check_choice(name, "reg", reg, REGULARIZERS)
        check_choice(name, "solver", solver, SOLVERS)
        for key, value in (("positional", positional), ("adjoint", adjoint), ("reg_local", reg_local)):
            if not isinstance(value, bool):
                raise ParameterError(f"{name}: {key} must be true or false, got {value!r}")
        for key, value, positive in (("rtol", rtol, True), ("atol", atol, True), ("reg_weight", reg_weight, False)):
            if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                    or value < 0 or (positive and value == 0)):
                raise ParameterError(f"{name}: {key} must be a finite number {'> 0' if positive else '>= 0'}, "
                                     f"got {value!r}")
        if adjoint and (reg != "none" or solver != "torchdiffeq"):
            raise ParameterError(f"{name}: adjoint=True trains through torchdiffeq's adjoint (solver='torchdiffeq'), "
                                 f"which does not expose the solver's error and stiffness estimates (reg='none'); "
                                 f"got solver={solver!r}, reg={reg!r}")
        self.dim, self.width = int(dim), int(width)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.positional = positional
        self.rtol, self.atol = float(rtol), float(atol)
        self.adjoint, self.solver, self.max_steps = adjoint, solver, int(max_steps)
        self.reg, self.reg_weight, self.reg_local = reg, float(reg_weight), reg_local
        n_position = self.dim if positional else 0
        self.lifting = Pointwise(self.in_channels + n_position, width)
        self.field = ConvField(self.dim, width, int(hidden or width), int(kernel_size), activation, padding)
        self.projection = channel_mlp(width, 2 * width, self.out_channels, activation)
        #: evaluations of f_theta in the last forward pass
        self.nfe = 0
        #: the solver's statistics of the last forward pass
        self.solver_stats: dict = {}
        #: ``reg_weight * R`` of the last training forward pass with a regulariser, else None
        self.regularization: torch.Tensor | None = None

    @classmethod
    def defaults(cls, sizes, periodic, given=None) -> dict:
        """``dim``; circular padding when every axis is periodic."""
        return {"dim": len(sizes), "padding": "circular" if periodic and all(periodic) else "zeros"}

    def integrate(self, h0: torch.Tensor) -> torch.Tensor:
        """``h(1)`` from ``h(0) = h0``; sets ``nfe``, ``solver_stats`` and ``regularization``."""
        field = self.field
        field.calls = 0
        self.regularization = None
        regularize = self.training and self.reg != "none" and torch.is_grad_enabled()
        if regularize or self.solver == "oplab":
            local_time = None
            if regularize and self.reg_local:
                local_time = float(torch.rand(()).clamp(1e-6, 1 - 1e-6))  # t_s ~ U(0, 1), torch's generator
            h1, info = dopri5(field, h0, 0.0, 1.0, self.rtol, self.atol, per_sample=self.solver == "oplab",
                              local_time=local_time, max_steps=self.max_steps)
            if regularize:
                key = ("local_" if self.reg_local else "") + self.reg
                self.regularization = self.reg_weight * info[key]
            self.solver_stats = {"nfe": info["nfe"], "nfe_per_sample": float(info["nfe_per_sample"].float().mean()),
                                 "steps": float(info["steps"].float().mean()),
                                 "rejected": float(info["rejected"].float().mean()),
                                 "error": float(info["error"].detach()), "stiffness": float(info["stiffness"].detach())}
        else:
            import torchdiffeq

            t = torch.tensor([0.0, 1.0], dtype=h0.dtype, device=h0.device)
            options = {"max_num_steps": self.max_steps}
            if self.adjoint and self.training and torch.is_grad_enabled():
                h1 = torchdiffeq.odeint_adjoint(field, h0, t, rtol=self.rtol, atol=self.atol, method="dopri5",
                                                options=options, adjoint_params=tuple(field.parameters()))[-1]
            else:
                h1 = torchdiffeq.odeint(field, h0, t, rtol=self.rtol, atol=self.atol, method="dopri5",
                                        options=options)[-1]
            self.solver_stats = {"nfe": field.calls}
        self.nfe = field.calls
        return h1

    def forward(self, x: torch.Tensor, coords: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        check_channels(x, self.in_channels, self.dim, "NeuralODE")
        if self.positional:
            x = append_positions(x, coords, "NeuralODE")
        return self.projection(self.integrate(self.lifting(x)))
