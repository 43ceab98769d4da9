"""DeepONet, POD-DeepONet and MultiONet: shapes on the papers' layouts, exact
identities against hand-written formulas, the POD basis, checkpoint round
trips, gradients and a short training on the antiderivative operator."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from oplab import models
from oplab.errors import ParameterError
from oplab.layers.grid import grid_points
from oplab.models.deeponet import DeepONet, MultiONet, PODDeepONet, SeqDeepONet, fit_data
from oplab.problems import create as create_problem


@pytest.fixture
def registry_of_this_module(monkeypatch):
    """Resolve names through the registry without importing sibling model modules."""
    monkeypatch.setattr(models, "_MODULES", ("deeponet",))


def _fitted_pod(n_sensors, shape_out, out_channels=1, n_modes=4, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    m = PODDeepONet(n_sensors=n_sensors, n_points=math.prod(shape_out), out_channels=out_channels, n_modes=n_modes, **kw)
    x = torch.randn(16, 1, n_sensors, generator=g)
    y = torch.randn(16, out_channels, *shape_out, generator=g)
    return m.fit_data(x, y)


# ----------------------------------------------------------------------------- shapes


def test_shapes_antiderivative_layout():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 100)
    coords = (torch.linspace(0, 1, 100),)
    for m in (
        DeepONet(n_sensors=100, coord_dim=1, branch_layers=[40], trunk_layers=[40], latent=40),
        DeepONet(n_sensors=100, coord_dim=1, branch_layers=[8], trunk_layers=[8], latent=5, stacked=True),
        MultiONet(n_sensors=100, coord_dim=1, width=16, depth=3),
        _fitted_pod(100, (100,)),
    ):
        assert m.kind == "point"
        assert m(x, coords).shape == (4, 1, 100)
        assert m(x, coords[0]).shape == (4, 1, 100)  # a bare 1D tensor is one axis


def test_shapes_diffusion_reaction_layout():
    """1D input (source on 20 sensors) -> 2D space-time output [t, x]."""
    torch.manual_seed(0)
    x = torch.randn(3, 1, 20)
    coords = (torch.linspace(0, 1, 15), torch.linspace(0, 1, 20))
    for m in (
        DeepONet(n_sensors=20, coord_dim=2, branch_layers=[32], trunk_layers=[32], latent=16),
        MultiONet(n_sensors=20, coord_dim=2, width=16, depth=2),
        _fitted_pod(20, (15, 20)),
    ):
        assert m(x, coords).shape == (3, 1, 15, 20)


@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize("multi_output", ["split", "independent"])
def test_multiple_outputs(stacked, multi_output):
    torch.manual_seed(0)
    x = torch.randn(2, 2, 6, 5)  # two input channels on a 6 x 5 grid: 60 sensors
    coords = (torch.linspace(0, 1, 7), torch.linspace(-1, 1, 4))
    m = DeepONet(60, 2, out_channels=3, branch_layers=[8], trunk_layers=[8], latent=4, stacked=stacked, multi_output=multi_output)
    y = m(x, coords)
    assert y.shape == (2, 3, 7, 4)
    assert not torch.allclose(y[:, 0], y[:, 1])
    assert MultiONet(60, 2, out_channels=2, width=8, depth=2)(x, coords).shape == (2, 2, 7, 4)
    assert _fitted_pod(60, (7, 4), out_channels=2)(x, coords).shape == (2, 2, 7, 4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DeepONet(12, 2, out_channels=2, branch_layers=[8], trunk_layers=[8, 8], latent=5),
        lambda: DeepONet(12, 2, out_channels=2, branch_layers=[8], trunk_layers=[8], latent=5, multi_output="independent"),
        lambda: MultiONet(12, 2, out_channels=2, width=8, depth=3, activation="silu"),
    ],
)
def test_cartesian_and_pointwise_forms_agree(make):
    torch.manual_seed(0)
    m = make()
    x = torch.randn(3, 1, 12)
    coords = (torch.linspace(0, 1, 5), torch.linspace(0, 2, 4))
    grid = m(x, coords)  # [3, 2, 5, 4]
    points = grid_points(coords)  # [20, 2], 'ij' order
    torch.testing.assert_close(points[1], torch.tensor([0.0, 2.0 / 3.0]))  # last axis fastest
    same = m.forward_points(x, points.expand(3, -1, -1))
    torch.testing.assert_close(same, grid.reshape(3, 2, 20), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.forward_points(x, points), same)  # shared [P, d] broadcasts
    # per-sample points: sample b queries the grid in its own order
    perms = [torch.randperm(20) for _ in range(3)]
    own = m.forward_points(x, torch.stack([points[p] for p in perms]))
    for b, p in enumerate(perms):
        torch.testing.assert_close(own[b], grid.reshape(3, 2, 20)[b][:, p], rtol=1e-5, atol=1e-6)


def test_stacked_and_unstacked_parameter_counts():
    n, d, h, p, c = 30, 2, 16, 10, 2
    trunk = (d * h + h) + (h * p * c + p * c)
    unstacked = DeepONet(n, d, out_channels=c, branch_layers=[h], trunk_layers=[h], latent=p)
    stacked = DeepONet(n, d, out_channels=c, branch_layers=[h], trunk_layers=[h], latent=p, stacked=True)
    assert unstacked.n_params() == (n * h + h) + (h * p * c + p * c) + trunk + c
    assert stacked.n_params() == p * c * ((n * h + h) + (h + 1)) + trunk + c
    assert stacked.n_params() > unstacked.n_params()
    # DeepXDE's antiderivative net: branch [100, 40, 40], trunk [1, 40, 40], one output bias
    dxde = DeepONet(100, 1, branch_layers=[40], trunk_layers=[40], latent=40, activation="relu")
    assert dxde.n_params() == (100 * 40 + 40 + 40 * 40 + 40) + (1 * 40 + 40 + 40 * 40 + 40) + 1 == 7401
    assert DeepONet(5, 1, latent=3, branch_layers=[], trunk_layers=[], output_bias=False).n_params() == (5 * 3 + 3) + (1 * 3 + 3)


# ----------------------------------------------------------------------------- exact identities


def _dense(layer, h):
    return h @ layer.weight.T.double() + layer.bias.double()


@torch.no_grad()
def test_deeponet_is_the_explicit_sum_over_k():
    """G(u)(y)_c = sum_k b_{c,k}(u) t_{c,k}(y) + b0_c, by hand for a small net."""
    torch.manual_seed(0)
    n, d, p, c = 5, 2, 3, 2
    m = DeepONet(n, d, out_channels=c, branch_layers=[4], trunk_layers=[4], latent=p, activation="tanh").double()
    with torch.no_grad():
        m.bias.copy_(torch.tensor([0.3, -0.7]))
        for q in m.parameters():  # non-zero biases everywhere
            q.add_(0.1 * torch.randn_like(q))
    x = torch.randn(2, 1, n, dtype=torch.float64)
    coords = (torch.linspace(0, 1, 3, dtype=torch.float64), torch.linspace(-1, 1, 2, dtype=torch.float64))
    y = m(x, coords)
    b1, b2 = m.branch[0], m.branch[2]
    t1, t2 = m.trunk[0], m.trunk[2]
    for s in range(2):
        branch = _dense(b2, torch.tanh(_dense(b1, x[s, 0])))  # [p * c], linear last layer
        for i, yi in enumerate(coords[0]):
            for j, yj in enumerate(coords[1]):
                point = torch.stack([yi, yj])
                trunk = torch.tanh(_dense(t2, torch.tanh(_dense(t1, point))))  # activated last layer
                for ch in range(c):
                    value = sum(branch[ch * p + k] * trunk[ch * p + k] for k in range(p)) + m.bias[ch]
                    assert abs(float(value) - float(y[s, ch, i, j])) < 1e-12


@torch.no_grad()
def test_stacked_branch_and_independent_trunks_are_separate_nets():
    """Stacked: branch net g is its own MLP; independent: channel c has its own trunk."""
    torch.manual_seed(1)
    n, p, c, h = 6, 3, 2, 5
    m = DeepONet(n, 1, out_channels=c, branch_layers=[h], trunk_layers=[h], latent=p, stacked=True, multi_output="independent", activation="tanh").double()
    with torch.no_grad():
        for q in m.parameters():
            q.add_(0.1 * torch.randn_like(q))
    u = torch.randn(n, dtype=torch.float64)
    coords = (torch.tensor([0.2, 0.9], dtype=torch.float64),)
    y = m(u.reshape(1, 1, n), coords)
    W, B = m.branch.weights, m.branch.biases
    V, D = m.trunk.weights, m.trunk.biases
    for ch in range(c):
        for i, point in enumerate(coords[0]):
            t = torch.tanh(torch.tanh(point * V[0][ch, 0] + D[0][ch]) @ V[1][ch] + D[1][ch])  # [p]
            value = m.bias[ch]
            for k in range(p):
                g = ch * p + k  # the k-th branch net of channel ch
                b = torch.tanh(u @ W[0][g] + B[0][g]) @ W[1][g] + B[1][g]  # [1]
                value = value + b[0] * t[k]
            assert abs(float(value) - float(y[0, ch, i])) < 1e-12


def _multionet_by_hand(m, u, point):
    """(1/L) sum_l w_l <b_l(u), t_l(y)> + b0 with b_l, t_l the activated hidden features."""
    act = torch.tanh
    b, t, total = u, point, 0.0
    for l in range(m.depth):
        b = act(_dense(m.branch[l], b))
        t = act(_dense(m.trunk[l], t))
        total = total + m.layer_weights[l, 0] * torch.dot(b, t)
    return total / m.depth + m.bias[0]


@torch.no_grad()
def test_multionet_is_the_mean_of_layerwise_inner_products():
    torch.manual_seed(2)
    m = MultiONet(7, 2, width=6, depth=3, activation="tanh").double()
    with torch.no_grad():
        m.layer_weights.copy_(torch.tensor([[0.5], [-1.5], [2.0]]))
        m.bias.fill_(0.25)
        for layer in [*m.branch, *m.trunk]:
            layer.bias.add_(0.1 * torch.randn_like(layer.bias))
    x = torch.randn(2, 1, 7, dtype=torch.float64)
    coords = (torch.linspace(0, 1, 3, dtype=torch.float64), torch.tensor([0.0, 0.5], dtype=torch.float64))
    y = m(x, coords)
    for s in range(2):
        for i, yi in enumerate(coords[0]):
            for j, yj in enumerate(coords[1]):
                value = _multionet_by_hand(m, x[s, 0], torch.stack([yi, yj]))
                assert abs(float(value) - float(y[s, 0, i, j])) < 1e-12


@torch.no_grad()
def test_multionet_depth_one_is_a_single_inner_product():
    """depth=1: G(u)(y) = w <s(W^b u + c^b), s(W^t y + c^t)> + b0, one DeepONet-like product."""
    torch.manual_seed(3)
    m = MultiONet(4, 1, width=5, depth=1).double()
    with torch.no_grad():
        m.layer_weights.fill_(1.7)
        m.bias.fill_(-0.2)
    u = torch.randn(1, 1, 4, dtype=torch.float64)
    points = torch.tensor([0.1, 0.6, 0.8], dtype=torch.float64)
    y = m(u, (points,))[0, 0]
    b = torch.tanh(_dense(m.branch[0], u[0, 0]))
    t = torch.tanh(_dense(m.trunk[0], points[:, None]))  # [3, 5]
    torch.testing.assert_close(y, 1.7 * (t @ b) - 0.2, rtol=0, atol=1e-13)


@torch.no_grad()
def test_multionet_with_only_the_last_layer_weighted_is_a_deeponet_product():
    """w = (0, ..., 0, L): only <b_L, t_L> survives (DeepONet's single product)."""
    torch.manual_seed(4)
    m = MultiONet(4, 1, width=6, depth=3, output_bias=False).double()
    with torch.no_grad():
        m.layer_weights.copy_(torch.tensor([[0.0], [0.0], [3.0]]))
    u = torch.randn(1, 1, 4, dtype=torch.float64)
    points = torch.tensor([0.3, 0.7], dtype=torch.float64)
    b, t = u[0, 0], points[:, None]
    for l in range(3):
        b, t = torch.tanh(_dense(m.branch[l], b)), torch.tanh(_dense(m.trunk[l], t))
    torch.testing.assert_close(m(u, (points,))[0, 0], t @ b, rtol=0, atol=1e-13)


# ----------------------------------------------------------------------------- POD-DeepONet


def _orthonormal_modes(n_points, r, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n_points, r)))
    return torch.tensor(q)  # [P, r], orthonormal columns


