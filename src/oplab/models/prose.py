"""PROSE: a multimodal transformer that predicts an ODE's solution and decodes its equation.

After Y. Liu, Z. Zhang, H. Schaeffer, "PROSE: Predicting Multiple Operators and Symbolic
Expressions using Multimodal Transformers", Neural Networks 180 (2024) 106707 (arXiv:2309.16816),
and J. Sun, Y. Liu, Z. Zhang, H. Schaeffer, "Towards a foundation model for partial differential
equations: multi-operator learning and extrapolation" (PROSE-PDE). Written here from the papers and
from the facts of their code (felix-lyx/prose, ``prose_ode``: the time interval ``[0, 6]``, the
first third of the samples as the data input, parameters varied by +-10% around nominal values,
numbers as sign / mantissa / exponent tokens with 3 significant digits); no code of theirs.

**Data** (:func:`make_dataset`). Nine autonomous ODE families of dimension 1-3 (:data:`FAMILIES`:
exponential decay, logistic growth, damped oscillator, damped pendulum, Lotka-Volterra, Van der
Pol, Duffing, a linear 3D system, Thomas' cyclically symmetric system), each with its free
coefficients drawn as ``nominal * (1 + U(-0.1, 0.1))`` and rounded to 3 significant digits (so the
tokens are *exactly* the equation the data solve), a random initial state, and the trajectory from
``scipy.integrate.solve_ivp`` (DOP853, ``rtol=1e-8``) on ``t_num`` equispaced times of
``[0, t_range]``: the first ``n_input`` are the data input, the rest the query times. Sample ``i``
depends only on ``(seed, i)``.

**Symbols** (:class:`Vocab`, :func:`encode_system`, :func:`decode_system`). Each right-hand side is
a sum of ``coefficient * term`` written in prefix (Polish) notation with the operators ``add``,
``mul``, ``sin``, ``pow2``, ``pow3`` and the variables ``x0, x1, x2``; the components of a system
are separated by ``|``. A number is five tokens: its sign (``+``/``-``), the three digits of its
mantissa and its decimal exponent (``1.23 -> + 1 2 3 E-2``): PROSE's encoder with
``float_precision=2, mantissa_len=3``. :func:`decode_system` inverts the tokens to an expression
tree and :func:`system_function` compiles a tree into a numpy right-hand side ``f(y)`` (no sympy).

**Model** (:class:`PROSE`), the paper's five parts at CPU size:

* data encoder: the input samples ``(t, y, dimension mask)`` lifted to ``d_model`` and a
  transformer encoder over time;
* symbol encoder: token + position embeddings and a transformer encoder;
* fusion: a transformer encoder over the concatenation of both (plus a modality embedding); a
  sample's symbols can be masked out (``use_symbols``), then the fusion attends to the data only and
  the answer does not depend on the tokens at all (exactly: masked keys get zero weight and the
  masked features are zeroed first);
* data (operator) decoder: each query time, embedded by a small MLP, cross-attends to the fused
  features (no attention between queries, so a query's answer does not depend on the others) and
  is read out to the ``max_dim`` state values;
* symbol decoder: a causal transformer decoder over the equation's tokens that cross-attends to the
  fused features; teacher forcing in training, greedy decoding (:meth:`PROSE.greedy`) at test.

**Training** (:func:`train_prose`): mean squared error on the query values (valid dimensions) plus
``symbol_weight`` times the tokens' cross-entropy; the symbol *input* of every sample of a batch is
drawn as the exact equation, a noisy one (coefficients times ``1 + N(0, noise^2)``, re-rounded) or
masked, so one model serves all three uses, and its decoder learns to copy, correct and identify.
The checkpoint with the lowest validation score (:func:`validation_score`) is kept.

Save / load: :func:`save_prose` / :func:`load_prose` (``weights.safetensors`` + ``config.json``,
no pickle).
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

from ..checkpoint import NET_CONFIG as CONFIG
from ..errors import DataFileError, ParameterError, check_int

MAX_DIM = 3
MAX_EXPONENT = 6

# -- symbols -----------------------------------------------------------------------------------------
BINARY = ("add", "mul")
UNARY = ("sin", "pow2", "pow3")
SPECIAL = ("<PAD>", "<BOS>", "<EOS>", "|")
PAD, BOS, EOS, SEP = 0, 1, 2, 3


class Vocab:
    """The token list: specials, operators, variables, signs, digits and exponents (fixed, so a saved
    model needs no vocabulary file)."""

    def __init__(self, max_dim: int = MAX_DIM, max_exponent: int = MAX_EXPONENT):
        self.words = (list(SPECIAL) + list(BINARY) + list(UNARY) + [f"x{i}" for i in range(max_dim)]
                      + ["+", "-"] + [str(d) for d in range(10)]
                      + [f"E{e}" for e in range(-max_exponent, max_exponent + 1)])
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def ids(self, tokens: list[str]) -> list[int]:
        try:
            return [self.index[t] for t in tokens]
        except KeyError as exc:
            raise ParameterError(f"PROSE: unknown token {exc.args[0]!r} (not in the vocabulary)") from None

    def tokens(self, ids) -> list[str]:
        """Tokens of ``ids`` up to (without) the first ``<EOS>``, skipping ``<BOS>`` and ``<PAD>``."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i not in (BOS, PAD):
                out.append(self.words[i])
        return out


