"""Benchmark cases that are not "train a registered model": fine-tuning, HyPINO, PROSE, inversion.

A suite case's ``kind`` (:data:`oplab.bench.KINDS`) chooses what its child process
(``python -m oplab.bench.case``) runs; ``train`` is :mod:`oplab.bench.case` itself, the others
are here. Each writes ``result.json`` with the common fields the report reads (``name``, ``kind``,
``case``, ``dataset``, ``model``, ``params``, ``train_seconds``, ``seconds``, ``figures``,
``peak_memory_mib``, ``foreign_cores``, ``seed``) and its measurements in ``metrics``; a
fine-tune also has ``test`` in a train case's structure (so it can join a ``compare`` group).

* ``finetune`` (:func:`oplab.train.finetune.finetune`, what ``oplab finetune`` runs): the run of
  the ``parent`` case (a train case of the suite, run first) fine-tuned on the first ``n_train``
  (K) samples of ``dataset`` by ``method`` (full, lora, head); the next ``n_val`` validate
  (default ``max(2, K // 4)``), ``n_test`` from the end test. ``train`` overrides the parent's
  training settings (``--budget`` replaces ``budget_minutes``). Measured like a train case (test
  L2, time, parameters, trainable parameters) plus the parent's error on the new test samples
  before fine-tuning (``metrics.zero_shot_l2``) and on its own test set (``metrics.parent_l2``).
  An interrupted case resumes from the run's last checkpoint (:func:`oplab.train.finetune.resume`).
* ``hypino`` (:func:`oplab.models.hypino.pretrain`, what ``oplab hypino-train`` runs): a
  hypernetwork trained on ``train.problems`` manufactured problems (``train.steps`` Adam steps or
  ``train.budget_minutes``, checkpoint chosen on ``train.val_problems`` others), then tested on
  ``eval.problems`` held-out manufactured problems (a third seed): the median / mean relative L2
  error of the zero-shot PINN and after each of ``eval.rounds`` refinement rounds
  (:func:`oplab.models.hypino.refine`). Figure: one test problem, exact, zero-shot, errors, and the
  error per round. An interrupted case trains again.
* ``prose`` (:mod:`oplab.models.prose`, as ``benchmarks/prose.py``): train / validation / test
  sets of ODE trajectories from seeds 0 / 1 / 2 (``data``: sizes and :func:`make_dataset`'s
  options), a PROSE (``model``) trained by :func:`train_prose` (``train``; checkpoint chosen on
  the validation set), then on the test set: the relative L2 error of the solution at the query
  times with the exact, the noisy (5%) and no equation (symbols masked), the hold-last-state
  reference, and greedy decoding (``eval.decode``: the symbol inputs, default data only): the
  fractions decoded token for token, valid, with the right structure and within ``eval.tol``
  (5%) in every coefficient. Figure: three test samples, truth and predictions with and without
  symbols. An interrupted case trains again.
* ``invert`` (:func:`oplab.inverse.invert`, what ``oplab invert`` runs per observation file): the
  ``parent``'s operator (a one-shot grid map, e.g. a Darcy surrogate) inverted on its first
  ``samples`` held-out test samples: ``sensors`` points drawn uniformly, the true output read
  there plus Gaussian noise of ``noise x max|u|``; the ``prior`` (latent, tv, smooth; ``weight``,
  ``bounds``), ``restarts``, ``steps``, ``lr``. Measured per sample and averaged: the relative L2
  error of the estimated input, the fraction of nodes in the right phase (a two-phase ``darcy``
  set: above or below the phases' midpoint), chi^2 per observed value, seconds; and the same for
  the training inputs' mean field (``baseline``: the estimate without data). Figure: truth,
  estimate, error, the observed output with the sensors. Deterministic given ``seed``.
"""

from __future__ import annotations

import inspect
import math
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import ParameterError, check_int

HYPINO_TRAIN = {"steps", "problems", "val_problems", "batch", "lr", "w_phys", "budget_minutes", "seed"}
HYPINO_EVAL = {"problems", "rounds", "n_eval"}
PROSE_TRAIN = {"steps", "batch_size", "lr", "weight_decay", "symbol_weight", "p_noisy", "p_masked", "n_query",
               "eval_every", "budget_minutes", "seed"}
