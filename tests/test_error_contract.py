"""The error contract of the command line: bad input gets one line naming the file, key, shape or
parameter and what was expected, exit code 2, no traceback (issue 14, item 1).

Each case runs the real ``oplab`` command through :func:`oplab.cli.main` on tiny data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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
                "darcy at resolution 1000000: one sample needs at least", "TiB of memory", "are available")
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


# ------------------------------------------------------------------ the fuzzer's last findings (issue 14)
def _flipped(data: bytes, at: int) -> bytes:
    """``data`` with the 64 bytes from ``at`` XOR-ed, as the fuzzer's ``flip`` corruption does."""
    damaged = bytearray(data)
    damaged[at:at + 64] = bytes(b ^ 0xA5 for b in damaged[at:at + 64])
    return bytes(damaged)


def test_damaged_hdf5_metadata_and_chunks(files, tmp_path, capsys):
    """Bytes flipped anywhere in a small oplab file (object headers, the attribute block, the B-tree,
    the samples' chunks): h5py's RuntimeError, KeyError or OSError become one DataFileError naming
    the file, whether the metadata or a sample cannot be read."""
    from oplab.data.dataset import open_dataset
    from oplab.errors import DataFileError

    data = Path(files["darcy"]).read_bytes()
    messages = {}
    for at in range(0, len(data) - 64, 48):
        path = tmp_path / f"flip{at}.h5"
        path.write_bytes(_flipped(data, at))
        try:
            ds = open_dataset(path)
            ds.arrays()
            ds.close()
        except DataFileError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
            kind = ("metadata" if "metadata cannot be read" in str(exc) else
                    "sample" if "cannot be read; the file is damaged" in str(exc) else "other")
            messages.setdefault(kind, (path, str(exc)))
        path.unlink()
    # h5py's errors beyond OSError (RuntimeError "Error iterating over attributes", KeyError
    # "Unable to synchronously open object") on the metadata, and a damaged chunk of a sample
    assert {"metadata", "sample"} <= set(messages), messages
    path = tmp_path / "damaged.h5"
    path.write_bytes(_flipped(data, int(messages["metadata"][0].stem[4:])))
    fails(capsys, ["data", "info", path], f"{path}: damaged HDF5 file, its metadata cannot be read (")
    fails(capsys, ["train", "--data", path, *TINY_FNO, "--out", tmp_path / "r"], f"{path}: damaged HDF5 file")
    path.write_bytes(_flipped(data, int(messages["sample"][0].stem[4:])))
    fails(capsys, ["predict", files["run"], "--input", path, "--out", tmp_path / "o.npy"],
          f"{path}: sample ", "cannot be read; the file is damaged")
    assert not (tmp_path / "r").exists() and not (tmp_path / "o.npy").exists()


def _config_set(keys, value):
    def change(config):
        node = config
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return change


def _config_del(keys):
    def change(config):
        node = config
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]
    return change


@pytest.mark.parametrize("change,needle", [
    (_config_set(("data", "train_input_shape"), 1.5),
     "data.train_input_shape must be a list of positive ints [C, *S], got 1.5"),
    (_config_set(("data", "train_output_shape"), "fno"), "data.train_output_shape must be a list of positive ints"),
    (_config_set(("data", "train_input_shape"), [1, 9]),
     "data.train_input_shape is [1, 9] (1 grid axis after the channels), but data.input_axes has 2 axes"),
    (_config_del(("data", "train_input_shape")),
     "data.train_input_shape must be a list of positive ints [C, *S], got None"),
    (_config_set(("data", "output_axes"), -1),
     "data.output_axes must be a non-empty list of grid axes {name, n, lo, hi, periodic}, got -1"),
    (_config_set(("data", "output_axes"), []), "data.output_axes must be a non-empty list of grid axes"),
    (_config_set(("data", "input_axes"), [{"name": "x", "n": "9"}]),
     "data.input_axes must be a non-empty list of grid axes"),
    (_config_del(("data", "input_axes")), "data.input_axes must be a non-empty list of grid axes"),
    (_config_del(("model", "modes")), "the model section lacks model.modes (required by model 'fno')"),
    (_config_set(("model", "junk"), 1), "model 'fno' takes no argument(s) model.junk (valid: ['in_channels',"),
    (_config_set(("model", "name"), "fnoo"), "model.name: unknown model 'fnoo'; did you mean 'fno'"),
    (_config_set(("model", "width"), None),
     "the model section does not build (FNO: width must be a positive int, got None)"),
], ids=["input-shape-float", "output-shape-str", "input-shape-1d", "input-shape-missing", "output-axes-int",
        "output-axes-empty", "input-axes-bad-n", "input-axes-missing", "model-lacks-modes", "model-unknown-key",
        "model-unknown-name", "model-width-none"])
