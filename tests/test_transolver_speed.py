"""The restructured Physics-Attention (one batched slice projection in the ``[B * heads, N, M]``
layout, totals from the token product, hand-written backward) computes the same function as the
previous implementation: a frozen copy of the old forward math is the reference here, for outputs
and gradients (parameters and input) in float32 and float64, with the same state_dict keys/shapes."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from oplab.models.transolver import PhysicsAttention, Transolver

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------- frozen reference (old code)


def reference_attention(att: PhysicsAttention, x: torch.Tensor) -> torch.Tensor:
    """Physics-Attention as the previous implementation computed it (composed slice projection,
    ``[B, h, N, M]`` weights, totals by a sum, autograd backward)."""
    batch, n, _ = x.shape
    h, d = att.n_heads, att.head_dim
    scale = 1.0 / att.temperature.clamp(0.1, 5.0)
    w_s, b_s = att.to_slices.weight, att.to_slices.bias
    weight = torch.einsum("hdc,md->chm", att.to_x.weight.view(h, d, -1), w_s) * scale[:, None]
    bias = (att.to_x.bias.view(h, d) @ w_s.T + b_s) * scale[:, None]
    logits = torch.addmm(bias.reshape(-1), x.reshape(batch * n, -1), weight.reshape(weight.shape[0], -1))
    weights = logits.view(batch, n, h, att.n_slices).transpose(1, 2).contiguous().softmax(dim=-1)
    f = att.to_f(x).view(batch, n, h, d).transpose(1, 2)
    total = weights.sum(dim=2)
    z = (weights.transpose(-1, -2) @ f) / (total[..., None] + 1e-5)
    q, k, v = att.to_q(z), att.to_k(z), att.to_v(z)
    attention = (q @ k.transpose(-1, -2) / math.sqrt(d)).softmax(dim=-1)
    out = weights @ (attention @ v)
    return att.to_out(out.transpose(1, 2).reshape(x.shape))


def reference_forward(model: Transolver, x: torch.Tensor, coords) -> torch.Tensor:
    batch, _, *sizes = x.shape
    h = model.preprocess(model.points(x, coords))
    for layer in model.layers:
        h = h + reference_attention(layer.attention, layer.norm1(h))
        h = h + layer.mlp(layer.norm2(h))
    y = model.head(model.norm(h))
    return y.transpose(1, 2).reshape(batch, model.out_channels, *sizes)


# ----------------------------------------------------------------------------------------- tests

TOL = {torch.float32: dict(rtol=1e-5, atol=0.0), torch.float64: dict(rtol=1e-10, atol=0.0)}


def _model(dtype, seed=0, **kwargs):
    torch.manual_seed(seed)
    config = dict(width=32, n_layers=2, n_heads=4, n_slices=8, mlp_ratio=1, ref=4)
    config.update(kwargs)
    model = Transolver(2, 3, **config).to(dtype)
    with torch.no_grad():  # away from the small initialisation, so that every term matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for layer in model.layers:
            layer.attention.temperature.uniform_(0.2, 1.0)
    return model


def _coords(dtype, *sizes):
    return tuple(torch.linspace(0, 1, s, dtype=dtype) for s in sizes)


def _close(actual, expected, dtype, what):
    scale = expected.abs().max().clamp_min(torch.finfo(dtype).tiny)
    err = ((actual - expected).abs().max() / scale).item()
    assert err <= TOL[dtype]["rtol"], f"{what}: relative error {err:.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_gradients_equal_the_previous_implementation(dtype):
    model = _model(dtype)
    torch.manual_seed(1)
    x = torch.randn(3, 2, 13, 11, dtype=dtype)
    coords = _coords(dtype, 13, 11)
    target = torch.randn(3, 3, 13, 11, dtype=dtype)
    results = []
    for fn in (model, lambda a, c: reference_forward(model, a, c)):
        model.zero_grad()
        xi = x.clone().requires_grad_()
        y = fn(xi, coords)
        ((y - target) ** 2).mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((y.detach(), xi.grad.clone(), grads))
    (y_new, gx_new, g_new), (y_old, gx_old, g_old) = results
    _close(y_new, y_old, dtype, "forward")
    _close(gx_new, gx_old, dtype, "input gradient")
    assert g_new.keys() == g_old.keys()
    exact = None
    if dtype == torch.float32:  # the previous implementation in float64, for gradients dominated by roundoff
        wide = copy.deepcopy(model).double()
        wide.zero_grad()
        ((reference_forward(wide, x.double(), _coords(torch.float64, 13, 11)) - target.double()) ** 2).mean().backward()
        exact = {n: p.grad for n, p in wide.named_parameters()}
    for name in g_old:
        try:
            _close(g_new[name], g_old[name], dtype, f"gradient of {name}")
        except AssertionError:
            # a gradient that is a sum of cancelling terms (the temperatures'): the float32 difference
            # must then be roundoff, no larger than the previous implementation's own float32 error
            if exact is None:
                raise
            new_err = (g_new[name].double() - exact[name]).abs().max()
            old_err = (g_old[name].double() - exact[name]).abs().max()
            assert new_err <= 3 * old_err + 1e-5 * exact[name].abs().max(), f"gradient of {name}: {new_err} vs {old_err}"
    with torch.no_grad():  # the inference path (no hand-written backward)
        _close(model(x, coords), y_old, dtype, "forward without gradients")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_equals_the_previous_implementation(dtype):
    torch.manual_seed(0)
    att = PhysicsAttention(24, 3, 5).to(dtype)
    with torch.no_grad():
        for p in att.parameters():
            p.add_(0.3 * torch.randn_like(p))
        att.temperature.uniform_(0.2, 1.0)
    x = torch.randn(2, 37, 24, dtype=dtype, requires_grad=True)
    gy = torch.randn(2, 37, 24, dtype=dtype)
    out = []
    for fn in (att, lambda a: reference_attention(att, a)):
        att.zero_grad()
        x.grad = None
        y = fn(x)
        y.backward(gy)
        out.append((y.detach(), x.grad.clone(), [p.grad.clone() for p in att.parameters()]))
    _close(out[0][0], out[1][0], dtype, "forward")
    _close(out[0][1], out[1][1], dtype, "input gradient")
    for (name, _), a, b in zip(att.named_parameters(), out[0][2], out[1][2]):
        _close(a, b, dtype, f"gradient of {name}")


def test_only_some_inputs_need_gradients():
    """Frozen parameters, or an input without gradient: the hand-written backward still gives
    the reference's gradients for what needs them."""
    dtype = torch.float64
    model = _model(dtype, seed=3)
    for p in model.preprocess.parameters():
        p.requires_grad_(False)
    x, coords = torch.randn(2, 2, 6, 7, dtype=dtype), _coords(dtype, 6, 7)
    grads = []
    for fn in (model, lambda a, c: reference_forward(model, a, c)):
        model.zero_grad()
        fn(x, coords).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    for name in grads[1]:
        _close(grads[0][name], grads[1][name], dtype, name)


