"""CFDBench's protocol: static (conditioning) channels carried by an autoregressive bundle, the
metrics of Luo, Chen & Zhang 2023 (section 4.6) computed by hand, and the suite definitions."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import oplab
from oplab import bench
from oplab.data.format import read_meta
from oplab.data.generation import generate
from oplab.errors import DataFileError, ParameterError
from oplab.eval.cfdbench import cfdbench_scores, frame_scores
from oplab.predictor import Bundle
from oplab.train.data import GridData


class _Affine(torch.nn.Module):
    """A fixed map for exact expectations: ``y = scale * x[:, keep]`` (no parameters to learn)."""

    def __init__(self, keep, scale=1.0):
        super().__init__()
        self.keep, self.scale = list(keep), scale
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, coords):
        return self.scale * x[:, self.keep] + 0 * self.dummy


def _trajectories(n=3, t=4, size=6, seed=0):
    """``GridData`` of trajectories with channels u, v, mask (a solid block), speed (constant)."""
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(n, t + 1, 4, size, size, generator=g, dtype=torch.float64).float()
    mask = torch.ones(size, size)
    mask[2:4, 2:4] = 0.0
    states[:, :, 2] = mask
    states[:, :, 3] = torch.arange(1.0, n + 1).view(n, 1, 1, 1)
    coords = (torch.linspace(0, 1, size), torch.linspace(0, 1, size))
    data = GridData(x=states[:, 0], y=states[:, 1:].flatten(1, 2), in_coords=coords, out_coords=coords,
                    periodic=(False, False), n_times=t, resolution=size, static=(2, 3))
    return data, states


def test_bundle_carries_static_channels_and_predicts_the_others():
    """The model answers u, v only; every output state takes mask and speed from the input's last
    state, in the state's channel order, for a window of 2 and a bundle of 3."""
    model = _Affine(keep=[4, 5] * 3, scale=2.0)  # the last state's u, v, doubled, three times
    bundle = Bundle(model, in_channels=8, out_channels=6, static=(2, 3), state_channels=4)
    x = torch.randn(5, 8, 6, 6)
    y = bundle(x, None)
    assert y.shape == (5, 12, 6, 6)
    states = y.unflatten(1, (3, 4))
    for k in range(3):
        assert torch.equal(states[:, k, 2:], x[:, 6:])  # carried exactly
        assert torch.allclose(states[:, k, :2], 2.0 * x[:, 4:6])  # predicted
    assert torch.equal(bundle.dynamic_part(y), states[:, :, :2].flatten(1, 2))


def test_metrics_match_hand_computation_and_ignore_solid_cells():
    """A model that doubles the previous velocity: CFDBench's MSE, RMSE, MAE and NMSE per frame
    computed with numpy; garbage the model writes into solid cells changes nothing (masked)."""
    data, states = _trajectories()
    model = _Affine(keep=[0, 1], scale=2.0)
    bundle = Bundle(model, 4, 2, static=(2, 3), state_channels=4)
    got = cfdbench_scores(bundle, data, velocity=[0, 1], mask=2)
    s = states.double().numpy()
    m = s[:, :, 2:3]
    truth = s[:, 1:, :2] * m[:, 1:]
    pred = 2.0 * s[:, :-1, :2] * m[:, 1:]
    mse = ((pred - truth) ** 2).reshape(3, 4, -1).mean(-1)
    nmse = mse / (truth**2).reshape(3, 4, -1).mean(-1)
    assert got["one_step"]["mse"] == pytest.approx(mse.mean(), rel=1e-5)
    assert got["one_step"]["rmse"] == pytest.approx(np.sqrt(mse).mean(), rel=1e-5)
    assert got["one_step"]["mae"] == pytest.approx(np.abs(pred - truth).reshape(3, 4, -1).mean(-1).mean(), rel=1e-5)
    assert got["one_step"]["nmse"] == pytest.approx(nmse.mean(), rel=1e-5)
    ident = (((s[:, :-1, :2] - s[:, 1:, :2]) * m[:, 1:]) ** 2).reshape(3, 4, -1).mean(-1)
    assert got["identity"]["mse"] == pytest.approx(ident.mean(), rel=1e-5)
    # the rollout doubles the first frame again at every step: u_k = 2^k u_0
    roll = np.stack([2.0 ** (k + 1) * s[:, 0, :2] for k in range(4)], 1) * m[:, 1:]
    rmse = ((roll - truth) ** 2).reshape(3, 4, -1).mean(-1)
    assert got["rollout"]["mse"] == pytest.approx(rmse.mean(), rel=1e-5)
    assert got["rollout"]["nmse_per_step"] == pytest.approx((rmse / (truth**2).reshape(3, 4, -1).mean(-1)).mean(0), rel=1e-5)
    assert got["cases"] == 3 and got["frames"] == 12

    class Noisy(_Affine):  # the same answer plus large values inside the solid block
        def forward(self, x, coords):
            y = super().forward(x, coords).clone()
            y[..., 2:4, 2:4] = 1e3
            return y

    again = cfdbench_scores(Bundle(Noisy([0, 1], 2.0), 4, 2, (2, 3), 4), data, velocity=[0, 1], mask=2)
    assert again["one_step"] == pytest.approx(got["one_step"], rel=1e-6)


