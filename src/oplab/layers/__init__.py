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
"""

from __future__ import annotations

from .multigrid import PADDING_MODES, Prolongation, VCycle
from .patching import BOUNDARIES, MultigridPatching
from .spectral import FACTORIZATIONS, SpectralConv, SpectralWeight, spectral_weight

__all__ = ["BOUNDARIES", "FACTORIZATIONS", "MultigridPatching", "PADDING_MODES", "Prolongation", "SpectralConv",
           "SpectralWeight", "VCycle", "spectral_weight"]