PROSE_DATA = {"n_train", "n_val", "n_test", "families", "t_range", "t_num", "n_input", "param_range", "symbol_noise"}
PROSE_EVAL = {"decode", "tol"}
PRIORS = ("latent", "tv", "smooth")


# ----------------------------------------------------------------------------- validation
def _keys(label: str, key: str, value, valid: set) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParameterError(f"{label}: {key} must be a mapping of {sorted(valid)}, got {value!r}")
    bad = set(value) - valid
    if bad:
        raise ParameterError(f"{label}: unknown {key} key(s) {sorted(bad)}; valid: {sorted(valid)}")
    return value


def _int(label: str, key: str, value, minimum: int = 1) -> None:
    check_int(label, key, value, minimum, optional=True)


def _positive(label: str, key: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value) or value <= 0):
        raise ParameterError(f"{label}: {key} must be a positive number, got {value!r} (YAML reads 5e-3 as text: "
                             f"write 5.0e-3)")


def _signature(cls) -> set:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def validate(case, label: str) -> None:
    """One-line errors for a non-train case's settings (``label``: the file and case), before any work."""
    opts = case.options
    if case.kind == "finetune":
        from ..train.config import TrainConfig, _section
        from ..train.finetune import METHODS, NORMALIZERS

        if opts.get("method", "full") not in METHODS:
            raise ParameterError(f"{label}: method must be one of {', '.join(METHODS)}, got {opts['method']!r}")
        if opts.get("normalizers", "refit") not in NORMALIZERS:
            raise ParameterError(f"{label}: normalizers must be one of {', '.join(NORMALIZERS)}, "
                                 f"got {opts['normalizers']!r}")
        if opts.get("checkpoint", "best") not in ("best", "last"):
            raise ParameterError(f"{label}: checkpoint must be best or last, got {opts['checkpoint']!r}")
        lora = _keys(label, "lora", opts.get("lora"), {"rank", "alpha"})
        _int(label, "lora.rank", lora.get("rank"))
        _positive(label, "lora.alpha", lora.get("alpha"))
        _int(label, "n_train", case.n_train)
        _int(label, "n_val", case.n_val, 0)
        _int(label, "n_test", case.n_test)
        _section(TrainConfig, case.train, f"{label}: train")
    elif case.kind == "hypino":
        from ..models.hypino import HyPINO

        _keys(label, "model", case.model, _signature(HyPINO) | {"name"})
        train = _keys(label, "train", case.train, HYPINO_TRAIN)
        ev = _keys(label, "eval", opts.get("eval"), HYPINO_EVAL)
        for key in ("steps", "problems", "val_problems", "batch"):
            _int(label, f"train.{key}", train.get(key))
        _int(label, "train.seed", train.get("seed"), 0)
        for key in ("lr", "budget_minutes"):
            _positive(label, f"train.{key}", train.get(key))
        _int(label, "eval.problems", ev.get("problems"))
        _int(label, "eval.rounds", ev.get("rounds"), 0)
        _int(label, "eval.n_eval", ev.get("n_eval"), 2)
    elif case.kind == "prose":
        from ..models.prose import PROSE

        _keys(label, "model", case.model, _signature(PROSE) | {"name"})
        train = _keys(label, "train", case.train, PROSE_TRAIN)
        data = _keys(label, "data", opts.get("data"), PROSE_DATA)
        ev = _keys(label, "eval", opts.get("eval"), PROSE_EVAL)
        for key in ("steps", "batch_size", "eval_every"):
            _int(label, f"train.{key}", train.get(key))
        _int(label, "train.seed", train.get("seed"), 0)
        for key in ("lr", "budget_minutes"):
            _positive(label, f"train.{key}", train.get(key))
        for key in ("n_train", "n_val", "n_test"):
            _int(label, f"data.{key}", data.get(key))
        decode = ev.get("decode", ["none"])
        if not isinstance(decode, list) or not set(decode) <= {"none", "noisy", "exact"}:
            raise ParameterError(f"{label}: eval.decode must be a list of none, noisy, exact, got {decode!r}")
        _positive(label, "eval.tol", ev.get("tol"))
    elif case.kind == "invert":
        if opts.get("prior", "latent") not in PRIORS:
            raise ParameterError(f"{label}: prior must be one of {', '.join(PRIORS)}, got {opts['prior']!r}")
        for key in ("sensors", "samples", "restarts", "steps"):
            _int(label, key, opts.get(key))
        _int(label, "seed", opts.get("seed"), 0)
        for key in ("noise", "weight", "lr"):
            _positive(label, key, opts.get(key))
        bounds = opts.get("bounds")
        if bounds is not None and not (isinstance(bounds, list) and len(bounds) == 2
                                       and all(isinstance(b, (int, float)) for b in bounds) and bounds[0] < bounds[1]):
            raise ParameterError(f"{label}: bounds must be [LO, HI] with LO < HI, got {bounds!r}")
        if opts.get("checkpoint", "best") not in ("best", "last"):
            raise ParameterError(f"{label}: checkpoint must be best or last, got {opts['checkpoint']!r}")


