"""Deep ensembles (``oplab train --members N``, :mod:`oplab.eval.ensemble`): members are ordinary
seeded runs, the ensemble's mean and spread are those of the members' predictions, and the
coverage of ``mean +- k sigma`` is what it says."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import oplab
from oplab.cli import main
from oplab.eval.ensemble import Ensemble, calibrate, coverage


def test_coverage_of_a_gaussian_band():
    """Truth drawn from N(mean, std^2): the band mean +- k std covers erf(k / sqrt 2) of it."""
    rng = np.random.default_rng(0)
    mean = rng.normal(size=200_000)
    std = rng.uniform(0.5, 2.0, size=mean.shape)
    truth = mean + std * rng.normal(size=mean.shape)
    for k in (1, 2, 3):
        assert coverage(mean, std, truth, k) == pytest.approx(math.erf(k / math.sqrt(2)), abs=0.005)
    assert coverage(mean, std * 0.0, mean, 1) == 1.0  # exact predictions are inside even a zero-width band


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    data = root / "a.h5"
    torch.set_num_threads(1)
    assert main(["generate", "antiderivative", "--n", "60", "--resolution", "20", "--out", str(data)]) == 0
    argv = ["train", "--data", str(data), "--model", "deeponet", "--set", "model.branch_layers=[16]",
            "--set", "model.trunk_layers=[16]", "--set", "model.latent=8", "--epochs", "20", "--n-train", "40",
            "--n-test", "20", "--members", "3", "--seed", "5", "--out", str(root / "ens")]
    assert main(argv) == 0
    return root, data, argv


def test_members_are_seeded_runs(ensemble):
    root, _, argv = ensemble
    record = json.loads((root / "ens" / "ensemble.json").read_text())
    assert record["members"] == ["member-0", "member-1", "member-2"] and record["seeds"] == [5, 6, 7]
    assert record["settings"]["model"]["latent"] == 8 and record["settings"]["train"]["seed"] is None
    seeds = [json.loads((root / "ens" / m / "config.json").read_text())["train"]["seed"] for m in record["members"]]
    assert seeds == [5, 6, 7]
    ops = [oplab.load(root / "ens" / m) for m in record["members"]]
    x = np.random.default_rng(1).normal(size=(2, 1, 20))
    outs = [op(x) for op in ops]
    assert not np.allclose(outs[0], outs[1])  # different seeds, different members
    # rerunning the command continues the ensemble: nothing is retrained or overwritten
    stamp = [(root / "ens" / m / "metrics.jsonl").read_text() for m in record["members"]]
    assert main(argv) == 0
    assert [(root / "ens" / m / "metrics.jsonl").read_text() for m in record["members"]] == stamp


def test_mean_and_spread_are_the_members(ensemble):
    root, _, _ = ensemble
    ens = Ensemble(root / "ens")
    x = np.random.default_rng(2).normal(size=(4, 1, 20)).astype(np.float32)
    stack = np.stack([m(x) for m in ens.members])
    mean, std = ens.predict(x)
    assert np.allclose(mean, stack.mean(0), atol=1e-6)
    assert np.allclose(std, stack.std(0, ddof=1), atol=1e-6)
    assert np.allclose(ens(x), mean)


def test_calibration_report(ensemble, capsys):
    root, data, _ = ensemble
    assert main(["evaluate", str(root / "ens"), "--data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["members"] == 3 and report["samples"] == 20 and report["scored"] == "test"
    assert set(report["coverage"]) == {"1", "2", "3"}
    cov = [report["coverage"][k] for k in ("1", "2", "3")]
    assert 0 <= cov[0] <= cov[1] <= cov[2] <= 1  # wider bands cover more
    # the mean's error is at most the members' average (triangle inequality): a check of the arithmetic
    assert report["relative_l2_mean"] <= sum(report["relative_l2_members"]) / 3 + 1e-6
    assert (root / "ens" / "calibration.png").stat().st_size > 1000
    assert json.loads((root / "ens" / "calibration.json").read_text()) == calibrate(root / "ens", data, figure=False)


def test_ensemble_errors(ensemble, tmp_path, capsys):
    root, data, argv = ensemble
    one = [a if a != "3" else "1" for a in argv]
    one[one.index("--out") + 1] = str(tmp_path / "one")
    assert main(one) == 2
    assert "--members must be an int >= 2" in capsys.readouterr().err
    other_seed = list(argv)
    other_seed[other_seed.index("--seed") + 1] = "9"
    assert main(other_seed) == 2
    assert "an ensemble of seeds [5, 6, 7] is already here" in capsys.readouterr().err
    other_model = argv + ["--set", "model.latent=16"]
    assert main(other_model) == 2
    assert "trained with other settings (model.latent)" in capsys.readouterr().err
    assert main(["evaluate", str(root / "ens"), "--data", str(data), "--n", "3"]) == 2
    assert "--n apply to single runs" in capsys.readouterr().err
    assert main(["train", "--resume", str(root / "ens" / "member-0"), "--members", "2"]) == 2
    assert "--members" in capsys.readouterr().err
    with pytest.raises(oplab.errors.OplabError, match="not an ensemble folder"):
        Ensemble(root / "ens" / "member-0")
