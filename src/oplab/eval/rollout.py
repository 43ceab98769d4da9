"""Rollouts: an autoregressive operator applied step after step, and how its error grows.

:func:`rollout` starts from the first ``window`` states of each trajectory and
feeds the model its own predictions (``bundle`` states per step).
:func:`rollout_errors` compares a rollout with the recorded trajectory, per
predicted state and accumulated, in the metrics the field reports:

* relative L2 (with the grid's quadrature, as every oplab error): per state
  ``||p_t - u_t|| / ||u_t||``; accumulated over the states up to ``t``
  ``sqrt(sum_s ||p_s - u_s||^2 / sum_s ||u_s||^2)``; ``l2`` is the accumulated
  value over the whole horizon, the FNO paper's Navier-Stokes metric (Li et al.
  2021, section 5.3: the error of the predicted space-time field);
* nRMSE, PDEBench's normalised RMSE (Takamoto et al. 2022, "PDEBench", section
  3.3): ``sqrt(mean (p - u)^2) / sqrt(mean u^2)`` per state on the grid points;
* NMSE, CFDBench's normalised MSE (Luo, Chen & Zhang 2023, "CFDBench", section
  4.3): ``mean (p - u)^2 / mean u^2`` per state.

All are means over trajectories. :func:`evaluate_rollout` is ``oplab evaluate
RUN --data FILE --rollout STEPS``: it also finds the time the relative L2 first
exceeds a threshold and writes a plot of the errors against time and an
animation of truth, prediction and error for one trajectory.
"""

from __future__ import annotations

import math

import torch

from .. import losses
from ..errors import ParameterError


def advance(x: torch.Tensor, pred: torch.Tensor, window: int) -> torch.Tensor:
    """The next input window: the last ``window`` states of ``x [B, window * C, *S]`` followed by
    ``pred [B, bundle * C, *S]``."""
    c = x.shape[1] // window
    return torch.cat([x, pred], dim=1)[:, -window * c:]


def rollout(bundle, start: torch.Tensor, steps: int, coords, window: int, bundle_size: int = 1) -> torch.Tensor:
    """``start [B, window, C, *S]`` (true states) -> the ``steps * bundle_size`` predicted states
    after it, ``[B, steps * bundle_size, C, *S]`` (``bundle`` answers in physical units)."""
    b, c = start.shape[0], start.shape[2]
    x = start.flatten(1, 2)
    out = []
    for _ in range(steps):
        pred = bundle(x, coords)
        out.append(pred.reshape(b, bundle_size, c, *pred.shape[2:]))
        x = advance(x, pred, window)
    return torch.cat(out, dim=1)


def _states(data, first: int = 0) -> torch.Tensor:
    if not getattr(data, "in_memory", True):
        raise ParameterError("rollouts read their trajectories into memory: set data.in_memory to auto or true")
    return data.states(first)