VOCAB = Vocab()


def round_sig(value: float, digits: int = 3) -> float:
    """``value`` rounded to 3 significant digits exactly as :func:`encode_number` writes it."""
    return decode_number(encode_number(value, digits))


def encode_number(value: float, digits: int = 3) -> list[str]:
    """``[sign, d1, d2, d3, E<e>]`` with ``value ~ sign * d1d2d3 * 10**e`` (3 significant digits)."""
    value = float(value)
    if not math.isfinite(value):
        raise ParameterError(f"PROSE: a coefficient must be finite, got {value!r}")
    sign = "-" if value < 0 else "+"
    mag = abs(value)
    if mag == 0.0:
        return [sign] + ["0"] * digits + ["E0"]
    e = math.floor(math.log10(mag)) - (digits - 1)
    mant = round(mag / 10.0**e)
    if mant >= 10**digits:
        mant //= 10
        e += 1
    if mant < 10 ** (digits - 1):  # log10 rounding just below a power of ten
        mant = round(mag / 10.0 ** (e - 1))
        e -= 1
    if abs(e) > MAX_EXPONENT:
        raise ParameterError(f"PROSE: coefficient {value!r} is out of range (|exponent| <= {MAX_EXPONENT})")
    return [sign] + list(str(mant)) + [f"E{e}"]


def decode_number(tokens: list[str]) -> float:
    sign, *mant, exp = tokens
    return (-1.0 if sign == "-" else 1.0) * int("".join(mant)) * 10.0 ** int(exp[1:])


def _prefix(node, out: list[str]) -> None:
    head = node[0]
    if head == "c":
        out.extend(encode_number(node[1]))
    elif head == "x":
        out.append(f"x{node[1]}")
    elif head in BINARY:
        out.append(head)
        _prefix(node[1], out)
        _prefix(node[2], out)
    elif head in UNARY:
        out.append(head)
        _prefix(node[1], out)
    else:
        raise ParameterError(f"PROSE: unknown expression node {head!r}")


def encode_system(system: list) -> list[str]:
    """Prefix tokens of a system (a list of expression trees, one per component), ``|``-separated.

    Trees are nested lists: ``["add", a, b]``, ``["mul", a, b]``, ``["sin" | "pow2" | "pow3", a]``,
    ``["x", i]``, ``["c", value]``."""
    out: list[str] = []
    for k, tree in enumerate(system):
        if k:
            out.append("|")
        _prefix(tree, out)
    return out


def _parse(tokens: list[str], pos: int):
    if pos >= len(tokens):
        raise ParameterError("PROSE: the expression ends early (an operator lacks an operand)")
    tok = tokens[pos]
    if tok in BINARY:
        a, pos = _parse(tokens, pos + 1)
        b, pos = _parse(tokens, pos)
        return [tok, a, b], pos
    if tok in UNARY:
        a, pos = _parse(tokens, pos + 1)
        return [tok, a], pos
    if tok[0] == "x" and tok[1:].isdigit():
        return ["x", int(tok[1:])], pos + 1
    if tok in ("+", "-"):
        num = tokens[pos:pos + 5]
        if (len(num) < 5 or not all(t.isdigit() for t in num[1:4]) or num[4][0] != "E"):
            raise ParameterError(f"PROSE: malformed number at token {pos}: {' '.join(num)!r}")
        return ["c", decode_number(num)], pos + 5
    raise ParameterError(f"PROSE: unexpected token {tok!r} at position {pos}")


def decode_system(tokens: list[str]) -> list:
    """The expression trees of ``tokens`` (the inverse of :func:`encode_system`); a malformed sequence
    raises ParameterError."""
    parts: list[list[str]] = [[]]
    for t in tokens:
        if t == "|":
            parts.append([])
        else:
            parts[-1].append(t)
    system = []
    for part in parts:
        tree, end = _parse(part, 0)
        if end != len(part):
            raise ParameterError(f"PROSE: {len(part) - end} extra tokens after a complete expression")
        system.append(tree)
    return system


def _compile(node, dim: int):
    """A closure evaluating ``node`` on a state ``y`` (a 1-D array or ``[..., d]``; floats stay floats)."""
    head = node[0]
    if head == "c":
        value = float(node[1])
        return lambda y: value
    if head == "x":
        i = node[1]
        if i >= dim:
            raise ParameterError(f"PROSE: variable x{i} in a system of dimension {dim}")
        return lambda y: y[..., i]
    if head in BINARY:
        a, b = _compile(node[1], dim), _compile(node[2], dim)
        return (lambda y: a(y) + b(y)) if head == "add" else (lambda y: a(y) * b(y))
    a = _compile(node[1], dim)
    if head == "sin":
        return lambda y: np.sin(a(y))
    if head == "pow2":
        return lambda y: np.square(a(y))
    return lambda y: a(y) ** 3


