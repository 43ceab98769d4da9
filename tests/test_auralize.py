"""Moving sources and WAV files from a room operator (:mod:`oplab.auralize`).

The assembly is checked with a stand-in operator that answers with the FDTD solver's own
single-pulse responses: by linearity and time invariance its sum over the released pulses must
equal the solver's direct run of the moving source (:meth:`RoomAcoustics.moving_source`), up to the
free-field formula used for lags shorter than the operator's first record time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from oplab import auralize
from oplab.data.normalize import ChannelNormalizer
from oplab.errors import OplabError, ParameterError
from oplab.problems import create


class _SolverModel(torch.nn.Module):
    """``forward_points`` of a DeepONet, answered by the FDTD solver (every row: one receiver)."""

    def __init__(self, problem):
        super().__init__()
        self.problem = problem

    def forward_points(self, x, points):
        out = []
        for source, q in zip(x[:, 0].double().numpy(), points.double().numpy()):
            order = np.argsort(q[:, 0])
            p = self.problem.impulse_response(source, q[:1, 1:], q[order, 0])[:, 0]
            row = np.empty_like(p)
            row[order] = p
            out.append(row)
        return torch.tensor(np.array(out))[:, None]


class _Op:
    """What :mod:`oplab.auralize` reads of a Predictor, with the solver as its model."""

    def __init__(self, problem):
        self.problem = problem
        self.data = {"problem": "room_acoustics", "params": dict(problem.params)}
        self.out_axes = problem.output_axes()
        self.run_dir = "stand-in"
        self.device = torch.device("cpu")
        self.bundle = torch.nn.Module()
        self.bundle.model = _SolverModel(problem)
        self.bundle.in_norm = ChannelNormalizer(1).set(torch.zeros(1), torch.ones(1) - 1e-6)
        self.bundle.out_norm = ChannelNormalizer(1).set(torch.zeros(1), torch.ones(1) - 1e-6)


@pytest.fixture(scope="module")
def room():
    # 1 m x 1 m, coarse FDTD grid: each single-pulse run takes milliseconds
    return create("room_acoustics", resolution=11, lx=1.0, ly=1.0, sigma=0.1, cells_per_metre=50.0,
                  t_end=0.004, record_every=0.0005, margin=0.2)


def test_moving_source_equals_the_solvers_direct_run(room):
    path_times = [0.0, 0.001]
    path = np.array([[0.3, 0.4], [0.6, 0.5]])
    weights = [1.0, -0.5]
    receiver = np.array([0.7, 0.3])
    times = np.arange(1, 9) * 0.0005
    direct = room.moving_source(path_times, path, weights, receiver[None], times)
    op = _Op(room)
    assembled = auralize.moving_source(op, direct.emit_times, direct.emit_points, direct.emit_weights, receiver, times)
    scale = np.abs(direct.pressure).max()
    assert scale > 0.05
    # the lags shorter than the first record use the free-field pulse, not the solver: their
    # discretisation error (4e-4 of the peak here) is what separates the two
    assert np.abs(assembled - direct.pressure[:, 0]).max() < 2e-3 * scale  # measured 4e-4


def test_static_source_wav(room, tmp_path):
    op = _Op(room)
    out = tmp_path / "room.wav"
    result = auralize.auralize(op, [0.7, 0.3], [0.4, 0.4], out, rate=8000, seconds=0.05)
    rate, pcm = wavfile.read(out)
    assert rate == 8000 and pcm.dtype == np.int16
    # the dry sound convolved with a response of t_end = 4 ms at 8 kHz
    assert len(pcm) == int(0.05 * 8000) + len(np.arange(0.0, 0.004, 1 / 8000)) - 1
    assert np.abs(pcm).max() == round(0.9 * 32767)
    assert result["moving"] is False
    with pytest.raises(OplabError, match="already exists"):
        auralize.auralize(op, [0.7, 0.3], [0.4, 0.4], out, rate=8000, seconds=0.05)


def test_bad_points(room):
    op = _Op(room)
    with pytest.raises(ParameterError, match="outside the room"):
        auralize.receiver_responses(op, [[0.5, 0.5]], [1.5, 0.5], [0.001])
    with pytest.raises(ParameterError, match=r"outside the sources the operator was trained on \(0.2 m from the "
                                             r"walls\): x must be in \[0.2, 0.8\]"):
        auralize.receiver_responses(op, [[0.1, 0.5]], [0.5, 0.5], [0.001])
    with pytest.raises(ParameterError, match="expected 2 finite coordinates"):
        auralize.receiver_responses(op, [[0.5, 0.5]], [0.5], [0.001])


def test_dry_sound_is_deterministic():
    a, b = auralize.dry_sound(8000, 0.2, seed=3), auralize.dry_sound(8000, 0.2, seed=3)
    assert np.array_equal(a, b) and np.abs(a).max() == pytest.approx(1.0)
