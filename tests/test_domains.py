"""Darcy flow on masked geometries (``darcy_domain``) and the masked loss (``train.loss_mask``).

The solver: on the square it is ``darcy`` sample for sample; on a disk with ``a = 1, f = 1`` it
converges to ``(R^2 - r^2) / 4`` at first order (staircase boundary); the equations hold at every
unknown node, ``u = 0`` on the boundary nodes and outside. The masked loss: predictions outside the
mask change neither the training loss nor the errors; with the option off (or an all-ones mask)
training is bit for bit what it was.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from oplab import losses, problems
from oplab.data import open as open_data
from oplab.data.generation import generate
from oplab.errors import ParameterError
from oplab.eval import evaluate
from oplab.problems.domains import GEOMETRIES, geometry_mask, solve_masked, unknown_nodes
from oplab.solvers import fd
from oplab.train import config as tc
from oplab.train.api import run
from oplab.train.data import GridData
from oplab.train.tasks import MapTask, mask_channel


def test_square_geometry_is_darcy_sample_for_sample():
    darcy = problems.create("darcy", 17)
    square = problems.create("darcy_domain", 17, geometry="square")
    xd, yd = darcy.generate([0, 3], seed=5)
    xs, ys = square.generate([0, 3], seed=5)
    assert np.array_equal(xs[:, 0], xd[:, 0]) and np.all(xs[:, 1] == 1.0)
    assert np.abs(ys - yd).max() <= 1e-12 * np.abs(yd).max()


def test_disk_poisson_converges_at_first_order_to_the_exact_solution():
    """``-Lap u = 1`` on the disk r <= R: u = (R^2 - r^2) / 4. The boundary nodes lie up to h inside
    the circle, so the max error is O(h) (order ~1), not the five-point scheme's O(h^2)."""
    errors, hs = [], []
    for n in (17, 33, 65, 129):
        mask = geometry_mask("disk", n)
        u = solve_masked(mask, mask, 1.0)
        t = np.linspace(0.0, 1.0, n)
        x, y = np.meshgrid(t, t, indexing="ij")
        exact = np.where(mask > 0, (0.45**2 - (x - 0.5) ** 2 - (y - 0.5) ** 2) / 4, 0.0)
        errors.append(np.abs(u - exact).max())
        hs.append(1.0 / (n - 1))
    order = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert 0.8 < order < 1.3, (order, errors)
    assert errors[-1] < 2e-3


def test_mask_and_zero_outside_contract_and_the_equations_hold():
    p = problems.create("darcy_domain", 17)  # all six geometries in turn
    names = list(GEOMETRIES)
    x, y = p.generate(range(len(names)), seed=1)
    assert x.shape == (6, 2, 17, 17) and y.shape == (6, 1, 17, 17)
    for i, name in enumerate(names):
        a, mask, u = x[i, 0], x[i, 1], y[i, 0]
        assert p.geometry_of(i) == name and np.array_equal(mask, geometry_mask(name, 17))
        assert np.all(a[mask == 0] == 0) and np.all(a[mask == 1] > 0)
        unknown = unknown_nodes(mask)
        assert np.all(u[~unknown] == 0) and np.all(u[unknown] > 0)  # zero outside / on the boundary; f = 1 > 0
        # the five-point equations at every unknown node
        residual = (fd.diffusion_matrix(a) @ u[1:-1, 1:-1].ravel()).reshape(15, 15) - 1.0
        assert np.abs(residual[unknown[1:-1, 1:-1]]).max() < 1e-9
        assert np.array_equal(p.solve(x[i]), y[i])  # the stored inputs determine the solution


def test_multi_geometry_file_holds_the_geometries_in_turn(tmp_path):
    p = problems.create("darcy_domain", 13, geometry="disk, triangle,hole")
    path = generate(p, 6, tmp_path / "dom.h5", seed=2)
    ds = open_data(path)
    assert ds.meta["input_channels"] == ["a", "mask"] and ds.meta["params"]["geometry"] == "disk, triangle,hole"
    for i in range(6):
        want = geometry_mask(["disk", "triangle", "hole"][i % 3], 13)
        assert np.array_equal(ds[i]["x"][1].numpy(), want.astype(np.float32))
    x4, y4 = p.generate([4], seed=2)  # sample i depends on (problem, seed, i) alone
    assert np.array_equal(ds[4]["y"].numpy(), y4[0].astype(np.float32))


def test_unknown_geometry_and_channel_are_one_line_errors(tmp_path):
    with pytest.raises(ParameterError, match="unknown geometry 'circle' in parameter 'geometry'") as err:
        problems.create("darcy_domain", 17, geometry="disk,circle")
    assert "\n" not in str(err.value)
    with pytest.raises(ParameterError, match="no interior node"):
        problems.create("darcy_domain", 9, geometry="annulus")
    cfg = tc.TrainConfig(loss_mask="maks")
    with pytest.raises(ParameterError, match=r"train.loss_mask 'maks' is not an input channel.*\['a', 'mask'\]") as err:
        mask_channel(cfg, ["a", "mask"])
    assert "\n" not in str(err.value)
    with pytest.raises(ParameterError, match="train.loss_mask .* needs train.task: map"):
        tc.TrainConfig(loss_mask="mask", task="autoregressive")


