"""Listening to a learned room: receiver signals of static and moving sources from a trained
``room_acoustics`` operator, and WAV files of them.

The operator (a DeepONet, Borrel-Jensen et al. 2024, "Sound propagation in realistic interactive
3D scenes with parameterized sources using deep neural operators", PNAS 121:e2312159120) maps a
source position ``s`` to the pressure ``h(x, t; s)`` that a Gaussian pulse released at ``s`` at
``t = 0`` makes in the room (:mod:`oplab.problems.room_acoustics`). The wave equation is linear
and time-invariant, so a source that moves along a path and emits one pulse per record step,
weighted by a dry signal ``w_m``, gives at a receiver ``r``

    p(r, t) = sum_m w_m h(r, t - tau_m; s(tau_m)),

the sum over the pulses released at ``tau_m <= t`` (:func:`moving_source`; lags beyond the
operator's ``t_end`` are left out: it knows the response that long only). The solver does the
same by injecting the weighted pulses (:meth:`RoomAcoustics.moving_source`), which is how
``benchmarks/room_acoustics.py`` checks this assembly.

A WAV file: the band-limited impulse response at the receiver (sampled at ``1 / dt``) is
resampled to an audio rate and convolved with a dry sound (:func:`dry_sound`, synthesised: no
recording is downloaded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import OplabError, ParameterError


def _room(op) -> tuple[float, float, list]:
    """``(dt, sigma, spatial axes)`` of a room-acoustics operator; a clear error for any other. The
    axes of the sources it was trained on are the room's less the data's ``margin`` (``op.sources``)."""
    axes = op.out_axes
    if op.data.get("problem") != "room_acoustics" or not axes or axes[0].name != "t":
        raise OplabError(f"{op.run_dir}: not a room_acoustics operator (problem {op.data.get('problem')!r}, "
                         f"output axes {[a.name for a in axes]}); auralisation needs pressure on (t, x, y[, z])")
    params = op.data.get("params") or {}
    return float(params["record_every"]), float(params["sigma"]), axes[1:]


def _check_point(name: str, point, axes, margin: float = 0.0) -> np.ndarray:
    """``point`` as floats if it has one finite coordinate per axis inside the room (at least
    ``margin`` from the walls: a source, where the operator was trained), else a ParameterError."""
    p = np.asarray(point, dtype=np.float64).reshape(-1)
    if p.shape[0] != len(axes) or not np.all(np.isfinite(p)):
        raise ParameterError(f"{name} {list(np.atleast_1d(point))}: expected {len(axes)} finite coordinates "
                             f"({', '.join(a.name for a in axes)})")
    for value, axis in zip(p, axes):
        lo, hi = axis.lo + margin, axis.hi - margin
        if not lo - 1e-9 <= value <= hi + 1e-9:
            where = (f"outside the sources the operator was trained on ({margin:g} m from the walls)" if margin
                     else "outside the room")
            raise ParameterError(f"{name} {p.tolist()} is {where}: {axis.name} must be in [{lo:g}, {hi:g}]")
    return p


def _source_check(op, name: str, point, axes) -> np.ndarray:
    return _check_point(name, point, axes, float((op.data.get("params") or {}).get("margin", 0.0)))


def _pressure_at(op, sources: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The operator's pressure for source ``m`` at its own query points ``points[m]`` (``[M, P, 1 + d]``,
    rows ``(t, x, ...)``): ``[M, P]``. The trunk is queried at the points themselves (any receiver,
    any time), not interpolated from a grid."""
    model = op.bundle.model
    if not hasattr(model, "forward_points"):
        raise OplabError(f"{op.run_dir}: model {type(model).__name__} answers on its grid only; listening at "
                         f"arbitrary receivers and times needs a point operator (deeponet, multionet)")
    x = torch.tensor(np.asarray(sources), dtype=torch.float32)[:, None, :]  # [M, 1, d]: the "source" channel on its axis
    q = torch.tensor(np.asarray(points), dtype=torch.float32)  # (a copy: the points may be a read-only broadcast)
    out = []
    with torch.inference_mode():
        for xs, qs in zip(torch.split(x, 128), torch.split(q, 128)):
            y = model.forward_points(op.bundle.in_norm.encode(xs.to(op.device)), qs.to(op.device))  # [m, 1, P]
            out.append(op.bundle.out_norm.decode(y)[:, 0])
    return torch.cat(out).cpu().numpy().astype(np.float64)