def system_function(system: list):
    """A numpy right-hand side ``f(y) -> dy/dt`` of a decoded system (``y``: ``[..., d]``, ``d`` the
    number of components); a variable beyond ``d`` raises ParameterError."""
    comps = [_compile(tree, len(system)) for tree in system]

    def f(y):
        y = np.asarray(y, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.stack(np.broadcast_arrays(*[c(y) for c in comps]), axis=-1)

    return f


def coefficients(system: list) -> list[float]:
    """The numbers of a system in prefix order."""
    out: list[float] = []

    def walk(node):
        if node[0] == "c":
            out.append(node[1])
        elif node[0] != "x":
            for child in node[1:]:
                walk(child)

    for tree in system:
        walk(tree)
    return out


def skeleton(tokens: list[str]) -> list[str]:
    """``tokens`` with every number replaced by ``<C>``: equal skeletons, equal structure."""
    out, i = [], 0
    while i < len(tokens):
        if tokens[i] in ("+", "-"):
            out.append("<C>")
            i += 5
        else:
            out.append(tokens[i])
            i += 1
    return out


def map_coefficients(system: list, fn) -> list:
    """A copy of ``system`` with every coefficient ``c`` replaced by ``fn(c)``."""

    def walk(node):
        if node[0] == "c":
            return ["c", fn(node[1])]
        if node[0] == "x":
            return list(node)
        return [node[0]] + [walk(child) for child in node[1:]]

    return [walk(tree) for tree in system]


# -- ODE families ------------------------------------------------------------------------------------
def _c(v):
    return ["c", v]


def _x(i):
    return ["x", i]


def _terms(*pairs):
    """``c1 * t1 + c2 * t2 + ...`` as a right-nested ``add`` tree."""
    trees = [["mul", _c(c), t] for c, t in pairs]
    out = trees[-1]
    for t in reversed(trees[:-1]):
        out = ["add", t, out]
    return out


def _decay(p):
    return [_terms((-p[0], _x(0)))]


def _logistic(p):
    return [_terms((p[0], _x(0)), (-p[1], ["pow2", _x(0)]))]


def _oscillator(p):
    return [_terms((1.0, _x(1))), _terms((-p[0], _x(0)), (-p[1], _x(1)))]


def _pendulum(p):
    return [_terms((1.0, _x(1))), _terms((-p[0], ["sin", _x(0)]), (-p[1], _x(1)))]


def _lotka_volterra(p):
    return [_terms((p[0], _x(0)), (-p[1], ["mul", _x(0), _x(1)])),
            _terms((-p[2], _x(1)), (p[3], ["mul", _x(0), _x(1)]))]


def _van_der_pol(p):
    return [_terms((1.0, _x(1))),
            _terms((p[0], _x(1)), (-p[0], ["mul", ["pow2", _x(0)], _x(1)]), (-1.0, _x(0)))]


def _duffing(p):
    return [_terms((1.0, _x(1))), _terms((-p[0], _x(1)), (-p[1], _x(0)), (-p[2], ["pow3", _x(0)]))]


def _linear3d(p):
    return [_terms((-p[0], _x(0)), (p[1], _x(1))), _terms((-p[1], _x(0)), (-p[0], _x(1))),
            _terms((-p[2], _x(2)))]


def _thomas(p):
    return [_terms((1.0, ["sin", _x((i + 1) % 3)]), (-p[0], _x(i))) for i in range(3)]


# name: (dimension, builder, nominal free parameters, initial-state box (low, high) per component)
FAMILIES = {
    "decay": (1, _decay, (0.8,), ((0.5, 2.0),)),
    "logistic": (1, _logistic, (1.2, 0.6), ((0.1, 1.0),)),
    "oscillator": (2, _oscillator, (2.0, 0.3), ((-1.5, 1.5), (-1.5, 1.5))),
    "pendulum": (2, _pendulum, (3.0, 0.2), ((-2.0, 2.0), (-1.0, 1.0))),
    "lotka_volterra": (2, _lotka_volterra, (1.0, 0.8, 1.0, 0.6), ((0.5, 2.0), (0.5, 2.0))),
    "van_der_pol": (2, _van_der_pol, (1.0,), ((-2.0, 2.0), (-2.0, 2.0))),
    "duffing": (2, _duffing, (0.2, 1.0, 1.0), ((-1.5, 1.5), (-1.5, 1.5))),
    "linear3d": (3, _linear3d, (0.2, 1.5, 0.5), ((-2.0, 2.0),) * 3),
    "thomas": (3, _thomas, (0.2,), ((-2.0, 2.0),) * 3),
}


def _check_families(families) -> list[str]:
    names = list(FAMILIES) if families is None else list(families)
    bad = [f for f in names if f not in FAMILIES]
    if bad or not names:
        raise ParameterError(f"PROSE: families must be a non-empty list of {sorted(FAMILIES)}, got {families!r}")
    return names


def sample_system(family: str, rng: np.random.Generator, param_range: float = 0.1) -> list:
    """A random member of ``family``: free coefficients ``nominal * (1 + U(-r, r))``, 3 significant digits."""
    dim, build, nominal, _ = FAMILIES[_check_families([family])[0]]
    p = [round_sig(v * (1.0 + rng.uniform(-param_range, param_range))) for v in nominal]
    return build(p)


def solve_system(system: list, y0, t: np.ndarray, rtol: float = 1e-8, atol: float = 1e-10,
                 bound: float | None = None, stop_early: bool = False) -> np.ndarray | None:
    """``y(t)`` (``[len(t), d]``) of ``dy/dt = f(y)``, ``y(0) = y0`` by DOP853; None if the solver fails
    or (``bound``) ``|y|`` exceeds ``bound`` (with ``stop_early``, a terminal event stops the
    integration there: for decoded systems that may blow up)."""
    from scipy.integrate import solve_ivp

    comps = [_compile(tree, len(system)) for tree in system]
    y0 = np.asarray(y0, dtype=np.float64)
    if y0.shape != (len(system),):
        raise ParameterError(f"PROSE: y0 must have {len(system)} values (one per component), got {y0.shape}")

    def rhs(_t, y):
        return np.array([c(y) for c in comps])

    events = None
    if bound is not None and stop_early:
        def blow(_t, y):
            return bound - np.max(np.abs(y))
        blow.terminal = True
        events = blow
    with np.errstate(over="ignore", invalid="ignore"):
        sol = solve_ivp(rhs, (float(t[0]), float(t[-1])), y0, method="DOP853", t_eval=t, rtol=rtol, atol=atol,
                        events=events)
    if sol.status != 0 or sol.y.shape[1] != len(t) or not np.all(np.isfinite(sol.y)):
        return None
    if bound is not None and np.abs(sol.y).max() > bound:
        return None
    return sol.y.T


def make_dataset(n: int, seed: int = 0, *, families=None, t_range: float = 6.0, t_num: int = 96,
                 n_input: int = 32, param_range: float = 0.1, symbol_noise: float = 0.05) -> dict:
    """``n`` samples, family ``families[i % len(families)]``, sample ``i`` from ``default_rng([seed, i])``.

    Returns a dict of numpy arrays and lists: ``t`` ``[t_num]``; ``t_input`` ``[n_input]`` and
    ``t_query`` ``[t_num - n_input]``; ``data`` ``[n, n_input, 3]`` and ``query`` ``[n, t_num - n_input, 3]``
    (float32, zero beyond the sample's dimension); ``dim``, ``family`` (index into ``families``),
    ``y0`` ``[n, 3]``; ``systems`` (expression trees), ``tokens`` (their prefix tokens) and
    ``noisy_tokens`` (the same equation with every coefficient times ``1 + N(0, symbol_noise^2)``,
    re-rounded: a partially wrong symbolic input)."""
    n = check_int("PROSE", "n", n)
    t_num = check_int("PROSE", "t_num", t_num, minimum=3)
    n_input = check_int("PROSE", "n_input", n_input, minimum=2)
    if n_input >= t_num:
        raise ParameterError(f"PROSE: n_input must be < t_num (some query times), got {n_input} >= {t_num}")
    if not (isinstance(t_range, (int, float)) and t_range > 0):
        raise ParameterError(f"PROSE: t_range must be a positive number, got {t_range!r}")
    if not 0 <= param_range < 1:
        raise ParameterError(f"PROSE: param_range must be in [0, 1), got {param_range!r}")
    names = _check_families(families)
    t = np.linspace(0.0, float(t_range), t_num)
    ys = np.zeros((n, t_num, MAX_DIM), dtype=np.float32)
    dims, fams, y0s = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros((n, MAX_DIM), np.float32)
    systems, tokens, noisy = [], [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        k = i % len(names)
        dim, _, _, box = FAMILIES[names[k]]
        for _attempt in range(100):
            system = sample_system(names[k], rng, param_range)
            y0 = np.array([rng.uniform(lo, hi) for lo, hi in box])
            y = solve_system(system, y0, t, bound=50.0)
            if y is not None:
                break
        else:  # pragma: no cover - the families are bounded on [0, 6]
            raise RuntimeError(f"PROSE: no bounded trajectory for {names[k]} after 100 draws")
        ys[i, :, :dim] = y
        dims[i], fams[i], y0s[i, :dim] = dim, k, y0
        systems.append(system)
        tokens.append(encode_system(system))
        noisy.append(encode_system(map_coefficients(
            system, lambda c: round_sig(c * (1.0 + symbol_noise * rng.standard_normal())))))
    return {"t": t, "t_input": t[:n_input], "t_query": t[n_input:], "data": ys[:, :n_input],
            "query": ys[:, n_input:], "dim": dims, "family": fams, "families": names, "y0": y0s,
            "systems": systems, "tokens": tokens, "noisy_tokens": noisy}


def subset(ds: dict, idx) -> dict:
    """The samples ``idx`` of a dataset from :func:`make_dataset`."""
    idx = np.asarray(idx)
    out = dict(ds)
    for key in ("data", "query", "dim", "family", "y0"):
        out[key] = ds[key][idx]
    for key in ("systems", "tokens", "noisy_tokens"):
        out[key] = [ds[key][i] for i in idx]
    return out


def pad_tokens(seqs: list[list[str]], bos_eos: bool = False) -> torch.Tensor:
    """``[B, L]`` token ids, ``<PAD>``-filled; with ``bos_eos`` each wrapped in ``<BOS> ... <EOS>``."""
    ids = [([BOS] if bos_eos else []) + VOCAB.ids(s) + ([EOS] if bos_eos else []) for s in seqs]
    out = torch.full((len(ids), max(len(s) for s in ids)), PAD, dtype=torch.long)
    for i, s in enumerate(ids):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def batch(ds: dict, idx, symbols: str | list = "exact") -> dict:
    """Tensors for :class:`PROSE` of the samples ``idx``. ``symbols``: ``"exact"``, ``"noisy"``,
    ``"none"`` (masked), or one of these per sample."""
    idx = np.asarray(idx)
    modes = [symbols] * len(idx) if isinstance(symbols, str) else list(symbols)
    if len(modes) != len(idx) or any(m not in ("exact", "noisy", "none") for m in modes):
        raise ParameterError(f"PROSE: symbols must be 'exact', 'noisy', 'none' or one per sample, got {symbols!r}")
    src = [ds["noisy_tokens"][i] if m == "noisy" else ds["tokens"][i] for i, m in zip(idx, modes)]
    dim = torch.as_tensor(ds["dim"][idx])
    return {"t_input": torch.as_tensor(ds["t_input"], dtype=torch.float32),
            "data": torch.as_tensor(ds["data"][idx]),
            "dim_mask": torch.arange(MAX_DIM)[None, :] < dim[:, None],
            "tokens": pad_tokens(src), "use_symbols": torch.tensor([m != "none" for m in modes]),
            "t_query": torch.as_tensor(ds["t_query"], dtype=torch.float32),
            "query": torch.as_tensor(ds["query"][idx]), "target": pad_tokens([ds["tokens"][i] for i in idx], True)}


# -- model -------------------------------------------------------------------------------------------
class _CrossBlock(nn.Module):
    """Pre-norm cross-attention (queries -> memory) and feed-forward; no attention between queries."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.n1, self.n2, self.nm = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Linear(ffn, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, q, memory, memory_mask):
        m = self.nm(memory)
        q = q + self.drop(self.attn(self.n1(q), m, m, key_padding_mask=memory_mask, need_weights=False)[0])
        return q + self.drop(self.ff(self.n2(q)))


def _encoder(d, heads, ffn, layers, dropout):
    layer = nn.TransformerEncoderLayer(d, heads, ffn, dropout, activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)


class PROSE(nn.Module):
    """Data encoder, symbol encoder, fusion, data decoder and symbol decoder (module docstring).

    Args (plain JSON values, :func:`save_prose`): ``d_model``, ``heads``, ``ffn`` (hidden width of the
    feed-forward parts), ``data_layers``, ``symbol_layers``, ``fusion_layers``, ``decoder_layers``
    (data decoder), ``symbol_decoder_layers``, ``max_tokens`` (longest token sequence, with
    ``<BOS>``/``<EOS>``), ``t_scale`` (times are divided by it), ``dropout``.
    """

    def __init__(self, d_model: int = 64, heads: int = 4, ffn: int = 128, data_layers: int = 2,
                 symbol_layers: int = 2, fusion_layers: int = 2, decoder_layers: int = 2,
                 symbol_decoder_layers: int = 2, max_tokens: int = 64, t_scale: float = 6.0,
                 dropout: float = 0.0):
        super().__init__()
        for key, value in (("d_model", d_model), ("heads", heads), ("ffn", ffn), ("data_layers", data_layers),
                           ("symbol_layers", symbol_layers), ("fusion_layers", fusion_layers),
                           ("decoder_layers", decoder_layers), ("symbol_decoder_layers", symbol_decoder_layers),
                           ("max_tokens", max_tokens)):
            check_int("PROSE", key, value)
        if d_model % heads:
            raise ParameterError(f"PROSE: d_model must be divisible by heads, got {d_model} and {heads}")
        if not (isinstance(t_scale, (int, float)) and t_scale > 0):
            raise ParameterError(f"PROSE: t_scale must be a positive number, got {t_scale!r}")
        if not 0 <= dropout < 1:
            raise ParameterError(f"PROSE: dropout must be in [0, 1), got {dropout!r}")
        self.config = dict(d_model=d_model, heads=heads, ffn=ffn, data_layers=data_layers,
                           symbol_layers=symbol_layers, fusion_layers=fusion_layers, decoder_layers=decoder_layers,
                           symbol_decoder_layers=symbol_decoder_layers, max_tokens=max_tokens,
                           t_scale=float(t_scale), dropout=float(dropout))
        d, v = d_model, len(VOCAB)
        self.t_scale = float(t_scale)
        self.max_tokens = max_tokens
        self.data_in = nn.Sequential(nn.Linear(1 + 2 * MAX_DIM, d), nn.GELU(), nn.Linear(d, d))
        self.data_encoder = _encoder(d, heads, ffn, data_layers, dropout)
        self.tok = nn.Embedding(v, d, padding_idx=PAD)
        self.pos = nn.Embedding(max_tokens, d)
        self.symbol_encoder = _encoder(d, heads, ffn, symbol_layers, dropout)
        self.modality = nn.Embedding(2, d)
        self.fusion = _encoder(d, heads, ffn, fusion_layers, dropout)
        self.query_in = nn.Sequential(nn.Linear(1, d), nn.GELU(), nn.Linear(d, d))
        self.decoder = nn.ModuleList(_CrossBlock(d, heads, ffn, dropout) for _ in range(decoder_layers))
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, MAX_DIM))
        layer = nn.TransformerDecoderLayer(d, heads, ffn, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.symbol_decoder = nn.TransformerDecoder(layer, symbol_decoder_layers, norm=nn.LayerNorm(d))
        self.symbol_out = nn.Linear(d, v)

    # encoding ---------------------------------------------------------------------------------------
    def encode(self, t_input, data, dim_mask, tokens=None, use_symbols=None):
        """Fused features ``[B, S, d]`` and their key padding mask ``[B, S]`` (True: ignored).

        ``t_input`` ``[n]`` or ``[B, n]``, ``data`` ``[B, n, 3]``, ``dim_mask`` ``[B, 3]`` (bool),
        ``tokens`` ``[B, L]`` ids (``<PAD>`` = 0) or None, ``use_symbols`` ``[B]`` bool (None: all)."""
        B, n, _ = data.shape
        if data.shape[-1] != MAX_DIM or dim_mask.shape != (B, MAX_DIM):
            raise ParameterError(f"PROSE: data must be [B, n, {MAX_DIM}] with dim_mask [B, {MAX_DIM}], "
                                 f"got {tuple(data.shape)} and {tuple(dim_mask.shape)}")
        t = t_input.to(data.dtype).expand(B, n) if t_input.dim() == 1 else t_input.to(data.dtype)
        m = dim_mask.to(data.dtype)
        feats = torch.cat([t[..., None] / self.t_scale, data * m[:, None, :], m[:, None, :].expand(B, n, MAX_DIM)], -1)
        h = self.data_encoder(self.data_in(feats)) + self.modality.weight[0]
        mask = torch.zeros(B, n, dtype=torch.bool, device=data.device)
        if tokens is not None:
            if tokens.shape[0] != B or tokens.shape[1] > self.max_tokens:
                raise ParameterError(f"PROSE: tokens must be [B={B}, L <= {self.max_tokens}], got {tuple(tokens.shape)}")
            use = (torch.ones(B, dtype=torch.bool, device=data.device) if use_symbols is None
                   else use_symbols.to(torch.bool))
            pad = tokens == PAD
            enc_pad = pad.clone()
            enc_pad[:, 0] = False  # never a fully masked row (NaN); such rows are masked below anyway
            L = tokens.shape[1]
            s = self.tok(tokens) + self.pos.weight[:L]
            s = self.symbol_encoder(s, src_key_padding_mask=enc_pad) + self.modality.weight[1]
            drop = pad | ~use[:, None]
            s = torch.where(drop[..., None], torch.zeros_like(s), s)
            h = torch.cat([h, s], 1)
            mask = torch.cat([mask, drop], 1)
        return self.fusion(h, src_key_padding_mask=mask if mask.any() else None), mask

    def predict(self, memory, mask, t_query):
        """The state at ``t_query`` (``[Q]`` or ``[B, Q]``): ``[B, Q, 3]``."""
        B = memory.shape[0]
        t = t_query.to(memory.dtype)
        t = t.expand(B, -1) if t.dim() == 1 else t
        q = self.query_in(t[..., None] / self.t_scale)
        for block in self.decoder:
            q = block(q, memory, mask)
        return self.out(q)

    def symbol_logits(self, memory, mask, target_in):
        """Next-token logits ``[B, L, V]`` for the (``<BOS>``-started) token ids ``target_in`` ``[B, L]``."""
        L = target_in.shape[1]
        if L > self.max_tokens:
            raise ParameterError(f"PROSE: at most {self.max_tokens} target tokens, got {L}")
        x = self.tok(target_in) + self.pos.weight[:L]
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=x.device), 1)
        y = self.symbol_decoder(x, memory, tgt_mask=causal, tgt_key_padding_mask=target_in == PAD,
                                memory_key_padding_mask=mask, tgt_is_causal=True)
        return self.symbol_out(y)

    def forward(self, t_input, data, dim_mask, t_query, tokens=None, use_symbols=None, target_in=None):
        """``(values [B, Q, 3], logits [B, L, V] or None)``."""
        memory, mask = self.encode(t_input, data, dim_mask, tokens, use_symbols)
        values = self.predict(memory, mask, t_query)
        logits = None if target_in is None else self.symbol_logits(memory, mask, target_in)
        return values, logits

    @torch.no_grad()
    def greedy(self, memory, mask, max_len: int | None = None) -> list[list[str]]:
        """Greedy decoding (argmax token by token) from ``<BOS>`` until ``<EOS>`` or ``max_len`` tokens."""
        max_len = min(max_len or self.max_tokens, self.max_tokens)
        B = memory.shape[0]
        seq = torch.full((B, 1), BOS, dtype=torch.long, device=memory.device)
        done = torch.zeros(B, dtype=torch.bool, device=memory.device)
        for _ in range(max_len - 1):
            nxt = self.symbol_logits(memory, mask, seq)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            seq = torch.cat([seq, nxt[:, None]], 1)
            done |= nxt == EOS
            if done.all():
                break
        return [VOCAB.tokens(row) for row in seq]


# -- save / load (safetensors + JSON, never pickle) ---------------------------------------------------
def save_prose(model: PROSE, folder: str | Path) -> Path:
    """``folder/weights.safetensors`` and ``folder/config.json`` (:func:`oplab.checkpoint.save_net`),
    with the token vocabulary it was trained with."""
    from ..checkpoint import save_net

    return save_net(folder, "prose", {"vocab": VOCAB.words, **model.config}, model.state_dict())


def load_prose(folder: str | Path) -> PROSE:
    """A PROSE model written by :func:`save_prose` (in eval mode)."""
    from ..checkpoint import load_net

    def build(config: dict) -> PROSE:
        if config.pop("vocab", None) != VOCAB.words:
            raise DataFileError(f"{folder}: {CONFIG} was written with another token vocabulary")
        return PROSE(**config)

    return load_net(folder, "prose", build, "a PROSE model")


# -- training and evaluation --------------------------------------------------------------------------
def losses(model: PROSE, b: dict, query_idx=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mse, cross-entropy)`` of a batch from :func:`batch` (MSE over the valid dimensions; at the
    query times ``query_idx`` only if given: queries do not attend to each other, so a subset is an
    unbiased, cheaper estimate)."""
    target = b["target"]
    t_query, query = b["t_query"], b["query"]
    if query_idx is not None:
        t_query, query = t_query[query_idx], query[:, query_idx]
    values, logits = model(b["t_input"], b["data"], b["dim_mask"], t_query, b["tokens"], b["use_symbols"],
                           target[:, :-1])
    m = b["dim_mask"][:, None, :].to(values.dtype)
    mse = ((values - query).square() * m).sum() / (m.sum() * values.shape[1])
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1), ignore_index=PAD)
    return mse, ce