# ----------------------------------------------------------------------------- running
def run_kind(spec: dict, case_dir: Path, log=print) -> dict:
    """Run the non-train case of ``case_dir/case.json`` (``spec``); returns its result record."""
    from .case import peak_memory
    from .machine import Foreign

    case = spec["case"]
    device = spec.get("device", "cpu")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    run = {"finetune": _finetune, "hypino": _hypino, "prose": _prose, "invert": _invert}[case["kind"]]
    tic = time.perf_counter()
    with Foreign() as foreign:
        record = run(spec, Path(case_dir), log)
    peak, peak_kind = peak_memory(device)
    head = {"name": case["name"], "kind": case["kind"], "case": case, "dataset": spec.get("dataset")}
    record = {**head, **record, "seconds": time.perf_counter() - tic, "peak_memory_mib": peak,
              "peak_memory_kind": peak_kind, "foreign_cores": foreign.cores}
    log("done: " + ", ".join(f"{k} {v:.4g}" for k, v in (record.get("summary") or {}).items()))
    return record


def _budget_minutes(spec: dict, train: dict):
    return float(spec["budget"]) if spec.get("budget") is not None else train.get("budget_minutes")


def _finetune(spec: dict, case_dir: Path, log) -> dict:
    from ..rundir import RunDir
    from ..train.finetune import finetune, resume

    case, opts = spec["case"], spec["case"]["options"]
    out = case_dir / "run"
    train = {**case["train"], "device": spec.get("device", "cpu")}
    budget = _budget_minutes(spec, train)
    if budget is not None:
        train["budget_minutes"] = budget
    lora = opts.get("lora") or {}
    if (out / "config.json").exists():  # interrupted: continue from the last checkpoint
        resume(out, log=log)
    else:
        finetune(spec["parent"]["run_dir"], spec["data_file"], opts.get("method", "full"), case["n_train"], out,
                 n_val=case.get("n_val"), n_test=case.get("n_test"), checkpoint=opts.get("checkpoint", "best"),
                 lora_rank=lora.get("rank", 8), lora_alpha=lora.get("alpha", 8.0),
                 normalizers=opts.get("normalizers", "refit"), log=log, **train)
    run = RunDir.open(out)
    history = run.metrics()
    ft = run.config["finetune"]
    final = next(r for r in reversed(history) if "test" in r)
    label = next(iter(final["test"]))
    parent = spec["parent"]["result"]
    zero_shot = (ft.get("parent_errors") or {}).get("test") or {}
    parent_label = parent.get("test_label")
    parent_l2 = ((parent.get("test") or {}).get(parent_label) or {}).get("l2")
    epoch_s = [r["epoch_seconds"] for r in history]
    state = run.state() or {}
    metrics = {"method": ft["method"], "k": ft["n_train"], "n_val": ft["n_val"], "normalizers": ft.get("normalizers"),
               "trainable_params": ft["trainable_params"], "total_params": ft["total_params"],
               "l2": final["test"][label]["l2"], "zero_shot_l2": (zero_shot.get(label) or {}).get("l2"),
               "parent_l2": parent_l2, "parent_test_label": parent_label, "test_label": label,
               "lora": {k: ft["lora"][k] for k in ("rank", "alpha")} if ft.get("lora") else None,
               "head": ft.get("head")}
    return {"model": run.config["model"], "train": run.config["train"], "params": ft["total_params"],
            "trainable_params": ft["trainable_params"], "epochs": len(history),
            "epoch_seconds": statistics.median(epoch_s),
            "train_seconds": sum(epoch_s) + sum(r.get("eval_seconds", 0.0) for r in history),
            "test": final["test"], "test_label": label, "best_val": state.get("best"),
            "seed": run.config["train"].get("seed"), "run_dir": str(out),
            "parent": {"case": spec["parent"]["name"], "run_dir": spec["parent"]["run_dir"],
                       "checkpoint": ft.get("parent_checkpoint"), "weights_sha256": ft.get("parent_weights_sha256"),
                       "test": parent.get("test"), "test_label": parent_label, "zero_shot": zero_shot},
            "metrics": metrics,
            "figures": {k: str(run.figure(k)) for k in ("predictions", "loss") if run.figure(k).exists()},
            "curve": [{"epoch": r["epoch"], "train_loss": r["train_loss"],
                       **({"test_l2": r["test"][label]["l2"]} if "test" in r else {})} for r in history],
            "summary": {"L2": metrics["l2"], **({"zero-shot L2": metrics["zero_shot_l2"]}
                                               if metrics["zero_shot_l2"] is not None else {})}}


