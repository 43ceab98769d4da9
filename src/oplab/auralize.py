"""Listening to a learned room: receiver signals of static and moving sources from a trained
``room_acoustics`` operator, and WAV files of them.

The operator (a DeepONet, Borrel-Jensen et al. 2024, "Sound propagation in realistic interactive
3D scenes with parameterized sources using deep neural operators", PNAS 121:e2312159120) maps a
source position ``s`` to the pressure ``h(x, t; s)`` that a Gaussian pulse released at ``s`` at
``t = 0`` makes in the room (:mod:`oplab.problems.room_acoustics`). The wave equation is linear
and time-invariant, so a source that moves along a path and emits one pulse per record step,
weighted by a dry signal ``w_k``, gives at a receiver ``r``

    p(r, t_j) = sum_k w_k h(r, t_j - tau_k; s(tau_k)),      t_j = j dt,  tau_k = k dt,

the sum over the pulses emitted so far, each seen ``j - k`` steps after its release (the lag-0
term is the pulse itself, ``exp(-|r - s_k|^2 / sigma^2)``; lags beyond the operator's last record
time are left out: the operator knows the response up to ``t_end`` only). The solver does the same
by injecting the weighted pulses (:meth:`RoomAcoustics.moving_source`), which is how
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
    """``(dt, sigma, spatial axes)`` of a room-acoustics operator; a clear error for any other."""
    axes = op.out_axes
    if op.data.get("problem") != "room_acoustics" or not axes or axes[0].name != "t":
        raise OplabError(f"{op.run_dir}: not a room_acoustics operator (problem {op.data.get('problem')!r}, "
                         f"output axes {[a.name for a in axes]}); auralisation needs pressure on (t, x, y[, z])")
    params = op.data.get("params") or {}
    return float(params["record_every"]), float(params["sigma"]), axes[1:]


def _check_point(name: str, point, axes) -> np.ndarray:
    p = np.asarray(point, dtype=np.float64).reshape(-1)
    if p.shape[0] != len(axes) or not np.all(np.isfinite(p)):
        raise ParameterError(f"{name} {list(np.atleast_1d(point))}: expected {len(axes)} finite coordinates "
                             f"({', '.join(a.name for a in axes)})")
    for value, axis in zip(p, axes):
        if not axis.lo <= value <= axis.hi:
            raise ParameterError(f"{name} {p.tolist()} is outside the room: {axis.name} must be in "
                                 f"[{axis.lo}, {axis.hi}]")
    return p


def receiver_responses(op, sources, receiver, lags) -> np.ndarray:
    """``h(receiver, lag; s)`` for every source ``s`` of ``sources [K, d]`` and every lag
    (seconds): ``[K, len(lags)]``. The trunk is queried at the receiver itself, not interpolated
    from a grid (any point of the room, any time up to the training ``t_end``)."""
    _, _, axes = _room(op)
    sources = np.asarray(sources, dtype=np.float64).reshape(-1, len(axes))
    for s in sources:
        _check_point("source", s, axes)
    r = _check_point("receiver", receiver, axes)
    x = torch.as_tensor(sources, dtype=torch.float32)[:, None, :]  # [K, 1, d]: the "source" channel on its axis
    coords = (torch.as_tensor(np.asarray(lags), dtype=torch.float32),
              *(torch.tensor([v], dtype=torch.float32) for v in r))
    out = []
    with torch.inference_mode():
        for chunk in torch.split(x, 256):
            out.append(op.bundle(chunk.to(op.device), tuple(c.to(op.device) for c in coords)).reshape(len(chunk), -1))
    return torch.cat(out).cpu().numpy().astype(np.float64)


def moving_source(op, path, weights, receiver) -> np.ndarray:
    """The pressure at ``receiver`` at ``t_j = j dt`` (``j = 0 .. K-1``) of a source at ``path[k]``
    emitting one pulse of weight ``weights[k]`` at ``tau_k = k dt`` (module docstring): ``[K]``."""
    dt, sigma, axes = _room(op)
    path = np.asarray(path, dtype=np.float64).reshape(-1, len(axes))
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(weights) != len(path):
        raise ParameterError(f"moving source: {len(path)} path points but {len(weights)} weights; give one each")
    r = _check_point("receiver", receiver, axes)
    n_lags = op.out_axes[0].n  # records dt .. t_end
    lags = dt * np.arange(1, n_lags + 1)
    h = np.empty((len(path), n_lags + 1))
    h[:, 0] = np.exp(-np.sum((path - r) ** 2, axis=1) / sigma**2)  # lag 0: the released pulse itself
    h[:, 1:] = receiver_responses(op, path, r, lags)
    k_count = len(path)
    p = np.zeros(k_count)
    for k in range(k_count):  # pulse k reaches t_j = (k + lag) dt
        span = min(n_lags + 1, k_count - k)
        p[k : k + span] += weights[k] * h[k, :span]
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
    source = _check_point("source", source, axes)
    receiver = _check_point("receiver", receiver, axes)
    if dry is None:
        sound, sound_rate = dry_sound(rate, seconds), rate
    else:
        sound, sound_rate = read_dry(dry)
    start = time.perf_counter()
    if to is None:  # a static source: its impulse response, convolved at the audio rate
        n_lags = op.out_axes[0].n
        ir = moving_source(op, source[None], [1.0], receiver)  # the lag-0 term
        ir = np.concatenate([ir, receiver_responses(op, source[None], receiver, dt * np.arange(1, n_lags + 1))[0]])
        elapsed = time.perf_counter() - start
        signal = convolve(to_audio(ir, 1 / dt, rate), to_audio(sound, sound_rate, rate))
    else:  # a moving source: one weighted pulse per record step along the path
        end = _check_point("--to point", to, axes)
        weights = to_audio(sound, sound_rate, 1 / dt)
        frac = np.linspace(0, 1, len(weights))[:, None]
        path = (1 - frac) * source + frac * end
        signal = moving_source(op, path, weights, receiver)
        elapsed = time.perf_counter() - start
        signal = to_audio(signal, 1 / dt, rate)
    written = write_wav(out, signal, rate, overwrite)
    return {"path": str(written), "seconds": len(signal) / rate, "surrogate_seconds": elapsed,
            "moving": to is not None}


__all__ = ["auralize", "convolve", "dry_sound", "moving_source", "read_dry", "receiver_responses", "to_audio",
           "write_wav"]
