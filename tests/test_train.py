"""The training loop on real generated data: loss decrease, run folder, resume after
kill -9, divergence, distributed equivalence, evaluate/predict/load, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import oplab
from oplab import problems
from oplab.cli import main
from oplab.data.generation import generate
from oplab.errors import OplabError, ParameterError
from oplab.train import config as tc
from oplab.train import resume_run, run
from oplab.train import TrainingDiverged

SMALL_FNO = {"name": "fno", "modes": [6, 6], "width": 12, "n_layers": 2, "lifting_channels": 16,
             "projection_channels": 16}


@pytest.fixture(scope="module")
def darcy(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "darcy33.h5"
    generate(problems.create("darcy", resolution=33), 48, path, seed=0)
    return path


def cfg(data, out, epochs=6, model=None, **train):
    raw = {"data": {"train": str(data), "n_train": 40, "n_test": 8, "test_resolutions": [17]},
           "model": model or dict(SMALL_FNO), "train": {"epochs": epochs, "batch_size": 8, "lr": 5e-3,
                                                        "eval_every": 2, **train}, "out": str(out)}
    return tc.from_dict(raw)


def weights(run_dir, which="last"):
    return load_file(str(run_dir / "checkpoints" / which / "weights.safetensors"))


def test_training_lowers_the_error_and_writes_the_run_folder(darcy, tmp_path):
    out = tmp_path / "run"
    result = run(cfg(darcy, out, epochs=10), log=lambda s: None)
    hist = result["history"]
    first, last = hist[1]["test"]["33"]["l2"], hist[-1]["test"]["33"]["l2"]
    assert last < 0.5 * first, (first, last)
    assert "17" in hist[-1]["test"]  # evaluated at a second resolution
    for name in ("config.json", "metrics.jsonl", "predictions.png", "loss.png",
                 "checkpoints/last/weights.safetensors", "checkpoints/best/weights.safetensors"):
        assert (out / name).exists(), name
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(10))
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["name"] == "fno" and config["data"]["problem"] == "darcy"
    # the loaded operator reproduces the evaluation and answers at another resolution
    op = oplab.load(out)
    from oplab.data import open as open_data

    a = open_data(darcy)[47]["x"].numpy()
    u = op(a)
    assert u.shape == (1, 33, 33) and isinstance(u, np.ndarray)
    assert op(open_data(darcy, resolution=17)[47]["x"]).shape == (1, 17, 17)
    assert op(a[None]).shape == (1, 1, 33, 33)
    # without a "best" checkpoint the loader falls back to "last"
    shutil.rmtree(out / "checkpoints" / "best")
    assert np.array_equal(oplab.load(out)(a), oplab.load(out, checkpoint="last")(a))


def test_resume_after_an_interruption_ends_with_the_same_weights(darcy, tmp_path):
    full = tmp_path / "full"
    run(cfg(darcy, full), log=lambda s: None)

    cut = tmp_path / "cut"

    def crash_at_epoch_3(line):
        if line.startswith("epoch    3"):
            raise KeyboardInterrupt  # after epoch 3's metrics, before its checkpoint

    with pytest.raises(KeyboardInterrupt):
        run(cfg(darcy, cut, checkpoint_seconds=0), log=crash_at_epoch_3)  # "last" after every epoch
    state = json.loads((cut / "checkpoints/last/state.json").read_text())
    assert state["epoch"] == 2
    resume_run(cut, log=lambda s: None)
    a, b = weights(full), weights(cut)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len((cut / "metrics.jsonl").read_text().splitlines()) == 6
    # by default "last" is written at evaluations (eval_every 2: epochs 1, 3, 5) and every 30 s: the
    # crash loses epochs 2-3, which the resumed run replays to the same weights
    sparse = tmp_path / "sparse"
    with pytest.raises(KeyboardInterrupt):
        run(cfg(darcy, sparse), log=crash_at_epoch_3)
    assert json.loads((sparse / "checkpoints/last/state.json").read_text())["epoch"] == 1
    assert len((sparse / "metrics.jsonl").read_text().splitlines()) == 3  # epochs 0-2; 3 crashed before its line
    resume_run(sparse, log=lambda s: None)
    c = weights(sparse)
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert [json.loads(x)["epoch"] for x in (sparse / "metrics.jsonl").read_text().splitlines()] == list(range(6))


def test_kill_9_then_resume_from_the_command_line(darcy, tmp_path):
    yaml_cfg = tmp_path / "run.yaml"
    import yaml

    raw = cfg(darcy, tmp_path / "killed", epochs=12).to_dict()
    yaml_cfg.write_text(yaml.safe_dump(raw))
    proc = subprocess.Popen([sys.executable, "-m", "oplab", "train", "--config", str(yaml_cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 4):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(metrics.read_text().splitlines())
    assert 4 <= done < 12
    assert main(["train", "--resume", str(tmp_path / "killed")]) == 0
    raw["out"] = str(tmp_path / "straight")
    run(tc.from_dict(raw), log=lambda s: None)
    a, b = weights(tmp_path / "killed"), weights(tmp_path / "straight")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_checkpoint(darcy, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match="epoch .*Last good checkpoint: (none yet|.*checkpoints/last)"):
        run(cfg(darcy, out, epochs=30, lr=1e12, scheduler="none", weight_decay=0.0), log=lambda s: None)
    if (out / "checkpoints" / "last").exists():
        w = weights(out)
        assert all(torch.isfinite(v).all() for v in w.values())


def test_distributed_two_processes_match_one(darcy, tmp_path):
    """torchrun with 2 CPU processes (gloo) takes the same steps as one process."""
    import yaml

    raw = cfg(darcy, tmp_path / "ddp", epochs=3).to_dict()
    raw["train"]["eval_every"] = 3
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                    "-m", "oplab", "train", "--config", str(tmp_path / "ddp.yaml")],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    raw["out"] = str(tmp_path / "single")
    run(tc.from_dict(raw), log=lambda s: None)
    a, b = weights(tmp_path / "ddp"), weights(tmp_path / "single")
    worst = max((a[k] - b[k]).abs().max().item() / (b[k].abs().max().item() + 1e-12) for k in a)
    assert worst < 1e-4, worst


# ------------------------------------------------------------------ bad input
def test_config_typos_are_errors_that_list_the_valid_keys(darcy, tmp_path):
    with pytest.raises(ParameterError, match="unknown key.*train.epochz.*valid"):
        tc.from_dict({"data": {"train": str(darcy)}, "model": "fno", "train": {"epochz": 3}})
    with pytest.raises(ParameterError, match="unknown argument.*widht"):
        run(cfg(darcy, tmp_path / "r", model={**SMALL_FNO, "widht": 3}), log=lambda s: None)
    with pytest.raises(ParameterError, match="train.lr: expected float"):
        tc.from_dict({"data": {"train": str(darcy)}, "model": "fno", "train": {"lr": "fast"}})
    with pytest.raises(ParameterError, match="unknown model 'fnoo'.*did you mean 'fno'"):
        run(cfg(darcy, tmp_path / "r", model={"name": "fnoo"}), log=lambda s: None)


def test_cli_bad_inputs(darcy, tmp_path, capsys):
    out = tmp_path / "run"
    run(cfg(darcy, out, epochs=1), log=lambda s: None)
    before = (out / "checkpoints/last/weights.safetensors").read_bytes()
    # an existing run folder is not overwritten
    assert main(["train", "--data", str(darcy), "--model", "fno", "--out", str(out), "--epochs", "1"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "checkpoints/last/weights.safetensors").read_bytes() == before
    # data whose channels do not fit the model
    other = tmp_path / "poisson.h5"
    generate(problems.create("poisson", resolution=33, variable=True), 4, other)
    assert main(["evaluate", str(out), "--data", str(other)]) == 2
    assert "2 input / 1 output channels, the model takes 1 / 1" in capsys.readouterr().err
    # a NaN in a data file
    bad = tmp_path / "nan.h5"
    shutil.copy(darcy, bad)
    import h5py

    with h5py.File(bad, "a") as f:
        f["outputs"][44, 0, 5, 5] = np.nan  # a test sample (the run's test samples are 40-47)
    assert main(["evaluate", str(out), "--data", str(bad)]) == 2
    assert "NaN or Inf in outputs of sample(s) [44]" in capsys.readouterr().err
    # a checkpoint that is not safetensors
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    for which in ("best", "last"):
        (broken / "checkpoints" / which / "weights.safetensors").write_bytes(b"\x80\x04not safetensors")
    assert main(["evaluate", str(broken), "--data", str(darcy)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
    # a run folder from another version of the run format
    old = tmp_path / "old"
    shutil.copytree(out, old)
    config = json.loads((old / "config.json").read_text())
    config["run_version"] = 99
    (old / "config.json").write_text(json.dumps(config))
    assert main(["predict", str(old), "--input", str(darcy), "--out", str(tmp_path / "y.npy")]) == 2
    assert "v99" in capsys.readouterr().err
    # predict writes what the operator computes
    assert main(["predict", str(out), "--input", str(darcy), "--out", str(tmp_path / "y.npy")]) == 0
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (48, 1, 33, 33)
    # evaluate prints per resolution
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(darcy), "--resolution", "17", "--resolution", "33",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) == {"17", "33"} and res["33"]["samples"] == 8 and res["33"]["scored"] == "test"
    assert main(["evaluate", str(out), "--data", str(darcy), "--all", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["33"]["samples"] == 48 and res["33"]["scored"] == "all"


@pytest.mark.parametrize("model", ["deeponet", "pod_deeponet", "multionet"])
def test_point_operators_train_through_the_same_loop(tmp_path, model, monkeypatch):
    from oplab.train import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # two idle cores: small models time their step
    monkeypatch.setattr(threads, "cores", lambda: 2)      # (a POD basis is fitted after that timing: it
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)  # must not run the unfitted model)
    data = tmp_path / "anti.h5"
    generate(problems.create("antiderivative", resolution=40), 60, data, seed=0)
    raw = {"data": {"train": str(data), "n_train": 50, "n_test": 10}, "model": {"name": model},
           "train": {"epochs": 30, "batch_size": 10, "lr": 3e-3, "eval_every": 1}, "out": str(tmp_path / model)}
    hist = run(tc.from_dict(raw), log=lambda s: None)["history"]
    first, last = hist[0]["test"]["40"]["l2"], hist[-1]["test"]["40"]["l2"]
    assert last < 0.6 * first and last < 0.5, (first, last)
    op = oplab.load(tmp_path / model)
    x = oplab.data.open(data)[55]["x"].numpy()
    assert op(x).shape == (1, 40)
    with pytest.raises(OplabError, match="training sensors"):
        op(x[:, ::2])


def test_random_query_points_per_step(tmp_path):
    """``train.points``: a DeepONet trained on 10 random points of the 40 per step still learns the
    antiderivative (scored on the whole grid); grid operators and derivative losses are refused."""
    data = tmp_path / "anti.h5"
    generate(problems.create("antiderivative", resolution=40), 60, data, seed=0)
    raw = {"data": {"train": str(data), "n_train": 50, "n_test": 10}, "model": {"name": "deeponet"},
           "train": {"epochs": 30, "batch_size": 10, "lr": 3e-3, "eval_every": 1, "points": 10},
           "out": str(tmp_path / "points")}
    hist = run(tc.from_dict(raw), log=lambda s: None)["history"]
    first, last = hist[0]["test"]["40"]["l2"], hist[-1]["test"]["40"]["l2"]
    assert last < 0.6 * first and last < 0.5, (first, last)
    with pytest.raises(ParameterError, match="point operator with forward_points"):
        run(tc.from_dict({**raw, "model": {"name": "fno"}, "out": str(tmp_path / "fno")}), log=lambda s: None)
    with pytest.raises(ParameterError, match="no derivatives on scattered points"):
        tc.from_dict({**raw, "train": {**raw["train"], "loss": "h1"}})


def test_grid_operator_refuses_data_that_changes_grid(tmp_path):
    data = tmp_path / "dr.h5"
    generate(problems.create("diffusion_reaction", resolution=12), 6, data, seed=0)
    raw = {"data": {"train": str(data), "n_train": 4, "n_test": 2}, "model": {"name": "fno"},
           "train": {"epochs": 1}, "out": str(tmp_path / "r")}
    with pytest.raises(ParameterError, match="use a point operator"):
        run(tc.from_dict(raw), log=lambda s: None)


def test_time_budget_fixes_the_epoch_count_after_epoch_0_and_resume_keeps_it(darcy, tmp_path):
    out = tmp_path / "budget"
    lines = []
    # epoch 0 takes a fraction of a second: 0.0005 min (0.03 s) leaves room for no further epoch
    result = run(cfg(darcy, out, epochs=50, budget_minutes=0.0005, scheduler="step", step_size=10),
                 log=lines.append)
    hist = result["history"]
    assert hist[0]["budget_epochs"] == len(hist) < 50
    assert "test" in hist[0]  # epoch 0 is always evaluated under a budget (its cost is measured)
    assert any("time budget" in line for line in lines)
    state = json.loads((out / "checkpoints/last/state.json").read_text())
    assert state["epochs"] == len(hist) and state["step_size"] == max(1, round(10 * len(hist) / 50))
    # a generous budget is capped by epochs
    out2 = tmp_path / "capped"
    hist2 = run(cfg(darcy, out2, epochs=5, budget_minutes=60), log=lambda s: None)["history"]
    assert len(hist2) == 5
    assert hist2[0]["budget_epochs"] == hist2[2]["budget_epochs"] == 5  # planned after epoch 0, again after 2
    assert "budget_epochs" not in hist2[1]
    # resuming a budgeted run does not re-plan: it ends where the plan said
    cut = tmp_path / "cut"

    def crash_at_epoch_1(line):
        if line.startswith("epoch    1"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg(darcy, cut, epochs=4, budget_minutes=60), log=crash_at_epoch_1)
    hist3 = resume_run(cut, log=lambda s: None)["history"]
    assert len(hist3) == 4


def test_progress_callback_counts_batches(darcy, tmp_path):
    calls = []
    run(cfg(darcy, tmp_path / "p", epochs=2), log=lambda s: None, progress=lambda d, t, s: calls.append((d, t, s)))
    assert [d for d, _, _ in calls] == list(range(1, 11))  # 40 samples / batch 8 = 5 batches x 2 epochs
    assert all(t == 10 for _, t, _ in calls)
    assert calls[-1][2].startswith("epoch 0")  # the text describes the last finished epoch


def test_spectral_refiner_starts_from_the_trained_model_and_trains_only_the_last_layer(darcy, tmp_path):
    from oplab.train.refine import refine

    base = tmp_path / "base"
    run(cfg(darcy, base, epochs=4), log=lambda s: None)
    before = oplab.load(base)
    x = oplab.data.open(darcy).arrays(range(40, 48))[0]
    # zero epochs of refinement: the expanded model is the trained one, exactly (new modes start at 0)
    same = refine(base, tmp_path / "r0", epochs=1, lr=1e-12, log=lambda s: None)
    refined0 = oplab.load(tmp_path / "r0", checkpoint="last")
    assert refined0.config["model"]["last_modes"] == [16, 17]  # every frequency of the 33 grid
    assert np.allclose(refined0(x), before(x), rtol=1e-4, atol=1e-6)
    assert same["history"][0]["train_loss"] > 0
    result = refine(base, tmp_path / "r1", epochs=3, lr=1e-2, log=lambda s: None)
    w0, w1 = weights(base, "best"), weights(tmp_path / "r1")
    last = "model.spectral.1.weight.weight"  # SMALL_FNO has 2 layers
    assert all(torch.equal(w0[k], w1[k]) for k in w0 if k != last)  # everything else frozen
    from oplab.train.refine import expand_spectral_weight

    assert not torch.equal(expand_spectral_weight(w0[last], [6, 6], [16, 17]), w1[last])
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]
    assert main(["refine", str(tmp_path / "unet_missing"), "--out", str(tmp_path / "x")]) == 2


def test_python_api_refuses_an_existing_run_folder(darcy, tmp_path):
    ds = oplab.data.open(darcy)
    model = oplab.models.create("fno", in_channels=1, out_channels=1, modes=[4, 4], width=8, n_layers=1)
    oplab.train(model, ds, epochs=1, out=tmp_path / "r", n_train=40, n_test=8, log=lambda s: None)
    before = (tmp_path / "r" / "config.json").read_text()
    with pytest.raises(OplabError, match="already holds a run"):
        oplab.train(model, ds, epochs=1, out=tmp_path / "r", n_train=40, n_test=8, log=lambda s: None)
    assert (tmp_path / "r" / "config.json").read_text() == before


def test_learning_rate_schedules():
    from oplab.train.schedule import learning_rate

    step = tc.TrainConfig(epochs=300, lr=1e-3, scheduler="step", step_size=100, gamma=0.5)
    assert [learning_rate(step, e) for e in (0, 99, 100, 299)] == [1e-3, 1e-3, 5e-4, 2.5e-4]
    cosine = tc.TrainConfig(epochs=100, lr=1e-3, scheduler="cosine")
    assert learning_rate(cosine, 0) == 1e-3 and learning_rate(cosine, 50) == pytest.approx(5e-4)
    # one cycle: lr/2 -> lr over the first 30% of the epochs -> lr/200 at the last epoch
    one = tc.TrainConfig(epochs=500, lr=3e-4, scheduler="onecycle")
    rates = [learning_rate(one, e) for e in range(500)]
    assert rates[0] == pytest.approx(1.5e-4) and max(rates) == pytest.approx(3e-4)
    assert rates.index(max(rates)) == 150 and rates[-1] == pytest.approx(1.5e-6)
    assert all(a <= b for a, b in zip(rates[:150], rates[1:151])) and all(a >= b for a, b in zip(rates[150:], rates[151:]))