def test_pod_basis_spans_known_modes():
    shape, r, n = (12, 10), 4, 60
    P = math.prod(shape)
    modes = _orthonormal_modes(P, r, 0)
    # zero-mean, exactly uncorrelated amplitudes with variances 16 : 4 : 1 : 1/4, so
    # the principal directions are the modes themselves (not rotations of them)
    rng = np.random.default_rng(1)
    amplitudes, _ = np.linalg.qr(rng.standard_normal((n, r)) - rng.standard_normal((1, r)))
    amplitudes -= amplitudes.mean(axis=0)
    amplitudes, _ = np.linalg.qr(amplitudes)
    coeffs = torch.tensor(amplitudes * np.sqrt(n) * np.array([4.0, 2.0, 1.0, 0.5]))
    mean = torch.tensor(np.sin(np.linspace(0, 3, P)))
    y = (mean + coeffs @ modes.T).reshape(n, 1, *shape).float()
    x = torch.randn(n, 1, 9)
    m = PODDeepONet(n_sensors=9, n_points=P, n_modes=r, branch_layers=[8])
    fit_data(m, x, y)
    assert m.is_fitted and bool(m.fitted)
    basis = m.basis[0].double() / math.sqrt(P)  # back to unit Euclidean norm
    torch.testing.assert_close(basis.T @ basis, torch.eye(r, dtype=torch.float64), atol=1e-6, rtol=0)
    projection_error = modes - basis @ (basis.T @ modes)
    assert projection_error.norm(dim=0).max() < 1e-6
    torch.testing.assert_close(m.mean[0].double(), mean + coeffs.mean(0) @ modes.T, atol=1e-6, rtol=0)
    # modes come out in order of variance, each with its largest entry positive
    for k in range(r):
        assert abs(float(basis[:, k] @ modes[:, k])) > 1 - 1e-6
        assert basis[:, k].max() >= -basis[:, k].min()


