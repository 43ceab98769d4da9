"""The error contract of the command line: bad input gets one line naming the file, key, shape or
parameter and what was expected, exit code 2, no traceback (issue 14, item 1).

Each case runs the real ``oplab`` command through :func:`oplab.cli.main` on tiny data."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from oplab import problems
from oplab.cli import main
from oplab.data.generation import generate
from oplab.errors import OplabError

TINY_FNO = ["--model", "fno", "--set", "model.width=4", "--set", "model.n_layers=1", "--epochs", "1",
            "--n-train", "3", "--n-test", "1", "--n-val", "0"]


def fails(capsys, argv, *needles) -> str:
    """Run ``oplab ARGV``; it must exit 2 with one non-empty stderr line holding every needle."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, f"exit {code}: {err}"
    assert err.strip() and err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 2D set (darcy 9 x 9), a 1D set (antiderivative 16) and a 1-epoch FNO run on the 2D one."""
    root = tmp_path_factory.mktemp("contract")
    darcy = generate(problems.create("darcy", resolution=9), 4, root / "darcy.h5")
    line = generate(problems.create("antiderivative", resolution=16), 4, root / "line.h5")
    run = root / "run"
    assert main(["train", "--data", str(darcy), *TINY_FNO, "--out", str(run)]) == 0
    return {"root": root, "darcy": darcy, "line": line, "run": run}


# ------------------------------------------------------------------ 1. --device
@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has CUDA")
def test_device_cuda_without_cuda(files, tmp_path, capsys):
    fails(capsys, ["train", "--data", files["darcy"], *TINY_FNO, "--out", tmp_path / "r", "--device", "cuda"],
          "train.device = 'cuda' but this torch has no CUDA device; use cpu or auto")
    assert not (tmp_path / "r").exists()  # refused before the run folder is made


@pytest.mark.parametrize("device", ["foo", "cuda:x", "cpu:0"])
def test_device_unknown(files, tmp_path, capsys, device):
    fails(capsys, ["train", "--data", files["darcy"], *TINY_FNO, "--out", tmp_path / "r", "--device", device],
          f"train.device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ 2. generate --out
def test_generate_out_names_a_folder(tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    fails(capsys, ["generate", "darcy", "--n", "2", "--resolution", "9", "--out", tmp_path / "adir"],
          "adir: is a folder; --out names the HDF5 file")
    fails(capsys, ["generate", "darcy", "--n", "2", "--resolution", "9", "--out", tmp_path / "adir", "--overwrite"],
          "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]  # no lock or parts left behind


def test_generate_out_in_a_missing_folder(tmp_path, capsys):
    fails(capsys, ["generate", "darcy", "--n", "2", "--resolution", "9", "--out", tmp_path / "nope" / "x.h5"],
          f"the folder {tmp_path / 'nope'} does not exist")
    assert not (tmp_path / "nope").exists()
    (tmp_path / "afile").write_text("x")
    fails(capsys, ["generate", "darcy", "--n", "2", "--resolution", "9", "--out", tmp_path / "afile" / "x.h5"],
          "afile is a file, not a folder")


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.isdir("/proc"), reason="needs /proc")
def test_generate_out_unwritable(capsys):
    fails(capsys, ["generate", "darcy", "--n", "2", "--resolution", "9", "--out", "/proc/x.h5"],
          "/proc/x.h5: cannot create files in /proc")


# ------------------------------------------------------------------ 3. size guards
def test_generate_refuses_a_sample_larger_than_memory(tmp_path, capsys):
    err = fails(capsys, ["generate", "darcy", "--n", "2", "--resolution", "1000000", "--out", tmp_path / "big.h5"],
                "darcy at resolution 1000000: one sample needs about", "TiB of memory", "are available")
    assert "15 TiB" in err  # 2 float64 fields of 10^12 points
    assert list(tmp_path.iterdir()) == []


def test_generate_refuses_a_file_larger_than_the_disk(tmp_path, capsys):
    fails(capsys, ["generate", "darcy", "--n", "1000000000000", "--resolution", "9", "--out", tmp_path / "big.h5"],
          "darcy at resolution 9: 1000000000000 samples make a file of about 589 TiB", f"{tmp_path} has",
          "free")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 4. YAML run configurations
@pytest.mark.parametrize("text,needle", [
    (b"train: 5\n", "train must be a mapping of train.KEY: VALUE settings, got 5"),
    (b"data: here\n", "data must be a mapping of data.KEY: VALUE settings, got 'here'"),
    (b"- 1\n- 2\n", "expected a mapping with keys data, model, train, out; got a list"),
    (bytes(range(256)) * 4, "not a text file (byte 128 is not UTF-8)"),
], ids=["scalar-section", "string-section", "top-level-list", "binary"])
def test_config_file_shapes(files, tmp_path, capsys, text, needle):
    config = tmp_path / "run.yaml"
    config.write_bytes(text)
    for flags in ([], ["--data", files["darcy"], *TINY_FNO]):  # with and without flags to merge in
        fails(capsys, ["train", "--config", config, "--out", tmp_path / "r", *flags], f"{config}: {needle}")
    assert not (tmp_path / "r").exists()


def test_config_is_a_folder(files, tmp_path, capsys):
    fails(capsys, ["train", "--config", tmp_path, "--data", files["darcy"], *TINY_FNO, "--out", tmp_path / "r"],
          f"{tmp_path}: is a folder; --config takes a YAML run configuration file")


# ------------------------------------------------------------------ 5. oplab-looking HDF5 files
def _no_params(f):
    del f.attrs["params"]


def _group_inputs(f):
    del f["inputs"]
    f.create_group("inputs")


def _string_inputs(f):
    del f["inputs"]
    f.create_dataset("inputs", data=np.full((4, 1, 9, 9), b"a"))


@pytest.mark.parametrize("damage,needle", [
    (_no_params, "attribute(s) ['params'] missing"),
    (lambda f: f.attrs.__setitem__("params", "{not json"), "attribute 'params' is not valid JSON"),
    (lambda f: f.attrs.__setitem__("n", 10), "attribute 'n' says 10 samples, but dataset 'inputs' holds 4"),
    (_group_inputs, "'inputs' is a group, expected a float32 dataset [N, C, *S]"),
    (_string_inputs, "dataset 'inputs' holds |S1 values, expected float32 numbers"),
], ids=["params-missing", "params-not-json", "n-disagrees", "inputs-group", "inputs-strings"])
def test_damaged_data_file(files, tmp_path, capsys, damage, needle):
    path = tmp_path / "damaged.h5"
    shutil.copy(files["darcy"], path)
    with h5py.File(path, "a") as f:
        damage(f)
    fails(capsys, ["data", "info", path], f"{path}: {needle}")
    fails(capsys, ["train", "--data", path, *TINY_FNO, "--out", tmp_path / "r"], f"{path}: {needle}")


# ------------------------------------------------------------------ 6. predict inputs
def test_predict_empty_input(files, tmp_path, capsys):
    np.save(tmp_path / "empty.npy", np.zeros((0, 1, 9, 9), np.float32))
    fails(capsys, ["predict", files["run"], "--input", tmp_path / "empty.npy", "--out", tmp_path / "o.npy"],
          "input of shape [0, 1, 9, 9] is empty: expected [B, 1, x, y] with B >= 1")
    assert not (tmp_path / "o.npy").exists()


def test_predictor_refuses_non_numbers(files):
    op = __import__("oplab").load(files["run"])
    for a in (np.full((9, 9), "a"), np.zeros((9, 9), np.complex64), torch.zeros(9, 9, dtype=torch.complex64)):
        with pytest.raises(OplabError, match=r"input of dtype .*: expected real numbers .* of shape \[1, x, y\]"):
            op(a)
    with pytest.raises(OplabError, match="is empty"):
        op(torch.zeros(0, 1, 9, 9))
    assert op(np.ones((9, 9), np.int64)).shape == (9, 9)  # integers and bools are numbers


def test_predict_string_input(files, tmp_path, capsys):
    np.save(tmp_path / "s.npy", np.full((9, 9), "a"))
    fails(capsys, ["predict", files["run"], "--input", tmp_path / "s.npy", "--out", tmp_path / "o.npy"],
          "input of dtype <U1")


# ------------------------------------------------------------------ 7. 1D data, 2D model
def test_1d_data_to_a_2d_model(files, tmp_path, capsys):
    fails(capsys, ["train", "--data", files["line"], *TINY_FNO, "--set", "model.modes=[8,8]", "--out", tmp_path / "r"],
          "model 'fno': modes=[8, 8] makes a 2D model, but the data has 1 spatial axis [16]")
    fails(capsys, ["train", "--data", files["darcy"], *TINY_FNO, "--model", "fno-burgers", "--out", tmp_path / "r"],
          "model 'fno' (preset 'fno-burgers'): modes=[16] makes a 1D model, but the data has 2 spatial axes [9, 9]")
    fails(capsys, ["train", "--data", files["line"], *TINY_FNO, "--model", "unet", "--set", "model.dim=2",
                   "--out", tmp_path / "r"], "model 'unet': dim=2 makes a 2D model")
    assert not (tmp_path / "r").exists()
    fails(capsys, ["evaluate", files["run"], "--data", files["line"]],
          f"{files['line']}: inputs on [16] (1 spatial axis), but this run's model is 2D")


# ------------------------------------------------------------------ 8. too coarse a resolution
def test_resolution_too_coarse(files, tmp_path, capsys):
    needle = f"{files['darcy']} at resolution 2: axis 'x' has 2 point(s); the relative H1 error needs at least 3"
    fails(capsys, ["evaluate", files["run"], "--data", files["darcy"], "--resolution", "2"], needle)
    fails(capsys, ["train", "--data", files["darcy"], *TINY_FNO, "--test-resolution", "2", "--out", tmp_path / "r"],
          needle)
    assert not (tmp_path / "r").exists()
    fails(capsys, ["evaluate", files["run"], "--data", files["darcy"], "--resolution", "7"],
          "axis 'x' has 9 points and cannot be strided to 7")


# ------------------------------------------------------------------ 9. weights that do not fit the config
def _rewrite_weights(run: Path, change) -> None:
    from safetensors.numpy import load_file, save_file

    for path in run.glob("checkpoints/*/weights.safetensors"):
        weights = load_file(str(path))
        change(weights)
        save_file(weights, str(path))


def _wider(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    config["model"]["width"] = 8
    (run / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("change,needle", [
    (_wider, "(shape of model.lifting.2.weight is [4, 128] not [8, 128], "),
    (lambda run: _rewrite_weights(run, lambda w: w.update(bogus=np.zeros(3, np.float32))), "(unexpected ['bogus'])"),
    (lambda run: _rewrite_weights(run, lambda w: w.pop("in_norm.mean")), "(missing keys ['in_norm.mean'])"),
    (lambda run: _rewrite_weights(run, lambda w: w.update({"out_norm.std": np.ones(7, np.float32)})),
     "(shape of out_norm.std is [7] not [1])"),
], ids=["config-width", "extra-key", "missing-key", "wrong-shape"])
def test_weights_that_do_not_fit_the_config(files, tmp_path, capsys, change, needle):
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    change(run)
    head = f"{run}/checkpoints/last/weights.safetensors: does not fit the model in {run}/config.json "
    np.save(tmp_path / "a.npy", np.zeros((1, 9, 9), np.float32))
    fails(capsys, ["predict", run, "--input", tmp_path / "a.npy", "--out", tmp_path / "o.npy"], head, needle)
    fails(capsys, ["evaluate", run, "--data", files["darcy"]], head, needle)



def test_fourier_modes_beyond_the_training_grid(files, tmp_path, capsys):
    fails(capsys, ["train", "--data", files["darcy"], "--model", "fno", "--set", "model.modes=[100,100]", "--epochs", "1",
                   "--out", tmp_path / "m"], "modes=[100, 100] exceed the frequencies the training grid [9, 9] holds")
    assert not (tmp_path / "m").exists()


def test_non_finite_inputs_are_refused(files, tmp_path, capsys):
    a = np.ones((3, 9, 9), np.float32)
    a[1, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", a)
    fails(capsys, ["predict", files["run"], "--input", tmp_path / "nan.npy", "--out", tmp_path / "o.npy"],
          "NaN or Inf in sample(s) [1] of 3")
    assert not (tmp_path / "o.npy").exists()


def test_fuzzer_findings_predict_refine_set_and_config(files, tmp_path, capsys):
    """Failures the fuzzer (benchmarks/fuzz.py) found after the first fixes."""
    inp = tmp_path / "in.npy"
    np.save(inp, np.ones((2, 9, 9), np.float32))
    before = inp.read_bytes()
    fails(capsys, ["predict", files["run"], "--input", inp, "--out", inp], "exists; pass --overwrite")
    assert inp.read_bytes() == before
    fails(capsys, ["predict", files["run"], "--input", inp, "--out", "/proc/oplab-x.npy"], "cannot write the predictions")
    fails(capsys, ["refine", files["run"], "--out", "/proc/oplab-x", "--epochs", "1"], "cannot make the run folder")
    fails(capsys, ["refine", files["run"], "--out", inp, "--epochs", "1"], "cannot make the run folder")
    fails(capsys, ["train", "--data", files["darcy"], "--model", "fno", "--out", tmp_path / "s",
                   "--set", "train.batch_size=\x95x"], "--set", "not valid YAML")
    broken = tmp_path / "noname"
    shutil.copytree(files["run"], broken)
    config = json.loads((broken / "config.json").read_text())
    del config["model"]["name"]
    (broken / "config.json").write_text(json.dumps(config))
    fails(capsys, ["evaluate", broken, "--data", files["darcy"]], "names no model")
