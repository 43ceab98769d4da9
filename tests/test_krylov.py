"""GCRO-DR and Sorting Krylov Recycling against the direct solver: every preconditioner reaches
the requested tolerance (the indefinite Helmholtz case included), recycling cuts the iterations on
a sequence of similar systems, the sort puts similar fields side by side, and ``solver=skr``
data files agree with the direct solver's to the tolerance and stay byte-identical across workers."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from oplab import problems
from oplab.data.dataset import open_dataset
from oplab.data.generation import generate
from oplab.problems.base import rng_for
from oplab.solvers.krylov import GCRODR, features, gmres, sort_greedy


def systems(name, n, count, seed=0, **params):
    p = problems.create(name, n, **params)
    return [p.system(p.sample_inputs(rng_for(seed, i)))[:2] for i in range(count)]


@pytest.mark.parametrize("precond", ["none", "jacobi", "ilu", "amg"])
def test_gcrodr_reaches_the_tolerance_against_the_direct_solve(precond):
    solver = GCRODR(m=30, k=8, tol=1e-8, precond=precond)
    for A, b in systems("darcy", 34, 3):
        x, info = solver.solve(A, b)
        assert info.converged and info.residual <= 1.01e-8
        exact = spla.spsolve(A.tocsc(), b)
        # error bounded by the condition number times the residual
        assert np.linalg.norm(x - exact) / np.linalg.norm(exact) < 1e-8 * 1e4
        assert np.linalg.norm(b - A @ x) / np.linalg.norm(b) == pytest.approx(info.residual)


def test_gcrodr_on_indefinite_helmholtz():
    solver = GCRODR(m=40, k=10, tol=1e-7, precond="ilu")
    for A, b in systems("helmholtz", 40, 3):
        x, info = solver.solve(A, b)
        assert info.converged
        exact = spla.spsolve(A.tocsc(), b)
        assert np.linalg.norm(x - exact) / np.linalg.norm(exact) < 1e-4
    # the matrix is indefinite indeed: it has negative and positive eigenvalues
    ev = np.linalg.eigvalsh(systems("helmholtz", 20, 1)[0][0].toarray())
    assert ev.min() < 0 < ev.max()


def test_recycling_cuts_iterations_on_similar_systems():
    p = problems.create("darcy", 34)
    inputs = np.stack([p.sample_inputs(rng_for(0, i)) for i in range(10)])
    seq = [p.system(a)[:2] for a in inputs]
    order = sort_greedy(features(inputs))
    fresh = sum(GCRODR(m=40, k=20, tol=1e-8).solve(*seq[i])[1].iterations for i in order)
    solver = GCRODR(m=40, k=20, tol=1e-8)
    recycled = sum(solver.solve(*seq[i])[1].iterations for i in order)
    plain = sum(gmres(A, b, tol=1e-8, restart=40)[1].iterations for A, b in seq)
    # measured: about 0.75x the iterations of a fresh GCRO-DR per system and 0.4x GMRES(40)'s
    assert recycled < 0.85 * fresh, (recycled, fresh)
    assert recycled < 0.6 * plain, (recycled, plain)


def test_gmres_baseline_reaches_the_tolerance():
    A, b = systems("poisson", 30, 1)[0]
    x, info = gmres(A, b, tol=1e-9, restart=30, precond="ilu")
    assert info.converged and info.residual <= 1e-9 and info.iterations > 0


def test_sort_greedy_puts_neighbours_side_by_side():
    rng = np.random.default_rng(0)
    pts = rng.permutation(np.linspace(0, 1, 30))[:, None]  # points on a line, shuffled
    order = sort_greedy(pts)
    assert sorted(order) == list(range(30))
    steps = np.abs(np.diff(pts[order, 0]))
    assert steps.sum() < 2.05  # a walk along the line (possibly doubling back once)
    assert np.abs(np.diff(pts[:, 0])).sum() > 5  # the shuffled order is far worse
    fields = rng.normal(size=(3, 2, 20, 20))
    f = features(fields, size=4)
    assert f.shape == (3, 2 * 4 * 4)
    assert np.allclose(f.reshape(3, 2, 4, 4), fields.reshape(3, 2, 4, 5, 4, 5).mean(axis=(3, 5)))


@pytest.mark.parametrize("name", ["darcy", "helmholtz", "poisson"])
def test_skr_data_equal_the_direct_solver_to_tolerance(tmp_path, name):
    n, count = 24, 10
    direct = problems.create(name, n)
    skr = problems.create(name, n, solver="skr", tol=1e-9, skr_chunk=8, skr_m=20, skr_k=5)
    xd, yd = direct.generate(range(count), seed=3)
    xs, ys = skr.generate(range(count), seed=3)
    assert np.array_equal(xd, xs)
    err = np.linalg.norm((ys - yd).reshape(count, -1), axis=1) / np.linalg.norm(yd.reshape(count, -1), axis=1)
    assert err.max() < 1e-5, err
    assert "skr" in skr.solver_name


def test_skr_files_are_byte_identical_across_workers(tmp_path):
    p = problems.create("darcy", 20, solver="skr", skr_chunk=6, skr_m=16, skr_k=4, tol=1e-9)
    generate(p, 14, tmp_path / "one.h5", seed=0, workers=1)
    generate(p, 14, tmp_path / "two.h5", seed=0, workers=2)
    a, b = open_dataset(tmp_path / "one.h5").arrays(), open_dataset(tmp_path / "two.h5").arrays()
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # a chunk asked for alone gives the same bits as inside the whole set
    x, y = p.generate(range(6, 12), seed=0)
    assert np.array_equal(y.astype(np.float32), a[1][6:12])


def test_bad_skr_parameters():
    from oplab.errors import ParameterError

    with pytest.raises(ParameterError, match="skr_k = 12 must be < skr_m = 10"):
        problems.create("darcy", 16, solver="skr", skr_k=12, skr_m=10)
    with pytest.raises(ParameterError, match="skr_precond"):
        problems.create("darcy", 16, solver="skr", skr_precond="bogus")


def test_generate_command_takes_solver_skr(tmp_path, capsys):
    from oplab.cli import main

    out = tmp_path / "p.h5"
    assert main(["generate", "poisson", "--n", "4", "--resolution", "20", "--solver", "skr", "--out", str(out)]) == 0
    ds = open_dataset(out)
    assert "skr" in ds.meta["solver"]
    direct = problems.create("poisson", 20).generate(range(4), seed=0)[1]
    assert np.abs(ds.arrays()[1] - direct).max() < 1e-6 * np.abs(direct).max() + 1e-7
    assert main(["generate", "burgers", "--n", "2", "--solver", "skr", "--out", str(tmp_path / "b.h5")]) == 2
    assert "no choice of linear solver" in capsys.readouterr().err
