"""The staggered FDTD solver of linear acoustics (oplab.solvers.fdtd) and the room_acoustics problem:
free-field accuracy and second-order convergence in 2D and 3D, the image-source method in a rigid
room, the impedance walls' reflection coefficient, energy conservation, the exact superposition
behind a moving source, and the problem's shapes, determinism and input checks.

Measured (2026-12-01), pulse amplitude 1, sigma = 0.1 m: free field, max error over receivers and
times, 2D 4.4e-3 / 1.2e-3 / 3.1e-4 at h = sigma/5, sigma/10, sigma/20 (orders 1.86, 1.97), 3D
4.5e-3 / 1.3e-3 / 3.1e-4 (orders 1.85, 2.02); rigid room vs first-order image sources 3.9e-3 at
sigma/10 (9.8e-4 at sigma/20), vs all images 3.5e-3 (8.8e-4); reflection coefficient within 4e-4
(relative) of sqrt(1 - alpha) at sigma/20 (exact to 1e-13 at Courant number 1 in 1D); rigid-room
energy constant to 4e-16 (relative). The whole file: about 6 s on one core.
"""

from __future__ import annotations

import numpy as np
import pytest

import oplab
from oplab.errors import ParameterError
from oplab.problems import create
from oplab.solvers.fdtd import (
    WaveFDTD,
    free_field,
    gaussian_pulse_2d,
    gaussian_pulse_3d,
    image_source_pressure,
    image_sources,
    impedance,
    reflection_to_admittance,
)

C = 343.0
SIGMA = 0.1


def _ring(center, radii, dim, n_angles=5):
    """Receivers on circles around ``center`` (in the x-y plane)."""
    pts = []
    for r in radii:
        for a in np.linspace(0.0, 1.2, n_angles):
            p = list(center)
            p[0] += r * np.cos(a)
            p[1] += r * np.sin(a)
            pts.append(p)
    return np.array(pts)


def _order(errors):
    """Pairwise orders of errors on grids halved each time."""
    e = np.asarray(errors)
    return np.log2(e[:-1] / e[1:])


# ------------------------------------------------------------------ analytic references
def test_analytic_pulses_start_as_the_gaussian():
    """The 2D Hankel-transform integral and the 3D spherical formula reproduce ``p0 = exp(-r^2/sigma^2)``
    at ``t = 0``; the 3D formula is smooth through its ``r -> 0`` limit."""
    r = np.linspace(0.0, 0.5, 26)
    p0 = np.exp(-(r**2) / SIGMA**2)
    assert np.max(np.abs(gaussian_pulse_2d(r, 0.0, SIGMA, C) - p0)) < 1e-12
    assert np.max(np.abs(gaussian_pulse_3d(r, 0.0, SIGMA, C) - p0)) < 1e-15
    t = 0.07 / C
    r_small = 0.999e-4  # below the switch to the series at 1e-3 sigma: the series equals the formula
    g = lambda s: np.exp(-(s**2) / SIGMA**2)  # noqa: E731
    formula = ((r_small - C * t) * g(r_small - C * t) + (r_small + C * t) * g(r_small + C * t)) / (2 * r_small)
    assert abs(gaussian_pulse_3d(np.array([r_small]), t, SIGMA, C)[0] - formula) < 1e-12
    # 2D energy radiates outward: at the origin the pressure turns negative (the 2D wake) and stays small
    late = gaussian_pulse_2d(np.array([0.0]), 0.5 / C, SIGMA, C)[0]
    assert -0.05 < late < 0.0


