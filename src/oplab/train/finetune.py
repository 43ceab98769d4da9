"""Transfer to a new data set: fine-tuning a trained run (full, LoRA, head) and a MAML-style
meta-initialisation to fine-tune from.

LeMON (Sun, Zhang, Schaeffer 2024, "LeMON: Learning to learn multi-operator networks",
arXiv:2408.16168; code github.com/JingminSun/LeMON) pretrains one operator on several PDE
families and adapts it to an unseen family from 10 to 100 samples, by full fine-tuning or by
low-rank adapters (LoRA, Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models",
arXiv:2106.09685; the paper's scripts use rank 64, alpha 5), and meta-learns the initialisation
("PAML", built on learn2learn's MAML, Finn, Abbeel, Levine 2017, arXiv:1703.03400).

>>> from oplab.train.finetune import finetune
>>> finetune("runs/burgers_fno", "burgers_nu002.h5", method="lora", n_train=20, out="runs/ft20")

The fine-tuned run is an ordinary run folder (``oplab.load``, ``oplab evaluate``, ``oplab export``)
holding a model of the parent's architecture; its ``config.json`` has a ``finetune`` section: the
parent (path, checkpoint, SHA-256 of its weights file), the method, ``n_train`` (K), the trainable
and total parameter counts and, for LoRA, the rank, alpha and adapted layers.

The split of the new file: its first K samples train, the next ``n_val`` (default ``max(2, K //
4)``, extra to K) validate and choose ``best``, the test samples come from its end (``n_test``) or
from ``test``; the same planner as ``oplab train`` (:func:`oplab.train.data.plan`) records it.

Methods:

* ``full``: every weight trainable, initialised from the parent.
* ``head``: only the output map trains: the ``projection`` (``Q``) of FNO/TFNO, LordNet, LSM,
  MGNO, ANIE and the neural ODE; the ``head`` of U-Net, Transolver and the sequential DeepONet;
  for any other model its last top-level submodule that holds parameters, descending into that
  module's last child while it holds more than half of the model's parameters (ResNet: its last
  block; DeepONet: its trunk), as listed in the run's ``finetune.head``.
* ``lora``: every weight frozen; a rank-``r`` update ``(alpha / r) B A`` with ``B = 0`` at the
  start (so the model starts as the parent, exactly) on every ``nn.Linear`` that the forward pass
  calls (by ``peft``, the ``finetune`` extra; a layer whose weight the model reads directly, as
  Transolver's projections, stays frozen: an adapter there would get no gradient), on every
  ``nn.Conv1d/2d/3d`` (:class:`LoRAConv`, through the layer's own padding mode and weighted-tap
  density, which peft's convolution adapters do not keep), on every
  :class:`~oplab.layers.pointwise.Pointwise` (a 1x1 map, :class:`LoRAPointwise`) and on every dense
  spectral weight (:class:`LoRASpectralWeight`: a rank-``r`` update of the complex weight over its
  channels, the input-channel factor shared by the frequencies; peft does not handle complex
  tensors). Factorised (TFNO) spectral weights stay frozen. After training the adapters are merged
  into the weights of both checkpoints, so the saved model is a plain model of the parent's
  architecture. Scaling is peft's ``alpha / r`` (LeMON's own layer multiplies by ``alpha`` alone).

Normalisers: by default refitted to the K samples (as a run from scratch), or the parent's
(``normalizers="parent"``: the fine-tune then starts as the parent exactly, in physical units).

Resuming: ``oplab train --resume RUN`` (or :func:`resume`) rebuilds the frozen or adapted model
and continues from ``checkpoints/last``, as for any run; a finished LoRA run holds merged weights
and is complete.

Meta-initialisation (:func:`meta_init`, ``oplab pretrain-meta``): first-order MAML over tasks, each
task one data file. Why first-order MAML and not Reptile: LeMON's PAML is learn2learn's MAML
(inner SGD steps on a support batch, outer gradient on a query batch), and its first-order form
keeps that structure (the outer update is the query gradient at the adapted weights) while needing
no second derivatives through the FFTs; Reptile (Nichol, Achiam, Schulman 2018, arXiv:1803.02999)
would move towards the adapted weights instead and has no support/query split. The result is a
normal run folder, usable as the parent of :func:`finetune`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
from pathlib import Path

import torch
from torch import nn

from .. import checkpoint as ckpt
from ..errors import OplabError, ParameterError, check_int
from ..rundir import RunDir, load_matching
from .callbacks import Callback
from .config import DataConfig, TrainConfig

METHODS = ("full", "lora", "head")
NORMALIZERS = ("refit", "parent")
#: attribute names of the output map, in order of preference (module docstring)
HEAD_NAMES = ("projection", "head")


# ----------------------------------------------------------------------------- LoRA layers
class LoRAPointwise(nn.Module):
    """A :class:`~oplab.layers.pointwise.Pointwise` map ``W`` plus a low-rank update:
    ``(W + (alpha / r) B A) v`` with ``A [r, C_in]`` (random) and ``B [C_out, r]`` (zero at the start)."""

    def __init__(self, base: nn.Module, rank: int, alpha: float):
        super().__init__()
        c_out, c_in = base.weight.shape
        r = min(int(rank), c_in, c_out)
        self.base, self.rank, self.scale = base, r, float(alpha) / r
        self.lora_A = nn.Parameter(torch.randn(r, c_in) / math.sqrt(c_in))
        self.lora_B = nn.Parameter(torch.zeros(c_out, r))

    def delta(self) -> torch.Tensor:
        return self.scale * (self.lora_B @ self.lora_A)  # [C_out, C_in]

    @property
    def bias(self):
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *sizes = x.shape
        return self.base(x) + (self.delta() @ x.reshape(batch, channels, -1)).reshape(batch, -1, *sizes)

    def add_to(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``y += (W + (alpha / r) B A) x`` in place, without the bias (the FNO layer's fused sum)."""
        batch, channels = x.shape[:2]
        delta = self.delta()
        return self.base.add_to(y, x).view(batch, y.shape[1], -1).baddbmm_(
            delta.expand(batch, *delta.shape), x.reshape(batch, channels, -1)).view(y.shape)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        self.base.weight.add_(self.delta())
        return self.base


