"""Benchmark case kinds beyond training (oplab.bench.kinds): a tiny suite with a fine-tune (LoRA)
of a train case, an inversion through it, HyPINO and PROSE runs end to end (in this process) and
writes sane results and a report with a table per kind; a child named alone runs its parent
first; unknown kinds and keys are one-line errors naming the file and case."""

import json

import numpy as np
import pytest

from oplab import bench
from oplab.errors import ParameterError

TINY = """
name: tiny-kinds
description: every case kind at a toy size
datasets:
  darcy16: {problem: darcy, resolution: 16, n: 24, seed: 0}
  darcy16_shift: {problem: darcy, resolution: 16, n: 12, seed: 1, params: {contrast_low: 1.0, contrast_high: 6.0}}
cases:
  - name: darcy16-fno
    dataset: darcy16
    n_train: 16
    n_test: 8
    model: {name: fno, modes: [4, 4], width: 8, n_layers: 2, lifting_channels: 8, projection_channels: 8}
    train: {epochs: 6, batch_size: 8, eval_every: 6, lr: 1.0e-2, plot_samples: 0}
  - name: shift-lora
    kind: finetune
    parent: darcy16-fno
    dataset: darcy16_shift
    n_train: 6
    n_val: 2
    n_test: 4
    method: lora
    lora: {rank: 2}
    train: {epochs: 4, lr: 1.0e-2}
  - name: darcy16-invert
    kind: invert
    parent: darcy16-fno
    sensors: 40
    noise: 0.01
    samples: 2
    restarts: 2
    steps: 40
  - name: hypino
    kind: hypino
    model: {grid: 8, width: 8, latent: 16, channels: 4}
    train: {steps: 4, problems: 8, val_problems: 4, batch: 4}
    eval: {problems: 4, rounds: 1, n_eval: 12}
  - name: prose
    kind: prose
    data: {n_train: 9, n_val: 9, n_test: 9}
    model: {d_model: 16, heads: 2, ffn: 16, data_layers: 1, symbol_layers: 1, fusion_layers: 1, decoder_layers: 1,
            symbol_decoder_layers: 1}
    train: {steps: 3, batch_size: 9}
"""


def test_every_kind_runs_end_to_end_and_reports(tmp_path, one_thread):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    suite = bench.load_suite(path)
    assert [c.kind for c in suite.cases] == ["train", "finetune", "invert", "hypino", "prose"]
    out, lines = tmp_path / "out", []
    # the inversion alone: its parent (a train case) runs first
    first = bench.run_suite(suite, out, peers=None, only=["darcy16-invert"], isolate=False, workers=1,
                            log=lines.append)
    assert [c["name"] for c in first["cases"]] == ["darcy16-fno", "darcy16-invert"]
    report = bench.run_suite(suite, out, peers=None, isolate=False, workers=1, log=lines.append)
    assert sum("done before" in line for line in lines) == 2  # the parent and the inversion are not run again
    cases = {c["name"]: c for c in report["cases"]}
    assert not [c for c in cases.values() if "failed" in c]
    parent = cases["darcy16-fno"]

    ft = cases["shift-lora"]  # a fine-tune records its parent, trains the adapters only, and learns the new data
    assert ft["kind"] == "finetune" and ft["parent"]["case"] == "darcy16-fno"
    assert ft["parent"]["test"] == parent["test"]
    assert 0 < ft["trainable_params"] < ft["params"] == parent["params"]
    m = ft["metrics"]
    assert m["method"] == "lora" and m["k"] == 6 and m["n_val"] == 2 and m["lora"] == {"rank": 2, "alpha": 8.0}
    assert set(ft["test"]) == {"16"} and ft["epochs"] == 4
    assert m["l2"] == ft["test"]["16"]["l2"] < m["zero_shot_l2"]  # the parent on the shifted phases is far off
    run_cfg = json.loads((out / "cases/shift-lora/run/config.json").read_text())
    assert run_cfg["finetune"]["parent"] == str((out / "cases/darcy16-fno/run").resolve())

    inv = cases["darcy16-invert"]  # the estimate explains the data better than the training inputs' mean
    m = inv["metrics"]
    assert m["samples"] == 2 and len(m["rows"]) == 2 and m["sensors"] == 40 and m["prior"] == "latent"
    assert [r["sample"] for r in m["rows"]] == [16, 17]  # the parent's held-out test samples (the last 8 of 24)
    for row in m["rows"]:
        assert row["chi2"] < row["baseline_chi2"]
        assert 0 <= row["phase_accuracy"] <= 1 and np.isfinite(row["coef_l2"])
    assert (out / "cases/darcy16-invert/inversion.png").stat().st_size > 1000
    assert np.load(out / "cases/darcy16-invert/estimate_0.npy").shape == (1, 16, 16)

    hy = cases["hypino"]
    m = hy["metrics"]
    assert m["rounds"] == 1 and len(m["median"]) == len(m["mean"]) == 2 and m["test_problems"] == 4
    assert m["steps"] == 4 and all(np.isfinite(m["median"])) and hy["params"] > 0
    assert (out / "cases/hypino/hypino/weights.safetensors").exists() and (out / "cases/hypino/hypino.png").exists()

    pr = cases["prose"]
    m = pr["metrics"]
    assert set(m["solution_rel_l2"]) == {"exact", "noisy", "none", "hold_last"} and m["n_test"] == 9
    assert all(0 <= v <= 1 for k, v in m["decoding"]["none"].items() if k != "traj_rel_l2_median")
    assert (out / "cases/prose/prose.png").exists() and pr["train_seconds"] > 0

    text = (out / "report.md").read_text()
    for title in ("## Fine-tuning", "## HyPINO", "## PROSE", "## Inversion", "## darcy"):
        assert title in text
    assert "## None" not in text and "| shift-lora | darcy16-fno | darcy16_shift | lora | 6 |" in text
    assert "[inversion](cases/darcy16-invert/inversion.png)" in text


