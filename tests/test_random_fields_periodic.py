"""The periodic Gaussian random field's empirical spectrum against its covariance.

``periodic_grf`` promises ``u(x) = sum_k z_k exp(2 pi i k . x)`` with ``z_k``
centred Gaussian, ``E |z_k|^2 = lam_k`` (``periodic_eigenvalues``), complex
(real and imaginary parts independent, variance ``lam_k / 2`` each) except for
the self-conjugate modes (every component of ``k`` is 0 or ``n/2``), which are
real. So over ``S`` independent samples the statistic

    T_k = sum_s d_k |z_k^(s)|^2 / lam_k,    d_k = 2 (complex) or 1 (real),

is chi-square with ``d_k S`` degrees of freedom. Each mode's ``T_k`` must lie
within the two-sided chi-square quantiles at level ``1e-6 / (number of modes)``
(Bonferroni: a correct sampler fails with probability below 1e-6; with fixed
seeds the test is deterministic anyway). This is a relative tolerance of about
``5.5 sqrt(2 / (d_k S))`` on the mean power, -0.26 to +0.31 for S = 400 complex modes;
the statistics pooled over octave bands of ``|k|`` and over all independent
modes are held to the same level, tolerances of a few percent (a 5% error in
``sigma`` fails both tests, a 10% error in ``tau`` the 2D one).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2

from oplab.problems.base import rng_for
from oplab.solvers.random_fields import periodic_eigenvalues, periodic_grf

ALPHA = 1e-6  # total false-alarm probability


def coefficients(fields: np.ndarray, dim: int) -> np.ndarray:
    """``z_k`` of fields ``[S, (n,)*dim]`` on the ``rfftn`` layout: ``u = sum z_k e^(2 pi i k x)``."""
    n = fields.shape[-1]
    return np.fft.rfftn(fields, axes=tuple(range(1, dim + 1))) / n**dim


def self_conjugate(n: int, dim: int) -> np.ndarray:
    """Boolean ``rfftn``-layout mask of the real modes (components 0 or n/2)."""
    freqs = [np.fft.fftfreq(n, 1.0 / n)] * (dim - 1) + [np.fft.rfftfreq(n, 1.0 / n)]
    edge = [np.isin(np.abs(f), (0, n // 2)) for f in freqs]
    return np.logical_and.reduce(np.meshgrid(*edge, indexing="ij"))


def assert_chi2(stat: np.ndarray, dof: np.ndarray, tests: int) -> None:
    level = ALPHA / (2 * tests)
    lo, hi = chi2.ppf(level, dof), chi2.isf(level, dof)
    bad = (stat < lo) | (stat > hi)
    assert not np.any(bad), (
        f"{bad.sum()} of {bad.size} statistics outside their chi-square bounds; "
        f"worst ratio to dof: {np.max(np.abs(stat / dof - 1))}"
    )


def check_spectrum(fields: np.ndarray, dim: int, alpha: float, tau: float, sigma: float) -> None:
    count, n = fields.shape[0], fields.shape[-1]
    z = coefficients(fields, dim)  # [S, rfftn layout]
    lam = periodic_eigenvalues(n, dim, alpha, tau, sigma)
    real = self_conjugate(n, dim)
    keep = np.ones_like(real)
    keep[(0,) * dim] = False  # the zero mode is tested on its own
    d = np.where(real, 1, 2)
    stat = np.sum(d * np.abs(z) ** 2, axis=0) / lam  # [rfftn layout]
    # every mode, and (per part) the real and imaginary parts of the complex ones
    complex_ = keep & ~real
    re = 2 * np.sum(z.real**2, axis=0) / lam
    im = 2 * np.sum(z.imag**2, axis=0) / lam
    tests = keep.sum() + 2 * complex_.sum() + 8
    assert_chi2(stat[keep], d[keep] * count, tests)
    assert_chi2(re[complex_], np.full(complex_.sum(), count), tests)
    assert_chi2(im[complex_], np.full(complex_.sum(), count), tests)
    # pooled over the independent modes: the last axis strictly inside (0, n/2) in rfft
    # layout holds exactly one of each conjugate pair
    last = np.fft.rfftfreq(n, 1.0 / n)
    inner = np.broadcast_to((last > 0) & (last < n / 2), lam.shape)
    # pooled over octave bands of |k| (and over all of them): sensitive to the spectrum's shape
    freqs = [np.fft.fftfreq(n, 1.0 / n)] * (dim - 1) + [last]
    kabs = np.sqrt(sum(np.meshgrid(*[f**2 for f in freqs], indexing="ij")))
    band = np.floor(np.log2(np.maximum(kabs, 1))).astype(int)
    pooled = [inner] + [inner & (band == b) for b in range(int(band.max()) + 1)]
    pooled = [m for m in pooled if m.any()]
    assert_chi2(
        np.array([stat[m].sum() for m in pooled]),
        np.array([2 * count * m.sum() for m in pooled]),
        tests + len(pooled),
    )
    # the real parts and imaginary parts are uncorrelated (mean of the product ~ 0)
    cross = np.sum(z.real * z.imag, axis=0)[complex_] / (lam[complex_] / 2)
    assert np.all(np.abs(cross) < 6 * np.sqrt(count)), np.max(np.abs(cross)) / np.sqrt(count)


def test_spectrum_1d():
    n, count = 64, 400
    fields = np.stack([periodic_grf(rng_for(11, i), n, 1, 2.0, 5.0, 25.0) for i in range(count)])
    assert fields.shape == (count, n) and fields.dtype == np.float64
    check_spectrum(fields, 1, 2.0, 5.0, 25.0)
    # zero mean: the constant mode is left out exactly
    assert np.max(np.abs(fields.mean(axis=-1))) < 1e-15 * np.max(np.abs(fields))


def test_spectrum_2d():
    n, count = 32, 200
    sigma = 7.0**1.5
    fields = np.stack([periodic_grf(rng_for(12, i), n, 2, 2.5, 7.0, sigma) for i in range(count)])
    assert fields.shape == (count, n, n)
    check_spectrum(fields, 2, 2.5, 7.0, sigma)
    assert np.max(np.abs(fields.mean(axis=(-2, -1)))) < 1e-15 * np.max(np.abs(fields))


@pytest.mark.parametrize("dim", [1, 2])
def test_mean_mode_when_kept(dim):
    """With ``zero_mean=False`` the spatial mean is ``N(0, lam_0)``: ``sum mean^2 / lam_0 ~ chi2(S)``."""
    n, count, alpha, tau, sigma = 16, 400, 2.0, 5.0, 25.0
    means = np.array([
        periodic_grf(rng_for(13, i), n, dim, alpha, tau, sigma, zero_mean=False).mean()
        for i in range(count)
    ])
    lam0 = periodic_eigenvalues(n, dim, alpha, tau, sigma)[(0,) * dim]
    assert_chi2(np.array([np.sum(means**2) / lam0]), np.array([count]), 2)
    assert abs(means.mean()) < 5 * np.sqrt(lam0 / count)


def test_variance_matches_sum_of_eigenvalues():
    """Pointwise variance ``sum_k lam_k`` over the full (two-sided) spectrum.

    By Parseval the spatial mean of ``u^2`` is ``sum_k |z_k|^2``, whose variance
    ``sum_k lam_k^2`` (counting +-k) is at most its squared mean: the average
    over ``S`` samples has a relative standard deviation below ``1 / sqrt(S)``.
    """
    n, count = 64, 400
    fields = np.stack([periodic_grf(rng_for(14, i), n, 1, 2.0, 5.0, 25.0) for i in range(count)])
    lam = periodic_eigenvalues(n, 1, 2.0, 5.0, 25.0)
    # rfft layout: modes 1..n/2-1 stand for +-k, the Nyquist mode once, the zero mode is left out
    var = 2 * lam[1:-1].sum() + lam[-1]
    empirical = np.mean(fields**2)
    assert abs(empirical / var - 1) < 5 / np.sqrt(count), empirical / var