class LoRASpectralWeight(nn.Module):
    """A dense spectral weight ``R [I, O, *M]`` (complex) plus a rank-``r`` update over the channels:
    ``R[:, :, k] + (alpha / r) A B[:, :, k]`` at every retained frequency ``k``, with ``A [I, r]``
    (random, shared by the frequencies) and ``B [r, O, *M]`` (zero at the start): the unfolding
    ``[I, O * M]`` of the weight gets a rank-``r`` update, ``r (I + O M)`` complex parameters
    instead of ``I O M``. Complex values in real storage ``[..., 2]`` like
    :mod:`oplab.layers.spectral`; called, it returns the complex tensor, as the weight it wraps."""

    def __init__(self, base: nn.Module, rank: int, alpha: float):
        super().__init__()
        self.base, self.shape = base, tuple(base.shape)
        i, o, *modes = self.shape
        r = min(int(rank), i, o)
        self.rank, self.scale = r, float(alpha) / r
        self.lora_A = nn.Parameter(torch.randn(i, r, 2) / math.sqrt(2 * i))  # E|a|^2 = 1 / i
        self.lora_B = nn.Parameter(torch.zeros(r, o, *modes, 2))

    def delta(self) -> torch.Tensor:
        a, b = torch.view_as_complex(self.lora_A), torch.view_as_complex(self.lora_B)
        return self.scale * torch.einsum("ir,ro...->io...", a, b)

    def forward(self) -> torch.Tensor:
        return self.base() + self.delta()

    @torch.no_grad()
    def merged(self) -> nn.Module:
        self.base.weight.copy_(torch.view_as_real(self.forward().resolve_conj()))
        return self.base


