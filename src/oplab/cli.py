"""The ``oplab`` command: a thin shell over the Python API.

User errors (:class:`oplab.errors.OplabError`) print one line and exit with
code 2; nothing here holds logic that the API lacks.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import OplabError, ParameterError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    help="oplab: operator learning for PDEs -- reference data, neural operators, benchmarks.",
)
data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Inspect data set files.")
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"oplab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """oplab: operator learning for PDEs -- reference data, neural operators, benchmarks."""


def parse_params(problem_cls, items: List[str]) -> dict:
    """``["nu=0.01", "trajectory=true"]`` -> typed parameters of ``problem_cls``."""
    spec = {p.name: p for p in problem_cls.params_spec}
    out = {}
    for item in items:
        if "=" not in item:
            raise ParameterError(f"--param {item!r}: expected key=value")
        key, value = (s.strip() for s in item.split("=", 1))
        if key not in spec:
            raise ParameterError(f"{problem_cls.name}: unknown parameter {key!r}; valid: {sorted(spec)}")
        out[key] = spec[key].parse(value)
    return out


@app.command("problems")
def problems_cmd(name: Optional[str] = typer.Argument(None, help="Show one problem's parameters.")):
    """List the PDE problems with their parameters and defaults."""
    from . import problems

    names = [problems.get(name).name] if name else problems.available()
    for n in names:
        cls = problems.get(n)
        table = Table(title=f"[bold]{n}[/bold]: {cls.summary}", title_justify="left", show_edge=False)
        table.add_column("parameter")
        table.add_column("default")
        table.add_column("valid")
        table.add_column("meaning")
        table.add_row("resolution", str(cls.default_resolution), f">= {cls.min_resolution}", "grid points per axis")
        for p in cls.params_spec:
            valid = "|".join(map(str, p.choices)) if p.choices else (p.expect or p.kind.__name__)
            table.add_row(p.name, repr(p.default), valid, p.help)
        console.print(table)
        console.print(f"  [dim]{cls.reference}[/dim]\n")


class _Bar:
    """A rich progress bar fed by ``progress(done, total[, text])`` callbacks: samples (``count``:
    done/total) or training batches (a percentage, with the latest epoch's errors as ``text``)."""

    def __init__(self, label: str, count: bool = True):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(
            TextColumn(label), BarColumn(), MofNCompleteColumn() if count else TaskProgressColumn(),
            TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.description}"), console=err_console,
        )
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def log(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)

    def __call__(self, done: int, total: int, text: str = "") -> None:
        if self.task is None:
            self.task = self.progress.add_task(text, total=total, completed=done)
        self.progress.update(self.task, completed=done, total=total, description=text)


