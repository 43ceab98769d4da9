"""Adaptive Dormand-Prince 5(4) integration that reports the solver's internal heuristics.

:func:`dopri5` integrates ``dy/dt = f(t, y)`` from ``t0`` to ``t1`` with the
embedded Runge-Kutta pair of Dormand & Prince (1980) and the standard
step-size controller (Hairer, Norsett & Wanner, "Solving Ordinary Differential
Equations I", 2nd ed., section II.4), and returns, besides ``y(t1)``, the two
cost heuristics that the regularisers of

* A. Pal, Y. Ma, V. Shah, C. Rackauckas, "Opening the blackbox: accelerating
  neural differential equations by regularizing internal solver heuristics",
  ICML 2021 (arXiv:2105.03918), and
* A. Pal, A. Edelman, C. Rackauckas, "Locally regularized neural differential
  equations: some black boxes were meant to remain closed!", ICML 2023,

penalise, as differentiable tensors (written here from the papers' equations,
not from their Julia code, RegNeuralODE.jl).

**The step.** Seven stages ``k_i = f(t + c_i h, y + h sum_j a_ij k_j)``; the
fifth-order solution ``y_{n+1} = y_n + h sum_i b_i k_i`` is also the seventh
stage's state, so ``k_7 = f(t + h, y_{n+1})`` is the next step's ``k_1``
(first same as last: 6 evaluations per step). The embedded fourth-order
solution ``y*`` gives the local error estimate ``err = y_{n+1} - y* = h sum_i
(b_i - b*_i) k_i`` and its scaled norm (the quantity the controller uses,
``EEst`` in DifferentialEquations.jl, ``error_ratio`` in torchdiffeq)

    E_n = RMS( err / (atol + rtol max(|y_n|, |y_{n+1}|)) ).

A step is accepted when ``E_n <= 1``. The next step is ``h * min(ifactor,
max(safety E_n^(-1/5), d))`` with ``d = 1`` after an accepted step (never
shrink) and ``d = dfactor`` after a rejection: the controller of torchdiffeq's
``dopri5`` (safety 0.9, ifactor 10, dfactor 0.2), so the two count about the
same evaluations on the same problem. The first step is Hairer's heuristic
(section II.4, one extra evaluation). Unlike torchdiffeq, which steps past
``t1`` and interpolates, the last step is shortened to land on ``t1``.

**Error regulariser** (Pal et al. 2021, ``R_E``): the accumulated local error
estimates over the accepted steps,

    R_E = sum_n E_n |h_n|.

**Stiffness regulariser** (Pal et al. 2021, ``R_S``): the stiffness estimate of
Hairer's dopri5 (Hairer & Wanner, "Solving ODEs II", section IV.2; also
DifferentialEquations.jl's ``eigen_est``): stages 6 and 7 are both evaluated at
``t + h``, so

    |lambda_n| ~ ||k_7 - k_6|| / ||y_{n+1} - Y_6||

(``Y_6`` the sixth stage's state, Euclidean norms) estimates the magnitude of
the dominant eigenvalue of the Jacobian ``df/dy`` along the step, and
``|h_n lambda_n|`` is what the stiffness detection compares with the boundary
of the stability region (about 3.3 for dopri5). Summed over the accepted steps,

    R_S = sum_n |h_n| |lambda_n|   (about int |lambda(t)| dt).

**Local (2023) variant**: the penalty of one step at a random time ``t_s`` instead of
the whole trajectory. Given ``local_time = t_s`` the solver lands on ``t_s``
(a step is shortened to end there, as at a ``tstop``; the next step starts from
the step size the controller had proposed) and reports ``E |h|`` and ``|h
lambda|`` of the first accepted step from ``t_s`` as ``local_error`` and
``local_stiffness`` (unbiased sampling: ``t_s ~ U(t0, t1)`` is the caller's).

**Gradients.** The steps are plain autograd operations (discretise, then
optimise: the papers' discrete sensitivities), so ``y(t1)`` and the four
statistics are differentiable with respect to ``y0`` and the parameters of
``f``. The step sizes and the error scale ``atol + rtol max(|y_n|,
|y_{n+1}|)`` are detached (heuristics, as in every adaptive solver; a
differentiable scale would let the penalty fall by inflating the state).

**Batches.** The state ``y`` is a tensor of any shape. With ``per_sample=False``
it is one system: one step size for all of it and the norms over all of it (as
torchdiffeq, and DifferentialEquations.jl on a batched array), so the steps a
sample gets depend on the rest of its batch. With ``per_sample=True`` every
sample (first axis) is its own system, with its own step size, acceptance and
statistics (as torchode: Lienen & Guennemann 2022), while the samples share the
calls of ``f`` (a sample that has arrived takes steps of length 0 until all
have): a sample's answer is the one it gets alone, up to rounding. The
penalties are then the means over the samples of their ``R_E`` or ``R_S``.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["DOPRI5", "dopri5", "initial_step"]

#: the Dormand-Prince 5(4) tableau: nodes c, stage matrix a (rows 2..7), fifth-order weights b,
#: error weights e = b - b* (b* the embedded fourth-order weights)
DOPRI5 = {
    "c": (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    "a": (
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    "b": (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
    "e": (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40),
}


def _sqrt(v: torch.Tensor) -> torch.Tensor:
    """``sqrt(v)`` with a zero (not NaN) gradient at ``v = 0`` (a sample that has arrived: a step of 0)."""
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))


class _Groups:
    """The independent systems of a state ``y``: its samples (the first axis) with ``per_sample``,
    else the whole tensor as one; norms per group, per-group values broadcast over ``y``."""

    def __init__(self, y: torch.Tensor, per_sample: bool):
        if per_sample and y.ndim == 0:
            raise ValueError("dopri5: per_sample needs a batch axis (y0 of at least one dimension)")
        self.n = y.shape[0] if per_sample else 1
        self.per_sample = per_sample
        self.view = (self.n,) + (1,) * (y.ndim - 1) if per_sample else (1,) * y.ndim

    def rms(self, x: torch.Tensor) -> torch.Tensor:
        return _sqrt(x.reshape(self.n, -1).square().mean(dim=1))

    def l2(self, x: torch.Tensor) -> torch.Tensor:
        return _sqrt(x.reshape(self.n, -1).square().sum(dim=1))

    def spread(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A per-group value ``[n]`` as a factor broadcasting over ``like``."""
        return v.to(like.dtype).reshape(self.view)

    def time(self, t: torch.Tensor, like: torch.Tensor):
        """The time argument of ``func``: a float for one system, ``[n]`` (``like``'s dtype) per sample."""
        return t.to(like.dtype) if self.per_sample else float(t[0])


