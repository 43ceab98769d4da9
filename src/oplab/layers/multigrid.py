"""A multi-channel V-cycle as a learned linear operator (MgNet / MgNO).

:class:`VCycle` is the operator ``W_Mg`` of MgNO (He, Liu & Xu, ICLR 2024,
arXiv:2310.19809, Fig. 1), built on MgNet (He & Xu 2019): one V-cycle of a
multigrid method for ``A u = f`` whose operators are all learned convolutions.
With ``f^0 = f`` (``in_channels``) and ``u`` (``out_channels``), on levels
``l = 0 .. L-1`` (grid halved at each)::

    u^l <- u^l + S^{l,i} (f^l - A^l u^l)          pre_smooth[l] times  (u^0 = 0, so the first step is S f)
    f^{l+1} = R^l (f^l - A^l u^l)                  residual restriction, stride-2 conv
    u^{l+1} = Pi^l u^l   (or 0)                    coarse initial guess, stride-2 conv
    ... the same on level l + 1 ...
    u^l <- u^l + P^l u^{l+1}                       prolongation, stride-2 transposed conv
    u^l <- u^l + S^{l,i} (f^l - A^l u^l)          post_smooth[l] times

and the result is ``u^0``. ``A^l`` (u -> f channels) is shared by all steps of
level ``l`` as in MgNet; every smoothing step has its own ``S^{l,i}``
(f -> u channels); all kernels are 3 cells wide in every axis and carry no
bias, so the V-cycle is linear in ``f``.

Boundary conditions enter through the padding of every convolution
(``padding_mode``): ``"zeros"`` (Dirichlet-like), ``"circular"`` (periodic),
``"reflect"`` / ``"replicate"`` (Neumann-like). The prolongation pads its
coarse input the same way and applies a stride-2 transposed 3-cell kernel (the
adjoint shape of the restriction; linear interpolation is one such kernel),
cropped to the finer level's size, so any grid size works: a level of ``n``
cells has a coarse level of ``ceil(n / 2)`` cells. With circular padding and
every level's size even, the V-cycle commutes with periodic shifts by
multiples of ``2**(L-1)`` cells.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_choice
from .conv import CONV, CONV_TRANSPOSE

_CONV_T_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
#: padding modes (``nn.Conv`` names)
PADDING_MODES = ("zeros", "circular", "reflect", "replicate")
#: the coarse level's initial ``u``: a stride-2 convolution of ``u`` (MgNet), or zero
COARSE_INITS = ("pi", "zero")


def _conv(dim: int, c_in: int, c_out: int, stride: int, padding_mode: str) -> nn.Module:
    return CONV[dim](c_in, c_out, 3, stride=stride, padding=1, bias=False, padding_mode=padding_mode)


class Prolongation(nn.Module):
    """Coarse to fine: ``[B, C, *m] -> [B, C, *n]`` with ``m = ceil(n / 2)``, a stride-2
    transposed convolution with a 3-cell kernel whose input is padded by one cell with
    ``padding_mode`` (so periodic grids wrap around); with zeros it is
    ``ConvTranspose(kernel 3, stride 2, padding 1)`` with ``output_size = n``."""

    def __init__(self, channels: int, dim: int, padding_mode: str = "zeros"):
        super().__init__()
        self.dim, self.padding_mode = dim, padding_mode
        # a ConvTranspose only for its weight [C_in, C_out, 3, ...] and the default initialisation
        self.weight = nn.Parameter(CONV_TRANSPOSE[dim](channels, channels, 3, stride=2, bias=False).weight.detach().clone())

    def forward(self, u: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        padded = F.pad(u, [1] * (2 * self.dim), mode=mode)  # [B, C, *(m + 2)]
        y = _CONV_T_FN[self.dim](padded, self.weight, stride=2)  # [B, C, *(2 m + 5)]
        # output cell j of the unpadded transposed convolution (padding 1) is cell j + 3 here
        return y[(slice(None), slice(None), *[slice(3, 3 + n) for n in sizes])]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, dim={self.dim}, padding_mode={self.padding_mode}"


class _Level(nn.Module):
    """The learned operators of one level (``None`` where the plan never uses them)."""

    def __init__(self, dim, c_u, c_f, n_pre, n_post, uses_a, descend, uses_pi, padding_mode):
        super().__init__()
        self.n_pre, self.n_post, self.descend = n_pre, n_post, descend
        self.A = _conv(dim, c_u, c_f, 1, padding_mode) if uses_a else None
        self.S = nn.ModuleList(_conv(dim, c_f, c_u, 1, padding_mode) for _ in range(n_pre + n_post))
        self.R = _conv(dim, c_f, c_f, 2, padding_mode) if descend else None
        self.Pi = _conv(dim, c_u, c_u, 2, padding_mode) if uses_pi else None
        self.P = Prolongation(c_u, dim, padding_mode) if descend else None


class VCycle(nn.Module):
    """One multi-channel V-cycle (module docstring): ``[B, in_channels, *S] -> [B, out_channels, *S]``.

    Args:
        in_channels: channels of the right-hand side ``f``.
        out_channels: channels of the solution ``u``.
        dim: spatial dimension (1, 2 or 3).
        pre_smooth, post_smooth: smoothing steps per level, finest first (equal lengths = levels).
        padding_mode: ``"zeros"``, ``"circular"``, ``"reflect"`` or ``"replicate"``
            (``"reflect"`` needs at least 2 cells on every level).
        coarse_init: ``"pi"`` (a stride-2 convolution of ``u``, as MgNet) or ``"zero"``.

    Operators the cycle would apply to a zero field (for example ``A`` on the
    finest level with one pre-smoothing step and no restriction) are not created,
    so every parameter takes part in the output.
    """

    def __init__(self, in_channels: int, out_channels: int, dim: int, pre_smooth: Sequence[int],
                 post_smooth: Sequence[int], padding_mode: str = "zeros", coarse_init: str = "pi"):
        super().__init__()
        check_choice("VCycle", "dim", dim, tuple(CONV))
        check_choice("VCycle", "padding_mode", padding_mode, PADDING_MODES)
        check_choice("VCycle", "coarse_init", coarse_init, COARSE_INITS)
        pre, post = [int(n) for n in pre_smooth], [int(n) for n in post_smooth]
        if len(pre) != len(post) or not pre or min(pre + post) < 0 or pre[0] + post[0] < 1:
            raise ValueError(f"VCycle: pre_smooth {pre} and post_smooth {post} must be equally long non-negative "
                             f"counts, with at least one step on the finest level")
        self.dim, self.padding_mode, self.coarse_init = dim, padding_mode, coarse_init
        levels = len(pre)
        # active[l]: some smoothing happens on level l or coarser (else the cycle stops above l)
        active = [sum(pre[l:]) + sum(post[l:]) > 0 for l in range(levels)] + [False]
        modules = []
        u_nonzero = False  # the incoming u of the level (u^0 = 0)
        for l in range(levels):
            c_f = in_channels
            uses_a = (u_nonzero and pre[l] > 0) or pre[l] > 1  # A u inside pre-smoothing
            nonzero = u_nonzero or pre[l] > 0  # u after pre-smoothing
            descend = active[l + 1]
            uses_a |= descend and nonzero  # residual restriction f - A u
            uses_pi = descend and nonzero and coarse_init == "pi"
            # u after the coarse correction: nonzero (the coarse level smooths); post steps then use A
            uses_a |= (post[l] > 0 and (nonzero or descend)) or post[l] > 1
            modules.append(_Level(dim, out_channels, c_f, pre[l], post[l], uses_a, descend, uses_pi, padding_mode))
            if not descend:
                break
            u_nonzero = uses_pi
        self.levels = nn.ModuleList(modules)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.padding_mode == "reflect":  # reflection needs 2 cells on every level the cycle visits
            coarsest = [-(-n // 2 ** (len(self.levels) - 1)) for n in f.shape[2:]]
            if min(coarsest) < 2:
                raise ValueError(f"VCycle: padding_mode 'reflect' needs at least 2 cells per axis on every level, but "
                                 f"the grid {list(f.shape[2:])} has {coarsest} on level {len(self.levels) - 1} of "
                                 f"{len(self.levels)}; use fewer levels or another padding_mode")
        u = self._cycle(0, f, None)
        assert u is not None  # the finest level smooths at least once
        return u

    def _smooth(self, level: _Level, f: torch.Tensor, u: torch.Tensor | None, S: nn.Module) -> torch.Tensor:
        return S(f) if u is None else u + S(f - level.A(u))

    def _cycle(self, l: int, f: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor | None:
        """The V-cycle from level ``l`` down: ``u`` None means zero."""
        level = self.levels[l]
        for S in level.S[: level.n_pre]:
            u = self._smooth(level, f, u, S)
        if level.descend:
            residual = f if u is None else f - level.A(u)
            coarse_f = level.R(residual)  # [B, c_f, *ceil(S / 2)]
            coarse_u = level.Pi(u) if level.Pi is not None and u is not None else None
            coarse_u = self._cycle(l + 1, coarse_f, coarse_u)
            if coarse_u is not None:
                up = level.P(coarse_u, f.shape[2:])
                u = up if u is None else u + up
        for S in level.S[level.n_pre :]:
            u = self._smooth(level, f, u, S)
        return u

    def extra_repr(self) -> str:
        return f"levels={len(self.levels)}, padding_mode={self.padding_mode}, coarse_init={self.coarse_init}"