def test_pod_errors():
    m = PODDeepONet(n_sensors=5, n_points=30, n_modes=3, branch_layers=[4])
    x, coords = torch.randn(2, 1, 5), (torch.linspace(0, 1, 30),)
    with pytest.raises(RuntimeError, match="fit_data"):
        m(x, coords)
    with pytest.raises(ValueError, match="n_points = 30"):
        m.fit_data(torch.randn(8, 1, 5), torch.randn(8, 1, 29))
    with pytest.raises(ParameterError, match="n_modes"):
        m.fit_data(torch.randn(2, 1, 5), torch.randn(2, 1, 30))  # rank <= 2 < 3 modes
    m.fit_data(torch.randn(8, 1, 5), torch.randn(8, 1, 30))
    with pytest.raises(ValueError, match="training grid"):
        m(x, (torch.linspace(0, 1, 31),))
    with pytest.raises(ValueError, match="n_sensors=5"):
        m(torch.randn(2, 1, 6), coords)


def test_pod_checkpoint_round_trip(tmp_path, registry_of_this_module):
    torch.manual_seed(0)
    m = _fitted_pod(10, (6, 5), out_channels=2, n_modes=3, branch_layers=[8])
    x, coords = torch.randn(3, 1, 10), (torch.linspace(0, 1, 6), torch.linspace(0, 1, 5))
    save_file(m.state_dict(), str(tmp_path / "weights.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(models.config_of(m)))

    fresh = models.from_config(json.loads((tmp_path / "config.json").read_text()))
    assert not fresh.is_fitted
    fresh.load_state_dict(load_file(str(tmp_path / "weights.safetensors")))
    assert fresh.is_fitted
    assert torch.equal(fresh.basis, m.basis) and torch.equal(fresh.mean, m.mean)
    assert torch.equal(fresh(x, coords), m(x, coords))


# ----------------------------------------------------------------------------- config, gradients, errors


@pytest.mark.parametrize(
    "make",
    [
        lambda: DeepONet(12, 2, out_channels=2, branch_layers=[8, 8], trunk_layers=[8], latent=4, activation="gelu"),
        lambda: DeepONet(12, 2, out_channels=2, branch_layers=[8], trunk_layers=[8], latent=4, stacked=True, multi_output="independent"),
        lambda: MultiONet(12, 2, out_channels=2, width=8, depth=3, activation="relu"),
        lambda: _fitted_pod(12, (5, 4), out_channels=2, n_modes=3, branch_layers=[8]),
    ],
)
def test_config_round_trip(make, registry_of_this_module):
    torch.manual_seed(0)
    m = make()
    config = models.config_of(m)
    assert json.loads(json.dumps(config)) == config
    rebuilt = models.from_config(config)
    assert type(rebuilt) is type(m) and rebuilt.config == m.config
    rebuilt.load_state_dict(m.state_dict())
    x, coords = torch.randn(3, 1, 12), (torch.linspace(0, 1, 5), torch.linspace(0, 1, 4))
    assert torch.equal(rebuilt(x, coords), m(x, coords))
    assert models.get(config["name"]) is type(m)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DeepONet(12, 1, out_channels=2, branch_layers=[8], trunk_layers=[8], latent=4),
        lambda: DeepONet(12, 1, out_channels=2, branch_layers=[8], trunk_layers=[8], latent=4, stacked=True, multi_output="independent"),
        lambda: MultiONet(12, 1, out_channels=2, width=8, depth=3),
        lambda: _fitted_pod(12, (9,), out_channels=2, n_modes=3, branch_layers=[8]),
    ],
)
def test_gradient_reaches_every_parameter(make):
    torch.manual_seed(0)
    m = make()
    x, coords = torch.randn(4, 1, 12), (torch.linspace(0, 1, 9),)
    (m(x, coords) ** 2).mean().backward()
    for name, q in m.named_parameters():
        assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0, name