class LoRAConv(nn.Module):
    """A convolution ``nn.Conv1d/2d/3d`` (any padding mode, groups, and oplab's weighted
    convolutions) plus a low-rank update of its kernel: ``W + (alpha / r) reshape(B A)`` with
    ``A [r, C_in / groups * prod(kernel)]`` (random) and ``B [C_out, r]`` (zero at the start), applied
    through the layer's own convolution (its padding mode and, for a weighted convolution, its tap
    density), so that merging is exact. (peft's convolution adapters pad with zeros whatever the
    layer's ``padding_mode``, huggingface/peft#3697, and rebuild the layer's class, which loses the
    weighted convolution's density: the merged model would differ from the trained one.)"""

    def __init__(self, base: nn.Module, rank: int, alpha: float):
        super().__init__()
        c_out, fan_in = base.weight.shape[0], base.weight[0].numel()
        r = min(int(rank), c_out, fan_in)
        self.base, self.rank, self.scale = base, r, float(alpha) / r
        self.lora_A = nn.Parameter(torch.randn(r, fan_in) / math.sqrt(fan_in))
        self.lora_B = nn.Parameter(torch.zeros(c_out, r))

    def delta(self) -> torch.Tensor:
        return self.scale * (self.lora_B @ self.lora_A).view_as(self.base.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.base.weight + self.delta()
        density = getattr(self.base, "tap_density", None)
        return self.base._conv_forward(x, weight if density is None else weight * density, self.base.bias)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        self.base.weight.add_(self.delta())
        return self.base


def _called(model: nn.Module, names: list, probe) -> list:
    """The modules among ``names`` that a forward pass on ``probe = (x, coords)`` calls (a layer whose
    weight the model reads directly, e.g. Transolver's slice and attention projections, is not
    called, and an adapter there would get no gradient)."""
    modules = dict(model.named_modules())
    seen: set = set()
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen.add(n)) for n in names]
    try:
        with torch.no_grad():
            model(*probe)
    finally:
        for h in hooks:
            h.remove()
    return [n for n in names if n in seen]


