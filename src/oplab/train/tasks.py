"""What the :class:`~oplab.train.trainer.Trainer` learns: a one-shot map or an autoregressive step.

A task turns the training data into batches and a batch into a loss, fits the
normalisers and scores a predictor; the Trainer's loop, schedule, callbacks and
run folder are the same for all (``train.task``).

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
  - ``unroll = k`` with ``pushforward``: up to ``k - 1`` steps without
    gradient and the loss on the next step only (the pushforward trick,
    Brandstetter et al. 2022, section 2.3): the model learns from the inputs its
    own errors produce at the cost of one differentiated step. The number of
    free steps is drawn per batch from ``0 .. min(epoch, k - 1)``, the
    curriculum of the paper's code (:meth:`Autoregressive.loss`).

  Every valid start of every trajectory is a sample of the epoch. Validation and
  test errors are rollouts from each trajectory's first window to its end
  (:func:`oplab.eval.rollout.rollout`): the relative L2 over all predicted states
  (the FNO paper's Navier-Stokes metric).
* :class:`SpaceTime` (``spacetime``): the first ``window`` states to all later
  ones at once on a space-time grid (the FNO paper's FNO-3D).
"""

from __future__ import annotations

import torch

from .. import losses
from ..data.normalize import ChannelStats
from ..errors import ParameterError
from ..eval.metrics import masked
from ..eval.rollout import advance
from .data import CHUNK


class Task:
    """What every task shares: batches are sample positions, the model answers on the data's grid,
    and the Trainer's evaluation is the task's ``score``."""

    def batches(self, plan):
        return (torch.as_tensor(idx) for idx in plan)

    def coords(self, data, device) -> tuple:
        """The grid the model answers on (its coordinates on ``device``)."""
        return tuple(c.to(device) for c in data.out_coords)

    def evaluate(self, bundle, data, device) -> dict:
        return self.score(self.cfg, bundle, data, device)

    def direct_stepper(self, trainer, coords):
        """None, or ``step(batch)``: ``(loss, samples, [(parameter, gradient), ...])`` for the batch
        without autograd, or None for a batch it does not take; then :meth:`loss` and its backward
        (see :meth:`MapTask.direct_stepper`). Made once per fit."""
        return None


