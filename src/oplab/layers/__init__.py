"""Building blocks of the operators in :mod:`oplab.models`.

* :mod:`oplab.layers.spectral`: the N-dimensional spectral convolution of the
  Fourier neural operator (Li et al. 2021, eq. 4) with dense or factorized
  (Tucker, CP, tensor-train) weights (Kossaifi et al. 2023).
"""

from __future__ import annotations

from .spectral import FACTORIZATIONS, SpectralConv, SpectralWeight, spectral_weight

__all__ = ["FACTORIZATIONS", "SpectralConv", "SpectralWeight", "spectral_weight"]
