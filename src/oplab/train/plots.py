"""Figures of a run: input / truth / prediction / error for a few test samples, and the loss curve."""

from __future__ import annotations

from pathlib import Path

import torch


def _show(ax, field, coords, title, cmap="viridis"):
    if field.ndim == 1:
        ax.plot(coords[0].numpy(), field.numpy())
    else:
        extent = [float(coords[1][0]), float(coords[1][-1]), float(coords[0][0]), float(coords[0][-1])]
        im = ax.imshow(field.numpy(), origin="lower", extent=extent, cmap=cmap, aspect="auto")
        ax.figure.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)


def _slice2d(t: torch.Tensor) -> torch.Tensor:
    """First channel; for 3D grids, the middle slice of the last axis."""
    t = t[0]
    while t.ndim > 2:
        t = t[..., t.shape[-1] // 2]
    return t


def write_plots(out: Path, bundle, data, history: list, info: dict, samples: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out)
    samples = min(samples, len(data)) if data is not None else 0
    if samples > 0:
        device = next(bundle.parameters()).device
        bundle.eval()
        with torch.no_grad():
            coords = tuple(c.to(device) for c in data.out_coords)
            pred = bundle(data.x[:samples].to(device), coords).cpu()
        bundle.train()
        fig, axes = plt.subplots(samples, 4, figsize=(12, 2.8 * samples), squeeze=False)
        for i in range(samples):
            x, y, p = data.x[i], data.y[i], pred[i]
            in_coords = data.in_coords if x.ndim - 1 == len(data.in_coords) else data.out_coords
            _show(axes[i, 0], _slice2d(x), in_coords, f"input {info['data']['input_channels'][0]}")
            _show(axes[i, 1], _slice2d(y), data.out_coords, "truth")
            _show(axes[i, 2], _slice2d(p), data.out_coords, "prediction")
            _show(axes[i, 3], _slice2d(p - y), data.out_coords, "error", cmap="coolwarm")
        fig.suptitle(f"{info['data']['problem']} / {info['model']['name']}", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "predictions.png", dpi=90)
        plt.close(fig)
    if history:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.semilogy([r["epoch"] for r in history], [r["train_loss"] for r in history], label="train")
        tests = [r for r in history if "test" in r]
        for label in (tests[0]["test"] if tests else {}):
            ax.semilogy([r["epoch"] for r in tests], [r["test"][label]["l2"] for r in tests], "o-", ms=3,
                        label=f"test L2 @{label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("relative error")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "loss.png", dpi=90)
        plt.close(fig)


def write_rollout_plots(out: Path, bundle, data, cfg) -> None:
    """An autoregressive run's figures: the rollout errors against time on the test trajectories
    (``rollout_error.png``) and the first one animated (``rollout.gif``)."""
    from ..eval.rollout import animation, plot_errors, rollout_errors

    report = rollout_errors(bundle, data, cfg.window, cfg.bundle, keep=1, first=cfg.first_state)
    report["t"], report["threshold"] = report["times"], 0.1
    plot_errors(report, Path(out) / "rollout_error.png")
    animation(report["truth"][0], report["prediction"][0], report["times"], Path(out) / "rollout.gif")