def _inside_outside_case():
    """Inputs on a disk, the truth, and a prediction equal to the truth inside plus noise outside."""
    gen = torch.Generator().manual_seed(0)
    mask = torch.from_numpy(geometry_mask("disk", 17)).float()
    x = torch.stack([torch.rand(3, 17, 17, generator=gen) * mask, mask.expand(3, 17, 17)], dim=1)
    y = torch.rand(3, 1, 17, 17, generator=gen) * mask
    coords = (torch.linspace(0, 1, 17),) * 2
    return x, y, mask, coords, gen


def test_masked_loss_ignores_predictions_outside_the_mask():
    x, y, mask, coords, gen = _inside_outside_case()
    data = GridData(x, y, coords, coords, (False, False), None, 17)
    off, on = MapTask(data, tc.TrainConfig()), MapTask(data, tc.TrainConfig(loss_mask="mask"), ["a", "mask"])
    assert off.mask is None and on.mask == 1
    noise = torch.randn(3, 1, 17, 17, generator=gen)
    trainer = types.SimpleNamespace(device=torch.device("cpu"), forward=lambda net, xb, c: net(xb), physics=None,
                                    loss_fn=losses.get("h1"), bundle=types.SimpleNamespace(model=None))
    outside = lambda xb: y + noise * (1 - mask)  # noqa: E731  wrong only outside the domain
    inside = lambda xb: y + 0.1 * noise * mask  # noqa: E731
    assert on.loss(trainer, outside, (x, y), coords)[0].item() == 0.0
    assert off.loss(trainer, outside, (x, y), coords)[0].item() > 0.1
    assert on.loss(trainer, inside, (x, y), coords)[0].item() > 0.01
    # with the option off the loss is the plain loss, bit for bit
    pred = inside(x)
    assert torch.equal(off.loss(trainer, inside, (x, y), coords)[0], trainer.loss_fn(pred, y, coords, (False, False)))

    class Fixed(torch.nn.Module):  # a "bundle" answering the outside-wrong prediction
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, xb, c):
            return outside(xb)[: len(xb)] + self.w

    assert evaluate(Fixed(), data, mask=1) == {"l2": 0.0, "h1": 0.0}
    assert evaluate(Fixed(), data)["l2"] > 0.1
    assert on.evaluate(Fixed(), data, torch.device("cpu")) == {"l2": 0.0, "h1": 0.0}

    # train.points (random query points of a point operator): the mask is read at the drawn points
    def at_points(xb, points):  # the outside-wrong prediction at query points [p, 2] of the grid
        flat = (points[:, 0] * 16).round().long() * 17 + (points[:, 1] * 16).round().long()
        return outside(xb).flatten(2)[..., flat]

    trainer.forward, trainer.loss_fn = (lambda net, xb, pts: net(xb, pts)), losses.get("l2")
    on_points = MapTask(data, tc.TrainConfig(loss_mask="mask", points=100), ["a", "mask"])
    off_points = MapTask(data, tc.TrainConfig(points=100))
    assert on_points._points_loss(trainer, at_points, x, y, coords).item() == 0.0
    assert off_points._points_loss(trainer, at_points, x, y, coords).item() > 0.1


def _train(path, **train):
    """A small FNO trained through ``oplab.train`` (no run folder: no figures to draw)."""
    import oplab
    from oplab import models

    torch.manual_seed(0)
    model = models.create("fno", in_channels=2, out_channels=1, modes=[4, 4], width=8, n_layers=2,
                          lifting_channels=16, projection_channels=16)
    kw = {"epochs": 4, "batch_size": 6, "lr": 5e-3, "eval_every": 1, "seed": 0, "threads": 1, **train}
    return oplab.train(model, open_data(path), n_train=36, n_test=8, n_val=6, in_memory=True, log=lambda s: None, **kw)


def test_masked_training_lowers_the_domain_error_and_an_all_ones_mask_changes_nothing(tmp_path):
    square = generate(problems.create("darcy_domain", 13, geometry="square"), 44, tmp_path / "sq.h5", seed=0)
    plain, ones = _train(square)["history"], _train(square, loss_mask="mask")["history"]
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]  # noqa: E731
    assert strip(plain) == strip(ones)  # the square's mask is all ones: the same bits
    shapes = generate(problems.create("darcy_domain", 13, geometry="disk,lshape"), 44, tmp_path / "dl.h5", seed=0)
    hist = _train(shapes, loss_mask="mask", epochs=8)["history"]
    first, last = hist[0]["test"]["13"]["l2"], hist[-1]["test"]["13"]["l2"]
    assert last < 0.7 * first, (first, last)
    raw = {"data": {"train": str(shapes), "n_train": 36, "n_test": 8}, "model": {"name": "fno", "width": 8},
           "train": {"epochs": 1, "loss_mask": "a2"}, "out": str(tmp_path / "bad")}
    with pytest.raises(ParameterError, match=r"train.loss_mask 'a2' is not an input channel"):
        run(tc.from_dict(raw), log=lambda s: None)
    assert not (tmp_path / "bad").exists()  # refused before anything is written
