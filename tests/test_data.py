"""The data set file, the lazy Dataset, and deterministic, resumable generation."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import psutil
import pytest
import torch

from oplab import problems
from oplab.cli import main
from oplab.data import format as fmt
from oplab.data import open as open_data
from oplab.data.generation import generate
from oplab.errors import DataFileError, OplabError, ParameterError


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def darcy33(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "darcy33.h5"
    generate(problems.create("darcy", resolution=33), 12, path, seed=5)
    return path


# ------------------------------------------------------------------ format
def test_file_describes_itself(darcy33):
    meta = fmt.read_meta(darcy33)
    assert meta["problem"] == "darcy" and meta["n"] == 12 and meta["seed"] == 5
    assert meta["params"]["contrast_low"] == 3.0 and meta["solver"].startswith("fd5")
    assert meta["input_channels"] == ["a"] and meta["output_channels"] == ["u"]
    assert meta["shapes"] == {"inputs": (12, 1, 33, 33), "outputs": (12, 1, 33, 33)}
    assert meta["domain"] == {"x": [0.0, 1.0], "y": [0.0, 1.0]}
    with h5py.File(darcy33) as f:
        assert f["inputs"].dtype == np.float32 and f.attrs["complete"]
        assert np.allclose(f["grid/inputs/x"][()], np.linspace(0, 1, 33))
        # the stored samples are the problem's own samples (float32)
        x, y = problems.create("darcy", resolution=33).generate([4], seed=5)
        assert np.array_equal(f["inputs"][4], x[0].astype(np.float32))
        assert np.array_equal(f["outputs"][4], y[0].astype(np.float32))


def test_bad_files_are_refused_with_their_name(tmp_path, darcy33):
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(darcy33.read_bytes()[:3000])
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    incomplete = tmp_path / "incomplete.h5"
    incomplete.write_bytes(darcy33.read_bytes())
    with h5py.File(incomplete, "a") as f:
        f.attrs["complete"] = False
    cases = {text: "not a readable HDF5", truncated: "not a readable HDF5", foreign: "not an oplab data set",
             incomplete: "incomplete", tmp_path / "missing.h5": "no such file"}
    for path, message in cases.items():
        with pytest.raises(DataFileError, match=message) as info:
            fmt.read_meta(path)
        assert str(path) in str(info.value)


# ------------------------------------------------------------------ dataset
def test_dataset_strides_and_splits(darcy33):
    full = open_data(darcy33)
    coarse = open_data(darcy33, resolution=17)
    assert full[3]["x"].shape == (1, 33, 33) and coarse[3]["x"].shape == (1, 17, 17)
    assert torch.equal(coarse[3]["y"], full[3]["y"][:, ::2, ::2])
    assert np.allclose(coarse.input_grid[0], np.linspace(0, 1, 17))
    assert open_data(darcy33, resolution=9)[0]["x"].shape == (1, 9, 9)
    with pytest.raises(ParameterError, match="cannot be strided to 10.*possible resolutions"):
        open_data(darcy33, resolution=10)
    train, test = full.split(n_train=8, n_test=3)
    assert list(train.indices) == list(range(8)) and list(test.indices) == [9, 10, 11]
    a, b = full.split(8, 4, shuffle_seed=1), full.split(8, 4, shuffle_seed=1)
    assert list(a[0].indices) == list(b[0].indices) and not set(a[0].indices) & set(a[1].indices)
    with pytest.raises(ParameterError, match="cannot split 12"):
        full.split(10, 5)
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=4)))
    assert batch["x"].shape == (4, 1, 33, 33) and batch["x"].dtype == torch.float32


def test_paper_strides_of_421():
    axis = problems.create("darcy").input_axes()[0]
    assert [axis.stride_to(r) for r in (421, 211, 141, 85)] == [1, 2, 3, 5]
    periodic = problems.base.Axis("x", 8192, periodic=True)
    assert [periodic.stride_to(r) for r in (1024, 256)] == [8, 32]


# ------------------------------------------------------------------ generation
def test_workers_and_dask_give_identical_files(tmp_path):
    prob = problems.create("darcy", resolution=17)
    one = generate(prob, 9, tmp_path / "one.h5", seed=3)
    two = generate(prob, 9, tmp_path / "two.h5", seed=3, workers=2)
    dask = generate(prob, 9, tmp_path / "dask.h5", seed=3, workers=2, scheduler="local")
    assert sha(one) == sha(two) == sha(dask)
    assert not list(tmp_path.glob("*.parts")) and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "name,resolution,params",
    [
        ("navier_stokes", 16, {"solve_resolution": 32, "t_end": 0.2, "record_every": 0.1, "dt": 0.01}),
        ("burgers", 64, {}),
        ("diffusion_reaction", 20, {}),
    ],
)
def test_batched_and_time_dependent_problems_are_worker_independent(tmp_path, name, resolution, params):
    """Navier-Stokes solves aligned chunks of 8 together: 10 samples are 2 chunks,
    whichever worker takes them; trajectories are stored [N, T, C, *S]."""
    prob = problems.create(name, resolution=resolution, **params)
    one = generate(prob, 10, tmp_path / "one.h5", seed=4)
    two = generate(prob, 10, tmp_path / "two.h5", seed=4, workers=2)
    assert sha(one) == sha(two)
    meta = fmt.read_meta(one)
    assert meta["shapes"]["outputs"] == (10, *prob.output_shape())
    if name == "navier_stokes":
        assert np.allclose(meta["times"], [0.1, 0.2])
        assert open_data(one, resolution=8)[9]["y"].shape == (2, 1, 8, 8)


def test_interrupted_generation_resumes_to_the_same_file(tmp_path):
    prob = problems.create("darcy", resolution=17)
    ref = generate(prob, 10, tmp_path / "ref.h5", seed=1)
    out = tmp_path / "cut.h5"

    def stop_after_four(done, total):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(prob, 10, out, seed=1, progress=stop_after_four)
    assert not out.exists()  # nothing presented as complete
    assert len(list((tmp_path / "cut.h5.parts").glob("chunk_*.npz"))) == 4
    seen = []
    generate(prob, 10, out, seed=1, progress=lambda d, t: seen.append(d))
    assert seen[0] == 4  # resumed, not restarted
    assert sha(out) == sha(ref)


@pytest.mark.parametrize("how", ["kill -9", "ctrl-c"])
def test_interrupted_command_resumes_with_the_same_command(tmp_path, how):
    """kill -9 of the command, or Ctrl-C (SIGINT to its process group), with two
    workers: no orphans, nothing presented as complete, and the same command
    finishes the file identical to an uninterrupted run."""
    out = tmp_path / "cut.h5"
    cmd = [sys.executable, "-m", "oplab", "generate", "darcy", "--n", "60", "--resolution", "129",
           "--seed", "2", "--out", str(out), "--workers", "2"]
    # a shell's background job starts with SIGINT ignored, and children inherit that: give the command
    # the default disposition, as a terminal would (else Ctrl-C is ignored when pytest runs as `cmd &`)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    parts = tmp_path / "cut.h5.parts"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(parts.glob("chunk_*.npz"))) < 3:
        time.sleep(0.01)
    workers = psutil.Process(proc.pid).children(recursive=True)
    if how == "kill -9":
        os.kill(proc.pid, signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if how == "ctrl-c":
        assert proc.returncode == 130 and b"rerun the same command to resume" in err
    # the pool's workers end with their parent instead of computing on as orphans
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    saved = len(list(parts.glob("chunk_*.npz")))
    assert not out.exists() and 3 <= saved < 60
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ref = generate(problems.create("darcy", resolution=129), 60, tmp_path / "ref.h5", seed=2)
    assert sha(out) == sha(ref)
    assert not parts.exists() and not (tmp_path / "cut.h5.lock").exists()


def test_two_commands_on_one_file_are_refused(tmp_path):
    from oplab.data.generation import _Parts

    out = tmp_path / "busy.h5"
    holder = _Parts(out, {})
    holder.lock()
    try:
        with pytest.raises(OplabError, match=r"another oplab process \(PID \d+\) is writing it now"):
            generate(problems.create("darcy", resolution=9), 2, out)
    finally:
        holder.unlock()
    generate(problems.create("darcy", resolution=9), 2, out)


def test_readme_snippet_as_a_plain_script(tmp_path):
    """The README's snippet without a main guard: the spawned workers re-run the
    script, so the caller gets one clear OplabError (not BrokenProcessPool, not the
    lock message); with the guard, or with workers=1, the same script works."""
    out = tmp_path / "d9.h5"
    body = (
        "import oplab\n"
        "p = oplab.problems.create('darcy', resolution=9)\n"
        "{indent}oplab.data.generate(p, n=4, out={out!r}, seed=0, workers={workers})\n"
    )

    def run(name, guard, workers):
        script = tmp_path / name
        text = body.format(indent="    " if guard else "", out=str(out), workers=workers)
        if guard:
            text = text.replace("    oplab.data.generate", "if __name__ == '__main__':\n    oplab.data.generate")
        script.write_text(text)
        return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)

    plain = run("plain.py", guard=False, workers=2)
    assert plain.returncode != 0
    assert "BrokenProcessPool" not in plain.stderr and "another oplab process" not in plain.stderr
    assert plain.stderr.count("Traceback") == 1  # the caller's; the workers leave quietly
    assert plain.stderr.strip().splitlines()[-1] == (
        f"oplab.errors.OplabError: generate(workers=2) is reached from the top level of the script "
        f"{tmp_path / 'plain.py'}, which every worker process re-runs as it starts: put the call under "
        f"`if __name__ == \"__main__\":`, or pass workers=1"
    )
    assert not out.exists()

    guarded = run("guarded.py", guard=True, workers=2)  # resumes the parts folder left above
    assert guarded.returncode == 0, guarded.stderr
    assert len(open_data(out)) == 4
    ref = sha(out)
    out.unlink()
    single = run("single.py", guard=False, workers=1)
    assert single.returncode == 0, single.stderr
    assert sha(out) == ref


def test_generate_in_a_starting_child_process(tmp_path, monkeypatch):
    """The two branches a child re-running the main script takes: a worker of a
    generate pool notes it and leaves quietly; a child of any other pool that
    meets the lock gets the main-guard advice, not the lock message."""
    import multiprocessing

    from oplab.data.generation import _POOL_ENV, _Parts

    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    prob = problems.create("darcy", resolution=9)
    note = tmp_path / "note"
    monkeypatch.setenv(_POOL_ENV, f"{os.getppid()}:{note}")
    with pytest.raises(SystemExit):
        generate(prob, 2, tmp_path / "a.h5")
    assert note.exists() and not (tmp_path / "a.h5.parts").exists()

    monkeypatch.delenv(_POOL_ENV)
    out = tmp_path / "busy.h5"
    holder = _Parts(out, {})
    holder.lock()
    try:
        with pytest.raises(OplabError, match=r"top level of the main script.*if __name__ == \"__main__\""):
            generate(prob, 2, out)
    finally:
        holder.unlock()


def test_a_parameter_added_later_at_its_default_still_resumes(tmp_path, monkeypatch):
    """A file from an oplab whose problem had one parameter fewer resumes when the new parameter is
    at the value registered as reproducing older files (``LATER_DEFAULTS``), and not otherwise."""
    from oplab.problems import base
    from oplab.problems.base import Param
    from oplab.problems.darcy import Darcy

    monkeypatch.setitem(base.LATER_DEFAULTS, "later", 0.5)

    out = generate(problems.create("darcy", resolution=9), 3, tmp_path / "d.h5")
    before = sha(out)
    monkeypatch.setattr(Darcy, "params_spec", (*Darcy.params_spec, Param("later", 0.5, "added by a later oplab")))
    assert generate(problems.create("darcy", resolution=9), 3, out, resume=True) == out and sha(out) == before
    with pytest.raises(DataFileError, match="other settings"):
        generate(problems.create("darcy", resolution=9, later=0.7), 3, out, resume=True)


def test_existing_file_and_mismatched_parts(tmp_path, capsys):
    prob = problems.create("darcy", resolution=9)
    out = generate(prob, 3, tmp_path / "d.h5")
    before = sha(out)
    with pytest.raises(OplabError, match="exists; pass --overwrite"):
        generate(prob, 3, out)
    assert generate(prob, 3, out, resume=True) == out and sha(out) == before
    with pytest.raises(DataFileError, match="other settings.*seed"):
        generate(prob, 3, out, seed=9, resume=True)
    generate(prob, 3, out, seed=9, overwrite=True)
    assert sha(out) != before
    # a partial generation with other settings is not silently mixed in
    (tmp_path / "p.h5.parts").mkdir()
    (tmp_path / "p.h5.parts" / "spec.json").write_text('{"problem": "burgers"}')
    with pytest.raises(OplabError, match="partial generation with other settings"):
        generate(prob, 3, tmp_path / "p.h5")
    with pytest.raises(ParameterError, match="n must be a positive integer"):
        generate(prob, 0, tmp_path / "z.h5")


# ------------------------------------------------------------------ command line
@pytest.mark.parametrize(
    "args,message",
    [
        (["generate", "darcey", "--n", "2", "--out", "{tmp}/a.h5"], "did you mean 'darcy'"),
        (["generate", "burgers", "--n", "2", "--out", "{tmp}/a.h5", "--param", "nu=-0.1"], "'nu' must be > 0"),
        (["generate", "darcy", "--n", "2", "--out", "{tmp}/a.h5", "--param", "nu=0.1"], "unknown parameter 'nu'"),
        (["generate", "darcy", "--n", "2", "--out", "{tmp}/a.h5", "--param", "tau"], "expected key=value"),
        (["generate", "darcy", "--n", "2", "--out", "{tmp}/a.h5", "--resolution", "3"], "too small"),
        (["generate", "darcy", "--n", "0", "--out", "{tmp}/a.h5"], "positive integer"),
        (["generate", "darcy", "--n", "2", "--out", "{tmp}/nodir/a.h5"], "does not exist"),
        (["data", "info", "{tmp}/missing.h5"], "no such file"),
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, args, message):
    code = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_generate_and_info(tmp_path, capsys):
    out = tmp_path / "a.h5"
    assert main(["generate", "antiderivative", "--n", "5", "--out", str(out), "--param", "length_scale=0.3"]) == 0
    assert main(["data", "info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "antiderivative" in shown and '"length_scale": 0.3' in shown and "[5, 1, 100]" in shown
    before = sha(out)
    assert main(["generate", "antiderivative", "--n", "5", "--out", str(out)]) == 2
    assert sha(out) == before
    assert main(["problems"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in problems.available())
