"""The contract every registered model keeps, checked for each of ``oplab.models.available()``
(a new model is covered without a test file of its own): the shapes of ``forward``, a gradient
for every parameter, its configuration as JSON rebuilding the same module, save -> ``oplab.load``
-> identical outputs, and, where the model claims it, the same answer at another resolution."""

import json
import math

import numpy as np
import pytest
import torch

import oplab
from oplab import models
from oplab.models.presets import derive


def _built(name: str, ds):
    """``name`` with the arguments it derives for ``ds`` (17 x 17 Darcy), seeded."""
    x, y = ds.arrays([0])
    coords = tuple(torch.tensor(c, dtype=torch.float32) for c in ds.output_grid)
    periodic = tuple(a.periodic for a in ds.meta["output_axes"])
    config = derive({"name": name}, x.shape, y.shape, coords, periodic)
    torch.manual_seed(0)
    return models.from_config(config), coords


def _inputs(ds, n: int = 3) -> torch.Tensor:
    return torch.from_numpy(ds.arrays(range(n), outputs=False)[0])


@pytest.mark.parametrize("name", models.available())
def test_forward_gradients_and_config_round_trip(name, darcy17, one_thread):
    ds = oplab.data.open(darcy17)
    model, coords = _built(name, ds)
    assert model.reference and model.kind in ("grid", "point")
    x = _inputs(ds)
    if hasattr(model, "fit_data"):  # data-dependent parts (the POD basis) before the first call
        model.fit_data(torch.from_numpy(ds.arrays(range(40))[0]), torch.from_numpy(ds.arrays(range(40))[1]))
    y = model(x, coords)
    assert y.shape == (3, 1, 17, 17) and torch.isfinite(y).all()
    y.square().mean().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not silent, f"{name}: parameters without gradient: {silent}"
    config = json.loads(json.dumps(models.config_of(model)))  # plain JSON, no pickle
    twin = models.from_config(config)
    assert [(k, v.shape) for k, v in twin.state_dict().items()] == [(k, v.shape) for k, v in model.state_dict().items()]
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(twin(x, coords), model(x, coords))


@pytest.mark.parametrize("name", models.available())
def test_saved_run_loads_to_identical_outputs(name, darcy17, tmp_path, one_thread):
    ds = oplab.data.open(darcy17)
    model, coords = _built(name, ds)
    result = oplab.train(model, ds, epochs=1, batch_size=8, n_train=40, n_test=8, out=tmp_path / "run",
                         log=lambda s: None)
    op = oplab.load(tmp_path / "run", checkpoint="last")
    x = _inputs(ds)
    with torch.no_grad():
        direct = result["bundle"].eval()(x, coords)
    assert torch.equal(op(x), direct)
    np.testing.assert_array_equal(op(x.numpy()), direct.numpy())
    if model.kind == "grid":  # a grid operator answers at another resolution (17 -> 9 by striding)
        coarse = oplab.data.open(darcy17, resolution=9)
        assert op(_inputs(coarse)).shape == (3, 1, 9, 9)


def _smooth(n: int) -> torch.Tensor:
    """A band-limited periodic field on the ``n x n`` grid of the unit torus."""
    t = torch.arange(n) / n
    X, Y = torch.meshgrid(t, t, indexing="ij")
    return (torch.sin(2 * math.pi * X) * torch.cos(2 * math.pi * Y) + 0.5 * torch.cos(4 * math.pi * X))[None, None]


def _answers(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded ``name``'s outputs for the same smooth field on the 16 grid and on the 32 grid
    (at the 16 grid's points)."""
    grid = lambda n: tuple(torch.arange(n) / n for _ in range(2))  # noqa: E731
    config = derive({"name": name}, (1, 1, 16, 16), (1, 1, 16, 16), grid(16), (True, True))
    torch.manual_seed(0)
    model = models.from_config(config).eval()
    with torch.no_grad():
        return model(_smooth(16), grid(16)), model(_smooth(32), grid(32))[..., ::2, ::2]


@pytest.mark.parametrize("name", [n for n in models.available() if models.get(n).resolution_invariant])
def test_resolution_invariant_models_answer_the_same_at_twice_the_resolution(name, one_thread):
    coarse, fine = _answers(name)
    assert (fine - coarse).norm() / coarse.norm() < 1e-4


def test_the_resolution_check_tells_a_model_that_is_not_invariant(one_thread):
    coarse, fine = _answers("unet")  # its kernels are fixed in cells
    assert not models.get("unet").resolution_invariant
    assert (fine - coarse).norm() / coarse.norm() > 0.1