def test_admittance_from_absorption():
    """``R = sqrt(1 - alpha)``, ``Z = rho c (1 + R) / (1 - R)``: alpha = 0.36 -> R = 0.8, Z = 9 rho c."""
    assert reflection_to_admittance(0.0) == 0.0 and impedance(0.0) == np.inf
    assert impedance(0.36, c=343.0, rho=1.2) == pytest.approx(9 * 1.2 * 343.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        reflection_to_admittance(1.0)


# ------------------------------------------------------------------------- free field
def test_free_field_2d_error_and_second_order():
    """FDTD vs the free-field 2D Gaussian pulse (Hankel transform of the radial initial data,
    ``p = int k P0(k) J0(kr) cos(ckt) dk``, ``P0 = (sigma^2/2) exp(-sigma^2 k^2/4)``) at receivers up
    to 0.22 m from the source, ``ct`` up to 0.3 m, in a 1.2 m square: the walls' reflections
    (images >= 0.9 m away) are below 1e-12. Grids h = sigma/5, /10, /20 at a fixed Courant number."""
    L, src = 1.2, [0.6, 0.6]
    rec = _ring(src, [0.0, 0.07, 0.15, 0.22], 2)
    times = np.array([0.1, 0.2, 0.3]) / C
    ref = free_field(rec, times, src, SIGMA, C)
    errors = []
    for n in (5, 10, 20):
        s = WaveFDTD([L, L], SIGMA / n, C)
        errors.append(np.max(np.abs(s.run(s.gaussian(src, SIGMA), times, rec) - ref)))
    order = _order(errors)
    assert errors[1] < 2e-3 and errors[2] < 5e-4, errors  # measured 4.4e-3, 1.2e-3, 3.1e-4
    assert np.all(order > 1.7), (order, errors)  # measured 1.86, 1.97


def test_free_field_3d_error_and_second_order():
    """FDTD vs the spherical Gaussian pulse ``((r - ct) g(r - ct) + (r + ct) g(r + ct)) / (2r)``
    (Pierce, "Acoustics", sec. 4-1). To keep the finest grid cheap the source sits on the corner
    node of a rigid box [0, 0.5]^3: rigid node walls are exact mirror planes of the scheme, so this
    is the free-field run in [-0.5, 0.5]^3 (checked here against the centred run to round-off);
    receivers up to 0.22 m away, ``ct`` up to 0.25 m, so the far walls' images stay >= 5 sigma away."""
    times = np.array([0.05, 0.1, 0.15, 0.2, 0.25]) / C
    rec = _ring([0.02, 0.02, 0.02], [0.0, 0.05, 0.1, 0.15, 0.2], 3)  # angles 0 .. 1.2: inside the octant
    ref = free_field(rec, times, [0.0, 0.0, 0.0], SIGMA, C)
    errors = []
    for n in (5, 10, 20):
        s = WaveFDTD([0.5] * 3, SIGMA / n, C)
        out = s.run(s.gaussian([0.0, 0.0, 0.0], SIGMA), times, rec)
        errors.append(np.max(np.abs(out - ref)))
        if n == 5:  # the mirror symmetry: the same numbers from the full box with the source in its centre
            full = WaveFDTD([1.0] * 3, SIGMA / n, C)
            centred = full.run(full.gaussian([0.5] * 3, SIGMA), times, rec + 0.5)
            assert np.max(np.abs(centred - out)) < 1e-13
    order = _order(errors)
    assert errors[1] < 2e-3 and errors[2] < 5e-4, errors  # measured 4.5e-3, 1.3e-3, 3.1e-4
    assert np.all(order > 1.7), (order, errors)  # measured 1.85, 2.02


# ----------------------------------------------------------------------- image sources
def test_rigid_room_matches_image_sources():
    """A rigid 2 m x 1.6 m room (2D): FDTD vs the image-source method (Allen & Berkley 1979, J. Acoust.
    Soc. Am. 65(4):943), first-order images only, at each receiver until 5 sigma before the first
    second-order image's pulse can arrive; and vs all images later on (0 to 3 m of travel)."""
    L, src = [2.0, 1.6], [0.6, 0.7]
    rec = np.array([[0.9, 0.5], [0.3, 0.4], [1.2, 1.0]])
    images, orders = image_sources(src, L, max_order=2)
    assert sorted(orders.tolist()) == [0] + [1] * 4 + [2] * 8
    s = WaveFDTD(L, SIGMA / 10, C)
    p0 = s.gaussian(src, SIGMA)
    reflected = 0.0
    for r in rec:
        d2 = np.min(np.linalg.norm(images[orders == 2] - r, axis=1))
        times = np.linspace(0.0, (d2 - 5 * SIGMA) / C, 25)
        fd = s.run(p0, times, r[None])
        first = image_source_pressure(r[None], times, src, L, SIGMA, C, max_order=1)
        assert np.max(np.abs(fd - first)) < 5e-3, (r, np.max(np.abs(fd - first)))  # measured <= 3.9e-3
        reflected = max(reflected, np.max(np.abs(first - free_field(r[None], times, src, SIGMA, C))))
    assert reflected > 0.1  # the first reflections did arrive within the windows
    times = np.linspace(0.0, 3.0 / C, 13)
    fd = s.run(p0, times, rec)
    exact = image_source_pressure(rec, times, src, L, SIGMA, C)
    assert np.max(np.abs(fd - exact)) < 6e-3  # measured 3.6e-3 (the pulse has crossed the room once)


# --------------------------------------------------------------------------- impedance
@pytest.mark.parametrize("alpha", [0.0, 0.36, 0.75, 0.96])
def test_normal_incidence_reflection_coefficient(alpha):
    """1D, [0, 4] m, pulse at 2 m, receiver at 3 m: the incident peak (amplitude 1/2, d'Alembert) passes
    at 1/c, the pulse reflected by the wall at 4 m at 3/c with amplitude R/2 and the same sign
    (``R = (Z - rho c) / (Z + rho c) = sqrt(1 - alpha)``, frequency-independent for a real Z)."""
    s = WaveFDTD([4.0], SIGMA / 20, C, alpha=alpha)
    times = np.linspace(0.0, 4.0 / C, 2001)
    p = s.run(s.gaussian([2.0], SIGMA), times, np.array([[3.0]]))[:, 0]
    incident, reflected = p[times < 2.0 / C], p[times > 2.0 / C]
    R = np.sqrt(1.0 - alpha)
    assert incident.max() == pytest.approx(0.5, rel=1e-3)
    assert reflected.max() / incident.max() == pytest.approx(R, rel=0.01, abs=1e-3)  # measured within 3e-4
    assert reflected.min() > -1e-6  # no sign change


def test_energy_conserved_by_rigid_walls_and_lost_through_absorbing_ones():
    """The discrete energy ``sum V p^2/(2 rho c^2) + rho/2 sum V_f v^{n-1/2} v^{n+1/2}`` is constant
    in a rigid room (to round-off, 400 steps, several reflections) and non-increasing with alpha > 0."""
    s = WaveFDTD([1.0, 0.8], 0.02, C)
    p0 = s.gaussian([0.3, 0.4], SIGMA)
    e = s.energies(p0, 400)
    assert np.ptp(e) < 1e-12 * e[0]
    lossy = WaveFDTD([1.0, 0.8], 0.02, C, alpha=0.3).energies(p0, 400)
    assert np.all(np.diff(lossy) <= 1e-14 * lossy[0]) and lossy[-1] < 0.5 * lossy[0]


def test_energy_lost_through_impedance_walls_is_the_wall_power():
    """With impedance walls (different on each wall) the energy drops by exactly
    ``dt sum_wall A p_bar^2 / Z`` per step (``p_bar`` the step's mean pressure, ``A`` each wall node's
    share of the wall: h/2 at a corner in 2D), the discrete form of the power ``int p v.n dA``."""
    s = WaveFDTD([0.6, 0.4], 0.02, C, rho=1.2, alpha=[[0.2, 0.5], [0.0, 0.9]])
    h = s.h
    states = []
    for n, p, v in s.march(60, s.gaussian([0.25, 0.15], SIGMA)):
        states.append((p.copy(), None if v is None else [x.copy() for x in v]))
    energy = [s.energy(states[n][0], states[n - 1][1], states[n][1]) for n in range(1, 60)]
    Z = [[1.2 * C / b if b > 0 else np.inf for b in pair] for pair in s.beta]
    for n in range(1, 58):
        p_bar = 0.5 * (states[n][0] + states[n + 1][0])
        power = 0.0
        for d, walls in enumerate([(p_bar[0, :], p_bar[-1, :]), (p_bar[:, 0], p_bar[:, -1])]):
            for side, wall in enumerate(walls):
                area = np.full(wall.shape, h)
                area[[0, -1]] *= 0.5  # corner nodes
                power += np.sum(area * wall**2) / Z[d][side]
        assert energy[n] - energy[n - 1] == pytest.approx(-s.dt * power, rel=1e-9, abs=1e-14 * energy[0])


# ----------------------------------------------------------------------- moving source
def test_moving_source_is_the_sum_of_shifted_pulses():
    """A source moving along a path, one pulse per FDTD step weighted by a dry signal, equals the sum of
    the time-shifted single-pulse responses (linearity and time invariance), to round-off."""
    p = create("room_acoustics", resolution=5, lx=1.0, ly=1.0, cells_per_metre=25.0, t_end=0.004,
               record_every=0.0005, alpha=0.3, margin=0.2)
    dt = p.solver.dt
    rec = np.array([[0.2, 0.3], [0.8, 0.5], [0.5, 0.95]])
    path_t = np.array([0.0, 12 * dt])
    path_x = np.array([[0.3, 0.3], [0.7, 0.6]])
    weights = np.array([1.0, -0.5])
    times = dt * np.arange(0, 120, 4)
    run = p.moving_source(path_t, path_x, weights, rec, times)
    assert len(run.emit_times) == 13 and np.allclose(run.emit_points[-1], [0.7, 0.6])
    total = np.zeros_like(run.pressure)
    for tm, xm, wm in zip(run.emit_times, run.emit_points, run.emit_weights):
        later = times >= tm - 1e-12
        total[later] += wm * p.impulse_response(xm, rec, times[later] - tm)
    assert np.max(np.abs(run.pressure)) > 0.1
    assert np.max(np.abs(run.pressure - total)) < 1e-13


# ----------------------------------------------------------------------------- problem
def test_problem_shapes_and_determinism():
    p = create("room_acoustics")
    assert p.input_shape() == (1, 2) and p.output_shape() == (1, 40, 21, 21) and p.output_times() is None
    assert [a.name for a in p.output_axes()] == ["t", "x", "y"]
    x, y = p.generate([0, 1, 2], seed=3)
    assert x.shape == (3, 1, 2) and y.shape == (3, 1, 40, 21, 21) and np.all(np.isfinite(y))
    assert np.all((x >= 0.5) & (x <= 1.5))
    x1, y1 = p.generate([1], seed=3)
    np.testing.assert_array_equal(x1[0], x[1])
    np.testing.assert_array_equal(y1[0], y[1])
    x_other, _ = p.generate([1], seed=4)
    assert not np.array_equal(x_other[0], x[1])
    # the grid output is the impulse response at the receiver points
    rec = p.receiver_points()
    direct = p.impulse_response(x[0, 0], rec, p.output_axes()[0].coords())
    np.testing.assert_allclose(y[0, 0].reshape(40, -1), direct, atol=1e-14)

    q = create("room_acoustics", resolution=5, dim=3, lx=1.0, ly=0.5, lz=1.0, cells_per_metre=10.0,
               t_end=0.002, record_every=0.001, margin=0.2)
    assert q.output_shape() == (1, 2, 5, 3, 5)
    assert q.solve(q.sample_inputs(np.random.default_rng(0))).shape == (1, 2, 5, 3, 5)


def test_generated_file_opens(tmp_path):
    p = create("room_acoustics", resolution=6, lx=1.0, ly=0.6, cells_per_metre=20.0, t_end=0.002,
               record_every=0.0005, margin=0.2)
    path = oplab.data.generate(p, n=3, out=tmp_path / "ra.h5", seed=0)
    ds = oplab.data.open(path)
    item = ds[2]
    assert tuple(item["x"].shape) == (1, 2) and tuple(item["y"].shape) == (1, 4, 6, 4)
    t, xs, ys = ds.output_grid
    np.testing.assert_allclose(t, [0.0005, 0.001, 0.0015, 0.002])
    np.testing.assert_allclose(ys, [0.0, 0.2, 0.4, 0.6])
    assert ds.meta["input_channels"] == ["source"] and ds.times is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": 1.2}, r"alpha' must be in \[0, 1\)"),
        ({"alpha": 1.0}, r"alpha' must be in \[0, 1\)"),
        ({"alpha": -0.1}, r"alpha' must be in \[0, 1\)"),
        ({"dim": 4}, "dim"),
        ({"ly": 2.04}, "ly = 2.04 m must be a multiple of the receiver spacing"),
        ({"lx": 2.005}, "lx = 2.005 m is not a multiple of the FDTD spacing"),
        ({"t_end": 0.0201}, "multiple of record_every"),
        ({"margin": 1.0}, "margin"),
        ({"cfl": 1.5}, "cfl"),
        ({"resolution": 1}, "resolution"),
    ],
)
def test_invalid_parameters(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        create("room_acoustics", **kwargs)


@pytest.mark.parametrize(
    "source, message",
    [
        ([[2.5, 1.0]], r"source \[2.5, 1.0\] lies outside the room \[0, 2\] x \[0, 2\]"),
        ([[-0.1, 1.0]], "outside the room"),
        ([[0.2, 1.0]], r"closer than 0.5 m to a wall of the room \[0, 2\] x \[0, 2\]"),
        ([[1.0, np.nan]], "finite"),
        ([[1.0, 1.0, 1.0]], r"shape \(1, 2\)"),
        ([1.0, 1.0], r"shape \(1, 2\)"),
    ],
)
def test_bad_source(source, message):
    p = create("room_acoustics")
    with pytest.raises(ParameterError, match=message):
        p.solve(np.array(source))
