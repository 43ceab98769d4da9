"""Building blocks of the operators in :mod:`oplab.models`.

* :mod:`oplab.layers.spectral`: the N-dimensional spectral convolution of the
  Fourier neural operator (Li et al. 2021, eq. 4) with dense or factorized
  (Tucker, CP, tensor-train) weights (Kossaifi et al. 2023).
* :mod:`oplab.layers.patching`: the multi-grid domain decomposition of MG-TFNO
  (Kossaifi et al. 2024): padded patches with coarse context levels as extra
  channels, and their exact reassembly.
* :mod:`oplab.layers.multigrid`: the multi-channel V-cycle of MgNO (He, Liu &
  Xu 2024; MgNet, He & Xu 2019) as a learned linear operator, with boundary
  conditions through the convolutions' padding.
* :mod:`oplab.layers.pointwise`: the generic pointwise blocks: activations by
  name, the 1x1 channel map and channel MLP of the grid operators, and the
  Glorot-initialised (stacked) MLPs of the DeepONet family.
* :mod:`oplab.layers.conv`: convolution, transposed convolution and pooling
  classes per dimension, and the (convolution, GroupNorm, GELU) double block
  of U-Net and LSM.
* :mod:`oplab.layers.norms`: EvoNorm-B0 and S0 (Liu et al. 2020), normalisation and
  activation in one layer, a choice of U-Net's blocks.
* :mod:`oplab.layers.grid`: a field's grid: positional channels and query
  points from the coordinate axes, and the checks of ``x`` and ``coords``.
* :mod:`oplab.layers.ode`: an adaptive Dormand-Prince 5(4) integrator in torch
  that also returns the solver-heuristic regularisers of neural ODEs (Pal et al.
  2021, 2023): the accumulated error estimates and stiffness estimates.
"""

from __future__ import annotations

from .conv import CONV, CONV_TRANSPOSE, MAX_POOL, double_conv, group_norm
from .grid import LINEAR_MODES, append_positions, check_channels, check_coords, grid_points, mesh
from .multigrid import COARSE_INITS, PADDING_MODES, Prolongation, VCycle
from .patching import BOUNDARIES, MultigridPatching
from .pointwise import ACTIVATIONS, MLP, Pointwise, StackedMLP, channel_mlp, glorot_linear, make_activation
from .spectral import FACTORIZATIONS, SpectralConv, SpectralWeight, spectral_weight

__all__ = ["ACTIVATIONS", "BOUNDARIES", "COARSE_INITS", "CONV", "CONV_TRANSPOSE", "FACTORIZATIONS", "LINEAR_MODES",
           "MAX_POOL", "MLP", "MultigridPatching", "PADDING_MODES", "Pointwise", "Prolongation", "SpectralConv",
           "SpectralWeight", "StackedMLP", "VCycle", "append_positions", "channel_mlp", "check_channels",
           "check_coords", "double_conv", "glorot_linear", "grid_points", "group_norm", "make_activation", "mesh",
           "spectral_weight"]
