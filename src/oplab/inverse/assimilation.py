"""Data assimilation: a forecast corrected by sparse, noisy observations as they arrive.

The state ``u_k`` of a time-dependent problem is unknown (its initial state too); every step brings
observations ``y_k = H u_k + noise`` at ``K`` sensor nodes. Three estimators, at equal observations:

* **open loop**: the forecast alone, ``u_{k+1} = G(u_k)`` from the initial guess;
* **learned observer** (the recursive form of Singh, Borsoi, Erdogmus & Imbiriba 2024, "Learning
  semilinear neural operators: a unified recursive framework for prediction and data
  assimilation", ICLR): ``u_{k+1} = G(u_k) + C_theta(G(u_k), y_{k+1} - H G(u_k))``, the predictor
  ``G`` a trained autoregressive operator (frozen) and the correction ``C_theta`` an operator of the
  forecast and of the innovation (scattered to its sensor nodes and linearly interpolated between
  them, periodically), trained by unrolling the whole assimilation window on training trajectories
  with simulated observations (:func:`train_observer`);
* **ensemble Kalman filter** (stochastic EnKF with perturbed observations, Evensen 2009, "Data
  Assimilation: The Ensemble Kalman Filter", Springer, ch. 9; Burgers, Evensen & van Leeuwen 1998
  for the perturbed observations): an ensemble drawn from the prior, each member forecast by the
  numerical solver, the analysis ``u^a = u^f + P^f H^T (H P^f H^T + R)^-1 (y + eps - H u^f)`` with
  the ensemble covariance ``P^f`` and multiplicative inflation (:func:`enkf`).

States are ``[B, C, n]`` on a 1D periodic grid of ``n`` nodes; ``sensors`` are node indices.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..errors import ParameterError


def check_sensors(sensors, n: int) -> torch.Tensor:
    """Sensor node indices as given (their order is the observations' column order), checked."""
    idx = torch.as_tensor(sensors, dtype=torch.long)
    if idx.ndim != 1 or len(idx) == 0 or idx.min() < 0 or idx.max() >= n or len(set(idx.tolist())) != len(idx):
        raise ParameterError(f"sensors must be distinct node indices in [0, {n}), got {list(np.atleast_1d(sensors))[:8]}")
    return idx


def interpolate(values: torch.Tensor, sensors: torch.Tensor, n: int) -> torch.Tensor:
    """Values at sorted sensor nodes ``[B, K]`` -> a periodic piecewise-linear field ``[B, n]``."""
    k = len(sensors)
    nodes = torch.arange(n, dtype=values.dtype)
    s = sensors.to(values.dtype)
    right = torch.searchsorted(s, nodes, right=False) % k  # the first sensor at or after each node
    left = (right - 1) % k
    gap = (s[right] - s[left]) % n
    gap = torch.where(gap == 0, torch.full_like(gap, float(n)), gap)  # one sensor: the whole circle
    w = ((nodes - s[left]) % n) / gap
    return values[:, left] * (1 - w) + values[:, right] * w


class Observer(torch.nn.Module):
    """``C_theta(forecast, innovation)``: an operator ``net`` (any oplab grid model with 3 input
    channels and ``C`` outputs) on ``[forecast, interpolated innovation, sensor mask]``."""

    def __init__(self, net: torch.nn.Module, sensors, n: int, scale: float = 1.0):
        super().__init__()
        self.net, self.n = net, n
        self.register_buffer("sensors", check_sensors(sensors, n))  # the observations' column order
        self.register_buffer("order", self.sensors.argsort())  # columns sorted along the periodic grid
        mask = torch.zeros(n)
        mask[self.sensors] = 1.0
        self.register_buffer("mask", mask)
        self.scale = float(scale)  # a typical state magnitude: the net sees O(1) channels
        self.coords = (torch.linspace(0, 1, n + 1)[:-1],)

    def forward(self, forecast: torch.Tensor, innovation: torch.Tensor) -> torch.Tensor:
        b = forecast.shape[0]
        field = interpolate(innovation[:, self.order], self.sensors[self.order], self.n).unsqueeze(1)
        x = torch.cat([forecast / self.scale, field / self.scale, self.mask.expand(b, 1, -1)], dim=1)
        return self.scale * self.net(x, self.coords)


def assimilate(step, u0: torch.Tensor, observations: torch.Tensor, sensors, observer=None) -> torch.Tensor:
    """Run the filter: ``u0 [B, C, n]`` the initial guess, ``observations [B, T, K]`` of channel 0 at
    ``sensors`` at steps ``1..T``; ``step`` the forecast ``[B, C, n] -> [B, C, n]``. Without
    ``observer`` this is the open-loop forecast. Returns the estimates ``[B, T, C, n]``."""
    idx = check_sensors(sensors, u0.shape[-1])
    u, out = u0, []
    for k in range(observations.shape[1]):
        f = step(u)
        if observer is not None:
            f = f + observer(f, observations[:, k] - f[:, 0, idx])
        out.append(f)
        u = f
    return torch.stack(out, 1)


def simulate_observations(states: torch.Tensor, sensors, noise: float, generator=None) -> torch.Tensor:
    """``states [B, T, C, n]`` -> noisy observations ``[B, T, K]`` of channel 0 (Gaussian, std ``noise``)."""
    idx = torch.as_tensor(sensors, dtype=torch.long)
    clean = states[:, :, 0, idx]
    return clean + noise * torch.randn(clean.shape, generator=generator, dtype=clean.dtype)


def train_observer(step, observer: Observer, trajectories: torch.Tensor, initial: torch.Tensor, noise: float,
                   epochs: int = 30, batch_size: int = 16, lr: float = 1e-3, seed: int = 0, log=None,
                   budget_seconds: float | None = None) -> list:
    """Train ``observer`` on ``trajectories [N, T + 1, C, n]`` (state 0 is the true initial state,
    never shown): from the initial guess ``initial [C, n]``, assimilate fresh noisy observations of
    states ``1..T`` and minimise the squared error of each estimate relative to its state's mean
    square, averaged over the states (so late, decayed states count as much as early ones, as in the
    relative error reported), back-propagated through the whole window (``step`` frozen); Adam with
    a cosine schedule over the epochs. With ``budget_seconds`` the number of epochs is planned from
    the first one's time (at most ``epochs``) and the schedule follows that plan. Returns the loss
    per epoch."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(observer.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    truth = trajectories[:, 1:]
    history = []
    tic = time.perf_counter()
    while len(history) < epochs:
        order = torch.randperm(len(truth), generator=gen)
        total = 0.0
        for start in range(0, len(order), batch_size):
            b = order[start : start + batch_size]
            obs = simulate_observations(truth[b], observer.sensors, noise, gen)
            est = assimilate(step, initial.expand(len(b), *initial.shape), obs, observer.sensors, observer)
            ref = truth[b].square().flatten(2).mean(2).clamp_min(1e-12)  # [B, T]
            loss = ((est - truth[b]).square().flatten(2).mean(2) / ref).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        history.append(total / len(truth))
        if budget_seconds is not None and len(history) == 1:  # plan the epochs the budget buys
            epochs = max(1, min(epochs, int(budget_seconds // max(time.perf_counter() - tic, 1e-9))))
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs, last_epoch=-1)
        sched.step()
        if log:
            log(f"observer epoch {len(history) - 1}: loss {history[-1]:.4g}")
    return history


def enkf(forecast, ensemble: np.ndarray, observations: np.ndarray, sensors, noise: float, inflation: float = 1.0,
         seed: int = 0) -> dict:
    """Stochastic EnKF (module docstring). ``forecast``: ``[M, C, n] -> [M, C, n]`` (numpy, the numerical
    solver over one observation interval; a trained torch predictor through :func:`torch_forecast`);
    ``ensemble [M, C, n]``: draws from the prior;
    ``observations [T, K]`` of channel 0 at ``sensors``. Returns ``mean [T, C, n]``, ``spread [T]``
    (the ensemble's root-mean-square standard deviation) and ``seconds``."""
    if not noise > 0:
        raise ParameterError(f"enkf: noise must be > 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    x = np.array(ensemble, dtype=np.float64)
    idx = check_sensors(sensors, x.shape[-1]).numpy()
    m, k = x.shape[0], len(idx)
    means, spreads = [], []
    tic = time.perf_counter()
    for y in observations:
        x = forecast(x)
        mean = x.mean(0, keepdims=True)
        x = mean + inflation * (x - mean)
        a = (x - x.mean(0, keepdims=True)).reshape(m, -1)  # anomalies [M, D]
        hx = x[:, 0, idx]  # [M, K]
        ha = hx - hx.mean(0, keepdims=True)
        pht = a.T @ ha / (m - 1)  # [D, K]
        s = ha.T @ ha / (m - 1) + noise**2 * np.eye(k)  # [K, K]
        perturbed = y[None] + noise * rng.standard_normal((m, k))
        x = x + (np.linalg.solve(s, (perturbed - hx).T).T @ pht.T).reshape(x.shape)
        means.append(x.mean(0))
        spreads.append(float(np.sqrt(x.var(0, ddof=1).mean())))
    return {"mean": np.stack(means), "spread": spreads, "seconds": time.perf_counter() - tic}


def torch_forecast(step, dtype=torch.float32):
    """A torch forecast (a trained predictor ``[M, C, n] -> [M, C, n]``, e.g. an autoregressive
    operator's step) as the numpy forecast :func:`enkf` takes: members cast to ``dtype``, stepped
    without autograd, returned as float64 arrays. This is the EnKF over the surrogate: the same
    filter with the learned model in place of the solver."""

    def forecast(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return step(torch.as_tensor(x, dtype=dtype)).double().numpy()

    return forecast


__all__ = ["Observer", "assimilate", "check_sensors", "enkf", "interpolate", "simulate_observations",
           "torch_forecast", "train_observer"]
