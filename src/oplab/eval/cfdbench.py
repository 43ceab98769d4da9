"""CFDBench's test metrics (Luo, Chen & Zhang 2023, "CFDBench", arXiv:2310.05963, section 4.6).

For a predicted frame ``p`` and its label ``u`` (the velocity channels ``u, v`` of one frame, both
multiplied by the geometry mask, as CFDBench's models mask their outputs and labels), CFDBench's
``MseLoss`` scores

* ``mse = mean (p - u)^2``, ``rmse = sqrt(mse)``, ``mae = mean |p - u|``;
* ``nmse = mse / mean u^2`` (the normalised MSE it ranks by),

the means running over the frame's points and channels. Its test loop scores one frame per batch
and averages over all test frames; so does :func:`cfdbench_scores`, for

* ``one_step``: every frame of every test case predicted from the true frame before it (CFDBench's
  single-step results, its Figure 7 and the autoregressive tables);
* ``rollout``: the frames of each case predicted one after the other from its first frame, the
  model fed its own outputs (CFDBench's multi-step inference, its Figure 8), with the NMSE per
  step as well;
* ``identity``: the true previous frame as the prediction (CFDBench's "Identity" row; its code
  scores that row on ``u`` alone, here on ``u, v`` like the models, so the rows compare).

Only the predicted channels are scored: the mask and the case-parameter channels are carried, not
predicted (:class:`oplab.predictor.Bundle`).
"""

from __future__ import annotations

import torch

from .rollout import rollout

METRICS = ("mse", "rmse", "mae", "nmse")


def frame_scores(pred: torch.Tensor, truth: torch.Tensor) -> dict:
    """CFDBench's metrics of each frame: ``pred``, ``truth`` ``[F, C, *S]`` (masked already) ->
    ``{metric: [F]}`` (float64)."""
    diff = (pred - truth).flatten(1).double()
    mse = diff.square().mean(1)
    return {"mse": mse, "rmse": mse.sqrt(), "mae": diff.abs().mean(1),
            "nmse": mse / truth.flatten(1).double().square().mean(1).clamp_min(1e-30)}


def cfdbench_scores(bundle, data, velocity: list[int], mask: int | None, window: int = 1, bundle_size: int = 1,
                    first: int = 0, batch_size: int = 20, device=None) -> dict:
    """CFDBench's one-step, rollout and identity scores (module docstring) of the autoregressive
    ``bundle`` on the trajectories of ``data`` (a :class:`~oplab.train.data.GridData`).

    ``velocity``: the state channels scored (CFDBench: ``u, v``); ``mask``: the channel that is 1 in
    fluid and 0 in solids (None: no obstacle); the trajectories start at state ``first``. Returns ``{"one_step": {metric: mean}, "rollout":
    {metric: mean, "nmse_per_step": [...]}, "identity": {metric: mean}, "frames": ..., "cases": ...}``.
    """
    device = device or next(bundle.parameters()).device
    states = data.states(first)  # [N, T + 1 - first, C, *S]
    n, t1 = states.shape[:2]
    coords = tuple(c.to(device) for c in data.out_coords)
    sums = {part: {k: 0.0 for k in METRICS} for part in ("one_step", "rollout", "identity")}
    per_step = torch.zeros(t1 - window, dtype=torch.float64)
    count = 0

    def masked(frames: torch.Tensor, masks) -> torch.Tensor:  # [B, T, C, *S] -> the velocity, masked
        out = frames[:, :, velocity]
        return out * masks if masks is not None else out

    def add(part: str, pred: torch.Tensor, truth: torch.Tensor) -> None:
        for k, v in frame_scores(pred, truth).items():
            sums[part][k] += float(v.sum())

    was_training = bundle.training
    bundle.eval()
    with torch.no_grad():
        for start in range(0, n, batch_size):
            traj = states[start : start + batch_size].to(device)  # [B, T + 1, C, *S]
            b = traj.shape[0]
            masks = traj[:, :, mask : mask + 1] if mask is not None else None
            truth = masked(traj[:, window:], masks[:, window:] if masks is not None else None)  # [B, T', V, *S]
            # one step: every window of true states -> the next state
            pred = torch.stack([bundle(traj[:, s : s + window].flatten(1, 2), coords)[:, : traj.shape[2]]
                                for s in range(t1 - window)], 1)  # [B, T', C, *S]: the first state of each bundle
            pred = masked(pred, masks[:, window:] if masks is not None else None)
            add("one_step", pred.flatten(0, 1), truth.flatten(0, 1))
            prev = masked(traj[:, window - 1 : -1], masks[:, window - 1 : -1] if masks is not None else None)
            add("identity", prev.flatten(0, 1), truth.flatten(0, 1))
            # rollout from the first window to the end of the records
            steps = -(-(t1 - window) // bundle_size)
            roll = rollout(bundle, traj[:, :window], steps, coords, window, bundle_size)[:, : t1 - window]
            roll = masked(roll, masks[:, window:] if masks is not None else None)
            add("rollout", roll.flatten(0, 1), truth.flatten(0, 1))
            per_step += frame_scores(roll.flatten(0, 1), truth.flatten(0, 1))["nmse"].view(b, -1).sum(0).cpu()
            count += b * (t1 - window)
    bundle.train(was_training)
    out = {part: {k: v / count for k, v in scores.items()} for part, scores in sums.items()}
    out["rollout"]["nmse_per_step"] = (per_step / n).tolist()
    out.update(frames=count, cases=n)
    return out


__all__ = ["METRICS", "cfdbench_scores", "frame_scores"]