def test_gradcheck_of_attention():
    torch.manual_seed(0)
    att = PhysicsAttention(8, 2, 3).double()
    x = torch.randn(2, 9, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(att, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_state_dict_keys_and_shapes_unchanged():
    """The keys and shapes of the previous implementation (paper's Darcy configuration)."""
    model = Transolver(1, 1, width=128, n_layers=8, n_heads=8, n_slices=64, mlp_ratio=1, ref=8)
    expected = {"preprocess.0.weight": (256, 65), "preprocess.0.bias": (256,), "preprocess.2.weight": (128, 256),
                "preprocess.2.bias": (128,), "norm.weight": (128,), "norm.bias": (128,), "head.weight": (1, 128),
                "head.bias": (1,)}
    for i in range(8):
        p = f"layers.{i}."
        expected.update({p + "norm1.weight": (128,), p + "norm1.bias": (128,), p + "norm2.weight": (128,),
                         p + "norm2.bias": (128,), p + "mlp.0.weight": (128, 128), p + "mlp.0.bias": (128,),
                         p + "mlp.2.weight": (128, 128), p + "mlp.2.bias": (128,)})
        a = p + "attention."
        expected.update({a + "to_x.weight": (128, 128), a + "to_x.bias": (128,), a + "to_f.weight": (128, 128),
                         a + "to_f.bias": (128,), a + "to_slices.weight": (64, 16), a + "to_slices.bias": (64,),
                         a + "temperature": (8,), a + "to_q.weight": (16, 16), a + "to_k.weight": (16, 16),
                         a + "to_v.weight": (16, 16), a + "to_out.weight": (128, 128), a + "to_out.bias": (128,)})
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(got) == list(expected) or got == expected
    assert got == expected


def test_old_state_dict_loads_and_gives_the_reference_output():
    old = _model(torch.float64, seed=5)
    new = Transolver(2, 3, width=32, n_layers=2, n_heads=4, n_slices=8, mlp_ratio=1, ref=4).double()
    new.load_state_dict(old.state_dict(), strict=True)
    x, coords = torch.randn(1, 2, 5, 4, dtype=torch.float64), _coords(torch.float64, 5, 4)
    with torch.no_grad():
        _close(new(x, coords), reference_forward(old, x, coords), torch.float64, "loaded model")
