"""Data assimilation: a forecast corrected by sparse, noisy observations as they arrive.

The state ``u_k`` of a time-dependent problem is unknown (its initial state too); every step brings
observations ``y_k = H u_k + noise`` at ``K`` sensor nodes. Three estimators, at equal observations:

* **open loop**: the forecast alone, ``u_{k+1} = G(u_k)`` from the initial guess;
* **learned observer** (the recursive form of Singh, Borsoi, Erdogmus & Imbiriba 2024, "Learning
  semilinear neural operators: a unified recursive framework for prediction and data
  assimilation", ICLR): ``u_{k+1} = G(u_k) + C_theta(G(u_k), y_{k+1} - H G(u_k))``, the predictor
  ``G`` a trained autoregressive operator (frozen) and the correction ``C_theta`` an operator of the
  forecast and of the innovation (spread from its sensor nodes to the whole grid, :func:`spread`),
  trained by unrolling the whole assimilation window on training trajectories with simulated
  observations (:func:`train_observer`);
* **ensemble Kalman filter** (stochastic EnKF with perturbed observations, Evensen 2009, "Data
  Assimilation: The Ensemble Kalman Filter", Springer, ch. 9; Burgers, Evensen & van Leeuwen 1998
  for the perturbed observations): an ensemble drawn from the prior, each member forecast by the
  numerical solver, the analysis ``u^a = u^f + P^f H^T (H P^f H^T + R)^-1 (y + eps - H u^f)`` with
  the ensemble covariance ``P^f`` and multiplicative inflation (:func:`enkf`). It is computed in
  anomaly form: ``P^f H^T = A^T (H A) / (M - 1)`` and ``H P^f H^T = (H A)^T (H A) / (M - 1)`` from the
  ensemble anomalies ``A [M, D]``, so only ``[D, K]`` and ``[K, K]`` matrices are ever formed, never
  the ``D x D`` covariance (``D = 4096`` for one 64 x 64 field). Optional covariance localisation
  (Gaspari & Cohn 1999, QJRMS 125, eq. 4.10, the fifth-order compactly supported correlation; applied
  to ``P^f H^T`` and ``H P^f H^T`` as in Houtekamer & Mitchell 2001, MWR 129) damps the spurious
  long-range correlations of a small ensemble.

Grids and sensors
-----------------
States are ``[B, C, *grid]`` on a periodic grid of any dimension (``[B, C, n]`` in 1D, ``[B, C, n0,
n1]`` in 2D); the grid is given as ``n`` (1D) or a shape tuple. ``sensors`` are either **flat node
indices** ``[K]`` into the row-major flattened grid (in 1D: plain node indices) or **node
coordinates** ``[K, d]`` (one row per sensor, column ``j`` in ``[0, grid[j])``); :func:`check_sensors`
checks them and returns the flat indices, whose order is the observations' column order. Only
channel 0 is observed.

The innovation ``y - H u`` lives on the sensors; the observer sees it spread to the grid
(:func:`spread`), by one of

* ``"linear"``: periodic piecewise-linear interpolation along each axis, for sensors on a tensor-
  product lattice (every combination of per-axis node sets, e.g. a regular 8 x 8 lattice; any sensor
  set in 1D): periodic multilinear interpolation, exact at the sensors and for fields that are
  multilinear between them (in 1D it is :func:`interpolate`, as before);
* ``"kernel"``: normalised convolution (Knutsson & Westin 1993, "Normalized and differential
  convolution", CVPR; Shepard's weighted average with Gaussian weights), for any sensor set:
  ``f(x) = sum_k g(x - s_k) v_k / sum_k g(x - s_k)`` with a periodic Gaussian ``g`` of width
  ``width`` grid spacings (default half the mean sensor spacing ``(N / K)^(1/d)``); it reproduces a
  constant exactly and smooths, so it is not exact at the sensors.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..errors import ParameterError

SPREADS = ("auto", "linear", "kernel")


def grid_shape(grid) -> tuple[int, ...]:
    """``n`` (1D) or a shape tuple -> the grid's shape as a tuple of positive ints."""
    shape = (grid,) if isinstance(grid, (int, np.integer)) else tuple(int(s) for s in grid)
    if not shape or any(s < 1 for s in shape):
        raise ParameterError(f"grid must be a positive int or a shape of positive ints, got {grid!r}")
    return shape