def _hypino(spec: dict, case_dir: Path, log) -> dict:
    from ..models import hypino as hp

    case = spec["case"]
    train, ev = case["train"], case["options"].get("eval") or {}
    model_kw = {k: v for k, v in case["model"].items() if k != "name"}
    budget = _budget_minutes(spec, train)
    seed = train.get("seed", 0)
    folder = case_dir / "hypino"
    if folder.exists():  # an interrupted run: no checkpoint to continue from; train again
        shutil.rmtree(folder)
    model, rec = hp.pretrain(steps=train.get("steps", 1000), n_train=train.get("problems", 4000),
                             n_val=train.get("val_problems", 64), seed=seed, batch=train.get("batch", 32),
                             lr=train.get("lr", 1e-3), w_phys=train.get("w_phys", 0.1),
                             time_budget=None if budget is None else 60.0 * budget, out=folder, log=log, **model_kw)
    # held-out test problems: a seed used neither for training (seed) nor for validation (seed + 1)
    gen = torch.Generator().manual_seed(seed + 2)
    problems = [hp.random_problem(gen) for _ in range(ev.get("problems", 64))]
    rounds, n_eval = ev.get("rounds", 4), ev.get("n_eval", 64)
    tic = time.perf_counter()
    ensemble = hp.refine(model, problems, rounds)
    err = np.array(hp.ensemble_errors(model, problems, ensemble, n=n_eval))  # [problem, round]
    eval_s = time.perf_counter() - tic
    by_domain = {kind: np.median(err[[i for i, p in enumerate(problems) if p.domain.kind == kind]], 0).tolist()
                 for kind in hp.DOMAIN_KINDS if any(p.domain.kind == kind for p in problems)}
    metrics = {"steps": len(rec["history"]), "best_step": rec["best_step"], "val_error": rec["val_error"],
               "test_problems": len(problems), "rounds": rounds, "median": np.median(err, 0).tolist(),
               "mean": err.mean(0).tolist(), "improved": float((err[:, -1] < err[:, 0]).mean()) if rounds else None,
               "by_domain": by_domain, "eval_seconds": eval_s, "n_eval": n_eval}
    figures = {}
    fig = _hypino_figure(case_dir / "hypino.png", model, problems[0], ensemble, metrics, n_eval)
    if fig:
        figures["hypino"] = fig
    return {"model": {"name": "hypino", **model.config}, "train": {**train, "budget_minutes": budget},
            "params": sum(p.numel() for p in model.parameters()), "train_seconds": rec["seconds"],
            "epochs": None, "seed": seed, "run_dir": str(folder), "metrics": metrics, "figures": figures,
            "curve": [{"step": s, "val_l2": e} for s, e in rec["val"]],
            "summary": {"zero-shot median L2": metrics["median"][0], "after refinement": metrics["median"][-1]}}