def rollout_errors(bundle, data, window: int, bundle_size: int = 1, steps: int | None = None, device=None,
                   batch_size: int = 50, keep: int = 0, first: int = 0) -> dict:
    """Roll ``bundle`` out from the first ``window`` states of each trajectory of ``data`` (a trajectory
    :class:`~oplab.train.data.GridData`) for ``steps`` steps (default: to the end of the records) and
    score it (module docstring). Returns ``l2`` and ``h1`` (over the whole rollout), per predicted state
    ``times`` (indices of the states: 0 is the input at t = 0; the trajectories start at state ``first``),
    ``per_step`` / ``accumulated`` relative L2, ``nrmse``, ``nmse``,
    and with ``keep`` > 0 the first ``keep`` trajectories' ``truth`` and ``prediction`` tensors."""
    device = device or next(bundle.parameters()).device
    states = _states(data, first)  # [N, S, C, *sp]
    n_states = states.shape[1]
    avail = n_states - window
    most = -(-avail // bundle_size)  # the last step may reach past the records: its extra states are dropped
    steps = most if steps is None else steps
    if window >= n_states:
        raise ParameterError(f"a rollout from a window of {window} states: the data holds {n_states} states per "
                             f"trajectory from state {first} on")
    if not 1 <= steps <= most:
        raise ParameterError(f"a rollout of {steps} step(s) x {bundle_size} state(s) after the first {window} "
                             f"states: the trajectories hold {avail} more; at most {most} step(s)")
    horizon = min(steps * bundle_size, avail)
    coords = tuple(c.to(device) for c in data.out_coords)
    weights = losses.quadrature_weights(coords, data.periodic)
    sums = {k: torch.zeros(horizon, dtype=torch.float64) for k in ("err", "ref", "l2", "nrmse", "nmse")}
    h1 = 0.0
    kept_truth, kept_pred = [], []
    was_training = bundle.training
    bundle.eval()
    with torch.no_grad():
        for start in range(0, states.shape[0], batch_size):
            traj = states[start : start + batch_size].to(device)
            pred = rollout(bundle, traj[:, :window], steps, coords, window, bundle_size)[:, :horizon]
            truth = traj[:, window : window + horizon]
            kept = (truth, pred)
            if getattr(bundle, "static", ()):  # carried channels are the input's: score the predicted ones
                pred, truth = (t[:, :, list(bundle.dynamic)] for t in (pred, truth))
            diff = pred - truth
            # per state: squared norms with the grid's quadrature, summed over channels  [B, H]
            err = (diff.square() * weights).flatten(3).sum(-1).sum(-1).double()
            ref = (truth.square() * weights).flatten(3).sum(-1).sum(-1).double()
            mse = diff.square().flatten(2).mean(-1).double()
            ms = truth.square().flatten(2).mean(-1).double()
            sums["l2"] += (err / ref.clamp_min(1e-30)).sqrt().sum(0).cpu()
            acc = (err.cumsum(1) / ref.cumsum(1).clamp_min(1e-30)).sqrt()
            sums["err"] += acc.sum(0).cpu()
            sums["nrmse"] += (mse / ms.clamp_min(1e-30)).sqrt().sum(0).cpu()
            sums["nmse"] += (mse / ms.clamp_min(1e-30)).sum(0).cpu()
            h1 += losses.relative_h1(pred.flatten(1, 2), truth.flatten(1, 2), coords, data.periodic,
                                     reduce=False).sum().item()
            if len(kept_truth) * batch_size < keep:
                kept_truth.append(kept[0].cpu())
                kept_pred.append(kept[1].cpu())
    bundle.train(was_training)
    n = states.shape[0]
    accumulated = (sums["err"] / n).tolist()
    report = {
        "l2": accumulated[-1], "h1": h1 / n, "trajectories": n, "window": window, "bundle": bundle_size,
        "steps": steps, "times": list(range(first + window, first + window + horizon)),
        "per_step": (sums["l2"] / n).tolist(), "accumulated": accumulated,
        "nrmse": (sums["nrmse"] / n).tolist(), "nmse": (sums["nmse"] / n).tolist(),
    }
    if keep:
        report["truth"], report["prediction"] = torch.cat(kept_truth)[:keep], torch.cat(kept_pred)[:keep]
    return report


def time_to_threshold(per_step, times, threshold: float):
    """The first time whose per-state relative L2 exceeds ``threshold`` (None: never within the rollout)."""
    for t, e in zip(times, per_step):
        if not e <= threshold:  # NaN counts as crossed
            return t
    return None


def evaluate_rollout(run_dir, file, steps: int | None = None, threshold: float = 0.1, n: int | None = None,
                     every: bool = False, checkpoint: str = "best", out=None, animate: bool = True) -> dict:
    """``oplab evaluate RUN --data FILE --rollout STEPS``: the rollout errors of an autoregressive run on
    the file's scored samples (:func:`oplab.eval.run.scored_indices`), the time the per-state relative L2
    first exceeds ``threshold`` (in the file's time unit), and, in ``out`` (default ``RUN/rollout``),
    ``rollout.json``, ``rollout_error.png`` and ``rollout.gif`` (truth, prediction and error of the
    first scored trajectory)."""
    import json
    from pathlib import Path

    from ..data.dataset import open_dataset
    from ..predictor import load
    from ..train.data import Part, check_trajectories
    from .run import scored_indices

    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise ParameterError(f"--threshold must be a positive number, got {threshold!r}")
    op = load(run_dir, checkpoint)
    train_cfg = op.config.get("train", {})
    task = train_cfg.get("task", "map")
    if task != "autoregressive":
        raise ParameterError(f"{run_dir}: a one-shot model (train.task: {task}) has no rollout; train with "
                             f"train.task: autoregressive, or evaluate without --rollout")
    window, bundle_size = int(train_cfg.get("window", 1)), int(train_cfg.get("bundle", 1))
    first = int(train_cfg.get("first_state", 0))
    scored, indices = scored_indices(run_dir, file, n, every)
    data = Part(str(file), indices, None).load()
    check_trajectories(data.n_times, data.x_shape, data.y_shape, str(file))
    want = op.data["train_input_shape"][0] // window
    if data.x_shape[0] != want or len(data.x_shape) != len(op.data["train_input_shape"]):
        raise ParameterError(f"{file}: states of {data.x_shape[0]} channel(s) on {list(data.x_shape[1:])}, the "
                             f"model steps states of {want} channel(s) in {len(op.data['train_input_shape']) - 1}D")
    report = rollout_errors(op.bundle, data, window, bundle_size, steps, keep=1, first=first)
    times = open_dataset(file).times
    t_of = lambda i: float(times[i - 1]) if i >= 1 else 0.0  # noqa: E731  state i is record i (0: the input)
    crossed = time_to_threshold(report["per_step"], report["times"], threshold)
    report.update(scored=scored, samples=Part(str(file), indices, None).describe(), checkpoint=op.checkpoint,
                  threshold=threshold, t=[t_of(i) for i in report["times"]],
                  time_to_threshold=None if crossed is None else t_of(crossed))
    out = Path(out) if out is not None else Path(run_dir) / "rollout"
    out.mkdir(parents=True, exist_ok=True)
    truth, pred = report.pop("truth"), report.pop("prediction")
    (out / "rollout.json").write_text(json.dumps(report, indent=1))
    plot_errors(report, out / "rollout_error.png")
    if animate:
        animation(truth[0], pred[0], report["t"], out / "rollout.gif")
    report["files"] = [str(out / f) for f in ("rollout.json", "rollout_error.png") + (("rollout.gif",) if animate else ())]
    return report


def plot_errors(report: dict, path) -> None:
    """Per-state and accumulated relative L2, nRMSE and NMSE against time (log scale)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    t = report["t"]
    ax.semilogy(t, report["per_step"], label="relative L2 per state")
    ax.semilogy(t, report["accumulated"], label="relative L2 accumulated")
    ax.semilogy(t, report["nmse"], ":", label="NMSE (CFDBench)")
    ax.axhline(report["threshold"], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("time")
    ax.set_ylabel("error")
    ax.set_title(f"rollout from {report['window']} state(s), {report['trajectories']} trajectories", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def animation(truth: torch.Tensor, pred: torch.Tensor, times, path, fps: int = 5) -> None:
    """A GIF of one trajectory: truth, prediction and error side by side per state (first channel;
    1D fields as curves), written with matplotlib's Pillow writer."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    truth, pred = truth[:, 0].numpy(), pred[:, 0].numpy()
    while truth.ndim > 3:  # 3D grids: the middle slice of the last axis
        truth, pred = truth[..., truth.shape[-1] // 2], pred[..., pred.shape[-1] // 2]
    err = pred - truth
    fig, axes = plt.subplots(1, 3, figsize=(9, 3))
    lo, hi = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
    e = float(abs(err).max()) or 1.0
    if truth.ndim == 2:  # [T, n]: curves
        lines = [axes[0].plot(truth[0])[0], axes[1].plot(pred[0])[0], axes[2].plot(err[0])[0]]
        for ax, (a, b) in zip(axes, ((lo, hi), (lo, hi), (-e, e))):
            ax.set_ylim(a, b)

        def draw(k):
            for line, field in zip(lines, (truth, pred, err)):
                line.set_ydata(field[k])
            fig.suptitle(f"t = {times[k]:g}", fontsize=9)
            return lines
    else:
        images = [axes[0].imshow(truth[0], vmin=lo, vmax=hi, origin="lower"),
                  axes[1].imshow(pred[0], vmin=lo, vmax=hi, origin="lower"),
                  axes[2].imshow(err[0], vmin=-e, vmax=e, cmap="coolwarm", origin="lower")]

        def draw(k):
            for image, field in zip(images, (truth, pred, err)):
                image.set_data(field[k])
            fig.suptitle(f"t = {times[k]:g}", fontsize=9)
            return images
    for ax, title in zip(axes, ("truth", "prediction", "error")):
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
    FuncAnimation(fig, draw, frames=len(truth), blit=False).save(str(path), writer=PillowWriter(fps=fps))
    plt.close(fig)


__all__ = ["advance", "animation", "evaluate_rollout", "rollout", "rollout_errors", "time_to_threshold"]
