"""``train.augment``: symmetry augmentation of the training batches (issue 22, the quickstart's recipe).

The Darcy problem is invariant under the 8 symmetries of the square (constant forcing, zero boundary
values, an isotropic coefficient field): checked here on the solver itself, which is what makes the
augmentation exact for it. The draws are reproducible per (seed, epoch) and the same for inputs and
outputs; grids the option cannot transform are refused in one line."""

import numpy as np
import pytest
import torch

from oplab import problems
from oplab.errors import ParameterError
from oplab.train.config import TrainConfig
from oplab.train.tasks import Symmetries
from oplab.train import tasks


@pytest.mark.parametrize("op", [lambda a: a[::-1], lambda a: a[:, ::-1], lambda a: a.T, lambda a: a.T[::-1]])
def test_the_darcy_solver_commutes_with_the_symmetries_of_the_square(op):
    problem = problems.create("darcy", 17)
    a = problem.sample_inputs(np.random.default_rng(4))[0]
    u = problem.solve(a[None])[0]
    u_of_moved = problem.solve(np.ascontiguousarray(op(a))[None])[0]
    assert np.abs(u).max() > 1e-3
    np.testing.assert_allclose(u_of_moved, op(u), rtol=0, atol=1e-10 * np.abs(u).max())


def test_draws_repeat_per_seed_and_epoch_and_move_inputs_and_outputs_alike():
    cfg = TrainConfig(augment="dihedral", seed=3)
    x = torch.arange(2 * 2 * 5 * 5, dtype=torch.float32).reshape(2, 2, 5, 5)
    y = x[:, :1] * 10
    once = Symmetries(cfg, (2, 5, 5), (1, 5, 5))
    first = [once(e, x, y) for e in (0, 0, 1)]
    again = Symmetries(cfg, (2, 5, 5), (1, 5, 5))
    seen = set()
    for e, (xa, ya) in zip((0, 0, 1), first):
        torch.testing.assert_close(ya, xa[:, :1] * 10)  # the same symmetry on both
        seen.add(tuple(xa[0, 0].flatten()[:6].tolist()))
    assert len(seen) > 1  # not the identity every time
    seq = [again(e, x, y)[0] for e in (0, 0, 1)]  # a fresh object replays the draws of each epoch
    for a, b in zip(seq, (f[0] for f in first)):
        torch.testing.assert_close(a, b)
    # all 8 symmetries occur and each is a permutation of the grid's values
    images = {tuple(again(e, x, y)[0][0, 0].flatten().tolist()) for e in range(40) for _ in range(3)}
    assert len(images) == 8 and all(sorted(i) == sorted(x[0, 0].flatten().tolist()) for i in images)
    flips = Symmetries(TrainConfig(augment="flips"), (1, 5, 5), (1, 5, 5))
    assert len({tuple(flips(e, x)[0][0, 0].flatten().tolist()) for e in range(40)}) == 4  # no swaps


def test_grids_and_tasks_the_option_cannot_transform_are_refused():
    with pytest.raises(ParameterError, match="square 2D grid"):
        Symmetries(TrainConfig(augment="dihedral"), (1, 8, 6), (1, 8, 6))
    with pytest.raises(ParameterError, match="same dimension"):
        Symmetries(TrainConfig(augment="flips"), (1, 8), (1, 8, 8))
    with pytest.raises(ParameterError, match="train.augment"):
        TrainConfig(augment="rotate")
    with pytest.raises(ParameterError, match="task map"):
        tasks.make(None, TrainConfig(augment="flips", task="autoregressive"))


def test_grids_whose_points_the_symmetries_do_not_map_onto_themselves_are_refused():
    n = 9
    square = torch.linspace(0, 1, n)
    Symmetries(TrainConfig(augment="dihedral"), (1, n, n), (1, n, n), [(square, square)])  # accepted
    with pytest.raises(ParameterError, match="same points"):
        Symmetries(TrainConfig(augment="dihedral"), (1, n, n), (1, n, n), [(square, 2 * square)])  # a 1 x 2 box
    chebyshev = torch.cos(torch.linspace(0, 1, n) * 3.14159265 / 2)  # not mirrored about its middle
    with pytest.raises(ParameterError, match="axis 0"):
        Symmetries(TrainConfig(augment="flips"), (1, n), (1, n), [(chebyshev,)])


def test_the_map_tasks_loss_trains_on_the_turned_batch():
    from types import SimpleNamespace

    from oplab.train.data import GridData

    n = 6
    grid = torch.linspace(0, 1, n)
    x = torch.arange(4 * n * n, dtype=torch.float32).reshape(4, 1, n, n)
    data = GridData(x=x, y=2 * x, in_coords=(grid, grid), out_coords=(grid, grid), periodic=(False, False),
                    n_times=None, resolution=n)
    seen = []

    def forward(net, xb, coords):
        seen.append(xb)
        return 2 * xb

    trainer = SimpleNamespace(device=torch.device("cpu"), epoch=0, forward=forward, physics=None,
                              bundle=SimpleNamespace(model=None),
                              loss_fn=lambda p, y, c, per: (p - y).abs().max())
    for augment in ("none", "dihedral"):
        task = tasks.make(data, TrainConfig(augment=augment, seed=1))
        for epoch in range(4):
            trainer.epoch = epoch
            loss, _ = task.loss(trainer, None, (x, 2 * x), (grid, grid))
            assert float(loss) == 0.0  # the outputs turned with the inputs
    plain, turned = seen[:4], seen[4:]
    assert all(torch.equal(s, x) for s in plain) and not all(torch.equal(s, x) for s in turned)