def rel_l2(pred: np.ndarray, true: np.ndarray, dim: np.ndarray) -> np.ndarray:
    """Per-sample ``|pred - true| / |true|`` over the query times and the sample's dimensions."""
    m = (np.arange(MAX_DIM)[None, :] < np.asarray(dim)[:, None])[:, None, :]
    num = np.sqrt((((pred - true) * m) ** 2).sum((1, 2)))
    return num / np.maximum(np.sqrt(((true * m) ** 2).sum((1, 2))), 1e-12)


@torch.no_grad()
def predict_values(model: PROSE, ds: dict, symbols: str = "exact", batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = []
    for s in range(0, len(ds["dim"]), batch_size):
        b = batch(ds, np.arange(s, min(s + batch_size, len(ds["dim"]))), symbols)
        memory, mask = model.encode(b["t_input"], b["data"], b["dim_mask"], b["tokens"], b["use_symbols"])
        out.append(model.predict(memory, mask, b["t_query"]).numpy())
    return np.concatenate(out)


@torch.no_grad()
def validation_score(model: PROSE, ds: dict) -> dict:
    """Mean relative L2 with exact and with masked symbols, and the cross-entropy with masked symbols
    (decoding from data alone); ``score`` is their sum (the checkpoint selection criterion)."""
    model.eval()
    with_sym = float(rel_l2(predict_values(model, ds, "exact"), ds["query"], ds["dim"]).mean())
    without = float(rel_l2(predict_values(model, ds, "none"), ds["query"], ds["dim"]).mean())
    idx = np.arange(len(ds["dim"]))
    ce = float(losses(model, batch(ds, idx, "none"))[1])
    return {"rel_l2_symbols": with_sym, "rel_l2_data_only": without, "ce_data_only": ce,
            "score": with_sym + without + ce}


def train_prose(model: PROSE, train: dict, val: dict, *, steps: int = 2000, batch_size: int = 64,
                lr: float = 1e-3, weight_decay: float = 1e-4, symbol_weight: float = 1.0,
                p_noisy: float = 0.3, p_masked: float = 0.3, n_query: int | None = 16, eval_every: int = 200,
                time_budget: float | None = None, seed: int = 0, log=None) -> dict:
    """AdamW with a cosine schedule (warm-up 5%); the symbol input of each sample drawn as masked
    (``p_masked``), noisy (``p_noisy``) or exact; keeps the weights with the lowest
    :func:`validation_score` (validation split only); ``n_query``: random query times per step
    (None: all). Returns the history."""
    steps = check_int("PROSE", "steps", steps)
    batch_size = check_int("PROSE", "batch_size", batch_size)
    eval_every = check_int("PROSE", "eval_every", eval_every)
    if not (0 <= p_noisy and 0 <= p_masked and p_noisy + p_masked <= 1):
        raise ParameterError(f"PROSE: p_noisy, p_masked must be >= 0 with sum <= 1, got {p_noisy}, {p_masked}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)))
    n = len(train["dim"])
    hist = {"step": [], "train_mse": [], "train_ce": [], "val": [], "best_step": None, "steps_done": 0}
    best, best_state = math.inf, None
    t0 = time.perf_counter()
    run_mse = run_ce = 0.0
    for k in range(1, steps + 1):
        model.train()
        idx = rng.choice(n, size=min(batch_size, n), replace=False)
        u = rng.random(len(idx))
        modes = np.where(u < p_masked, "none", np.where(u < p_masked + p_noisy, "noisy", "exact"))
        nq = len(train["t_query"])
        q_idx = None if n_query is None or n_query >= nq else torch.as_tensor(np.sort(rng.choice(nq, n_query, replace=False)))
        mse, ce = losses(model, batch(train, idx, list(modes)), q_idx)
        loss = mse + symbol_weight * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        run_mse += mse.item()
        run_ce += ce.item()
        out_of_time = time_budget is not None and time.perf_counter() - t0 > time_budget
        if k % eval_every == 0 or k == steps or out_of_time:
            cnt = eval_every if k % eval_every == 0 else (k % eval_every)
            v = validation_score(model, val)
            hist["step"].append(k)
            hist["train_mse"].append(run_mse / cnt)
            hist["train_ce"].append(run_ce / cnt)
            hist["val"].append(v)
            run_mse = run_ce = 0.0
            if v["score"] < best:
                best, best_state, hist["best_step"] = v["score"], copy.deepcopy(model.state_dict()), k
            if log:
                log(f"step {k:5d}  mse {hist['train_mse'][-1]:.4f}  ce {hist['train_ce'][-1]:.3f}  "
                    f"val relL2 sym {v['rel_l2_symbols']:.4f} data {v['rel_l2_data_only']:.4f} ce {v['ce_data_only']:.3f}"
                    f"  [{time.perf_counter() - t0:.0f}s]")
        hist["steps_done"] = k
        if out_of_time:
            break
    hist["train_seconds"] = time.perf_counter() - t0
    if best_state is not None:
        model.load_state_dict(best_state)
    return hist


def decoded_metrics(decoded: list[list[str]], ds: dict, tol: float = 0.05) -> dict:
    """Per-sample decoding scores: ``exact`` (token for token), ``valid`` (parses, right dimension),
    ``structure`` (same skeleton), ``within_tol`` (same skeleton, every coefficient within ``tol``
    relative), and ``traj_rel_l2``: the decoded system integrated from the true ``y(0)`` (DOP853,
    ``rtol=1e-6``), relative L2 at the query times (``inf`` when it does not parse, has the wrong
    dimension, fails or leaves ``|y| <= 100``)."""
    n = len(decoded)
    out = {k: np.zeros(n, bool) for k in ("exact", "valid", "structure", "within_tol")}
    out["traj_rel_l2"] = np.full(n, np.inf)
    n_in = len(ds["t_input"])
    for i, toks in enumerate(decoded):
        true = ds["tokens"][i]
        out["exact"][i] = toks == true
        try:
            system = decode_system(toks)
        except ParameterError:
            continue
        d = int(ds["dim"][i])
        if len(system) != d:
            continue
        try:
            y = solve_system(system, ds["y0"][i, :d], ds["t"], rtol=1e-6, atol=1e-9, bound=100.0,
                             stop_early=True)
        except ParameterError:  # a variable beyond the dimension
            continue
        out["valid"][i] = True
        if skeleton(toks) == skeleton(true):
            out["structure"][i] = True
            c_hat = np.array(coefficients(system))
            c = np.array(coefficients(ds["systems"][i]))
            out["within_tol"][i] = bool(np.all(np.abs(c_hat - c) <= tol * np.abs(c)))
        if y is not None:
            q = y[n_in:]
            tq = ds["query"][i, :, :d].astype(np.float64)
            out["traj_rel_l2"][i] = np.linalg.norm(q - tq) / max(np.linalg.norm(tq), 1e-12)
    return out


@torch.no_grad()
def decode(model: PROSE, ds: dict, symbols: str = "none", batch_size: int = 256) -> list[list[str]]:
    """Greedy decoding of every sample of ``ds`` with the given symbol input."""
    model.eval()
    out: list[list[str]] = []
    for s in range(0, len(ds["dim"]), batch_size):
        b = batch(ds, np.arange(s, min(s + batch_size, len(ds["dim"]))), symbols)
        memory, mask = model.encode(b["t_input"], b["data"], b["dim_mask"], b["tokens"], b["use_symbols"])
        out.extend(model.greedy(memory, mask))
    return out