def check_sensors(sensors, n) -> torch.Tensor:
    """Sensors as flat node indices ``[K]`` (their order is the observations' column order), checked.

    ``n``: the grid (an int in 1D, else its shape). ``sensors``: flat indices ``[K]`` in
    ``[0, prod(grid))`` or node coordinates ``[K, d]``; distinct, at least one."""
    shape = grid_shape(n)
    size = math.prod(shape)
    raw = torch.as_tensor(np.asarray(sensors))
    shown = np.asarray(sensors).reshape(-1).tolist()[:8]
    if raw.is_floating_point():
        if not torch.equal(raw, raw.round()):
            raise ParameterError(f"sensors must be integer node indices, got {shown}")
    elif raw.dtype == torch.bool or raw.is_complex():
        raise ParameterError(f"sensors must be integer node indices, got {shown}")
    raw = raw.to(torch.long)
    if raw.ndim == 2 and len(shape) > 1 or raw.ndim == 2 and raw.shape[1] == 1:
        if raw.shape[1] != len(shape) or len(raw) == 0:
            raise ParameterError(f"sensors as coordinates must be [K, {len(shape)}] for the grid {list(shape)}, "
                                 f"got {list(raw.shape)}")
        high = torch.tensor(shape)
        if raw.min() < 0 or bool((raw >= high).any()):
            bad = raw[((raw < 0) | (raw >= high)).any(1)][0].tolist()
            raise ParameterError(f"sensors must lie on the grid {list(shape)} (coordinate j in [0, grid[j])), "
                                 f"got {bad}")
        idx = torch.zeros(len(raw), dtype=torch.long)
        for j, s in enumerate(shape):
            idx = idx * s + raw[:, j]
    else:
        idx = raw
    if idx.ndim != 1 or len(idx) == 0 or idx.min() < 0 or idx.max() >= size or len(set(idx.tolist())) != len(idx):
        where = f"[0, {size})" if len(shape) == 1 else f"[0, {size}) (flat indices on the grid {list(shape)})"
        raise ParameterError(f"sensors must be distinct node indices in {where}, got {shown}")
    return idx


def sensor_coordinates(sensors, n) -> torch.Tensor:
    """The sensors' node coordinates ``[K, d]`` (checked as :func:`check_sensors`)."""
    shape = grid_shape(n)
    idx = check_sensors(sensors, shape)
    out = []
    for s in reversed(shape):
        out.append(idx % s)
        idx = idx // s
    return torch.stack(out[::-1], 1)


def lattice_sensors(n, counts, offset=0) -> torch.Tensor:
    """Flat indices of a regular periodic lattice of ``prod(counts)`` sensors on the grid ``n``: along
    axis ``j``, nodes ``offset + i * grid[j] / counts[j]`` (rounded down), ``i < counts[j]``; row-major."""
    shape = grid_shape(n)
    counts = (counts,) * len(shape) if isinstance(counts, (int, np.integer)) else tuple(int(c) for c in counts)
    if len(counts) != len(shape) or any(not 1 <= c <= s for c, s in zip(counts, shape)):
        raise ParameterError(f"lattice counts must be one int in [1, grid[j]] per axis of {list(shape)}, got {counts}")
    axes = [(int(offset) + (torch.arange(c) * s) // c) % s for c, s in zip(counts, shape)]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return check_sensors(torch.stack([m.reshape(-1) for m in mesh], 1), shape)


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


def lattice_axes(sensors, n) -> list | None:
    """The per-axis sorted node sets whose tensor product is the sensor set, or None if the sensors do
    not form such a lattice (in 1D every sensor set does)."""
    coords = sensor_coordinates(sensors, n)
    axes = [torch.unique(coords[:, j]) for j in range(coords.shape[1])]
    return axes if math.prod(len(a) for a in axes) == len(coords) else None


def interpolate_lattice(values: torch.Tensor, sensors, n) -> torch.Tensor:
    """Values ``[B, K]`` in the order of ``sensors`` (a tensor-product lattice, :func:`lattice_axes`) ->
    the periodic multilinear interpolant ``[B, *grid]``: :func:`interpolate` along each axis in turn."""
    shape = grid_shape(n)
    axes = lattice_axes(sensors, shape)
    if axes is None:
        raise ParameterError("sensors do not form a tensor-product lattice: use the 'kernel' spread")
    coords = sensor_coordinates(sensors, shape)
    b = values.shape[0]
    cube = values.new_zeros((b, *[len(a) for a in axes]))
    pos = tuple(torch.searchsorted(a, coords[:, j].contiguous()) for j, a in enumerate(axes))
    cube[(slice(None), *pos)] = values
    for j, (a, s) in enumerate(zip(axes, shape)):
        moved = cube.movedim(j + 1, -1)
        flat = interpolate(moved.reshape(-1, len(a)), a, s)
        cube = flat.reshape(*moved.shape[:-1], s).movedim(-1, j + 1)
    return cube


def grid_nodes(shape) -> torch.Tensor:
    """The grid's nodes in grid spacings, ``[N, d]`` (float64, row-major order)."""
    mesh = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], 1)


