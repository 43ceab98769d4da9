"""The Darcy input field: the cosine (Neumann) Karhunen-Loeve sampler against its
prescribed covariance, estimated independently through the type-I DCT."""

import numpy as np
import scipy.fft

from oplab.solvers.random_fields import cosine_eigenvalues, cosine_grf


def _kl_coefficients(field):
    """Recover a_k in mu(x) = sum_k a_k phi_k(x) on the node grid: the DCT-I is
    orthogonal there (trapezoidal weights), y_k = c_k a_k (n - 1) s_k with s_k = 2
    at k = 0 and n - 1, else 1, and c_k the normalisation (1 or sqrt 2)."""
    n = field.shape[0]
    y = scipy.fft.dctn(field, type=1)
    scale = np.full(n, np.sqrt(2.0) * (n - 1))
    scale[0] = 2.0 * (n - 1)
    scale[-1] = 2.0 * np.sqrt(2.0) * (n - 1)
    return y / np.multiply.outer(scale, scale)


def test_empirical_spectrum_matches_covariance():
    n, samples, alpha, tau = 24, 400, 2.0, 3.0
    rng = np.random.default_rng(0)
    coeffs = np.stack([_kl_coefficients(cosine_grf(rng, n, alpha=alpha, tau=tau)) for _ in range(samples)])
    lam = cosine_eigenvalues(n, 2, alpha, tau, sigma=tau ** (alpha - 1))
    var = (coeffs**2).mean(axis=0)
    assert var[0, 0] < 1e-20  # the constant mode is removed, as in the FNO generator
    ratio = (var / lam).ravel()[1:]
    # each ratio is chi^2_N / N: standard deviation sqrt(2 / N) = 0.071
    sd = np.sqrt(2.0 / samples)
    assert abs(ratio.mean() - 1.0) < 4 * sd / np.sqrt(ratio.size)
    assert np.all(np.abs(ratio - 1.0) < 6 * sd), np.abs(ratio - 1).max()
    # and the modes are uncorrelated: off-diagonal covariance of a few modes
    flat = coeffs.reshape(samples, -1)[:, 1:6] / np.sqrt(lam.ravel()[1:6])
    corr = np.corrcoef(flat.T)
    assert np.all(np.abs(corr - np.eye(5)) < 5 / np.sqrt(samples))


def test_pointwise_variance_matches_kl_sum():
    """The field's variance at a node equals sum_k lam_k phi_k(x)^2."""
    n, samples = 17, 3000
    rng = np.random.default_rng(1)
    fields = np.stack([cosine_grf(rng, n, modes=n) for _ in range(samples)])
    lam = cosine_eigenvalues(n, 2, 2.0, 3.0, 3.0)
    lam[0, 0] = 0.0
    x = np.linspace(0, 1, n)
    phi = np.cos(np.pi * np.outer(x, np.arange(n))) * np.sqrt(2.0)
    phi[:, 0] = 1.0
    expected = np.einsum("ik,jl,kl->ij", phi**2, phi**2, lam)
    empirical = fields.var(axis=0)
    assert np.all(np.abs(empirical / expected - 1) < 5 * np.sqrt(2.0 / samples))
