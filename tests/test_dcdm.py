"""The Deep Conjugate Direction Method (Kaneda et al. 2023, ICML): conjugacy, exactness, training, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from oplab.errors import ParameterError
from oplab.solvers import dcdm
from oplab.solvers.fd import diffusion_matrix
from oplab.solvers.random_fields import cosine_grf


def _poisson(n):
    return diffusion_matrix(np.ones((n, n)))


def _darcy(n, seed=0):
    mu = cosine_grf(np.random.default_rng(seed), n, dim=2, alpha=2.0, tau=3.0)
    return diffusion_matrix(np.where(mu >= 0.0, 12.0, 3.0))


def _untrained(seed=0):
    torch.manual_seed(seed)
    return dcdm.DCDMNet(width=8, levels=2).eval()


def test_directions_are_a_conjugate_within_the_window():
    A = _darcy(16)
    b = np.random.default_rng(1).standard_normal(A.shape[0])
    window = 2
    _, info = dcdm.dcdm_solve(A, b, _untrained(), tol=1e-8, window=window, keep_directions=True)
    D = info["directions"]
    assert len(D) >= 10
    worst = 0.0
    for i in range(len(D)):
        for j in range(max(0, i - window), i):
            ai, aj = D[i] @ (A @ D[i]), D[j] @ (A @ D[j])
            worst = max(worst, abs(D[i] @ (A @ D[j])) / np.sqrt(ai * aj))
    assert worst < 1e-10, worst


@pytest.mark.parametrize("make", [_poisson, _darcy], ids=["poisson", "darcy"])
@pytest.mark.parametrize("net", ["untrained", "identity"])
def test_reaches_tolerance_and_matches_spsolve(make, net):
    A = make(16)
    b = np.random.default_rng(2).standard_normal(A.shape[0])
    tol = 1e-8
    model = _untrained() if net == "untrained" else dcdm.IdentityNet()
    x, info = dcdm.dcdm_solve(A, b, model, tol=tol)
    assert info["converged"] and info["iterations"] == len(info["residuals"]) - 1
    assert info["residuals"][-1] <= tol
    assert np.linalg.norm(b - A @ x) <= tol * np.linalg.norm(b) * (1 + 1e-6)
    ref = spla.spsolve(A.tocsc(), b)
    # error bounded by cond(A) * tol; cond of these 196-unknown matrices is < 1e3
    assert np.linalg.norm(x - ref) <= 1e3 * tol * np.linalg.norm(ref)


def test_identity_net_is_cg():
    A = _poisson(16)
    b = np.random.default_rng(3).standard_normal(A.shape[0])
    _, d_info = dcdm.dcdm_solve(A, b, dcdm.IdentityNet(), tol=1e-6)
    x, c_info = dcdm.cg(A, b, tol=1e-6)
    assert c_info["converged"]
    assert abs(d_info["iterations"] - c_info["iterations"]) <= 1
    np.testing.assert_allclose(d_info["residuals"][:10], c_info["residuals"][:10], rtol=1e-6)


def test_trained_net_beats_cg_and_survives_save_load(tmp_path):
    n = 16
    torch.set_num_threads(1)
    A = _poisson(n)
    net, hist = dcdm.train_dcdm(A, n, steps=400, batch=16, lr=2e-3, ritz=100, width=12, levels=2, seed=0)
    assert len(hist) == 400 and np.mean(hist[-10:]) < 0.5 * np.mean(hist[:5])
    b = np.random.default_rng(4).standard_normal(A.shape[0])
    _, d_info = dcdm.dcdm_solve(A, b, net, tol=1e-6)
    _, c_info = dcdm.cg(A, b, tol=1e-6)
    _, i_info = dcdm.dcdm_solve(A, b, dcdm.IdentityNet(), tol=1e-6)
    assert d_info["converged"]
    # observed: 8 against CG's 39 (training seeds 0-2 give 8-10); assert a wide margin
    assert d_info["iterations"] < 0.6 * c_info["iterations"], (d_info["iterations"], c_info["iterations"])
    assert d_info["iterations"] < 0.6 * i_info["iterations"]
    # trained on Poisson only, it still helps on a piecewise-constant Darcy matrix (observed 20 against 59)
    Ad = _darcy(n, 7)
    _, dd_info = dcdm.dcdm_solve(Ad, b, net, tol=1e-6)
    _, dc_info = dcdm.cg(Ad, b, tol=1e-6)
    assert dd_info["converged"] and dd_info["iterations"] < 0.8 * dc_info["iterations"]
    dcdm.save_net(net, tmp_path / "dcdm")
    loaded = dcdm.load_net(tmp_path / "dcdm")
    _, l_info = dcdm.dcdm_solve(A, b, loaded, tol=1e-6)
    assert l_info["residuals"] == d_info["residuals"]
    # fully convolutional: the 16-trained net runs on a 24 x 24 grid too
    A24 = _poisson(24)
    b24 = np.random.default_rng(5).standard_normal(A24.shape[0])
    x24, info24 = dcdm.dcdm_solve(A24, b24, net, tol=1e-6)
    assert info24["converged"]


def test_bad_input_is_one_line_parameter_error():
    A = _poisson(8)
    b = np.ones(A.shape[0])
    net = dcdm.IdentityNet()
    cases = [
        lambda: dcdm.dcdm_solve(sp.random(36, 30, density=0.2, format="csr"), np.ones(36), net),
        lambda: dcdm.dcdm_solve(A, np.ones(A.shape[0] + 1), net),
        lambda: dcdm.dcdm_solve(A, b, net, tol=0.0),
        lambda: dcdm.dcdm_solve(A, b, net, tol=-1e-3),
        lambda: dcdm.dcdm_solve(sp.identity(35, format="csr"), np.ones(35), net),
        lambda: dcdm.dcdm_solve(A, b, net, max_iter=0),
        lambda: dcdm.dcdm_solve(A, b, "net"),
        lambda: dcdm.cg(A, b, tol=0),
        lambda: dcdm.cg(A, np.ones(3)),
        lambda: dcdm.train_dcdm(A, 9),
        lambda: dcdm.train_dcdm([], 8),
    ]
    for case in cases:
        with pytest.raises(ParameterError) as exc:
            case()
        assert "\n" not in str(exc.value)