def periodic_d2(p: torch.Tensor, q: torch.Tensor, shape) -> torch.Tensor:
    """Squared periodic distances ``[len(p), len(q)]`` between points ``[., d]`` in grid spacings on the
    periodic grid ``shape``."""
    d2 = torch.zeros(len(p), len(q), dtype=torch.float64)
    for j, s in enumerate(shape):
        diff = (p[:, None, j] - q[None, :, j]).abs()
        d2 += torch.minimum(diff, s - diff).square()
    return d2


def kernel_weights(sensors, n, width: float | None = None, dtype=torch.float32) -> torch.Tensor:
    """The normalised-convolution weights ``[K, N]`` (module docstring): column ``x`` is
    ``g(x - s_k) / sum_k g(x - s_k)``, periodic Gaussian ``g`` of ``width`` grid spacings."""
    shape = grid_shape(n)
    coords = sensor_coordinates(sensors, shape).to(torch.float64)  # [K, d]
    if width is None:
        width = 0.5 * (math.prod(shape) / len(coords)) ** (1.0 / len(shape))
    if not width > 0:
        raise ParameterError(f"kernel width must be > 0 grid spacings, got {width!r}")
    d2 = periodic_d2(coords, grid_nodes(shape), shape)  # [K, N]
    logw = -(d2 - d2.min(0, keepdim=True).values) / (2.0 * width**2)  # the nearest sensor weighs 1: no underflow
    w = logw.exp()
    return (w / w.sum(0, keepdim=True)).to(dtype)


def spread(values: torch.Tensor, sensors, n, method: str = "auto", width: float | None = None) -> torch.Tensor:
    """Values at the sensors ``[B, K]`` (in the order of ``sensors``) -> a field ``[B, *grid]``:
    ``method`` ``"linear"`` (:func:`interpolate_lattice`), ``"kernel"`` (:func:`kernel_weights`) or
    ``"auto"`` (linear on a tensor-product lattice, else kernel)."""
    shape = grid_shape(n)
    method = resolve_spread(method, sensors, shape)
    if method == "linear":
        return interpolate_lattice(values, sensors, shape)
    return (values @ kernel_weights(sensors, shape, width, values.dtype)).reshape(values.shape[0], *shape)


def resolve_spread(method: str, sensors, n) -> str:
    if method not in SPREADS:
        raise ParameterError(f"spread must be one of {list(SPREADS)}, got {method!r}")
    if method == "auto":
        return "linear" if lattice_axes(sensors, n) is not None else "kernel"
    if method == "linear" and lattice_axes(sensors, n) is None:
        raise ParameterError("spread 'linear' needs sensors on a tensor-product lattice: use 'kernel' or 'auto'")
    return method


