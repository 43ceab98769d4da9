"""HyPINO (oplab.models.hypino): the batched functional PINN, the residual operator, the
refinement algebra, training and checkpoints."""

import math

import pytest
import torch

from oplab.errors import DataFileError, ParameterError
from oplab.models import hypino as hp


def _square_sin_problem(k: float) -> hp.PDEProblem:
    """u = sin(pi x) sin(pi y) on [-1, 1]^2: f = (2 pi^2 + k) u, g = 0."""
    u = lambda xy: torch.sin(math.pi * xy[..., 0]) * torch.sin(math.pi * xy[..., 1])
    return hp.PDEProblem(hp.Domain("square"), k, lambda xy: (2 * math.pi**2 + k) * u(xy), lambda xy: 0 * u(xy), u)


def test_batched_functional_pinn_equals_sequential(one_thread):
    torch.manual_seed(0)
    freqs = torch.randn(4, 2)
    nets = [hp.PINN(freqs, width=8, depth=2) for _ in range(3)]
    params = {k: torch.cat([n.params()[k] for n in nets]) for k in nets[0].params()}
    xy = torch.rand(3, 50, 2) * 2 - 1
    u = hp.pinn_apply(params, xy, freqs)
    for b, net in enumerate(nets):
        assert torch.allclose(u[b], net(xy[b])[:, 0], atol=1e-6)
        # the same weights copied into a plain nn.Sequential of nn.Linear / tanh
        plain = torch.nn.Sequential(*[m for m in net if not isinstance(m, hp.FourierFeatures)])
        assert torch.allclose(u[b], plain(hp.fourier_features(xy[b], freqs))[:, 0], atol=1e-6)
        rebuilt = hp.PINN.from_params(params, freqs, b)
        assert torch.allclose(rebuilt(xy[b])[:, 0], u[b], atol=1e-6)


@pytest.mark.parametrize("k", [0.0, -3.0, 5.0])
def test_residual_vanishes_on_exact_solution(one_thread, k):
    p = _square_sin_problem(k)
    xy = (torch.rand(1, 200, 2, dtype=torch.float64) * 2 - 1)
    u, res = hp.pde_residual(p.exact, xy, k, p.source(xy).double())
    assert res.abs().max() < 1e-9 * (2 * math.pi**2 + abs(k))
    # a wrong k leaves the residual k' - k times u
    _, res2 = hp.pde_residual(p.exact, xy, k + 1, p.source(xy).double())
    assert torch.allclose(res2, u, atol=1e-9)


def test_manufactured_source_matches_autograd_laplacian(one_thread):
    g = torch.Generator().manual_seed(3)
    p = hp.manufactured(hp.Domain("hole", (0.2, -0.1), 0.3), -2.5, g)
    xy = p.domain.sample_interior(300, g).double()[None]
    _, res = hp.pde_residual(lambda x: p.exact(x).double(), xy, p.k, p.source(xy).double())
    assert res.abs().max() < 1e-4 * p.source(xy).abs().max()


def test_domains_masks_and_sampling(one_thread):
    g = torch.Generator().manual_seed(0)
    for dom in [hp.Domain("square"), hp.Domain("disk", (0.1, 0.0), 0.8), hp.Domain("hole", (0.0, 0.2), 0.3),
                hp.Domain("lshape")]:
        xi, xb = dom.sample_interior(100, g), dom.sample_boundary(100, g)
        assert dom.inside(xi).all()
        if dom.kind in ("square", "lshape"):
            assert not dom.inside(xb).any() and (xb.abs().max(1).values > 1 - 1e-6).float().mean() > 0.6
        else:  # on the circle, or (hole) on the square's edge
            r = ((xb - torch.tensor(dom.center)) ** 2).sum(1).sqrt()
            assert (((r - dom.radius).abs() < 1e-5) | (xb.abs().max(1).values > 1 - 1e-6)).all()
        d, b = dom.masks(16)
        assert (b <= d).all() and b.sum() > 0 and (d & ~b).sum() > 0
    with pytest.raises(ParameterError, match="kind"):
        hp.Domain("triangle")
    with pytest.raises(ParameterError, match="radius"):
        hp.Domain("disk", (0.5, 0.0), 0.8)


class _Oracle:
    """A stand-in for the hypernetwork that returns fixed PINNs, one per call."""

    def __init__(self, answers, freqs, grid=16):
        self.answers, self.freqs, self.grid, self.calls = list(answers), freqs, grid, []

    def generate(self, grids):
        self.calls.append(grids)
        return self.answers.pop(0)


