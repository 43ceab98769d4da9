"""Weight quantisation that stays pickle-free: integer weights and float scales in safetensors.

Uniform symmetric quantisation with one scale per output channel: the uniform quantisation
with scaling and bucketing of Polino, Pascanu & Alistarh 2018, "Model compression via
distillation and quantization" (ICLR), with each output channel as a bucket and the scaling
symmetric about zero (zero is exact; one scale, no offset), deterministic rounding::

    s = max |w_c| / q_max,   q = clamp(round(w / s), -q_max, q_max),   w ~ s q,   q_max = 2^(b-1) - 1,

so every dequantised weight is within ``s / 2`` of the original. :func:`fake_quantize` is the same
map in the forward pass with a straight-through gradient (identity inside the clipping range,
zero outside): the forward pass of Polino et al.'s quantized distillation, whose gradient,
taken at the quantised weights, updates the full-precision ones.

Where it applies (:func:`quantizable`): every floating-point parameter of the model with two or
more axes, i.e. all the weight matrices and tensors. For the FNO that is the spectral weights
(complex, stored as real ``[in, out, *modes, 2]``: the real and imaginary parts share one scale per
output channel; factorised TFNO cores and factors per leading index), the pointwise skips and the
lifting and projection maps (per output channel): 99.98% of the parameters of the Darcy-64 FNO
(modes 12, width 32). Per output channel, 8 bits moved that model's predictions by 0.09% (relative
L2) and its error not at all; a scale per (input, output) channel pair did no better. At 4 bits
post-training quantisation raised that model's test error 2.8x, and quantised distillation started
from its weights brought it back to 1.03x at the same size (``benchmarks/compress.md``). Biases,
normaliser statistics and other one-axis tensors stay float32. (``torch.ao``'s dynamic
quantisation would cover ``nn.Linear`` only, none of the FNO's layers, and saves a pickle.)

A quantised ``weights.safetensors`` holds ``NAME#scale`` as float32 (the channel axis kept, the
others of size 1, so ``q.float() * scale`` broadcasts) and ``NAME`` as

* int8 of ``NAME``'s shape, one value per byte, at 8 bits (and in files written before packing);
* uint8 of ``ceil(n * bits / 8)`` bytes below 8 bits (:func:`pack`): the ``n`` values in row-major
  order, each as ``q + q_max`` (``0 .. 2^bits - 2``) in ``bits`` bits, packed least significant bit
  first into one bit stream (value ``k`` in stream bits ``k*bits .. k*bits + bits - 1``, stream bit
  ``j`` in bit ``j % 8`` of byte ``j // 8``; at 4 bits: two values per byte, the even one in the low
  nibble); ``NAME``'s shape is in the header.

The header says so: ``__metadata__["oplab.quantized"]`` is JSON ``{"bits", "scheme", "tensors":
[NAME, ...]}``, with ``"packing"`` and ``"shapes": {NAME: shape}`` when packed.
:func:`oplab.checkpoint.load_weights` dequantises such a file when it reads it, so ``oplab.load`` and
everything built on it take a quantised run as it is. Nothing here imports the training code.
"""

from __future__ import annotations

import copy
import json
import math

import torch

from ..errors import DataFileError, ParameterError

#: the safetensors header key that marks a quantised checkpoint
HEADER = "oplab.quantized"
#: the suffix of a quantised tensor's scale
SCALE = "#scale"
SCHEME = "symmetric, one scale per output channel"
#: how values below 8 bits are laid out (module docstring)
PACKING = "q + q_max in bits-bit fields, row-major, least significant bit first"


def check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ParameterError(f"bits must be an int from 2 to 8, got {bits!r}")
    return bits