@pytest.mark.parametrize("case, message", [
    ("{name: a, kind: tune, dataset: d}", r"bad.yaml: cases\[2\] \(a\): unknown kind 'tune'; valid: train, finetune"),
    ("{name: a, kind: invert, parent: p, sensor: 3}",
     r"cases\[2\] \(a\): unknown key\(s\) \['sensor'\] for kind invert"),
    ("{name: a, kind: finetune, parent: p, dataset: d, n_train: 4, method: all}", r"\(a\): method must be one of"),
    ("{name: a, kind: finetune, parent: p, dataset: d, n_train: 4, train: {epoch: 3}}", r"\(a\): train.epoch"),
    ("{name: a, kind: finetune, parent: p, dataset: e, n_train: 4}", r"\(a\): data set 'e' is not in datasets"),
    ("{name: a, kind: finetune, dataset: d, n_train: 4}", r"\(a\): 'parent' is required \(kind finetune\)"),
    ("{name: a, kind: invert, parent: q}", r"\(a\): parent 'q' is not a train case of this suite \(train cases: p, r\)"),
    ("{name: a, kind: invert, parent: r}", r"\(a\): invert needs a one-shot operator, but parent 'r' trains task"),
    ("{name: a, kind: invert, parent: p, prior: gauss}", r"\(a\): prior must be one of latent, tv, smooth"),
    ("{name: a, kind: invert, parent: p, noise: 1e-2}", r"\(a\): noise must be a positive number.*5.0e-3"),
    ("{name: a, kind: hypino, model: {widht: 8}}", r"\(a\): unknown model key\(s\) \['widht'\]"),
    ("{name: a, kind: hypino, model: hypino}", r"\(a\): model must be a mapping of settings \(kind hypino\)"),
    ("{name: a, kind: prose, train: 5}", r"\(a\): train must be a mapping of settings \(kind prose\)"),
    ("{name: a, kind: prose, eval: {decode: [all]}}", r"\(a\): eval.decode must be a list of none, noisy, exact"),
])
def test_bad_cases_are_one_line_errors(tmp_path, case, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {d: {problem: darcy, n: 4}}\ncases:\n  - {name: p, dataset: d, model: fno}\n"
                   "  - {name: r, dataset: d, model: fno, train: {task: autoregressive}}\n"
                   f"  - {case}\n")
    with pytest.raises(ParameterError, match=message) as info:
        bench.load_suite(bad)
    assert "\n" not in str(info.value)


def test_packaged_cpu_suite_has_the_new_kinds():
    suite = bench.load_suite("cpu")
    kinds = {c.name: c.kind for c in suite.cases}
    assert {"finetune", "hypino", "prose", "invert"} <= set(kinds.values())
    by_name = {c.name: c for c in suite.cases}
    for case in suite.cases:
        if case.parent is not None:  # parents are train cases listed before their children
            assert kinds[case.parent] == "train"
            assert suite.cases.index(by_name[case.parent]) < suite.cases.index(case)
