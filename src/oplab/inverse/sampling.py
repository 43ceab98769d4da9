"""Posterior samples for :func:`oplab.inverse.invert`: Langevin Monte Carlo on the inversion's objective.

The objective ``J(p) = misfit(field(p)) + penalty(p)`` that :func:`oplab.inverse.invert` minimises
is the negative log of the density ``pi(p) ~ exp(-J(p))`` over the prior's parameters ``p``: the
KL coefficients ``z`` of the latent prior (where ``pi`` is exactly the Bayesian posterior of ``z``,
a standard normal prior times the Gaussian likelihood of the observations), or the pixels of the
smoothness and total-variation priors (the posterior with prior ``exp(-R(a))``; with ``bounds``,
``p`` are the sigmoid's logits and ``pi`` carries no Jacobian of that map: it is the density whose
mode is the bounded MAP estimate, not a change of variables of a posterior on ``a``).

Two samplers, both from Roberts & Tweedie 1996 ("Exponential convergence of Langevin distributions
and their discrete approximations", Bernoulli 2(4)), written from the algorithms' definitions:

* ``mala`` (default): the Metropolis-adjusted Langevin algorithm. Proposal
  ``p' = p - h grad J(p) + sqrt(2 h) xi``, ``xi ~ N(0, I)``, accepted with probability
  ``min(1, exp(J(p) - J(p') + log q(p | p') - log q(p' | p)))``,
  ``log q(b | a) = -|b - a + h grad J(a)|^2 / (4 h)``. The accept/reject step makes ``pi``
  exactly invariant for any step ``h``.
* ``ula``: the unadjusted Langevin algorithm, every proposal accepted (the same work per step:
  one objective and gradient), biased at finite ``h`` (for a Gaussian of variance ``s^2`` its
  stationary variance is ``s^2 / (1 - h / (2 s^2))``).

Chains run as one batch, all started from the MAP estimate (the optimiser's answer, so no
transient from the prior's tails). During ``burn_in`` steps the step ``h`` is adapted (one common
``h``, multiplied by ``exp(g_k (acceptance - target))`` after step ``k``, ``g_k = 0.5 / (1 + k / 20)^0.6``
(a Robbins-Monro gain: large moves first, damped later), targeting MALA's optimal
acceptance 0.574 of Roberts & Rosenthal 1998, "Optimal scaling of discrete approximations to
Langevin diffusions", JRSS B 60; for ULA the same rule runs on the acceptance MALA *would* have had,
which keeps its bias moderate); afterwards ``h`` is fixed, so the kept samples come from a
time-homogeneous chain. Every ``thin``-th state after the burn-in is kept.
"""

from __future__ import annotations

import math
import time

import torch

from ..errors import ParameterError, check_int

SAMPLERS = ("mala", "ula")
TARGET_ACCEPTANCE = 0.574  # MALA's optimal acceptance rate (Roberts & Rosenthal 1998)


def _positive_int(name: str, value, minimum: int = 1) -> int:
    return check_int("langevin", name, value, minimum)


