"""Time-dependent operators: autoregressive training, rollouts and streamed data.

The heat equation (:mod:`oplab.problems.heat`, solved exactly) is the linear check: its
one-step map is a Fourier multiplier, so an operator that is that multiplier must roll
out to the exact trajectory, and a multiplier learned by teacher forcing must roll out
nearly exactly. The pushforward trick's gradient is checked against a hand computation
on a one-parameter model; a streamed set trains to the same bits as one held in memory.
"""

import json

import numpy as np
import pytest
import torch
from torch import nn

from oplab import problems
from oplab.cli import main
from oplab.data.generation import generate
from oplab.errors import OplabError, ParameterError
from oplab.eval.rollout import rollout, rollout_errors, time_to_threshold
from oplab.problems.heat import heat_multiplier
from oplab.train import Trainer, resume_run, run
from oplab.train import config as tc
from oplab.train.data import Part, plan, prepare

NU, DT, N = 0.02, 0.1, 32
SMALL_FNO = {"name": "fno", "modes": [8], "width": 12, "n_layers": 2, "lifting_channels": 16,
             "projection_channels": 16}


@pytest.fixture(scope="module")
def heat(tmp_path_factory):
    path = tmp_path_factory.mktemp("heat") / "heat.h5"
    generate(problems.create("heat", resolution=N, nu=NU, t_end=1.0, record_every=DT), 40, path, seed=0)
    return path


class Multiplier(nn.Module):
    """``u -> irfft(m * rfft(u))`` of the last state in the window: a Fourier multiplier per mode,
    learnable (initialised to ``init``)."""

    def __init__(self, init):
        super().__init__()
        self.m = nn.Parameter(torch.as_tensor(init, dtype=torch.float32).clone())

    def forward(self, x, coords):
        last = x[:, -1:]
        return torch.fft.irfft(torch.fft.rfft(last) * self.m, n=x.shape[-1])


def quiet(text):
    pass


def cfg(data, out, epochs=3, **train):
    raw = {"data": {"train": str(data), "n_train": 32, "n_test": 8},
           "model": dict(SMALL_FNO), "out": str(out),
           "train": {"epochs": epochs, "batch_size": 16, "lr": 5e-3, "eval_every": 1, "task": "autoregressive",
                     **train}}
    return tc.from_dict(raw)


def test_the_exact_one_step_operator_rolls_out_to_the_exact_trajectory(heat):
    data = Part(str(heat), None, None).load()
    states = data.states()  # [N, 11, 1, n]: u0 and the ten records
    assert states.shape == (40, 11, 1, N)
    exact = Multiplier(heat_multiplier(N, NU, DT))
    coords = tuple(data.out_coords)
    with torch.no_grad():
        pred = rollout(exact, states[:, :1], 10, coords, window=1)
    assert torch.allclose(pred, states[:, 1:], rtol=0, atol=1e-5 * states.abs().max().item())
    report = rollout_errors(exact, data, window=1, device="cpu")
    assert max(report["per_step"]) < 1e-5 and report["l2"] < 1e-5
    assert report["times"] == list(range(1, 11)) and len(report["nmse"]) == 10
    # a wrong multiplier (a tenth too little decay per step) accumulates its error step after step
    wrong = Multiplier(heat_multiplier(N, NU, 0.9 * DT))
    errors = rollout_errors(wrong, data, window=1, device="cpu")["per_step"]
    assert all(b > a for a, b in zip(errors, errors[1:]))
    assert time_to_threshold(errors, list(range(1, 11)), errors[4]) == 6


