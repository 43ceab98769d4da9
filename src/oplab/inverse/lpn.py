"""Learned proximal networks (LPN): a learned prior whose proximal operator is exact by construction.

After Fang, Buchanan & Sulam 2024, "What's in a Prior? Learned Proximal Networks for Inverse
Problems", ICLR 2024. Written from the paper's construction; no code of theirs.

The network is the gradient of a convex potential, ``f(y) = grad psi(y)``, with

    psi(y) = sum_pixels [ w_out^+ * z_L + v * y ](pixel) + alpha/2 |y|^2,
    z_1 = act_1(H_1 * y + b_1),   z_{k+1} = act(W_k^+ * z_k + H_{k+1} * y + b_{k+1}),

a convolutional input-convex network (ICNN, Amos et al. 2017): ``*`` are convolutions over the
field's 1 or 2 spatial axes, the hidden-to-hidden kernels ``W_k^+`` (and ``w_out^+``) are
nonnegative (clamped at zero in the forward pass, and projected onto ``>= 0`` after every
optimiser step by :func:`train_lpn`), the input "skips" ``H_k`` are free, ``act`` is a softplus
(convex, non-decreasing, smooth; sharpness ``beta``), and the last layer is summed over the whole
field to one scalar per sample. ``act_1`` is ``softplus^2 / 2`` (``quadratic=True``, the default;
also convex and non-decreasing): with softplus alone ``psi`` grows at most linearly, so ``f``
saturates away from the data and cannot follow a prox's identity-like tails (soft-thresholding's
``y - lambda``); the square lets ``psi`` grow like ``|y|^2``. ``quadratic=False`` is the plain
softplus ICNN. ``psi`` is therefore convex, ``alpha/2 |y|^2`` makes it strongly convex, and by the
paper's theorem ``f`` is exactly the proximal operator of some (possibly non-convex) regulariser

    f(y) = prox_R(y) = argmin_x 1/2 |x - y|^2 + R(x),

which :meth:`LPN.regulariser` evaluates at ``x = f(y)`` as ``R(x) = <x, y> - psi(y) - |x|^2 / 2``
(up to an additive constant) after finding ``y`` from ``x`` by the convex problem
``min_y psi(y) - <x, y>`` (L-BFGS).

Training (:func:`train_lpn`, the paper's recipe) uses pairs of clean fields ``x`` and noisy ones
``y = x + sigma n`` (``n`` standard normal, redrawn every step): a pretraining phase with an L1
loss, then the *proximal matching* loss

    L_gamma(x, y) = 1 - exp(-|f(y) - x|^2 / (d gamma^2)),   d = values per sample (C x pixels),

with ``gamma`` decreased geometrically in stages. As ``gamma -> 0`` its minimiser tends to the
MAP denoiser (the posterior mode), i.e. ``f -> prox of -sigma^2 log p_x`` and ``R ->
-sigma^2 log p_x + const``, where a squared loss would give the posterior mean (MMSE) instead.
The ``d`` in the exponent is a normalisation (the paper's definition has ``|f(y) - x|^2 / gamma^2``):
here ``gamma`` is a per-value RMS scale, the paper's ``gamma`` is ``sqrt(d)`` times it; for
scalars (``d = 1``) they coincide.

Units: the network works on normalised fields ``x = (a - mean) / std`` (``mean``, ``std`` per
channel, from the training fields unless ``normalise=False``; kept in the model's config and
written with it). ``sigma`` and ``gamma`` are in these units. :meth:`LPN.normalise` and
:meth:`LPN.denormalise` map physical fields to the network's units and back; :func:`pnp` does the
mapping itself (its ``forward``, ``init`` and ``estimate`` are physical).

:func:`pnp` is plug-and-play proximal gradient descent with the LPN as the proximal step, on the
misfit of :func:`oplab.inverse.invert`; :func:`pnp_admm` is plug-and-play ADMM (Venkatakrishnan,
Bouman & Wohlberg 2013, "Plug-and-play priors for model based reconstruction", GlobalSIP; the
solver Fang et al. use for their inverse problems) with the same proximal step.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError, check_int


def _per_channel(value, channels: int, name: str) -> list[float]:
    values = [float(v) for v in np.atleast_1d(np.asarray(value, dtype=np.float64))]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ParameterError(f"LPN: {name} has {len(values)} values, expected 1 or {channels} (one per channel)")
    return values


class LPN(nn.Module):
    """A learned proximal network for fields ``[B, C, *S]`` with 1 or 2 spatial axes (module docstring).

    ``in_channels`` (C), ``dim`` (1 or 2 spatial axes), ``hidden`` channels, ``layers`` hidden
    layers, ``kernel_size`` (odd; 1 makes ``f`` act on each pixel alone), ``alpha`` (strong
    convexity), ``beta`` (the softplus's sharpness), ``padding_mode`` of the convolutions
    (``zeros``, ``replicate``, ``reflect``, ``circular``: each is linear, convexity holds),
    ``mean``, ``std`` (the normalisation, per channel) and ``sigma`` (the noise level it was
    trained at, in normalised units; ``None`` if unknown)."""

    def __init__(self, in_channels: int = 1, dim: int = 2, hidden: int = 32, layers: int = 4,
                 kernel_size: int = 3, alpha: float = 1e-3, beta: float = 1.0, padding_mode: str = "replicate",
                 mean=0.0, std=1.0, sigma: float | None = None, quadratic: bool = True):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("hidden", hidden), ("layers", layers),
                            ("kernel_size", kernel_size)):
            check_int("LPN", name, value)
        if dim not in (1, 2):
            raise ParameterError(f"LPN: dim must be 1 or 2 (spatial axes), got {dim!r}")
        if kernel_size % 2 == 0:
            raise ParameterError(f"LPN: kernel_size must be odd (same-size convolutions), got {kernel_size}")
        if not alpha > 0 or not beta > 0:
            raise ParameterError(f"LPN: alpha and beta must be > 0, got alpha={alpha!r}, beta={beta!r}")
        if padding_mode not in ("zeros", "replicate", "reflect", "circular"):
            raise ParameterError(f"LPN: padding_mode must be zeros, replicate, reflect or circular, "
                                 f"got {padding_mode!r}")
        std_list = _per_channel(std, in_channels, "std")
        if not all(s > 0 for s in std_list):
            raise ParameterError(f"LPN: std must be > 0, got {std_list}")
        self.config = {"in_channels": in_channels, "dim": dim, "hidden": hidden, "layers": layers,
                       "kernel_size": kernel_size, "alpha": float(alpha), "beta": float(beta),
                       "padding_mode": padding_mode, "mean": _per_channel(mean, in_channels, "mean"),
                       "std": std_list, "sigma": None if sigma is None else float(sigma),
                       "quadratic": bool(quadratic)}
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        pad = kernel_size // 2
        # the free input skips H_1 .. H_L (with the biases), and the linear term v of the output
        self.skips = nn.ModuleList(conv(in_channels, hidden, kernel_size, padding=pad, padding_mode=padding_mode)
                                   for _ in range(layers))
        self.linear = conv(in_channels, 1, 1, bias=False)
        # the nonnegative path W_1 .. W_{L-1} and w_out
        k = (kernel_size,) * dim
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(hidden, hidden, *k)) for _ in range(layers - 1))
        self.out = nn.Parameter(torch.empty(1, hidden, *(1,) * dim))
        with torch.no_grad():
            for w in self.weights:  # small positive weights: z stays O(1) through the layers
                w.uniform_(0.0, 1.0 / (hidden * kernel_size**dim))
            self.out.uniform_(0.0, 1.0 / hidden)
            self.linear.weight.zero_()

    # -- the potential and its gradient -----------------------------------------------------------
    def _conv_nonneg(self, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        w = w.clamp_min(0.0)
        pad = w.shape[-1] // 2
        if pad:
            mode = self.config["padding_mode"]
            z = F.pad(z, (pad,) * (2 * self.config["dim"]), mode="constant" if mode == "zeros" else mode)
        return (F.conv1d if self.config["dim"] == 1 else F.conv2d)(z, w)

    def _check(self, y: torch.Tensor) -> None:
        c, dim = self.config["in_channels"], self.config["dim"]
        if y.ndim != 2 + dim or y.shape[1] != c:
            raise ParameterError(f"LPN: expected fields [B, {c}, {', '.join('S' * dim)}] ({dim} spatial axis/axes), "
                                 f"got {list(y.shape)}")

    def psi(self, y: torch.Tensor) -> torch.Tensor:
        """The convex potential, one value per sample: ``[B, C, *S] -> [B]``."""
        self._check(y)
        beta = self.config["beta"]
        z = F.softplus(self.skips[0](y), beta=beta)
        if self.config["quadratic"]:  # convex, non-decreasing, quadratic growth: psi can grow like |y|^2
            z = 0.5 * z.square()
        for w, skip in zip(self.weights, self.skips[1:]):
            z = F.softplus(self._conv_nonneg(z, w) + skip(y), beta=beta)
        out = self._conv_nonneg(z, self.out) + self.linear(y)
        return out.flatten(1).sum(1) + 0.5 * self.config["alpha"] * y.flatten(1).square().sum(1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """``f(y) = grad psi(y)``, the proximal operator of ``R_theta`` (normalised units). The
        result carries a graph (for training, or when ``y`` requires a gradient) in training mode or
        when ``y.requires_grad``; otherwise it is a plain tensor (works under ``torch.no_grad``, not
        under ``torch.inference_mode``: the gradient needs autograd)."""
        create = self.training or (torch.is_grad_enabled() and y.requires_grad)
        with torch.enable_grad():
            yy = y if (create and y.requires_grad) else y.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.psi(yy).sum(), yy, create_graph=create)
        return grad

    def project(self) -> None:
        """Clamp the nonnegative path's parameters at zero (after each optimiser step)."""
        with torch.no_grad():
            for w in (*self.weights, self.out):
                w.clamp_(min=0.0)

    # -- the regulariser --------------------------------------------------------------------------
    def _solve(self, x: torch.Tensor, steps: int, tol: float, dtype) -> tuple:
        model = copy.deepcopy(self).to(dtype).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        target = x.detach().to(dtype)
        with torch.no_grad():  # start one fixed-point step from x: f(y) ~ x when y = 2x - f(x)
            y = (2.0 * target - model(target)).requires_grad_(True)
        opt = torch.optim.LBFGS([y], lr=1.0, max_iter=steps, max_eval=2 * steps, history_size=50,
                                tolerance_grad=tol, tolerance_change=0.0, line_search_fn="strong_wolfe")

        def closure():
            with torch.enable_grad():
                obj = (model.psi(y) - (target * y).flatten(1).sum(1)).sum()
                (y.grad,) = torch.autograd.grad(obj, y)
            return obj

        opt.step(closure)
        y = y.detach()
        with torch.no_grad():
            residual = float((model(y) - target).abs().max())
        return model, target, y, residual

    def inverse(self, x: torch.Tensor, steps: int = 500, tol: float = 1e-6, dtype=torch.float64) -> tuple:
        """``y`` with ``f(y) = x`` (the minimiser of the convex ``psi(y) - <x, y>``, L-BFGS on the
        batch's sum, ``steps`` iterations at most, stopping when ``max |f(y) - x| <= tol``), computed
        in ``dtype`` on a copy of the model; returns ``(y, residual)``, ``residual = max |f(y) - x|``
        (small when ``x`` is in the range of ``f``, which is all of space: ``psi`` is strongly convex)."""
        self._check(x)
        _, _, y, residual = self._solve(x, steps, tol, dtype)
        return y.to(x.dtype), residual

    def regulariser(self, x: torch.Tensor, steps: int = 500, tol: float = 1e-6, return_residual: bool = False,
                    dtype=torch.float64):
        """``R_theta(x)`` per sample ``[B]`` (normalised units, up to one additive constant):
        ``<x, y> - psi(y) - |x|^2 / 2`` with ``f(y) = x`` (:meth:`inverse`). With
        ``return_residual``: also ``max |f(y) - x|``, how well ``y`` was found."""
        self._check(x)
        model, xd, y, residual = self._solve(x, steps, tol, dtype)
        with torch.no_grad():
            r = (xd * y).flatten(1).sum(1) - model.psi(y) - 0.5 * xd.flatten(1).square().sum(1)
        r = r.to(x.dtype)
        return (r, residual) if return_residual else r

    # -- units ------------------------------------------------------------------------------------
    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, *(1,) * self.config["dim"])
        return (torch.tensor(self.config["mean"], dtype=like.dtype, device=like.device).view(shape),
                torch.tensor(self.config["std"], dtype=like.dtype, device=like.device).view(shape))

    def normalise(self, a: torch.Tensor) -> torch.Tensor:
        """Physical fields to the network's units: ``(a - mean) / std`` per channel."""
        mean, std = self._stats(a)
        return (a - mean) / std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """The network's units to physical fields: ``mean + std * x`` per channel."""
        mean, std = self._stats(x)
        return mean + std * x


