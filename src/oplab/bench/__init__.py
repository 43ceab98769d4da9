"""Benchmark suites: lists of (data set, model, training) cases run the same way and reported side by side.

A suite is data: ``oplab/bench/suites/NAME.yaml`` (``smoke``, ``cpu``, ``paper``)
or any YAML file of the same shape::

    name: cpu
    description: ...
    datasets:                      # generated once into DIR/data/KEY.h5 (resumable)
      darcy64: {problem: darcy, resolution: 64, n: 1200, seed: 0, params: {}}
    cases:
      - name: darcy64-fno
        dataset: darcy64           # training data (the test samples are its last n_test)
        n_train: 1000
        n_test: 200
        n_val: 0                   # the default: the report scores the final model and nothing is
                                   # chosen, so every n_train sample trains (as the papers and peers)
        resolution: null           # train at this stride of the stored grid
        test_resolutions: [32]     # further strides of the test samples
        test_datasets: [darcy128]  # further data sets, tested whole (zero-shot super-resolution)
        test_dataset: null         # or: the test samples from the end of this set (e.g. exact outputs)
        model: {name: fno, modes: [12, 12], width: 32}
        train: {epochs: 100, budget_minutes: 6, batch_size: 10}
        published: {l2: 0.0108, resolution: 85, source: "Li et al. 2021 (FNO), Table 4"}
        peer: {library: neuraloperator, model: {...}, train: {...}}   # optional
        protocol: cfdbench         # optional (autoregressive cases): CFDBench's one-step and rollout
                                   # MSE/RMSE/MAE/NMSE too, reported per problem and subset

A case's ``kind`` (default ``train``: the above) says what it measures; the other kinds
(:mod:`oplab.bench.kinds`, their keys validated like a train case's)::

      - name: porous-ft-lora           # fine-tune a train case of this suite (its run folder) on K samples
        kind: finetune
        parent: lemon-pretrain-fno     # run first (also with --only); its weights, its training settings
        dataset: lemon_porous          # the new data: K train, then n_val validate, n_test from the end
        n_train: 20
        n_val: 5
        n_test: 100
        method: lora                   # full | lora | head
        lora: {rank: 8, alpha: 8.0}
        normalizers: refit             # or parent
        train: {epochs: 200, budget_minutes: 1}   # overrides of the parent's training settings
      - name: hypino                   # train a HyPINO hypernetwork on manufactured problems
        kind: hypino
        model: {width: 32}             # HyPINO's arguments
        train: {steps: 1200, problems: 4000, budget_minutes: 4}
        eval: {problems: 64, rounds: 4}
      - name: prose                    # train a small PROSE on ODE trajectories + equations
        kind: prose
        data: {n_train: 1350, n_val: 135, n_test: 225}
        model: {d_model: 64}
        train: {steps: 400, budget_minutes: 4}
      - name: darcy64-invert-latent    # recover the input field of held-out test samples of a train case
        kind: invert
        parent: darcy64-fno
        prior: latent                  # latent | tv | smooth
        sensors: 100
        noise: 0.02                    # x max|u| of each sample
        samples: 3

``run_suite`` generates the data sets, runs every case in its own process
(so peak memory is the case's own, and a crash loses one case), and writes
``DIR/report.md`` and ``DIR/report.json``. Each case keeps its run folder
``DIR/cases/NAME/run`` (config, metrics, checkpoints, figures) and its
``result.json``; rerunning the same command skips finished cases and
resumes an interrupted one from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ParameterError

SUITES_DIR = Path(__file__).parent / "suites"

_DATASET_KEYS = {"problem", "resolution", "n", "seed", "params"}
_CASE_KEYS = {"name", "kind", "dataset", "test_dataset", "n_train", "n_test", "n_val", "resolution", "test_resolutions",
              "test_datasets", "model", "train", "published", "peer", "note", "compare", "protocol"}
#: the case kinds: ``train`` (a registered model through the Trainer) and those of :mod:`oplab.bench.kinds`
KINDS = ("train", "finetune", "hypino", "prose", "invert")
_COMMON_KEYS = {"name", "kind", "note", "compare"}
#: the keys each kind takes (``train``: :data:`_CASE_KEYS`); those that are not fields of
#: :class:`Case` are kept in ``Case.options``
_KIND_KEYS = {
    "train": _CASE_KEYS,
    "finetune": _COMMON_KEYS | {"parent", "dataset", "n_train", "n_val", "n_test", "method", "train", "lora",
                                "normalizers", "checkpoint"},
    "hypino": _COMMON_KEYS | {"model", "train", "eval"},
    "prose": _COMMON_KEYS | {"model", "train", "data", "eval"},
    "invert": _COMMON_KEYS | {"parent", "prior", "sensors", "noise", "samples", "weight", "bounds", "restarts",
                              "steps", "lr", "seed", "checkpoint"},
}
_REQUIRED = {"train": ("name", "dataset", "model"), "finetune": ("name", "parent", "dataset", "n_train"),
             "hypino": ("name",), "prose": ("name",), "invert": ("name", "parent")}
_CASE_FIELDS = {"name", "dataset", "model", "train", "n_train", "n_test", "n_val", "resolution", "test_resolutions",
                "test_datasets", "test_dataset", "published", "peer", "note", "compare", "protocol", "kind", "parent"}


@dataclass
class Case:
    name: str
    dataset: str | None = None  # (hypino, prose: none; invert: its parent's)
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    n_train: int | None = None
    n_test: int | None = None
    n_val: int = 0  # the report scores the final model: nothing is chosen, every n_train sample trains
    resolution: int | None = None
    test_resolutions: list = field(default_factory=list)
    test_datasets: list = field(default_factory=list)
    test_dataset: str | None = None  # test samples from the end of this set instead (same inputs, exact outputs)
    published: dict | None = None
    peer: dict | None = None
    note: str = ""
    compare: str | None = None  # cases sharing this label are ranked against each other in the report
    protocol: str | None = None  # "cfdbench": also CFDBench's one-step / rollout metrics (oplab.eval.cfdbench)
    kind: str = "train"  # see KINDS and oplab.bench.kinds
    parent: str | None = None  # finetune, invert: the train case of the suite whose run they start from
    options: dict = field(default_factory=dict)  # the kind's other keys (method, prior, sensors, data, eval, ...)

    @property
    def datasets(self) -> list[str]:
        """The data sets this case reads: training, test and zero-shot test sets."""
        return [k for k in (self.dataset, *self.test_datasets, self.test_dataset) if k]


@dataclass
class Suite:
    name: str
    description: str
    datasets: dict
    cases: list
    source: str = ""


def available() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """A packaged suite by name, or a suite YAML file; validated (unknown keys are errors)."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = SUITES_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ParameterError(f"unknown suite {str(name_or_path)!r}; available: {', '.join(available())} "
                                 f"(or a path to a suite YAML file)")
    if not path.exists():
        raise ParameterError(f"{path}: no such suite file")
    raw = yaml.safe_load(path.read_text()) or {}
    where = str(path)
    unknown = set(raw) - {"name", "description", "datasets", "cases"}
    if unknown:
        raise ParameterError(f"{where}: unknown key(s) {sorted(unknown)}; valid: name, description, datasets, cases")
    datasets = raw.get("datasets") or {}
    from .. import problems

    for key, spec in datasets.items():
        bad = set(spec) - _DATASET_KEYS
        if bad or "problem" not in spec or "n" not in spec:
            raise ParameterError(f"{where}: datasets.{key}: needs problem and n; unknown {sorted(bad)}; "
                                 f"valid: {sorted(_DATASET_KEYS)}")
        problems.get(spec["problem"])
    cases = []
    for i, c in enumerate(raw.get("cases") or []):
        label = f"{where}: cases[{i}] ({c.get('name', '?')})"
        kind = c.get("kind", "train")
        if kind not in KINDS:
            raise ParameterError(f"{label}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
        bad = set(c) - _KIND_KEYS[kind]
        if bad:
            raise ParameterError(f"{label}: unknown key(s) {sorted(bad)} for kind {kind}; valid: "
                                 f"{sorted(_KIND_KEYS[kind])}")
        for k in _REQUIRED[kind]:
            if k not in c:
                raise ParameterError(f"{label}: {k!r} is required (kind {kind})")
        if kind != "train":
            from .kinds import validate

            for key in ("model", "train"):
                if c.get(key) is not None and not isinstance(c[key], dict):
                    raise ParameterError(f"{label}: {key} must be a mapping of settings (kind {kind}), "
                                         f"got {c[key]!r}")
            fields = {k: v for k, v in c.items() if k in _CASE_FIELDS}
            options = {k: v for k, v in c.items() if k not in _CASE_FIELDS}
            case = Case(**{**fields, "model": dict(c.get("model") or {}), "train": dict(c.get("train") or {}),
                           "n_val": c.get("n_val"), "options": options})
            validate(case, label)
        else:
            model = {"name": c["model"]} if isinstance(c["model"], str) else dict(c["model"])
            case = Case(**{**c, "model": model})
        for k in case.datasets:
            if k not in datasets:
                raise ParameterError(f"{label}: data set {k!r} is not in datasets ({', '.join(datasets)})")
        if kind != "train":
            cases.append(case)
            continue
        from ..train.config import TrainConfig, _section

        _section(TrainConfig, case.train, f"{label}: train")  # a typo fails now, not after hours of work
        for key, value in (case.published or {}).items():
            if key in ("l2", "nmse") and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ParameterError(f"{label}: published.{key} must be a number, got {value!r} (YAML reads 5e-3 "
                                     f"as text: write 5.0e-3)")
        if case.protocol not in (None, "cfdbench"):
            raise ParameterError(f"{label}: protocol must be cfdbench (or absent), got {case.protocol!r}")
        if case.protocol == "cfdbench" and case.train.get("task") != "autoregressive":
            raise ParameterError(f"{label}: protocol cfdbench scores an autoregressive step: set train.task: "
                                 f"autoregressive")
        if case.protocol == "cfdbench":
            channels = problems.get(datasets[case.dataset]["problem"]).output_channels
            if not {"u", "v"} <= set(channels):
                raise ParameterError(f"{label}: protocol cfdbench scores the velocity u, v; data set "
                                     f"{case.dataset!r} has channels {list(channels)}")
        if case.peer is not None and case.peer.get("library") not in ("neuraloperator", "deepxde"):
            raise ParameterError(f"{label}: peer.library must be neuraloperator or deepxde")
        cases.append(case)
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ParameterError(f"{where}: case names must be unique")
    trained = {c.name: c for c in cases if c.kind == "train"}
    for i, case in enumerate(cases):
        if case.parent is not None and case.parent not in trained:
            raise ParameterError(f"{where}: cases[{i}] ({case.name}): parent {case.parent!r} is not a train case of "
                                 f"this suite (train cases: {', '.join(trained) or 'none'})")
        if case.kind == "invert" and trained[case.parent].train.get("task", "map") != "map":
            raise ParameterError(f"{where}: cases[{i}] ({case.name}): invert needs a one-shot operator, but parent "
                                 f"{case.parent!r} trains task {trained[case.parent].train['task']!r}")
    return Suite(name=raw.get("name", path.stem), description=raw.get("description", ""),
                 datasets=datasets, cases=cases, source=str(path))


def dataset_path(data_dir: Path, key: str) -> Path:
    return data_dir / f"{key}.h5"


def make_datasets(suite: Suite, data_dir: Path, keys=None, workers: int = 2, log=print) -> dict:
    """Generate the suite's data sets (each resumable; an existing matching file is kept).

    Returns ``{key: {"seconds": ..., "workers": ..., "solver": ...}}``; the time of the run that
    made a file is kept beside it (``KEY.h5.json``), so a later run reports it too.
    """
    from .. import problems
    from ..data.generation import generate

    data_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for key in keys or suite.datasets:
        spec = suite.datasets[key]
        path = dataset_path(data_dir, key)
        side = path.with_name(path.name + ".json")
        prob = problems.create(spec["problem"], spec.get("resolution"), **(spec.get("params") or {}))
        fresh = not path.exists()
        if fresh:
            log(f"generating {key}: {spec['problem']} x{spec['n']} at {prob.resolution}")
        tic = time.perf_counter()
        generate(prob, spec["n"], path, seed=spec.get("seed", 0), workers=workers, resume=True)
        if fresh:
            side.write_text(json.dumps({"seconds": time.perf_counter() - tic, "workers": workers}))
        out[key] = _dataset_record(suite, data_dir, key)
    return out


def _dataset_record(suite: Suite, data_dir: Path, key: str) -> dict:
    """What the report says of data set ``key`` (already generated): size, solver, generation time."""
    from .. import problems
    from ..data import format as fmt

    spec = suite.datasets[key]
    path = dataset_path(data_dir, key)
    side = path.with_name(path.name + ".json")
    prob = problems.create(spec["problem"], spec.get("resolution"), **(spec.get("params") or {}))
    rec = json.loads(side.read_text()) if side.exists() else {}  # older files: time unknown
    return {**rec, "n": spec["n"], "problem": spec["problem"], "resolution": prob.resolution,
            "solver": fmt.read_meta(path).get("solver")}


def peer_python(explicit: str | None = None) -> str | None:
    """The peers' interpreter: ``explicit``, ``$OPLAB_PEER_PYTHON``, or ``benchmarks/.venv-peers`` of a checkout."""
    for cand in (explicit, os.environ.get("OPLAB_PEER_PYTHON")):
        if cand:
            if not Path(cand).exists():
                raise ParameterError(f"peer python {cand}: no such file")
            return cand
    guess = Path.cwd() / "benchmarks" / ".venv-peers" / "bin" / "python"
    return str(guess) if guess.exists() else None


def _with_parents(cases: list, suite: Suite) -> list:
    """``cases`` with the parent of each (finetune, invert) put before it, added where missing
    (``--only`` a child runs or reuses its parent first)."""
    by_name = {c.name: c for c in suite.cases}
    out: list = []
    for case in cases:
        if case.parent is not None and by_name[case.parent] not in out:
            out.append(by_name[case.parent])
        if case not in out:
            out.append(case)
    return out


def run_suite(suite: Suite, out: str | Path, device: str = "cpu", budget: float | None = None,
              data_dir: str | Path | None = None, workers: int = 2, peers: str | None = "auto",
              only: list | None = None, log=print, isolate: bool = True) -> dict:
    """Run ``suite`` into folder ``out``; returns the report (also written to ``out``).

    ``budget`` (minutes) replaces every case's training time budget (train, finetune, hypino,
    prose; an invert case trains nothing); ``peers``
    is the peers' python (``"auto"``: :func:`peer_python`; None: no peers).
    A case with a ``parent`` runs after it (the parent is run, or its result reused, also when
    ``only`` names the child alone). ``isolate=False`` runs the cases in this process (tests: no
    interpreter start per case; peak memory is then the whole process's, and a case that raises
    ends the whole suite instead of being recorded as failed).
    """
    from .machine import describe
    from .report import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir) if data_dir else out / "data"
    cases = [c for c in suite.cases if not only or c.name in only]
    if only and len(cases) != len(set(only)):
        missing = sorted(set(only) - {c.name for c in cases})
        raise ParameterError(f"suite {suite.name}: no case(s) {missing}; cases: {[c.name for c in suite.cases]}")
    cases = _with_parents(cases, suite)
    keys = sorted({k for c in cases for k in c.datasets})
    made = make_datasets(suite, data_dir, keys, workers=workers, log=log)
    py = peer_python() if peers == "auto" else peers
    results = []
    for case in cases:
        case_dir = out / "cases" / case.name
        results.append(run_case(case, case_dir, data_dir, suite.datasets, device, budget, log=log, isolate=isolate))
        if case.peer is not None:
            if py is None:
                results[-1]["peer"] = {"library": case.peer["library"],
                                       "skipped": "no peer python (bash benchmarks/setup_peers.sh, or --peer-python)"}
            else:
                results[-1]["peer"] = run_peer(case, case_dir, data_dir, device, budget, py,
                                               oplab_epochs=results[-1].get("epochs"), log=log)
    if only:  # the report covers every case of the suite finished in this folder, not only these
        done = {r["name"]: r for r in results}
        results = []
        for case in suite.cases:
            path = out / "cases" / case.name / "result.json"
            if case.name in done:
                results.append(done[case.name])
            elif path.exists():
                rec = json.loads(path.read_text())
                peer = out / "cases" / case.name / "peer" / "result.json"
                if peer.exists():
                    rec["peer"] = json.loads(peer.read_text())
                results.append(rec)
    # the data-set table covers every reported case (with --only, also those finished earlier)
    reported = {r.get("name") for r in results}
    datasets = {}
    for k in sorted({k for c in suite.cases if c.name in reported for k in c.datasets}):
        if k in made:
            datasets[k] = {**suite.datasets[k], **made[k]}
        elif dataset_path(data_dir, k).exists():
            datasets[k] = {**suite.datasets[k], **_dataset_record(suite, data_dir, k)}
    labels = {c.name: c.compare for c in suite.cases}
    for rec in results:  # the suite's grouping is presentation: a case finished before a label was added joins it
        if rec.get("name") in labels and isinstance(rec.get("case"), dict):
            rec["case"]["compare"] = labels[rec["name"]]
    report = {"suite": suite.name, "description": suite.description, "source": suite.source,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": describe(device),
              "command": " ".join(["oplab", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("oplab") else "",
              "datasets": datasets, "cases": results}
    write_report(report, out)
    return report


def _case_config(case: Case, data_dir: Path, device: str, budget: float | None, run_dir: Path) -> dict:
    train = {**case.train, "device": device}
    if budget is not None:
        train["budget_minutes"] = float(budget)
    return {
        "data": {"train": str(dataset_path(data_dir, case.dataset)), "n_train": case.n_train, "n_test": case.n_test,
                 "n_val": case.n_val, "test": str(dataset_path(data_dir, case.test_dataset)) if case.test_dataset else None,
                 "resolution": case.resolution, "test_resolutions": list(case.test_resolutions),
                 "test_files": [str(dataset_path(data_dir, k)) for k in case.test_datasets]},
        "model": case.model, "train": train, "out": str(run_dir),
    }


def _kind_spec(case: Case, case_dir: Path, data_dir: Path, datasets: dict, device: str,
               budget: float | None) -> dict:
    """What the child process of a non-train case reads (``case.json``): the case, the device and
    budget, its data file and, for a case with a parent, the parent's run folder and result."""
    spec = {"case": case.__dict__, "kind": case.kind, "device": device, "budget": budget,
            "data_file": str(dataset_path(data_dir, case.dataset)) if case.dataset else None,
            "dataset": datasets.get(case.dataset) if case.dataset else None}
    if case.parent is not None:
        parent_dir = case_dir.parent / case.parent
        spec["parent"] = {"name": case.parent, "run_dir": str(parent_dir / "run"),
                          "result": json.loads((parent_dir / "result.json").read_text())}
    return spec


def run_case(case: Case, case_dir: Path, data_dir: Path, datasets: dict, device: str = "cpu",
             budget: float | None = None, log=print, isolate: bool = True) -> dict:
    """Run one case in a child process (``python -m oplab.bench.case``; ``isolate=False``: in this
    process); reuse its result if present. A case whose parent has no result (it failed) is
    recorded as failed without running."""
    result_path = case_dir / "result.json"
    if result_path.exists():
        log(f"[{case.name}] done before: {result_path}")
        return json.loads(result_path.read_text())
    if case.parent is not None and not (case_dir.parent / case.parent / "result.json").exists():
        log(f"[{case.name}] not run: its parent {case.parent} has no result")
        return {"name": case.name, "kind": case.kind, "case": case.__dict__,
                "failed": f"parent {case.parent} failed"}
    case_dir.mkdir(parents=True, exist_ok=True)
    if case.kind == "train":
        cfg = _case_config(case, data_dir, device, budget, case_dir / "run")
        spec = {"case": case.__dict__, "config": cfg, "dataset": datasets[case.dataset]}
        what = f"{case.model.get('name')} on {case.dataset}"
    else:
        spec = _kind_spec(case, case_dir, data_dir, datasets, device, budget)
        what = f"{case.kind}" + (f" from {case.parent}" if case.parent else "") + (
            f" on {case.dataset}" if case.dataset else "")
    (case_dir / "case.json").write_text(json.dumps(spec, indent=1))
    log(f"[{case.name}] {what}")
    if isolate:
        code = subprocess.run([sys.executable, "-m", "oplab.bench.case", str(case_dir)]).returncode
    else:
        from .case import main as case_main

        code = case_main(str(case_dir))
    if code != 0 or not result_path.exists():
        if code in (130, -2):
            raise KeyboardInterrupt
        log(f"[{case.name}] failed (exit {code}); see above. Rerun the suite to retry it.")
        return {"name": case.name, "kind": case.kind, "case": case.__dict__, "failed": f"exit code {code}"}
    return json.loads(result_path.read_text())


def run_peer(case: Case, case_dir: Path, data_dir: Path, device: str, budget: float | None, python: str,
             oplab_epochs: int | None = None, log=print) -> dict:
    """Run the case's peer library in its own interpreter on the same data (see ``peer_driver.py``).

    ``peer.train`` overrides the case's training settings; ``epochs: same``
    takes the epoch count oplab's run ended with (equal iterations)."""
    peer_dir = case_dir / "peer"
    result_path = peer_dir / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    peer_dir.mkdir(parents=True, exist_ok=True)
    train = {**case.train, **(case.peer.get("train") or {})}
    if train.get("epochs") == "same":
        if not oplab_epochs:
            return {"library": case.peer["library"], "skipped": "peer epochs 'same' but oplab's run failed"}
        train["epochs"], train["budget_minutes"] = oplab_epochs, 0.0
    elif budget is not None:
        train["budget_minutes"] = float(budget)
    spec = {"library": case.peer["library"], "model": case.peer.get("model") or {}, "train": train,
            "train_file": str(dataset_path(data_dir, case.dataset)), "n_train": case.n_train,
            "n_test": case.n_test, "resolution": case.resolution,
            "test_files": [str(dataset_path(data_dir, k)) for k in case.test_datasets],
            "device": device, "out": str(result_path)}
    (peer_dir / "spec.json").write_text(json.dumps(spec, indent=1))
    log(f"[{case.name}] peer {spec['library']} ({python})")
    driver = Path(__file__).with_name("peer_driver.py")
    proc = subprocess.run([python, str(driver), str(peer_dir / "spec.json")])
    if proc.returncode != 0 or not result_path.exists():
        return {"library": spec["library"], "failed": f"exit code {proc.returncode}"}
    result = json.loads(result_path.read_text())
    result["test"] = _peer_errors(spec, peer_dir)
    tmp = peer_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, result_path)
    return result


def _peer_errors(spec: dict, peer_dir: Path) -> dict:
    """The peer's saved predictions scored by oplab's metric, on the test parts oplab's run of the
    case plans (the same samples and labels)."""
    import numpy as np
    import torch

    from .. import losses
    from ..train.config import DataConfig
    from ..train.data import plan

    split = plan(DataConfig(train=spec["train_file"], n_train=spec.get("n_train"), n_test=spec.get("n_test"),
                            n_val=0, resolution=spec.get("resolution"), test_files=spec["test_files"]))
    out = {}
    for i, part in enumerate(split.tests):
        data = part.load()
        pred = torch.from_numpy(np.load(peer_dir / f"pred_{i}.npy")).reshape(data.y.shape)
        out[part.label] = {k: float(fn(pred, data.y, data.out_coords, data.periodic))
                           for k, fn in (("l2", losses.relative_l2), ("h1", losses.relative_h1))}
    return out


__all__ = ["KINDS", "Case", "Suite", "available", "load_suite", "make_datasets", "run_case", "run_suite"]