def test_run_config_of_the_wrong_form(files, tmp_path, capsys, change, needle):
    """A run folder whose config.json has a wrong-typed data description or a model section that
    does not build: one line naming that config.json and the key, for every command that loads it."""
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    config = json.loads((run / "config.json").read_text())
    change(config)
    (run / "config.json").write_text(json.dumps(config))
    head = f"{run / 'config.json'}: "
    np.save(tmp_path / "a.npy", np.zeros((1, 9, 9), np.float32))
    fails(capsys, ["predict", run, "--input", tmp_path / "a.npy", "--out", tmp_path / "o.npy"], head, needle)
    fails(capsys, ["evaluate", run, "--data", files["darcy"]], head + needle)
    if "does not build" not in needle:  # checked as the folder is opened, before anything else
        fails(capsys, ["train", "--resume", run, "--epochs", "2"], head + needle)
        fails(capsys, ["refine", run, "--out", tmp_path / "refined", "--epochs", "1"], head + needle)
    with pytest.raises(OplabError, match="config.json: "):
        __import__("oplab").load(run)
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "refined").exists()


def test_a_model_without_a_required_argument_is_a_parameter_error():
    from oplab import models
    from oplab.errors import ParameterError

    with pytest.raises(ParameterError, match="FNO: missing a required argument: 'modes'"):
        models.create("fno", in_channels=1, out_channels=1)


def test_a_test_set_of_another_dimension_or_channels(files, tmp_path, capsys):
    """A 1D --test file (or data.test_files entry) for a 2D training set is refused as the run is
    planned, naming the file, before a run folder is made."""
    line = files["line"]
    want = (f"{line}: inputs 1 channel(s) on [16] (1 spatial axis), outputs 1 channel(s) on [16] (1 spatial axis); "
            f"a test set needs the training data's number of spatial axes and channels ({files['darcy']}: inputs 1 "
            f"channel(s) on [9, 9] (2 spatial axes)")
    fails(capsys, ["train", "--data", files["darcy"], *TINY_FNO, "--test", line, "--out", tmp_path / "r"], want)
    fails(capsys, ["train", "--data", files["darcy"], *TINY_FNO, "--set", f"data.test_files=[{line}]",
                   "--out", tmp_path / "r"], want)
    assert not (tmp_path / "r").exists()
    two = tmp_path / "two.h5"  # two input channels on the same grid
    shutil.copy(files["darcy"], two)
    with h5py.File(two, "a") as f:
        x = f["inputs"][()]
        del f["inputs"]
        f.create_dataset("inputs", data=np.concatenate([x, x], axis=1))
        f.attrs["input_channels"] = json.dumps(["a", "b"])
    fails(capsys, ["train", "--data", files["darcy"], *TINY_FNO, "--test", two, "--out", tmp_path / "r"],
          f"{two}: inputs 2 channel(s) on [9, 9]")
    assert not (tmp_path / "r").exists()


def test_refine_names_config_json_when_its_modes_disagree_with_the_weights(files, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    config = json.loads((run / "config.json").read_text())
    config["model"]["modes"] = [m - 1 for m in config["model"]["modes"]]
    (run / "config.json").write_text(json.dumps(config))
    fails(capsys, ["refine", run, "--out", tmp_path / "refined", "--epochs", "1"],
          f"{run / 'config.json'}: model modes {config['model']['modes']} do not match the last spectral weight")
    assert not (tmp_path / "refined").exists()


@pytest.mark.parametrize("address", ["tcp://[::1", "foo://x:1"])
def test_a_malformed_scheduler_address_is_one_line(tmp_path, capsys, address):
    fails(capsys, ["generate", "darcy", "--n", "2", "--resolution", "9", "--out", tmp_path / "s.h5",
                   "--scheduler", address], f"--scheduler {address!r} is not a Dask scheduler address")
    assert not (tmp_path / "s.h5").exists()


def test_the_memory_guard_counts_the_solvers_arrays_and_the_process_limit(tmp_path):
    """Burgers at 10^7 points: its float64 fields are 160 MB, but ETDRK4's contour coefficients take
    about 31 GB; and under ``ulimit -v`` the limit, not the machine, bounds what is available."""
    big = problems.create("burgers", resolution=10_000_000)
    assert big.working_memory(1) > 30e9 > 50 * 8 * (1 + 1) * 10_000_000
    script = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
              "from oplab.data.generation import available_memory; print(available_memory())")
    free = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert free < 2 << 30