def _combine(y: torch.Tensor, h: torch.Tensor, weights, ks) -> torch.Tensor:
    """``y + h sum_i w_i k_i`` over the nonzero weights (``h`` broadcasting over ``y``)."""
    out = y
    for w, k in zip(weights, ks):
        if w != 0.0:
            out = out + (w * h) * k
    return out


@torch.no_grad()
def initial_step(f: Callable, t0: float, y0: torch.Tensor, f0: torch.Tensor, rtol: float, atol: float,
                 groups: _Groups | None = None, order: int = 5) -> torch.Tensor:
    """Hairer, Norsett & Wanner's starting step (Solving ODEs I, section II.4; torchdiffeq's too),
    per group (``[n]``, float64): one evaluation of ``f``."""
    g = groups or _Groups(y0, False)
    scale = atol + rtol * y0.abs()
    d0, d1 = g.rms(y0 / scale).double(), g.rms(f0 / scale).double()
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    t = torch.full_like(h0, float(t0)) + h0
    f1 = f(g.time(t, y0), y0 + g.spread(h0, y0) * f0)
    d2 = g.rms((f1 - f0) / scale).double() / h0
    dm = torch.maximum(d1, d2)
    h1 = torch.where(dm <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / dm) ** (1.0 / order))
    return torch.minimum(100 * h0, h1)