# -- save / load (safetensors + JSON, never pickle) ---------------------------------------------------
def save_lpn(model: LPN, folder: str | Path) -> Path:
    """``folder/weights.safetensors`` and ``folder/config.json`` (the constructor's arguments,
    normalisation and training sigma): :func:`oplab.checkpoint.save_net`."""
    from ..checkpoint import save_net

    return save_net(folder, "lpn", model.config, model.state_dict())


def load_lpn(folder: str | Path) -> LPN:
    """An LPN written by :func:`save_lpn` (in eval mode)."""
    from ..checkpoint import load_net

    return load_net(folder, "lpn", lambda config: LPN(**config), "an LPN")


# -- training ----------------------------------------------------------------------------------------
def pm_loss(fy: torch.Tensor, x: torch.Tensor, gamma: float) -> torch.Tensor:
    """The proximal matching loss ``mean_b 1 - exp(-|f(y_b) - x_b|^2 / (d gamma^2))`` (module docstring)."""
    d = x[0].numel()
    return (1.0 - torch.exp(-(fy - x).flatten(1).square().sum(1) / (d * gamma**2))).mean()


def gamma_schedule(start: float, end: float, steps: int, stages: int) -> list[float]:
    """``gamma`` per proximal-matching step: ``stages`` equal stages, geometric from ``start`` to ``end``."""
    stages = max(1, min(stages, steps))
    values = [start * (end / start) ** (i / max(stages - 1, 1)) for i in range(stages)]
    return [values[min(i * stages // steps, stages - 1)] for i in range(steps)]


def train_lpn(fields, sigma: float, *, hidden: int = 32, layers: int = 4, kernel_size: int = 3,
              alpha: float = 1e-3, beta: float = 1.0, padding_mode: str = "replicate", quadratic: bool = True,
              normalise: bool = True,
              pretrain_steps: int = 500, pretrain_loss: str = "l1", steps: int = 2000,
              gamma: tuple = (None, None), stages: int = 4, batch_size: int = 32, lr: float = 1e-3,
              lr_pm: float | None = None, crop: int | None = None, seed: int = 0, model: LPN | None = None,
              log=None, log_every: int = 100) -> tuple[LPN, dict]:
    """Train an LPN on ``fields [N, C, *S]`` (physical units) as a denoiser at noise ``sigma``.

    The fields are normalised per channel (``normalise``: by their mean and std, else not at all);
    ``sigma`` is the noise's standard deviation in those units. Each step draws ``batch_size``
    fields (a random ``crop`` of ``crop`` pixels per axis if given), adds fresh noise, and takes one
    Adam step (``lr``; ``lr_pm`` in the matching phase, default ``lr``) on: ``pretrain_steps`` of
    the ``pretrain_loss`` (``l1``: mean |f(y) - x|, or ``l2``), then ``steps`` of proximal matching
    with ``gamma`` going geometrically from ``gamma[0]`` (default ``sigma``) to ``gamma[1]``
    (default ``sigma / 8``) in ``stages`` stages. After every step the nonnegative weights are
    projected (:meth:`LPN.project`). ``model``: continue training this LPN (its normalisation is
    kept). Returns ``(model in eval mode, history)``, ``history``: ``loss`` and ``gamma`` per step
    (``gamma`` None while pretraining), ``pretrain_steps``, ``seconds``."""
    x_all = torch.as_tensor(np.asarray(fields), dtype=torch.float32)
    if x_all.ndim not in (3, 4):
        raise ParameterError(f"train_lpn: fields must be [N, C, *S] with 1 or 2 spatial axes, got {list(x_all.shape)}")
    if not torch.isfinite(x_all).all():
        raise ParameterError("train_lpn: fields hold NaN or Inf")
    if not sigma > 0:
        raise ParameterError(f"train_lpn: sigma must be > 0, got {sigma!r}")
    if pretrain_loss not in ("l1", "l2"):
        raise ParameterError(f"train_lpn: pretrain_loss must be l1 or l2, got {pretrain_loss!r}")
    for name, value in (("pretrain_steps", pretrain_steps), ("steps", steps)):
        check_int("train_lpn", name, value, 0)
    n, c, dim = x_all.shape[0], x_all.shape[1], x_all.ndim - 2
    g0 = float(sigma if gamma[0] is None else gamma[0])
    g1 = float(sigma / 8.0 if gamma[1] is None else gamma[1])
    if not (g0 > 0 and g1 > 0):
        raise ParameterError(f"train_lpn: gamma must be > 0, got {gamma!r}")
    if crop is not None and any(crop > s for s in x_all.shape[2:]):
        raise ParameterError(f"train_lpn: crop {crop} is larger than the fields {list(x_all.shape[2:])}")
    torch.manual_seed(seed)
    if model is None:
        if normalise:
            dims = [0, *range(2, x_all.ndim)]
            mean = x_all.double().mean(dims).tolist()
            std = [max(s, 1e-12) for s in x_all.double().std(dims).tolist()]
        else:
            mean, std = [0.0] * c, [1.0] * c
        model = LPN(c, dim, hidden, layers, kernel_size, alpha, beta, padding_mode, mean, std, sigma, quadratic)
    elif model.config["in_channels"] != c or model.config["dim"] != dim:
        raise ParameterError(f"train_lpn: the model takes {model.config['in_channels']} channel(s) on "
                             f"{model.config['dim']} axes; the fields are {list(x_all.shape)}")
    model.config["sigma"] = float(sigma)
    x_all = model.normalise(x_all)
    gen = torch.Generator().manual_seed(seed)
    gammas = [None] * pretrain_steps + gamma_schedule(g0, g1, steps, stages)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = {"loss": [], "gamma": gammas, "pretrain_steps": pretrain_steps}
    model.train()
    tic = time.perf_counter()
    for step, g in enumerate(gammas):
        if step == pretrain_steps and lr_pm is not None:
            for group in opt.param_groups:
                group["lr"] = lr_pm
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        x = x_all[idx]
        if crop is not None:
            starts = [int(torch.randint(0, s - crop + 1, (1,), generator=gen)) for s in x.shape[2:]]
            x = x[(slice(None), slice(None), *(slice(s, s + crop) for s in starts))]
        y = x + sigma * torch.randn(x.shape, generator=gen)
        fy = model(y)
        if g is None:
            loss = (fy - x).abs().mean() if pretrain_loss == "l1" else (fy - x).square().mean()
        else:
            loss = pm_loss(fy, x, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.project()
        history["loss"].append(loss.item())
        if log and (step % log_every == 0 or step == len(gammas) - 1):
            phase = "pretrain" if g is None else f"matching gamma {g:.3g}"
            log(f"step {step}: {phase} loss {history['loss'][-1]:.4g}")
    history["seconds"] = time.perf_counter() - tic
    return model.eval(), history


# -- plug-and-play proximal gradient descent ------------------------------------------------------------
def pnp(forward, axes, obs, lpn: LPN, steps: int = 100, step_size: float | None = None, init=None,
        dtype=torch.float32, log=None) -> dict:
    """Plug-and-play proximal gradient descent with the LPN as the proximal step:

        x_{k+1} = f_theta(x_k - eta grad_x misfit(mean + std x_k)),

    ``misfit(a) = 1/2 sum_k ((O(forward(a))_k - d_k) / sigma_k)^2`` as in :func:`oplab.inverse.invert`
    (``axes``: the grid of ``forward``'s output, where the sensors read it), ``x = (a - mean) / std``
    the field in the LPN's units (its config's normalisation). ``forward`` takes physical fields,
    and ``init`` (``[C, *S]`` or ``[1, C, *S]``; default: the mean field, ``x = 0``, on the grid of
    ``axes``) and the returned estimate are physical too: the mapping is done here.

    Fixed points are stationary points of ``eta misfit + R_theta`` (``R_theta`` in normalised
    units): ``eta`` (``step_size``) is also the weight of the data against the prior. An LPN trained
    at noise ``sigma`` has ``R_theta ~ -sigma^2 log p``, so ``eta = sigma^2`` (the default, from the
    LPN's config) is the MAP estimate's balance. The iteration is stable for ``eta < 2 / L``
    (``L``: the Lipschitz constant of the misfit's gradient in normalised units, about
    ``std^2 |J|^2 / noise^2`` with ``J`` the Jacobian of the observed forward map); with precise
    data (small noise) the MAP ``eta`` exceeds it, and a smaller ``eta`` weights the prior more
    (PnP gradient descent cannot weight it less). A diverging run stops with a one-line error.

    Returns ``estimate [C, *S]``, ``spread`` (zeros: one run), ``samples [1, C, *S]``, ``misfit``
    (chi^2 per observed value of the estimate), ``history`` (1/2 chi^2 every 10 steps),
    ``change`` (the relative size of the update every 10 steps), ``step_size``, ``seconds``."""
    from . import misfit as data_misfit

    check_int("pnp", "steps", steps)
    if step_size is None:
        if lpn.config.get("sigma") is None:
            raise ParameterError("pnp: the LPN does not know its training noise; pass step_size")
        step_size = lpn.config["sigma"] ** 2
    if not step_size > 0:
        raise ParameterError(f"pnp: step_size must be > 0, got {step_size!r}")
    points, net_dtype, x = _pnp_start("pnp", lpn, axes, obs, init, dtype)

    def misfit(x_):
        return data_misfit(forward, lpn.denormalise(x_).to(dtype), points, obs, axes).sum()

    was_training = lpn.training
    lpn.eval()
    history, change = [], []
    tic = time.perf_counter()
    try:
        for step in range(steps):
            xk = x.detach().requires_grad_(True)
            with torch.enable_grad():
                m = misfit(xk)
                (grad,) = torch.autograd.grad(m, xk)
            z = (xk.detach() - step_size * grad).to(net_dtype)
            x_new = lpn(z).to(dtype)
            if not (torch.isfinite(x_new).all() and math.isfinite(float(m.detach()))):
                raise ParameterError(f"pnp: diverged at step {step} with step_size {step_size:g}: the gradient step "
                                     f"on the misfit is unstable; use a step_size below 2 / L (L: the Lipschitz "
                                     f"constant of the misfit's gradient in the LPN's normalised units)")
            if step % 10 == 0 or step == steps - 1:
                history.append(float(m.detach()))
                scale = max(float(xk.detach().norm()), float(x_new.norm()), 1e-12)
                change.append(float((x_new - xk.detach()).norm()) / scale)
                if log:
                    log(f"step {step}: 1/2 chi^2 {history[-1]:.4g}, change {change[-1]:.3g}")
            x = x_new.detach()
        with torch.no_grad():
            final = float(misfit(x))
    finally:
        lpn.train(was_training)
    estimate = lpn.denormalise(x)[0].detach()
    return {"estimate": estimate, "spread": torch.zeros_like(estimate), "samples": estimate[None],
            "misfit": final * 2.0 / obs.values.size, "history": history, "change": change,
            "step_size": float(step_size), "seconds": time.perf_counter() - tic}


def _pnp_start(owner: str, lpn: LPN, axes, obs, init, dtype):
    """What both plug-and-play iterations start from: the sensor points, the LPN's dtype and the
    starting field in the LPN's units ``[1, C, *S]`` (``init`` physical, ``[C, *S]`` or ``[1, C, *S]``;
    default the mean field, ``x = 0``, on the grid of ``axes``: forward's input grid is its output
    grid, as in ``invert``)."""
    c, dim = lpn.config["in_channels"], lpn.config["dim"]
    shape_note = f"[{c}, {', '.join('S' * dim)}]"
    if init is None:
        x = torch.zeros(1, c, *(a.n for a in axes), dtype=dtype)
    else:
        a0 = torch.as_tensor(init, dtype=dtype)
        a0 = a0[None] if a0.ndim == dim + 1 else a0
        if a0.ndim != dim + 2 or a0.shape[:2] != (1, c):
            raise ParameterError(f"{owner}: init must be {shape_note} (one field), got {list(a0.shape)}")
        x = lpn.normalise(a0)
    if x.ndim != dim + 2:
        raise ParameterError(f"{owner}: the LPN works on {dim} spatial axis/axes; pass init {shape_note}")
    return torch.as_tensor(obs.points, dtype=dtype), next(lpn.parameters()).dtype, x


# -- plug-and-play ADMM -------------------------------------------------------------------------------
def pnp_admm(forward, axes, obs, lpn: LPN, steps: int = 50, rho: float | None = None, inner_steps: int = 10,
             init=None, dtype=torch.float32, log=None) -> dict:
    """Plug-and-play ADMM with the LPN as the proximal step (scaled form; Boyd et al. 2011,
    "Distributed optimization and statistical learning via ADMM", section 3.1.1; PnP after
    Venkatakrishnan et al. 2013), in the LPN's normalised units ``x = (a - mean) / std``:

        x_{k+1} = argmin_x misfit(mean + std x) + rho/2 |x - z_k + w_k|^2     (inner L-BFGS)
        z_{k+1} = f_theta(x_{k+1} + w_k)                                       (the LPN: prox of R_theta)
        w_{k+1} = w_k + x_{k+1} - z_{k+1}

    ``misfit`` as in :func:`oplab.inverse.invert` (``axes``: the grid where the sensors read
    ``forward``'s output). Since ``f_theta`` is the prox of ``R_theta`` with unit weight, the
    z-update is the prox of ``(lambda / rho) R`` exactly when ``lambda = rho``: the iteration
    targets stationary points of ``misfit + rho R_theta``, so ``rho`` is both the ADMM penalty and
    the prior's weight. An LPN trained at noise ``sigma`` has ``R_theta ~ -sigma^2 log p``, so
    ``rho = 1 / sigma^2`` (the default, from the LPN's config) is the MAP balance; unlike proximal
    gradient (:func:`pnp`, whose ``eta`` plays ``1 / rho``) the data's weight has no stability
    limit, since the data term is minimised, not stepped on. The x-update runs ``inner_steps``
    L-BFGS iterations (strong Wolfe line search), warm-started at the previous ``x``.

    ``init`` (physical ``[C, *S]`` or ``[1, C, *S]``; default the mean field, ``x = 0``) starts
    ``x`` and ``z``; ``w`` starts at 0. Returns ``estimate [C, *S]`` (physical, ``z``: the LPN's
    output), ``spread`` (zeros), ``samples [1, C, *S]``, ``misfit`` (chi^2 per observed value of
    the estimate), ``history`` (1/2 chi^2 of ``z`` every 10 iterations), ``residual`` (the primal
    residual ``|x - z| / |z|`` every 10 iterations), ``rho``, ``evaluations`` (forward passes) and
    ``seconds``. A diverging run stops with a one-line error."""
    from . import misfit as data_misfit

    for name, value in (("steps", steps), ("inner_steps", inner_steps)):
        check_int("pnp_admm", name, value)
    if rho is None:
        if lpn.config.get("sigma") is None:
            raise ParameterError("pnp_admm: the LPN does not know its training noise; pass rho")
        rho = 1.0 / lpn.config["sigma"] ** 2
    if not (isinstance(rho, (int, float)) and math.isfinite(rho) and rho > 0):
        raise ParameterError(f"pnp_admm: rho must be a positive number, got {rho!r}")
    points, net_dtype, z = _pnp_start("pnp_admm", lpn, axes, obs, init, dtype)
    x, w = z.clone(), torch.zeros_like(z)
    evaluations = [0]

    def misfit(x_):
        evaluations[0] += 1
        return data_misfit(forward, lpn.denormalise(x_).to(dtype), points, obs, axes).sum()

    def diverged(step):
        return ParameterError(f"pnp_admm: diverged at iteration {step} with rho {rho:g} (the x-update left the "
                              f"forward map's domain or the misfit overflowed); try a larger rho (a stronger prior)")

    was_training = lpn.training
    lpn.eval()
    history, residual = [], []
    tic = time.perf_counter()
    try:
        for step in range(steps):
            v = (z - w).detach()
            xk = x.detach().clone().requires_grad_(True)
            opt = torch.optim.LBFGS([xk], lr=1.0, max_iter=inner_steps, history_size=20, tolerance_grad=1e-10,
                                    tolerance_change=1e-14, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                with torch.enable_grad():
                    obj = misfit(xk) + 0.5 * rho * (xk - v).square().sum()
                    obj.backward()
                return obj

            opt.step(closure)
            x = xk.detach()
            if not torch.isfinite(x).all():
                raise diverged(step)
            z = lpn((x + w).to(net_dtype)).to(dtype).detach()
            w = w + x - z
            if not (torch.isfinite(z).all() and torch.isfinite(w).all()):
                raise diverged(step)
            if step % 10 == 0 or step == steps - 1:
                with torch.no_grad():
                    m = float(misfit(z))
                if not math.isfinite(m):
                    raise diverged(step)
                history.append(m)
                residual.append(float((x - z).norm()) / max(float(z.norm()), 1e-12))
                if log:
                    log(f"admm {step}: 1/2 chi^2 {history[-1]:.4g}, primal residual {residual[-1]:.3g}")
        with torch.no_grad():
            final = float(misfit(z))
    finally:
        lpn.train(was_training)
    estimate = lpn.denormalise(z)[0].detach()
    return {"estimate": estimate, "spread": torch.zeros_like(estimate), "samples": estimate[None],
            "misfit": final * 2.0 / obs.values.size, "history": history, "residual": residual, "rho": float(rho),
            "evaluations": evaluations[0], "seconds": time.perf_counter() - tic}


__all__ = ["LPN", "gamma_schedule", "load_lpn", "pm_loss", "pnp", "pnp_admm", "save_lpn", "train_lpn"]