def receiver_responses(op, sources, receiver, lags) -> np.ndarray:
    """``h(receiver, lag; s)`` from the operator for every source ``s`` of ``sources [K, d]`` and every
    lag (seconds, within the operator's time axis): ``[K, len(lags)]``."""
    _, _, axes = _room(op)
    sources = np.asarray(sources, dtype=np.float64).reshape(-1, len(axes))
    for s in sources:
        _source_check(op, "source", s, axes)
    r = _check_point("receiver", receiver, axes)
    lags = np.asarray(lags, dtype=np.float64).reshape(-1)
    points = np.concatenate([lags[:, None], np.broadcast_to(r, (len(lags), len(r)))], axis=1)
    return _pressure_at(op, sources, np.broadcast_to(points, (len(sources), *points.shape)))


def moving_source(op, emit_times, emit_points, weights, receiver, times) -> np.ndarray:
    """The pressure at ``receiver`` at ``times`` of pulses released at ``emit_times [M]`` from
    ``emit_points [M, d]`` with ``weights [M]`` (module docstring): ``[T]``. A pulse's response
    at lag ``tau`` is the operator's for ``t_1 <= tau <= t_end`` (its time axis), the free-field
    pulse for ``0 <= tau < t_1`` (exact until the first wall echo: :mod:`oplab.solvers.fdtd`'s free-field pulses,
    the operator was not trained there), and zero before its release and after ``t_end``."""
    from .solvers.fdtd import gaussian_pulse_2d, gaussian_pulse_3d

    _, sigma, axes = _room(op)
    emit_times = np.asarray(emit_times, dtype=np.float64).reshape(-1)
    emit_points = np.asarray(emit_points, dtype=np.float64).reshape(-1, len(axes))
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if not len(emit_times) == len(emit_points) == len(weights):
        raise ParameterError(f"moving source: {len(emit_times)} emission times, {len(emit_points)} points and "
                             f"{len(weights)} weights; give one of each per pulse")
    for s in emit_points:
        _source_check(op, "source", s, axes)
    r = _check_point("receiver", receiver, axes)
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if np.any(np.diff(times) < 0):
        raise ParameterError("moving source: the receiver times must be increasing")
    t_axis = op.out_axes[0]
    c = float((op.data.get("params") or {}).get("c", 343.0))
    # the band of (pulse, time) pairs a pulse reaches: 0 <= t - tau <= t_end (memory ~ pulses x records)
    lo = np.searchsorted(times, emit_times - 1e-12, "left")
    hi = np.searchsorted(times, emit_times + t_axis.hi + 1e-12, "right")
    counts = hi - lo
    rows = np.repeat(np.arange(len(emit_times)), counts)
    cols = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
    lag = np.maximum(times[cols] - emit_times[rows], 0.0)
    value = np.zeros(len(rows))
    learned = lag >= t_axis.lo - 1e-12
    if learned.any():  # each pulse queried at its own learned lags (padded to the longest row)
        idx = np.flatnonzero(learned)
        sources, group = np.unique(rows[idx], return_inverse=True)
        first = np.searchsorted(group, np.arange(len(sources)))
        pos = np.arange(len(idx)) - first[group]
        q = np.repeat(lag[idx[first]][:, None], int(pos.max()) + 1, axis=1)
        q[group, pos] = lag[idx]
        points = np.concatenate([q[..., None], np.broadcast_to(r, (*q.shape, len(r)))], axis=-1)
        value[idx] = _pressure_at(op, emit_points[sources], points)[group, pos]
    early = ~learned
    if early.any():  # the free-field pulse, every early pair in one evaluation
        pulse = {2: gaussian_pulse_2d, 3: gaussian_pulse_3d}[len(r)]
        value[early] = pulse(np.linalg.norm(emit_points[rows[early]] - r, axis=1), lag[early], sigma, c)
    p = np.zeros(len(times))
    np.add.at(p, cols, weights[rows] * value)
    return p


