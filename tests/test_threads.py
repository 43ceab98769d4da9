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
    torch.set_num_threads(1)
    with threads.using(0, lines.append) as n:  # the environment's choice, no measurement
        assert n == 1


def test_busy_cores_measures_this_machine():
    busy = threads.busy_cores(0.05)
    assert busy is None or 0.0 <= busy <= threads.cores() + 0.5