def add_lora(model: nn.Module, rank: int = 8, alpha: float = 8.0, probe=None) -> dict:
    """Freeze ``model`` and give it LoRA adapters in place (module docstring); returns what was
    adapted: ``{"peft": [...], "conv": [...], "pointwise": [...], "spectral": [...], "frozen": [...]}`` by
    module name. ``probe``: a model input ``(x, coords)``; with it only the linear layers that its
    forward pass calls are adapted (:func:`_called`)."""
    from ..layers.pointwise import Pointwise
    from ..layers.spectral import DenseWeight, SpectralConv

    check_int("lora", "rank", rank)
    if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and math.isfinite(alpha) and alpha > 0):
        raise ParameterError(f"lora: alpha must be a positive number, got {alpha!r}")
    for p in model.parameters():
        p.requires_grad_(False)
    modules = dict(model.named_modules())
    parent_of = lambda name: modules[name.rsplit(".", 1)[0]] if "." in name else model  # noqa: E731
    linear = [name for name, m in modules.items() if name and isinstance(m, nn.Linear)
              and not isinstance(parent_of(name), nn.MultiheadAttention)]
    torch_layers = linear if probe is None else _called(model, linear, probe)
    done = {"peft": torch_layers, "conv": [], "pointwise": [], "spectral": [],
            "frozen": sorted(set(linear) - set(torch_layers))}
    for name, m in list(modules.items()):
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            _set_child(model, name, LoRAConv(m, rank, alpha))
            done["conv"].append(name)
        elif isinstance(m, Pointwise):
            _set_child(model, name, LoRAPointwise(m, rank, alpha))
            done["pointwise"].append(name)
        elif isinstance(m, SpectralConv):
            if isinstance(m.weight, DenseWeight):
                m.weight = LoRASpectralWeight(m.weight, rank, alpha)
                m._cached = None
                done["spectral"].append(name)
            else:
                done["frozen"].append(name)
    if torch_layers:
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError:  # pragma: no cover - the finetune extra
            raise OplabError("method lora needs peft for the model's Linear layers: pip install 'oplab[finetune]'") from None
        config = LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=0.0, bias="none",
                            target_modules=torch_layers)
        inject_adapter_in_model(config, model)
        for name, p in model.named_parameters():  # peft marks its adapters trainable; nothing else
            p.requires_grad_("lora_" in name)
    return done


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter of :func:`add_lora` into its weight and remove it (in place): the model of
    the original architecture and state-dict keys, every parameter trainable again."""
    for name, m in list(model.named_modules()):
        if isinstance(m, (LoRAPointwise, LoRAConv, LoRASpectralWeight)):
            _set_child(model, name, m.merged())
    peft_layers = [(name, m) for name, m in model.named_modules() if type(m).__module__.startswith("peft.")
                   and hasattr(m, "get_base_layer")]
    if peft_layers:  # (importing peft costs seconds: only when it was used)
        from peft.tuners.lora import LoraLayer

        for name, m in peft_layers:
            if isinstance(m, LoraLayer):
                m.merge(safe_merge=True)
                _set_child(model, name, m.get_base_layer())
    for m in model.modules():
        if hasattr(m, "_cached"):
            m._cached = None
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _set_child(root: nn.Module, name: str, child: nn.Module) -> None:
    owner = root
    *path, last = name.split(".")
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, last, child)


def head_modules(model: nn.Module) -> list[str]:
    """The output map's submodules (module docstring): ``projection`` or ``head``, else the last
    top-level submodule that holds parameters, and while that holds more than half of the model's
    parameters (e.g. ResNet's ``blocks``), its last such child instead."""
    for name in HEAD_NAMES:
        if isinstance(getattr(model, name, None), nn.Module) and any(True for _ in getattr(model, name).parameters()):
            return [name]
    total = sum(p.numel() for p in model.parameters())
    owner, prefix = model, ""
    while True:
        last = [(n, m) for n, m in owner.named_children() if any(True for _ in m.parameters())]
        if not last:
            if owner is model:
                raise ParameterError(f"method head: model {type(model).__name__} has no submodule with parameters")
            return [prefix]
        name, child = last[-1]
        prefix = f"{prefix}.{name}" if prefix else name
        if 2 * sum(p.numel() for p in child.parameters()) <= total:
            return [prefix]
        owner = child


def prepare_model(model: nn.Module, method: str, rank: int = 8, alpha: float = 8.0, probe=None) -> dict:
    """Make ``model`` ready for ``method`` in place (freeze, adapters) and describe it: the
    trainable and total parameter counts, the head modules or the adapted layers."""
    if method not in METHODS:
        raise ParameterError(f"finetune: method must be one of {list(METHODS)}, got {method!r}")
    total = sum(p.numel() for p in model.parameters())
    info: dict = {"method": method}
    if method == "head":
        heads = head_modules(model)
        for name, p in model.named_parameters():
            p.requires_grad_(any(name == h or name.startswith(h + ".") for h in heads))
        info["head"] = heads
    elif method == "lora":
        info["lora"] = {"rank": int(rank), "alpha": float(alpha), **add_lora(model, rank, alpha, probe)}
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    info["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info["total_params"] = total
    return info


# ----------------------------------------------------------------------------- fine-tuning
class ParentNormalizers(Callback):
    """At a fresh start, put the parent's input and output normalisers back (the Trainer fitted
    new ones to the K samples): the fine-tuned model starts as the parent, in physical units."""

    def __init__(self, state: dict):
        self.state = state

    def on_fit_start(self, trainer):
        if trainer.start_epoch == 0 and self.state:
            with torch.no_grad():
                for key, value in self.state.items():
                    trainer.bundle.get_buffer(key).copy_(value)


def kept_normalizers(norms: dict, normalizers: str) -> dict:
    """The parent's normaliser buffers that ``normalizers`` keeps: all (``parent``) or none (``refit``).
    (Keeping only the input normaliser was tried on the pde1d transfer, K = 20: 2-9x worse than
    either, since a coefficient channel constant in the parent's data has a near-zero scale there.)"""
    return dict(norms) if normalizers == "parent" else {}


def _probe(x_shape, prepared) -> tuple:
    """A model input of the run's shape (zeros) and its grid: the forward pass that finds the layers
    LoRA can adapt (:func:`_called`)."""
    return torch.zeros(1, *x_shape), tuple(prepared.train.out_coords)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _parent_weights(source: RunDir, checkpoint: str) -> tuple[dict, dict, str, Path]:
    """The parent's model weights, its normaliser buffers, the checkpoint used and its file."""
    weights, used = source.load_weights(checkpoint)
    model = {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")}
    norms = {k: v for k, v in weights.items() if k.startswith(("in_norm.", "out_norm."))}
    return model, norms, used, ckpt.locate(source.checkpoint_dir(used)) / "weights.safetensors"


def _train_config(base: dict, **overrides) -> TrainConfig:
    """The parent's training settings (its time budget too; threads chosen anew, no loggers) with
    ``overrides``, validated and typed as ``oplab train``'s (an unknown key lists the valid ones)."""
    from .config import _section

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in base.items() if k in known}
    values.update(threads=0, loggers=[])
    values.update(overrides)
    return _section(TrainConfig, values, "train")


def default_n_val(k: int) -> int:
    """Validation samples beside K training ones: a quarter of K, at least 2, at most 50."""
    return min(max(2, k // 4), 50)


def _shape_words(x, y) -> str:
    return f"inputs {list(x)} -> outputs {list(y)}"


def finetune(parent: str | Path, data: str | Path, method: str = "full", n_train: int = 20,
             out: str | Path | None = None, *, n_val: int | None = None, n_test: int | None = None,
             test: str | Path | None = None, resolution: int | None = None, checkpoint: str = "best",
             lora_rank: int = 8, lora_alpha: float = 8.0, normalizers: str = "refit", log=print, progress=None,
             callbacks=(), **train_kwargs) -> dict:
    """Fine-tune the trained run ``parent`` on the first ``n_train`` samples of ``data`` into the new
    run folder ``out`` (None: nothing written) by ``method`` (module docstring). ``train_kwargs``
    override the parent's :class:`TrainConfig` fields (epochs, lr, batch_size, ...). Returns the
    training result plus ``finetune`` (what the run records) and ``parent_errors`` (the parent's
    errors on the new validation and test samples before any training). ``normalizers``: ``refit``
    (default) fits the input and output normalisers to the K samples, as a run from scratch does
    (the network starts as the parent's, in normalised units); ``parent`` keeps the parent's (the
    fine-tuned bundle starts as the parent, exactly, in physical units). On Burgers nu = 0.1 ->
    0.02 the parent's normalisers left full fine-tuning 2-3x worse than refitted ones
    (benchmarks/finetune.py): the output scale changes with the data set."""
    from .. import models
    from .api import _train, task_shapes
    from .data import plan, prepare

    source = RunDir.open(parent)
    if method not in METHODS:
        raise ParameterError(f"--method must be one of {list(METHODS)}, got {method!r}")
    if normalizers not in NORMALIZERS:
        raise ParameterError(f"--normalizers must be one of {list(NORMALIZERS)}, got {normalizers!r}")
    k = check_int("finetune", "n_train", n_train)
    n_val = default_n_val(k) if n_val is None else check_int("finetune", "n_val", n_val, minimum=0)
    if out is not None:
        RunDir.check_fresh(out)
    cfg = _train_config(source.config["train"], **train_kwargs)
    if test is None:
        from ..data.dataset import open_dataset

        held = len(open_dataset(str(data)))
        if k + n_val >= held:
            raise ParameterError(f"finetune: n_train {k} + n_val {n_val} = {k + n_val} samples leave no test sample of "
                                 f"the {held} in {data} (lower them, or give a separate test file)")
    data_cfg = DataConfig(train=str(data), test=None if test is None else str(test), n_train=k + n_val,
                          n_val=n_val, n_test=n_test, resolution=resolution, in_memory=True)
    prepared = prepare(plan(data_cfg), outputs=not cfg.physics_only, in_memory=True)
    x_shape, y_shape = task_shapes(cfg, prepared)
    want_x, want_y = source.data["train_input_shape"], source.data["train_output_shape"]
    cls = models.get(source.model["name"])
    same_grid = list(x_shape[1:]) == list(want_x[1:]) and list(y_shape[1:]) == list(want_y[1:])
    if (x_shape[0], y_shape[0], len(x_shape), len(y_shape)) != (want_x[0], want_y[0], len(want_x), len(want_y)) or (
            not same_grid and not getattr(cls, "resolution_invariant", False)):
        raise ParameterError(f"{data}: {_shape_words(x_shape, y_shape)}, but the parent run {parent} was trained on "
                             f"{_shape_words(want_x, want_y)}; fine-tuning needs the same channels and dimension"
                             + ("" if getattr(cls, "resolution_invariant", False) else " and grid"))

    model = models.from_config(source.model)
    state, norms, used, weights_file = _parent_weights(source, checkpoint)
    load_matching(model, state, weights_file, source.path / "config.json")
    parent_errors = _parent_errors(model, norms, prepared, cfg)
    torch.manual_seed(cfg.seed)  # the adapters' random halves
    ft = {"parent": str(Path(parent).resolve()), "parent_checkpoint": used,
          "parent_weights_sha256": _sha256(weights_file), "parent_model": source.model["name"],
          "n_train": k, "n_val": n_val, "normalizers": normalizers,
          **prepare_model(model, method, lora_rank, lora_alpha, _probe(x_shape, prepared)),
          "parent_errors": parent_errors}
    adapted = f", rank {lora_rank}" if method == "lora" else f" ({', '.join(ft['head'])})" if method == "head" else ""
    log(f"fine-tuning {parent} ({source.model['name']}, checkpoint {used}) by {method}{adapted}: "
        f"{ft['trainable_params']:,} of {ft['total_params']:,} parameters trainable; {k} training samples, "
        f"{n_val} validation; parent's validation error on the new data "
        f"{parent_errors.get('val', {}).get('l2', float('nan')):.4f}")
    if method == "lora" and ft["trainable_params"] >= ft["total_params"]:
        log(f"warning: the rank-{lora_rank} adapters hold {ft['trainable_params']:,} parameters, as many as the "
            f"whole model ({ft['total_params']:,}): full fine-tuning costs no more (a lower --lora-rank saves)")
    info = {"model": dict(source.model), "data": {**dataclasses.asdict(data_cfg), **prepared.info(),
                                                 "train_input_shape": list(x_shape), "train_output_shape": list(y_shape)},
            "finetune": ft}
    tic = time.perf_counter()
    result = _train(model, prepared, cfg, Path(out) if out is not None else None, info, False, log, progress,
                    [ParentNormalizers(kept_normalizers(norms, normalizers))] + list(callbacks))
    result["seconds"] = time.perf_counter() - tic
    if method == "lora":
        _merge_result(result, out)
    return {**result, "finetune": ft, "parent_errors": parent_errors}


def _parent_errors(model, norms: dict, prepared, cfg: TrainConfig) -> dict:
    """The parent's errors on the new validation and test samples (before fine-tuning)."""
    from ..predictor import Bundle
    from . import tasks
    from .distributed import resolve_device

    task = tasks.make(prepared.train, cfg, prepared.info().get("input_channels"))
    bundle = Bundle(model, task.in_channels, task.out_channels, getattr(task, "static", ()), getattr(task, "c", 0))
    bundle.load_state_dict({**bundle.state_dict(), **norms})
    device = resolve_device(cfg.device)
    bundle.to(device)
    out = {}
    if prepared.val is not None:
        out["val"] = task.evaluate(bundle, prepared.val, device)
    out["test"] = {label: task.evaluate(bundle, d, device) for label, d in prepared.tests.items()}
    bundle.cpu()
    model.train()
    return out


def _merge_result(result: dict, out) -> None:
    """Merge the adapters of the trained bundle and of the run folder's checkpoints (LoRA)."""
    bundle = result["bundle"]
    if out is not None:
        run = RunDir.open(out).lock()
        try:
            for name in ("best", "last"):
                if not run.has_checkpoint(name):
                    continue
                twin = copy.deepcopy(bundle)
                twin.load_state_dict(run.load_weights(name)[0])
                merge_lora(twin.model)
                weights = {k: v.detach() for k, v in twin.state_dict().items()}
                if name == "last":
                    tensors, state = run.load_state()
                    run.save_checkpoint(name, weights, tensors, {**state, "merged": True})
                else:
                    run.save_checkpoint(name, weights)
        finally:
            run.unlock()
    merge_lora(bundle.model)


def resume(out: str | Path, epochs: int | None = None, log=print, progress=None, callbacks=()) -> dict:
    """Continue the fine-tuned run in ``out`` from its last checkpoint (``epochs``: a new total), with
    the same frozen parameters or adapters."""
    from .. import models
    from .api import _train
    from .data import prepare, recorded_split

    run = RunDir.open(out)
    ft = run.config.get("finetune")
    if not isinstance(ft, dict):
        raise OplabError(f"{out}: not a fine-tuned run (no finetune section in config.json)")
    state = run.state()
    if state and state.get("merged"):
        if epochs is None or epochs <= state["epoch"] + 1:
            log(f"{out}: already complete: its LoRA adapters were merged after epoch {state['epoch']}")
            return {"history": run.metrics(), "best_val": state.get("best"), "bundle": None, "stopped": None}
        raise ParameterError(f"{out}: a finished LoRA run holds merged weights and cannot continue to --epochs "
                             f"{epochs}; fine-tune it again (oplab finetune {out} ...)")
    train = dict(run.config["train"])
    if epochs is not None:
        train["epochs"] = check_int("resume", "epochs", epochs)
    cfg = _train_config(train)
    cfg = dataclasses.replace(cfg, threads=run.config["train"].get("threads", 0))
    model = models.from_config(run.model)
    norms = {}
    if not run.has_checkpoint("last"):  # stopped before its first checkpoint: start again from the parent
        source = RunDir.open(ft["parent"])
        weights, norms, _, weights_file = _parent_weights(source, ft["parent_checkpoint"])
        if _sha256(weights_file) != ft["parent_weights_sha256"]:
            raise OplabError(f"{out}: its parent {ft['parent']} has changed since the fine-tune started (other "
                             f"{ft['parent_checkpoint']} weights); fine-tune it again into a new folder")
        load_matching(model, weights, weights_file, source.path / "config.json")
        norms = kept_normalizers(norms, ft.get("normalizers", "refit"))
    lora = ft.get("lora") or {}
    torch.manual_seed(cfg.seed)
    data = prepare(recorded_split(run), outputs=not cfg.physics_only, in_memory=True)
    prepare_model(model, ft["method"], lora.get("rank", 8), lora.get("alpha", 8.0),
                  _probe(run.data["train_input_shape"], data))
    info = {key: run.config[key] for key in ("model", "data", "finetune")}
    result = _train(model, data, cfg, Path(out), info, True, log, progress, [ParentNormalizers(norms)] + list(callbacks))
    if ft["method"] == "lora":
        _merge_result(result, out)
    return result


# ----------------------------------------------------------------------------- meta-initialisation
def meta_init(tasks: list, model: dict, out: str | Path, *, n_train: int | None = None, n_val: int | None = None,
              n_test: int | None = None, steps: int = 200, meta_batch: int = 4, support: int = 10, query: int = 10,
              inner_steps: int = 3, inner_lr: float = 1e-2, meta_lr: float = 1e-3, eval_every: int = 20,
              loss: str = "l2", seed: int = 0, log=print) -> dict:
    """First-order MAML (module docstring) of the model ``model`` (``{"name": ..., **args}``, completed
    from the data like ``oplab train``) over ``tasks`` (data files with one channel layout, each a
    task; each split like ``oplab train``'s: ``n_train`` from its start with the last ``n_val``
    validating, ``n_test`` at its end). Every step draws ``meta_batch`` tasks; for each, a copy of
    the weights takes ``inner_steps`` SGD steps (``inner_lr``) on ``support`` training samples, and
    the gradient of the loss on ``query`` other ones at the adapted weights is averaged into one
    Adam step (``meta_lr``) of the shared weights. Every ``eval_every`` steps the validation error
    after adaptation (the same inner steps on each task's first ``support`` training samples),
    averaged over the tasks, is recorded and chooses ``best``. Writes the normal run folder ``out``
    (its data section: the first task's split; ``meta_init``: the tasks and settings)."""
    from .. import losses
    from .. import models as registry
    from ..checkpoint import optimizer_to_flat
    from ..models.presets import derive
    from ..predictor import Bundle
    from . import tasks as task_mod
    from .data import plan, prepare

    files = [str(t) for t in tasks]
    if len(files) < 2:
        raise ParameterError(f"meta_init: tasks must list at least 2 data files (one per task), got {len(files)}")
    for key, value in (("steps", steps), ("meta_batch", meta_batch), ("support", support), ("query", query),
                       ("inner_steps", inner_steps), ("eval_every", eval_every)):
        check_int("meta_init", key, value)
    for key, value in (("inner_lr", inner_lr), ("meta_lr", meta_lr)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ParameterError(f"meta_init: {key} must be a positive number, got {value!r}")
    RunDir.check_fresh(out)
    cfg = TrainConfig(epochs=-(-steps // eval_every), lr=meta_lr, loss=loss, seed=seed, eval_every=1)
    data_cfgs = [DataConfig(train=f, n_train=n_train, n_val=n_val, n_test=n_test, in_memory=True) for f in files]
    parts = [prepare(plan(c), in_memory=True) for c in data_cfgs]
    first = parts[0]
    for f, p in zip(files[1:], parts[1:]):
        if (p.train.x_shape, p.train.y_shape) != (first.train.x_shape, first.train.y_shape):
            raise ParameterError(f"{f}: {_shape_words(p.train.x_shape, p.train.y_shape)}, but the first task {files[0]} "
                                 f"has {_shape_words(first.train.x_shape, first.train.y_shape)}; every task needs one layout")
        if p.val is None:
            raise ParameterError(f"{f}: the task has no validation samples (data.n_val = 0); meta_init chooses on them")
        if len(p.train) < support + query:
            raise ParameterError(f"{f}: {len(p.train)} training samples, fewer than support + query = {support + query}")
    if first.val is None or len(first.train) < support + query:
        raise ParameterError(f"{files[0]}: needs validation samples and at least support + query = "
                             f"{support + query} training samples, has {len(first.train)}")
    x_shape, y_shape = first.train.x_shape, first.train.y_shape
    model_cfg = derive(model, (len(first.train), *x_shape), (len(first.train), *y_shape), first.train.out_coords,
                       tuple(first.train.periodic))
    torch.manual_seed(seed)
    net = registry.from_config(model_cfg)
    bundle = Bundle(net, x_shape[0], y_shape[0])
    bundle.in_norm.fit(torch.cat([p.train.x for p in parts]))
    bundle.out_norm.fit(torch.cat([p.train.y for p in parts]))
    fast = copy.deepcopy(bundle)
    loss_fn = losses.get(loss)
    coords = tuple(first.train.out_coords)
    periodic = tuple(first.train.periodic)
    opt = torch.optim.Adam(bundle.parameters(), lr=meta_lr)
    gen = torch.Generator().manual_seed(seed)

    def adapt(x, y) -> None:  # fast <- bundle, then inner SGD steps on (x, y)
        fast.load_state_dict(bundle.state_dict())
        for _ in range(inner_steps):
            fast.zero_grad(set_to_none=True)
            loss_fn(fast(x, coords), y, coords, periodic).backward()
            with torch.no_grad():
                for p in fast.parameters():
                    if p.grad is not None:
                        p.sub_(inner_lr * p.grad)

    def validate() -> float:
        errors = []
        for p in parts:
            adapt(p.train.x[:support], p.train.y[:support])
            errors.append(task_mod.MapTask.score(cfg, fast, p.val)["l2"])
        return sum(errors) / len(errors)

    info = {"model": model_cfg, "data": {**dataclasses.asdict(data_cfgs[0]), **first.info()},
            "train": dataclasses.asdict(cfg),
            "meta_init": {"algorithm": "first-order MAML", "tasks": [str(Path(f).resolve()) for f in files],
                          "steps": steps, "meta_batch": meta_batch, "support": support, "query": query,
                          "inner_steps": inner_steps, "inner_lr": inner_lr, "meta_lr": meta_lr, "loss": loss}}
    run = RunDir.create(out, info)
    try:
        best, history, total, seen = math.inf, [], 0.0, 0
        tic = time.perf_counter()
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            chosen = torch.randperm(len(parts), generator=gen)[:meta_batch].tolist()
            grads = [torch.zeros_like(p) for p in bundle.parameters()]
            for t in chosen:
                train = parts[t].train
                pick = torch.randperm(len(train), generator=gen)[: support + query]
                s, q = pick[:support], pick[support:]
                adapt(train.x[s], train.y[s])
                fast.zero_grad(set_to_none=True)
                outer = loss_fn(fast(train.x[q], coords), train.y[q], coords, periodic)
                outer.backward()
                for g, p in zip(grads, fast.parameters()):
                    if p.grad is not None:
                        g.add_(p.grad / len(chosen))
                total, seen = total + outer.item(), seen + 1
            for g, p in zip(grads, bundle.parameters()):
                p.grad = g
            opt.step()
            if (step + 1) % eval_every == 0 or step + 1 == steps:
                record = {"epoch": len(history), "lr": meta_lr, "train_loss": total / max(seen, 1),
                          "val": {"l2": validate()}, "epoch_seconds": time.perf_counter() - tic}
                total, seen, tic = 0.0, 0, time.perf_counter()
                weights = {k: v.detach().clone() for k, v in bundle.state_dict().items()}
                if record["val"]["l2"] < best:
                    best, record["best"] = record["val"]["l2"], True
                    run.save_checkpoint("best", weights)
                run.append_metrics(record)
                history.append(record)
                log(f"meta step {step + 1}/{steps}: query loss {record['train_loss']:.4f}, validation after "
                    f"adaptation {record['val']['l2']:.4f}")
        opt_tensors, opt_struct = optimizer_to_flat(opt)
        run.save_checkpoint("last", {k: v.detach() for k, v in bundle.state_dict().items()},
                            {**opt_tensors, "rng.torch": torch.get_rng_state()},
                            {"epoch": len(history) - 1, "best": best, "monitor": "l2", "optimizer": opt_struct,
                             "epochs": len(history), "step_size": cfg.step_size, "stopped": False})
    finally:
        run.unlock()
    return {"history": history, "best_val": best, "bundle": bundle}


__all__ = ["LoRAConv", "LoRAPointwise", "LoRASpectralWeight", "METHODS", "add_lora", "finetune", "head_modules",
           "merge_lora", "meta_init", "prepare_model", "resume"]