def _hypino_figure(path: Path, model, problem, ensemble, metrics: dict, n: int):
    from ..models import hypino as hp

    plt = _pyplot()
    dom, _ = problem.domain.masks(n)
    xy = hp.grid_nodes(n).reshape(1, -1, 2)
    first = [{k: v[:1] for k, v in e.items()} for e in ensemble]
    with torch.no_grad():
        exact = problem.exact(xy[0]).reshape(n, n)
        zero = hp.ensemble_apply(first[:1], xy, model.freqs)[0].reshape(n, n)
        last = hp.ensemble_apply(first, xy, model.freqs)[0].reshape(n, n)
    mask = lambda f: np.where(dom.numpy(), f.numpy(), np.nan)  # noqa: E731
    panels = [("exact u", mask(exact)), ("zero-shot PINN", mask(zero)),
              ("|error| zero-shot", mask((zero - exact).abs())),
              (f"|error| after {len(ensemble) - 1} rounds", mask((last - exact).abs()))]
    fig, axes = plt.subplots(1, 5, figsize=(16, 3.2))
    emax = float(np.nanmax(panels[2][1]))
    for ax, (title, field) in zip(axes, panels):
        im = ax.imshow(field.T, origin="lower", extent=(-1, 1, -1, 1),
                       **({"vmin": 0, "vmax": emax} if title.startswith("|") else {}))
        ax.set_title(f"{title}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046)
    axes[0].set_title(f"exact u ({problem.domain.kind}, k = {float(problem.k):.2g})", fontsize=9)
    ax = axes[4]
    rounds = list(range(len(metrics["median"])))
    ax.semilogy(rounds, metrics["median"], "o-", label="median")
    ax.semilogy(rounds, metrics["mean"], "s--", label="mean")
    ax.set_xlabel("refinement round")
    ax.set_title(f"relative L2, {metrics['test_problems']} test problems", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def _prose(spec: dict, case_dir: Path, log) -> dict:
    from ..models import prose as P

    case, opts = spec["case"], spec["case"]["options"]
    train_kw, data, ev = dict(case["train"]), opts.get("data") or {}, opts.get("eval") or {}
    budget = _budget_minutes(spec, train_kw)
    seed = train_kw.get("seed", 0)
    data_kw = {k: v for k, v in data.items() if k not in ("n_train", "n_val", "n_test")}
    tic = time.perf_counter()
    train = P.make_dataset(data.get("n_train", 2700), seed=0, **data_kw)
    val = P.make_dataset(data.get("n_val", 270), seed=1, **data_kw)
    test = P.make_dataset(data.get("n_test", 450), seed=2, **data_kw)
    data_s = time.perf_counter() - tic
    log(f"data: {len(train['dim'])} / {len(val['dim'])} / {len(test['dim'])} samples of {len(train['families'])} "
        f"families in {data_s:.0f} s")
    model_kw = {k: v for k, v in case["model"].items() if k != "name"}
    torch.manual_seed(seed)
    model = P.PROSE(**model_kw)
    steps = train_kw.get("steps", 800)
    kw = {k: train_kw[k] for k in ("batch_size", "lr", "weight_decay", "symbol_weight", "p_noisy", "p_masked",
                                   "n_query") if k in train_kw}
    hist = P.train_prose(model, train, val, steps=steps, eval_every=train_kw.get("eval_every", max(1, steps // 8)),
                         time_budget=None if budget is None else 60.0 * budget, seed=seed, log=log, **kw)
    P.save_prose(model, case_dir / "prose")
    tic = time.perf_counter()
    solution, preds = {}, {}
    for symbols in ("exact", "noisy", "none"):
        preds[symbols] = P.predict_values(model, test, symbols)
        err = P.rel_l2(preds[symbols], test["query"], test["dim"])
        solution[symbols] = {"mean": float(err.mean()), "median": float(np.median(err))}
    hold = np.repeat(test["data"][:, -1:], test["query"].shape[1], axis=1)
    err = P.rel_l2(hold, test["query"], test["dim"])
    solution["hold_last"] = {"mean": float(err.mean()), "median": float(np.median(err))}
    tol = ev.get("tol", 0.05)
    decoding = {}
    for symbols in ev.get("decode", ["none"]):
        m = P.decoded_metrics(P.decode(model, test, symbols), test, tol=tol)
        decoding[symbols] = {"exact": float(m["exact"].mean()), "valid": float(m["valid"].mean()),
                             "structure": float(m["structure"].mean()), "within_tol": float(m["within_tol"].mean()),
                             "traj_rel_l2_median": float(np.median(m["traj_rel_l2"]))}
    metrics = {"steps": hist["steps_done"], "best_step": hist["best_step"], "data_seconds": data_s,
               "eval_seconds": time.perf_counter() - tic, "n_train": len(train["dim"]), "n_val": len(val["dim"]),
               "n_test": len(test["dim"]), "families": test["families"], "solution_rel_l2": solution,
               "decoding": decoding, "tol": tol}
    figures = {"prose": _prose_figure(case_dir / "prose.png", test, preds)}
    first = next(iter(decoding.values()), {})
    return {"model": {"name": "prose", **model_kw}, "train": {**train_kw, "budget_minutes": budget},
            "params": sum(p.numel() for p in model.parameters()), "train_seconds": hist["train_seconds"],
            "epochs": None, "seed": seed, "run_dir": str(case_dir / "prose"), "metrics": metrics, "figures": figures,
            "curve": [{"step": s, "train_mse": m, "val_score": v["score"]}
                      for s, m, v in zip(hist["step"], hist["train_mse"], hist["val"])],
            "summary": {"L2 with symbols": solution["exact"]["mean"], "L2 data only": solution["none"]["mean"],
                        **({"decoded within tol": first["within_tol"]} if first else {})}}


def _prose_figure(path: Path, test: dict, preds: dict) -> str:
    plt = _pyplot()
    fams = test["family"]
    present = np.unique(fams)  # three families spread over the list (1D, 2D and 3D systems)
    chosen = present[np.unique(np.linspace(0, len(present) - 1, min(3, len(present))).round().astype(int))]
    picks = [int(np.flatnonzero(fams == k)[0]) for k in chosen]
    fig, axes = plt.subplots(1, len(picks), figsize=(4.2 * len(picks), 3.2), squeeze=False)
    for ax, i in zip(axes[0], picks):
        for d in range(int(test["dim"][i])):
            color = f"C{d}"
            ax.plot(test["t_input"], test["data"][i, :, d], ".", color=color, ms=3)
            ax.plot(test["t_query"], test["query"][i, :, d], "-", color=color, lw=1.2,
                    label="truth" if d == 0 else None)
            ax.plot(test["t_query"], preds["exact"][i, :, d], "--", color=color, lw=1,
                    label="with equation" if d == 0 else None)
            ax.plot(test["t_query"], preds["none"][i, :, d], ":", color=color, lw=1.4,
                    label="data only" if d == 0 else None)
        ax.axvline(test["t_input"][-1], color="0.6", lw=0.6)
        ax.set_title(test["families"][fams[i]], fontsize=9)
        ax.set_xlabel("t")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def _invert(spec: dict, case_dir: Path, log) -> dict:
    from .. import inverse
    from ..predictor import load
    from ..rundir import RunDir
    from ..train.data import Part, recorded_split

    opts = spec["case"]["options"]
    parent_dir = spec["parent"]["run_dir"]
    op = load(parent_dir, opts.get("checkpoint", "best"))
    if op.task != "map" or op.kind != "grid" or op.in_axes != op.out_axes:
        raise ParameterError(f"invert case {spec['case']['name']}: its parent {spec['parent']['name']} must be a "
                             f"one-shot grid operator with outputs on its input grid (train.task map)")
    run = RunDir.open(parent_dir)
    split = recorded_split(run)
    test = split.tests[0]
    samples = opts.get("samples", 3)
    test_idx = (test.indices or list(range(len(test))))[:samples]
    data = Part(test.file, test_idx, test.resolution).load()
    train_idx = (split.train.indices or list(range(len(split.train))))[:64]
    mean_field = Part(split.train.file, train_idx, split.train.resolution).load(outputs=False).x.mean(0)
    axes = op.in_axes
    params = op.data.get("params") or {}
    c_in = op.data["train_input_shape"][0]
    prior_name = opts.get("prior", "latent")
    bounds = opts.get("bounds")
    if bounds is None and prior_name != "latent":
        bounds = inverse.input_range(run.data.get("train"))
    k, level, seed = opts.get("sensors", 100), opts.get("noise", 0.02), opts.get("seed", 0)
    two_phase = "contrast_low" in params and "contrast_high" in params
    mid = 0.5 * (params["contrast_low"] + params["contrast_high"]) if two_phase else None
    forward = inverse.surrogate(op)
    prior = inverse.make_prior(prior_name, axes, c_in, opts.get("weight", 1.0), bounds, params)  # (stateless: shared)
    rows, first = [], None
    for i in range(len(test_idx)):
        a_true, u_true = data.x[i].float(), data.y[i].float()
        rng = np.random.default_rng([seed, i])
        pts = np.stack([rng.uniform(min(a.lo, a.hi), max(a.lo, a.hi), k) for a in axes], axis=1)
        clean = inverse.observe(u_true[None], torch.from_numpy(pts).float(), axes)[0].numpy().astype(np.float64)
        sigma = level * float(u_true.abs().max())
        obs = inverse.Observations(pts, clean + sigma * rng.standard_normal(clean.shape), np.full(clean.shape, sigma),
                                   list(range(clean.shape[1])))
        got = inverse.invert(forward, axes, obs, prior, restarts=opts.get("restarts", 4), steps=opts.get("steps", 400),
                             lr=opts.get("lr", 0.1), seed=seed + i)
        est = got["estimate"].float()
        with torch.no_grad():
            base_chi2 = float(inverse.misfit(forward, mean_field[None].float(), torch.from_numpy(pts).float(), obs,
                                             axes)[0]) * 2.0 / obs.values.size
        row = {"sample": int(test_idx[i]), "coef_l2": float((est - a_true).norm() / a_true.norm()),
               "chi2": got["misfit"], "seconds": got["seconds"],
               "baseline_coef_l2": float((mean_field - a_true).norm() / a_true.norm()), "baseline_chi2": base_chi2}
        if two_phase:
            row["phase_accuracy"] = float(((est > mid) == (a_true > mid)).float().mean())
            row["baseline_phase_accuracy"] = float(((mean_field > mid) == (a_true > mid)).float().mean())
        rows.append(row)
        log(f"test sample {row['sample']}: coefficient L2 {row['coef_l2']:.3f}"
            + (f", phase {row['phase_accuracy']:.3f}" if two_phase else "")
            + f", chi2 {row['chi2']:.2f} (training mean field: {base_chi2:.2f}), {row['seconds']:.1f} s")
        if first is None:
            first = (a_true, est, u_true, obs)
        np.save(case_dir / f"estimate_{i}.npy", est.numpy())
    keys = [key for key in rows[0] if key != "sample"]
    metrics = {"prior": prior_name, "sensors": k, "noise": level, "samples": len(rows),
               "restarts": opts.get("restarts", 4), "steps": opts.get("steps", 400),
               **{key: statistics.mean(r[key] for r in rows) for key in keys}, "rows": rows,
               "parent_test_l2": ((spec["parent"]["result"].get("test") or {}).get(
                   spec["parent"]["result"].get("test_label")) or {}).get("l2")}
    figures = {}
    if len(axes) == 2:
        figures["inversion"] = _invert_figure(case_dir / "inversion.png", *first, axes, rows[0])
    parent = spec["parent"]["result"]
    return {"model": parent.get("model"), "params": parent.get("params"), "train_seconds": None,
            "dataset": parent.get("dataset"), "epochs": None, "seed": seed, "run_dir": str(case_dir),
            "parent": {"case": spec["parent"]["name"], "run_dir": parent_dir, "test": parent.get("test"),
                       "test_label": parent.get("test_label")},
            "metrics": metrics, "figures": figures,
            "summary": {"coefficient L2": metrics["coef_l2"], "chi2": metrics["chi2"],
                        "training-mean chi2": metrics["baseline_chi2"]}}


def _invert_figure(path: Path, a_true, est, u_true, obs, axes, row: dict) -> str:
    plt = _pyplot()
    extent = (axes[1].lo, axes[1].hi, axes[0].hi, axes[0].lo)  # rows: the first axis
    lo, hi = float(a_true[0].min()), float(a_true[0].max())
    err = (est[0] - a_true[0]).abs()
    panels = [("truth", a_true[0], {"vmin": lo, "vmax": hi}),
              (f"estimate (rel. L2 {row['coef_l2']:.2f})", est[0], {"vmin": lo, "vmax": hi}),
              ("|error|", err, {"vmin": 0.0}),
              (f"observed output, {obs.points.shape[0]} sensors", u_true[0], {})]
    fig, axs = plt.subplots(1, 4, figsize=(13, 3.3))
    for ax, (title, field, kw) in zip(axs, panels):
        im = ax.imshow(field.numpy(), extent=extent, **kw)
        ax.scatter(obs.points[:, 1], obs.points[:, 0], s=4, c="w", edgecolors="k", linewidths=0.3)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


__all__ = ["PRIORS", "run_kind", "validate"]
