"""Gaussian random field samplers: the input distributions of the benchmarks.

Three families, each a Karhunen-Loeve expansion ``mu = sum_k sqrt(lam_k) xi_k phi_k``
with ``xi_k ~ N(0, 1)`` i.i.d. and ``phi_k`` orthonormal eigenfunctions of the
Laplacian:

* :func:`cosine_grf` -- the unit cube with Neumann boundary (cosine modes), the
  covariance ``sigma^2 (-Laplacian + tau^2 I)^(-alpha)``. With alpha=2, tau=3 and
  ``sigma = tau^(alpha - 1)`` this is the coefficient field of the FNO Darcy
  benchmark (Li et al. 2021, "Fourier Neural Operator for Parametric PDEs",
  section 5.2; the original MATLAB generator drops the constant mode).
* :func:`periodic_grf` -- the unit torus (Fourier modes), same covariance; the
  initial conditions of the FNO Burgers (``625 (-Laplacian + 25 I)^-2``) and
  Navier-Stokes (alpha=2.5, tau=7) benchmarks, the latter also with the FNO
  code's coefficients (twice the variance; :func:`periodic_grf`,
  :func:`periodic_grf_variance`).
* :func:`rbf_gp` -- a 1D Gaussian process with the squared-exponential kernel
  ``exp(-|x - y|^2 / (2 l^2))``, the DeepONet benchmarks' input space
  (Lu et al. 2021, "Learning nonlinear operators via DeepONet", section 3.1).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def cosine_eigenvalues(modes: int, dim: int, alpha: float, tau: float, sigma: float) -> np.ndarray:
    """``lam_k = sigma^2 (pi^2 |k|^2 + tau^2)^(-alpha)`` for ``k`` in ``[0, modes)^dim``."""
    k = np.arange(modes, dtype=np.float64)
    k2 = sum(np.meshgrid(*([k**2] * dim), indexing="ij"))
    return sigma**2 * (np.pi**2 * k2 + tau**2) ** (-alpha)


@lru_cache(maxsize=16)
def _cosine_basis(n: int, modes: int) -> np.ndarray:
    """``[n, modes]``: orthonormal Neumann modes ``phi_k(x) = c_k cos(pi k x)`` at
    the nodes ``x_j = j / (n - 1)`` (``c_0 = 1``, ``c_k = sqrt(2)``)."""
    x = np.linspace(0.0, 1.0, n)
    basis = np.cos(np.pi * np.outer(x, np.arange(modes))) * np.sqrt(2.0)
    basis[:, 0] = 1.0
    basis.setflags(write=False)
    return basis


def cosine_grf(
    rng: np.random.Generator,
    n: int,
    dim: int = 2,
    alpha: float = 2.0,
    tau: float = 3.0,
    sigma: float | None = None,
    modes: int | None = None,
    zero_mean: bool = True,
) -> np.ndarray:
    """One sample on the node grid ``linspace(0, 1, n)^dim`` (float64, shape ``(n,)*dim``).

    ``sigma`` defaults to ``tau^(alpha - 1)`` (the FNO generator's scaling);
    ``modes`` (per axis) defaults to ``n``.
    """
    if sigma is None:
        sigma = tau ** (alpha - 1.0)
    modes = n if modes is None else modes
    coef = np.sqrt(cosine_eigenvalues(modes, dim, alpha, tau, sigma))
    if zero_mean:
        coef[(0,) * dim] = 0.0
    field = coef * rng.standard_normal((modes,) * dim)
    basis = _cosine_basis(n, modes)
    for axis in range(dim):  # contract each mode axis with the basis
        field = np.moveaxis(np.tensordot(basis, field, axes=([1], [axis])), 0, axis)
    return field


def periodic_eigenvalues(n: int, dim: int, alpha: float, tau: float, sigma: float, full: bool = False) -> np.ndarray:
    """``lam_k = sigma^2 (4 pi^2 |k|^2 + tau^2)^(-alpha)`` on the ``rfftn`` layout of ``(n,)*dim``
    (``full``: on the ``fftn`` layout, every ``k`` in ``[-n/2, n/2)^dim``)."""
    last = np.fft.fftfreq(n, 1.0 / n) if full else np.fft.rfftfreq(n, 1.0 / n)
    freqs = [np.fft.fftfreq(n, 1.0 / n)] * (dim - 1) + [last]
    k2 = sum(np.meshgrid(*[f**2 for f in freqs], indexing="ij"))
    return sigma**2 * (4 * np.pi**2 * k2 + tau**2) ** (-alpha)


#: How the Fourier coefficients of :func:`periodic_grf` are drawn (see there)
GRF_COEFFICIENTS = ("hermitian", "full")


def periodic_grf_variance(n: int, dim: int = 1, alpha: float = 2.0, tau: float = 5.0, sigma: float = 25.0,
                          coefficients: str = "hermitian", zero_mean: bool = True) -> float:
    """The pointwise variance of :func:`periodic_grf`'s samples (the same at every grid point).

    ``sum_k lam_k`` over the full grid ``k in [-n/2, n/2)^dim`` for
    ``"hermitian"`` coefficients, twice that for ``"full"`` ones; the zero
    mode left out when ``zero_mean``.
    """
    lam = periodic_eigenvalues(n, dim, alpha, tau, sigma, full=True)
    if zero_mean:
        lam[(0,) * dim] = 0.0
    return float(lam.sum() * (2.0 if coefficients == "full" else 1.0))


def periodic_grf(
    rng: np.random.Generator,
    n: int,
    dim: int = 1,
    alpha: float = 2.0,
    tau: float = 5.0,
    sigma: float = 25.0,
    zero_mean: bool = True,
    coefficients: str = "hermitian",
) -> np.ndarray:
    """One sample on the periodic grid ``arange(n) / n`` of the unit torus.

    ``coefficients="hermitian"``: white noise is transformed (orthonormal FFT,
    so its coefficients are standard complex Gaussians with the Hermitian
    symmetry of a real field), scaled by ``sqrt(lam_k)`` and transformed back
    with the Fourier series' own normalisation, so ``u(x) = sum_k z_k exp(2 pi
    i k x)`` with ``E |z_k|^2 = lam_k``: the covariance operator is exactly
    ``sigma^2 (-Laplacian + tau^2)^(-alpha)`` restricted to the grid's modes,
    pointwise variance ``sum_k lam_k``. neuraloperator's ``GaussianRF``
    (neuraloperator/neuraloperator, data_generation/navier_stokes/random_fields.py
    since its move to ``torch.fft``: complex normal coefficients of unit
    variance, real part of the inverse FFT) has this distribution.

    ``coefficients="full"``: the FNO authors' original ``GaussianRF``
    (zongyi-li/fourier_neural_operator, data_generation/navier_stokes/random_fields.py):
    every ``k`` of the full grid ``[-n/2, n/2)^dim`` gets its own coefficient
    ``sqrt(2 lam_k) (a_k + i b_k)`` with ``a_k, b_k`` independent standard
    normals (no Hermitian symmetry), and the field is the real part of
    ``sum_k c_k exp(2 pi i k x)`` (their unnormalised inverse FFT of
    ``n^dim`` times these coefficients). Then ``u(x) = sum_k sqrt(2 lam_k)
    (a_k cos - b_k sin)(2 pi k x)``: a stationary Gaussian field with
    covariance ``sum_k 2 lam_k cos(2 pi k (x - y))``, i.e. twice the
    ``"hermitian"`` covariance (pointwise variance ``2 sum_k lam_k``).

    Modes beyond the grid's Nyquist frequency are left out.
    """
    if coefficients not in GRF_COEFFICIENTS:
        raise ValueError(f"coefficients must be one of {list(GRF_COEFFICIENTS)}, got {coefficients!r}")
    axes = tuple(range(dim))
    if coefficients == "full":
        coef = np.sqrt(2.0 * periodic_eigenvalues(n, dim, alpha, tau, sigma, full=True))
        if zero_mean:
            coef[(0,) * dim] = 0.0
        z = rng.standard_normal((2,) + (n,) * dim)
        return np.fft.ifftn(coef * (z[0] + 1j * z[1]), axes=axes, norm="forward").real
    noise = np.fft.rfftn(rng.standard_normal((n,) * dim), axes=axes, norm="ortho")
    coef = np.sqrt(periodic_eigenvalues(n, dim, alpha, tau, sigma))
    if zero_mean:
        coef[(0,) * dim] = 0.0
    return np.fft.irfftn(coef * noise, s=(n,) * dim, axes=axes, norm="forward")


@lru_cache(maxsize=16)
def _rbf_factor(n: int, length_scale: float, lo: float, hi: float) -> np.ndarray:
    """A square root ``L`` of the RBF covariance at ``linspace(lo, hi, n)``: ``L L^T = K``.

    The kernel matrix is numerically singular for smooth kernels, so the
    symmetric eigendecomposition with negative round-off eigenvalues clipped
    is used instead of a Cholesky factor with jitter.
    """
    x = np.linspace(lo, hi, n)
    kernel = np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / length_scale**2)
    lam, vec = np.linalg.eigh(kernel)
    factor = vec * np.sqrt(np.clip(lam, 0.0, None))
    factor.setflags(write=False)
    return factor


def rbf_gp(
    rng: np.random.Generator,
    n: int,
    length_scale: float = 0.2,
    variance: float = 1.0,
    lo: float = 0.0,
    hi: float = 1.0,
) -> np.ndarray:
    """One zero-mean GP sample at ``linspace(lo, hi, n)``, kernel
    ``variance * exp(-|x - y|^2 / (2 length_scale^2))``."""
    factor = _rbf_factor(int(n), float(length_scale), float(lo), float(hi))
    return np.sqrt(variance) * (factor @ rng.standard_normal(n))