def test_identity_model_scores_as_the_identity_row():
    """A model that returns its input: the one-step scores equal the identity row, and a rollout
    that never moves scores the first frame against every later one."""
    data, _ = _trajectories(seed=1)
    bundle = Bundle(_Affine(keep=[0, 1]), 4, 2, static=(2, 3), state_channels=4)
    got = cfdbench_scores(bundle, data, velocity=[0, 1], mask=2)
    assert got["one_step"] == pytest.approx(got["identity"], rel=1e-6)
    assert got["rollout"]["nmse_per_step"][0] == pytest.approx(
        float(frame_scores(*(t[:, :2] * t[:, 2:3] for t in (data.states()[:, 0], data.states()[:, 1])))["nmse"].mean()),
        rel=1e-5)


def test_static_channels_in_files_and_an_autoregressive_run(tmp_path):
    """A generated CFD set records its static channels; an autoregressive run on it predicts u and
    v only (the model's output channels), its rollouts keep mask and case parameters exactly, and
    its training loss falls."""
    path = tmp_path / "tube.h5"
    generate(oplab.problems.create("tube", 16, t_end=0.4, refine=4), 8, path, seed=0, workers=1)
    meta = read_meta(path)
    assert meta["static_channels"] == ["mask", "speed", "density", "viscosity", "height", "width"]
    torch.manual_seed(0)
    result = oplab.train.api.train(
        oplab.models.create("fno", in_channels=8, out_channels=2, modes=[4, 4], width=8), str(path),
        out=tmp_path / "run", n_train=6, n_test=2, task="autoregressive", epochs=10, batch_size=6, lr=5e-3,
        log=lambda *_: None)
    assert result["history"][-1]["train_loss"] < 0.6 * result["history"][0]["train_loss"]  # 0.41x seen
    op = oplab.load(tmp_path / "run")
    assert op.bundle.static == (2, 3, 4, 5, 6, 7) and op.bundle.model.config["out_channels"] == 2
    x, _ = oplab.data.open(path).arrays([7])
    roll = op.rollout(x[:, None], 3)
    assert roll.shape == (1, 3, 8, 16, 16)
    assert all(np.array_equal(roll[0, k, 2:], x[0, 2:]) for k in range(3))
    # a model sized for whole states, or a ResNet skip over two states: one line, nothing written
    for model, extra in ((oplab.models.create("fno", in_channels=8, out_channels=8, modes=[4, 4], width=8), {}),
                         (oplab.models.create("resnet", in_channels=16, out_channels=2, input_skip=True), {"window": 2})):
        with pytest.raises(ParameterError, match="out_channels must be 2|input_skip") as err:
            oplab.train.api.train(model, str(path), out=tmp_path / "bad", n_train=6, n_test=2, task="autoregressive",
                                  epochs=1, log=lambda *_: None, **extra)
        assert "\n" not in str(err.value) and not (tmp_path / "bad").exists()
    # a file of an earlier version, without the attribute, has no static channels
    with h5py.File(path, "a") as f:
        del f.attrs["static_channels"]
    assert read_meta(path)["static_channels"] == []
    for bad in ('["pressure"]', '["mask", "mask"]', '["u", "v", "mask", "speed", "density", "viscosity", "height", "width"]'):
        with h5py.File(path, "a") as f:
            f.attrs["static_channels"] = bad
        with pytest.raises(DataFileError, match="static_channels"):
            read_meta(path)


def test_cfdbench_suites_validate_and_protocol_needs_an_autoregressive_case(tmp_path):
    for name in ("cfdbench", "cfdbench-cpu"):
        suite = bench.load_suite(name)
        assert {c.protocol for c in suite.cases} == {"cfdbench"}
        keys = {(d["problem"], d["params"]["subset"]) for d in suite.datasets.values()}
        assert keys == {(p, s) for p in ("cavity", "tube", "dam", "cylinder", "barrier") for s in ("bc", "prop", "geo")}
        for c in suite.cases:  # an 80/10/10 split by case
            n = suite.datasets[c.dataset]["n"]
            assert (c.n_train - c.n_val, c.n_val, c.n_test) == (8 * n // 10, n // 10, n // 10)
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  h: {problem: heat, n: 4}\ncases:\n  - {name: a, dataset: h, model: fno, protocol: cfdbench}\n")
    with pytest.raises(ParameterError, match="protocol cfdbench.*autoregressive"):
        bench.load_suite(bad)
