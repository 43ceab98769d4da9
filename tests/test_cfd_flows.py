"""The CFDBench problems (cavity, tube, cylinder, barrier) and the reader of CFDBench's released files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oplab import problems
from oplab.cli import main
from oplab.data import cfdbench
from oplab.data.format import read_meta
from oplab.errors import DataFileError, ParameterError
from oplab.solvers.incompressible import box_mask, disk_mask

SHORT = dict(t_end=0.2, record_every=0.1)


@pytest.mark.parametrize("name", ["cavity", "tube", "cylinder", "barrier"])
def test_problem_generates_deterministic_trajectories(name):
    p = problems.create(name, subset="bc", **SHORT)
    x, y = p.generate([0, 1], seed=3)
    c = len(p.input_channels)
    assert x.shape == (2, c, 64, 64) and y.shape == (2, 2, c, 64, 64)
    assert p.input_channels[:3] == ("u", "v", "mask") and p.output_channels == p.input_channels
    assert np.isfinite(y).all() and np.abs(y[:, :, :2]).max() > 0
    # the case parameters ride as constant channels, the same in the inputs and every frame
    assert np.ptp(x[:, 3:], axis=(2, 3)).max() == 0 and np.array_equal(y[:, 0, 3:], x[:, 3:])
    assert x[0, 3, 0, 0] != x[1, 3, 0, 0]  # bc: the speeds differ
    x2, y2 = p.generate([1], seed=3)
    assert np.array_equal(x2[0], x[1]) and np.array_equal(y2[0], y[1])


def test_mask_matches_geometry():
    p = problems.create("cylinder", subset="geo", **SHORT)
    x = p.sample_inputs(np.random.default_rng(0))
    case = p.case_of(x)
    disk = disk_mask(64, 64, 2.0, 1.0, (case["center_x"], case["center_y"]), case["radius"])
    assert np.array_equal(x[2], (~disk).T.astype(float))
    assert np.all(x[0][x[2] == 0] == 0)
    b = problems.create("barrier", subset="geo", **SHORT)
    xb, yb = b.generate([0], seed=0)
    case = b.case_of(xb[0])
    box = box_mask(64, 64, 1.5, 0.4, 0.5, 0.5 + case["barrier_width"], 0.0, case["barrier_height"])
    assert np.array_equal(xb[0, 2], (~box).T.astype(float))
    assert np.all(yb[0, :, :2][:, :, xb[0, 2] == 0] == 0)  # no flow inside the barrier
    cav = problems.create("cavity", subset="prop", **SHORT)
    assert np.all(cav.sample_inputs(np.random.default_rng(0))[2] == 1)


def test_bad_parameters_are_one_line_errors():
    cases = [
        ("cavity", dict(subset="nope")),
        ("cavity", dict(speed_max=500.0)),  # cell Reynolds number beyond the grid
        ("tube", dict(subset="prop", nu_min=1e-5)),
        ("cylinder", dict(subset="geo", radius_max=0.4)),  # leaves the channel
        ("barrier", dict(speed_min=2.0, speed_max=1.0)),
        ("cavity", dict(t_end=0.25)),
    ]
    for name, kw in cases:
        with pytest.raises(ParameterError) as err:
            problems.create(name, **kw)
        assert "\n" not in str(err.value), str(err.value)


def test_generated_file_trains_autoregressively(tmp_path):
    out = tmp_path / "f.h5"
    assert main(["generate", "cavity", "--n", "4", "--resolution", "64", "--param", "subset=bc",
                 "--param", "t_end=0.3", "--out", str(out)]) == 0
    assert main(["train", "--data", str(out), "--model", "fno", "--set", "train.task=autoregressive",
                 "--epochs", "1", "--n-train", "3", "--n-val", "1", "--n-test", "1", "--out", str(tmp_path / "run")]) == 0


def _write_cfdbench(root, n_cases=5, frames=(4, 5, 4, 6, 4), hw=(16, 16), seed=0):
    rng = np.random.default_rng(seed)
    for k in range(n_cases):
        case = root / f"case{k:04d}"
        case.mkdir(parents=True)
        (case / "case.json").write_text(json.dumps({"case_no": k, "vel_top": 1.0 + k, "density": 1.0,
                                                    "viscosity": 1e-3, "height": 0.1, "width": 0.1}))
        t = frames[k % len(frames)]
        np.save(case / "u.npy", rng.standard_normal((t, *hw)))
        np.save(case / "v.npy", rng.standard_normal((t, *hw)))


def test_cfdbench_reader_converts_and_trains(tmp_path):
    root = tmp_path / "cfdbench" / "cavity" / "bc"
    _write_cfdbench(root)
    path = cfdbench.convert(root)
    import h5py

    with h5py.File(path) as f:
        x, y = f["inputs"][()], f["outputs"][()]
        assert x.shape == (5, 3 + 5, 16, 16) and y.shape == (5, 3, 8, 16, 16)  # shortest case: 4 frames
        assert json.loads(f.attrs["cfdbench_split"]) == {"n_train": 4, "n_val": 0, "n_test": 1}
        first = json.loads(f.attrs["cases"])[0]
    u0 = np.load(root / first / "u.npy")
    assert np.allclose(x[0, 0], u0[0]) and np.allclose(y[0, :, 0], u0[1:4])
    assert read_meta(path)["static_channels"] == ["mask", "vel_top", "density", "viscosity", "height", "width"]
    assert main(["train", "--data", str(root), "--model", "fno", "--set", "train.task=autoregressive",
                 "--epochs", "1", "--n-val", "1", "--out", str(tmp_path / "run")]) == 0
    # another CFDBench folder as the test set (--test FOLDER): converted too, and tested whole
    other = tmp_path / "cfdbench" / "cavity" / "geo"
    _write_cfdbench(other, n_cases=3, seed=1)
    assert main(["train", "--data", str(root), "--test", str(other), "--model", "fno", "--set",
                 "train.task=autoregressive", "--epochs", "1", "--out", str(tmp_path / "run2")]) == 0
    run = json.loads((tmp_path / "run2" / "config.json").read_text())["data"]
    test = run["split"]["tests"][0]  # every case of the other folder, converted
    assert test["file"] == str((other / cfdbench.CACHE_NAME).resolve()) and test["ranges"] == [[0, 3]]
    assert run["split"]["train"]["ranges"] == [[0, 5]]  # with a separate test set, the whole folder trains


@pytest.mark.parametrize("breakage", ["no_u", "shape", "json", "empty"])
def test_cfdbench_bad_layouts_exit_2(tmp_path, capsys, breakage):
    root = tmp_path / "bc"
    _write_cfdbench(root, n_cases=3)
    case = root / "case0001"
    if breakage == "no_u":
        (case / "u.npy").unlink()
    elif breakage == "shape":
        np.save(case / "v.npy", np.zeros((4, 16, 8)))
    elif breakage == "json":
        (case / "case.json").write_text("{not json")
    else:
        root = tmp_path / "empty"
        root.mkdir()
    with pytest.raises(DataFileError) as err:
        cfdbench.convert(root)
    assert "\n" not in str(err.value)
    capsys.readouterr()
    assert main(["train", "--data", str(root), "--model", "fno", "--set", "train.task=autoregressive",
                 "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and len(err.strip().splitlines()) == 1, err
