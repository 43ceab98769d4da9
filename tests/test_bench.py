"""The benchmark suites and the quickstart: suites validate, the smoke suite runs end to end
(generation, one child process per case, report), reruns resume, peers are scored by oplab's
metric, and the quickstart trains, reports errors at two resolutions and the speed-up."""

import json
import shutil

import numpy as np
import pytest

from oplab import bench
from oplab.cli import main
from oplab.errors import ParameterError


@pytest.mark.parametrize("name", bench.available())
def test_packaged_suites_validate(name):
    suite = bench.load_suite(name)
    assert suite.cases and suite.datasets
    assert {"smoke", "cpu", "paper"} <= set(bench.available())


def test_suite_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {d: {problem: darcy, n: 4}}\ncases:\n  - {name: a, dataset: e, model: fno}\n")
    with pytest.raises(ParameterError, match=r"bad.yaml.*'e' is not in datasets"):
        bench.load_suite(bad)
    bad.write_text("datasets: {d: {problem: darcy, n: 4}}\ncases:\n  - {name: a, dataset: d, model: fno, "
                   "train: {epoch: 3}}\n")
    with pytest.raises(ParameterError, match=r"bad.yaml: cases\[0\] \(a\): train.epoch.*valid"):
        bench.load_suite(bad)
    bad.write_text("datasets: {d: {problem: darcy, n: 4, reso: 3}}\ncases: []\n")
    with pytest.raises(ParameterError, match=r"datasets.d.*reso"):
        bench.load_suite(bad)
    with pytest.raises(ParameterError, match="unknown suite 'nope'.*smoke"):
        bench.load_suite("nope")


def test_smoke_suite_end_to_end_and_resume(tmp_path):
    out = tmp_path / "smoke"
    lines = []
    report = bench.run_suite(bench.load_suite("smoke"), out, peers=None, log=lines.append)
    cases = {c["name"]: c for c in report["cases"]}
    assert set(cases) == {"darcy16-fno", "darcy16-unet", "antiderivative-deeponet", "heat16-fno-rollout",
                          "tube16-fno-cfdbench"}
    fno = cases["darcy16-fno"]
    assert set(fno["test"]) == {"16", "31"}  # its own test samples, and the zero-shot 31 set
    assert fno["curve"][-1]["train_loss"] < fno["curve"][0]["train_loss"]
    assert fno["params"] > 0 and fno["peak_memory_mib"] > 50 and fno["inference_seconds_per_sample"] > 0
    assert all(np.isfinite(m["l2"]) for c in cases.values() for m in c["test"].values())
    roll = cases["heat16-fno-rollout"]  # an autoregressive case: its rollout errors per step, one step timed
    assert roll["task"] == "autoregressive" and len(roll["rollout"]["per_step"]) == 4
    assert roll["rollout"]["l2"] == pytest.approx(roll["test"]["16"]["l2"], rel=1e-6)
    assert roll["inference_seconds_per_sample"] > 0
    cfd = cases["tube16-fno-cfdbench"]["cfdbench"]  # CFDBench's protocol on the test cases
    assert cfd["cases"] == 2 and cfd["frames"] == 8 and len(cfd["rollout"]["nmse_per_step"]) == 4
    assert all(np.isfinite(cfd[p][k]) for p in ("one_step", "rollout", "identity") for k in ("mse", "rmse", "mae", "nmse"))
    text = (out / "report.md").read_text()
    assert "## CFDBench protocol" in text and "### tube / bc (2 test cases, 8 frames)" in text and "| identity |" in text
    assert "## darcy" in text and "## antiderivative" in text and "L2@31" in text
    assert "0.0108 (85)" in text  # the published figure beside ours
    # the two darcy16 cases are ranked, and the winner is the one with the lower error
    winner = min(("darcy16-fno", "darcy16-unet"), key=lambda n: cases[n]["test"]["16"]["l2"])
    assert "## Comparison: darcy16 at equal epochs" in text and f"**Winner: {winner}**" in text
    assert (out / "cases/darcy16-fno/run/predictions.png").exists()
    assert json.loads((out / "report.json").read_text())["suite"] == "smoke"
    # rerun: finished cases are not trained again
    again = bench.run_suite(bench.load_suite("smoke"), out, peers=None, log=lines.append)
    assert sum("done before" in line for line in lines) == 5
    assert again["cases"][0]["test"] == report["cases"][0]["test"]
    # a case interrupted after its last checkpoint resumes instead of starting over
    (out / "cases/darcy16-fno/result.json").unlink()
    resumed = bench.run_suite(bench.load_suite("smoke"), out, peers=None, only=["darcy16-fno"], log=lines.append)
    assert resumed["cases"][0]["epochs"] == 3


def test_peer_predictions_are_scored_by_oplab_metric(tmp_path):
    from oplab.bench import _peer_errors, make_datasets

    suite = bench.load_suite("smoke")
    make_datasets(suite, tmp_path, ["darcy16", "darcy31"], workers=1)
    from oplab.data.dataset import open_dataset

    ys = open_dataset(tmp_path / "darcy16.h5").arrays()[1][-8:], open_dataset(tmp_path / "darcy31.h5").arrays()[1]
    np.save(tmp_path / "pred_0.npy", ys[0])
    np.save(tmp_path / "pred_1.npy", 1.1 * ys[1])
    spec = {"train_file": str(tmp_path / "darcy16.h5"), "n_test": 8, "resolution": None,
            "test_files": [str(tmp_path / "darcy31.h5")]}
    errors = _peer_errors(spec, tmp_path)
    assert errors["16"]["l2"] == pytest.approx(0.0, abs=1e-7)
    assert errors["31"]["l2"] == pytest.approx(0.1, rel=1e-4)


def test_bench_cli_unknown_suite(capsys, tmp_path):
    assert main(["bench", "--suite", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown suite 'nope'" in capsys.readouterr().err


def test_quickstart_small(tmp_path):
    from oplab.quickstart import quickstart

    out = tmp_path / "qs"
    s = quickstart(out, resolution=16, super_resolution=32, n_train=24, n_test=8, budget_minutes=0.02,
                   max_epochs=3, batch_size=8, workers=1, device="cpu", log=lambda t: None)
    assert set(s["test"]) == {"16", "32"}
    for m in s["test"].values():
        assert 0 < m["l2"] < 1.5
        assert m["speedup"] == pytest.approx(m["solver_seconds_per_sample"] / m["inference_seconds_per_sample"])
    assert 1 <= s["epochs"] <= 3
    assert (out / "run/predictions.png").exists() and (out / "summary.json").exists()
    lines = []
    assert quickstart(out, log=lines.append) == s  # finished: shows the summary again
    assert "finished before" in lines[0]
    shutil.rmtree(out / "data")


def test_comparison_ranks_finite_errors_first_and_survives_missing_ones():
    from oplab.bench.report import comparisons

    def case(name, test):
        return {"name": name, "case": {"compare": "g"}, "model": {"name": "fno"}, "test": test, "params": 1,
                "epochs": 1, "epoch_seconds": 1.0, "train": {"budget_minutes": 6}}

    text = "\n".join(comparisons({"cases": [
        case("diverged", {"64": {"l2": float("nan")}}), case("second", {"64": {"l2": 0.02}, "128": {"l2": 0.04}}),
        case("other-grid", {"128": {"l2": 0.01}}), case("first", {"64": {"l2": 0.01}})]}))
    assert "**Winner: first** (L2@64 0.0100); the runner-up second has 2.00x its error" in text
    assert text.index("| 3 | diverged") < text.index("| 4 | other-grid")
