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