def dopri5(func: Callable, y0: torch.Tensor, t0: float = 0.0, t1: float = 1.0, rtol: float = 1e-3,
           atol: float = 1e-4, *, per_sample: bool = False, local_time: float | None = None,
           first_step=None, max_steps: int = 10_000, safety: float = 0.9, ifactor: float = 10.0,
           dfactor: float = 0.2) -> tuple[torch.Tensor, dict]:
    """``y(t1)`` of ``dy/dt = func(t, y)``, ``y(t0) = y0`` (``t1 > t0``), by adaptive Dormand-Prince 5(4)
    (module docstring), and the solver's statistics.

    ``per_sample=False``: ``y0`` is one system (one step size, norms over all of it, as torchdiffeq)
    and ``func`` gets ``t`` as a float. ``per_sample=True``: every sample ``y0[i]`` (first axis) is
    its own system with its own steps, accepted or rejected on its own error (the samples share the
    evaluations of ``func``, which then gets ``t`` as a tensor ``[B]``; a sample that has arrived
    takes steps of length 0): each sample's answer is the one it gets alone, up to rounding.

    The statistics, a dict (``n`` = 1 system, or ``B`` with ``per_sample``):

    * ``nfe``: calls of ``func`` (the first, the starting-step heuristic's, 6 per step attempt);
      ``nfe_per_sample``: ``[n]``, what each system needed (what it costs solved alone);
    * ``steps``, ``rejected``: ``[n]`` accepted and rejected steps; ``times``: per system, the list
      of its accepted steps' end times; ``next_step``: ``[n]``, the controller's proposal after
      ``t1`` (the ``first_step`` of a solve that continues from there);
    * ``error``: ``R_E = sum_n E_n |h_n|``, ``stiffness``: ``R_S = sum_n |h_n lambda_n|``, each the
      mean over the systems, a differentiable scalar tensor (``error_per_sample``,
      ``stiffness_per_sample``: ``[n]``);
    * ``local_error``, ``local_stiffness``: the same terms of each system's first accepted step
      from ``local_time``, averaged (``None`` without ``local_time``, which must lie in ``(t0, t1)``).

    ``first_step`` (a float or ``[n]``) replaces the starting heuristic (one evaluation fewer).
    More than ``max_steps`` step attempts raise a RuntimeError (the dynamics have become too stiff
    for the tolerances)."""
    t0, t1 = float(t0), float(t1)
    if not t1 > t0:
        raise ValueError(f"dopri5: integrate forward, t1 > t0 (got t0={t0}, t1={t1})")
    local = local_time is not None
    if local and not t0 < float(local_time) < t1:
        raise ValueError(f"dopri5: local_time must lie in ({t0}, {t1}), got {local_time}")
    c, a, b, e = DOPRI5["c"], DOPRI5["a"], DOPRI5["b"], DOPRI5["e"]
    g = _Groups(y0, per_sample)
    nfe = 0

    def f(t, y):
        nonlocal nfe
        nfe += 1
        return func(t, y)

    device, f64 = y0.device, torch.float64
    t = torch.full((g.n,), t0, dtype=f64, device=device)
    k1 = f(g.time(t, y0), y0)
    if first_step is None:
        h_want = initial_step(f, t0, y0, k1, rtol, atol, g)
    else:
        h_want = torch.as_tensor(first_step, dtype=f64, device=device).expand(g.n).clone()
    y = y0
    zeros = torch.zeros(g.n, dtype=y0.dtype, device=device)
    error, stiffness, local_error, local_stiffness = zeros, zeros, zeros, zeros
    steps = torch.zeros(g.n, dtype=torch.long, device=device)
    rejected = torch.zeros_like(steps)
    at_local = torch.zeros(g.n, dtype=torch.bool, device=device)  # at local_time: the next accepted step counts
    recorded = torch.zeros_like(at_local)
    times: list[list[float]] = [[] for _ in range(g.n)]
    eps = 1e-12 * max(1.0, abs(t1))
    tiny = torch.finfo(y0.dtype).tiny
    done = (t1 - t) <= eps
    attempts = 0
    while not bool(done.all()):
        if attempts >= max_steps:
            raise RuntimeError(f"dopri5: more than {max_steps} steps from t={t0} to t={t1} (reached t={float(t.min()):.6g}, "
                               f"step {float(h_want.min()):.3g}): the dynamics are too stiff for rtol={rtol}, atol={atol}")
        attempts += 1
        active = ~done
        h = torch.minimum(h_want, t1 - t)  # land on t1
        clip = torch.zeros_like(active)
        if local:  # land on the sampled time
            clip = active & ~recorded & ~at_local & (t < local_time) & (local_time < t + h)
            h = torch.where(clip, local_time - t, h)
        shortened = h < h_want
        h = torch.where(active, h, torch.zeros_like(h))
        hy = g.spread(h, y)
        ks = [k1]
        for i in range(1, 6):  # stages 2..6; the sixth is evaluated at t + h
            state = _combine(y, hy, a[i - 1], ks)
            ks.append(f(g.time(t + c[i] * h, y), state))
        y6 = state  # Y_6, the sixth stage's state
        y_new = _combine(y, hy, b, ks)  # the fifth-order solution = the seventh stage's state
        k7 = f(g.time(t + h, y), y_new)
        ks.append(k7)
        err = _combine(torch.zeros_like(y), hy, e, ks)
        scale = (atol + rtol * torch.maximum(y.abs(), y_new.abs())).detach()
        ratio = g.rms(err / scale)  # E per system, differentiable
        r = ratio.detach().to(f64)
        if not bool(torch.isfinite(r[active]).all()):
            raise RuntimeError(f"dopri5: non-finite error estimate at t={float(t.min()):.6g}")
        accept = active & (r <= 1.0)
        reject = active & ~accept
        h_abs = h.to(y.dtype)
        term_e = ratio * h_abs
        den = g.l2(y_new - y6)
        lam = g.l2(k7 - ks[5]) / den.clamp_min(tiny)
        term_s = torch.where(den > tiny, lam, torch.zeros_like(lam)) * h_abs
        error = error + torch.where(accept, term_e, zeros)
        stiffness = stiffness + torch.where(accept, term_s, zeros)
        if local:
            count = accept & at_local
            local_error = torch.where(count, term_e, local_error)
            local_stiffness = torch.where(count, term_s, local_stiffness)
            recorded = recorded | count
            at_local = (at_local & ~count) | (accept & clip)
        keep = g.spread(accept, y).bool()
        y = torch.where(keep, y_new, y)
        k1 = torch.where(keep, k7, k1)
        t = torch.where(accept, t + h, t)
        grow = torch.where(r == 0, torch.full_like(r, ifactor), (safety * r.pow(-0.2)).clamp(1.0, ifactor))
        shrink = (safety * r.pow(-0.2)).clamp(dfactor, ifactor)
        # after a step shortened to land (on t1 or local_time) the controller's proposal stands, as at a tstop
        h_want = torch.where(accept & ~shortened, h * grow, torch.where(reject, h * shrink, h_want))
        steps = steps + accept.long()
        rejected = rejected + reject.long()
        for i in accept.nonzero().flatten().tolist():
            times[i].append(float(t[i]))
        done = (t1 - t) <= eps
    first = 1 if first_step is not None else 2
    info = {"nfe": nfe, "nfe_per_sample": first + 6 * (steps + rejected), "steps": steps, "rejected": rejected,
            "times": times, "next_step": h_want, "error": error.mean(), "stiffness": stiffness.mean(),
            "error_per_sample": error, "stiffness_per_sample": stiffness,
            "local_error": local_error.mean() if local else None,
            "local_stiffness": local_stiffness.mean() if local else None}
    return y, info
