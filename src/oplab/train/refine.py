"""Spectral-Refiner fine-tuning: the last Fourier layer without mode truncation, all else frozen.

Cao, Xu, Brarda, Lin 2024 ("Spectral-Refiner: Fine-Tuning of Accurate
Spatiotemporal Neural Operator for Turbulent Flows"): after the usual
training, freeze every parameter except the last spectral convolution, give
that layer every frequency the grid holds (no truncation: the high
frequencies the truncated model cannot produce get weights, initialised to
zero so the refined model starts as the trained one), and train it with the
negative Sobolev loss (``loss="hm1"``, :func:`oplab.losses.relative_hm1`).

>>> from oplab.train.refine import refine
>>> refine("runs/fno", "runs/fno_refined", epochs=20)

The refined run folder is an ordinary run (``oplab.load``, ``oplab evaluate``);
its model config carries ``last_modes``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import OplabError
from ..rundir import RunDir
from .config import TrainConfig


def expand_spectral_weight(old: torch.Tensor, old_modes, new_modes) -> torch.Tensor:
    """A dense weight's real storage ``[I, O, 2 m_1, .., m_d, 2]`` placed into the larger
    ``[I, O, 2 M_1, .., M_d, 2]`` at the same frequencies, zeros elsewhere (leading axes hold
    frequencies ``0..m-1`` then ``-m..-1``)."""
    d = len(new_modes)
    shape = (*old.shape[:2], *[2 * m for m in new_modes[:-1]], new_modes[-1], 2)
    new = old.new_zeros(shape)
    index = [slice(None), slice(None)]
    blocks = [[(slice(0, m), slice(0, m)), (slice(m, 2 * m), slice(2 * M - m, 2 * M))]
              for m, M in zip(old_modes[:-1], new_modes[:-1])]
    import itertools

    for combo in itertools.product(*blocks) if d > 1 else [()]:
        src = index + [c[0] for c in combo] + [slice(0, old_modes[-1]), slice(None)]
        dst = index + [c[1] for c in combo] + [slice(0, old_modes[-1]), slice(None)]
        new[tuple(dst)] = old[tuple(src)]
    return new


def refine(run_dir: str | Path, out: str | Path, epochs: int = 20, loss: str = "hm1", lr: float = 1e-3,
           checkpoint: str = "best", log=print, **train_kwargs) -> dict:
    """Fine-tune the FNO/TFNO of ``run_dir`` into the new run folder ``out`` (module docstring), on
    the split ``run_dir`` was trained on."""
    import inspect

    from .. import models
    from .api import _train
    from .data import prepare, recorded_split

    source = RunDir.open(run_dir)
    RunDir.check_fresh(out)
    model_cfg = dict(source.model)
    if "last_modes" not in inspect.signature(models.get(model_cfg.get("name", "")).__init__).parameters:
        raise OplabError(f"{run_dir}: the refiner fine-tunes a Fourier model with a last_modes argument "
                         f"(fno, tfno), this run has {model_cfg.get('name')!r}")
    data = prepare(recorded_split(source))
    sizes = list(data.train.x_shape[1:])
    full = [n // 2 for n in sizes[:-1]] + [sizes[-1] // 2 + 1]
    old_last = model_cfg.get("last_modes") or model_cfg["modes"]
    new_cfg = {**model_cfg, "last_modes": full}
    model = models.from_config(new_cfg)
    weights, used = source.load_weights(checkpoint)
    state = {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")}
    last = f"spectral.{len(model.spectral) - 1}."
    old_weight_key = next((k for k in state if k.startswith(last)), None)
    if old_weight_key is None or not old_weight_key.endswith("weight.weight"):
        raise OplabError(f"{run_dir}: the last spectral layer is factorised; the refiner needs a dense one "
                         f"(train with factorization=null, or last_modes set)")
    old_weight = weights["model." + old_weight_key]
    want = [2 * m for m in old_last[:-1]] + [old_last[-1], 2]
    if old_weight.ndim != len(want) + 2 or list(old_weight.shape[2:]) != want:
        raise OplabError(f"{source.path / 'config.json'}: model modes {list(old_last)} do not match the last "
                         f"spectral weight {list(old_weight.shape)} of checkpoint {used!r} (expected "
                         f"[in, out, {', '.join(map(str, want))}])")
    state = {k: v for k, v in state.items() if not k.startswith(last)}
    state[last + "weight.weight"] = expand_spectral_weight(old_weight, old_last, full)
    from ..rundir import load_matching

    load_matching(model, state, source.checkpoint_dir(used) / "weights.safetensors", source.path / "config.json")
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(last)
    n_free = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"refining {run_dir}: last Fourier layer {list(old_last)} -> {full} modes, {n_free:,} trainable parameters, "
        f"loss {loss}")
    cfg = TrainConfig(**{**{k: v for k, v in source.config["train"].items() if k in TrainConfig.__dataclass_fields__},
                         "epochs": epochs, "loss": loss, "lr": lr, "budget_minutes": 0.0, **train_kwargs})
    shapes = {k: source.data[k] for k in ("train_input_shape", "train_output_shape") if k in source.data}
    info = {"model": new_cfg, "data": {**source.data, **data.info(), **shapes}, "refined_from": str(run_dir)}
    return _train(model, data, cfg, Path(out), info, False, log, None, ())
