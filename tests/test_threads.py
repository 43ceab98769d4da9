"""The training process's thread count (:mod:`oplab.train.threads`): the free cores by default,
the user's number when given, OMP_NUM_THREADS respected, and the process's own count restored."""

from __future__ import annotations

import torch

from oplab.train import threads


def test_free_cores_are_taken_and_busy_ones_reported(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 4)
    lines = []
    monkeypatch.setattr(threads, "busy_cores", lambda: 2.6)  # another program holds 2.6 cores
    before = torch.get_num_threads()
    with threads.using(0, lines.append) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before  # given back
    assert lines == ["threads: other programs are using 2.6 of 4 cores; training with 1 thread(s) (--threads N to choose)"]
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.1)
    lines.clear()
    with threads.using(0, lines.append) as n:
        assert n == 4 and not lines
    monkeypatch.setattr(threads, "busy_cores", lambda: None)  # no /proc/stat: all the cores
    with threads.using(0, lines.append) as n:
        assert n == 4


def test_the_users_number_stands(monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda: 1.5)
    lines = []
    with threads.using(3, lines.append) as n:
        assert n == 3 and torch.get_num_threads() == 3
    assert lines[0] == "threads: 3 asked for, this process may use 2 cores; expect slower epochs"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threads.using(0, lines.append) as n:  # the environment's choice, no measurement
            assert n == 1
    finally:
        torch.set_num_threads(before)


def test_busy_cores_measures_this_machine():
    busy = threads.busy_cores(0.05)
    assert busy is None or 0.0 <= busy <= threads.cores() + 0.5


def test_the_chosen_count_is_recorded_for_resume(tmp_path, monkeypatch):
    """A run records the count it chose (``train.threads`` in config.json), so that ``--resume`` replays
    the epochs with the same count whatever the machine's load is then."""
    import json

    from oplab import problems
    from oplab.data.generation import generate
    from oplab.train import config as tc
    from oplab.train import run

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda: 1.0)
    data = generate(problems.create("antiderivative", resolution=20), 12, tmp_path / "a.h5")
    raw = {"data": {"train": str(data), "n_train": 8, "n_test": 4, "n_val": 0}, "model": {"name": "deeponet"},
           "train": {"epochs": 1, "plot_samples": 0}, "out": str(tmp_path / "run")}
    before = torch.get_num_threads()
    run(tc.from_dict(raw), log=lambda s: None)
    assert torch.get_num_threads() == before
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["threads"] == 1


def test_fastest_picks_the_count_whose_step_is_shorter():
    import time as _time

    before = torch.get_num_threads()
    try:
        slow_when_many = lambda: _time.sleep(0.004 if torch.get_num_threads() > 1 else 0.0)  # noqa: E731
        best, medians = threads.fastest(slow_when_many, [2, 1], repeats=3, warmup=1)
        assert best == 1 and torch.get_num_threads() == 1 and medians[2] > medians[1] + 0.003
        slow_when_one = lambda: _time.sleep(0.004 if torch.get_num_threads() == 1 else 0.0)  # noqa: E731
        assert threads.fastest(slow_when_one, [2, 1], repeats=3, warmup=1)[0] == 2
        # a larger count must be faster by more than the margin: a near tie goes to fewer threads
        near_tie = lambda: _time.sleep(0.0100 if torch.get_num_threads() > 1 else 0.0105)  # noqa: E731
        best, medians = threads.fastest(near_tie, [2, 1], repeats=3, warmup=1)
        assert best == 1 and medians[2] < medians[1]
    finally:
        torch.set_num_threads(before)


def test_small_models_are_timed_and_the_users_settings_are_not(monkeypatch):
    """A small one-shot map gets the faster of one thread and the free cores; OMP_NUM_THREADS, a large
    model or a task other than a plain map keep the count they were given."""
    from oplab.models.deeponet import DeepONet
    from oplab.train import api
    from oplab.train.config import TrainConfig
    from oplab.train.data import GridData

    x, grid = torch.randn(8, 1, 10), torch.linspace(0, 1, 10)
    train = GridData(x=x, y=x.cumsum(-1), in_coords=(grid,), out_coords=(grid,), periodic=(False,), n_times=None,
                     resolution=10)
    model = DeepONet(n_sensors=10, coord_dim=1, branch_layers=[8], trunk_layers=[8], latent=8, activation="relu")
    cfg = TrainConfig(batch_size=8)
    picked = []
    monkeypatch.setattr(threads, "fastest", lambda step, counts, **kw: (step(), picked.append(counts), (1, {1: 1e-3, 2: 2e-3}))[-1])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    lines = []
    assert api._small_model_threads(model, train, cfg, 2, lines.append) == 1 and picked == [[2, 1]]
    assert "on one thread against" in lines[0]
    assert all(not p.grad_fn for p in model.parameters()) and all(p.grad is None for p in model.parameters())
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert api._small_model_threads(model, train, cfg, 2, lines.append) == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert api._small_model_threads(model, train, TrainConfig(task="autoregressive"), 2, lines.append) == 2
    monkeypatch.setattr(api, "SMALL_MODEL", 100)
    assert api._small_model_threads(model, train, cfg, 2, lines.append) == 2 and len(picked) == 1
