"""Roofline of one training step of the quickstart's FNO (issue 22, item 1).

    python benchmarks/roofline_fno.py                 # 2 threads, then 1 thread (about a minute)
    python benchmarks/roofline_fno.py --threads 2

The model, batch, loss and optimizer are the quickstart's (``oplab quickstart``: Darcy at 64x64,
FNO modes 12x12, width 32, 4 layers, lifting/projection 128, positional channels, batch 10,
relative L2 loss with the grid's quadrature, fused AdamW lr 1e-3 / weight decay 1e-4), built with
the same functions the training run uses (``derive``, ``models.from_config``, ``Bundle``, the
trainer's optimizer); the inputs are random fields of the right shape (the cost does not depend on
the values). Each thread count runs in a fresh process with ``OMP_NUM_THREADS`` set.

Per process: the machine's peaks (measured before and after the step; the best of the two is the roof) (fp32 ``torch.mm``, ``rfft2``/``fft2`` at the FNO's FFT size
[batch, width, 64, 64], copy and add of 128 MiB and of the largest activation's 21 MB), the unprofiled step time, then a few steps under
``torch.profiler`` (CPU, record_shapes). Each profiled event's *self* time goes to one part, by its
outermost aten operator (the op the model code called): FFT (``fft_*``), complex bmm (spectral
contraction), real bmm/baddbmm (the 1x1 channel maps: lifting, skips, projection), GELU,
elementwise (adds, normalisers, loss, bias-gradient sums), layout copies (cat, contiguous, zero
fill), the optimizer (everything under ``Optimizer.step``), and other (views, dispatcher and
autograd-engine bookkeeping, Python). Forward and backward are told apart by ``record_function``
ranges around the forward+loss and ``loss.backward()``.

Analytic counts (:func:`analytic`), per step, conventions:

* FFT: ``5 N log2 N`` flops per complex transform of N points, half that (``2.5 N log2 N``) for a
  real-to-complex or complex-to-real one, counted at the nominal length even where most inputs are
  zero (the irfft of 12 retained columns). Backward: irfft -> rfft, ifft -> fft, and rfftn -> a
  full complex 2D c2c transform (torch pads the half spectrum and runs ``_fft_c2c``: twice the
  forward r2c flops).
* complex matmul: 8 flops per complex multiply-add; real matmul 2 per multiply-add. Backward of a
  matmul = two matmuls of the same size (input and weight gradient), except the first lifting
  layer, whose input needs no gradient.
* GELU (exact, erf): 10 flops/element forward, 15 backward (a nominal count: erf is a polynomial).
* fused AdamW: 14 flops and 28 bytes per (real) parameter: reads param, grad, exp_avg, exp_avg_sq
  (16 B), writes param, exp_avg, exp_avg_sq (12 B).
* bytes: compulsory traffic of each op (every operand read once, every result written once; fp32
  4 B, complex64 8 B), no reuse between ops; layout copies count their read and write.

Fractions of the roof: complex and real matmuls against the ``torch.mm`` peak, FFTs against the
``rfft2`` peak at the same size, everything else (GELU, elementwise, layout, optimizer) as achieved
GB/s over the best copy/add bandwidth measured (128 MiB or 21 MB; compulsory bytes both ways, so a
part whose operands stay in cache can pass 100%). Writes ``benchmarks/roofline_fno.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# the quickstart's shapes (src/oplab/quickstart.py): batch, grid, channels
BATCH, RES = 10, 64

PARTS = ["fft", "contraction", "pointwise", "activation", "elementwise", "layout", "optimizer", "other"]
LABELS = {"fft": "FFT (rfftn/ifft/irfft)", "contraction": "spectral contraction (complex bmm)",
          "pointwise": "1x1 maps (real bmm)", "activation": "GELU", "elementwise": "elementwise+loss+reductions",
          "layout": "layout copies (cat/contiguous/pad)", "optimizer": "optimizer (fused AdamW)",
          "other": "other (views, autograd, Python)"}
ROOF = {"fft": "fft", "contraction": "matmul", "pointwise": "matmul"}  # the rest: bandwidth


# ------------------------------------------------------------------------ the step
def build():
    """The quickstart's bundle, optimizer, loss and a random batch."""
    import torch

    from oplab import losses, models, problems
    from oplab.models.presets import derive
    from oplab.predictor import Bundle
    from oplab.quickstart import DEFAULT_MODEL
    from oplab.train.config import TrainConfig
    from oplab.train.trainer import _optimizer

    problem = problems.create("darcy", RES)
    axes = problem.output_axes()
    coords = tuple(torch.tensor(a.coords(), dtype=torch.float32) for a in axes)
    periodic = tuple(a.periodic for a in axes)
    model_cfg = {**DEFAULT_MODEL, "modes": [min(m, RES // 2) for m in DEFAULT_MODEL["modes"]]}
    shape = (1100, 1, RES, RES)  # quickstart: n_train + n_val samples, one channel in and out
    model_cfg = derive(model_cfg, shape, shape, coords, periodic)
    cfg = TrainConfig(epochs=100, budget_minutes=6.0, batch_size=BATCH, lr=1e-3, scheduler="cosine",
                      optimizer="adamw", eval_every=5, device="cpu")
    torch.manual_seed(cfg.seed)
    bundle = Bundle(models.from_config(model_cfg), 1, 1)
    gen = torch.Generator().manual_seed(0)
    x = torch.where(torch.rand(BATCH, 1, RES, RES, generator=gen) > 0.5, 12.0, 3.0)  # Darcy-like coefficient
    y = torch.rand(BATCH, 1, RES, RES, generator=gen)
    bundle.in_norm.fit(x)
    bundle.out_norm.fit(y)
    params = [p for p in bundle.parameters() if p.requires_grad]
    optimizer = _optimizer(cfg, params, torch.device("cpu"))
    return bundle, optimizer, losses.get(cfg.loss), x, y, coords, periodic, model_cfg, params


def make_step(bundle, optimizer, loss_fn, x, y, coords, periodic):
    from torch.profiler import record_function

    def step():  # as Trainer._fit: forward + loss, zero_grad, backward, step, loss.item()
        with record_function("roofline.fwd"):
            loss = loss_fn(bundle(x, coords).float(), y, coords, periodic)
        optimizer.zero_grad(set_to_none=True)
        with record_function("roofline.bwd"):
            loss.backward()
        optimizer.step()
        return loss.item()

    return step


# ------------------------------------------------------------------------ analytic counts
def analytic(model_cfg: dict, n_params: int) -> dict:
    """FLOPs and bytes of one step per (part, phase); see the module docstring for the conventions."""
    B, S = BATCH, RES * RES
    N = B * S  # grid points in the batch
    W = model_cfg["width"]
    L = model_cfg.get("n_layers", 4)
    H_in = model_cfg.get("lifting_channels", 128) or 0
    H_out = model_cfg.get("projection_channels", 128) or 0
    c_in = model_cfg["in_channels"] + (2 if model_cfg.get("positional", True) else 0)
    m1, m2 = model_cfg["modes"]
    M = 2 * m1 * m2  # retained modes: 2*m1 rows x m2 columns
    half = RES // 2 + 1
    lg = math.log2(RES)
    f4, c8 = 4, 8
    out = {(p, ph): [0.0, 0.0] for p in PARTS for ph in ("fwd", "bwd", "step")}

    def add(part, phase, flops, nbytes):
        out[(part, phase)][0] += flops
        out[(part, phase)][1] += nbytes

    # FFTs, per layer
    fields = B * W
    r2c_2d = 2.5 * S * math.log2(S) * fields
    c2c_2d = 5.0 * S * math.log2(S) * fields
    ifft_cols = 5.0 * RES * lg * fields * m2  # along the rows, only the m2 retained columns
    irfft_rows = 2.5 * RES * lg * fields * RES  # along the last axis, every row
    for _ in range(L):
        add("fft", "fwd", r2c_2d, fields * (S * f4 + RES * half * c8))
        add("fft", "fwd", ifft_cols, 2 * fields * RES * m2 * c8)
        add("fft", "fwd", irfft_rows, fields * (RES * m2 * c8 + S * f4))
        add("fft", "bwd", irfft_rows, fields * (S * f4 + RES * half * c8))  # rfft of the gradient
        add("fft", "bwd", ifft_cols, 2 * fields * RES * m2 * c8)
        add("fft", "bwd", c2c_2d, 2 * fields * S * c8)  # full c2c on the zero-padded half spectrum

    # spectral contraction: [M, B, I] @ [M, I, O], complex
    for _ in range(L):
        fl = 8.0 * M * B * W * W
        add("contraction", "fwd", fl, (2 * M * B * W + M * W * W) * c8)
        add("contraction", "bwd", 2 * fl, 2 * (2 * M * B * W + M * W * W) * c8)

    # 1x1 maps (baddbmm forward; bmm for input and weight gradients; bias sums are elementwise)
    maps = ([(c_in, H_in), (H_in, W)] if H_in else [(c_in, W)]) + [(W, W)] * L
    maps += [(W, H_out), (H_out, model_cfg["out_channels"])] if H_out else [(W, model_cfg["out_channels"])]
    for k, (ci, co) in enumerate(maps):
        fl = 2.0 * ci * co * N
        if 0 < k - (2 if H_in else 1) + 1 <= L:  # a skip W v: accumulated into K v (+ b as K's zero frequency)
            add("pointwise", "fwd", fl + co * N, f4 * (ci * N + 2 * co * N + ci * co + co))
        else:
            add("pointwise", "fwd", fl + co * N, f4 * (ci * N + co * N + ci * co + co))
        if k > 0:  # gradient of the input (the lifting's input needs none)
            add("pointwise", "bwd", fl, f4 * (co * N + ci * co + ci * N))
        add("pointwise", "bwd", fl, f4 * (co * N + ci * N + B * ci * co))  # weight gradient per sample
        add("elementwise", "bwd", co * N + B * ci * co, f4 * (co * N + B * ci * co))  # bias sum, batch sum

    # GELU: after the lifting's hidden layer, the first L-1 Fourier layers, the projection's hidden layer
    acts = ([H_in] if H_in else []) + [W] * (L - 1) + ([H_out] if H_out else [])
    for c in acts:
        add("activation", "fwd", 10.0 * c * N, 2 * f4 * c * N)
        add("activation", "bwd", 15.0 * c * N, 3 * f4 * c * N)

    # elementwise: the skips' gradient sums, normalisers and loss on [B, 1, S] (the forward sum K v + W v + b
    # is the skip GEMM's accumulation since issue 22: counted with the 1x1 maps)
    for _ in range(L):
        add("elementwise", "bwd", W * N, 3 * f4 * W * N)  # v feeds K and W: the two gradients add
        add("elementwise", "bwd", 2 * fields * RES * (half - 2), 2 * c8 * fields * RES * (half - 2))  # c2r bwd: x2
    add("elementwise", "fwd", 11 * N, 11 * 3 * f4 * N)  # encode 2, decode 2, loss 7 ops
    add("elementwise", "bwd", 10 * N, 10 * 3 * f4 * N)

    # layout copies (read + write of each copy; zero fills write only)
    add("layout", "fwd", 0, 2 * f4 * c_in * N)  # positional channels: cat
    for _ in range(L):
        add("layout", "fwd", 0, 2 * fields * M * c8)  # gather the retained rows (cat)
        add("layout", "fwd", 0, 2 * fields * M * c8)  # [B, I, M] -> [M, B, I] contiguous
        add("layout", "fwd", 0, 2 * M * W * W * c8)  # the weight mode-major, contiguous
        add("layout", "fwd", 0, fields * (RES - 2 * m1) * m2 * c8 + fields * (M + RES * m2) * c8)  # scatter: zeros + cat
        add("layout", "bwd", 0, 2 * M * W * W * c8 + 2 * fields * M * c8)  # gradients back to [I, O, *M], [B, I, *M]
        add("layout", "bwd", 0, 2 * fields * M * c8)  # scatter backward (narrow copies)
        add("layout", "bwd", 0, 2 * fields * RES * m2 * c8 + fields * M * c8)  # gather backward (pad to 64 rows)
        add("layout", "bwd", 0, fields * RES * half * c8 + fields * RES * m2 * c8)  # slice [:m2] backward (pad to 33)
        add("layout", "bwd", 0, fields * S * c8 + 2 * fields * RES * half * c8)  # rfftn backward: zero-pad to 64x64

    add("optimizer", "step", 14.0 * n_params, 28.0 * n_params)
    return {f"{p}/{ph}": {"flops": v[0], "bytes": v[1]} for (p, ph), v in out.items() if v[0] or v[1]}


# ------------------------------------------------------------------------ peaks
def best_time(f, reps: int, warm: int = 1) -> float:
    for _ in range(warm):
        f()
    times = []
    for _ in range(reps):
        tic = time.perf_counter()
        f()
        times.append(time.perf_counter() - tic)
    return min(times)


def peaks(width: int) -> dict:
    import torch

    n = 1536
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm = 2.0 * n**3 / best_time(lambda: torch.mm(a, b), 3) / 1e9
    x = torch.randn(BATCH, width, RES, RES)
    S = RES * RES
    rfft = 2.5 * S * math.log2(S) * BATCH * width / best_time(lambda: torch.fft.rfft2(x), 10) / 1e9
    xc = torch.randn(BATCH, width, RES, RES, dtype=torch.complex64)
    cfft = 5.0 * S * math.log2(S) * BATCH * width / best_time(lambda: torch.fft.fft2(xc), 10) / 1e9
    big = torch.randn(32 * 2**20)  # 128 MiB
    dst, other = torch.empty_like(big), torch.randn_like(big)
    nbytes = big.numel() * 4
    copy = 2 * nbytes / best_time(lambda: dst.copy_(big), 5) / 1e9
    addbw = 3 * nbytes / best_time(lambda: torch.add(big, other, out=dst), 5) / 1e9
    # the same at the size of the model's largest activation ([B, 128, 64, 64], 21 MB: within the L3 cache)
    act = torch.randn(BATCH, 128, RES, RES)
    act_dst, act_other = torch.empty_like(act), torch.randn_like(act)
    abytes = act.numel() * 4
    copy_act = 2 * abytes / best_time(lambda: act_dst.copy_(act), 10) / 1e9
    add_act = 3 * abytes / best_time(lambda: torch.add(act, act_other, out=act_dst), 10) / 1e9
    gelu_act = 2 * abytes / best_time(lambda: torch.nn.functional.gelu(act), 10) / 1e9
    # the contraction alone, unprofiled: forward, and forward + backward
    M = 288
    xm = torch.randn(M, BATCH, width, dtype=torch.complex64, requires_grad=True)
    wm = torch.randn(M, width, width, dtype=torch.complex64, requires_grad=True)
    fl = 8.0 * M * BATCH * width * width
    fwd = best_time(lambda: torch.bmm(xm, wm), 10)
    g = torch.randn(M, BATCH, width, dtype=torch.complex64)
    fb = best_time(lambda: torch.autograd.grad(torch.bmm(xm, wm), (xm, wm), g), 5)
    # the gradient as the model hands it back: the bmm's output is permuted to [B, O, M] and reshaped,
    # so its gradient arrives as a permuted (non-contiguous) view of a contiguous [B, O, M] tensor
    gp = torch.randn(BATCH, width, M, dtype=torch.complex64).permute(2, 0, 1)
    fbp = best_time(lambda: torch.autograd.grad(torch.bmm(xm, wm), (xm, wm), gp), 3)
    return {"matmul_gflops": mm, "rfft2_gflops": rfft, "fft2_c2c_gflops": cfft, "copy_gbs": copy, "add_gbs": addbw,
            "copy_act_gbs": copy_act, "add_act_gbs": add_act, "gelu_act_gbs": gelu_act,
            "bandwidth_gbs": max(copy, addbw, copy_act, add_act), "mm_size": n, "fft_shape": [BATCH, width, RES, RES],
            "contraction_alone": {"fwd_ms": fwd * 1e3, "fwd_gflops": fl / fwd / 1e9, "fwd_bwd_ms": fb * 1e3,
                                  "bwd_ms": (fb - fwd) * 1e3, "bwd_gflops": 2 * fl / max(fb - fwd, 1e-9) / 1e9,
                                  "bwd_ms_permuted_grad": (fbp - fwd) * 1e3,
                                  "bwd_gflops_permuted_grad": 2 * fl / max(fbp - fwd, 1e-9) / 1e9}}


# ------------------------------------------------------------------------ measurement
FFT_OPS = ("aten::fft_", "aten::_fft_")
MATMUL_OPS = {"aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm", "aten::matmul", "aten::einsum"}
ACT_OPS = {"aten::gelu", "aten::gelu_backward"}
LAYOUT_OPS = {"aten::cat", "aten::clone", "aten::contiguous", "aten::copy_", "aten::new_zeros", "aten::zeros",
              "aten::zero_", "aten::fill_", "aten::constant_pad_nd", "aten::slice_backward", "aten::stack",
              "aten::index_select", "aten::_to_copy", "aten::to", "aten::new_empty_strided"}
ELEMENTWISE_OPS = {"aten::add", "aten::add_", "aten::sub", "aten::rsub", "aten::mul", "aten::mul_", "aten::div",
                   "aten::div_", "aten::pow", "aten::square", "aten::sqrt", "aten::sum", "aten::mean",
                   "aten::clamp_min", "aten::clamp", "aten::neg", "aten::where", "aten::exp", "aten::abs",
                   "aten::sgn", "aten::masked_fill"}


def classify(event) -> tuple[str, str]:
    """(part, phase) of a profiled event, from its ancestors and its outermost aten operator."""
    chain, p = [event], event.cpu_parent
    while p is not None:
        chain.append(p)
        p = p.cpu_parent
    names = [e.name for e in chain]
    if any(n.startswith("Optimizer.step") for n in names):
        return "optimizer", "step"
    phase = "bwd" if "roofline.bwd" in names else "fwd" if "roofline.fwd" in names else "step"
    outer = next((e for e in reversed(chain) if e.name.startswith("aten::")), None)
    if outer is None:
        return "other", phase
    on = outer.name
    if on.startswith(FFT_OPS):
        return "fft", phase
    if on in MATMUL_OPS:
        dtypes = " ".join(str(d) for d in (getattr(outer, "input_dtypes", None) or []))
        return ("contraction" if "complex" in dtypes else "pointwise"), phase
    if on in ACT_OPS:
        return "activation", phase
    if event.name in LAYOUT_OPS:
        return "layout", phase
    if event.name in ELEMENTWISE_OPS or on in ELEMENTWISE_OPS:
        return "elementwise", phase
    return "other", phase


def measure(threads: int, steps: int, profiled: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(threads)
    bundle, optimizer, loss_fn, x, y, coords, periodic, model_cfg, params = build()
    n_params = sum(p.numel() for p in params)
    step = make_step(bundle, optimizer, loss_fn, x, y, coords, periodic)
    before = peaks(model_cfg["width"])
    for _ in range(3):
        step()
    walls = []
    for _ in range(steps):
        tic = time.perf_counter()
        step()
        walls.append(time.perf_counter() - tic)
    walls.sort()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        tic = time.perf_counter()
        for _ in range(profiled):
            step()
        profiled_wall = (time.perf_counter() - tic) / profiled
    after = peaks(model_cfg["width"])
    # the roofs: the best of the two measurements (before and after the step; the machine is shared)
    peak = {k: max(before[k], after[k]) if isinstance(before[k], float) else before[k] for k in before}
    peak["contraction_alone"] = {k: min(before["contraction_alone"][k], after["contraction_alone"][k]) if "ms" in k
                                 else max(before["contraction_alone"][k], after["contraction_alone"][k])
                                 for k in before["contraction_alone"]}
    peak["before_after"] = {k: [before[k], after[k]] for k in before if isinstance(before[k], float)}
    times: dict[str, float] = {}
    coarse: dict[str, float] = {}
    detail = {"pointwise_bias_prefill_ms": 0.0, "pointwise_bwd_outer_product_ms": 0.0, "contraction_bwd_bmm_kernel_ms": 0.0,
              "contraction_bwd_per_matrix_copies_ms": 0.0}
    for e in prof.events():
        part, phase = classify(e)
        if part == "pointwise" and phase == "fwd" and e.name == "aten::copy_":  # baddbmm copies the broadcast
            detail["pointwise_bias_prefill_ms"] += e.self_cpu_time_total / 1e3 / profiled  # bias into its result
        if (part == "pointwise" and phase == "bwd" and e.name == "aten::bmm" and e.input_shapes
                and len(e.input_shapes[0]) == 3 and e.input_shapes[0][2] == 1):  # [B, C, 1] @ [B, 1, S]: an outer
            detail["pointwise_bwd_outer_product_ms"] += e.self_cpu_time_total / 1e3 / profiled  # product (K = 1)
        if part == "contraction" and phase == "bwd":  # bmm's own time vs the per-matrix select/clone loop inside
            k = "contraction_bwd_bmm_kernel_ms" if e.name == "aten::bmm" else "contraction_bwd_per_matrix_copies_ms"
            detail[k] += e.self_cpu_time_total / 1e3 / profiled
        key = f"{part}/{phase}"
        times[key] = times.get(key, 0.0) + e.self_cpu_time_total / 1e3 / profiled  # ms per step
        group = {"fft": "fft ops", "contraction": "einsum/bmm/matmul", "pointwise": "einsum/bmm/matmul",
                 "optimizer": "optimizer"}.get(part, "elementwise" if part in ("activation", "elementwise", "layout")
                                               else "other")
        coarse[group] = coarse.get(group, 0.0) + e.self_cpu_time_total / 1e3 / profiled
    return {"threads": threads, "torch": torch.__version__, "n_params": n_params, "model": model_cfg,
            "step_ms_unprofiled": {"median": walls[len(walls) // 2] * 1e3, "min": walls[0] * 1e3},
            "step_ms_profiled": profiled_wall * 1e3, "peaks": peak, "measured_ms": times, "coarse_ms": coarse, "detail_ms": detail,
            "analytic": analytic(model_cfg, n_params)}


# ------------------------------------------------------------------------ report
def rows(result: dict) -> list[dict]:
    peak, an, ms = result["peaks"], result["analytic"], result["measured_ms"]
    total = sum(ms.values())
    keys = [f"{p}/{ph}" for p in PARTS for ph in ("fwd", "bwd", "step") if f"{p}/{ph}" in an or f"{p}/{ph}" in ms]
    out = []
    for key in keys:
        part, phase = key.split("/")
        flops = an.get(key, {}).get("flops", 0.0)
        nbytes = an.get(key, {}).get("bytes", 0.0)
        t = ms.get(key, 0.0)
        if t < 1e-3 and not flops and not nbytes:
            continue
        gflops = flops / (t * 1e6) if t > 0 else 0.0
        gbs = nbytes / (t * 1e6) if t > 0 else 0.0
        roof = ROOF.get(part, "bandwidth" if part != "other" else "-")
        if roof == "matmul":
            frac = gflops / peak["matmul_gflops"]
        elif roof == "fft":
            frac = gflops / peak["rfft2_gflops"]
        else:
            frac = gbs / peak["bandwidth_gbs"] if nbytes else None
        out.append({"part": part, "phase": phase, "label": LABELS[part], "flops": flops, "bytes": nbytes, "ms": t,
                    "gflops": gflops, "gbs": gbs, "roof": roof, "fraction_of_roof": frac, "share": t / total})
    return out


def print_table(result: dict) -> None:
    peak = result["peaks"]
    ca = peak["contraction_alone"]
    print(f"\n== {result['threads']} thread(s), torch {result['torch']}: {result['n_params']:,} parameters; step "
          f"{result['step_ms_unprofiled']['median']:.1f} ms unprofiled (min {result['step_ms_unprofiled']['min']:.1f}), "
          f"{result['step_ms_profiled']:.1f} ms under the profiler")
    print(f"peaks: matmul {peak['matmul_gflops']:.1f} GFLOP/s (mm {peak['mm_size']}^2), rfft2 {peak['rfft2_gflops']:.2f} "
          f"GFLOP/s and fft2 c2c {peak['fft2_c2c_gflops']:.2f} at {peak['fft_shape']}, copy {peak['copy_gbs']:.1f} GB/s, "
          f"add {peak['add_gbs']:.1f} GB/s (128 MiB); at [10, 128, 64, 64] copy {peak['copy_act_gbs']:.1f}, add "
          f"{peak['add_act_gbs']:.1f}, GELU {peak['gelu_act_gbs']:.1f} GB/s; bandwidth roof {peak['bandwidth_gbs']:.1f} GB/s")
    print("peaks before/after the step: " + ", ".join(f"{k} {a:.1f}/{b:.1f}" for k, (a, b) in peak["before_after"].items()))
    print(f"contraction alone (unprofiled): fwd {ca['fwd_ms']:.2f} ms ({ca['fwd_gflops']:.1f} GFLOP/s), "
          f"bwd {ca['bwd_ms']:.2f} ms ({ca['bwd_gflops']:.1f} GFLOP/s) with a contiguous output gradient, "
          f"{ca['bwd_ms_permuted_grad']:.2f} ms ({ca['bwd_gflops_permuted_grad']:.1f} GFLOP/s) with the model's "
          f"permuted one (one layer)")
    head = (f"{'part':36s} {'ph':4s} {'MFLOP':>8s} {'MB':>8s} {'ms':>7s} {'GFLOP/s':>8s} {'GB/s':>6s} "
            f"{'roof':>9s} {'of roof':>7s} {'share':>6s}")
    print(head)
    print("-" * len(head))
    tf = tb = tt = 0.0
    for r in rows(result):
        frac = "-" if r["fraction_of_roof"] is None else f"{100 * r['fraction_of_roof']:.1f}%"
        print(f"{r['label']:36s} {r['phase']:4s} {r['flops'] / 1e6:8.1f} {r['bytes'] / 1e6:8.1f} {r['ms']:7.2f} "
              f"{r['gflops']:8.2f} {r['gbs']:6.1f} {r['roof']:>9s} {frac:>7s} {100 * r['share']:5.1f}%")
        tf, tb, tt = tf + r["flops"], tb + r["bytes"], tt + r["ms"]
    print(f"{'total (profiled self time)':36s} {'':4s} {tf / 1e6:8.1f} {tb / 1e6:8.1f} {tt:7.2f} "
          f"{tf / (tt * 1e6):8.2f} {tb / (tt * 1e6):6.1f}")
    print("detail (ms/step, profiled): " + ", ".join(f"{k} {v:.2f}" for k, v in result["detail_ms"].items()))
    print("coarse groups (ms/step): " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(result["coarse_ms"].items())))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    p.add_argument("--steps", type=int, default=20, help="unprofiled timed steps")
    p.add_argument("--profiled", type=int, default=5, help="steps under the profiler")
    p.add_argument("--out", default=str(HERE / "roofline_fno.json"))
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("ROOFLINE " + json.dumps(measure(args.child, args.steps, args.profiled)))
        return 0
    results = []
    for n in args.threads:  # one fresh process per thread count (OMP_NUM_THREADS read at start-up)
        env = {**os.environ, "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
        cmd = [sys.executable, __file__, "--child", str(n), "--steps", str(args.steps), "--profiled", str(args.profiled)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("ROOFLINE "))
        result = json.loads(line[len("ROOFLINE "):])
        result["rows"] = rows(result)
        results.append(result)
        print_table(result)
    record = {"benchmark": "roofline of one quickstart FNO training step (Darcy 64, batch 10)",
              "command": "python benchmarks/roofline_fno.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d", time.gmtime()), "machine": os.uname().machine,
              "cpus": os.cpu_count(), "results": results}
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