def test_fit_data_is_a_no_op_for_learned_trunks():
    m = DeepONet(4, 1, branch_layers=[3], trunk_layers=[3], latent=2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    assert fit_data(m, torch.randn(5, 1, 4), torch.randn(5, 1, 7)) is m
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_argument_errors(registry_of_this_module):
    with pytest.raises(ParameterError, match="activation"):
        DeepONet(4, 1, activation="sigmoidish")
    with pytest.raises(ParameterError, match="multi_output"):
        DeepONet(4, 1, out_channels=2, multi_output="both")
    with pytest.raises(ParameterError, match="branch_layers"):
        DeepONet(4, 1, branch_layers=64)
    with pytest.raises(ParameterError, match="divisible"):
        MultiONet(4, 1, out_channels=3, width=8)
    with pytest.raises(ParameterError, match="n_sensors"):
        DeepONet(0, 1)
    with pytest.raises(ParameterError, match="unknown argument"):
        models.create("deeponet", n_sensors=4, coord_dim=1, width=3)
    m = DeepONet(4, 2, branch_layers=[3], trunk_layers=[3], latent=2)
    with pytest.raises(ValueError, match="n_sensors=4"):
        m(torch.randn(2, 1, 5), (torch.linspace(0, 1, 3), torch.linspace(0, 1, 3)))
    with pytest.raises(ValueError, match="coordinate axes"):
        m(torch.randn(2, 1, 4), (torch.linspace(0, 1, 3),))
    with pytest.raises(ValueError, match="points"):
        m.forward_points(torch.randn(2, 1, 4), torch.rand(3, 5, 2))


# ----------------------------------------------------------------------------- training


def _relative_l2(pred, true):
    return ((pred - true).flatten(1).norm(dim=1) / true.flatten(1).norm(dim=1)).mean()


# ----------------------------------------------------------------------------- trunk features, sequence branch


def test_coord_scale_is_a_change_of_units():
    """A DeepONet with ``coord_scale`` on points in seconds is the same network on points in scaled units."""
    torch.manual_seed(0)
    scaled = DeepONet(3, 2, branch_layers=[8], trunk_layers=[8], latent=4, coord_scale=[1000.0, 2.0])
    plain = DeepONet(3, 2, branch_layers=[8], trunk_layers=[8], latent=4)
    plain.load_state_dict(scaled.state_dict())
    x = torch.randn(5, 1, 3)
    t, s = torch.linspace(0, 0.01, 7), torch.linspace(0, 1, 4)
    assert torch.allclose(scaled(x, (t, s)), plain(x, (1000 * t, 2 * s)), atol=1e-6)


def test_fourier_features_expand_each_coordinate():
    """The trunk reads ``[y, cos(2 pi f y), sin(2 pi f y)]`` (Borrel-Jensen et al. 2024's expansion)."""
    m = DeepONet(2, 2, branch_layers=[4], trunk_layers=[4], latent=3, fourier_features=[0.5, 2.0])
    assert m.trunk[0].in_features == 2 * (1 + 2 * 2)
    y = torch.tensor([[0.25, 1.0]])
    z = torch.tensor([[0.5 * 0.25, 0.5 * 1.0, 2.0 * 0.25, 2.0 * 1.0]]) * 2 * math.pi
    assert torch.allclose(m._embed(y), torch.cat([y, torch.cos(z), torch.sin(z)], dim=-1), atol=1e-6)
    with pytest.raises(ParameterError, match="coord_scale must be a list of 2 finite numbers"):
        DeepONet(2, 2, coord_scale=[1.0])
    with pytest.raises(ParameterError, match="fourier_features"):
        DeepONet(2, 2, fourier_features=[float("nan")])


@pytest.mark.parametrize("branch", ["gru", "tcn"])
def test_sequence_branch_reads_channels_over_time(branch):
    """The branch sees ``[B, C_in, T]`` as ``C_in`` signals of length ``T``: permuting the time steps
    of one channel changes the answer (a flat MLP would too, but a GRU/TCN answer depends on the
    order), and the grid and point forms agree."""
    torch.manual_seed(0)
    m = SeqDeepONet(n_sensors=3 * 20, in_channels=3, out_channels=2, branch=branch, hidden=8, branch_depth=2,
                    trunk_layers=[8], latent=4)
    x = torch.randn(4, 3, 20)
    t = torch.linspace(0, 1, 11)
    y = m(x, (t,))
    assert y.shape == (4, 2, 11)
    assert torch.allclose(m.forward_points(x, t[:, None]), y, atol=1e-5)
    flipped = x.clone()
    flipped[:, 0] = flipped[:, 0].flip(-1)
    assert (m(flipped, (t,)) - y).abs().max() > 1e-3 * y.abs().max()
    with pytest.raises(ParameterError, match="not in_channels=3 x a sequence length"):
        SeqDeepONet(n_sensors=61, in_channels=3)


@pytest.mark.parametrize(
    "make, steps",
    [
        # DeepXDE's antiderivative net at m = 50 sensors (ReLU, p = 40)
        (lambda: DeepONet(50, 1, branch_layers=[40], trunk_layers=[40], latent=40, activation="relu"), 300),
        (lambda: MultiONet(50, 1, width=64, depth=3, activation="tanh"), 500),
        # the running integral is a causal sequence map: a GRU branch reads it in order
        (lambda: SeqDeepONet(50, 1, branch="gru", hidden=64, branch_depth=1, trunk_layers=[40], latent=40), 300),
    ],
    ids=["deeponet", "multionet", "seq_deeponet"],
)
def test_short_training_on_antiderivative(make, steps, one_thread):
    x, y = create_problem("antiderivative", resolution=50).generate(range(200), seed=0)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    coords = (torch.linspace(0, 1, 50),)
    x_train, y_train, x_test, y_test = x[:150], y[:150], x[150:], y[150:]
    torch.manual_seed(0)
    m = make()
    with torch.no_grad():
        before = float(_relative_l2(m(x_test, coords), y_test))
    optimizer = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        _relative_l2(m(x_train, coords), y_train).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(_relative_l2(m(x_test, coords), y_test))
    assert after < before / 5, (before, after)
    assert after < 0.2, (before, after)