class MapTask(Task):
    """Inputs to outputs in one shot (``train.task: map``). With ``train.loss_mask`` the points where
    that input channel is 0 count neither in the loss nor in the errors (:func:`mask_channel`);
    ``input_channels``: the data's channel names, which it is looked up in."""

    name = "map"

    def __init__(self, train, cfg, input_channels=None):
        self.train, self.cfg = train, cfg
        self.in_channels, self.out_channels = train.x_shape[0], train.y_shape[0]
        self.mask = mask_channel(cfg, input_channels, train.x_shape, train.y_shape)
        self.symmetries = (Symmetries(cfg, train.x_shape, train.y_shape, (train.in_coords, train.out_coords))
                           if cfg.augment != "none" else None)

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
        xb, yb = batch[0].to(device), batch[1]
        if self.symmetries is not None:
            xb, yb = self.symmetries(trainer.epoch, xb, yb)
        if cfg.points:
            return self._points_loss(trainer, net, xb, yb.to(device), coords), len(xb)
        pred = trainer.forward(net, xb, coords)
        loss = 0.0
        if not cfg.physics_only:  # no solutions: nothing to move
            pred, yb = pred.float(), yb.to(device)
            if self.mask is not None:
                pred, yb = masked(xb, self.mask, pred, yb)
            loss = cfg.data_weight * trainer.loss_fn(pred, yb, coords, self.train.periodic)
        if trainer.physics is not None:
            from ..losses.physics import residual_loss

            loss = loss + cfg.physics_weight * residual_loss(trainer.physics, pred.float(), xb.float(),
                                                             cfg.bc_weight, cfg.physics_norm)
        penalty = getattr(trainer.bundle.model, "regularization", None)  # a model's own term (oplab.models.node)
        if penalty is not None:
            loss = loss + penalty
        return loss, len(xb)

    def direct_stepper(self, trainer, coords):
        """A step that gives the batch's loss, its sample count and the parameters' gradients, with
        the gradients written out instead of recorded and replayed by autograd: the model's
        :meth:`vjp_plan <oplab.predictor.Bundle.vjp_plan>` (the fused DeepONet), the output
        normaliser's and the loss's (``losses.VALUE_AND_GRAD``: the relative L2), the gradients written
        into the optimizer's buffer (``trainer.grad_slots``). The same arithmetic as :meth:`loss` and
        its backward (tests/test_direct_step.py), without the autograd graph, which is most of a small
        model's step on a CPU (benchmarks/RESULTS.md, issue 22). What stays fixed through a fit (the
        grid, its weights, the configuration) is set up here, once. None where any part lacks it, or
        the configuration adds terms (physics, masks, augmentation, point subsets, a model's own
        regularisation): then :meth:`loss`."""
        cfg, device, periodic = self.cfg, trainer.device, self.train.periodic
        value_and_grad = losses.VALUE_AND_GRAD.get(cfg.loss)
        if (value_and_grad is None or type(self).loss is not MapTask.loss  # (a subclass's own loss: distillation)
                or cfg.physics_only or cfg.points or self.mask is not None
                or self.symmetries is not None or trainer.physics is not None
                or getattr(trainer.bundle.model, "regularization", None) is not None):
            return None
        run = trainer.bundle.vjp_plan(coords)
        if run is None:
            return None
        root = losses.quadrature_weights(coords, periodic, root=True).float()  # (the loss takes pred.float())
        params = trainer.params

        def step(batch):
            if any(p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None) for p in params):
                return None  # a gradient hook added during the fit: autograd runs it
            xb = batch[0].to(device)
            out = run(xb)
            if out is None:
                return None
            pred, pullback = out
            loss, grad = value_and_grad(pred.float(), batch[1].to(device), coords, periodic, cfg.data_weight,
                                        root=root)
            # (autograd's casts, through pred.float()); the gradients go straight into the optimizer's buffer
            return loss, len(xb), pullback(grad.float().to(pred.dtype), trainer.grad_slots)

        return step

    def _points_loss(self, trainer, net, x, y, coords):
        """``train.points``: the data loss on a random subset of the grid's points (uniform weights)."""
        from ..layers.grid import grid_points

        if getattr(self, "_grid", None) is None or self._grid.device != x.device:
            self._grid = grid_points(coords, dtype=torch.float32, device=x.device)  # [P, d]
        pick = torch.randperm(self._grid.shape[0], device=x.device)[: self.cfg.points]
        pred = trainer.forward(net, x, self._grid[pick])  # [B, C, p]: the Bundle takes points [p, d]
        target = y.flatten(2)[..., pick]
        if self.mask is not None:
            pred, target = masked(x.flatten(2)[..., pick], self.mask, pred, target)
        uniform = (torch.arange(pred.shape[-1], device=x.device, dtype=torch.float32),)
        return self.cfg.data_weight * trainer.loss_fn(pred.float(), target, uniform, (True,))

    def evaluate(self, bundle, data, device) -> dict:
        if self.mask is None:
            return self.score(self.cfg, bundle, data, device)
        from ..eval import evaluate

        return evaluate(bundle, data, device=device, mask=self.mask)

    @staticmethod
    def score(cfg, bundle, data, device=None) -> dict:
        """Relative L2 and H1 errors of ``bundle`` on ``data`` (means over samples)."""
        from ..eval import evaluate

        return evaluate(bundle, data, device=device)

    @staticmethod
    def sample_inputs(cfg, data, k: int) -> torch.Tensor:
        """The model's inputs for the first ``k`` samples of ``data`` (timing)."""
        return data.head(k).x


