"""Physics-informed identification of parameters of the diesel engine model from noisy states.

Given the actuator inputs ``u(t)`` and noisy measurements ``y_m`` of the five gas states
``(p_im, p_em, X_Oim, X_Oem, omega_t)`` at times ``t_m``, recover one or a few parameters ``theta``
of the Wahlstrom-Eriksson model (:mod:`oplab.solvers.engine`), e.g. the maximum effective areas
of the EGR valve ``A_egrmax`` and of the VGT ``A_vgtmax``, or the turbine efficiency
``eta_tmmax``: quantities that drift on a real engine (a fouled EGR valve, a worn turbine).

Method ``"collocation"`` (default): the physics-informed fit of the PINN digital twins (Nath, Meng,
Smith & Karniadakis 2023, "Physics-informed neural networks for predicting gas flow dynamics and
unknown parameters in diesel engines", Sci. Rep. 13:13410, who identify e.g. A_egrmax of this model
with a PINN; "From PINNs to neural operators: a digital twin of a diesel engine"), with the
trajectory represented on a grid instead of by a network (a network would be trained for minutes
on this CPU; the grid turns the fit into a sparse least-squares problem solved in about a second). The unknowns are the states
``Z_k`` on a collocation grid ``s_k`` (``refine`` intervals per measurement interval) and
``theta = theta_0 exp(q)``; the objective is

    sum_m sum_j ((Z_j(t_m) - y_jm) / sigma_j)^2
      + sum_k sum_j ((Z_j,k+1 - Z_j,k - h/2 (f_j(Z_k, theta) + f_j(Z_k+1, theta))) / (S_j eps))^2,

the data misfit plus the residual of the ODE ``dx/dt = f(x, u, theta)`` (trapezoidal rule; S_j
the state magnitudes, ``eps`` the allowed relative defect per step, so that the physics is an
almost hard constraint). ``f`` is the model's right-hand side evaluated in torch (float64) with the
unknown parameters as leaves; its Jacobians with respect to states and parameters come from
autograd (one backward pass per state equation, every collocation point at once, since ``f`` acts
point by point), and the nonlinear least-squares problem is solved by Levenberg-Marquardt with
sparse normal equations. The actuator states (linear ODEs driven by the known commands) are
computed from the inputs. ``sigma_j``: the measurement noise, ``noise`` times the RMS of channel
j. The standard errors reported are those of the Gauss-Newton (Laplace) approximation at the
optimum.

Measured (tests/test_engine.py's 3 s record, 301 samples, steps of fuel, EGR and VGT at 1500 rpm;
five noise seeds; the fit starts from the published values): A_egrmax at 85 % of the published
value recovered within 1.0 % at 1 % noise and 1.4 % at 2 % noise (standard errors 0.36 %, 0.57 %);
A_vgtmax (110 %) within 0.12 % / 0.23 %; eta_tmmax (90 %) within 0.21 % / 0.31 %; A_egrmax and
A_vgtmax together within 1.1 % / 1.3 %; 0.5-1 s per fit on one CPU core.

Method ``"shooting"``: the classical output-error fit for comparison: ``theta`` minimises the
misfit of simulated trajectories (each from the steady state of the first inputs under ``theta``)
by scipy's trust-region least squares with finite-difference gradients.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..errors import ParameterError, is_int
from ..solvers.engine import DEFAULT_PARAMS, STATE_SCALE, TORCH, EngineParams, Inputs, rhs, simulate, steady_state

GAS = 5  # the measured (gas) states come first in the state vector


class Estimates(dict):
    """``name -> estimate`` (floats), with the fit's diagnostics as attributes: ``std`` (name ->
    standard error), ``seconds``, ``iterations``, ``method``, ``misfit`` (chi^2 per measured value)."""

    std: dict
    seconds: float
    iterations: int
    method: str
    misfit: float


def actuator_states(inputs: Inputs, times: np.ndarray, p: EngineParams = DEFAULT_PARAMS) -> np.ndarray:
    """The three actuator states ``[3, len(times)]`` driven by the (delayed) commands, from their
    equilibrium at ``times[0]``: the linear part of the model, independent of the gas states."""
    from scipy.integrate import solve_ivp

    def f(t, a):
        _, e, v, _ = inputs.delayed(t)
        return [(e - a[0]) / p.tau_egr1, (e - a[1]) / p.tau_egr2, (v - a[2]) / p.tau_vgt]

    _, e0, v0, _ = inputs.delayed(times[0])
    dt = float(np.min(np.diff(times))) if times.size > 1 else 1.0
    run = solve_ivp(f, (times[0], times[-1]), [e0, e0, v0], t_eval=times, rtol=1e-10, atol=1e-10, method="DOP853",
                    max_step=dt)
    return run.y


def _check(times, measured, inputs, names, p):
    times = np.asarray(times, dtype=np.float64)
    measured = np.asarray(measured, dtype=np.float64)
    inputs = np.asarray(inputs, dtype=np.float64)
    if times.ndim != 1 or times.size < 3 or np.any(np.diff(times) <= 0):
        raise ParameterError("identify: times must be an increasing 1D array of at least 3 values")
    if measured.ndim != 2 or measured.shape[0] < GAS or measured.shape[1] != times.size:
        raise ParameterError(f"identify: measured states of shape {measured.shape}, expected [5 or 8, {times.size}] "
                             "(p_im, p_em, X_Oim, X_Oem, omega_t first)")
    if inputs.shape != (4, times.size):
        raise ParameterError(f"identify: inputs of shape {inputs.shape}, expected [4, {times.size}] "
                             "(u_delta, u_egr, u_vgt, n_e)")
    if isinstance(names, str):
        names = (names,)
    known = set(EngineParams.__dataclass_fields__)
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ParameterError(f"identify: unknown model parameter(s) {bad or names}")
    if any(not isinstance(getattr(p, n), float) or getattr(p, n) <= 0 for n in names):
        raise ParameterError("identify: the identified parameters must be positive (log-parametrised)")
    return times, measured[:GAS], inputs, tuple(names)


def identify_engine_parameters(times, measured, inputs, names=("A_egrmax",), noise: float = 0.01, steps: int = 50,
                               seed: int = 0, params: EngineParams = DEFAULT_PARAMS, init: dict | None = None,
                               method: str = "collocation", refine: int = 1, eps: float = 1e-5,
                               steady_start: bool = True, log=None) -> Estimates:
    """Estimate the model parameters ``names`` from ``measured`` states (``[5, n]`` or ``[8, n]``:
    p_im, p_em, X_Oim, X_Oem, omega_t first; only these five are used) at ``times`` (``[n]``),
    under the actuator ``inputs`` (``[4, n]`` on the same times, piecewise linear in between).

    ``noise``: the relative standard deviation of the measurement noise (sigma_j = noise x RMS of
    channel j), which weights the channels. ``init``: starting values (default: those of
    ``params``, the published ones). ``steps``: Levenberg-Marquardt iterations at most
    (collocation) or function evaluations (shooting). ``seed``: unused by the deterministic
    methods (kept for a stochastic variant). ``steady_start``: the record starts in equilibrium
    (as the ``engine`` problem's trajectories do): the collocation fit adds ``f(Z_0) = 0`` as a
    constraint (the shooting fit always starts from the steady state). See the module docstring.
    Returns :class:`Estimates` (``name -> estimate`` with diagnostics).
    """
    times, measured, inputs, names = _check(times, measured, inputs, names, params)
    if not (isinstance(noise, (int, float)) and noise > 0):
        raise ParameterError(f"identify: noise must be > 0 (a relative standard deviation), got {noise!r}")
    for key, value in (("steps", steps), ("refine", refine)):
        if not is_int(value):
            raise ParameterError(f"identify: {key} must be a positive int, got {value!r}")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ParameterError(f"identify: eps must be > 0, got {eps!r}")
    if method not in ("collocation", "shooting"):
        raise ParameterError(f"identify: method must be 'collocation' or 'shooting', got {method!r}")
    init = dict(init or {})
    theta0 = np.array([float(init.get(n, getattr(params, n))) for n in names])
    sigma = noise * np.sqrt(np.mean(measured**2, axis=1))  # [5]
    tic = time.perf_counter()
    if method == "collocation":
        q, std, iterations, chi2 = _collocation(times, measured, inputs, names, params, theta0, sigma, steps, refine,
                                                eps, steady_start, log)
    else:
        q, std, iterations, chi2 = _shooting(times, measured, inputs, names, params, theta0, sigma, steps)
    out = Estimates({n: float(t) for n, t in zip(names, theta0 * np.exp(q))})
    out.std = {n: float(out[n] * s) for n, s in zip(names, std)}  # d theta = theta dq
    out.seconds = time.perf_counter() - tic
    out.iterations = iterations
    out.method = method
    out.misfit = chi2
    return out


# ----------------------------------------------------------------- collocation
def _collocation(times, measured, inputs, names, p, theta0, sigma, steps, refine, eps, steady_start, log):
    import scipy.sparse as sp
    import torch
    from scipy.sparse.linalg import splu

    n, P = times.size, len(names)
    fine = np.concatenate([np.linspace(a, b, refine + 1)[:-1] for a, b in zip(times[:-1], times[1:])] + [times[-1:]])
    M = fine.size
    data_at = np.arange(n) * refine  # fine index of each measurement
    h = np.diff(fine)  # [M - 1]
    src = Inputs(times, inputs, p)
    acts = actuator_states(src, fine, p)  # [3, M]
    u = np.array([src.delayed(t) for t in fine]).T  # [4, M]
    S = STATE_SCALE[:GAS]
    with torch.no_grad():
        u_t = [torch.as_tensor(r, dtype=torch.float64) for r in u]
        act_t = [torch.as_tensor(r, dtype=torch.float64) for r in acts]

    def evaluate(z, q, jac: bool):
        """F [5, M] (and dF/dZ [5, 5, M], dF/dtheta [5, P, M]) at states z [5, M], q [P]."""
        Z = torch.as_tensor(z, dtype=torch.float64).requires_grad_(jac)
        theta = torch.as_tensor(theta0 * np.exp(q), dtype=torch.float64)
        T = theta[:, None].expand(P, M).clone().requires_grad_(jac)
        pp = p.with_values(**{nm: T[i] for i, nm in enumerate(names)})
        x = [Z[i] for i in range(GAS)] + act_t
        F = torch.stack(list(rhs(x, u_t, pp, TORCH)[:GAS]))
        if not jac:
            return F.detach().numpy(), None, None
        dZ, dT = np.empty((GAS, GAS, M)), np.empty((GAS, P, M))
        for j in range(GAS):
            gz, gt = torch.autograd.grad(F[j].sum(), (Z, T), retain_graph=j < GAS - 1)
            dZ[j], dT[j] = gz.numpy(), gt.numpy()
        return F.detach().numpy(), dZ, dT * (theta0 * np.exp(q))[None, :, None]  # d/dq = theta d/dtheta

    w_phys = 1.0 / (S[:, None] * eps)  # [5, 1]

    start_rows = GAS if steady_start else 0

    def residual(z, F):
        data = (z[:, data_at] - measured) / sigma[:, None]  # [5, n]
        phys = (np.diff(z, axis=1) - 0.5 * h * (F[:, 1:] + F[:, :-1])) * w_phys  # [5, M - 1]
        start = h[0] * F[:, 0] * w_phys[:, 0]  # equilibrium at t_0: f(Z_0) = 0
        return np.concatenate([data.ravel(), phys.ravel(), start[:start_rows]])

    # the Jacobian's structure: variables (Z [5, M] flattened j-major, then q [P]); rows: data [5, n], phys [5, M-1]
    nz = GAS * M

    def jacobian(dZ, dT):
        rows, cols, vals = [], [], []
        # data rows
        r = np.arange(GAS * n)
        j_idx = r // n
        rows.append(r)
        cols.append(j_idx * M + data_at[r % n])
        vals.append(1.0 / sigma[j_idx])
        base = GAS * n
        k = np.arange(M - 1)
        for j in range(GAS):
            row = base + j * (M - 1) + k
            for i in range(GAS):
                a = -0.5 * h * dZ[j, i, :-1]
                b = -0.5 * h * dZ[j, i, 1:]
                if i == j:
                    a, b = a - 1.0, b + 1.0
                rows += [row, row]
                cols += [i * M + k, i * M + k + 1]
                vals += [a * w_phys[j, 0], b * w_phys[j, 0]]
            for pi in range(P):
                rows.append(row)
                cols.append(np.full(M - 1, nz + pi))
                vals.append(-0.5 * h * (dT[j, pi, :-1] + dT[j, pi, 1:]) * w_phys[j, 0])
        base += GAS * (M - 1)
        for j in range(start_rows):
            rows.append(np.full(GAS + P, base + j))
            cols.append(np.concatenate([np.arange(GAS) * M, nz + np.arange(P)]))
            vals.append(h[0] * w_phys[j, 0] * np.concatenate([dZ[j, :, 0], dT[j, :, 0]]))
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(GAS * n + GAS * (M - 1) + start_rows, nz + P))

    # start: the measurements interpolated onto the collocation grid, the parameters at theta0
    z = np.stack([np.interp(fine, times, m) for m in measured])
    q = np.zeros(P)
    F, dZ, dT = evaluate(z, q, True)
    r = residual(z, F)
    cost = float(r @ r)
    mu, iterations = 1e-3, 0
    for iterations in range(1, steps + 1):
        J = jacobian(dZ, dT)
        A = (J.T @ J).tocsc()
        g = J.T @ r
        diag = A.diagonal()
        improved = False
        for _ in range(10):
            step = -splu((A + sp.diags(mu * diag)).tocsc()).solve(g)
            z_new, q_new = z + step[:nz].reshape(GAS, M), q + step[nz:]
            F_new, _, _ = evaluate(z_new, q_new, False)
            r_new = residual(z_new, F_new)
            cost_new = float(r_new @ r_new)
            if np.isfinite(cost_new) and cost_new < cost:
                improved = True
                break
            mu *= 10.0
        if not improved:
            break
        change = float(np.max(np.abs(q_new - q))) if P else 0.0
        z, q, r = z_new, q_new, r_new
        rel = (cost - cost_new) / cost
        cost = cost_new
        mu = max(mu / 10.0, 1e-12)
        F, dZ, dT = evaluate(z, q, True)
        if log:
            log(f"iteration {iterations}: cost {cost:.6g}, theta {theta0 * np.exp(q)}")
        if change < 1e-9 and rel < 1e-10:
            break
    # Gauss-Newton covariance of q: the q-block of (J^T J)^-1
    J = jacobian(dZ, dT)
    A = (J.T @ J).tocsc()
    lu = splu(A)
    unit = np.zeros(nz + P)
    cov = []
    for i in range(P):
        unit[:] = 0.0
        unit[nz + i] = 1.0
        cov.append(lu.solve(unit)[nz:])
    cov = np.stack(cov)
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    data = r[: GAS * n]
    return q, std, iterations, float(data @ data) / data.size


# ----------------------------------------------------------------- shooting
def _shooting(times, measured, inputs, names, p, theta0, sigma, steps):
    from scipy.optimize import least_squares

    src = Inputs(times, inputs, p)
    count = [0]

    def residual(q):
        count[0] += 1
        pp = p.with_values(**{nm: float(t) for nm, t in zip(names, theta0 * np.exp(q))})
        try:
            x0 = steady_state(*src(times[0]), p=pp)
            y = simulate(src, times, pp, x0=x0, rtol=1e-9)[:GAS]
        except RuntimeError:
            return np.full(measured.size, 1e3)
        return ((y - measured) / sigma[:, None]).ravel()

    sol = least_squares(residual, np.zeros(len(names)), method="trf", diff_step=1e-5, max_nfev=steps, x_scale=0.1)
    J = sol.jac
    try:
        std = np.sqrt(np.clip(np.diag(np.linalg.inv(J.T @ J)), 0.0, None))
    except np.linalg.LinAlgError:
        std = np.full(len(names), math.inf)
    return sol.x, std, count[0], float(sol.fun @ sol.fun) / sol.fun.size


__all__ = ["Estimates", "actuator_states", "identify_engine_parameters"]
