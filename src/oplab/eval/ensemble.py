"""Deep ensembles: several runs of one configuration, differing only in their seed, whose spread
estimates the surrogate's (epistemic) uncertainty.

Lakshminarayanan, Pritzel & Blundell 2017, "Simple and scalable predictive uncertainty
estimation using deep ensembles", NeurIPS: train ``N`` members from different random
initialisations (and batch orders) and report the mean and standard deviation of their
predictions. The engine papers use the same "mean ensemble" (Kumar, Goswami, Smith &
Karniadakis 2023, arXiv:2304.00567: worst-case error about 12 % at the mean + 2 sigma bound).

An ensemble folder (``oplab train ... --members N``) holds ``member-0 .. member-{N-1}``, each an
ordinary run folder (``oplab.load``, ``oplab evaluate``, export work on it), and
``ensemble.json`` naming them. :class:`Ensemble` predicts the mean and standard deviation;
:func:`calibrate` scores them on a run's test samples: the error of the mean and of each member,
the *coverage* of the band ``mean +- k sigma`` (the fraction of true values inside it; a
Gaussian predictive distribution would cover 68.3 %, 95.4 % and 99.7 % for ``k = 1, 2, 3``), and
the error of the ``mean + 2 sigma`` bound, with a calibration figure (``calibration.png``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import OplabError, ParameterError

ENSEMBLE_FILE = "ensemble.json"


def is_ensemble(path) -> bool:
    return (Path(path) / ENSEMBLE_FILE).exists()


def train_ensemble(cfg, members: int, log=print) -> dict:
    """Train ``members`` runs of ``cfg`` into ``cfg.out/member-i`` with seeds ``cfg.train.seed + i``;
    rerunning the same command continues where it stopped (finished members are kept, an
    interrupted one resumes). Returns ``{"members": [...], "seeds": [...], "best_val": [...]}``."""
    import dataclasses

    from ..train import run_or_resume

    if isinstance(members, bool) or not isinstance(members, int) or members < 2:
        raise ParameterError(f"--members must be an int >= 2 (an ensemble of one has no spread), got {members!r}")
    out = Path(cfg.out)
    if (out / "config.json").exists():
        raise OplabError(f"{out}: holds a single run; an ensemble needs its own folder")
    seeds = [cfg.train.seed + i for i in range(members)]
    # what every member shares: the whole configuration but its folder and seed
    settings = json.loads(json.dumps({"data": dataclasses.asdict(cfg.data), "model": cfg.model,
                                      "train": {**dataclasses.asdict(cfg.train), "seed": None}}, default=str))
    record = {"members": [f"member-{i}" for i in range(members)], "seeds": seeds, "settings": settings}
    manifest = out / ENSEMBLE_FILE
    if manifest.exists():
        known = json.loads(manifest.read_text())
        if known.get("seeds") != seeds:
            raise OplabError(f"{manifest}: an ensemble of seeds {known.get('seeds')} is already here; "
                             f"rerun with the same settings to continue it, or choose another --out")
        if known.get("settings") != settings:
            changed = sorted(f"{section}.{key}" for section in settings
                             for key in set(settings[section] or {}) | set((known.get("settings") or {}).get(section) or {})
                             if (settings[section] or {}).get(key) != ((known.get("settings") or {}).get(section) or {}).get(key))
            raise OplabError(f"{manifest}: the ensemble here was trained with other settings ({', '.join(changed) or 'model'}); "
                             f"rerun the same command to continue it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(record, indent=1))
    best = []
    for name, seed in zip(record["members"], seeds):
        log(f"ensemble member {name} (seed {seed})")
        member = dataclasses.replace(cfg, out=str(out / name), train=dataclasses.replace(cfg.train, seed=seed))
        best.append(run_or_resume(member, log=log).get("best_val"))
    return {**record, "best_val": best}


class Ensemble:
    """The members of an ensemble folder, loaded (``checkpoint``: each member's ``best`` or ``last``)."""

    def __init__(self, path, checkpoint: str = "best"):
        from ..predictor import load

        self.path = Path(path)
        manifest = self.path / ENSEMBLE_FILE
        if not manifest.exists():
            raise OplabError(f"{self.path}: not an ensemble folder (no {ENSEMBLE_FILE}; train one with --members N)")
        try:
            names = json.loads(manifest.read_text())["members"]
        except (ValueError, KeyError, TypeError):
            raise OplabError(f"{manifest}: not an ensemble manifest (expected JSON with a 'members' list)") from None
        missing = [n for n in names if not (self.path / n / "config.json").exists()]
        if missing:
            raise OplabError(f"{self.path}: member(s) {missing} not trained yet; rerun the training command to finish")
        self.members = [load(self.path / n, checkpoint) for n in names]

    def __len__(self) -> int:
        return len(self.members)

    def predict(self, a):
        """Mean and standard deviation (over the members, unbiased) of the predictions for ``a``
        (any input form of :class:`~oplab.predictor.Predictor`); numpy or torch as given."""
        outs = [torch.as_tensor(m(a)) for m in self.members]
        stack = torch.stack(outs)
        mean, std = stack.mean(0), stack.std(0, unbiased=True)
        if isinstance(a, np.ndarray):
            return mean.numpy(), std.numpy()
        return mean, std

    def __call__(self, a):
        return self.predict(a)[0]


def coverage(mean: np.ndarray, std: np.ndarray, truth: np.ndarray, k: float) -> float:
    """The fraction of ``truth`` values inside ``mean +- k std``."""
    return float(np.mean(np.abs(truth - mean) <= k * std))


def calibrate(path, file, ks=(1, 2, 3), checkpoint: str = "best", figure: bool = True) -> dict:
    """Score the ensemble at ``path`` on the test samples of its first member in ``file``
    (:func:`oplab.eval.run.scored_indices`): errors, coverage of ``mean +- k sigma`` for ``ks``
    (overall and per output channel), the relative L2 error of the ``mean + 2 sigma`` bound, and
    ``calibration.json`` / ``calibration.png`` in the ensemble folder."""
    from ..train.data import Part
    from .run import scored_indices

    from ..losses import relative_l2

    ens = Ensemble(path, checkpoint)
    scored, indices = scored_indices(ens.members[0].run_dir, file)
    data = Part(str(file), indices, ens.members[0].data.get("resolution")).load()  # at the members' resolution
    x, truth = data.x.numpy(), data.y.numpy()
    mean, std = ens.predict(x)
    mean, std = mean.reshape(truth.shape), std.reshape(truth.shape)

    def _relative_l2(pred):  # per sample, with the grid's quadrature: the errors of oplab evaluate
        return relative_l2(torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(truth, dtype=torch.float64),
                           data.out_coords, data.periodic, reduce=False).numpy()

    members = [_relative_l2(np.asarray(m(x)).reshape(truth.shape)) for m in ens.members]
    channels = ens.members[0].data.get("output_channels") or [f"c{i}" for i in range(truth.shape[1])]
    gauss = {k: math.erf(k / math.sqrt(2)) for k in ks}
    result = {
        "members": len(ens),
        "samples": len(truth),
        "scored": scored,
        "relative_l2_mean": float(_relative_l2(mean).mean()),
        "relative_l2_members": [float(m.mean()) for m in members],
        "upper_2sigma_relative_l2": {"mean": float(_relative_l2(mean + 2 * std).mean()),
                                     "worst": float(_relative_l2(mean + 2 * std).max())},
        "coverage": {str(k): coverage(mean, std, truth, k) for k in ks},
        "gaussian": {str(k): gauss[k] for k in ks},
        "coverage_per_channel": {name: {str(k): coverage(mean[:, c], std[:, c], truth[:, c], k) for k in ks}
                                 for c, name in enumerate(channels) if c < truth.shape[1]},
    }
    (Path(path) / "calibration.json").write_text(json.dumps(result, indent=1))
    if figure:
        _figure(Path(path) / "calibration.png", mean, std, truth, channels, ens.members[0])
    return result


def _figure(out: Path, mean, std, truth, channels, member) -> None:
    """Left: observed coverage of ``mean +- k sigma`` against the Gaussian's, over k in [0, 3.5]
    (on the diagonal: calibrated; below: over-confident). Right: one test sample, truth and
    mean with its 2-sigma band, for up to four channels (1D outputs)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ks = np.linspace(0, 3.5, 36)
    observed = [coverage(mean, std, truth, k) for k in ks]
    nominal = [math.erf(k / math.sqrt(2)) for k in ks]
    show = min(4, truth.shape[1]) if truth.ndim == 3 else 0
    fig, axes = plt.subplots(1, 1 + show, figsize=(3.2 * (1 + show), 3), squeeze=False)
    ax = axes[0, 0]
    ax.plot(nominal, observed, "o-", ms=3, label="ensemble")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="calibrated")
    for k in (1, 2, 3):
        ax.annotate(f"{k}σ", (math.erf(k / math.sqrt(2)), coverage(mean, std, truth, k)), fontsize=7)
    ax.set_xlabel("Gaussian coverage of mean ± kσ", fontsize=8)
    ax.set_ylabel("observed coverage (test)", fontsize=8)
    ax.legend(fontsize=7)
    if show:
        axis = member.out_axes[0]
        t = np.linspace(axis.lo, axis.hi, truth.shape[-1])
        for c in range(show):
            ax = axes[0, 1 + c]
            ax.plot(t, truth[0, c], "k", lw=1, label="truth")
            ax.plot(t, mean[0, c], "C0", lw=1, label="mean")
            ax.fill_between(t, mean[0, c] - 2 * std[0, c], mean[0, c] + 2 * std[0, c], color="C0", alpha=0.3,
                            label="±2σ")
            ax.set_title(str(channels[c]), fontsize=8)
            ax.set_xlabel(axis.name, fontsize=8)
            ax.tick_params(labelsize=6)
        axes[0, 1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


__all__ = ["ENSEMBLE_FILE", "Ensemble", "calibrate", "coverage", "is_ensemble", "train_ensemble"]
