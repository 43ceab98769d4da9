"""Trajectory data sets end to end: Navier-Stokes and Burgers trajectories through
generation -- progress that moves within a chunk (in this process and from pool
workers), resumption after an interruption in the middle of a chunk with the same
bits, the stored layout (inputs = the state at t = 0, outputs [N, T, C, *S] at the
times in /grid/times) and `oplab data info` showing the time grid."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from typer.testing import CliRunner

from oplab import problems
from oplab.cli import app
from oplab.data import format as fmt
from oplab.data import generation
from oplab.data.generation import generate

# 16^2, ifrk4 with a fixed step: 500 steps per chunk of 32, about a second
NS = dict(resolution=16, solve_resolution=16, t_end=1.0, record_every=0.25, dt=2e-3)


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_progress_moves_within_a_chunk(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(generation, "PROGRESS_INTERVAL", 0.0)  # report every step
    prob = problems.create("navier_stokes", **NS)
    assert prob.chunk_size == 32
    seen = []
    out = generate(prob, 40, tmp_path / "a.h5", seed=1, progress=lambda d, t: seen.append((d, t)))
    done = np.array([d for d, _ in seen])
    assert {t for _, t in seen} == {40}
    assert done[0] == 0 and done[-1] == 40 and np.all(np.diff(done) >= 0)
    fractional = done[done != np.round(done)]
    assert len(fractional) > 100  # every step of both chunks
    assert np.all((0 < fractional) & (fractional < 40))
    assert 32 in done  # the first chunk saved: a whole number again
    plain = generate(prob, 40, tmp_path / "b.h5", seed=1)
    assert sha(out) == sha(plain)  # reporting changes nothing


def test_interrupted_in_a_chunk_resumes_with_the_same_bits(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(generation, "PROGRESS_INTERVAL", 0.0)
    prob = problems.create("navier_stokes", **NS)
    ref = generate(prob, 40, tmp_path / "ref.h5", seed=2)
    out = tmp_path / "cut.h5"

    def stop_in_second_chunk(done, total):
        if done > 34:  # chunk 0 (32 samples) saved, chunk 1 (8) a quarter done
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(prob, 40, out, seed=2, progress=stop_in_second_chunk)
    assert not out.exists()
    assert len(list((tmp_path / "cut.h5.parts").glob("chunk_*.npz"))) == 1
    seen = []
    generate(prob, 40, out, seed=2, progress=lambda d, t: seen.append(d))
    assert seen[0] == 32  # resumed, not restarted
    assert sha(out) == sha(ref)


def test_pool_workers_report_partial_progress(tmp_path, one_thread):
    """Two spawned workers, one chunk each (1000 steps, well over the 0.25 s between two
    reports): their fractions reach the caller through the pool's queue; the file equals
    the one made in this process."""
    prob = problems.create("navier_stokes", **{**NS, "dt": 1e-3})
    seen = []
    two = generate(prob, 64, tmp_path / "two.h5", seed=3, workers=2, progress=lambda d, t: seen.append(d))
    fractional = [d for d in seen if d != int(d)]
    assert fractional and all(0 < d < 64 for d in fractional)
    assert seen[-1] == 64 and np.all(np.diff(seen) >= 0)
    one = generate(prob, 64, tmp_path / "one.h5", seed=3)
    assert sha(one) == sha(two)


@pytest.mark.parametrize("name,params,times", [
    ("navier_stokes", NS, [0.25, 0.5, 0.75, 1.0]),
    ("burgers", {"resolution": 64, "trajectory": True, "n_times": 4, "t_end": 0.5}, [0.125, 0.25, 0.375, 0.5]),
])
def test_trajectory_layout_and_data_info(tmp_path, name, params, times, one_thread):
    prob = problems.create(name, **params)
    resolution = params["resolution"]
    out = generate(prob, 3, tmp_path / f"{name}.h5", seed=0)
    meta = fmt.read_meta(out)
    np.testing.assert_allclose(meta["times"], times)
    spatial = (resolution,) * (2 if name == "navier_stokes" else 1)
    assert meta["shapes"]["inputs"] == (3, 1, *spatial)  # the state at t = 0
    assert meta["shapes"]["outputs"] == (3, len(times), 1, *spatial)
    result = CliRunner().invoke(app, ["data", "info", str(out)])
    assert result.exit_code == 0, result.output
    assert f"4 records, t = {times[0]:g} .. {times[-1]:g}" in result.output


def test_generate_command_with_a_preset(tmp_path):
    out = tmp_path / "ns.h5"
    result = CliRunner().invoke(app, ["generate", "navier_stokes", "--n", "2", "--resolution", "16",
                                      "--param", "t_end=0.5", "--param", "record_every=0.25",
                                      "--param", "preset=default", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ifrk4" in fmt.read_meta(out)["solver"]