def langevin(objective, start: torch.Tensor, samples: int = 200, chains: int = 4, burn_in: int = 200, thin: int = 5,
             step: float = 1e-3, sampler: str = "mala", adapt: bool = True, seed: int = 0, log=None) -> dict:
    """Draw ``samples`` states of ``exp(-objective)`` by Langevin Monte Carlo (module docstring).

    ``objective``: ``p [R, *P] -> [R]`` (one value per chain, differentiable); ``start``: ``[1, *P]``
    (the MAP parameters with a leading axis of one; every chain starts there); ``chains`` run batched, each
    ``burn_in + ceil(samples / chains) * thin`` steps, keeping every ``thin``-th state after the
    burn-in; ``step``: the initial ``h`` (adapted during the burn-in when ``adapt``). Returns
    ``params [samples, *P]`` (chain-major: the first chain's states, then the second's ...),
    ``chain [samples]`` (which chain each came from), ``acceptance`` (the mean acceptance
    probability after the burn-in; 1 for ULA's accepted moves, the MALA ratio is reported as
    ``mala_ratio``), ``step`` (the final ``h``), ``steps`` per chain and ``seconds``."""
    if sampler not in SAMPLERS:
        raise ParameterError(f"langevin: sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    samples, chains = _positive_int("samples", samples), _positive_int("chains", chains)
    burn_in, thin = _positive_int("burn_in", burn_in, 0), _positive_int("thin", thin)
    if not (isinstance(step, (int, float)) and step > 0 and math.isfinite(step)):
        raise ParameterError(f"langevin: step must be a positive number, got {step!r}")
    p0 = start.detach()
    if p0.dim() < 2 or p0.shape[0] != 1:
        raise ParameterError(f"langevin: start must have shape [1, *P] (one state, a leading axis of 1), got "
                             f"{list(p0.shape)}")
    x = p0.expand(chains, *p0.shape[1:]).clone()
    per_chain = -(-samples // chains)
    n_steps = burn_in + per_chain * thin
    gen = torch.Generator().manual_seed(seed)
    h = float(step)

    def value_and_grad(p):
        p = p.detach().requires_grad_(True)
        with torch.enable_grad():
            u = objective(p)
            (g,) = torch.autograd.grad(u.sum(), p)
        return u.detach(), g.detach()

    def log_q(to, frm, grad_frm, h_):  # log density of proposing `to` from `frm` (up to a constant)
        return -(to - frm + h_ * grad_frm).square().flatten(1).sum(1) / (4.0 * h_)

    u, g = value_and_grad(x)
    kept, ratios = [], []
    tic = time.perf_counter()
    for k in range(n_steps):
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        prop = x - h * g + math.sqrt(2.0 * h) * noise
        u_p, g_p = value_and_grad(prop)
        log_ratio = u - u_p + log_q(x, prop, g_p, h) - log_q(prop, x, g, h)
        ratio = torch.exp(torch.clamp(log_ratio, max=0.0))
        ratio = torch.where(torch.isfinite(u_p), ratio, torch.zeros_like(ratio))
        if sampler == "mala":
            accept = torch.rand(chains, generator=gen, dtype=x.dtype) < ratio
        else:
            if not torch.isfinite(u_p).all():
                raise ParameterError(f"langevin: ula diverged at step {k} with step {h:g}; use a smaller step")
            accept = torch.ones(chains, dtype=torch.bool)
        shape = (chains, *([1] * (x.ndim - 1)))
        x = torch.where(accept.view(shape), prop, x)
        u = torch.where(accept, u_p, u)
        g = torch.where(accept.view(shape), g_p, g)
        mean_ratio = float(ratio.mean())
        if k < burn_in:
            if adapt:  # Robbins-Monro on log h: large moves first, damped later
                h *= math.exp(0.5 * (mean_ratio - TARGET_ACCEPTANCE) / (1.0 + k / 20.0) ** 0.6)
        else:
            ratios.append(mean_ratio)
            if (k - burn_in + 1) % thin == 0:
                kept.append(x.clone())
        if log and k % 100 == 0:
            log(f"langevin step {k}: step {h:.3g}, acceptance {mean_ratio:.2f}, objective {float(u.mean()):.4g}")
    params = torch.stack(kept, 1)  # [chains, per_chain, *P]
    chain = torch.arange(chains).repeat_interleave(per_chain)
    keep = slice(0, samples)
    mala_ratio = sum(ratios) / max(len(ratios), 1)
    return {"params": params.flatten(0, 1)[keep], "chain": chain[keep],
            "acceptance": mala_ratio if sampler == "mala" else 1.0, "mala_ratio": mala_ratio, "step": h,
            "steps": n_steps, "seconds": time.perf_counter() - tic}


__all__ = ["SAMPLERS", "langevin"]
