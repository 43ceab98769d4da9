"""Fourier neural operator (FNO) and tensorized FNO (TFNO), in 1, 2 or 3 dimensions.

FNO, Li et al. 2021, eq. (2) and section 4::

    v_0 = P(a),    v_{t+1} = sigma(W v_t + K v_t)  (t < L - 1),
    v_L = W v_{L-1} + K v_{L-1},    u = Q(v_L),

with ``P`` a pointwise lifting to ``width`` channels, ``K`` the spectral
convolution (:class:`oplab.layers.SpectralConv`), ``W`` a pointwise linear map
(a 1x1 convolution) and ``Q`` a pointwise two-layer projection. No
activation follows the last Fourier layer. The dimension is ``len(modes)``.

TFNO (Kossaifi et al. 2023) is the same network with each ``K``'s weight
tensor in factorized (by default Tucker) form, at a fraction of the
parameters.

Resolution invariance (``resolution_invariant``, made precise by
:meth:`FNO.resolution_invariance`; checked by the fuzzer, tests/test_fuzz.py
and benchmarks/fuzz.py, on a band-limited input on an ``n`` and a ``2n``
periodic grid, compared at the common points):

* exact, to float rounding: every spectral layer ``K`` (any modes, any
  factorization) on an input band-limited below the coarse grid's Nyquist
  frequency (measured: at most 8e-7), and so the whole model when it is
  linear in the field: ``positional=False``, ``padding=0``, one Fourier
  layer, a linear lifting and projection (measured: at most 2e-7);
* approximate otherwise, by a discretization error that shrinks as the grid
  is refined: the positional channels are a sawtooth on a periodic axis (not
  band-limited), the activations make harmonics above the grid's Nyquist
  frequency that alias back differently on each grid, and domain padding
  adds a jump to zero. On the 8,490 of 10,000 random small configurations of
  the fuzzer that claim this (1D and 2D grids of 8-24 points, widths 2-8, 1-3
  layers; 2026-12-01) the relative L2 difference had a median of 3e-4, a 99th
  percentile of 1.2e-2 and a worst case of 8.5e-2 (8 points, padding and
  tanh); from ``n``/``2n`` to ``2n``/``4n`` it fell in 95% of 600
  configurations (the others were at float rounding, or padded);
* none where the padding is a different fraction of the domain on the two
  grids: it is ``round(padding * n)`` cells, and no rounding keeps
  ``pad(2n) = 2 pad(n)`` for every ``n`` (0.25 of 10 cells is 2.5).

The FFT's period (``period``). The transforms treat the ``n`` samples of an
axis as one period of length ``n h`` (spacing ``h``). On a periodic grid that
is the domain at every resolution, but on a grid holding both ends of an
interval (oplab's non-periodic axes: ``n`` nodes from ``lo`` to ``hi``) it is
the interval and one cell more, ``n / (n - 1)`` of it: 64/63 on 64 nodes,
128/127 on 128. A model trained on one grid and run on another then applies
its learned spectral weights at frequencies off by that ratio. With
``period`` (one length per axis, in the coordinates' units) the forward
embeds a grid in a torus of that length: ``round(period / h) - n`` samples
are appended after the last point, interpolated linearly back to the first,
and cropped after the Fourier layers; on the grid the period came from none
are. Finer grids are embedded; a non-periodic grid coarser than the training
grid spans more than the period less one cell and keeps its own (32 nodes:
32/31 of the interval against 64/63). Training through oplab sets it to the training grid's (:func:`grid_period`,
by :func:`oplab.models.presets.derive`); ``period: null`` keeps each grid's
own. On the quickstart's Darcy FNO trained at 64 it halves the zero-shot
error at 128 (benchmarks/RESULTS.md, issue 22).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._fused import hooked
from .._memo import TensorMemo
from ..errors import ParameterError, check_choice, check_floats, check_int, check_ints, is_int
from ..layers.grid import append_positions, check_channels
from ..layers.pointwise import ACTIVATIONS, Pointwise, channel_mlp, make_activation
from ..layers.spectral import SpectralConv
from . import register
from .base import Operator

#: the pointwise path ``W`` of a Fourier layer
SKIPS = ("linear", "identity", "none")


@register("fno")
class FNO(Operator):
    """Fourier neural operator (Li et al. 2021) on a ``d = len(modes)``-dimensional grid.

    Args:
        in_channels, out_channels: channels of the input and output functions.
        modes: retained Fourier modes per axis (see :class:`~oplab.layers.SpectralConv`);
            the grid should have at least ``2 * modes[i]`` points per axis.
        width: channels of the hidden field ``v``.
        n_layers: Fourier layers ``L``.
        lifting_channels: hidden channels of the pointwise two-layer lifting ``P``;
            ``0``/``None`` makes ``P`` one linear map (as in the paper).
        projection_channels: hidden channels of the two-layer projection ``Q``
            (the paper uses 128); ``0``/``None`` makes ``Q`` one linear map.
        positional: append the grid coordinates (from ``coords``) as ``d`` input channels.
        padding: fraction of each axis added as zeros at its end after lifting and
            cropped after the last Fourier layer, for non-periodic problems
            (``0.25``: 16 cells on a 64-cell axis).
        activation: ``"gelu"``, ``"relu"``, ``"tanh"`` or ``"silu"``.
        factorization, rank: the form of the spectral weights (``None`` dense;
            ``"tucker"``, ``"cp"``, ``"tt"``) and, for a factorized form, a float
            fraction of the dense parameter count or an int rank
            (see :func:`oplab.layers.spectral.spectral_weight`).
        skip: the pointwise path ``W``: ``"linear"`` (paper), ``"identity"`` or ``"none"``.
        last_modes: modes of the last Fourier layer, dense (default: ``modes``, in the
            layers' form); the Spectral-Refiner fine-tuning (:func:`oplab.train.refine.refine`)
            sets it to every frequency of the grid.
        residual_scale: a factor ``alpha`` on every layer's spectral path: ``sigma(W v + alpha K v)``;
            with ``skip="identity"`` that is the scaled residual module ``sigma(v + alpha K v)`` of
            "On residual network depth" (2025: scaling each residual branch tames the growth of the
            output with depth; SkipInit and Fixup are instances). A number > 0 (1: the paper's FNO,
            the default) or ``"depth"``: ``1 / sqrt(n_layers)``.

    ``forward(x, coords)``: ``x [B, in_channels, *S]``, ``coords`` a tuple of ``d``
    1D coordinate tensors (required when ``positional``) -> ``[B, out_channels, *S]``.
    ``n_modes`` can be lowered at run time for every layer at once.
    """

    kind = "grid"
    resolution_invariant = True
    reference = (
        "Z. Li, N. Kovachki, K. Azizzadenesheli, B. Liu, K. Bhattacharya, A. Stuart, A. Anandkumar, "
        "\"Fourier Neural Operator for Parametric Partial Differential Equations\", ICLR 2021, arXiv:2010.08895"
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: list[int],
        width: int = 32,
        n_layers: int = 4,
        lifting_channels: int | None = 128,
        projection_channels: int | None = 128,
        positional: bool = True,
        padding: float = 0.0,
        activation: str = "gelu",
        factorization: str | None = None,
        rank: float = 1.0,
        skip: str = "linear",
        last_modes: list[int] | None = None,
        residual_scale: float | str = 1.0,
        period: Sequence[float] | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        modes = check_ints(name, "modes", modes, n=(1, None))
        if last_modes is not None:
            check_ints(name, "last_modes", last_modes, n=len(modes))
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width), ("n_layers", n_layers)):
            check_int(name, key, value)
        for key, value in (("lifting_channels", lifting_channels), ("projection_channels", projection_channels)):
            check_int(name, key, value, 0, optional=True)
        if isinstance(padding, bool) or not isinstance(padding, (int, float)) or not 0.0 <= padding < 1.0:
            raise ParameterError(f"{name}: padding must be a fraction in [0, 1), got {padding!r}")
        check_choice(name, "activation", activation, ACTIVATIONS)
        check_choice(name, "skip", skip, SKIPS)
        if residual_scale == "depth":
            residual_scale = 1.0 / n_layers**0.5
        elif isinstance(residual_scale, bool) or not isinstance(residual_scale, (int, float)) or not 0 < residual_scale < float("inf"):
            raise ParameterError(f"{name}: residual_scale must be a finite number > 0 or 'depth' (1/sqrt(n_layers)), "
                                 f"got {residual_scale!r}")
        self.residual_scale = float(residual_scale)
        if period is not None:
            period = tuple(check_floats(name, "period", period, len(modes)))
            if min(period) <= 0:
                raise ParameterError(f"{name}: period must be lengths > 0 (one per axis), got {list(period)}")
        self.period = period
        #: ``[(hi - lo, periodic)]`` per axis while exporting (set by oplab.deploy.export): the spacing
        #: the period is measured in, from the grid's size alone
        self.export_spans = None

        self.dim = len(modes)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.positional, self.padding = bool(positional), float(padding)
        lifted = self.in_channels + (self.dim if self.positional else 0)
        self.lifting = channel_mlp(lifted, lifting_channels, width, activation)  # P
        self.spectral = nn.ModuleList(SpectralConv(width, width, modes, factorization, rank) for _ in range(n_layers))  # K
        if last_modes is not None:
            self.spectral[-1] = SpectralConv(width, width, last_modes)
        if skip == "linear":
            self.skips = nn.ModuleList(Pointwise(width, width) for _ in range(n_layers))  # W
        else:
            self.skips = nn.ModuleList(nn.Identity() for _ in range(n_layers)) if skip == "identity" else None
        self.activation = make_activation(activation)
        self.projection = channel_mlp(width, projection_channels, self.out_channels, activation)  # Q

    @classmethod
    def defaults(cls, sizes, periodic, given=None) -> dict:
        """Modes: the grid's, capped at 16 (1D), 12 (2D) or 8 (3D) per axis; width 64 in 1D, else 32;
        no domain padding (set ``padding`` for non-periodic data where it helps)."""
        cap = {1: 16, 2: 12, 3: 8}.get(len(sizes), 8)
        most = [n // 2 for n in sizes[:-1]] + [sizes[-1] // 2 + 1]  # frequencies the training grid holds
        modes = (given or {}).get("modes")
        if isinstance(modes, (list, tuple)) and len(modes) == len(sizes) and any(
                is_int(m) and m > k for m, k in zip(modes, most)):
            raise ParameterError(f"{cls.__name__}: modes={list(modes)} exceed the frequencies the training grid "
                                 f"{list(sizes)} holds (at most {most}); lower model.modes")
        return {"modes": [min(cap, n // 2) for n in sizes], "width": 64 if len(sizes) == 1 else 32, "padding": 0.0}

    def resolution_invariance(self, sizes) -> str | None:
        """``"exact"`` when the model is linear in the field (no positional channels, no padding, one
        Fourier layer, a linear lifting and projection: its spectral layer between two pointwise
        linear maps); ``None`` when its domain padding is a different fraction of the domain on the
        grid ``sizes`` and on the grid twice as fine (``round(padding * n)`` cells: e.g. 2 of 10 and
        5 of 20 for ``padding=0.25``); else ``"approximate"`` (module docstring)."""
        config = getattr(self, "config", {})
        if (not self.positional and not self.padding and len(self.spectral) == 1
                and not config.get("lifting_channels") and not config.get("projection_channels")):
            return "exact"
        if self.padding and self._pads([2 * n for n in sizes]) != [2 * p for p in self._pads(sizes)]:
            return None
        return "approximate"

    def _pads(self, sizes) -> list[int]:
        """Cells of domain padding added at the end of each axis of the grid ``sizes``."""
        tracing = torch.jit.is_tracing()  # a jit trace gives sizes as tensors
        return [round(self.padding * (int(n) if tracing else n)) for n in sizes]

    @property
    def n_modes(self) -> tuple[int, ...]:
        """Fourier modes used now per axis (``<= modes``); settable, for every layer."""
        return self.spectral[0].n_modes

    @n_modes.setter
    def n_modes(self, modes: Sequence[int] | int) -> None:
        for layer in self.spectral:
            layer.n_modes = modes

    def forward(self, x: torch.Tensor, coords: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        name = type(self).__name__
        check_channels(x, self.in_channels, self.dim, name)
        sizes = tuple(x.shape[2:])
        if self.positional:
            x = append_positions(x, coords, name)  # [B, C_in + d, *S]
        v = self.lifting(x)  # [B, width, *S]
        gaps = self._gaps(sizes, coords)
        if any(gaps):  # this grid in the training grid's torus: samples after its last point
            v = _fill_gaps(v, gaps)
        if self.padding:
            pads = self._pads(sizes)
            v = F.pad(v, [p for pad in reversed(pads) for p in (0, pad)])  # [B, width, *(S + pad)]
        for t, spectral in enumerate(self.spectral):
            skip = self.skips[t] if self.skips is not None else None
            if (hasattr(skip, "add_to") and self.residual_scale == 1.0 and not _autocast(v)
                    and all(p.dtype == v.dtype for p in skip.parameters())
                    and not hooked(spectral) and not hooked(skip)):  # Pointwise (LoRA's too)
                # K v + W v + b without extra passes: b as K's zero frequency, W v accumulated into K v
                out = skip.add_to(spectral(v, bias=skip.bias), v)
            else:
                out = spectral(v)
                if self.residual_scale != 1.0:
                    out = self.residual_scale * out
                if skip is not None:
                    out = out + skip(v)
            v = self.activation(out) if t < len(self.spectral) - 1 else out
        if self.padding or any(gaps):
            v = v[(slice(None), slice(None), *[slice(0, n) for n in sizes])]  # [B, width, *S]
        return self.projection(v)  # [B, C_out, *S]

    def _gaps(self, sizes, coords) -> list[int]:
        """Samples to insert after the last point of each axis so that the transforms span ``period``:
        ``round(period / spacing) - n`` (0 on the grid the period came from, without a period or
        without coordinates, and on a grid coarser than the period allows: there the points already
        span more than the period less one cell, and the grid keeps its own)."""
        if self.period is None or coords is None:
            return [0] * len(sizes)
        spans = self.export_spans  # the exporter's grid description (deploy/export.py), else the coordinates
        if spans is not None and (torch.jit.is_tracing() or torch.compiler.is_exporting()):
            if any(isinstance(n, torch.SymInt) for n in sizes):  # the export falls back to one grid
                raise ParameterError(f"{type(self).__name__}: with a period the samples appended depend on the "
                                     f"grid's size, so the sizes cannot stay symbolic")
            steps = [span / (int(n) - (0 if periodic else 1)) if int(n) > 1 else 0.0
                     for (span, periodic), n in zip(spans, sizes)]
            return _gap_counts(self.period, steps, sizes)
        if torch.compiler.is_exporting():  # the coordinates are graph values there
            raise ParameterError(f"{type(self).__name__}: with a period, exporting needs the grid's spacing: use "
                                 f"`oplab export`, or set export_spans = [(hi - lo, periodic), ...] per axis")
        coords = [torch.as_tensor(c) for c in coords]
        count = lambda: _gap_counts(self.period, [abs(float(c[1] - c[0])) if c.numel() > 1 else 0.0  # noqa: E731
                                                  for c in coords], sizes)
        if torch.jit.is_tracing():  # concrete coordinates: the trace keeps the counts of this grid
            return count()
        return _GAPS.get(coords, (self.period, tuple(int(n) for n in sizes)), count)


def _gap_counts(period, steps, sizes) -> list[int]:
    """``round(period / step) - n`` per axis, at least 0 (and 0 where the step is 0 or ``n < 2``)."""
    return [max(round(p / h) - int(n), 0) if int(n) > 1 and h else 0 for p, h, n in zip(period, steps, sizes)]


_GAPS = TensorMemo()  # the gap samples per grid (reading the spacing off a device tensor would synchronise)


def grid_period(coords) -> list[float]:
    """The length the FFT spans on each axis of the grid ``coords`` (its points, uniformly spaced):
    ``n`` times the spacing. On a grid that holds both ends of an interval (``n`` nodes from ``lo`` to
    ``hi``) that is the interval and one cell more, so it changes with the resolution: an FNO given
    its training grid's :func:`grid_period` as ``period`` keeps it on every grid (issue 22)."""
    out = []
    for c in coords:
        c = torch.as_tensor(c, dtype=torch.float64)
        if c.numel() < 2:
            raise ParameterError(f"grid_period: an axis of {c.numel()} point(s) has no spacing")
        out.append(float(c.numel() * (c[1] - c[0]).abs()))
    return out


def _fill_gaps(v: torch.Tensor, gaps: Sequence[int]) -> torch.Tensor:
    """``v [B, C, *S]`` with ``gaps[i]`` samples appended to axis ``i``, interpolated linearly from its
    last point to its first: the periodic continuation the transforms see, over a gap of fixed length."""
    for axis, e in enumerate(gaps):
        if e:
            dim = 2 + axis
            first, last = v.narrow(dim, 0, 1), v.narrow(dim, v.shape[dim] - 1, 1)
            t = torch.arange(1, e + 1, dtype=v.dtype, device=v.device) / (e + 1)
            v = torch.cat([v, torch.lerp(last, first, t.view([-1 if d == dim else 1 for d in range(v.dim())]))], dim=dim)
    return v


def _autocast(t: torch.Tensor) -> bool:
    """Whether autocast is on for ``t``'s device (its casts do not apply to in-place products)."""
    return torch.is_autocast_enabled(t.device.type)


@register("tfno")
class TFNO(FNO):
    """Tensorized FNO (Kossaifi et al. 2023): :class:`FNO` with factorized spectral weights.

    Defaults: ``factorization="tucker"``, ``rank=0.1``: each layer's spectral
    weight is a Tucker core and factors using at most a tenth of the dense
    weight's parameters (e.g. 55,566 of 589,824 real numbers for
    ``width=32, modes=[12, 12]``). All other arguments as :class:`FNO`.
    """

    reference = (
        "J. Kossaifi, N. Kovachki, K. Azizzadenesheli, A. Anandkumar, \"Multi-Grid Tensorized Fourier Neural "
        "Operator for High-Resolution PDEs\", arXiv:2310.00120, 2023 (TMLR); FNO: Li et al., ICLR 2021"
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: list[int],
        width: int = 32,
        n_layers: int = 4,
        lifting_channels: int | None = 128,
        projection_channels: int | None = 128,
        positional: bool = True,
        padding: float = 0.0,
        activation: str = "gelu",
        factorization: str | None = "tucker",
        rank: float = 0.1,
        skip: str = "linear",
        last_modes: list[int] | None = None,
        period: Sequence[float] | None = None,
    ):
        super().__init__(
            in_channels, out_channels, modes, width=width, n_layers=n_layers, lifting_channels=lifting_channels,
            projection_channels=projection_channels, positional=positional, padding=padding, activation=activation,
            factorization=factorization, rank=rank, skip=skip, last_modes=last_modes, period=period,
        )
