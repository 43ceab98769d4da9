"""Inverse problems through a forward operator: which input field explains these measurements?

``invert(forward, axes, obs, prior)`` finds the input ``a`` (on the operator's input grid) that
minimises

    J(a) = 1/2 sum_k ((O(forward(a))_k - d_k) / sigma_k)^2 + R(a)

where ``O`` reads the output at the sensor points (linear interpolation on the grid), ``d_k`` are
the observations and ``sigma_k`` their noise levels, and ``R`` is the prior
(:mod:`oplab.inverse.priors`): smoothness (``weight * mean |grad a|^2``), total variation, or a
latent generative prior for two-phase fields (the coefficient as a smoothed threshold of a
Gaussian random field whose Karhunen-Loeve coefficients ``z`` are the unknowns, ``R = |z|^2 / 2``:
the MAP estimate under the data's own prior, in the spirit of DGNO's latent inversion, Zang &
Koutsourelakis 2025). Several restarts from random starts run as one batch; the estimate is the
restart with the lowest ``J`` and the pixelwise spread over the restarts is reported as an
uncertainty (a multi-start spread, not a posterior); or, with ``sampler="langevin"``, the pixelwise
standard deviation of Metropolis-adjusted Langevin samples of ``exp(-J)`` started from the
estimate (:mod:`oplab.inverse.sampling`).

``forward`` is any differentiable map ``[B, C_in, *S] -> [B, C_out, *S]``: a trained operator
(:func:`surrogate`), or a numerical solver with its adjoint (:class:`oplab.inverse.adjoint.DarcySolve`),
so the surrogate route and the classical route run the same optimiser on the same objective.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataFileError, ParameterError, check_int
from ..problems.base import Axis


@dataclass
class Observations:
    """Sensor data: ``points [K, d]`` (coordinates, in the order of the grid's axes), ``values
    [K, C]`` (the observed output channels ``channels``), ``noise [K, C]`` (standard deviations)."""

    points: np.ndarray
    values: np.ndarray
    noise: np.ndarray
    channels: list

    def check(self, axes: list[Axis], n_channels: int, where: str = "observations") -> None:
        """One-line errors for points outside the domain, noise <= 0, channels the operator lacks."""
        if self.points.ndim != 2 or self.points.shape[1] != len(axes):
            raise ParameterError(f"{where}: points have shape {list(self.points.shape)}, expected [K, {len(axes)}] "
                                 f"(coordinates {', '.join(a.name for a in axes)})")
        k = self.points.shape[0]
        if self.values.shape != (k, len(self.channels)) or self.noise.shape != self.values.shape:
            raise ParameterError(f"{where}: values {list(self.values.shape)} and noise {list(self.noise.shape)} must "
                                 f"both be [K={k}, {len(self.channels)}] (one column per observed channel)")
        for i, ax in enumerate(axes):
            lo, hi = min(ax.lo, ax.hi), max(ax.lo, ax.hi)
            bad = (self.points[:, i] < lo - 1e-9) | (self.points[:, i] > hi + 1e-9)
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise ParameterError(f"{where}: point {j} has {ax.name} = {self.points[j, i]:g}, outside the "
                                     f"domain [{lo:g}, {hi:g}] ({int(bad.sum())} such point(s))")
        if not (np.isfinite(self.noise).all() and (self.noise > 0).all()):
            raise ParameterError(f"{where}: noise must be > 0 (a standard deviation per value), got min "
                                 f"{np.nanmin(self.noise):g}")
        if not np.isfinite(self.values).all():
            raise ParameterError(f"{where}: values hold NaN or Inf")
        bad = [c for c in self.channels if not 0 <= c < n_channels]
        if bad:
            raise ParameterError(f"{where}: channels {bad} do not exist: the operator has {n_channels} output channel(s)")


def load_observations(path: str | Path) -> Observations:
    """Observations from ``.npz`` or ``.h5``: arrays ``points [K, d]``, ``values [K]`` or ``[K, C]``,
    ``noise`` (a scalar, ``[K]`` or ``[K, C]``: standard deviations) and optionally ``channels``
    (the observed output channels, default ``0 .. C-1``). Never unpickles."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: no such observation file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                raw = {k: f[k] for k in f.files}
        elif path.suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                raw = {k: f[k][()] for k in f.keys()}
        else:
            raise DataFileError(f"{path}: observations are .npz or .h5 files")
    except (OSError, ValueError) as exc:
        raise DataFileError(f"{path}: unreadable observation file ({exc.__class__.__name__})") from None
    missing = [k for k in ("points", "values", "noise") if k not in raw]
    if missing:
        raise DataFileError(f"{path}: missing array(s) {missing}; expected points [K, d], values [K, C], noise")
    for key in ("points", "values", "noise", "channels"):
        if key in raw:
            try:
                raw[key] = np.asarray(raw[key], dtype=np.int64 if key == "channels" else np.float64)
            except (TypeError, ValueError):
                raise DataFileError(f"{path}: array {key!r} holds {raw[key].dtype} values, expected numbers") from None
    values = raw["values"]
    values = values[:, None] if values.ndim == 1 else values
    if values.ndim != 2:
        raise DataFileError(f"{path}: 'values' has shape {list(raw['values'].shape)}, expected [K] or [K, C]")
    noise = raw["noise"]
    noise = noise[:, None] if noise.ndim == 1 else noise
    try:
        noise = np.broadcast_to(noise, values.shape).copy()
    except ValueError:
        raise DataFileError(f"{path}: 'noise' of shape {list(raw['noise'].shape)} does not fit values "
                            f"{list(values.shape)}") from None
    channels = [int(c) for c in np.atleast_1d(raw["channels"])] if "channels" in raw else list(range(values.shape[1]))
    return Observations(raw["points"], values, noise, channels)


def save_observations(path: str | Path, obs: Observations) -> Path:
    path = Path(path)
    np.savez(path, points=obs.points, values=obs.values, noise=obs.noise, channels=np.asarray(obs.channels))
    return path


def observe(u: torch.Tensor, points: torch.Tensor, axes: list[Axis]) -> torch.Tensor:
    """``u [B, C, *S]`` read at ``points [K, d]`` by (bi/tri)linear interpolation on the grid of
    ``axes`` -> ``[B, K, C]``; differentiable in ``u``."""
    d = len(axes)
    if d not in (1, 2, 3):
        raise ParameterError(f"observations on {d}-dimensional grids are not supported (1, 2 or 3)")
    norm = [2.0 * (points[:, i] - ax.lo) / (ax.hi - ax.lo) - 1.0 for i, ax in enumerate(axes)]
    x = u
    for i, ax in enumerate(axes):  # a periodic axis leaves out its right end: wrap its first node there,
        if ax.periodic:            # so the n + 1 nodes span [lo, hi] like a closed axis's n
            x = torch.cat([x, x.narrow(2 + i, 0, 1)], dim=2 + i)
    if d == 1:  # a 2D grid of height 1
        x, norm = x.unsqueeze(-2), [torch.zeros_like(norm[0]), norm[0]]
    # grid_sample takes the coordinates last axis first; the points as a [1, K] (or [1, 1, K]) grid
    grid = torch.stack(norm[::-1], dim=-1).to(u.dtype)
    grid = grid.view(1, *([1] * (len(norm) - 1)), *grid.shape).expand(u.shape[0], *([-1] * (len(norm) + 1)))
    out = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.flatten(2).transpose(1, 2)  # [B, K, C]


def misfit(forward, a: torch.Tensor, points: torch.Tensor, obs: Observations, axes: list[Axis]) -> torch.Tensor:
    """``1/2 sum ((O(forward(a)) - d) / sigma)^2`` per field of ``a [R, C_in, *S]`` -> ``[R]``."""
    pred = observe(forward(a), points, axes)[:, :, list(obs.channels)]
    values, noise = (torch.as_tensor(v, dtype=pred.dtype) for v in (obs.values, obs.noise))
    return 0.5 * ((pred - values) / noise).square().flatten(1).sum(1)


def surrogate(op):
    """A trained operator (``oplab.load(RUN)``) as a differentiable forward map on its input grid."""
    coords = tuple(c.to(op.device) for c in op.coords_for(tuple(a.n for a in op.in_axes)))
    op.bundle.eval()
    for p in op.bundle.parameters():
        p.requires_grad_(False)
    return lambda a: op.bundle(a.to(op.device, torch.float32), coords).to(a.dtype)


def invert(forward, axes: list[Axis], obs: Observations, prior, restarts: int = 4, steps: int = 300,
           lr: float = 0.05, optimizer: str = "adam", seed: int = 0, dtype=torch.float32, log=None,
           sampler: str = "multistart", samples: int = 200, chains: int = 4, burn_in: int = 200, thin: int = 5,
           langevin_step: float = 1e-3) -> dict:
    """Minimise the objective of the module docstring. ``prior``: an :mod:`oplab.inverse.priors`
    prior (it owns the parametrisation of ``a``). Returns ``estimate [C_in, *S]`` (the restart with
    the lowest objective), ``spread`` (pixelwise standard deviation over the restarts), ``samples``
    (every restart's field), ``misfit`` (chi^2 per observed value of the estimate), ``objective``
    per restart, ``history`` (objective of the best restart every 10 steps) and ``seconds``.

    ``sampler="langevin"`` (or ``"mala"``; ``"ula"`` for the unadjusted chain): after the
    optimisation, ``chains`` Langevin chains started from the estimate draw ``samples`` states of
    ``exp(-J)`` (:func:`oplab.inverse.sampling.langevin`: ``burn_in``, ``thin``, initial step
    ``langevin_step``); then ``samples`` are those fields, ``spread`` is their pixelwise standard
    deviation (the posterior's, in place of the multi-start spread), ``posterior_mean`` their mean,
    and ``sampling`` records the chain (acceptance, step, seconds). ``estimate`` stays the MAP."""
    for name, value in (("restarts", restarts), ("steps", steps)):
        check_int("invert", name, value)
    if optimizer not in ("adam", "lbfgs"):
        raise ParameterError(f"invert: optimizer must be adam or lbfgs, got {optimizer!r}")
    if sampler not in ("multistart", "langevin", "mala", "ula"):
        raise ParameterError(f"invert: sampler must be multistart, langevin (mala) or ula, got {sampler!r}")
    if sampler != "multistart":
        for name, value, low in (("samples", samples, 1), ("chains", chains, 1), ("burn_in", burn_in, 0),
                                 ("thin", thin, 1)):
            check_int("invert", name, value, low)
    points = torch.as_tensor(obs.points, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    params = prior.init(restarts, gen).to(dtype).requires_grad_(True)

    def objective(p):  # [R]
        m = misfit(forward, prior.field(p), points, obs, axes)
        return m + prior.penalty(p), m

    history = []
    tic = time.perf_counter()
    if optimizer == "adam":
        opt = torch.optim.Adam([params], lr=lr)
        for step in range(steps):
            opt.zero_grad()
            total, _ = objective(params)
            total.sum().backward()
            opt.step()
            if step % 10 == 0:
                history.append(float(total.detach().min()))
                if log:
                    log(f"step {step}: objective {history[-1]:.4g}")
    else:
        opt = torch.optim.LBFGS([params], lr=lr, max_iter=steps, history_size=50, tolerance_grad=1e-12,
                                tolerance_change=1e-14, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            total, _ = objective(params)
            total.sum().backward()
            history.append(float(total.detach().min()))
            return total.sum()

        opt.step(closure)
    seconds = time.perf_counter() - tic
    with torch.no_grad():
        total, chi2 = objective(params)
        fields = prior.field(params)
    best = int(torch.argmin(total))
    result = {"estimate": fields[best].detach(), "spread": fields.std(0, unbiased=False).detach() if restarts > 1
              else torch.zeros_like(fields[0]), "samples": fields.detach(),
              "misfit": float(chi2[best]) * 2.0 / obs.values.size, "objective": total.tolist(),
              "history": history, "seconds": seconds, "best": best}
    if sampler != "multistart":
        from .sampling import langevin

        chain = langevin(lambda p: objective(p)[0], params[best : best + 1].detach(), samples=samples, chains=chains,
                         burn_in=burn_in, thin=thin, step=langevin_step, sampler="ula" if sampler == "ula" else "mala",
                         seed=seed, log=log)
        with torch.no_grad():
            drawn = torch.cat([prior.field(p) for p in chain["params"].split(64)])
        spread = drawn.std(0, unbiased=True) if len(drawn) > 1 else torch.zeros_like(drawn[0])
        result.update(samples=drawn, spread=spread,
                      posterior_mean=drawn.mean(0), seconds=seconds + chain["seconds"],
                      sampling={"sampler": "ula" if sampler == "ula" else "mala", "samples": len(drawn),
                                "chains": chains, "burn_in": burn_in, "thin": thin, "acceptance": chain["acceptance"],
                                "mala_ratio": chain["mala_ratio"], "step": chain["step"], "seconds": chain["seconds"]})
    return result




def make_prior(name: str, axes: list[Axis], channels: int, weight: float = 1.0, bounds=None, params=None):
    """The prior ``name`` (``smooth``, ``tv``, ``latent``) on the grid of ``axes``; ``params``: the
    data set's problem parameters (the latent prior takes ``alpha``, ``tau``, ``sigma`` and the
    phase values ``contrast_low`` / ``contrast_high`` of a ``darcy`` set from them)."""
    from .priors import PRIORS, Latent, Smooth, TotalVariation

    params = params or {}
    if name not in PRIORS:
        raise ParameterError(f"unknown prior {name!r}; choose one of {', '.join(PRIORS)}")
    shape = (channels, *(a.n for a in axes))
    spacing = tuple((a.hi - a.lo) / max(a.n - 1, 1) for a in axes)
    if name == "smooth":
        return Smooth(shape, spacing, weight, bounds)
    if name == "tv":
        return TotalVariation(shape, spacing, weight, bounds)
    n = axes[0].n
    if any(a.n != n or (a.lo, a.hi) != (0.0, 1.0) for a in axes):
        raise ParameterError(f"the latent prior is a Gaussian random field on the unit cube's node grid (the darcy "
                             f"problem's); this operator's input grid is {[(a.name, a.n, a.lo, a.hi) for a in axes]}")
    if bounds is None:
        if "contrast_low" not in params:
            raise ParameterError("the latent prior needs the two phases' values: pass --bounds LO,HI")
        bounds = (params["contrast_low"], params["contrast_high"])
    return Latent(n, len(axes), bounds, modes=min(16, n), alpha=params.get("alpha", 2.0), tau=params.get("tau", 3.0),
                  sigma=params.get("sigma") or None, channels=channels)


def run(run_dir, observations, out, prior: str = "latent", weight: float = 1.0, bounds=None, restarts: int = 4,
        steps: int = 500, lr: float = 0.05, checkpoint: str = "best", overwrite: bool = False, seed: int = 0,
        lpn=None, step_size: float | None = None, log=print, pnp_method: str = "pg", rho: float | None = None,
        sampler: str = "multistart", samples: int = 200, burn_in: int = 200, thin: int = 5) -> dict:
    """``oplab invert``: the input field of the operator in ``run_dir`` that explains the
    observations file, written to folder ``out`` (``estimate.npy``, ``spread.npy``,
    ``result.json``, ``inversion.png``: estimate, spread and the sensors). ``prior="lpn"``: a
    learned proximal network saved in folder ``lpn`` as the proximal step of plug-and-play proximal
    gradient descent (``pnp_method="pg"``, :func:`oplab.inverse.lpn.pnp`, ``steps`` steps of size
    ``step_size``) or of plug-and-play ADMM (``"admm"``, :func:`oplab.inverse.lpn.pnp_admm`,
    ``steps`` iterations with penalty ``rho``). ``sampler="langevin"`` (the other priors): MALA
    posterior samples from the MAP estimate (``samples``, ``burn_in``, ``thin``; 4 chains), their
    pixelwise standard deviation written as ``spread.npy`` and their mean as ``posterior_mean.npy``."""
    import json

    from ..predictor import load
    from ..rundir import RunDir

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"{out}: is a file; --out is the folder the results go to")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ParameterError(f"{out}: exists and is not empty; pass --overwrite to replace its files")
    op = load(run_dir, checkpoint)
    if op.task != "map" or op.kind != "grid":
        raise ParameterError(f"{run_dir}: invert needs a one-shot grid operator (train.task map), this one is "
                             f"{op.kind} with task {op.task}")
    if op.in_axes != op.out_axes:
        raise ParameterError(f"{run_dir}: invert reads outputs on the input grid; this operator maps "
                             f"{[a.n for a in op.in_axes]} to {[a.n for a in op.out_axes]}")
    obs = load_observations(observations)
    obs.check(op.out_axes, op.data["train_output_shape"][0], str(observations))
    c_in = op.data["train_input_shape"][0]
    if prior == "lpn":
        from .lpn import load_lpn, pnp, pnp_admm

        if lpn is None:
            raise ParameterError("the lpn prior needs a trained network: pass --lpn DIR (benchmarks/lpn_darcy.py --save DIR)")
        net = load_lpn(lpn)
        if (net.config["in_channels"], net.config["dim"]) != (c_in, len(op.in_axes)):
            raise ParameterError(f"--lpn {lpn}: a network for {net.config['in_channels']}-channel {net.config['dim']}D "
                                 f"fields; this operator's inputs have {c_in} channel(s) on {len(op.in_axes)} axes")
        if sampler != "multistart":
            raise ParameterError(f"--sampler {sampler}: Langevin sampling needs a differentiable prior (latent, tv, "
                                 f"smooth); the lpn prior is a proximal step only")
        if pnp_method == "admm":
            if step_size is not None:
                raise ParameterError("--step-size is plug-and-play proximal gradient's (--pnp pg); "
                                     "--pnp admm takes --rho")
            result = pnp_admm(surrogate(op), op.in_axes, obs, net, steps=steps, rho=rho, log=log)
        elif pnp_method == "pg":
            if rho is not None:
                raise ParameterError("--rho is plug-and-play ADMM's (--pnp admm); --pnp pg takes --step-size")
            result = pnp(surrogate(op), op.in_axes, obs, net, steps=steps, step_size=step_size, log=log)
        else:
            raise ParameterError(f"--pnp must be pg or admm, got {pnp_method!r}")
        restarts, lr, weight = 1, None, None  # (recorded as unused)
    else:
        if step_size is not None:
            raise ParameterError("--step-size is the lpn prior's (plug-and-play step); the other priors take --lr")
        if rho is not None:
            raise ParameterError("--rho is the lpn prior's (plug-and-play ADMM penalty); "
                                 "the other priors take --weight")
        if bounds is None and prior != "latent":
            bounds = input_range(RunDir.open(run_dir).data.get("train"))
        p = make_prior(prior, op.in_axes, c_in, weight, bounds, op.data.get("params"))
        result = invert(surrogate(op), op.in_axes, obs, p, restarts=restarts, steps=steps, lr=lr, seed=seed,
                        log=log, sampler=sampler, samples=samples, burn_in=burn_in, thin=thin)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "estimate.npy", result["estimate"].numpy())
    np.save(out / "spread.npy", result["spread"].numpy())
    if "posterior_mean" in result:
        np.save(out / "posterior_mean.npy", result["posterior_mean"].numpy())
    record = {"run": str(run_dir), "observations": str(observations), "prior": prior, "weight": weight,
              "lpn": None if lpn is None else str(lpn), "step_size": result.get("step_size"),
              "bounds": list(bounds) if bounds is not None else None, "restarts": restarts, "steps": steps,
              "lr": lr, "sensors": int(obs.points.shape[0]), "misfit": result["misfit"],
              "objective": result.get("objective"), "best": result.get("best", 0), "seconds": result["seconds"],
              "pnp": pnp_method if prior == "lpn" else None, "rho": result.get("rho"),
              "sampler": sampler, "sampling": result.get("sampling")}
    (out / "result.json").write_text(json.dumps(record, indent=1))
    _plot(out / "inversion.png", result, obs, op.in_axes)
    return {**record, "estimate": result["estimate"], "spread": result["spread"]}


def input_range(train_file) -> tuple | None:
    """The smallest and largest input value of the run's training file (the bounds of the pixel priors)."""
    from ..data import open as open_data

    if not train_file or not Path(train_file).exists():
        raise ParameterError(f"the run's training file {train_file} is gone: pass --bounds LO,HI for the input's range")
    ds = open_data(train_file)
    x, _ = ds.arrays(list(range(min(len(ds), 64))), outputs=False)
    return float(x.min()), float(x.max())


def _plot(path: Path, result: dict, obs: Observations, axes: list[Axis]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(axes) != 2:
        return
    fig, panels = plt.subplots(1, 2, figsize=(8, 3.6))
    extent = (axes[1].lo, axes[1].hi, axes[0].hi, axes[0].lo)  # rows: the first axis
    spread_title = "posterior std (Langevin)" if result.get("sampling") else "spread over restarts"
    for ax, field, title in zip(panels, (result["estimate"][0], result["spread"][0]), ("estimate", spread_title)):
        im = ax.imshow(field.numpy(), extent=extent)
        ax.scatter(obs.points[:, 1], obs.points[:, 0], s=4, c="w", edgecolors="k", linewidths=0.3)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["Observations", "input_range", "invert", "load_observations", "make_prior", "observe", "run",
           "save_observations", "surrogate"]
