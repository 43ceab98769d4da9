"""Typed run configuration, validated at the edge (YAML file, ``--set`` overrides).

A run is ``{data: DataConfig, model: {name: ..., **arguments}, train: TrainConfig, out: PATH}``.
An unknown key anywhere is an error that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from ..errors import ParameterError, check_int


@dataclass
class DataConfig:
    #: training file (an oplab data set); the test samples come from ``test`` or from its end
    train: str = ""
    test: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    #: validation samples, the last of the ``n_train`` training ones: they choose the ``best``
    #: checkpoint (the test samples choose nothing); None: a tenth, at most 200; 0: no validation
    n_val: int | None = None
    #: training resolution (strides the stored grid); None keeps it
    resolution: int | None = None
    #: further test resolutions, strided from the test file (zero-shot super-/sub-resolution)
    test_resolutions: list = field(default_factory=list)
    #: further test files, each evaluated whole at its own resolution (e.g. a finer set for
    #: zero-shot super-resolution); reported under its resolution, or ``STEM@RES`` if that is taken
    test_files: list = field(default_factory=list)
    #: ``true`` reads every split into memory; ``false`` streams batches from the file (background
    #: reader processes, read ahead); ``auto`` streams when the splits exceed a quarter of the
    #: available memory (``$OPLAB_MEMORY_BUDGET_MB`` overrides). The same numbers either way.
    in_memory: Any = "auto"
    #: reader processes of a streamed set (0: read in the training process)
    workers: int = 2

    def __post_init__(self):
        for key in ("n_train", "n_test", "n_val", "resolution"):
            check_int("data", key, getattr(self, key), minimum=0 if key != "resolution" else 1, optional=True)
        check_int("data", "workers", self.workers, minimum=0)
        if self.in_memory not in (True, False, "auto") or isinstance(self.in_memory, int) and not isinstance(
                self.in_memory, bool):
            raise ParameterError(f"data.in_memory must be auto, true or false, got {self.in_memory!r}")


@dataclass
class TrainConfig:
    epochs: int = 100
    #: wall-clock budget in minutes (0 = off): after epoch 0 (always evaluated then) and again after
    #: epoch 2 the epoch count becomes what fits, at most ``epochs``, and schedules stretch to it;
    #: recorded in the checkpoint so a resumed run keeps it
    budget_minutes: float = 0.0
    batch_size: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adam | adamw
    scheduler: str = "cosine"  # cosine | step | onecycle | none
    step_size: int = 100  # step schedule: epochs between decays
    gamma: float = 0.5  # step schedule: decay factor
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    #: annealed Gaussian gradient noise (Neelakantan et al. 2015, "Adding gradient noise improves
    #: learning for very deep networks", arXiv:1511.06807): ``eta`` (0 = off); at optimizer step ``t``
    #: (0, 1, ... over the whole run) every real number of every gradient gets N(0, eta / (1 + t)^gamma)
    #: added, after clipping and just before the step; drawn from a generator seeded by (seed, t), so a
    #: run is reproducible and a resumed one exact (oplab.train.trainer.add_gradient_noise)
    grad_noise: float = 0.0
    grad_noise_gamma: float = 0.55  # the decay exponent gamma of the noise's variance (the paper's 0.55)
    loss: str = "l2"  # l2 | h1 (relative, with the grid's quadrature) | channel_l2 (l2 per channel, averaged) | hm1 (relative H^-1, Spectral-Refiner) | mse
    #: physics residual loss of the data set's problem (oplab.losses.physics) with this weight; 0 = off
    physics_weight: float = 0.0
    data_weight: float = 1.0  # weight of the data loss when both are on (PINO-style)
    bc_weight: float = 1.0  # weight of the boundary term inside the elliptic residual loss
    physics_norm: str = "preconditioned"  # preconditioned | residual (plain, LordNet) | weak (DGNO): oplab.losses.physics
    #: train from the inputs alone: the training outputs are never read (physics_weight 0 means 1)
    physics_only: bool = False
    #: point operators (DeepONet family), ``map`` task: each step scores this many output points drawn at
    #: random (the same for the batch, new every step) instead of the whole grid, as DeepXDE and
    #: Borrel-Jensen et al. 2024 sample query points; evaluation uses the whole grid. 0: the whole grid
    points: int = 0
    #: the name of an input channel (e.g. ``mask`` of ``darcy_domain``): the points where it is 0 are left
    #: out of the training loss and of the validation and test errors (relative errors over the domain
    #: only; Kumar, Goswami et al. 2024, multi-task DeepONet's masked loss). "": every point counts
    loss_mask: str = ""
    #: random symmetries of the training data, one draw per batch applied to its inputs and outputs alike
    #: (symmetry augmentation: Brandstetter, Welling & Worrall 2022, "Lie point symmetry data augmentation
    #: for neural PDE solvers", ICML): ``flips`` reverses each spatial axis with probability 1/2;
    #: ``dihedral`` also swaps the two axes of a square 2D grid (the 8 symmetries of the square). Valid only
    #: where the PDE, its boundary conditions and its input distribution are invariant and every channel
    #: is a scalar: Darcy with constant forcing on the unit square, yes; a velocity component, no. Drawn
    #: from a generator seeded by (seed, epoch), so a resumed run replays it. "none": off
    augment: str = "none"
    eval_every: int = 10  # evaluate on the validation and test sets every K epochs (and at the end)
    #: write the resumable ``last`` checkpoint at least this often (seconds), and at every
    #: evaluation and at the end; a resumed run replays the epochs after it exactly
    checkpoint_seconds: float = 30.0
    #: experiment logs beside the console: ``tensorboard`` (RUN/tensorboard), ``mlflow`` (RUN/mlflow.db)
    loggers: list = field(default_factory=list)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    #: CPU threads of the training process: 0 chooses the cores free at the start, or one where a
    #: small model's timed step is faster on one (OMP_NUM_THREADS, when set, stands), and records the
    #: choice in the run folder, so that a resumed run replays its epochs with the same count;
    #: oplab.train.threads says why
    threads: int = 0
    amp: bool = False  # bf16 autocast (CUDA only)
    compile: bool = False  # torch.compile the model (CUDA only)
    normalize: bool = True  # channel-wise Gaussian normalisation of inputs and outputs
    plot_samples: int = 3
    #: ``map``: inputs to outputs in one shot; ``autoregressive``: on a trajectory set, the last
    #: ``window`` states to the next ``bundle``, applied step after step; ``spacetime``: the first
    #: ``window`` states to all later ones on a space-time grid (FNO-3D) (oplab.train.tasks)
    task: str = "map"
    window: int = 1  # autoregressive: input states (the FNO paper's Navier-Stokes protocol: 10)
    bundle: int = 1  # autoregressive: states predicted per step (time-bundling)
    unroll: int = 1  # autoregressive: steps per training sample, each fed the previous prediction
    pushforward: bool = False  # autoregressive: no gradient through the first unroll - 1 steps
    #: autoregressive / spacetime: the trajectories start at this state (0: the input at t = 0; the FNO
    #: paper's Navier-Stokes protocol starts at the first record: 1)
    first_state: int = 0

    def __post_init__(self):
        choices = {"optimizer": ("adam", "adamw"), "scheduler": ("cosine", "step", "onecycle", "none"), "loss": ("l2", "channel_l2", "h1", "hm1", "mse"),
                   "physics_norm": ("preconditioned", "residual", "weak"), "task": ("map", "autoregressive", "spacetime"), "augment": ("none", "flips", "dihedral")}
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise ParameterError(f"train.{key} must be one of {list(valid)}, got {getattr(self, key)!r}")
        for key in ("epochs", "batch_size", "step_size", "eval_every", "window", "bundle", "unroll"):
            if getattr(self, key) < 1:
                raise ParameterError(f"train.{key} must be >= 1, got {getattr(self, key)!r}")
        if self.first_state < 0:
            raise ParameterError(f"train.first_state must be >= 0, got {self.first_state!r}")
        for key in ("lr",):
            if not getattr(self, key) > 0:
                raise ParameterError(f"train.{key} must be > 0, got {getattr(self, key)!r}")
        for key in ("weight_decay", "grad_clip", "budget_minutes", "physics_weight", "data_weight", "bc_weight",
                    "checkpoint_seconds", "grad_noise", "grad_noise_gamma"):
            if not getattr(self, key) >= 0:
                raise ParameterError(f"train.{key} must be >= 0, got {getattr(self, key)!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ParameterError(f"train.{f.name} must be a finite number, got {value!r}")
        from .distributed import check_device

        check_device(self.device)  # before the run folder is made, not in the trainer
        if self.loggers:
            from .loggers import check_names

            check_names(self.loggers)
        if self.task == "map" and (self.window, self.bundle, self.unroll, self.pushforward, self.first_state) != (
                1, 1, 1, False, 0):
            raise ParameterError("train.window, train.bundle, train.unroll, train.pushforward and train.first_state "
                                 "apply to train.task: autoregressive (or spacetime)")
        if self.threads < 0:
            raise ParameterError(f"train.threads must be >= 0 (0: the free cores), got {self.threads!r}")
        if self.points < 0:
            raise ParameterError(f"train.points must be >= 0 (0: the whole grid), got {self.points!r}")
        if self.points and (self.task != "map" or self.loss not in ("l2", "channel_l2", "mse") or self.physics_weight or self.physics_only):
            raise ParameterError("train.points (random query points per step) needs train.task: map, train.loss: l2, "
                                 "channel_l2 or mse (no derivatives on scattered points) and no physics loss")
        if self.loss_mask and (self.task != "map" or self.physics_weight or self.physics_only):
            raise ParameterError("train.loss_mask (a masked data loss) needs train.task: map and no physics loss "
                                 "(the residual is taken on the whole grid)")
        if self.task == "spacetime" and (self.bundle, self.unroll, self.pushforward) != (1, 1, False):
            raise ParameterError("train.bundle, train.unroll and train.pushforward apply to train.task: "
                                 "autoregressive (spacetime predicts every later state at once)")
        if self.pushforward and self.unroll < 2:
            raise ParameterError("train.pushforward needs train.unroll >= 2 (the steps before the last are "
                                 "taken without gradient)")
        if self.physics_only and self.physics_weight == 0:
            self.physics_weight = 1.0


@dataclass
class RunConfig:
    data: DataConfig
    model: dict
    train: TrainConfig
    out: str = ""

    def to_dict(self) -> dict:
        return {"data": dataclasses.asdict(self.data), "model": dict(self.model),
                "train": dataclasses.asdict(self.train), "out": self.out}


def _coerce(section: str, key: str, value: Any, hint) -> Any:
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise ParameterError(f"{section}.{key} may not be empty")
    if hint is bool or text == "bool":
        if isinstance(value, bool):
            return value
    elif "int" in text and "float" not in text:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif "float" in text:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif "str" in text:
        if isinstance(value, (str, Path)):
            return str(value)
    elif "list" in text:
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, int):
            return [value]
    else:
        return value
    readable = getattr(hint, "__name__", None) if isinstance(hint, type) else text.replace("typing.", "")
    raise ParameterError(f"{section}.{key}: expected {readable}, got {value!r}")


def _section(cls, values: dict | None, section: str):
    if values is not None and not isinstance(values, dict):
        raise ParameterError(f"{section}: expected a mapping of keys ({', '.join(f.name for f in fields(cls))}), "
                             f"got {_kind(values)}")
    values = dict(values or {})
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(names), key=str)
    if unknown:
        raise ParameterError(f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; valid: {names}")
    return cls(**{k: _coerce(section, k, v, hints[k]) for k, v in values.items()})


def from_dict(raw: dict) -> RunConfig:
    """Validate a run configuration (as read from YAML)."""
    if not isinstance(raw, dict):
        raise ParameterError(f"a run configuration must be a mapping, got {type(raw).__name__}")
    valid = ["data", "model", "train", "out"]
    unknown = sorted(set(raw) - set(valid), key=str)
    if unknown:
        raise ParameterError(f"unknown top-level key(s) {unknown}; valid: {valid}")
    if not isinstance(raw.get("out") or "", (str, Path)):
        raise ParameterError(f"out: expected the run folder's path, got {_kind(raw['out'])}")
    model = raw.get("model") or {}
    if isinstance(model, str):
        model = {"name": model}
    if not isinstance(model, dict) or "name" not in model:
        raise ParameterError("model: expected a mapping with a 'name' (e.g. {name: fno, width: 32})")
    data = _section(DataConfig, raw.get("data"), "data")
    if not data.train:
        raise ParameterError("data.train: a training data file is required")
    return RunConfig(data=data, model=dict(model), train=_section(TrainConfig, raw.get("train"), "train"),
                     out=str(raw.get("out") or ""))


def _kind(value) -> str:
    """A value for an error line: its repr, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_yaml(path: str | Path) -> dict:
    """The run configuration in the YAML file ``path``: a mapping whose ``data`` and ``train``
    are mappings, ``model`` a mapping or a name (read as ``{name: ...}``) and ``out`` a path;
    anything else is a one-line ParameterError naming the file and the key."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise ParameterError(f"{path}: no such configuration file")
    if path.is_dir():
        raise ParameterError(f"{path}: is a folder; --config takes a YAML run configuration file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParameterError(f"{path}: cannot read the configuration file ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParameterError(f"{path}: not a text file (byte {exc.start} is not UTF-8); expected a YAML run "
                             f"configuration") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ParameterError(f"{path}: expected a mapping with keys data, model, train, out; got a {type(raw).__name__} "
                             f"({_kind(raw)})")
    raw = {k: v for k, v in raw.items() if v is not None}  # "train:" with nothing under it
    for key in ("data", "train"):
        if key in raw and not isinstance(raw[key], dict):
            raise ParameterError(f"{path}: {key} must be a mapping of {key}.KEY: VALUE settings, got {_kind(raw[key])}")
    if isinstance(raw.get("model"), str):
        raw["model"] = {"name": raw["model"]}
    if "model" in raw and not isinstance(raw["model"], dict):
        raise ParameterError(f"{path}: model must be a model name or a mapping with a 'name' "
                             f"(e.g. {{name: fno, width: 32}}), got {_kind(raw['model'])}")
    if "out" in raw and not isinstance(raw["out"], str):
        raise ParameterError(f"{path}: out must be the run folder's path, got {_kind(raw['out'])}")
    return raw


def apply_overrides(raw: dict, items: list[str]) -> dict:
    """``["model.width=64", "train.lr=5e-4"]`` into the nested mapping (values parsed as YAML)."""
    import yaml

    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ParameterError(f"--set {item!r}: expected section.key=value (e.g. model.width=64)")
        key, text = item.split("=", 1)
        section, name = key.strip().split(".", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ParameterError(f"--set {item!r}: the value is not valid YAML ({str(exc).splitlines()[0]})") from None
        if isinstance(value, str) and section != "model":
            value = text.strip()
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ParameterError(f"--set {item!r}: {section} is not a section")
        raw[section][name] = value
    return raw