def test_a_multiplier_learned_by_teacher_forcing_rolls_out_nearly_exactly(heat):
    split = plan(tc.DataConfig(train=str(heat), n_train=32, n_test=8, n_val=0))
    data = prepare(split)
    model = Multiplier(np.ones(N // 2 + 1))
    conf = tc.TrainConfig(epochs=60, batch_size=32, lr=2e-2, scheduler="none", loss="mse", normalize=False,
                          task="autoregressive", eval_every=60, checkpoint_seconds=0)
    Trainer(model, data.train, conf, log=quiet).fit()
    exact = heat_multiplier(N, NU, DT)
    assert np.abs(model.m.detach().numpy()[1:6] - exact[1:6]).max() < 1e-4  # the modes the data excite (zero mean)
    report = rollout_errors(model, data.tests[str(N)], window=1, device="cpu")
    assert report["l2"] < 2e-3, report["per_step"]


class Scale(nn.Module):
    """``u -> a u`` with one parameter ``a``."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))

    def forward(self, x, coords):
        return self.a * x


@pytest.mark.parametrize("pushforward", [False, True])
def test_the_unrolled_and_pushforward_gradients_match_a_hand_computation(heat, pushforward):
    split = plan(tc.DataConfig(train=str(heat), n_train=8, n_test=2, n_val=0))
    train = prepare(split).train
    a = 0.7
    conf = tc.TrainConfig(task="autoregressive", unroll=2, pushforward=pushforward, loss="mse", normalize=False)
    trainer = Trainer(Scale(a), train, conf, log=quiet)
    positions = torch.tensor([0, 3, 12])
    loss, size = trainer.task.loss(trainer, trainer.bundle, positions, tuple(train.out_coords),
                                   free=1 if pushforward else None)
    loss.backward()
    frames = trainer.task.frames(positions).double()  # [3, 3, 1, n]
    u0, u1, u2 = frames[:, 0], frames[:, 1], frames[:, 2]
    mean = lambda e: e.square().mean(dim=(1, 2))  # noqa: E731  mse on the periodic grid: the mean over points
    if pushforward:  # loss = mse(a * x1, u2) with x1 = a u0 held fixed: d/da = 2 mean((a x1 - u2) x1)
        x1 = a * u0
        want_loss = mean(a * x1 - u2).mean()
        want_grad = (2 * ((a * x1 - u2) * x1).mean(dim=(1, 2))).mean()
    else:  # loss = (mse(a u0, u1) + mse(a^2 u0, u2)) / 2, differentiated through both steps
        want_loss = (mean(a * u0 - u1) + mean(a * a * u0 - u2)).mean() / 2
        want_grad = (((a * u0 - u1) * u0).mean(dim=(1, 2)) + ((a * a * u0 - u2) * 2 * a * u0).mean(dim=(1, 2))).mean()
    assert size == 3
    if pushforward:  # the curriculum: no free step in epoch 0, then up to min(epoch, unroll - 1)
        assert {trainer.task.draw_free_steps(0) for _ in range(20)} == {0}
        assert {trainer.task.draw_free_steps(3) for _ in range(40)} == {0, 1}
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5)
    grad = trainer.bundle.model.a.grad.item()
    assert grad == pytest.approx(want_grad.item(), rel=1e-4)


def test_autoregressive_training_evaluates_rollouts_and_resumes_to_the_same_bits(heat, tmp_path, capsys):
    straight = run(cfg(heat, tmp_path / "straight", epochs=4, window=2, bundle=2, unroll=2, pushforward=True,
                       checkpoint_seconds=0), log=quiet)
    lines = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["test"]["32"]["l2"] < lines[0]["test"]["32"]["l2"]  # it learns
    assert (tmp_path / "straight" / "rollout.gif").stat().st_size > 0
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["data"]["train_input_shape"] == [2, N] and config["data"]["train_output_shape"] == [2, N]

    def crash(line):
        if line.startswith("epoch    1"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg(heat, tmp_path / "cut", epochs=4, window=2, bundle=2, unroll=2, pushforward=True, checkpoint_seconds=0),
            log=crash)
    resumed = resume_run(tmp_path / "cut", log=quiet)
    for key, value in straight["bundle"].state_dict().items():
        assert torch.equal(value, resumed["bundle"].state_dict()[key]), key

    # oplab.load: one step answers the next two states; rollout() applies it again and again
    import oplab

    op = oplab.load(tmp_path / "straight")
    states = Part(str(heat), [32, 33], None).load().states()  # [2, 11, 1, n]
    assert op(states[:, :2].flatten(1, 2)).shape == (2, 2, 1, N)
    rolled = op.rollout(states[:, :2].numpy(), 4)
    assert rolled.shape == (2, 8, 1, N) and isinstance(rolled, np.ndarray)
    with torch.no_grad():
        direct = rollout(op.bundle, states[:, :2], 4, tuple(Part(str(heat), [0], None).load().out_coords), 2, 2)
    np.testing.assert_array_equal(rolled, direct.numpy())
    np.testing.assert_array_equal(op.rollout(states[0, :2], 1), rolled[0, :2])
    with pytest.raises(OplabError, match=r"expected the last 2 states \[2, 1, x\]"):
        op.rollout(states[:, :3], 2)

    # oplab evaluate --rollout: per-step errors, the threshold time, a plot and an animation
    assert main(["evaluate", str(tmp_path / "straight"), "--data", str(heat), "--rollout", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["per_step"]) == 8 and report["t"][0] == pytest.approx(0.2)  # window u0, u(0.1)
    assert report["accumulated"][-1] == pytest.approx(report["l2"])
    assert all((tmp_path / "straight" / "rollout" / f).stat().st_size > 0
               for f in ("rollout.json", "rollout_error.png", "rollout.gif"))
    # six steps of two states after a window of two reach past the 11 states the trajectories hold
    assert main(["evaluate", str(tmp_path / "straight"), "--data", str(heat), "--rollout", "6"]) == 2
    assert "at most 5 step(s)" in capsys.readouterr().err


def test_bad_time_dependent_settings_are_one_clear_line(heat, darcy17, tmp_path, capsys):
    with pytest.raises(ParameterError, match="window 8 \\+ train.unroll 2 x train.bundle 2 = 12 states"):
        run(cfg(heat, tmp_path / "long", window=8, bundle=2, unroll=2), log=quiet)
    with pytest.raises(ParameterError, match="not a trajectory set"):
        run(cfg(darcy17, tmp_path / "darcy"), log=quiet)
    # refused when the Trainer is built (after the run folder was made): no folder is left behind
    with pytest.raises(ParameterError, match="autoregressive training uses the data loss"):
        run(cfg(heat, tmp_path / "physics", physics_weight=1.0), log=quiet)
    assert not (tmp_path / "physics").exists()
    with pytest.raises(ParameterError, match="apply to train.task: autoregressive"):
        tc.TrainConfig(window=3)
    with pytest.raises(ParameterError, match="train.first_state must be >= 0"):
        tc.TrainConfig(task="autoregressive", first_state=-1)
    with pytest.raises(ParameterError, match="pushforward needs train.unroll >= 2"):
        tc.TrainConfig(task="autoregressive", pushforward=True)
    # a one-shot run has no rollout
    one_shot = tc.from_dict({"data": {"train": str(heat), "n_train": 32, "n_test": 8}, "model": dict(SMALL_FNO),
                             "train": {"epochs": 1}, "out": str(tmp_path / "map")})
    run(one_shot, log=quiet)
    assert main(["evaluate", str(tmp_path / "map"), "--data", str(heat), "--rollout", "3"]) == 2
    assert "a one-shot model (train.task: map) has no rollout" in capsys.readouterr().err


def test_a_streamed_set_trains_to_the_same_bits_as_one_in_memory(darcy17, tmp_path, monkeypatch):
    def train(in_memory, name, plots=3, **data):
        raw = {"data": {"train": str(darcy17), "n_train": 40, "n_test": 8, "in_memory": in_memory, **data},
               "model": {"name": "fno", "modes": [5, 5], "width": 8, "n_layers": 2, "lifting_channels": 8,
                         "projection_channels": 8},
               "train": {"epochs": 2, "batch_size": 8, "eval_every": 1, "plot_samples": plots},
               "out": str(tmp_path / name)}
        lines = []
        return run(tc.from_dict(raw), log=lines.append), lines

    memory, _ = train(True, "memory")
    streamed, log = train(False, "streamed", workers=2)
    assert "streamed from the file" in log[0]
    for key, value in memory["bundle"].state_dict().items():
        assert torch.equal(value, streamed["bundle"].state_dict()[key]), key
    assert memory["history"][-1]["test"] == streamed["history"][-1]["test"]
    # auto streams when the data exceed the memory budget
    monkeypatch.setenv("OPLAB_MEMORY_BUDGET_MB", "0.01")
    _, log = train("auto", "auto", plots=0, workers=0)
    assert "streamed from the file" in log[0]


def test_the_space_time_task_maps_the_first_states_to_all_later_ones(heat, tmp_path, capsys):
    conf = cfg(heat, tmp_path / "st", epochs=40, task="spacetime", window=3, checkpoint_seconds=0, batch_size=8,
               eval_every=10)
    conf.model = {"name": "fno", "modes": [8, 4], "width": 12, "n_layers": 2, "lifting_channels": 16,
                  "projection_channels": 16}
    result = run(conf, log=quiet)
    config = json.loads((tmp_path / "st" / "config.json").read_text())
    assert config["data"]["train_input_shape"] == [3, N, 8] and config["data"]["train_output_shape"] == [1, N, 8]
    tests = [r["test"]["32"]["l2"] for r in result["history"] if "test" in r]
    assert tests[-1] < 0.5 * tests[0]
    assert main(["evaluate", str(tmp_path / "st"), "--data", str(heat), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)["32"]
    assert scored["samples"] == 8 and scored["l2"] < 0.5 * tests[0]
    # the space-time input is the window repeated along time: each time slice is the same
    from oplab.train.tasks import SpaceTime

    states = torch.randn(2, 11, 1, N)
    x = SpaceTime.inputs(states, 3)
    # the FNO paper's protocol starts at the first record (first_state 1): the input u0 is not used
    data = Part(str(heat), [0, 1], None).load()
    assert torch.equal(data.states(1), data.states()[:, 1:]) and data.states(1).shape[1] == 10
    assert x.shape == (2, 3, N, 8) and torch.equal(x[..., 5], states[:, :3].flatten(1, 2))
    assert torch.equal(SpaceTime.targets(states, 3)[..., 2], states[:, 5])