class Observer(torch.nn.Module):
    """``C_theta(forecast, innovation)``: an operator ``net`` (any oplab grid model with ``C + 2`` input
    channels and ``C`` outputs) on ``[forecast, spread innovation, sensor mask]``.

    ``n``: the grid (int in 1D, else its shape); ``sensors`` as :func:`check_sensors`; ``spread`` and
    ``width`` as :func:`spread` (in 1D, ``"auto"`` is the periodic linear interpolation)."""

    def __init__(self, net: torch.nn.Module, sensors, n, scale: float = 1.0, spread: str = "auto",
                 width: float | None = None):
        super().__init__()
        self.net = net
        self.shape = grid_shape(n)
        self.register_buffer("sensors", check_sensors(sensors, self.shape))  # the observations' column order
        self.register_buffer("order", self.sensors.argsort())  # columns sorted along the periodic grid (1D)
        self.spread = resolve_spread(spread, self.sensors, self.shape)
        mask = torch.zeros(math.prod(self.shape))
        mask[self.sensors] = 1.0
        self.register_buffer("mask", mask.reshape(self.shape))
        weights = None  # the spread as a matrix [K, N] (in 1D the linear spread runs :func:`interpolate`)
        if self.spread == "kernel":
            weights = kernel_weights(self.sensors, self.shape, width)
        elif len(self.shape) > 1:  # the interpolant is linear in the values: interpolate the unit vectors once
            weights = interpolate_lattice(torch.eye(len(self.sensors)), self.sensors, self.shape).flatten(1)
        self.register_buffer("weights", weights)
        self.scale = float(scale)  # a typical state magnitude: the net sees O(1) channels
        self.coords = tuple(torch.linspace(0, 1, s + 1)[:-1] for s in self.shape)

    def field(self, innovation: torch.Tensor) -> torch.Tensor:
        """The innovation ``[B, K]`` spread to the grid, ``[B, 1, *grid]``."""
        b = innovation.shape[0]
        if self.weights is None:
            return interpolate(innovation[:, self.order], self.sensors[self.order], self.shape[0]).unsqueeze(1)
        return (innovation @ self.weights.to(innovation.dtype)).reshape(b, 1, *self.shape)

    def forward(self, forecast: torch.Tensor, innovation: torch.Tensor) -> torch.Tensor:
        b = forecast.shape[0]
        field = self.field(innovation)
        x = torch.cat([forecast / self.scale, field / self.scale, self.mask.expand(b, 1, *self.shape)], dim=1)
        return self.scale * self.net(x, self.coords)