@app.command("generate")
def generate_cmd(
    problem: str = typer.Argument(..., help="Problem name (see `oplab problems`)."),
    n: int = typer.Option(..., "--n", metavar="N", help="Number of samples."),
    out: Path = typer.Option(..., "--out", metavar="FILE", help="Output HDF5 file."),
    resolution: Optional[int] = typer.Option(None, "--resolution", metavar="N", help="Grid points per axis (default: the problem's)."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", help="Seed; sample i depends on (problem, parameters, seed, i) only."),
    param: List[str] = typer.Option([], "--param", metavar="KEY=VALUE", help="Problem parameter key=value (repeatable)."),
    solver: Optional[str] = typer.Option(None, "--solver", metavar="NAME", help="Linear solver of elliptic problems: direct | amg | skr | dcdm (with --param dcdm_net=DIR from oplab dcdm-train; = --param solver=...)."),
    workers: int = typer.Option(1, "--workers", metavar="W", help="Worker processes (or Dask workers with --scheduler local)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", metavar="ADDRESS|local", help="Dask scheduler address, or 'local' for a LocalCluster."),
    resume: bool = typer.Option(False, "--resume", help="Keep an existing complete file with the same settings."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file or partial generation."),
):
    """Generate a reference data set (resumable: rerun the same command after an interruption)."""
    from . import problems
    from .data import format as fmt
    from .data.generation import generate, tune_allocator

    cls = problems.get(problem)
    if solver is not None:
        if "solver" not in {p.name for p in cls.params_spec}:
            raise ParameterError(f"{cls.name} has no choice of linear solver (--solver is for darcy, poisson, helmholtz)")
        param = [*param, f"solver={solver}"]
    tune_allocator()
    prob = cls(resolution, **parse_params(cls, param))
    start = time.perf_counter()
    with _Bar(f"{prob.name} {prob.resolution}") as bar:
        path = generate(prob, n, out, seed=seed, workers=workers, scheduler=scheduler,
                        overwrite=overwrite, resume=resume, progress=bar)
    elapsed = time.perf_counter() - start
    _print_info(fmt.read_meta(path), path)
    console.print(f"wrote {path} in {elapsed:.1f} s")


def _print_info(meta: dict, path: Path) -> None:
    from .data import format as fmt

    table = Table(title=str(path), title_justify="left", show_header=False, show_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in fmt.summary(meta):
        table.add_row(key, value)
    console.print(table)


@data_app.command("info")
def data_info_cmd(file: Path = typer.Argument(..., help="An oplab HDF5 data set.")):
    """Print a data set's self-description: problem, shapes, grid, parameters, seed, solver, version."""
    from .data import format as fmt

    _print_info(fmt.read_meta(file), file)


@app.command("train")
def train_cmd(
    data: Optional[Path] = typer.Option(None, "--data", metavar="FILE", help="Training data set (HDF5)."),
    model: Optional[str] = typer.Option(None, "--model", metavar="NAME", help="Model or preset name (see `oplab models`)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="DIR", help="Run folder to create."),
    config: Optional[Path] = typer.Option(None, "--config", metavar="FILE", help="Run configuration (YAML); flags override it."),
    resume: Optional[Path] = typer.Option(None, "--resume", metavar="DIR", help="Continue the run in this folder."),
    test: Optional[Path] = typer.Option(None, "--test", metavar="FILE", help="Separate test data set (default: the end of --data)."),
    n_train: Optional[int] = typer.Option(None, "--n-train", metavar="N"),
    n_test: Optional[int] = typer.Option(None, "--n-test", metavar="N"),
    n_val: Optional[int] = typer.Option(None, "--n-val", metavar="N", help="Validation samples, the last of the training ones; they choose 'best' (default: a tenth, at most 200; 0: none)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", metavar="N", help="Train at this resolution (stride)."),
    test_resolution: List[int] = typer.Option([], "--test-resolution", metavar="N", help="Also evaluate at this resolution (repeatable)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", metavar="N"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", metavar="N"),
    lr: Optional[float] = typer.Option(None, "--lr", metavar="LR"),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="SEED"),
    device: Optional[str] = typer.Option(None, "--device", metavar="DEVICE"),
    threads: Optional[int] = typer.Option(None, "--threads", metavar="N", help="CPU threads (default: the cores free when training starts, or one where a small model's step is faster on one; OMP_NUM_THREADS, when set, stands)."),
    physics_only: bool = typer.Option(False, "--physics-only", help="Train from the inputs alone with the problem's residual loss (no solution is read)."),
    physics_weight: Optional[float] = typer.Option(None, "--physics-weight", metavar="W", help="Add the physics residual loss with this weight (PINO-style with data)."),
    logger: List[str] = typer.Option([], "--logger", metavar="tensorboard|mlflow", help="Also log to TensorBoard (RUN/tensorboard) or MLflow (RUN/mlflow.db); repeatable."),
    set_: List[str] = typer.Option([], "--set", metavar="SECTION.KEY=VALUE", help="Override a setting: section.key=value (e.g. model.width=64)."),
    members: Optional[int] = typer.Option(None, "--members", metavar="N", help="A deep ensemble: N runs with seeds SEED..SEED+N-1 in OUT/member-i (rerun to continue); `oplab evaluate OUT` gives its calibration."),
):
    """Train an operator; writes config, metrics, checkpoints and figures to the run folder."""
    from .train import config as tc
    from .train import resume_run, run

    if resume is not None:
        others = [flag for flag, value in (("--data", data), ("--model", model), ("--out", out), ("--config", config),
                                           ("--test", test), ("--n-train", n_train), ("--n-test", n_test),
                                           ("--n-val", n_val), ("--resolution", resolution),
                                           ("--test-resolution", test_resolution), ("--batch-size", batch_size),
                                           ("--lr", lr), ("--seed", seed), ("--device", device), ("--threads", threads),
                                           ("--physics-only", physics_only), ("--physics-weight", physics_weight),
                                           ("--logger", logger), ("--set", set_)) if value]
        if members is not None:
            others.append("--members")
        if others:
            raise ParameterError(f"--resume continues a run with its own settings ({resume}/config.json) and takes "
                                 f"only --epochs; got {', '.join(others)}")
        resume_run(resume, epochs=epochs)  # (a fine-tuned run resumes with its frozen weights or adapters)
        return
    raw = tc.load_yaml(config) if config else {}
    flags = {
        "data": {"train": data and str(data), "test": test and str(test), "n_train": n_train, "n_test": n_test,
                 "n_val": n_val, "resolution": resolution, "test_resolutions": list(test_resolution) or None},
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "device": device, "threads": threads,
                  "physics_only": physics_only or None, "physics_weight": physics_weight,
                  "loggers": list(logger) or None},
    }
    for section, values in flags.items():
        for key, value in values.items():
            if value is not None:
                raw.setdefault(section, {})[key] = value
    if model:
        raw["model"] = {**(raw.get("model") or {}), "name": model} if isinstance(raw.get("model"), dict) else {"name": model}
    if out:
        raw["out"] = str(out)
    raw = tc.apply_overrides(raw, list(set_))
    if not raw.get("out"):
        raise ParameterError("a run folder is required: --out RUN_DIR (or out: in the config)")
    if not raw.get("model"):
        raise ParameterError("a model is required: --model NAME (see `oplab models`)")
    if members is not None:
        from .eval.ensemble import train_ensemble

        train_ensemble(tc.from_dict(raw), members)
        return
    run(tc.from_dict(raw))


@app.command("finetune")
def finetune_cmd(
    run_dir: Path = typer.Argument(..., help="The trained run to start from (the parent)."),
    data: Path = typer.Option(..., "--data", metavar="FILE", help="The new data set (the parent's channels and dimension)."),
    method: str = typer.Option("full", "--method", metavar="full|lora|head", help="full: every weight; lora: low-rank adapters, merged after training; head: the output map only."),
    n_train: int = typer.Option(..., "--n-train", metavar="K", help="Training samples: the first K of --data."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="DIR", help="New run folder (default: RUN_DIR-METHOD-kK beside the parent)."),
    n_val: Optional[int] = typer.Option(None, "--n-val", metavar="N", help="Validation samples after the K training ones; they choose 'best' (default: K/4, 2 to 50)."),
    n_test: Optional[int] = typer.Option(None, "--n-test", metavar="N", help="Test samples from the end of --data (or of --test)."),
    test: Optional[Path] = typer.Option(None, "--test", metavar="FILE", help="Separate test data set."),
    checkpoint: str = typer.Option("best", "--checkpoint", metavar="best|last", help="The parent's checkpoint to start from."),
    epochs: Optional[int] = typer.Option(None, "--epochs", metavar="N"),
    lr: Optional[float] = typer.Option(None, "--lr", metavar="LR"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", metavar="N"),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="SEED"),
    lora_rank: int = typer.Option(8, "--lora-rank", metavar="R", help="LoRA rank (capped at each layer's channels)."),
    lora_alpha: float = typer.Option(8.0, "--lora-alpha", metavar="A", help="LoRA scale alpha (the update is alpha/R * B A)."),
    normalizers: str = typer.Option("refit", "--normalizers", metavar="refit|parent", help="Refit the input/output normalisers to the K samples (as a run from scratch), or keep the parent's (the start is then the parent exactly)."),
    set_: List[str] = typer.Option([], "--set", metavar="train.KEY=VALUE", help="Override a training setting of the parent's (e.g. train.weight_decay=0)."),
):
    """Fine-tune a trained run on a new data set with K samples (full, LoRA or head); writes a normal run folder that records its parent."""
    from .train.config import apply_overrides
    from .train.finetune import finetune

    raw = apply_overrides({}, list(set_))
    other = sorted(set(raw) - {"train"})
    if other:
        raise ParameterError(f"--set {other[0]}.KEY: finetune takes train.KEY=VALUE (the model is the parent's)")
    train = {**raw.get("train", {}), **{k: v for k, v in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size),
                                                           ("seed", seed)) if v is not None}}
    out = out or run_dir.with_name(f"{run_dir.name}-{method}-k{n_train}")
    r = finetune(run_dir, data, method, n_train, out, n_val=n_val, n_test=n_test, test=test, checkpoint=checkpoint,
                 lora_rank=lora_rank, lora_alpha=lora_alpha, normalizers=normalizers,
                 log=lambda t: console.print(t, highlight=False, markup=False),
                 **train)
    ft, val = r["finetune"], r["parent_errors"].get("val", {}).get("l2")
    console.print(f"wrote {out} ({method}, K = {n_train}, {ft['trainable_params']:,} of {ft['total_params']:,} parameters "
                  f"trained): best validation relative L2 {r['best_val']:.4f}"
                  + ("" if val is None else f" (parent {val:.4f})"), highlight=False, soft_wrap=True)


@app.command("pretrain-meta")
def pretrain_meta_cmd(
    tasks: List[Path] = typer.Argument(..., help="Data sets, one per task (at least 2, one channel layout)."),
    model: str = typer.Option(..., "--model", metavar="NAME", help="Model or preset name (see `oplab models`)."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Run folder to create (a parent for oplab finetune)."),
    steps: int = typer.Option(200, "--steps", metavar="N", help="Meta steps (outer Adam updates)."),
    meta_batch: int = typer.Option(4, "--meta-batch", metavar="N", help="Tasks per meta step."),
    support: int = typer.Option(10, "--support", metavar="N", help="Samples of the inner (adaptation) steps."),
    query: int = typer.Option(10, "--query", metavar="N", help="Samples of the outer loss."),
    inner_steps: int = typer.Option(3, "--inner-steps", metavar="N"),
    inner_lr: float = typer.Option(1e-2, "--inner-lr", metavar="LR", help="SGD step of the inner loop."),
    meta_lr: float = typer.Option(1e-3, "--meta-lr", metavar="LR", help="Adam step of the outer loop."),
    n_train: Optional[int] = typer.Option(None, "--n-train", metavar="N", help="Per task: samples from its start (the last --n-val validate)."),
    n_val: Optional[int] = typer.Option(None, "--n-val", metavar="N"),
    n_test: Optional[int] = typer.Option(None, "--n-test", metavar="N"),
    eval_every: int = typer.Option(20, "--eval-every", metavar="N", help="Meta steps between validations (each a metrics record)."),
    seed: int = typer.Option(0, "--seed", metavar="SEED"),
    set_: List[str] = typer.Option([], "--set", metavar="model.KEY=VALUE", help="Model arguments (e.g. model.width=32)."),
):
    """MAML-style meta-initialisation (first-order MAML, each file a task) into a normal run folder."""
    from .train.config import apply_overrides
    from .train.finetune import meta_init

    raw = apply_overrides({}, list(set_))
    other = sorted(set(raw) - {"model"})
    if other:
        raise ParameterError(f"--set {other[0]}.KEY: pretrain-meta takes model.KEY=VALUE")
    r = meta_init([str(t) for t in tasks], {**raw.get("model", {}), "name": model}, out, n_train=n_train, n_val=n_val,
                  n_test=n_test, steps=steps, meta_batch=meta_batch, support=support, query=query,
                  inner_steps=inner_steps, inner_lr=inner_lr, meta_lr=meta_lr, eval_every=eval_every, seed=seed,
                  log=lambda t: console.print(t, highlight=False, markup=False))
    console.print(f"wrote {out}: best validation relative L2 after adaptation {r['best_val']:.4f}", highlight=False)


@app.command("refine")
def refine_cmd(
    run_dir: Path = typer.Argument(..., help="A trained FNO/TFNO run folder."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="New run folder for the refined model."),
    epochs: int = typer.Option(20, "--epochs", metavar="N"),
    loss: str = typer.Option("hm1", "--loss", help="hm1 (negative Sobolev, the paper's) | l2 | h1"),
    lr: float = typer.Option(1e-3, "--lr", metavar="LR"),
):
    """Spectral-Refiner fine-tuning: train only the last Fourier layer, with every frequency of the grid."""
    from .train.refine import refine

    refine(run_dir, out, epochs=epochs, loss=loss, lr=lr)


@app.command("models")
def models_cmd():
    """List the registered operators and presets."""
    from . import models
    from .models.presets import PRESETS

    table = Table(show_edge=False)
    for col in ("model", "kind", "reference"):
        table.add_column(col)
    for name in models.available():
        cls = models.get(name)
        table.add_row(name, cls.kind, cls.reference)
    console.print(table)
    console.print("presets: " + ", ".join(sorted(PRESETS)))


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Path = typer.Argument(..., help="Run folder."),
    data: Path = typer.Option(..., "--data", metavar="FILE", help="Data set to evaluate on."),
    resolution: List[int] = typer.Option([], "--resolution", metavar="N", help="Resolution(s) to evaluate at (stride)."),
    n: Optional[int] = typer.Option(None, "--n", metavar="N", help="Only the last N of the scored samples."),
    every: bool = typer.Option(False, "--all", help="Score every sample of the file (default: the run's test samples)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best (chosen on the validation samples) or last."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    rollout: Optional[int] = typer.Option(None, "--rollout", metavar="STEPS", help="Autoregressive runs: roll out STEPS steps from each trajectory's first window; errors per step, a plot and an animation in RUN/rollout."),
    threshold: float = typer.Option(0.1, "--threshold", metavar="E", help="With --rollout: report when the per-step relative L2 first exceeds E."),
):
    """Relative L2 and H1 errors of a trained operator per resolution, on the run's test samples."""
    import json as _json

    from .eval import evaluate_run
    from .eval.ensemble import is_ensemble

    if is_ensemble(run_dir):
        given = [flag for flag, value in (("--resolution", resolution), ("--n", n), ("--all", every),
                                          ("--rollout", rollout)) if value]
        if given:
            raise ParameterError(f"{run_dir} is an ensemble: it is scored on its members' test samples at their "
                                 f"resolution; {', '.join(given)} apply to single runs (evaluate {run_dir}/member-0)")
        _ensemble_report(run_dir, data, checkpoint, as_json)
        return
    if rollout is not None:
        _rollout_report(run_dir, data, rollout, threshold, n, every, checkpoint, as_json)
        return
    report = evaluate_run(run_dir, data, list(resolution) or [None], n=n, every=every, checkpoint=checkpoint)
    if as_json:
        print(_json.dumps({label: {**m, "scored": report["scored"]} for label, m in report["results"].items()}))
        return
    which = {"test": "the run's test samples", "unseen": "the samples the run never saw",
             "all": "every sample"}[report["scored"]]
    console.print(f"{run_dir} ({report['checkpoint']} checkpoint) on {which}: {report['samples']}",
                  highlight=False, soft_wrap=True)
    table = Table(show_edge=False)
    for col in ("resolution", "samples", "relative L2", "relative H1"):
        table.add_column(col)
    for label, m in report["results"].items():
        table.add_row(label, str(m["samples"]), f"{m['l2']:.4f}", f"{m['h1']:.4f}")
    console.print(table)


def _ensemble_report(run_dir, data, checkpoint, as_json) -> None:
    import json as _json

    from .eval.ensemble import calibrate

    report = calibrate(run_dir, data, checkpoint=checkpoint)
    if as_json:
        print(_json.dumps(report))
        return
    console.print(f"{run_dir}: ensemble of {report['members']} on {report['samples']} {report['scored']} samples; "
                  f"relative L2 of the mean {report['relative_l2_mean']:.4f} (members "
                  f"{', '.join(f'{e:.4f}' for e in report['relative_l2_members'])}); mean + 2 sigma bound: "
                  f"{report['upper_2sigma_relative_l2']['mean']:.4f} (worst sample "
                  f"{report['upper_2sigma_relative_l2']['worst']:.4f})", highlight=False, soft_wrap=True)
    table = Table(show_edge=False)
    for col in ("band", "coverage (test)", "Gaussian"):
        table.add_column(col)
    for k, value in report["coverage"].items():
        table.add_row(f"mean ± {k} sigma", f"{value:.3f}", f"{report['gaussian'][k]:.3f}")
    console.print(table)
    console.print(f"figure: {Path(run_dir) / 'calibration.png'}", highlight=False)


def _rollout_report(run_dir, data, steps, threshold, n, every, checkpoint, as_json) -> None:
    import json as _json

    from .eval.rollout import evaluate_rollout

    if steps < 1:
        raise ParameterError(f"--rollout must be a positive number of steps, got {steps}")
    report = evaluate_rollout(run_dir, data, steps, threshold, n=n, every=every, checkpoint=checkpoint)
    if as_json:
        print(_json.dumps(report))
        return
    console.print(f"{run_dir} ({report['checkpoint']} checkpoint): rollout of {report['steps']} step(s) from "
                  f"{report['window']} state(s) on {report['samples']}", highlight=False, soft_wrap=True)
    table = Table(show_edge=False)
    for col in ("t", "relative L2", "accumulated", "nRMSE", "NMSE"):
        table.add_column(col)
    rows = list(range(len(report["t"])))
    if len(rows) > 12:  # the first, the last and ten between
        rows = sorted({round(i * (len(rows) - 1) / 11) for i in range(12)})
    for i in rows:
        table.add_row(f"{report['t'][i]:g}", f"{report['per_step'][i]:.4f}", f"{report['accumulated'][i]:.4f}",
                      f"{report['nrmse'][i]:.4f}", f"{report['nmse'][i]:.2e}")
    console.print(table)
    crossed = report["time_to_threshold"]
    console.print(f"relative L2 over the whole rollout {report['l2']:.4f}; "
                  + (f"per-step error first above {threshold:g} at t = {crossed:g}" if crossed is not None
                     else f"per-step error below {threshold:g} throughout"), highlight=False)
    console.print("wrote " + ", ".join(report["files"]), highlight=False, soft_wrap=True)


@app.command("predict")
def predict_cmd(
    run_dir: Path = typer.Argument(..., help="Run folder."),
    input: Path = typer.Option(..., "--input", metavar="FILE", help="Inputs: .npy [B, C, *S] / [C, *S] ([B, *S] / [*S] for one channel), or an oplab .h5 data set."),
    out: Path = typer.Option(..., "--out", metavar="FILE", help="Where to write the predictions (.npy)."),
    checkpoint: str = typer.Option("best", "--checkpoint", metavar="best|last", help="best (chosen on the validation samples) or last."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
):
    """Apply a trained operator to new inputs."""
    import numpy as np

    from .predictor import load, read_inputs

    op = load(run_dir, checkpoint)
    a = read_inputs(input)
    if not out.name:
        raise ParameterError("--out: expected a file name for the predictions (.npy)")
    out = out if out.suffix == ".npy" else out.with_name(out.name + ".npy")  # what np.save writes
    if out.exists() and not overwrite:
        raise ParameterError(f"{out}: exists; pass --overwrite to replace it")
    y = op(a)  # the predictor checks the dtype and shape
    try:
        np.save(out, y)
    except OSError as exc:
        raise ParameterError(f"{out}: cannot write the predictions there ({exc.strerror or exc})") from None
    console.print(f"wrote {out} {list(y.shape)}")


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="Run folder."),
    format: str = typer.Option("onnx", "--format", metavar="onnx|exported-program|torchscript",
                               help="onnx (ONNX Runtime), exported-program (torch.export .pt2) or torchscript (torch.jit)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE", help="Where to write it (default RUN/export/model.<ext>)."),
    checkpoint: str = typer.Option("best", "--checkpoint", metavar="best|last", help="best (chosen on the validation samples) or last."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export."),
):
    """Export a trained operator (normalisers included) and check it against the run's model."""
    from .deploy.export import export

    report = export(run_dir, format, out, checkpoint, overwrite, log=lambda s: console.print(s, highlight=False))
    checks = "; ".join(f"{'x'.join(map(str, c['sizes']))}: {c['max_rel_diff']:.1e}" for c in report["checks"])
    valid = "" if len(report["dynamic"]) < 2 else f"; valid from {'x'.join(map(str, report['min_sizes']))} points up"
    console.print(f"wrote {report['file']}{valid} "
                  f"({report['bytes'] / 1e6:.1f} MB; dynamic axes: {', '.join(report['dynamic']) or 'none'}); "
                  f"largest relative difference to the model: {checks}", highlight=False, soft_wrap=True)


@app.command("serve")
def serve_cmd(
    runs: List[str] = typer.Argument(..., metavar="RUN", help="Run folder(s); NAME=RUN_DIR names a model (default: its folder's name)."),
    host: str = typer.Option("127.0.0.1", "--host", metavar="ADDRESS", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", metavar="PORT", help="Port (0: a free one, printed)."),
    max_batch: int = typer.Option(32, "--max-batch", metavar="N", help="Samples per batched model call."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", metavar="MS", help="How long a request waits for others to batch with."),
    max_mb: float = typer.Option(64.0, "--max-mb", metavar="MB", help="Request body size limit (larger: 413)."),
    checkpoint: str = typer.Option("best", "--checkpoint", metavar="best|last", help="best (chosen on the validation samples) or last."),
    log_level: str = typer.Option("info", "--log-level", metavar="LEVEL", help="uvicorn's: debug | info | warning | error."),
):
    """Serve trained operators over HTTP: predictions (JSON or .npy), metadata, and a page at /."""
    from .deploy.serve import serve

    serve(runs, host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms, max_mb=max_mb,
          checkpoint=checkpoint, log_level=log_level, announce=lambda s: print(s, flush=True))


@app.command("invert")
def invert_cmd(
    run_dir: Path = typer.Argument(..., help="Run folder of a trained one-shot operator."),
    obs: Path = typer.Option(..., "--obs", metavar="FILE", help="Observations (.npz or .h5): points [K, d], values [K] or [K, C], noise (std), optional channels."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Folder for estimate.npy, spread.npy, result.json, inversion.png."),
    prior: str = typer.Option("latent", "--prior", metavar="latent|tv|smooth|lpn", help="latent: two-phase fields from a Gaussian random field's latent coefficients (the darcy problem's prior); tv: total variation; smooth: |grad a|^2; lpn: a learned proximal network (--lpn) as the proximal step of plug-and-play proximal gradient or ADMM (--pnp)."),
    lpn: Optional[Path] = typer.Option(None, "--lpn", metavar="DIR", help="The learned proximal network of --prior lpn (a folder saved by oplab.inverse.lpn.save_lpn)."),
    step_size: Optional[float] = typer.Option(None, "--step-size", metavar="ETA", help="--prior lpn --pnp pg: the gradient step (default: the network's training noise squared)."),
    pnp: str = typer.Option("pg", "--pnp", metavar="pg|admm", help="--prior lpn: plug-and-play proximal gradient (pg) or ADMM (admm, an inner L-BFGS solve on the data term)."),
    rho: Optional[float] = typer.Option(None, "--rho", metavar="RHO", help="--prior lpn --pnp admm: the ADMM penalty, also the prior's weight (default: 1 / the network's training noise squared)."),
    sampler: str = typer.Option("multistart", "--sampler", metavar="multistart|langevin|ula", help="Uncertainty: the spread over the restarts (multistart), or posterior samples by Metropolis-adjusted Langevin (langevin) or unadjusted Langevin (ula) started from the estimate; spread.npy is then their pixelwise std and posterior_mean.npy their mean."),
    samples: int = typer.Option(200, "--samples", metavar="N", help="--sampler langevin|ula: samples kept (4 chains)."),
    burn_in: int = typer.Option(200, "--burn-in", metavar="N", help="--sampler langevin|ula: steps per chain before keeping samples (the step size adapts there)."),
    thin: int = typer.Option(5, "--thin", metavar="N", help="--sampler langevin|ula: keep every N-th state."),
    weight: float = typer.Option(1.0, "--weight", metavar="W", help="Weight of the tv / smooth prior."),
    bounds: Optional[str] = typer.Option(None, "--bounds", metavar="LO,HI", help="The input's range (default: the two phases of a darcy set for latent; the training inputs' range otherwise)."),
    restarts: int = typer.Option(4, "--restarts", metavar="R", help="Random starts, optimised together; the spread over them is written too."),
    steps: int = typer.Option(500, "--steps", metavar="N", help="Adam steps."),
    lr: float = typer.Option(0.05, "--lr", metavar="LR"),
    seed: int = typer.Option(0, "--seed"),
    checkpoint: str = typer.Option("best", "--checkpoint", metavar="best|last"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty --out folder."),
):
    """Inverse problem: the input field that explains sensor observations of the output, by optimisation through the trained operator with a prior."""
    from . import inverse

    lim = None
    if bounds is not None:
        try:
            lim = tuple(float(v) for v in bounds.split(","))
        except ValueError:
            lim = ()
        if len(lim) != 2:
            raise ParameterError(f"--bounds {bounds!r}: expected LO,HI, e.g. 3,12")
    if prior not in ("latent", "tv", "smooth", "lpn"):
        raise ParameterError(f"--prior must be latent, tv, smooth or lpn, got {prior!r}")
    if sampler not in ("multistart", "langevin", "ula"):
        raise ParameterError(f"--sampler must be multistart, langevin or ula, got {sampler!r}")
    result = inverse.run(run_dir, obs, out, prior, weight, lim, restarts, steps, lr, checkpoint, overwrite, seed,
                         lpn=lpn, step_size=step_size, log=lambda text: None, pnp_method=pnp, rho=rho,
                         sampler=sampler, samples=samples, burn_in=burn_in, thin=thin)
    console.print(f"wrote {out}: estimate from {result['sensors']} sensors with the {prior} prior; chi^2 per value "
                  f"{result['misfit']:.3g} (about 1 when the data are explained to their noise); "
                  f"{result['seconds']:.1f} s")


@app.command("auralize")
def auralize_cmd(
    run_dir: Path = typer.Argument(..., help="A trained room_acoustics run folder."),
    receiver: str = typer.Option(..., "--receiver", metavar="X,Y[,Z]", help="Listener position (m)."),
    source: str = typer.Option(..., "--source", metavar="X,Y[,Z]", help="Source position (m); with --to, where it starts."),
    to: Optional[str] = typer.Option(None, "--to", metavar="X,Y[,Z]", help="A moving source: where it ends, moving in a straight line over the sound's duration."),
    out: Path = typer.Option(..., "--out", metavar="FILE.wav"),
    dry: Optional[Path] = typer.Option(None, "--dry", metavar="FILE.wav", help="The dry (anechoic) sound; default: synthesised plucked-string notes."),
    rate: int = typer.Option(16000, "--rate", metavar="HZ", help="Audio sample rate."),
    checkpoint: str = typer.Option("best", "--checkpoint", metavar="best|last"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
):
    """Listen to a learned room: a WAV file of a dry sound from a static or moving source, heard at a receiver."""
    from .auralize import auralize
    from .predictor import load

    def point(flag, text):
        try:
            return [float(v) for v in text.split(",")]
        except ValueError:
            raise ParameterError(f"{flag} {text!r}: expected comma-separated coordinates, e.g. 1.0,0.5") from None

    if rate < 1000:
        raise ParameterError(f"--rate must be an audio rate of at least 1000 Hz, got {rate}")
    op = load(run_dir, checkpoint)
    result = auralize(op, point("--receiver", receiver), point("--source", source), out,
                      to=None if to is None else point("--to", to), dry=dry, rate=rate, overwrite=overwrite)
    kind = "moving" if result["moving"] else "static"
    console.print(f"wrote {result['path']}: {result['seconds']:.2f} s at {rate} Hz ({kind} source; the operator "
                  f"took {result['surrogate_seconds'] * 1e3:.0f} ms)", highlight=False)


@app.command("explain")
def explain_cmd(
    run_dir: Path = typer.Argument(..., help="Run folder."),
    input: Path = typer.Option(..., "--input", metavar="FILE", help="Inputs: .npy [B, C, *S] / [C, *S] ([B, *S] / [*S] for one channel), or an oplab .h5 data set."),
    out: Path = typer.Option(..., "--out", metavar="FILE", help="Where to write the map (.npy, shaped like one input [C_in, *S])."),
    sample: int = typer.Option(0, "--sample", metavar="I", help="Which sample of the file to explain."),
    point: Optional[str] = typer.Option(None, "--point", metavar="X,Y", help="Target: the output at the grid node nearest to this point (physical coordinates)."),
    node: Optional[str] = typer.Option(None, "--node", metavar="I,J", help="Target: the output at this grid node (indices)."),
    functional: Optional[str] = typer.Option(None, "--functional", metavar="mean", help="Target: the mean of the output channel over the grid."),
    channel: int = typer.Option(0, "--channel", metavar="C", help="Output channel of the target."),
    method: str = typer.Option("gradient", "--method", metavar="gradient|integrated-gradients"),
    steps: int = typer.Option(32, "--steps", metavar="N", help="Integrated gradients: trapezoid intervals on the path."),
    baseline: str = typer.Option("zero", "--baseline", metavar="zero|mean", help="Integrated gradients: the path's start (zeros, or the training inputs' channel means)."),
    density: bool = typer.Option(False, "--density", help="Divide the map by the input cell measure h^d (a kernel, comparable across resolutions)."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="FILE", help="Also draw input, prediction (target marked) and map (.png/.pdf/.svg)."),
    checkpoint: str = typer.Option("best", "--checkpoint", metavar="best|last", help="best (chosen on the validation samples) or last."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing --out / --plot files."),
):
    """Sensitivity map: the gradient (or integrated gradients) of the output at a point, or of its mean, with respect to the input field."""
    import numpy as np

    from . import explain
    from .predictor import load, read_inputs

    if method not in explain.METHODS:
        raise ParameterError(f"--method must be one of {list(explain.METHODS)}, got {method!r}")

    def numbers(flag, text, kind):
        try:
            return tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise ParameterError(f"{flag} {text!r}: expected comma-separated {kind.__name__}s, e.g. 0.5,0.5") from None

    out = out if out.suffix == ".npy" else out.with_name(out.name + ".npy")  # what np.save writes
    if plot is not None and plot.suffix not in (".png", ".pdf", ".svg"):
        raise ParameterError(f"--plot {plot}: expected a .png, .pdf or .svg file name")
    for path in (out, plot):
        if path is not None and path.exists() and not overwrite:
            raise ParameterError(f"{path}: exists; pass --overwrite to replace it")
    op = load(run_dir, checkpoint)
    a = explain.pick_sample(op, read_inputs(input), sample)
    target = dict(point=None if point is None else numbers("--point", point, float),
                  node=None if node is None else numbers("--node", node, int), functional=functional,
                  channel=channel, density=density)
    if method == "gradient":
        result = explain.gradient(op, a, **target)
    else:
        result = explain.integrated_gradients(op, a, baseline=baseline, steps=steps, **target)
    try:
        np.save(out, result.map)
        if plot is not None:
            explain.plot(result, a, plot)
    except OSError as exc:
        raise ParameterError(f"cannot write {exc.filename or out} ({exc.strerror or exc})") from None
    console.print(result.summary(), highlight=False, soft_wrap=True)
    console.print(f"wrote {out} {list(result.map.shape)}" + (f" and {plot}" if plot is not None else ""), highlight=False)


@app.command("compress")
def compress_cmd(
    run_dir: Path = typer.Argument(..., help="A trained run folder (the teacher)."),
    method: str = typer.Option(..., "--method", metavar="quantize|distill|distill-quantize", help="quantize: quantise the teacher's weights to --bits (post-training); distill: train a smaller student on the teacher's outputs; distill-quantize: the student with --bits weights in its forward pass (quantised distillation, Polino et al. 2018). int8 and distill-int8 are accepted aliases."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="New run folder for the compressed model."),
    width: Optional[int] = typer.Option(None, "--width", metavar="W", help="The student's width (default: half the teacher's; with --init teacher, the teacher's)."),
    bits: Optional[int] = typer.Option(None, "--bits", metavar="B", help="Weight bits for quantize / distill-quantize (2-8, default 8; below 8 bit-packed, e.g. two 4-bit weights per byte)."),
    init: Optional[str] = typer.Option(None, "--init", metavar="random|teacher", help="The student's starting weights (default random); teacher: the teacher's own weights (the student is then the teacher's model)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", metavar="A", help="Weight of the true solutions in the distillation loss (default 0: the teacher's outputs only)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", metavar="N", help="Distillation epochs (replaces the teacher's time budget)."),
    set_: List[str] = typer.Option([], "--set", metavar="SECTION.KEY=VALUE", help="The student (model.KEY=VALUE) or its training (train.KEY=VALUE, e.g. train.budget_minutes=4)."),
):
    """Compress a trained run into a new run folder (loadable like any run): quantised weights, a distilled student, or both."""
    from .deploy.compress import compress
    from .train.config import apply_overrides

    raw = apply_overrides({}, list(set_))
    other = sorted(set(raw) - {"model", "train"})
    if other:
        raise ParameterError(f"--set {other[0]}.KEY: compress takes model.KEY=VALUE (the student) and "
                             f"train.KEY=VALUE (its training)")
    train = {**raw.get("train", {}), **({"epochs": epochs} if epochs is not None else {})}
    r = compress(run_dir, method, out, bits=bits, width=width, alpha=alpha, model=raw.get("model"),
                 train=train or None, init=init, log=lambda t: console.print(t, highlight=False, markup=False))
    val = "" if r["val_l2"] is None else (f"; validation relative L2 {r['val_l2']:.4f} "
                                          f"(teacher {r['teacher_val_l2']:.4f})")
    console.print(f"wrote {out} ({r['method']}): weights {r['bytes']:,} bytes, {r['size_ratio']:.2f}x smaller than the "
                  f"teacher's {r['teacher_bytes']:,}{val}", highlight=False, soft_wrap=True)


@app.command("quickstart")
def quickstart_cmd(
    out: Path = typer.Option(Path("oplab-quickstart"), "--out", help="Folder for data, run and summary."),
    budget: float = typer.Option(6.0, "--budget", metavar="MINUTES", help="Training time budget in minutes."),
    n_train: int = typer.Option(1000, "--n-train", metavar="N"),
    n_test: int = typer.Option(200, "--n-test", metavar="N"),
    resolution: int = typer.Option(64, "--resolution", metavar="N", help="Training grid points per axis."),
    super_resolution: int = typer.Option(128, "--super-resolution", metavar="N", help="Grid of the zero-shot test set."),
    workers: int = typer.Option(2, "--workers", metavar="W", help="Processes generating the data."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
):
    """The main job on its embedded default: generate a Darcy set, train an FNO on it, report errors and speed-up.

    No download: the data are made by oplab's own solver (the FNO paper's Darcy recipe) at 64x64
    (1000 train / 200 test) and 128x128 (200 test, zero-shot super-resolution); about 7 minutes
    on a 2-core CPU. Rerunning resumes an interrupted run.
    """
    from .quickstart import quickstart

    with _Bar("training", count=False) as bar:
        summary = quickstart(out, resolution=resolution, super_resolution=super_resolution, n_train=n_train,
                             n_test=n_test, budget_minutes=budget, workers=workers, device=device,
                             log=bar.log, data_progress=_Bar, train_progress=bar)
    table = Table(title=f"FNO on Darcy ({summary['n_train']} training samples at {summary['train_resolution']}, "
                        f"{summary['params']:,} parameters, {summary['epochs']} epochs in "
                        f"{summary['train_seconds'] / 60:.1f} min on {summary['device']})",
                  title_justify="left", show_edge=False)
    for col in ("test grid", "relative L2", "relative H1", "inference / sample", "solver / sample", "speed-up"):
        table.add_column(col, justify="right")
    for label, m in summary["test"].items():
        zero = "" if label == str(summary["train_resolution"]) else " (zero-shot)"
        table.add_row(f"{label}x{label}{zero}", f"{m['l2']:.4f}", f"{m['h1']:.4f}",
                      f"{m['inference_seconds_per_sample'] * 1e3:.2f} ms", f"{m['solver_seconds_per_sample'] * 1e3:.1f} ms",
                      f"{m['speedup']:.2g}x")
    console.print(table)
    console.print(f"data generated in {summary['generation_seconds']:.0f} s; figures: {summary['figures']['predictions']} "
                  f"(input, truth, prediction, error) and {summary['figures']['loss']}; numbers: {out / 'summary.json'}")


@app.command("bench")
def bench_cmd(
    suite: str = typer.Option(..., "--suite", metavar="NAME|FILE", help="smoke | cpu | paper | cfdbench | cfdbench-cpu, or a suite YAML file."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Folder for data, runs and report.md / report.json."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
    budget: Optional[float] = typer.Option(None, "--budget", metavar="MINUTES", help="Training time budget per case in minutes (replaces the suite's)."),
    only: List[str] = typer.Option([], "--only", metavar="CASE", help="Run only this case (repeatable)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", metavar="DIR", help="Where the data sets go (default OUT/data); share it between runs."),
    workers: int = typer.Option(2, "--workers", metavar="W", help="Processes generating the data."),
    peer_python: Optional[str] = typer.Option(None, "--peer-python", metavar="PYTHON", help="Python of the peers' environment (default: $OPLAB_PEER_PYTHON or benchmarks/.venv-peers)."),
    no_peers: bool = typer.Option(False, "--no-peers", help="Skip the peer libraries."),
):
    """Run a benchmark suite and write a report (rerun the same command to resume)."""
    from . import bench

    s = bench.load_suite(suite)
    peers = None if no_peers else (peer_python or "auto")
    report = bench.run_suite(s, out, device=device, budget=budget, data_dir=data_dir, workers=workers,
                             peers=peers, only=list(only) or None, log=lambda t: console.print(t, highlight=False, markup=False))
    failed = [c["name"] for c in report["cases"] if "failed" in c]
    console.print(f"report: {Path(out) / 'report.md'}" + (f"; failed: {failed}" if failed else ""))
    if failed:
        raise typer.Exit(1)


@app.command("dcdm-train")
def dcdm_train_cmd(
    problem: str = typer.Argument(..., help="darcy | poisson (a problem with solver=dcdm)."),
    resolution: int = typer.Option(..., "--resolution", metavar="N", help="Grid points per axis of the training matrices."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="New (or empty) folder for the net; use it as --param dcdm_net=DIR."),
    samples: int = typer.Option(8, "--samples", metavar="K", help="Matrices: those of samples 0..K-1 of --seed (inputs only; nothing is solved)."),
    steps: int = typer.Option(600, "--steps", metavar="S", help="Training steps (Adam, 32 right-hand sides each)."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", help="Seed of the inputs and of the training."),
    param: List[str] = typer.Option([], "--param", metavar="KEY=VALUE", help="Problem parameter key=value (repeatable): the input distribution."),
):
    """Train a Deep Conjugate Direction Method net for `generate PROBLEM --param solver=dcdm` (unsupervised: from the matrices alone)."""
    from . import problems
    from .solvers.dcdm import train_for_problem

    cls = problems.get(problem)
    prob = cls(resolution, **parse_params(cls, param))
    r = train_for_problem(prob, out, samples=samples, steps=steps, seed=seed, log_every=max(1, steps // 10))
    console.print(f"wrote {out}: DCDM net for {prob.name} at {prob.resolution} ({r['matrices']} distinct matrices, "
                  f"{len(r['history'])} steps, loss {r['history'][0]:.3g} -> {sum(r['history'][-10:]) / len(r['history'][-10:]):.3g}, "
                  f"{r['seconds']:.0f} s); use it: oplab generate {prob.name} --param solver=dcdm --param dcdm_net={out}",
                  highlight=False, markup=False, soft_wrap=True)


@app.command("hypino-train")
def hypino_train_cmd(
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Folder for the hypernetwork (weights.safetensors + config.json)."),
    steps: int = typer.Option(1000, "--steps", metavar="S", help="Adam steps (32 problems each)."),
    problems_n: int = typer.Option(4000, "--problems", metavar="N", help="Random manufactured training problems (64 more for validation)."),
    seconds: Optional[float] = typer.Option(None, "--seconds", metavar="T", help="Stop after T seconds of training."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", help="Seed of the problems and of the training."),
):
    """Train a HyPINO hypernetwork (PDE specification -> PINN weights) for -Lap u + k u = f on random domains."""
    from .models.hypino import pretrain

    _, r = pretrain(steps=steps, n_train=problems_n, seed=seed, time_budget=seconds, out=out,
                    log=lambda s: console.print(s, highlight=False, markup=False))
    console.print(f"wrote {out}: HyPINO, {len(r['history'])} steps in {r['seconds']:.0f} s, best validation "
                  f"relative L2 error {r['val_error']:.4f} (step {r['best_step']})", highlight=False, markup=False, soft_wrap=True)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    interrupted = "interrupted; rerun the same command to resume (a training run: oplab train --resume RUN_DIR)"
    try:
        code = app(args=argv, standalone_mode=False)
    except OplabError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print(interrupted)
        return 130
    except typer.Abort:
        err_console.print(interrupted)
        return 130
    except Exception as exc:  # usage errors: click's ClickException, vendored or not by typer
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            return exc.exit_code
        raise
    if code == 130:  # typer turns KeyboardInterrupt into Exit(130)
        err_console.print(interrupted)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
