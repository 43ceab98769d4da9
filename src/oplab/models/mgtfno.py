"""Multi-grid tensorized Fourier neural operator (MG-TFNO), in 1, 2 or 3 dimensions.

Kossaifi, Kovachki, Azizzadenesheli, Anandkumar, "Multi-Grid Tensorized Fourier
Neural Operator for High-Resolution PDEs", TMLR 2024, arXiv:2310.00120. Two of
the paper's three ingredients:

* **multi-grid domain decomposition** (:class:`oplab.layers.patching.MultigridPatching`):
  the input field is cut into ``patches`` per axis, each patch widened by
  ``padding`` cells of its neighbours (periodic wrap on periodic axes, else
  ``boundary``), and ``levels`` coarse views of the field around it (windows
  ``2^l`` times the padded patch, average-pooled by ``2^l``) are stacked as extra
  channels. One TFNO maps every padded patch (``in_channels * (levels + 1)``
  channels plus ``d`` positional ones) to the output on the patch; the outputs
  are cropped to the patch interiors and stitched back into the field.
* **global tensor factorization**: the spectral weights of all ``n_layers``
  Fourier layers are one complex tensor ``W[layer, in, out, modes...]`` in
  Tucker form, ``W = G x_0 U_layer x_1 U_in x_2 U_out x_3 U_mode1 ...`` (one core
  ``G`` and one factor per mode of the tensor, the layer index included), so the
  layers share one low-rank basis of channels and frequencies. Layer ``t`` uses
  ``W[t] = (G x_0 U_layer[t]) x_1 U_in ...``. The layer mode is kept at full
  rank (:func:`joint_ranks`; a rank proportional to the mode size would give 2
  of 4 layers, i.e. every layer's weight a combination of two tensors). The
  layers of the inner :class:`~oplab.models.fno.TFNO` are ordinary
  :class:`~oplab.layers.SpectralConv` whose weight module is replaced by such a
  slice of the shared tensor (:class:`JointTuckerSlice`). ``joint_factorization=False``
  gives each layer its own factorized weight (``factorization`` ``"tucker"``, ``"cp"``,
  ``"tt"`` or ``None`` for dense), as :class:`~oplab.models.fno.TFNO` does.

Left out: the paper's third ingredient, its architectural changes to the FNO
backbone (the inner network is this library's FNO), and its training on
individual patches without stitching (and distributing patches over devices).
Here the decomposition is part of ``forward``, so :func:`oplab.train` and every
loss see whole fields, unchanged. Added: ``domain_padding``, the inner FNO's
zero padding, because the output on a patch is not periodic on it (on 17x17
Darcy, 2x2 patches, 30 epochs: test error 0.44 without it, 0.19 with 0.25, from
0.57 after the first epoch).

**Memory.** ``forward`` splits the ``B`` fields into ``B * P`` padded patches
(``P = prod(patches)``), and runs the inner TFNO over them. With
``patch_batch=k`` the patches go through the TFNO ``k`` at a time, each chunk
under :func:`torch.utils.checkpoint.checkpoint` when gradients are recorded:
only the chunks' inputs and cropped outputs are kept for backward and each
chunk's activations are recomputed during backward, so the peak activation
memory of a training step scales with ``k`` patches instead of the ``B`` whole
fields (at the cost of a second forward pass); at inference the chunks simply
run one after the other. ``patch_batch=None`` runs all patches at once, which
takes *more* memory than an FNO on the whole field (the padded patches hold
more cells, and the input more channels); see ``benchmarks/mgtfno_memory.py``.
The results are the same (up to floating-point summation order) either way.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.utils.checkpoint import checkpoint

from ..errors import ParameterError, check_int, check_ints, is_int
from ..layers.grid import check_channels, check_coords
from ..layers.patching import MultigridPatching
from ..layers.spectral import SpectralWeight, TuckerWeight, tucker_ranks
from . import register
from .base import Operator
from .fno import TFNO


def joint_ranks(shape: Sequence[int], rank: float | int) -> list[int]:
    """Tucker ranks of the joint tensor ``[n_layers, in, out, modes...]``: the layer mode at full
    rank (``n_layers``: every layer keeps its own slice of the core, at ``n_layers^2``
    parameters for its factor), the other modes as :func:`~oplab.layers.spectral.tucker_ranks`
    would rank them: ``min(rank, n_k)`` for an int; for a float ``r_k = round(f n_k)`` with the
    largest ``f`` whose parameter count ``prod(r) + sum(n_k r_k)`` (the layer mode included)
    stays within ``rank * prod(shape)``."""
    layers, rest = int(shape[0]), [int(n) for n in shape[1:]]
    tucker_ranks(rest, rank)  # validates rank
    if is_int(rank):
        return [layers] + [min(int(rank), n) for n in rest]
    target = rank * layers * math.prod(rest)

    def ranks(f: float) -> list[int]:
        return [min(n, max(1, round(f * n))) for n in rest]

    def count(r: list[int]) -> int:
        return layers * math.prod(r) + layers * layers + sum(n * k for n, k in zip(rest, r))

    lo, hi = 0.0, 1.0
    if count(ranks(1.0)) <= target:
        lo = 1.0
    else:
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if count(ranks(mid)) <= target else (lo, mid)
    return [layers] + ranks(lo)


class JointTuckerSlice(SpectralWeight):
    """Layer ``layer``'s weight ``W[layer]`` of a Tucker tensor ``W[layer, ...]`` shared by all layers.

    Holds no parameters of its own: ``joint`` (a :class:`~oplab.layers.spectral.TuckerWeight`
    registered on the owning model) is referenced, not registered, so the state
    dict holds the shared core and factors once.
    """

    def __init__(self, joint: TuckerWeight, layer: int):
        super().__init__()
        object.__setattr__(self, "_joint", joint)  # not a submodule: no duplicate parameters
        self.layer = int(layer)
        self.shape = tuple(joint.shape[1:])
        self.rank = list(joint.rank[1:])
        small, big = "abcdefghijkl", "ABCDEFGHIJKL"
        k = len(self.shape)
        self._equation = small[:k] + "," + ",".join(big[i] + small[i] for i in range(k)) + "->" + big[:k]

    def forward(self) -> torch.Tensor:
        joint = self._joint
        factors = [torch.view_as_complex(f) for f in joint.factors]  # iterate: see TTWeight
        core = torch.tensordot(factors[0][self.layer], torch.view_as_complex(joint.core), dims=1)  # [r_1, ..., r_K]
        return torch.einsum(self._equation, core, *factors[1:])

    def extra_repr(self) -> str:
        return f"layer={self.layer} of joint Tucker {list(self._joint.shape)}, rank={list(self._joint.rank)}"


@register("mgtfno")
class MGTFNO(Operator):
    """Multi-grid tensorized FNO (Kossaifi et al. 2024): a TFNO applied patch by patch with multi-grid context.

    Args:
        in_channels, out_channels: channels of the input and output functions.
        modes: retained Fourier modes per axis of the inner TFNO; they act on the padded
            patch, so ``modes[i] <= w_i / 2`` (``w`` the padded patch size) uses them all.
            The dimension is ``len(modes)``.
        patches: patches per axis (an int for every axis, or one per axis). A grid that
            is not a multiple of ``patches`` is covered by patches of ``ceil(n / patches)``
            cells, the last one running past the end of the field (filled by the boundary rule,
            discarded in the output).
        levels: coarse context levels ``L >= 0``; the inner TFNO sees ``in_channels * (L + 1)``
            channels (plus ``d`` positions).
        padding: context cells on each side of a patch: an int (cells) or a float (fraction of
            the patch size, rounded; keeps the same physical context at any resolution);
            one value or one per axis.
        periodic: whether each axis is periodic (one bool or one per axis): context across a
            periodic edge wraps around.
        boundary: context beyond a non-periodic edge: ``"reflect"``, ``"replicate"`` or ``"zeros"``.
        patch_batch: ``None`` runs all patches at once; an int runs them that many at a time,
            with activation checkpointing per chunk when gradients are recorded (see the module
            docstring). Also settable later as ``model.patch_batch`` (the model's ``config``, and so
            a checkpoint written afterwards, records the new value).
        width, n_layers, lifting_channels, projection_channels, activation, skip: of the inner
            TFNO (see :class:`~oplab.models.fno.FNO`).
        positional: append the coordinates of each padded patch's cells (the grid's coordinates,
            extended linearly outside the field) as ``d`` input channels.
        factorization, rank: the spectral weights' form and rank (see
            :func:`oplab.layers.spectral.spectral_weight`); with ``joint_factorization`` the
            rank (float: fraction of the dense count of all layers' weights; int: every mode
            rank) applies to the one tensor of all layers, which needs ``factorization="tucker"``.
        joint_factorization: one Tucker tensor for all layers (the paper's global
            factorization) instead of one factorized weight per layer.
        domain_padding: the inner TFNO's ``padding`` (zeros appended to each padded patch
            after lifting, a fraction of its size, cropped before projection; see
            :class:`~oplab.models.fno.FNO`), for outputs that are not periodic on the patch.

    ``forward(x, coords)``: ``x [B, in_channels, *S]``, ``coords`` a tuple of ``d`` 1D
    coordinate tensors (required when ``positional``) -> ``[B, out_channels, *S]``.
    With ``patches=1, levels=0, padding=0`` and ``joint_factorization=False`` it is
    exactly a :class:`~oplab.models.fno.TFNO` on the whole field.
    """

    kind = "grid"
    reference = (
        "J. Kossaifi, N. Kovachki, K. Azizzadenesheli, A. Anandkumar, \"Multi-Grid Tensorized Fourier Neural "
        "Operator for High-Resolution PDEs\", TMLR 2024, arXiv:2310.00120"
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: list[int],
        patches: int | list[int] = 2,
        levels: int = 1,
        padding: int | float | list = 0.125,
        periodic: bool | list[bool] = False,
        boundary: str = "reflect",
        patch_batch: int | None = None,
        width: int = 32,
        n_layers: int = 4,
        lifting_channels: int | None = 128,
        projection_channels: int | None = 128,
        positional: bool = True,
        activation: str = "gelu",
        factorization: str | None = "tucker",
        rank: float = 0.1,
        joint_factorization: bool = True,
        skip: str = "linear",
        domain_padding: float = 0.0,
    ):
        super().__init__()
        name = type(self).__name__
        modes = check_ints(name, "modes", modes, n=(1, 3))
        if isinstance(domain_padding, bool) or not isinstance(domain_padding, (int, float)) or not 0 <= domain_padding < 1:
            raise ParameterError(f"{name}: domain_padding must be a fraction in [0, 1), got {domain_padding!r}")
        if isinstance(rank, bool) or not isinstance(rank, (int, float)) or rank <= 0:
            raise ParameterError(f"{name}: rank must be a positive number (a fraction of the dense weight, or an int "
                                 f"rank), got {rank!r}")
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            check_int(name, key, value)
        if not isinstance(joint_factorization, bool):
            raise ParameterError(f"{name}: joint_factorization must be a bool, got {joint_factorization!r}")
        form = "dense" if factorization is None else str(factorization).strip().lower()
        if joint_factorization and form != "tucker":
            raise ParameterError(f"{name}: joint_factorization=True needs factorization='tucker' (the global Tucker "
                                 f"tensor of all layers), got factorization={factorization!r}; "
                                 f"set joint_factorization=False for per-layer weights")
        self.dim = len(modes)
        try:  # checks patches, padding, levels, periodic, boundary
            self.patching = MultigridPatching(self.dim, patches, padding, levels, periodic, boundary)
        except ParameterError as err:
            raise ParameterError(str(err).replace("MultigridPatching", name)) from None
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.levels, self.positional = int(levels), bool(positional)
        self._patch_batch = check_int(name, "patch_batch", patch_batch, optional=True)

        inner_in = self.in_channels * (self.levels + 1) + (self.dim if self.positional else 0)
        try:
            self.inner = TFNO(
                inner_in, self.out_channels, list(modes), width=width, n_layers=n_layers,
                lifting_channels=lifting_channels, projection_channels=projection_channels, positional=False,
                padding=domain_padding, activation=activation,
                factorization=factorization if not joint_factorization else "cp",
                rank=rank if not joint_factorization else 1, skip=skip,
            )
        except ParameterError as err:  # the inner TFNO's argument errors (width, skip, ...), under this model's name
            raise ParameterError(str(err).replace("TFNO:", f"{name}:", 1)) from None
        self.joint_weight = None
        if joint_factorization:
            layer_shape = tuple(self.inner.spectral[0].weight.shape)  # [width, width, 2 m_1, ..., m_d]
            shape = (int(n_layers), *layer_shape)
            self.joint_weight = TuckerWeight(shape, joint_ranks(shape, rank), scale=1.0 / (width * width))
            for t, layer in enumerate(self.inner.spectral):
                layer.weight = JointTuckerSlice(self.joint_weight, t)  # replaces the placeholder rank-1 CP weight
                layer.factorization = "joint-tucker"

    @classmethod
    def defaults(cls, sizes, periodic, given=None) -> dict:
        """Two patches per axis where the axis has at least 16 cells (else one), an eighth of the
        patch as context, one coarse level, modes ``min(cap, w // 2)`` of the padded patch
        ``w`` (cap 16 in 1D, 12 in 2D, 8 in 3D), the data's periodicity, ``domain_padding=0.125``
        (the output on a patch is not periodic on it; 0 only for one periodic patch), width 64 in
        1D, else 32. On 64x64 Darcy (200 samples, 15 epochs) this reached the test error of
        context and domain padding 0.25 (0.062 against 0.064) in 72% of the time."""
        given = given or {}
        cap = {1: 16, 2: 12, 3: 8}.get(len(sizes), 8)
        patches = given.get("patches", [2 if n >= 16 else 1 for n in sizes])
        padding = given.get("padding", 0.125)
        layout = MultigridPatching(len(sizes), patches, padding).layout(tuple(sizes))
        modes = [max(1, min(cap, w // 2)) for w in layout.width]
        patches = list(layout.count)
        periodic = [bool(p) for p in periodic]
        return {"modes": modes, "patches": patches, "levels": 1, "padding": 0.125, "periodic": periodic,
                "domain_padding": 0.0 if all(periodic) and max(patches) == 1 else 0.125, "width": 64 if len(sizes) == 1 else 32}

    @property
    def patch_batch(self) -> int | None:
        """Patches processed at a time (``None``: all); settable, and recorded in ``config``."""
        return self._patch_batch

    @patch_batch.setter
    def patch_batch(self, value: int | None) -> None:
        self._patch_batch = check_int(type(self).__name__, "patch_batch", value, optional=True)
        if hasattr(self, "config"):
            self.config["patch_batch"] = self._patch_batch

    @property
    def n_modes(self) -> tuple[int, ...]:
        """Fourier modes used now per axis by the inner TFNO (settable, see :class:`~oplab.models.fno.FNO`)."""
        return self.inner.n_modes

    @n_modes.setter
    def n_modes(self, modes) -> None:
        self.inner.n_modes = modes

    def patch_inputs(self, x: torch.Tensor, coords: Sequence[torch.Tensor] | None) -> torch.Tensor:
        """The inner TFNO's input: ``[B, C, *S] -> [B * P, C * (levels + 1) (+ d), *w]``."""
        patches = self.patching.split(x)
        if not self.positional:
            return patches
        coords = check_coords(x, coords, type(self).__name__)
        pos = self.patching.positions([c.to(device=x.device, dtype=x.dtype) for c in coords])  # [P, d, *w]
        pos = pos.unsqueeze(0).expand(x.shape[0], *pos.shape).reshape(-1, *pos.shape[1:])  # [B * P, d, *w]
        return torch.cat([patches, pos], dim=1)

    def forward(self, x: torch.Tensor, coords: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        check_channels(x, self.in_channels, self.dim, type(self).__name__)
        sizes = tuple(x.shape[2:])
        inputs = self.patch_inputs(x, coords)  # [B * P, C', *w]

        def run(chunk: torch.Tensor) -> torch.Tensor:
            return self.patching.crop(self.inner(chunk), sizes)  # [k, C_out, *s]

        if self.patch_batch is None or self.patch_batch >= inputs.shape[0]:
            out = run(inputs)
        else:
            record = torch.is_grad_enabled()
            out = torch.cat([checkpoint(run, chunk, use_reentrant=False) if record else run(chunk)
                             for chunk in inputs.split(self.patch_batch)])
        return self.patching.assemble(out, sizes)  # [B, C_out, *S]