class Symmetries:
    """``train.augment``: a random symmetry of the grid per training batch, the same for its inputs and
    outputs: each spatial axis reversed with probability 1/2 and, for ``dihedral``, the two axes of a
    square 2D grid swapped with probability 1/2. The draws of epoch ``e`` come from a generator seeded
    by ``(seed, e)``, one per batch in order, so a run resumed at an epoch boundary replays them."""

    def __init__(self, cfg, x_shape, y_shape, grids=()):
        self.cfg, self.dim = cfg, len(y_shape) - 1
        if len(x_shape) != len(y_shape):
            raise ParameterError(f"train.augment {cfg.augment}: the inputs {list(x_shape[1:])} and outputs "
                                 f"{list(y_shape[1:])} must be on grids of the same dimension")
        if cfg.augment == "dihedral" and not (self.dim == 2 and x_shape[1] == x_shape[2] and y_shape[1] == y_shape[2]):
            raise ParameterError(f"train.augment dihedral swaps the two axes of a square 2D grid; the data's grids "
                                 f"are {list(x_shape[1:])} (inputs) and {list(y_shape[1:])} (outputs)")
        for coords in grids:  # the index maps must be symmetries of the coordinates too
            offsets = [torch.as_tensor(c, dtype=torch.float64) for c in coords]
            offsets = [c - c[0] for c in offsets]
            for axis, c in enumerate(offsets):
                if not torch.allclose(c, c[-1] - c.flip(0), rtol=1e-6, atol=1e-9 * float(c[-1].abs() + 1)):
                    raise ParameterError(f"train.augment {cfg.augment}: axis {axis} of the grid is not symmetric "
                                         f"under reflection (its points are not evenly mirrored)")
            if cfg.augment == "dihedral" and not torch.allclose(offsets[0], offsets[1], rtol=1e-6, atol=1e-12):
                raise ParameterError("train.augment dihedral swaps the two axes: they must have the same points "
                                     "(a square domain), and the data's differ")
        self.epoch, self.generator = None, None

    def draw(self, epoch: int) -> tuple[list[int], bool]:
        """The next batch's symmetry: the spatial axes to reverse and whether to swap the two axes."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch + 0x5EED)
        bits = torch.randint(0, 2, (self.dim + 1,), generator=self.generator).tolist()
        flips = [2 + axis for axis in range(self.dim) if bits[axis]]
        return flips, bool(bits[-1]) and self.cfg.augment == "dihedral"

    def __call__(self, epoch: int, *fields: torch.Tensor) -> list[torch.Tensor]:
        flips, swap = self.draw(epoch)
        out = []
        for f in fields:
            if flips:
                f = f.flip(flips)
            if swap:
                f = f.transpose(-1, -2).contiguous()
            out.append(f)
        return out


class Autoregressive(Task):
    """The last ``window`` states to the next ``bundle`` (``train.task: autoregressive``), see the
    module docstring."""

    name = "autoregressive"

    def __init__(self, train, cfg):
        self.cfg = cfg
        self.states = train.states(cfg.first_state)  # [N, S, C, *sp]
        self.periodic = train.periodic
        n, s, c = self.states.shape[:3]
        w, b, k = cfg.window, cfg.bundle, cfg.unroll
        self.span = w + k * b
        check_horizon(s, w, b, k)
        self.starts = s - self.span + 1
        self.n_states, self.c = s, c
        #: channels constant in time (the data's static channels): read, carried forward, not predicted
        self.static = tuple(getattr(train, "static", ()))
        self.dynamic = [i for i in range(c) if i not in self.static]
        self.in_channels, self.out_channels = w * c, b * len(self.dynamic)
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
        bundle.out_norm.set(mean[self.dynamic].repeat(self.cfg.bundle), std[self.dynamic].repeat(self.cfg.bundle))

    def frames(self, positions: torch.Tensor) -> torch.Tensor:
        """``[B, span, C, *S]``: the states of training samples ``positions`` (trajectory, start)."""
        traj, start = positions // self.starts, positions % self.starts
        return self.states[traj[:, None], start[:, None] + torch.arange(self.span)]

    def loss(self, trainer, net, positions, coords, free: int | None = None):
        """The batch's loss and sample count. With ``pushforward`` the number of steps taken without
        gradient before the scored one is ``free``, by default drawn per batch uniformly from
        ``0 .. min(epoch, unroll - 1)`` (the curriculum of Brandstetter et al. 2022's code: an
        untrained model's own outputs teach nothing), from a generator seeded by the run's seed
        and the epoch, so a resumed run draws the same."""
        cfg = self.cfg
        w, b, k = cfg.window, cfg.bundle, cfg.unroll
        frames = self.frames(positions).to(trainer.device)
        x = frames[:, :w].flatten(1, 2)
        if cfg.pushforward:
            free = self.draw_free_steps(trainer.epoch) if free is None else free
            with torch.no_grad():
                for _ in range(free):
                    x = advance(x, trainer.forward(net, x, coords).float(), w)
            pred = trainer.forward(net, x, coords).float()
            target = frames[:, w + free * b : w + (free + 1) * b].flatten(1, 2)
            return self._loss(trainer, pred, target, coords), len(positions)
        total = 0.0
        for j in range(k):
            pred = trainer.forward(net, x, coords).float()
            target = frames[:, w + j * b : w + (j + 1) * b].flatten(1, 2)
            total = total + self._loss(trainer, pred, target, coords)
            if j < k - 1:
                x = advance(x, pred, w)
        return total / k, len(positions)

    def _loss(self, trainer, pred, target, coords):
        """The data loss on the predicted channels (the static ones are the input's, exactly)."""
        part = trainer.bundle.dynamic_part
        return trainer.loss_fn(part(pred), part(target), coords, self.periodic)

    def draw_free_steps(self, epoch: int) -> int:
        if getattr(self, "_draw_epoch", None) != epoch:
            self._draw_epoch = epoch
            self._draws = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch + 7919)
        most = min(epoch, self.cfg.unroll - 1)
        return int(torch.randint(most + 1, (1,), generator=self._draws))

    @staticmethod
    def score(cfg, bundle, data, device=None) -> dict:
        """The rollout from each trajectory's first window to its end: relative L2 and H1 over all
        predicted states."""
        from ..eval.rollout import rollout_errors

        report = rollout_errors(bundle, data, cfg.window, cfg.bundle, device=device, first=cfg.first_state)
        return {"l2": report["l2"], "h1": report["h1"]}

    @staticmethod
    def sample_inputs(cfg, data, k: int) -> torch.Tensor:
        return data.head(k).states(cfg.first_state)[:, : cfg.window].flatten(1, 2)


class SpaceTime(Task):
    """The first ``window`` states to all later ones at once, time as one more grid axis
    (``train.task: spacetime``): the FNO paper's FNO-3D for Navier-Stokes (Li et al. 2021, section
    5.3: the ten first states, repeated along the time axis, to the next ``T - 10``). Inputs
    ``[window * C, *S, H]`` (the window repeated ``H`` times), outputs ``[C, *S, H]``; the time
    axis is not periodic and its coordinates are the record indices scaled to ``[0, 1]``."""

    name = "spacetime"

    def __init__(self, train, cfg):
        self.cfg = cfg
        self.states = train.states(cfg.first_state)
        n, s, c = self.states.shape[:3]
        check_horizon(s, cfg.window, 1)
        self.horizon = s - cfg.window
        self.periodic = tuple(train.periodic) + (False,)
        self.in_channels, self.out_channels = cfg.window * c, c
        if cfg.physics_weight > 0:
            raise ParameterError("train.physics_weight: the physics losses score one-shot trajectories "
                                 "(train.task: map)")

    def __len__(self) -> int:
        return self.states.shape[0]

    @staticmethod
    def inputs(states: torch.Tensor, window: int) -> torch.Tensor:
        """``[B, S, C, *sp]`` -> the window repeated along a last time axis ``[B, window * C, *sp, H]``."""
        x = states[:, :window].flatten(1, 2)
        return x.unsqueeze(-1).expand(*x.shape, states.shape[1] - window).contiguous()

    @staticmethod
    def targets(states: torch.Tensor, window: int) -> torch.Tensor:
        """``[B, S, C, *sp]`` -> the later states with time last, ``[B, C, *sp, H]``."""
        return states[:, window:].movedim(1, -1)

    @staticmethod
    def time_coords(horizon: int, device=None) -> torch.Tensor:
        return torch.linspace(0.0, 1.0, horizon, device=device)

    def coords(self, data, device) -> tuple:
        return tuple(c.to(device) for c in data.out_coords) + (self.time_coords(self.horizon, device),)

    def fit_normalizers(self, bundle, outputs: bool = True) -> None:
        xs, ys = ChannelStats(), ChannelStats()
        for start in range(0, self.states.shape[0], CHUNK):
            chunk = self.states[start : start + CHUNK]
            xs.add(chunk[:, : self.cfg.window].flatten(1, 2))
            ys.add(chunk[:, self.cfg.window:].flatten(0, 1))
        bundle.in_norm.set(xs.mean, xs.std())
        bundle.out_norm.set(ys.mean, ys.std())

    def loss(self, trainer, net, idx, coords):
        states = self.states[idx].to(trainer.device)
        pred = trainer.forward(net, self.inputs(states, self.cfg.window), coords).float()
        return trainer.loss_fn(pred, self.targets(states, self.cfg.window), coords, self.periodic), len(idx)

    @staticmethod
    def score(cfg, bundle, data, device=None, batch_size: int = 20) -> dict:
        """Relative L2 and H1 over the predicted space-time field (means over trajectories)."""
        device = device or next(bundle.parameters()).device
        states = data.states(cfg.first_state)
        horizon = states.shape[1] - cfg.window
        coords = tuple(c.to(device) for c in data.out_coords) + (SpaceTime.time_coords(horizon, device),)
        periodic = tuple(data.periodic) + (False,)
        l2 = h1 = 0.0
        was_training = bundle.training
        bundle.eval()
        with torch.no_grad():
            for start in range(0, states.shape[0], batch_size):
                chunk = states[start : start + batch_size].to(device)
                pred = bundle(SpaceTime.inputs(chunk, cfg.window), coords)
                truth = SpaceTime.targets(chunk, cfg.window)
                l2 += losses.relative_l2(pred, truth, coords, periodic, reduce=False).sum().item()
                h1 += losses.relative_h1(pred, truth, coords, periodic, reduce=False).sum().item()
        bundle.train(was_training)
        return {"l2": l2 / states.shape[0], "h1": h1 / states.shape[0]}

    @staticmethod
    def sample_inputs(cfg, data, k: int) -> torch.Tensor:
        return SpaceTime.inputs(data.head(k).states(cfg.first_state), cfg.window)


def check_horizon(n_states: int, window: int, bundle: int, unroll: int = 1, where: str = "the trajectories") -> None:
    """A ParameterError unless a window of ``window`` states and ``unroll`` steps of ``bundle`` fit
    in trajectories of ``n_states`` states."""
    need = window + unroll * bundle
    if need > n_states:
        raise ParameterError(
            f"train.window {window} + train.unroll {unroll} x train.bundle {bundle} = {need} states, but "
            f"{where} hold {n_states}")


TASKS = {"map": MapTask, "autoregressive": Autoregressive, "spacetime": SpaceTime}


def make(train, cfg, input_channels=None):
    """The task ``cfg.task`` over the training data ``train`` (``input_channels``: its channel names,
    for ``train.loss_mask``)."""
    if cfg.task == "map":
        return MapTask(train, cfg, input_channels)
    if cfg.augment != "none":
        raise ParameterError(f"train.augment {cfg.augment} works with train.task map, not {cfg.task}")
    return TASKS[cfg.task](train, cfg)


def mask_channel(cfg, input_channels, x_shape=None, y_shape=None) -> int | None:
    """The index of ``train.loss_mask`` among ``input_channels`` (None when the option is off); a
    one-line ParameterError for a name that is not an input channel, or when the inputs are not on
    the outputs' grid (the mask is read point by point)."""
    name = getattr(cfg, "loss_mask", "")
    if not name:
        return None
    names = list(input_channels or [])
    if name not in names:
        known = f"the data's input channels are {names}" if names else "the data's channel names are unknown"
        raise ParameterError(f"train.loss_mask {name!r} is not an input channel; {known}")
    if x_shape is not None and y_shape is not None and tuple(x_shape[1:]) != tuple(y_shape[1:]):
        raise ParameterError(f"train.loss_mask {name!r}: the inputs' grid {list(x_shape[1:])} is not the outputs' "
                             f"{list(y_shape[1:])}; a mask channel needs both on one grid")
    return names.index(name)


def check_model(model, cfg, train) -> None:
    """A one-line ParameterError, before anything is written, when ``model`` (its recorded
    constructor arguments) cannot do the autoregressive step of ``cfg`` on ``train``: its outputs
    must be the ``bundle`` predicted states without their static channels, and a ResNet's
    ``input_skip`` (which adds the first ``out_channels`` input channels) needs one state in, one
    out, and the static channels after the predicted ones."""
    if cfg.task != "autoregressive":
        return
    conf = getattr(model, "config", None) or {}
    c, static = train.x_shape[0], tuple(getattr(train, "static", ()))
    want = cfg.bundle * (c - len(static))
    got = conf.get("out_channels")
    if got is not None and got != want:
        raise ParameterError(f"model out_channels {got}: train.task autoregressive predicts train.bundle {cfg.bundle} "
                             f"state(s) of {c - len(static)} channel(s) ({c} per state, {len(static)} static ones "
                             f"carried, not predicted): out_channels must be {want}")
    if conf.get("input_skip") and (cfg.window != 1 or cfg.bundle != 1 or any(i < c - len(static) for i in static)):
        raise ParameterError("model.input_skip adds the first out_channels input channels to the output: it needs "
                             "train.window 1, train.bundle 1 and the static channels after the predicted ones")


def predicted(cfg, y_shape, n_static: int) -> tuple:
    """The model's own output shape for a bundle answering ``y_shape``: an autoregressive step
    predicts ``bundle`` states without their ``n_static`` static channels."""
    if cfg.task != "autoregressive" or not n_static:
        return tuple(y_shape)
    return (y_shape[0] - cfg.bundle * n_static, *y_shape[1:])


def shapes(cfg, x_shape, y_shape, n_times) -> tuple[tuple, tuple]:
    """The model's input and output shapes ``[C, *S]`` for ``cfg.task`` on data of ``x_shape``,
    ``y_shape`` (``n_times`` records)."""
    if cfg.task == "map":
        return tuple(x_shape), tuple(y_shape)
    c, sp = x_shape[0], tuple(x_shape[1:])
    if cfg.task == "autoregressive":  # (whole states: the model itself predicts the dynamic channels)
        return (cfg.window * c, *sp), (cfg.bundle * c, *sp)
    horizon = n_times + 1 - cfg.first_state - cfg.window
    return (cfg.window * c, *sp, horizon), (c, *sp, horizon)
