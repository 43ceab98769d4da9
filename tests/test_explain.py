"""Sensitivity maps (``oplab explain``, issue 19 item 5), checked where the answer is known exactly.

The Poisson problem ``-Lap u = f`` with zero Dirichlet data, solved by the five-point scheme on the
``n x n`` node grid (``h = 1 / (n - 1)``), is linear: ``u = A^-1 f`` on the interior nodes, and the
inverse has the sine eigen-expansion (LeVeque 2007, "Finite Difference Methods for Ordinary and
Partial Differential Equations", SIAM, sec. 3.4: eigenvectors ``sin(k pi x) sin(l pi y)``,
eigenvalues ``lambda_kl = 4 h^-2 (sin^2(k pi h / 2) + sin^2(l pi h / 2))``)

    (A^-1)_ij = h^2 G_h(x_i, x_j),   G_h(x, y) = sum_{k,l} 4 sin(k pi x1) sin(l pi x2) sin(k pi y1) sin(l pi y2) / lambda_kl,

the discrete Green's function (-> the continuous one, ``lambda_kl -> pi^2 (k^2 + l^2)``, as h -> 0).

* A run folder whose model *is* that solution operator (a test-only dense linear model, with
  non-trivial normalisers it has to undo) must give ``du(x_i)/df = h^2 G_h(x_i, .)`` through the
  Predictor, ``G_h(x_i, .)`` with ``density=True``; its integrated gradients are ``(f - b) * grad``
  and complete to float rounding, at any number of steps.
* A small FNO trained briefly on Poisson data: the gradient matches a central difference of the
  Predictor's output, the completeness gap of integrated gradients shrinks as the steps grow, and
  its point sensitivities correlate with ``G_h`` (on the smooth sine modes the data excite; the
  full map less, see the numbers in the test).
* ``oplab explain`` writes the map and refuses bad targets with one line and exit code 2.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import oplab
from oplab import explain, models, problems
from oplab.cli import main
from oplab.errors import OplabError
from oplab.predictor import Bundle
from oplab.rundir import RunDir
from oplab.solvers import fd

N = 17
H = 1.0 / (N - 1)


def green(n: int = N) -> np.ndarray:
    """``G_h[i1, i2, j1, j2]`` on the interior nodes from the sine eigen-expansion (module docstring)."""
    h, k = 1.0 / (n - 1), np.arange(1, n - 1)
    s = np.sin(np.pi * np.outer(k, k) * h)  # s[k, i] = sin(k pi x_i), x_i = i h
    lam = 4 / h**2 * (np.sin(k * np.pi * h / 2)[:, None] ** 2 + np.sin(k * np.pi * h / 2)[None, :] ** 2)
    return np.einsum("ka,lb,kc,ld,kl->abcd", 4 * s, s, s, s, 1 / lam)


def full(interior: np.ndarray) -> np.ndarray:
    out = np.zeros((N, N))
    out[1:-1, 1:-1] = interior
    return out


class _DenseLinear(models.Operator):
    """Test only: ``u = K a + b`` on the ``n x n`` grid, ``K`` and ``b`` in the weights."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("K", torch.zeros(n * n, n * n))
        self.register_buffer("b", torch.zeros(n * n))

    def forward(self, x, coords):
        return (x.flatten(1) @ self.K.T + self.b).view(x.shape[0], 1, *x.shape[2:])


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory):
    """A run folder whose Predictor is the five-point Poisson solution operator, normalisers included."""
    models.register("dense_linear_test")(_DenseLinear)
    solution = np.zeros((N * N, N * N))  # full grid -> full grid, zero on the boundary
    inside = np.arange(N * N).reshape(N, N)[1:-1, 1:-1].ravel()
    solution[np.ix_(inside, inside)] = np.linalg.inv(fd.diffusion_matrix(np.ones((N, N))).toarray())
    bundle = Bundle(_DenseLinear(N), 1, 1)
    bundle.in_norm.set(torch.tensor([0.3]), torch.tensor([2.0]))
    bundle.out_norm.set(torch.tensor([-0.1]), torch.tensor([0.05]))
    s_in, s_out = 2.0 + bundle.in_norm.eps, 0.05 + bundle.out_norm.eps
    # bundle(a) = s_out (K (a - 0.3) / s_in + b) - 0.1 = solution @ a
    bundle.model.K.copy_(torch.from_numpy(solution * s_in / s_out))
    bundle.model.b.copy_(torch.from_numpy(solution @ np.full(N * N, 0.3) / s_out + 0.1 / s_out))
    axes = [dict(name=a, n=N, lo=0.0, hi=1.0, periodic=False) for a in "xy"]
    data = {"input_axes": axes, "output_axes": axes, "train_input_shape": [1, N, N], "train_output_shape": [1, N, N],
            "input_channels": ["f"], "output_channels": ["u"]}
    path = tmp_path_factory.mktemp("explain") / "exact"
    run = RunDir.create(path, {"model": {"name": "dense_linear_test", "n": N}, "data": data, "train": {}})
    run.save_checkpoint("last", bundle.state_dict())
    run.unlock()
    yield path, solution
    models._REGISTRY.pop("dense_linear_test")