def observe(u: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``H u``: channel 0 of ``u [B, C, *grid]`` at the flat sensor indices ``idx``, ``[B, K]``."""
    return u[:, 0].reshape(u.shape[0], -1)[:, idx]


def assimilate(step, u0: torch.Tensor, observations: torch.Tensor, sensors, observer=None) -> torch.Tensor:
    """Run the filter: ``u0 [B, C, *grid]`` the initial guess, ``observations [B, T, K]`` of channel 0
    at ``sensors`` at steps ``1..T``; ``step`` the forecast ``[B, C, *grid] -> [B, C, *grid]``. Without
    ``observer`` this is the open-loop forecast. Returns the estimates ``[B, T, C, *grid]``."""
    idx = check_sensors(sensors, u0.shape[2:])
    if observations.ndim != 3 or observations.shape[2] != len(idx) or observations.shape[0] != u0.shape[0]:
        raise ParameterError(f"observations must be [B={u0.shape[0]}, T, K={len(idx)}], got {list(observations.shape)}")
    u, out = u0, []
    for k in range(observations.shape[1]):
        f = step(u)
        if observer is not None:
            f = f + observer(f, observations[:, k] - observe(f, idx))
        out.append(f)
        u = f
    return torch.stack(out, 1)


def simulate_observations(states: torch.Tensor, sensors, noise: float, generator=None) -> torch.Tensor:
    """``states [B, T, C, *grid]`` -> noisy observations ``[B, T, K]`` of channel 0 (Gaussian, std ``noise``)."""
    idx = check_sensors(sensors, states.shape[3:])
    clean = states[:, :, 0].reshape(*states.shape[:2], -1)[:, :, idx]
    return clean + noise * torch.randn(clean.shape, generator=generator, dtype=clean.dtype)


def train_observer(step, observer: Observer, trajectories: torch.Tensor, initial: torch.Tensor, noise: float,
                   epochs: int = 30, batch_size: int = 16, lr: float = 1e-3, seed: int = 0, log=None,
                   budget_seconds: float | None = None) -> list:
    """Train ``observer`` on ``trajectories [N, T + 1, C, *grid]`` (state 0 is the true initial state,
    never shown): from the initial guess ``initial [C, *grid]``, assimilate fresh noisy observations of
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


def gaspari_cohn(r: np.ndarray) -> np.ndarray:
    """Gaspari & Cohn (1999, QJRMS 125, eq. 4.10) compactly supported correlation of ``r = distance /
    c``: 1 at 0, 0 from ``r = 2`` on, a fifth-order piecewise rational close to a Gaussian."""
    r = np.abs(np.asarray(r, dtype=np.float64))
    out = np.zeros_like(r)
    a = r <= 1
    x = r[a]
    out[a] = -0.25 * x**5 + 0.5 * x**4 + 0.625 * x**3 - 5.0 / 3.0 * x**2 + 1.0
    b = (r > 1) & (r < 2)
    x = r[b]
    out[b] = x**5 / 12.0 - 0.5 * x**4 + 0.625 * x**3 + 5.0 / 3.0 * x**2 - 5.0 * x + 4.0 - 2.0 / (3.0 * x)
    return out


def localization_weights(sensors, n, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaspari-Cohn weights ``[N, K]`` (nodes to sensors) and ``[K, K]`` (sensors to sensors) at periodic
    distances in grid spacings, half-width ``radius`` (zero from ``2 radius`` on)."""
    if not radius > 0:
        raise ParameterError(f"enkf: localization must be > 0 grid spacings (or None), got {radius!r}")
    shape = grid_shape(n)
    coords = sensor_coordinates(sensors, shape).to(torch.float64)
    nodes = grid_nodes(shape)

    def dist(p, q):
        return periodic_d2(p, q, shape).sqrt().numpy()

    return gaspari_cohn(dist(nodes, coords) / radius), gaspari_cohn(dist(coords, coords) / radius)


def enkf(forecast, ensemble: np.ndarray, observations: np.ndarray, sensors, noise: float, inflation: float = 1.0,
         seed: int = 0, localization: float | None = None) -> dict:
    """Stochastic EnKF in anomaly form (module docstring). ``forecast``: ``[M, C, *grid] -> [M, C, *grid]``
    (numpy, the numerical solver over one observation interval; a trained torch predictor through
    :func:`torch_forecast`); ``ensemble [M, C, *grid]``: draws from the prior; ``observations [T, K]``
    of channel 0 at ``sensors`` (:func:`check_sensors`); ``localization``: Gaspari-Cohn half-width in
    grid spacings (None: none). Returns ``mean [T, C, *grid]``, ``spread [T]`` (the ensemble's
    root-mean-square standard deviation) and ``seconds``."""
    if not noise > 0:
        raise ParameterError(f"enkf: noise must be > 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    x = np.array(ensemble, dtype=np.float64)
    if x.ndim < 3 or len(x) < 2:
        raise ParameterError(f"enkf: ensemble must be [M >= 2, C, *grid], got {list(x.shape)}")
    idx = check_sensors(sensors, x.shape[2:]).numpy()
    m, k = x.shape[0], len(idx)
    observations = np.asarray(observations)
    if observations.ndim != 2 or observations.shape[1] != k:
        raise ParameterError(f"enkf: observations must be [T, K={k}], got {list(observations.shape)}")
    rho_xy = rho_yy = None
    if localization is not None:
        rho_xy, rho_yy = localization_weights(idx, x.shape[2:], localization)
        rho_xy = np.tile(rho_xy, (x.shape[1], 1))  # every channel localised by its node's distance
    means, spreads = [], []
    tic = time.perf_counter()
    for y in observations:
        x = forecast(x)
        mean = x.mean(0, keepdims=True)
        x = mean + inflation * (x - mean)
        a = (x - x.mean(0, keepdims=True)).reshape(m, -1)  # anomalies [M, D]
        hx = x[:, 0].reshape(m, -1)[:, idx]  # [M, K]
        ha = hx - hx.mean(0, keepdims=True)
        pht = a.T @ ha / (m - 1)  # [D, K]
        hpht = ha.T @ ha / (m - 1)  # [K, K]
        if rho_xy is not None:
            pht, hpht = pht * rho_xy, hpht * rho_yy
        s = hpht + noise**2 * np.eye(k)
        perturbed = y[None] + noise * rng.standard_normal((m, k))
        x = x + (np.linalg.solve(s, (perturbed - hx).T).T @ pht.T).reshape(x.shape)
        means.append(x.mean(0))
        spreads.append(float(np.sqrt(x.var(0, ddof=1).mean())))
    return {"mean": np.stack(means), "spread": spreads, "seconds": time.perf_counter() - tic}


def torch_forecast(step, dtype=torch.float32):
    """A torch forecast (a trained predictor ``[M, C, *grid] -> [M, C, *grid]``, e.g. an autoregressive
    operator's step) as the numpy forecast :func:`enkf` takes: members cast to ``dtype``, stepped
    without autograd, returned as float64 arrays. This is the EnKF over the surrogate: the same
    filter with the learned model in place of the solver."""

    def forecast(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return step(torch.as_tensor(x, dtype=dtype)).double().numpy()

    return forecast


__all__ = ["Observer", "assimilate", "check_sensors", "enkf", "gaspari_cohn", "grid_shape", "interpolate",
           "interpolate_lattice", "kernel_weights", "lattice_axes", "lattice_sensors", "localization_weights",
           "observe", "sensor_coordinates", "simulate_observations", "spread", "torch_forecast", "train_observer"]
