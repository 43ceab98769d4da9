"""Checks every grid operator passes (imported by the per-model test files).

* :func:`check_shapes`: ``[B, C_in, *S] -> [B, C_out, *S]`` at several grids, finite;
* :func:`check_gradient`: ``torch.autograd.gradcheck`` in float64 with respect to the
  input, and every parameter receives a gradient;
* :func:`check_training`: ``oplab.train`` on a small generated Darcy set lowers the
  test error, and ``oplab.load`` of the run folder (safetensors + JSON) predicts
  exactly what the trained module predicts.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

import oplab
from oplab import models, problems
from oplab.data.generation import generate


def grid(*sizes: int) -> tuple[torch.Tensor, ...]:
    """Cell-centred coordinates of the unit cube."""
    return tuple((torch.arange(n) + 0.5) / n for n in sizes)


def check_shapes(model: models.Operator, in_channels: int, out_channels: int, shapes) -> None:
    assert model.kind == "grid" and model.reference
    for sizes in shapes:
        y = model(torch.randn(2, in_channels, *sizes), grid(*sizes))
        assert y.shape == (2, out_channels, *sizes), (sizes, tuple(y.shape))
        assert torch.isfinite(y).all()


def check_gradient(model: models.Operator, in_channels: int, sizes, seed: int = 0) -> None:
    """Analytic = finite-difference gradient of the output w.r.t. the input (float64),
    and a nonzero gradient reaches every parameter."""
    torch.manual_seed(seed)
    model = copy.deepcopy(model).double()
    coords = tuple(c.double() for c in grid(*sizes))
    x = torch.randn(1, in_channels, *sizes, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: model(t, coords), (x,), eps=1e-6, atol=1e-5, rtol=1e-4)
    model.zero_grad()
    model(torch.randn(2, in_channels, *sizes, dtype=torch.float64), coords).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"parameters without gradient: {missing}"


_DARCY: dict[tuple[int, int], Path] = {}


def darcy(tmp_dir: Path, resolution: int = 17, n: int = 48) -> Path:
    """A small generated Darcy set (cached per test session)."""
    if (resolution, n) not in _DARCY:
        path = Path(tmp_dir) / f"darcy{resolution}-{n}.h5"
        generate(problems.create("darcy", resolution=resolution), n, path, seed=0)
        _DARCY[resolution, n] = path
    return _DARCY[resolution, n]


def check_training(name: str, kwargs: dict, tmp_path: Path, data: Path, epochs: int = 12, lr: float = 5e-3,
                   factor: float = 0.7, **train) -> dict:
    """Train ``name(**kwargs)`` through ``oplab.train``; the test error falls below
    ``factor`` times the first epoch's, and the loaded checkpoint predicts the same."""
    torch.manual_seed(0)
    ds = oplab.data.open(data)
    sample = ds[0]
    model = models.create(name, in_channels=sample["x"].shape[0], out_channels=sample["y"].shape[0], **kwargs)
    out = tmp_path / f"run-{name}"
    result = oplab.train(model, ds, epochs=epochs, lr=lr, batch_size=8, n_train=40, n_test=8, eval_every=1,
                         out=out, log=lambda s: None, **train)
    errors = [next(iter(h["test"].values()))["l2"] for h in result["history"] if h.get("test")]
    assert errors[-1] < factor * errors[0], errors
    op = oplab.load(out, checkpoint="last")
    x = ds[len(ds) - 1]["x"]
    bundle = result["bundle"].eval()
    coords = tuple(torch.tensor(c, dtype=torch.float32) for c in ds.output_grid)
    with torch.no_grad():
        direct = bundle(x[None], coords).numpy()[0]
    np.testing.assert_array_equal(op(x.numpy()), direct)
    return {"errors": errors, "n_params": model.n_params()}