def dry_sound(rate: int, seconds: float = 1.5, notes=(196.0, 247.0, 294.0, 392.0), seed: int = 0) -> np.ndarray:
    """A dry (anechoic) test sound: plucked-string notes by the Karplus-Strong algorithm (Karplus &
    Strong 1983, "Digital synthesis of plucked-string and drum timbres", Computer Music Journal
    7(2)), one after another; deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    out = np.zeros(n)
    per = n // len(notes)
    for i, f in enumerate(notes):
        period = max(2, int(round(rate / f)))
        buf = rng.uniform(-1, 1, period)
        note = np.empty(per)
        for j in range(per):
            note[j] = buf[j % period]
            buf[j % period] = 0.996 * 0.5 * (buf[j % period] + buf[(j + 1) % period])
        out[i * per : (i + 1) * per] = note
    return out / np.max(np.abs(out))


def to_audio(signal: np.ndarray, signal_rate: float, rate: int = 16000) -> np.ndarray:
    """A signal sampled at ``signal_rate`` (Hz) resampled to the audio ``rate`` (polyphase filter)."""
    from fractions import Fraction

    from scipy.signal import resample_poly

    ratio = Fraction(rate / signal_rate).limit_denominator(1000)
    return resample_poly(np.asarray(signal, dtype=np.float64), ratio.numerator, ratio.denominator)


def convolve(ir: np.ndarray, dry: np.ndarray) -> np.ndarray:
    """The dry sound heard through the impulse response ``ir`` (both at the audio rate)."""
    from scipy.signal import fftconvolve

    return fftconvolve(dry, ir)


def write_wav(path, signal: np.ndarray, rate: int, overwrite: bool = False) -> Path:
    """``signal`` as 16-bit PCM at ``rate`` Hz, peak-normalised to 0.9 full scale; an existing file is
    kept unless ``overwrite``."""
    from scipy.io import wavfile

    path = Path(path)
    if path.exists() and not overwrite:
        raise OplabError(f"{path}: already exists; choose another --out or pass --overwrite")
    signal = np.asarray(signal, dtype=np.float64)
    peak = np.max(np.abs(signal)) if signal.size else 0.0
    if not np.isfinite(peak):
        raise OplabError("the signal holds NaN or Inf; nothing written")
    pcm = np.zeros(signal.shape, np.int16) if peak == 0 else np.round(signal / peak * 0.9 * 32767).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    wavfile.write(tmp, rate, pcm)
    tmp.replace(path)
    return path


def read_dry(path) -> tuple[np.ndarray, int]:
    """A mono (or first-channel) WAV file as floats in [-1, 1] and its rate."""
    from scipy.io import wavfile

    path = Path(path)
    if not path.exists():
        raise OplabError(f"{path}: no such file (--dry expects a WAV file)")
    try:
        rate, data = wavfile.read(path)
    except ValueError as exc:
        raise OplabError(f"{path}: not a readable WAV file ({exc})") from None
    data = np.asarray(data, dtype=np.float64)
    data = data[:, 0] if data.ndim == 2 else data
    peak = np.max(np.abs(data)) if data.size else 0.0
    if peak == 0:
        raise OplabError(f"{path}: silent or empty")
    return data / peak, int(rate)


def auralize(op, receiver, source, out, to=None, dry=None, rate: int = 16000, seconds: float = 1.5,
             overwrite: bool = False) -> dict:
    """Write a WAV file of what a listener at ``receiver`` hears of a dry sound (a WAV file ``dry``
    or :func:`dry_sound`) played at ``source``, or moving in a straight line from ``source`` to
    ``to`` over the sound's duration. Returns ``{"path", "seconds", "surrogate_seconds", ...}``."""
    import time

    dt, _, axes = _room(op)
    source = _source_check(op, "source", source, axes)
    receiver = _check_point("receiver", receiver, axes)
    if dry is None:
        sound, sound_rate = dry_sound(rate, seconds), rate
    else:
        sound, sound_rate = read_dry(dry)
    start = time.perf_counter()
    if to is None:  # a static source: its impulse response at the audio rate, convolved with the sound
        t = np.arange(0.0, op.out_axes[0].hi, 1.0 / rate)
        ir = moving_source(op, [0.0], source[None], [1.0], receiver, t)
        elapsed = time.perf_counter() - start
        signal = convolve(ir, to_audio(sound, sound_rate, rate))
    else:  # a moving source: one weighted pulse per record step along the path
        end = _source_check(op, "--to point", to, axes)
        weights = to_audio(sound, sound_rate, 1 / dt)
        emit = dt * np.arange(len(weights))
        frac = np.linspace(0, 1, len(weights))[:, None]
        t = dt * np.arange(len(weights) + op.out_axes[0].n)  # until the last pulse has died out
        signal = moving_source(op, emit, (1 - frac) * source + frac * end, weights, receiver, t)
        elapsed = time.perf_counter() - start
        signal = to_audio(signal, 1 / dt, rate)
    written = write_wav(out, signal, rate, overwrite)
    return {"path": str(written), "seconds": len(signal) / rate, "surrogate_seconds": elapsed,
            "moving": to is not None}


__all__ = ["auralize", "convolve", "dry_sound", "moving_source", "read_dry", "receiver_responses", "to_audio",
           "write_wav"]