def test_refinement_with_exact_correction_is_exact(one_thread):
    """The solution is the sum of two PINNs; the first round sees exactly the residual problem of the
    second, and adding it removes the error (the sum-of-PINNs algebra)."""
    torch.manual_seed(1)
    freqs = torch.randn(3, 2)
    p1, p2 = hp.PINN(freqs, 8, 2).params(), hp.PINN(freqs, 8, 2).params()
    p1, p2 = ({k: v.detach() for k, v in p.items()} for p in (p1, p2))
    u_true = lambda xy: hp.ensemble_apply([p1, p2], xy.reshape(1, -1, 2), freqs).reshape(xy.shape[:-1])
    k = 2.0
    src = lambda xy: hp.pde_residual(u_true, xy.reshape(1, -1, 2), k, 0.0)[1].detach().reshape(xy.shape[:-1])
    prob = hp.PDEProblem(hp.Domain("square"), k, src, u_true, u_true)
    oracle = _Oracle([p1, p2], freqs)
    ens = hp.refine(oracle, [prob], rounds=1)
    corr = oracle.calls[1]
    nodes = hp.grid_nodes(16).reshape(1, -1, 2)
    lap_p2 = hp.pde_residual(lambda xy: hp.pinn_apply(p2, xy, freqs), nodes, k, 0.0)[1].reshape(16, 16)
    assert torch.allclose(corr["f"][0], lap_p2 * corr["dom"][0], atol=1e-4)
    u2 = hp.pinn_apply(p2, nodes, freqs).reshape(16, 16)
    assert torch.allclose(corr["g"][0], u2 * corr["bnd"][0], atol=1e-5)
    err = hp.ensemble_errors(oracle, [prob], ens, n=20)[0]
    assert err[0] > 0.1 and err[1] < 1e-5


def test_scale_equivariance_and_tiny_training_lowers_loss(one_thread):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    probs = [hp.random_problem(g) for _ in range(12)]
    pool = hp.make_pool(probs, 8, g, n_in=48, n_bd=16)
    model = hp.HyPINO(grid=8, width=16, depth=1, fourier=4, channels=4, latent=32)
    # scaling f and g scales the generated solution by the same factor (by construction)
    xy = pool.xy_in[:2]
    grids = {k: v[:2] for k, v in pool.grids.items()}
    scaled = {**grids, "f": 7.0 * grids["f"], "g": 7.0 * grids["g"]}
    with torch.no_grad():
        u1 = hp.pinn_apply(model.generate(grids), xy, model.freqs)
        u7 = hp.pinn_apply(model.generate(scaled), xy, model.freqs)
    assert torch.allclose(u7, 7.0 * u1, rtol=1e-4, atol=1e-5)
    before = float(hp.hypino_loss(model, pool.batch(torch.arange(12)))[0].detach())
    out = hp.train_hypino(model, pool, pool, steps=40, batch=12, lr=3e-3, eval_every=20)
    after = float(hp.hypino_loss(model, pool.batch(torch.arange(12)))[0].detach())
    assert after < 0.5 * before, (before, after)
    assert out["best_step"] in (20, 40) and len(out["history"]) == 40


def test_finetune_lowers_error_and_checks(one_thread):
    torch.manual_seed(0)
    p = _square_sin_problem(0.0)
    net = hp.PINN(torch.randn(4, 2), 32, 2)
    _, hist = hp.finetune_pinn(net, p, steps=100, lr=3e-3, n_in=256, n_bd=64, eval_at=(0, 100), n_eval=16)
    assert hist[0][0] == 0 and hist[1][0] == 100 and hist[1][1] < 0.6 * hist[0][1], hist
    with pytest.raises(ParameterError, match="steps"):
        hp.finetune_pinn(net, p, steps=-1)


def test_save_load_round_trip(tmp_path, one_thread):
    torch.manual_seed(0)
    model = hp.HyPINO(grid=8, width=8, depth=1, fourier=2, channels=4, latent=16, seed=5)
    hp.save_hypino(model, tmp_path / "net", info={"steps": 0})
    back = hp.load_hypino(tmp_path / "net")
    assert back.config == model.config
    g = torch.Generator().manual_seed(2)
    grids = hp.problem_grids([hp.random_problem(g)], 8)
    a, b = model.generate(grids), back.generate(grids)
    assert all(torch.equal(a[k], b[k]) for k in a) and torch.equal(model.freqs, back.freqs)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"kind": "lpn"}')
    with pytest.raises(DataFileError, match="HyPINO"):
        hp.load_hypino(tmp_path / "bad")
    with pytest.raises(ParameterError, match="grid"):
        hp.HyPINO(grid=12)


def test_cli_hypino_train(tmp_path, one_thread):
    from oplab.cli import main

    out = tmp_path / "net"
    assert main(["hypino-train", "--out", str(out), "--steps", "2", "--problems", "8"]) == 0
    model = hp.load_hypino(out)
    info = __import__("json").loads((out / "config.json").read_text())["info"]
    assert info["steps"] == 2 and info["n_train"] == 8 and model.grid == 32
    assert main(["hypino-train", "--out", str(tmp_path / "x"), "--steps", "0"]) == 2