@pytest.fixture(scope="module")
def forcing():
    return problems.create("poisson", resolution=N).sample_inputs(np.random.default_rng(7))  # [1, N, N]


def test_the_wrapped_matrix_is_the_poisson_solver_and_its_inverse_the_sine_series(exact_run, forcing):
    _, solution = exact_run
    u = problems.create("poisson", resolution=N).solve(forcing)
    np.testing.assert_allclose(solution @ forcing.ravel(), u.ravel(), rtol=0, atol=1e-12 * np.abs(u).max())
    interior = solution.reshape(N, N, N, N)[1:-1, 1:-1, 1:-1, 1:-1]
    np.testing.assert_allclose(interior, H**2 * green(), rtol=0, atol=1e-12)
    op = oplab.load(exact_run[0])  # the Predictor answers the solver's u (float32)
    assert np.abs(op(forcing) - u).max() < 1e-5 * np.abs(u).max()


@pytest.mark.parametrize("point", [(0.5, 0.5), (0.3, 0.7), (0.0625, 0.9)])
def test_gradient_through_the_predictor_is_the_discrete_green_function(exact_run, forcing, point):
    op, g = oplab.load(exact_run[0]), green()
    r = explain.gradient(op, forcing, point=point, density=True)
    i, j = r.node
    assert r.node == tuple(round(p * (N - 1)) for p in point) and r.point == (i * H, j * H)
    expected = full(g[i - 1, j - 1])
    deviation = np.abs(r.map[0] - expected).max() / np.abs(expected).max()
    assert deviation < 1e-5, deviation  # measured 4e-8
    raw = explain.gradient(op, forcing, point=point)  # the discrete derivative du_i/df_j = h^2 G_h
    np.testing.assert_allclose(raw.map, r.map * H**2, rtol=1e-12)
    assert r.cell == pytest.approx(H**2) and raw.value == pytest.approx(float(op(forcing)[0, i, j]), rel=1e-6)
    # symmetry of the Green's function: the map of node i read at node j is the map of j read at i
    other = explain.gradient(op, forcing, node=(4, 12), density=True).map[0]
    assert r.map[0][4, 12] == pytest.approx(other[i, j], rel=1e-5)


def test_mean_functional_and_weights(exact_run, forcing):
    op, g = oplab.load(exact_run[0]), green()
    r = explain.gradient(op, forcing, functional="mean", density=True)
    expected = full(g.sum(axis=(0, 1)) / N**2)
    assert np.abs(r.map[0] - expected).max() < 1e-5 * np.abs(expected).max()
    w = np.random.default_rng(0).standard_normal((N, N))
    r = explain.gradient(op, forcing, functional=w)
    expected = full(np.einsum("ab,abcd->cd", w[1:-1, 1:-1], g) * H**2)
    assert np.abs(r.map[0] - expected).max() < 1e-5 * np.abs(expected).max()
    assert r.value == pytest.approx(float((w * op(forcing)[0]).sum()), rel=1e-5)


@pytest.mark.parametrize("steps", [1, 32])
def test_integrated_gradients_of_a_linear_map_are_input_times_gradient(exact_run, forcing, steps):
    op = oplab.load(exact_run[0])
    grad = explain.gradient(op, forcing, point=(0.5, 0.5)).map
    ig = explain.integrated_gradients(op, forcing, point=(0.5, 0.5), steps=steps)
    np.testing.assert_allclose(ig.map, forcing * grad, rtol=1e-5, atol=1e-6 * np.abs(forcing * grad).max())
    # J(0) = 0 and completeness, to the float32 rounding of u = s_out z + m_out (|m_out| = 0.1 > |u|)
    rounding = 1e-6 * (abs(ig.value) + 0.1)
    assert abs(ig.baseline_value) < rounding
    assert abs(ig.gap) < rounding, ig.gap  # measured 4e-9 (1 step), 1.1e-8 (32 steps): 1.5e-6, 4.4e-6 of J
    mean = explain.integrated_gradients(op, forcing, point=(0.5, 0.5), steps=steps, baseline="mean")
    np.testing.assert_allclose(mean.map, (forcing - 0.3) * grad, rtol=1e-4, atol=1e-6 * np.abs(mean.map).max())
    assert abs(mean.gap) < rounding  # measured 1.7e-9


