"""Compressed copies of a trained run: ``oplab compress RUN --method quantize|distill|distill-quantize
--out NEW [--bits B]``.

After Polino, Pascanu & Alistarh 2018, "Model compression via distillation and quantization"
(ICLR):

* ``quantize`` (alias ``int8``): post-training, weight-only quantisation of the teacher
  (:mod:`.quantize`): every weight tensor as ``bits``-bit integers (default 8; below 8 bits packed,
  e.g. two 4-bit values per byte) with one float32 scale per output channel, dequantised when the
  run is loaded. About ``32 / bits`` times smaller on disk; the same architecture, so the same speed
  once loaded.
* ``distill``: knowledge distillation into a smaller student (default: the teacher's model at
  half its ``width``), trained on the training inputs ``a`` with the distillation loss
  ``(1 - alpha) L(s(a), t(a)) + alpha L(s(a), u)``: ``t(a)`` the teacher's outputs (the soft
  targets of Polino et al.'s distillation loss; for a regression the teacher's prediction itself),
  ``u`` the true solutions, ``L`` the run's training loss (relative L2 unless the teacher used
  another). The validation samples choose the ``best`` checkpoint; the test samples are only reported.
* ``distill-quantize`` (alias ``distill-int8``): quantised distillation (Polino et al.'s "quantized
  distillation"): as ``distill``, but the student's forward pass uses its weights fake-quantised to
  ``bits`` (default 8; :func:`.quantize.fake_quantize`; the gradient reaches the float weights
  through the straight-through estimator), the validation error that chooses ``best`` is the
  quantised student's, and the checkpoints are saved quantised.

A student starts from a fresh initialisation (``init="random"``) or, with ``init="teacher"``, from
the teacher's weights and normalisers; that needs the teacher's architecture (the default student
then), and is how Polino et al. quantise a model by distillation at its own size.

Each writes a new, ordinary run folder (:class:`~oplab.rundir.RunDir`): ``oplab.load``, ``oplab
evaluate`` / ``predict`` and the server take it as they take any run. Its ``config.json`` holds the
student's model, the teacher's data section (so the same split) and a ``compression`` section
(method, teacher, bits, alpha, init). ``oplab train --resume`` finds a compressed run complete; continued
with ``--epochs N`` it would go on as ordinary float training on the true solutions, without
teacher or quantisation. This module imports the training code (distillation is training);
loading a compressed run does not.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .. import checkpoint as ckpt
from ..errors import OplabError, ParameterError
from ..rundir import CHECKPOINTS, RunDir
from ..eval.metrics import evaluate, masked
from ..train.tasks import MapTask, mask_channel
from .quantize import SCHEME, check_bits, fake_quantize, quantizable, quantize_state, quantized_copy

METHODS = ("quantize", "distill", "distill-quantize")
#: the earlier names, still accepted
ALIASES = {"int8": "quantize", "distill-int8": "distill-quantize"}
INITS = ("random", "teacher")


def compress(run_dir: str | Path, method: str, out: str | Path, *, bits: int | None = None, width: int | None = None,
             alpha: float | None = None, model: dict | None = None, train: dict | None = None,
             init: str | None = None, checkpoint: str = "best", log=print) -> dict:
    """Compress the run ``run_dir`` into the new run folder ``out`` by ``method`` (module docstring;
    ``int8`` and ``distill-int8`` are aliases of ``quantize`` and ``distill-quantize``).

    ``bits``: weight bits of ``quantize`` / ``distill-quantize`` (2-8, default 8; below 8 packed);
    ``width``, ``model`` (constructor arguments) shape the student; ``alpha`` weighs the true
    solutions in the distillation loss (default 0); ``train``: :class:`~oplab.train.config.TrainConfig`
    fields for the distillation (default: the teacher's, e.g. its time budget); ``init``: ``random``
    (default) or ``teacher`` (the student starts from the teacher's weights; then the student defaults
    to the teacher's model); ``checkpoint``: the teacher's weights that teach. Returns :func:`report`'s
    summary."""
    method = ALIASES.get(method, method)
    if method not in METHODS:
        raise ParameterError(f"unknown compression method {method!r}; valid: {', '.join(METHODS)} "
                             f"(or {', '.join(ALIASES)})")
    out = Path(out)
    if (out / "config.json").exists():
        raise ParameterError(f"{out}: already holds a run; choose another --out")
    if bits is not None:
        check_bits(bits)
        if method == "distill":
            raise ParameterError("--bits applies to --method quantize and distill-quantize (distill keeps float32 "
                                 "weights)")
    student = {"--width": width, "--alpha": alpha, "--set model.*": model, "--epochs / --set train.*": train,
               "--init": init}
    if method == "quantize" and any(v is not None and v != {} for v in student.values()):
        given = [k for k, v in student.items() if v is not None and v != {}]
        raise ParameterError(f"{', '.join(given)}: only for --method distill or distill-quantize (they set up "
                             f"and train a student); --method quantize rounds the teacher's own weights")
    if init is not None and init not in INITS:
        raise ParameterError(f"unknown --init {init!r}; valid: {', '.join(INITS)}")
    if alpha is not None and not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ParameterError(f"alpha must be a number in [0, 1] (the weight of the true solutions), got {alpha!r}")
    source = RunDir.open(run_dir)
    if source.config["run_version"] == 1:
        raise OplabError(f"{source.path}: a version-1 run (its 'best' was chosen on the test samples); "
                         f"retrain it with this oplab before compressing it")
    if method == "quantize":
        return quantize_run(source, out, bits or 8, log=log)
    return distill(source, out, bits=(bits or 8) if method == "distill-quantize" else None, width=width,
                   alpha=alpha or 0.0, model=model, train=train, init=init or "random", checkpoint=checkpoint,
                   log=log)


# ------------------------------------------------------------------ post-training quantisation
def quantize_run(source: RunDir, out: Path, bits: int = 8, log=print) -> dict:
    """Post-training weight-only quantisation: every checkpoint of ``source`` (``best``, ``last``
    with its training state) written to the new run ``out`` with its weights quantised."""
    from ..predictor import load

    teacher = load(source.path)  # builds the model: the plan, and a check that the weights fit it
    plan = quantizable(teacher.bundle)
    config = {k: v for k, v in source.config.items() if k not in ("format", "run_version", "oplab_version")}
    config["compression"] = _section("quantize", source, teacher.checkpoint, bits=bits, plan=plan,
                                     bundle=teacher.bundle)
    run = RunDir.create(out, config)
    try:
        _quantize_checkpoints(source, run, plan, bits)
    finally:
        run.unlock()
    log(f"quantised {len(plan)} weight tensors of {source.path} to {bits} bits into {out}")
    return report("quantize", source, out, _validation(source))


def _quantize_checkpoints(source: RunDir, run: RunDir, plan: dict, bits: int) -> None:
    """Every checkpoint of ``source`` written into ``run`` with its weights quantised."""
    for name in CHECKPOINTS:
        if source.has_checkpoint(name):
            folder = source.checkpoint_dir(name)
            _save_quantized(run, name, ckpt.load_weights(folder), plan, bits, folder)


def _save_quantized(run: RunDir, name: str, weights: dict, plan: dict, bits: int, state_from: Path) -> None:
    """Checkpoint ``name`` of ``run`` with ``weights`` quantised; a ``last`` keeps the training state
    of ``state_from`` (so ``oplab train --resume`` finds the run complete)."""
    tensors, meta = quantize_state(weights, plan, bits)
    state_tensors = state = None
    if name == "last" and (ckpt.locate(state_from) / "state.json").exists():
        state_tensors, state = ckpt.load_state(state_from)
    ckpt.save(run.checkpoint_dir(name), tensors, state_tensors, state, metadata=meta)


def _section(method: str, source: RunDir, used: str, bits=None, plan=None, bundle=None, **more) -> dict:
    section = {"method": method, "teacher": str(source.path), "teacher_checkpoint": used, **more}
    if bits is not None:
        total = sum(p.numel() for p in bundle.parameters())
        section.update(bits=bits, scheme=SCHEME, quantized_tensors=len(plan),
                       quantized_fraction=sum(bundle.get_parameter(n).numel() for n in plan) / total,
                       reference="Polino, Pascanu & Alistarh 2018, Model compression via distillation and "
                                 "quantization, ICLR")
    return section


# ------------------------------------------------------------------ distillation
def student_config(teacher: dict, width: int | None = None, model: dict | None = None) -> dict:
    """The student's model config: the teacher's, with ``model``'s arguments and ``width`` (default:
    half the teacher's width, where the model has one and ``model`` sets none)."""
    cfg = {**teacher, **(model or {})}
    if width is not None:
        cfg["width"] = width
    elif "width" not in (model or {}) and isinstance(teacher.get("width"), int):
        cfg["width"] = max(1, teacher["width"] // 2)
    return cfg


@torch.no_grad()
def teacher_outputs(bundle, data, batch: int = 50) -> torch.Tensor:
    """The teacher's predictions ``[N, C_out, *S]`` for the inputs of ``data``: the distillation targets."""
    bundle.eval()
    coords = tuple(c for c in data.out_coords)
    return torch.cat([bundle(x, coords) for x, _ in data.chunks(batch)])


def distill(source: RunDir, out: Path, *, bits: int | None = None, width: int | None = None, alpha: float = 0.0,
            model: dict | None = None, train: dict | None = None, init: str = "random", checkpoint: str = "best",
            log=print) -> dict:
    """Train a student on ``source``'s teacher (module docstring) into the new run ``out``;
    ``bits``: quantised distillation (fake-quantised forward, saved at ``bits`` bits); ``init``:
    ``random`` or ``teacher`` (start from the teacher's weights)."""
    from .. import models
    from ..predictor import load
    from ..train import config as tc
    from ..train.data import prepare, recorded_split
    from ..train.trainer import Trainer

    teacher = load(source.path, checkpoint)
    if teacher.task != "map":
        raise OplabError(f"{source.path}: distillation learns one-shot maps (train.task: map); this run's task is "
                         f"{teacher.task!r} (--method quantize quantises it as it is)")
    if init == "teacher" and width is None and not model:
        student_cfg = dict(source.model)  # the teacher's weights fit the teacher's model only
    else:
        student_cfg = student_config(source.model, width, model)
    if student_cfg == source.model and bits is None:
        raise ParameterError(f"the student would be the teacher's model ({source.model['name']}): make it smaller "
                             f"with --width or --set model.KEY=VALUE, or quantise it (--method distill-quantize)")
    if init == "teacher" and student_cfg != source.model:
        differ = sorted(k for k in set(student_cfg) | set(source.model) if student_cfg.get(k) != source.model.get(k))
        raise ParameterError(f"--init teacher starts the student from the teacher's weights: it needs the teacher's "
                             f"model, and this student differs in {', '.join(differ)}")
    known = {f.name for f in dataclasses.fields(tc.TrainConfig)}
    inherited = {k: v for k, v in source.config["train"].items() if k in known}
    train = dict(train or {})
    fixed = sorted(set(train) & {"task", "window", "bundle", "unroll", "pushforward", "first_state", "physics_weight",
                                 "physics_only", "data_weight", "bc_weight", "physics_norm"})
    if fixed:
        raise ParameterError(f"{', '.join('train.' + k for k in fixed)}: a distillation trains a one-shot map with "
                             f"the distillation loss (--alpha weighs the true solutions); not settable here")
    if "epochs" in train and "budget_minutes" not in train:  # a number of epochs replaces the teacher's budget
        train["budget_minutes"] = 0.0
    data_cfg = {k: v for k, v in source.data.items() if k in {f.name for f in dataclasses.fields(tc.DataConfig)}}
    cfg = tc.from_dict({"data": data_cfg, "model": student_cfg, "out": str(out),
                        "train": {**inherited, "physics_weight": 0.0, "physics_only": False, "loggers": [], **train}})
    torch.manual_seed(cfg.train.seed)
    student = models.from_config(student_cfg)  # a refused config leaves no folder behind
    data = prepare(recorded_split(source), in_memory=True)
    targets = teacher_outputs(teacher.bundle, data.train)
    changed = {k: v for k, v in student_cfg.items() if source.model.get(k) != v}
    section = _section("distill-quantize" if bits else "distill", source, teacher.checkpoint, bits=bits,
                       plan=quantizable(student) if bits else None, bundle=student, alpha=alpha, init=init,
                       student=changed)
    info = {"model": student_cfg, "data": {**source.data, **data.info()}, "compression": section}
    start = "starting from the teacher's weights" if init == "teacher" else "random initialisation"
    log(f"distilling {source.path} ({teacher.bundle.model.n_params():,} parameters) into {student_cfg['name']} "
        f"{changed} ({student.n_params():,} parameters){f', {bits}-bit weights in the forward pass' if bits else ''}; "
        f"alpha {alpha:g}; {start}")
    run = RunDir.create(out, {**info, "train": dataclasses.asdict(cfg.train)})
    try:
        try:
            trainer = Trainer(student, data.train, cfg.train, val=data.val, tests=data.tests, run=run, info=info,
                              log=log)
            plan = quantizable(trainer.bundle)
            if init == "teacher":  # in place: the optimizer holds these parameters
                trainer.bundle.load_state_dict(teacher.bundle.state_dict())
            trainer.task = Distillation(data.train, cfg.train, targets, alpha, bits, plan,
                                        input_channels=(info.get("data") or {}).get("input_channels"))
        except BaseException:
            run.discard()
            raise
        result = trainer.fit()
        if bits:
            _quantize_checkpoints(run, run, plan, bits)
    finally:
        run.unlock()
    if cfg.train.plot_samples and result["history"]:
        from ..train.plots import write_plots

        first = data.tests[next(iter(data.tests))] if data.tests else data.val
        write_plots(out, load(out).bundle, first and first.head(cfg.train.plot_samples), result["history"], info,
                    cfg.train.plot_samples)
    return report(section["method"], source, out, data.val, teacher.bundle)


class Distillation(MapTask):
    """The training task of a distillation: a one-shot map whose batches carry the teacher's outputs,
    with the loss ``(1 - alpha) L(s(a), t(a)) + alpha L(s(a), u)``; with ``bits`` the student's
    weights (``plan``: name -> channel axis) are fake-quantised in the forward pass and in the
    validation that chooses ``best`` (quantised distillation, Polino et al. 2018)."""

    def __init__(self, train, cfg, targets: torch.Tensor, alpha: float = 0.0, bits: int | None = None,
                 plan: dict | None = None, input_channels=None):
        super().__init__(train, cfg, input_channels)
        self.targets, self.alpha, self.bits, self.plan = targets, float(alpha), bits, dict(plan or {})

    def batches(self, plan):
        for (x, y), idx in zip(self.train.batches(plan), plan):
            yield x, y, self.targets[torch.as_tensor(idx)]

    def forward(self, trainer, net, x, coords):
        """The student's output; with ``bits`` through its fake-quantised weights."""
        if not self.bits:
            return trainer.forward(net, x, coords)
        prefix = "" if net is trainer.bundle else "module."  # a DistributedDataParallel wrapper
        weights = {prefix + name: fake_quantize(trainer.bundle.get_parameter(name), self.bits, axis)
                   for name, axis in self.plan.items()}
        return torch.func.functional_call(net, weights, (x, coords))

    def loss(self, trainer, net, batch, coords):
        x, y, t = (b.to(trainer.device) for b in batch)
        if self.symmetries is not None:  # train.augment: the teacher's outputs turn with the rest
            x, y, t = self.symmetries(trainer.epoch, x, y, t)
        pred = self.forward(trainer, net, x, coords).float()
        if self.mask is not None:  # train.loss_mask: the points outside the domain count nowhere
            pred, y, t = masked(x, self.mask, pred, y, t)
        periodic = self.train.periodic
        loss = (1.0 - self.alpha) * trainer.loss_fn(pred, t, coords, periodic)
        if self.alpha:
            loss = loss + self.alpha * trainer.loss_fn(pred, y, coords, periodic)
        return loss, len(x)

    def evaluate(self, bundle, data, device) -> dict:
        return super().evaluate(quantized_copy(bundle, self.bits, self.plan) if self.bits else bundle, data, device)


# ------------------------------------------------------------------ summary
def weights_file(run: RunDir | Path) -> Path:
    """The weights file ``oplab.load`` reads (``best``, else ``last``)."""
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    name = "best" if run.has_checkpoint("best") else "last"
    return ckpt.locate(run.checkpoint_dir(name)) / "weights.safetensors"


def _validation(source: RunDir):
    """The validation samples of ``source`` (None where it kept none)."""
    from ..train.data import recorded_split

    val = recorded_split(source).val
    return val.load() if val is not None else None


def report(method: str, source: RunDir, out: Path, val=None, teacher_bundle=None) -> dict:
    """``{method, out, teacher, bytes, teacher_bytes, size_ratio, val_l2, teacher_val_l2}``: the weights
    files' sizes and the relative L2 on the validation samples (None without them)."""
    from ..predictor import load
    from ..train.tasks import TASKS

    summary = {"method": method, "out": str(out), "teacher": str(source.path),
               "bytes": weights_file(out).stat().st_size, "teacher_bytes": weights_file(source).stat().st_size}
    summary["size_ratio"] = summary["teacher_bytes"] / summary["bytes"]
    summary["val_l2"] = summary["teacher_val_l2"] = None
    if val is not None:
        from ..eval.run import task_config

        cfg = task_config(source.config["train"])
        mask = mask_channel(cfg, source.data.get("input_channels"))
        if mask is None:
            score = lambda bundle: TASKS[cfg.task].score(cfg, bundle, val)  # noqa: E731
        else:  # train.loss_mask: over the domain only, as the run's own errors
            score = lambda bundle: evaluate(bundle, val, mask=mask)  # noqa: E731
        teacher_bundle = teacher_bundle if teacher_bundle is not None else load(source.path).bundle
        summary["val_l2"] = score(load(out).bundle)["l2"]
        summary["teacher_val_l2"] = score(teacher_bundle)["l2"]
    return summary
