"""The deployable unit: a trained operator, ready to answer: ``op = oplab.load(RUN_DIR); u = op(a)``.

:class:`Bundle` is the model with its normalisers (what a checkpoint's
``weights.safetensors`` holds); :class:`Predictor` adds the run's metadata
(channels, grid axes, trajectory length) and turns arrays into arrays. The run
folder describes itself (:class:`~oplab.rundir.RunDir`) and its weights are
safetensors, so loading runs no pickle, and nothing here imports the training
code. Grid operators answer at any resolution the architecture allows (the
coordinates are rebuilt from the stored axes for the input's size); point
operators answer on their training grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._fused import hooked
from .data.normalize import ChannelNormalizer
from .errors import DataFileError, OplabError
from .problems.base import Axis
from .rundir import RunDir


class Bundle(torch.nn.Module):
    """Model + input and output normalisers: ``bundle(x, coords)`` answers in physical units.

    An autoregressive step over states of ``state_channels`` channels of which ``static`` (indices)
    stay constant in time (a geometry mask, a case parameter: conditioning, as CFDBench feeds its
    models the mask and the case parameters) predicts only the others: the model and ``out_norm``
    have ``bundle * (state_channels - len(static))`` channels, and every output state takes its
    static channels from the input's last state, so the bundle still answers whole states."""

    def __init__(self, model, in_channels: int, out_channels: int, static=(), state_channels: int = 0):
        super().__init__()
        self.model = model
        self.in_norm = ChannelNormalizer(in_channels)
        self.out_norm = ChannelNormalizer(out_channels)
        self.state_channels = int(state_channels)
        self.static = tuple(int(i) for i in static)
        self.dynamic = tuple(i for i in range(self.state_channels) if i not in self.static)
        if self.static:  # the state's channel order from [dynamic..., static...], and the two index sets
            self.register_buffer("_order", torch.tensor([*self.dynamic, *self.static]).argsort(), persistent=False)
            self.register_buffer("_static_idx", torch.tensor(self.static), persistent=False)
            self.register_buffer("_dynamic_idx", torch.tensor(self.dynamic), persistent=False)

    def forward(self, x, coords):
        """``coords``: the output grid's axes (a tuple of 1D tensors), or query points ``[P, d]`` shared
        by the batch for a point operator (its ``forward_points``; answers ``[B, C, P]``)."""
        if isinstance(coords, torch.Tensor) and coords.dim() == 2:
            return self.out_norm.decode(self.model.forward_points(self.in_norm.encode(x), coords))
        y = self.out_norm.decode(self.model(self.in_norm.encode(x), coords))
        if not self.static:
            return y
        c, d = self.state_channels, len(self.dynamic)
        b = y.shape[1] // d
        fixed = x[:, x.shape[1] - c:].index_select(1, self._static_idx)
        fixed = fixed.unsqueeze(1).expand(-1, b, *fixed.shape[1:])
        states = torch.cat([y.unflatten(1, (b, d)), fixed], dim=2).index_select(2, self._order)
        return states.flatten(1, 2)

    def vjp(self, x, coords):
        """``(y, pullback)``: :meth:`forward` on a grid and the pairs ``(parameter, gradient)`` that
        ``pullback(g, into=None)`` gives for the output's gradient ``g`` (written into
        ``into[parameter]`` where given), both without autograd, through the model's own ``vjp`` (the
        fused DeepONet); None where that does not apply (a model without one, static channels, query
        points, forward or backward hooks on the bundle)."""
        run = self.vjp_plan(coords)
        return None if run is None else run(x)

    def vjp_plan(self, coords):
        """:meth:`vjp` on one grid, set up once (the model's ``vjp_plan``): ``run(x)`` is ``vjp(x,
        coords)`` (None for a call where it does not apply); None where it never does."""
        model = self.model
        if not hasattr(model, "vjp") or self.static or isinstance(coords, torch.Tensor):
            return None
        model_plan = getattr(model, "vjp_plan", None)  # (else the model's vjp, its grid looked up per call)
        model_run = model_plan(coords) if model_plan is not None else lambda x: model.vjp(x, coords)
        if model_run is None:
            return None
        in_norm, out_norm = self.in_norm, self.out_norm

        def run(x):
            if hooked(self):
                return None
            with torch.no_grad():
                out = model_run(in_norm.encode(x))
                if out is None:
                    return None
                y, pullback = out
                parts = out_norm.parts(y.ndim)  # (std + eps once for the output and its gradient)
                return out_norm.decode(y, parts), lambda g, into=None: pullback(out_norm.decode_grad(g, parts), into)

        return run

    def dynamic_part(self, y: torch.Tensor) -> torch.Tensor:
        """The predicted (not carried) channels of whole states ``y [B, k * state_channels, *S]``
        (all of ``y`` without static channels): what losses and errors compare."""
        if not self.static:
            return y
        k = y.shape[1] // self.state_channels
        return y.unflatten(1, (k, self.state_channels)).index_select(2, self._dynamic_idx).flatten(1, 2)