@pytest.mark.parametrize("kwargs, needle", [
    (dict(point=(1.5, 0.5)), "outside the domain"),
    (dict(point=(0.5,)), "1 coordinate(s)"),
    (dict(point=(0.5, 0.5, 0.5)), "3 coordinate(s)"),
    (dict(node=(17, 0)), "grid indices"),
    (dict(point=(0.5, 0.5), channel=1), "channel 1"),
    (dict(functional="max"), "'mean'"),
    (dict(functional=np.ones((3, 3))), "output grid"),
    (dict(point=(0.5, 0.5), functional="mean"), "one target"),
    (dict(), "one target"),
])
def test_bad_targets_are_one_line_errors(exact_run, forcing, kwargs, needle):
    with pytest.raises(OplabError, match=None) as info:
        explain.gradient(oplab.load(exact_run[0]), forcing, **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_bad_inputs_and_samples(exact_run, forcing):
    op = oplab.load(exact_run[0])
    with pytest.raises(OplabError, match="explain takes one sample"):
        explain.gradient(op, np.zeros((2, 1, N, N)), point=(0.5, 0.5))
    with pytest.raises(OplabError, match="NaN"):
        explain.gradient(op, np.full((N, N), np.nan), point=(0.5, 0.5))
    with pytest.raises(OplabError, match="baseline of shape"):
        explain.integrated_gradients(op, forcing, point=(0.5, 0.5), baseline=np.zeros(3))
    stack = np.stack([forcing, 2 * forcing])
    assert np.array_equal(explain.pick_sample(op, stack, 1), 2 * forcing)
    assert np.array_equal(explain.pick_sample(op, stack[:, 0], 1), 2 * forcing)  # [B, *S], one channel
    assert np.array_equal(explain.pick_sample(op, forcing[0], 0), forcing)
    with pytest.raises(OplabError, match=r"sample 2 is out of range: the input holds 2 sample\(s\) \(0..1\)"):
        explain.pick_sample(op, stack, 2)


# ----------------------------------------------------------------- a trained FNO
@pytest.fixture(scope="module")
def fno_run(tmp_path_factory):
    """An FNO trained for 15 epochs on 224 Poisson samples at 17 x 17 (about 7 s on one core; test
    relative L2 about 6%)."""
    from oplab.data.generation import generate
    from oplab.models.presets import derive

    folder = tmp_path_factory.mktemp("explain-fno")
    data = generate(problems.create("poisson", resolution=N), 256, folder / "poisson.h5", seed=0)
    ds = oplab.data.open(data)
    x, y = ds.arrays([0])
    grid = tuple(torch.tensor(c, dtype=torch.float32) for c in ds.output_grid)
    config = derive({"name": "fno", "width": 16, "modes": [6, 6]}, x.shape, y.shape, grid, (False, False))
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        oplab.train(models.from_config(config), ds, epochs=15, batch_size=16, lr=1e-2, n_train=224, n_test=32,
                    out=folder / "run", log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    inputs = folder / "inputs.npy"
    np.save(inputs, ds.arrays(range(250, 256), outputs=False)[0])
    return folder / "run", inputs


def test_fno_gradient_matches_a_finite_difference_of_the_predictor(fno_run, one_thread):
    op = oplab.load(fno_run[0])
    a = np.load(fno_run[1])[0]
    v = np.random.default_rng(1).standard_normal(a.shape).astype(np.float32)
    v *= np.linalg.norm(a) / np.linalg.norm(v)
    eps = 1e-2
    for target in (dict(point=(0.3, 0.6)), dict(functional="mean")):
        r = explain.gradient(op, a, **target)
        w = np.zeros(a.shape[1:])
        if r.node is not None:
            w[r.node] = 1.0
        else:
            w[:] = 1.0 / w.size
        J = lambda t: float((w * op(a + t * v)[0]).sum())  # noqa: E731
        fd = (J(eps) - J(-eps)) / (2 * eps)
        assert abs(float((r.map * v).sum()) - fd) < 1e-3 * abs(fd), (target, fd)


def test_fno_integrated_gradients_complete_as_the_steps_grow(fno_run, one_thread):
    op = oplab.load(fno_run[0])
    a = np.load(fno_run[1])[1]
    gaps = {}
    for steps in (2, 8, 32):
        ig = explain.integrated_gradients(op, a, point=(0.5, 0.5), steps=steps)
        gaps[steps] = abs(ig.gap) / abs(ig.value - ig.baseline_value)
    assert gaps[2] > gaps[8] > gaps[32] and gaps[32] < 1e-3, gaps  # trapezoid: O(steps^-2) down to rounding


def test_fno_point_sensitivity_correlates_with_the_green_function(fno_run, one_thread):
    """The FNO learns the solution operator on the data's span, smooth random sources: the
    sensitivity map's component on the smooth sine modes (k, l <= 4) matches G_h closely; the
    high modes, which the data never excite, are left free (correlation of the whole map lower)."""
    op, g = oplab.load(fno_run[0]), green()
    a = np.load(fno_run[1])[2]
    k = np.arange(1, N - 1)
    modes = np.sqrt(2 * H) * np.sin(np.pi * np.outer(k[:4], k) * H)  # orthonormal sine modes on the interior
    corr = lambda p, q: float(np.corrcoef(p.ravel(), q.ravel())[0, 1])  # noqa: E731
    for point in [(0.5, 0.5), (0.25, 0.75), (0.125, 0.25)]:
        r = explain.gradient(op, a, point=point, density=True)
        expected = g[r.node[0] - 1, r.node[1] - 1]
        low, low_g = modes @ r.map[0, 1:-1, 1:-1] @ modes.T, modes @ expected @ modes.T
        assert corr(low, low_g) > 0.95, (point, corr(low, low_g))  # measured 0.976-0.989
        assert corr(r.map[0, 1:-1, 1:-1], expected) > 0.5, point  # measured 0.59-0.69


# ----------------------------------------------------------------- the command
def fails(capsys, argv, *needles):
    code = main([str(x) for x in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() and "\n" not in err.strip() and "Traceback" not in err, (code, err)
    for needle in needles:
        assert needle in err, (needle, err)


def test_cli_writes_the_map_and_refuses_bad_requests(fno_run, tmp_path, capsys, one_thread):
    run, inputs = fno_run
    out, png = tmp_path / "map.npy", tmp_path / "map.png"
    argv = ["explain", run, "--input", inputs, "--sample", "3", "--point", "0.3,0.6", "--out", out]
    assert main([str(x) for x in argv + ["--plot", png]]) == 0
    assert "u at node (5, 10)" in capsys.readouterr().out
    op, a = oplab.load(run), np.load(inputs)[3]
    np.testing.assert_array_equal(np.load(out), explain.gradient(op, a, point=(0.3, 0.6)).map)
    assert png.stat().st_size > 10_000
    fails(capsys, argv, "map.npy: exists; pass --overwrite")
    fresh = ["--out", tmp_path / "other.npy"]
    fails(capsys, ["explain", run, "--input", inputs, "--point", "1.2,0.5", *fresh], "x = 1.2 is outside the domain [0, 1]")
    fails(capsys, ["explain", run, "--input", inputs, "--point", "0.5", *fresh], "1 coordinate(s)", "2 (x, y)")
    fails(capsys, ["explain", run, "--input", inputs, "--point", "a,b", *fresh], "--point 'a,b'")
    fails(capsys, ["explain", run, "--input", inputs, "--sample", "6", "--point", "0.5,0.5", *fresh],
          "sample 6 is out of range", "6 sample(s)")
    fails(capsys, ["explain", run, "--input", inputs, "--point", "0.5,0.5", "--method", "saliency", *fresh], "--method")
    assert main([str(x) for x in ["explain", run, "--input", inputs, "--functional", "mean", "--method",
                                  "integrated-gradients", "--steps", "16", "--out", out, "--overwrite"]]) == 0
    assert "completeness" in capsys.readouterr().out and np.load(out).shape == (1, N, N)


def test_explain_does_not_import_the_training_loop(fno_run, tmp_path):
    run, inputs = fno_run
    code = ("import sys, json; from oplab.cli import main; "
            f"code = main(['explain', {str(run)!r}, '--input', {str(inputs)!r}, '--point', '0.5,0.5', "
            f"'--out', {str(tmp_path / 'm.npy')!r}, '--plot', {str(tmp_path / 'm.png')!r}]); "
            "print(json.dumps([code, sorted(m for m in sys.modules if m.startswith('oplab.train'))]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [0, []], proc.stderr