def q_max(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def channel_scale(w: torch.Tensor, bits: int = 8, axis: int = 0) -> torch.Tensor:
    """``max |w|`` over every axis but ``axis``, divided by ``q_max`` (1 for an all-zero channel),
    shaped to broadcast against ``w``; float32, no gradient."""
    dims = [d for d in range(w.ndim) if d != axis]
    amax = w.detach().abs().amax(dim=dims, keepdim=True).float()
    return torch.where(amax > 0, amax / q_max(bits), torch.ones_like(amax))


def quantize(w: torch.Tensor, bits: int = 8, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)``: int8 values in ``[-q_max, q_max]`` and the per-channel scale (module docstring)."""
    scale = channel_scale(w, bits, axis)
    m = q_max(bits)
    q = torch.clamp(torch.round(w.detach().float() / scale), -m, m).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale


def packed_bytes(numel: int, bits: int) -> int:
    """Bytes of ``numel`` values packed at ``bits`` bits."""
    return -(-numel * bits // 8)


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """The values ``q`` (integers in ``[-q_max, q_max]``) packed into ``ceil(n * bits / 8)`` uint8
    bytes, one bit stream, least significant bit first (module docstring)."""
    u = (q.reshape(-1).to(torch.int16) + q_max(bits)).to(torch.uint8)
    stream = ((u.unsqueeze(1) >> torch.arange(bits, dtype=torch.uint8)) & 1).reshape(-1)
    stream = torch.cat([stream, stream.new_zeros((-len(stream)) % 8)]).view(-1, 8)
    return (stream << torch.arange(8, dtype=torch.uint8)).sum(1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, shape) -> torch.Tensor:
    """The int8 values of shape ``shape`` that :func:`pack` packed into ``packed``."""
    n = 1
    for s in shape:
        n *= int(s)
    stream = ((packed.reshape(-1, 1) >> torch.arange(8, dtype=torch.uint8)) & 1).reshape(-1)[: n * bits]
    u = (stream.view(n, bits).to(torch.int16) << torch.arange(bits, dtype=torch.int16)).sum(1)
    return (u - q_max(bits)).to(torch.int8).view(*shape)


def fake_quantize(w: torch.Tensor, bits: int = 8, axis: int = 0, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``scale * clamp(round(w / scale), -q_max, q_max)`` in the forward pass; the gradient is the
    straight-through estimator (Polino et al. 2018, quantized distillation): identity where
    ``|w / scale| <= q_max``, zero where the value was clipped. ``scale``: default
    :func:`channel_scale` (nothing clips)."""
    scale = channel_scale(w, bits, axis) if scale is None else scale
    m = q_max(bits)
    v = torch.clamp(w / scale, -m, m)
    return (v + (torch.round(v) - v).detach()) * scale


def quantizable(module: torch.nn.Module) -> dict[str, int]:
    """``{parameter name: channel axis}`` of the weights to quantise (module docstring): every
    floating-point parameter with two or more axes; the axis is 1 (output channels) for a dense
    spectral weight ``[in, out, *modes, 2]``, else 0 (``[out, in]`` of linear and pointwise maps,
    the leading index of factors)."""
    from ..layers.spectral import DenseWeight

    plan = {}
    for prefix, mod in module.named_modules():
        for name, p in mod.named_parameters(recurse=False):
            if p.is_floating_point() and p.ndim >= 2:
                plan[f"{prefix}.{name}" if prefix else name] = 1 if isinstance(mod, DenseWeight) else 0
    return plan


def quantize_state(weights: dict, plan: dict[str, int], bits: int = 8) -> tuple[dict, dict]:
    """A state dict with the tensors of ``plan`` quantised: ``(tensors, safetensors metadata)``."""
    check_bits(bits)
    tensors = {k: v.detach() for k, v in weights.items()}
    header = {"bits": bits, "scheme": SCHEME, "tensors": sorted(plan)}
    for name, axis in plan.items():
        tensors[name], tensors[name + SCALE] = quantize(weights[name], bits, axis)
    if bits < 8:
        header.update(packing=PACKING, shapes={name: list(weights[name].shape) for name in sorted(plan)})
        for name in plan:
            tensors[name] = pack(tensors[name], bits)
    return tensors, {HEADER: json.dumps(header)}


def dequantize_state(tensors: dict, header: str, path) -> dict:
    """The float state dict of a quantised checkpoint ``path`` (its tensors and the JSON of its
    ``oplab.quantized`` header); a malformed one is one DataFileError naming ``path``."""
    try:
        meta = json.loads(header)
        names, bits, shapes = meta["tensors"], meta.get("bits", 8), meta.get("shapes", {})
        assert isinstance(names, list) and all(isinstance(n, str) for n in names) and isinstance(shapes, dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise DataFileError(f"{path}: the {HEADER!r} header is not {{'tensors': [names], ...}} JSON") from None
    out = {k: v for k, v in tensors.items() if not k.endswith(SCALE)}
    for name in names:
        q, scale = tensors.get(name), tensors.get(name + SCALE)
        if q is None or scale is None:
            raise DataFileError(f"{path}: quantised tensor {name!r} is missing; expected its values and a "
                                f"broadcasting float scale {name + SCALE!r}")
        if q.dtype == torch.uint8:  # packed below 8 bits
            shape = shapes.get(name)
            ok_shape = isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)
            if not (isinstance(bits, int) and 2 <= bits < 8 and ok_shape and q.ndim == 1
                    and q.numel() == packed_bytes(math.prod(shape), bits)):
                raise DataFileError(f"{path}: quantised tensor {name!r} is {q.numel()} packed bytes; the header "
                                    f"gives bits {bits!r} and shape {shape!r}, which do not fit them")
            q = unpack(q, bits, shape)
            if q.numel() and int(q.abs().max()) > q_max(bits):
                raise DataFileError(f"{path}: quantised tensor {name!r} holds values outside the {bits}-bit range")
        if q.dtype != torch.int8 or scale.ndim != q.ndim or not all(
                s in (1, n) for s, n in zip(scale.shape, q.shape)):
            raise DataFileError(f"{path}: quantised tensor {name!r} is {str(q.dtype).removeprefix('torch.')} "
                                f"{list(q.shape)} with scale {list(scale.shape)}; expected int8 values (or uint8 "
                                f"packed ones) and a broadcasting float scale {name + SCALE!r}")
        out[name] = dequantize(q, scale)
    return out


@torch.no_grad()
def quantized_copy(module: torch.nn.Module, bits: int = 8, plan: dict[str, int] | None = None) -> torch.nn.Module:
    """A copy of ``module`` whose weights (``plan``, default :func:`quantizable`) are replaced by their
    dequantised int-``bits`` values: what loading the quantised checkpoint gives."""
    module = copy.deepcopy(module)
    for name, axis in (quantizable(module) if plan is None else plan).items():
        p = module.get_parameter(name)
        p.copy_(dequantize(*quantize(p, bits, axis)))
    return module