class Predictor:
    """A run folder's model, normalisers and metadata (see :func:`load`)."""

    def __init__(self, run_dir: str | Path, checkpoint: str = "best", device: str = "cpu"):
        from . import models

        run = RunDir.open(run_dir)
        RunDir.check_name(checkpoint)
        self.run_dir, self.config, self.data = run.path, run.config, run.data
        try:
            model = models.from_config(run.model)
        except OplabError as exc:  # a value the constructor refuses: name the file it came from
            raise DataFileError(f"{run.path / 'config.json'}: the model section does not build ({exc})") from None
        in_shape, out_shape = self.data["train_input_shape"], self.data["train_output_shape"]
        train = self.config.get("train", {})
        #: what the model learned (``train.task``): ``map``, ``autoregressive`` or ``spacetime``
        self.task = train.get("task", "map")
        self.steps = {"window": int(train.get("window", 1)), "bundle": int(train.get("bundle", 1))}
        names = self.data.get("output_channels") or []
        static = [names.index(c) for c in self.data.get("static_channels") or []] if self.task == "autoregressive" else []
        out = out_shape[0] - self.steps["bundle"] * len(static)
        self.bundle = Bundle(model, in_shape[0], out, static, len(names))
        self.checkpoint = run.load_into(self.bundle, checkpoint)
        self.device = torch.device(device)
        self.bundle.to(self.device).eval()
        self._coords_kept: dict = {}  # (see _device_coords)
        self.kind = type(model).kind
        self.out_axes = [Axis(**a) for a in self.data["output_axes"]]
        self.in_axes = [Axis(**a) for a in self.data["input_axes"]]

    def coords_for(self, in_spatial: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        sizes = in_spatial if self.kind == "grid" else tuple(self.data["train_output_shape"][1:])
        return tuple(torch.tensor(Axis(a.name, n, a.lo, a.hi, a.periodic).coords(), dtype=torch.float32)
                     for a, n in zip(self.out_axes, sizes))

    def _device_coords(self, in_spatial: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        """:meth:`coords_for` on the device, kept per grid (private to ``__call__``, never handed out):
        the same tensors call after call, so values derived from them stay cached (an FNO's period
        reads the spacing once per grid, not once per call with a device synchronisation)."""
        kept = self._coords_kept
        if in_spatial not in kept:
            if len(kept) >= 4:
                kept.pop(next(iter(kept)))
            kept[in_spatial] = tuple(c.to(self.device) for c in self.coords_for(in_spatial))
        return kept[in_spatial]

    def __call__(self, a):
        """``a``: ``[C_in, *S]`` or ``[B, C_in, *S]`` (for a one-channel operator also ``[*S]`` or
        ``[B, *S]``, answered without the channel axis), numpy or torch; returns the same kind."""
        x, form = self.batch_of(a)
        with torch.inference_mode():  # (no autograd bookkeeping; the spectral weights stay prepared)
            y = self.bundle(x.to(self.device), self._device_coords(tuple(x.shape[2:])))
        y = self.unbatch(self.shaped(y.cpu()), form)
        return y.numpy() if isinstance(a, np.ndarray) else y.clone()  # (a clone is an ordinary tensor, usable with autograd)

    def batch_of(self, a) -> tuple[torch.Tensor, tuple[bool, bool]]:
        """The input forms of :meth:`__call__` as one batch ``[B, C_in, *S]`` (float32) and ``(single,
        squeeze)``, what :meth:`unbatch` needs to answer in the form asked; an OplabError naming the
        accepted shapes for anything else."""
        c_in, c_out = self.data["train_input_shape"][0], self.data["train_output_shape"][0]
        d = len(self.in_axes)
        axes = ", ".join(ax.name for ax in self.in_axes)
        if isinstance(a, torch.Tensor):
            numeric = not (a.dtype.is_complex or a.dtype in (torch.quint8, torch.qint8, torch.qint32))
            dtype = str(a.dtype).replace("torch.", "")
        else:
            try:
                dtype = np.asarray(a).dtype
            except ValueError:  # a ragged nest of lists
                raise OplabError(f"input is not a rectangular array: expected numbers of shape [{c_in}, {axes}] "
                                 f"or [B, {c_in}, {axes}]") from None
            numeric = dtype.kind in "biuf"
        if not numeric:
            raise OplabError(f"input of dtype {dtype} (shape {list(np.shape(a))}): expected real numbers "
                             f"(float, int or bool) of shape [{c_in}, {axes}] or [B, {c_in}, {axes}]")
        x = torch.as_tensor(a, dtype=torch.float32)
        single = x.ndim == d or (x.ndim == d + 1 and x.shape[0] == c_in)
        no_channel = c_in == 1 and (x.ndim == d or (x.ndim == d + 1 and not single))
        if no_channel:
            x = x.unsqueeze(-d - 1)
        if single:
            x = x[None]
        if x.ndim != d + 2 or x.shape[1] != c_in:
            also = f" (or [{axes}] / [B, {axes}]: one channel)" if c_in == 1 else ""
            raise OplabError(f"input of shape {list(np.shape(a))} does not fit this operator: expected "
                             f"[{c_in}, {axes}] or [B, {c_in}, {axes}]{also}")
        if x.numel() == 0:
            raise OplabError(f"input of shape {list(np.shape(a))} is empty: expected [B, {c_in}, {axes}] with "
                             f"B >= 1 samples and points on every axis")
        finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
        if not finite.all():
            bad = torch.nonzero(~finite).flatten().tolist()
            raise OplabError(f"input holds NaN or Inf in sample(s) {bad[:5]}{' ...' if len(bad) > 5 else ''} of "
                             f"{x.shape[0]}: the operator answers finite inputs only")
        if self.kind == "point" and list(x.shape[1:]) != self.data["train_input_shape"]:
            raise OplabError(f"input of shape {list(x.shape[1:])}: this point operator takes its training "
                             f"sensors {self.data['train_input_shape']}")
        squeeze = no_channel and c_out == 1 and not self.timed
        return x, (single, squeeze)

    @property
    def timed(self) -> bool:
        """Whether answers carry a time axis: ``[B, T, C_out, *S]``."""
        return self.task == "autoregressive" or bool(self.task == "map" and self.data.get("n_times"))

    def shaped(self, y):
        """The model's ``[B, C_out', *S]`` with its time axis: the next ``bundle`` states of an
        autoregressive operator, the ``n_times`` records of a one-shot trajectory map."""
        if self.task == "autoregressive":
            return y.reshape(y.shape[0], self.steps["bundle"], -1, *y.shape[2:])
        if self.timed:
            return y.reshape(y.shape[0], self.data["n_times"], -1, *y.shape[2:])
        return y

    @staticmethod
    def unbatch(y, form: tuple[bool, bool]):
        """The answer ``y [B, ...]`` in the form :meth:`batch_of` recorded (no channel axis, no batch axis)."""
        single, squeeze = form
        y = y[:, 0] if squeeze else y
        return y[0] if single else y

    def rollout(self, states, steps: int):
        """An autoregressive operator applied ``steps`` times from ``states`` (``[window, C, *S]`` or
        ``[B, window, C, *S]``, the last ``window`` true states, oldest first); returns the
        ``steps * bundle`` predicted states after them, ``[(B,) steps * bundle, C, *S]``, numpy or
        torch as given."""
        from .eval.rollout import rollout

        if self.task != "autoregressive":
            raise OplabError(f"{self.run_dir}: a one-shot model (train.task: {self.task}) has no rollout")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise OplabError(f"steps must be a positive int, got {steps!r}")
        is_numpy = isinstance(states, np.ndarray)
        x = torch.as_tensor(states, dtype=torch.float32)
        w, c = self.steps["window"], self.data["train_input_shape"][0] // self.steps["window"]
        single = x.ndim == len(self.in_axes) + 2
        x = x[None] if single else x
        if x.ndim != len(self.in_axes) + 3 or x.shape[1:3] != (w, c):
            axes = ", ".join(a.name for a in self.in_axes)
            raise OplabError(f"states of shape {list(np.shape(states))} do not fit this operator: expected the "
                             f"last {w} states [{w}, {c}, {axes}] or [B, {w}, {c}, {axes}]")
        if not torch.isfinite(x).all():
            raise OplabError("states hold NaN or Inf: the operator answers finite inputs only")
        coords = tuple(c.to(self.device) for c in self.coords_for(tuple(x.shape[3:])))
        with torch.inference_mode():
            y = rollout(self.bundle, x.to(self.device), steps, coords, w, self.steps["bundle"]).cpu()
        y = y[0] if single else y
        return y.numpy() if is_numpy else y.clone()


def read_inputs(path: str | Path) -> np.ndarray:
    """Inputs from a file: a plain ``.npy`` array (no pickle) or an oplab ``.h5`` set's inputs."""
    path = Path(path)
    if not path.exists():
        raise OplabError(f"{path}: no such file")
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise OplabError(f"{path}: not a plain .npy array ({exc})") from None
    if path.suffix in (".h5", ".hdf5"):
        from .data.dataset import open_dataset

        return open_dataset(path).arrays()[0]
    raise OplabError(f"{path}: expected a .npy or .h5 file")


def load(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> Predictor:
    """Load a trained operator from a run folder: the ``best`` checkpoint (chosen on the
    validation samples), else ``last``; ``checkpoint="last"`` for the final weights."""
    return Predictor(run_dir, checkpoint, device)
