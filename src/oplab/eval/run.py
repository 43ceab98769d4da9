"""``oplab evaluate``: a trained run scored on a data file, on the run's own test samples.

A run folder records its split (:class:`~oplab.train.data.Split`). Given a file,
the scored samples are the run's test samples in it (the file is recognised
by path or by its content's fingerprint, so a copy or a longer generation
with the same seed counts); in a file that holds the run's training samples
but not its test samples, the samples the run never saw (none: refused); a
file the run never saw is scored whole (``every=True`` scores every sample of
any file). The result says which.
"""

from __future__ import annotations


from ..data.dataset import open_dataset
from ..errors import ParameterError
from .metrics import evaluate


def scored_indices(run_dir, file, n: int | None = None, every: bool = False) -> tuple[str, list | None]:
    """Which samples of ``file`` to score for the run ``run_dir`` (module docstring): ``("test" |
    "unseen" | "all", indices or None for all)``; ``n``: only the last ``n`` of them."""
    from ..rundir import RunDir
    from ..train.data import recorded_split

    if n is not None and n < 1:
        raise ParameterError(f"--n must be a positive number of samples, got {n}")
    ds = open_dataset(file)
    split = recorded_split(RunDir.open(run_dir))
    scored, indices = "all", None
    if not every:
        tests = [p for p in split.tests if p.matches(ds)]
        seen = [p for p in (split.train, split.val) if p is not None and p.matches(ds)]
        if tests:
            scored = "test"
            indices = [i for i in tests[0].indices if i < len(ds)] if tests[0].indices is not None else None
        elif seen:  # the file holds training samples: score only those the run never saw
            trained = {i for p in seen for i in p.indices}
            scored, indices = "unseen", [i for i in range(len(ds)) if i not in trained]
        if indices == []:
            raise ParameterError(f"{file}: holds only this run's training and validation samples (its test samples: "
                                 f"{split.tests[0].describe()}); pass --all to score every sample anyway")
    if n is not None:
        indices = list(indices if indices is not None else range(len(ds)))[-n:]
    return scored, indices


def evaluate_run(run_dir, file, resolutions=(None,), n: int | None = None, every: bool = False,
                 checkpoint: str = "best") -> dict:
    """Errors of ``run_dir``'s model on ``file`` at each resolution: ``{"checkpoint": ..., "scored":
    "test" | "unseen" | "all", "samples": "samples 1000-1199 of darcy.h5", "results": {label: {l2, h1, samples}}}``;
    ``n``: only the last ``n`` of the scored samples. An autoregressive run is scored by its rollout
    from each trajectory's first window to the end (:func:`oplab.eval.rollout.rollout_errors`)."""
    from ..predictor import load
    from ..train.data import Part, grid_label

    op = load(run_dir, checkpoint)
    scored, indices = scored_indices(run_dir, file, n, every)
    train_cfg = op.config.get("train", {})
    results = {}
    for res in resolutions or (None,):
        part = Part(str(file), indices, res)
        data = part.load()
        if train_cfg.get("task", "map") != "map":  # scored as it was trained (oplab.train.tasks)
            from ..train import tasks
            from ..train.data import check_trajectories

            cfg = task_config(train_cfg)
            check_trajectories(data.n_times, data.x_shape, data.y_shape, str(file))
            x_shape, y_shape = tasks.shapes(cfg, data.x_shape, data.y_shape, data.n_times)
            _check_fits(op, data, file, res, channels=(x_shape[0], y_shape[0]))
            if cfg.task == "spacetime" and list(x_shape) != op.data["train_input_shape"]:
                raise ParameterError(f"{file}: trajectories of {data.n_times} records on {list(data.x_shape[1:])}; "
                                     f"this space-time model takes inputs {op.data['train_input_shape']}")
            scores = tasks.TASKS[cfg.task].score(cfg, op.bundle, data)
            results[grid_label(part.dataset())] = {"l2": scores["l2"], "h1": scores["h1"], "samples": len(data)}
            continue
        _check_fits(op, data, file, res)
        mask = None
        if train_cfg.get("loss_mask"):  # scored over the domain only, as it was validated
            from ..train.tasks import mask_channel

            mask = mask_channel(task_config(train_cfg), op.data.get("input_channels"), data.x_shape, data.y_shape)
        results[grid_label(part.dataset())] = {**evaluate(op.bundle, data, mask=mask), "samples": len(data)}
    described = Part(str(file), indices, None).describe()
    return {"checkpoint": op.checkpoint, "scored": scored, "samples": described, "results": results}


def task_config(train: dict):
    """The task settings of a run's recorded ``train`` section (a :class:`TrainConfig` of them)."""
    from ..train.config import TrainConfig

    keys = ("task", "window", "bundle", "unroll", "pushforward", "first_state", "loss_mask")
    return TrainConfig(**{k: train[k] for k in keys if k in train})


def _check_fits(op, data, path, resolution=None, channels=None) -> None:
    from .metrics import check_grid

    d_model, d_data = len(op.in_axes), data.x.ndim - 2
    if d_model != d_data:
        axes = lambda d: f"{d} spatial axis" if d == 1 else f"{d} spatial axes"  # noqa: E731
        raise ParameterError(f"{path}: inputs on {list(data.x.shape[2:])} ({axes(d_data)}), but this run's model "
                             f"is {d_model}D (trained on {op.data['train_input_shape'][1:]})")
    where = f"{path} at resolution {resolution}" if resolution is not None else str(path)
    check_grid([c.numel() for c in data.out_coords], data.periodic, [a.name for a in op.out_axes], where)
    want_in, want_out = op.data["train_input_shape"][0], op.data["train_output_shape"][0]
    have_in, have_out = channels or (data.x.shape[1], data.y.shape[1])
    if have_in != want_in or have_out != want_out:
        raise ParameterError(f"{path}: {have_in} input / {have_out} output channels, "
                             f"the model takes {want_in} / {want_out}")
    if op.kind == "point" and list(data.x.shape[1:]) != op.data["train_input_shape"]:
        raise ParameterError(f"{path}: inputs on {list(data.x.shape[2:])}, this point operator takes its "
                             f"training sensors {op.data['train_input_shape'][1:]}; pass --resolution")


__all__ = ["evaluate_run", "scored_indices"]
