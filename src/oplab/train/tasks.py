"""What the :class:`~oplab.train.trainer.Trainer` learns: a one-shot map or an autoregressive step.

A task turns the training data into batches and a batch into a loss, fits the
normalisers and scores a predictor; the Trainer's loop, schedule, callbacks and
run folder are the same for both (``train.task``).

* :class:`MapTask` (``map``): inputs to outputs in one shot, ``x [C_in, *S] -> y
  [C_out, *S]`` (a trajectory's records flattened into channels, the FNO-2D
  convention for ``w0 -> w(1..T)``).
* :class:`Autoregressive` (``autoregressive``): on a trajectory set (states
  ``u_0 .. u_T``, :meth:`GridData.states`) the model maps the last ``window``
  states to the next ``bundle`` ones (time-bundling, Brandstetter, Worrall &
  Welling 2022, "Message passing neural PDE solvers", ICLR, section 2.3) and is
  applied again on its own output. A training sample is a trajectory and a start
  ``t``; the loss is

  - ``unroll = 1``: one step from true states (teacher forcing);
  - ``unroll = k > 1``: ``k`` steps, each fed the previous prediction, the loss
    averaged over the ``k`` steps and back-propagated through the whole rollout
    (the FNO paper's Navier-Stokes training, Li et al. 2021, section 5.3, unrolls
    the whole trajectory);
  - ``unroll = k`` with ``pushforward``: the first ``k - 1`` steps without
    gradient and the loss on the last step only (the pushforward trick,
    Brandstetter et al. 2022, section 2.3): the model learns from the inputs its
    own errors produce at the cost of one differentiated step.

  Every valid start of every trajectory is a sample of the epoch. Validation and
  test errors are rollouts from each trajectory's first window to its end
  (:func:`oplab.eval.rollout.rollout`): the relative L2 over all predicted states
  (the FNO paper's Navier-Stokes metric).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .. import losses
from ..data.normalize import ChannelStats
from ..errors import ParameterError
from .data import CHUNK


class MapTask:
    """Inputs to outputs in one shot (``train.task: map``)."""

    name = "map"

    def __init__(self, train, cfg):
        self.train, self.cfg = train, cfg
        self.in_channels, self.out_channels = train.x_shape[0], train.y_shape[0]

    def __len__(self) -> int:
        return len(self.train)

    def fit_normalizers(self, bundle, outputs: bool = True) -> None:
        """Channel statistics of the training inputs (and outputs), one pass over the same chunks
        whether the set is in memory or streamed."""
        xs, ys = ChannelStats(), ChannelStats()
        for x, y in self.train.chunks(CHUNK):
            xs.add(x)
            if outputs:
                ys.add(y)
        bundle.in_norm.set(xs.mean, xs.std())
        if outputs:
            bundle.out_norm.set(ys.mean, ys.std())

    def batches(self, plan):
        return self.train.batches(plan)

    def loss(self, trainer, net, batch, coords):
        """The batch's loss (data and physics terms as configured) and its sample count."""
        cfg, device = self.cfg, trainer.device
        xb = batch[0].to(device)
        pred = trainer.forward(net, xb, coords)
        loss = 0.0
        if not cfg.physics_only:  # no solutions: nothing to move
            loss = cfg.data_weight * trainer.loss_fn(pred.float(), batch[1].to(device), coords, self.train.periodic)
        if trainer.physics is not None:
            from ..losses.physics import residual_loss

            loss = loss + cfg.physics_weight * residual_loss(trainer.physics, pred.float(), xb.float(),
                                                             cfg.bc_weight, cfg.physics_norm)
        return loss, len(xb)

    def evaluate(self, bundle, data, device) -> dict:
        from ..eval import evaluate

        return evaluate(bundle, data, device=device)


def advance(x: torch.Tensor, pred: torch.Tensor, window: int) -> torch.Tensor:
    """The next input window: the last ``window`` states of ``x [B, window * C, *S]`` followed by
    ``pred [B, bundle * C, *S]``."""
    c = x.shape[1] // window
    return torch.cat([x, pred], dim=1)[:, -window * c:]


class Autoregressive:
    """The last ``window`` states to the next ``bundle`` (``train.task: autoregressive``), see the
    module docstring."""

    name = "autoregressive"

    def __init__(self, train, cfg):
        self.cfg = cfg
        self.states = train.states()  # [N, S, C, *sp]
        self.periodic = train.periodic
        n, s, c = self.states.shape[:3]
        w, b, k = cfg.window, cfg.bundle, cfg.unroll
        self.span = w + k * b
        check_horizon(s, w, b, k)
        self.starts = s - self.span + 1
        self.n_states, self.c = s, c
        self.in_channels, self.out_channels = w * c, b * c
        if cfg.physics_weight > 0:
            raise ParameterError("train.physics_weight: the physics losses score one-shot trajectories "
                                 "(train.task: map); autoregressive training uses the data loss")

    def __len__(self) -> int:
        return self.states.shape[0] * self.starts

    def fit_normalizers(self, bundle, outputs: bool = True) -> None:
        """Statistics per state channel over every state of every training trajectory, repeated for
        each state of the window and of the bundle."""
        stats = ChannelStats()
        for start in range(0, self.states.shape[0], CHUNK):
            stats.add(self.states[start : start + CHUNK].flatten(0, 1))
        mean, std = stats.mean, stats.std()
        bundle.in_norm.set(mean.repeat(self.cfg.window), std.repeat(self.cfg.window))
        bundle.out_norm.set(mean.repeat(self.cfg.bundle), std.repeat(self.cfg.bundle))

    def batches(self, plan):
        return (torch.as_tensor(idx) for idx in plan)

    def frames(self, positions: torch.Tensor) -> torch.Tensor:
        """``[B, span, C, *S]``: the states of training samples ``positions`` (trajectory, start)."""
        traj, start = positions // self.starts, positions % self.starts
        return self.states[traj[:, None], start[:, None] + torch.arange(self.span)]

    def loss(self, trainer, net, positions, coords):
        cfg = self.cfg
        w, b, k = cfg.window, cfg.bundle, cfg.unroll
        frames = self.frames(positions).to(trainer.device)
        x = frames[:, :w].flatten(1, 2)
        total = 0.0
        for j in range(k):
            scored = not cfg.pushforward or j == k - 1
            with nullcontext() if scored else torch.no_grad():
                pred = trainer.forward(net, x, coords).float()
            if scored:
                target = frames[:, w + j * b : w + (j + 1) * b].flatten(1, 2)
                total = total + trainer.loss_fn(pred, target, coords, self.periodic)
            if j < k - 1:
                x = advance(x, pred, w)
        return total / (1 if cfg.pushforward else k), len(positions)

    def evaluate(self, bundle, data, device) -> dict:
        from ..eval.rollout import rollout_errors

        report = rollout_errors(bundle, data, self.cfg.window, self.cfg.bundle, device=device)
        return {"l2": report["l2"], "h1": report["h1"]}


def check_horizon(n_states: int, window: int, bundle: int, unroll: int = 1, where: str = "the trajectories") -> None:
    """A ParameterError unless a window of ``window`` states and ``unroll`` steps of ``bundle`` fit
    in trajectories of ``n_states`` states."""
    need = window + unroll * bundle
    if need > n_states:
        raise ParameterError(
            f"train.window {window} + train.unroll {unroll} x train.bundle {bundle} = {need} states, but "
            f"{where} hold {n_states} (the initial state and {n_states - 1} records)")


def make(train, cfg):
    """The task ``cfg.task`` over the training data ``train``."""
    return (Autoregressive if cfg.task == "autoregressive" else MapTask)(train, cfg)
