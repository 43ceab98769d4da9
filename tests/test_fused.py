"""The hand-differentiated fast paths (oplab._fused): the DeepONet's fused branch, trunk and product
(`_DenseDeepONet`) and the relative L2 loss's one-node form (`_RelativeL2`) must give the values and
gradients of the ordinary autograd path, and step aside where their backward would be wrong."""

from __future__ import annotations

import pytest
import torch

from oplab import losses
from oplab.models.deeponet import DeepONet


def _node_names(t: torch.Tensor) -> set[str]:
    seen, todo = set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or type(fn).__name__ in seen:
            continue
        seen.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return seen


def _case(activation="relu", channels=1, features=(), stacked=False, multi_output="split", bias=True):
    torch.manual_seed(0)
    model = DeepONet(n_sensors=12, coord_dim=2, out_channels=channels, branch_layers=[16, 12], trunk_layers=[10],
                     latent=6, activation=activation, fourier_features=features, stacked=stacked,
                     multi_output=multi_output, output_bias=bias).double()
    x = torch.randn(5, 1, 12, dtype=torch.float64)
    coords = (torch.linspace(0, 1, 7, dtype=torch.float64), torch.linspace(0, 2, 4, dtype=torch.float64))
    target = torch.randn(5, channels, 7, 4, dtype=torch.float64)
    return model, x, coords, target


def _module_path(model):
    """A forward pre-hook on the model sends every call down the module path."""
    return model.register_forward_pre_hook(lambda *a: None)


def _values_and_grads(model, x, coords, target):
    out = model(x, coords)
    params = [p for p in model.parameters() if p.requires_grad]
    return out, torch.autograd.grad(((out - target) ** 2).sum(), params), _node_names(out)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "silu"])
@pytest.mark.parametrize("channels,features,bias", [(1, (), True), (3, (1.0, 2.0), True), (2, (), False)])
def test_fused_deeponet_matches_the_module_path(activation, channels, features, bias):
    model, x, coords, target = _case(activation, channels, features, bias=bias)
    out, grads, nodes = _values_and_grads(model, x, coords, target)
    assert "_DenseDeepONetBackward" in nodes  # the fused path was taken
    handle = _module_path(model)
    ref, ref_grads, ref_nodes = _values_and_grads(model, x, coords, target)
    handle.remove()
    assert "_DenseDeepONetBackward" not in ref_nodes
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-13)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-13)
    with torch.no_grad():  # inference takes the same arithmetic without the autograd node
        torch.testing.assert_close(model(x, coords), ref, rtol=0, atol=1e-13)


def test_frozen_parameters_get_no_gradient_and_the_rest_are_right():
    model, x, coords, target = _case()
    for p in model.branch.parameters():
        p.requires_grad_(False)
    out, grads, nodes = _values_and_grads(model, x, coords, target)
    assert "_DenseDeepONetBackward" in nodes
    handle = _module_path(model)
    _, ref_grads, _ = _values_and_grads(model, x, coords, target)
    handle.remove()
    assert len(grads) == len(ref_grads) == len(list(model.trunk.parameters())) + 1
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("variant", ["stacked", "independent", "sine", "input_grad", "hook_on_layer",
                                     "backward_hook_on_layer", "backward_pre_hook_on_trunk", "global_backward_hook"])
def test_what_the_fused_path_cannot_serve_takes_the_module_path(variant):
    model, x, coords, target = _case(
        activation="relu", channels=2, stacked=variant == "stacked",
        multi_output="independent" if variant == "independent" else "split")
    if variant == "sine":
        model, x, coords, target = _case(activation="sin")
    if variant == "input_grad":  # inversion through the surrogate, physics-informed losses
        x.requires_grad_(True)
    if variant == "hook_on_layer":
        model.branch[0].register_forward_hook(lambda *a: None)
    fired = []
    if variant == "backward_hook_on_layer":
        model.branch[0].register_full_backward_hook(lambda *a: fired.append(1))
    if variant == "backward_pre_hook_on_trunk":
        model.trunk.register_full_backward_pre_hook(lambda *a: fired.append(1))
    handle = (torch.nn.modules.module.register_module_full_backward_hook(lambda m, *a: fired.append(type(m)))
              if variant == "global_backward_hook" else None)
    try:
        out = model(x, coords)
        assert "_DenseDeepONetBackward" not in _node_names(out)
        if "backward" in variant:
            out.square().sum().backward()
            assert fired and (variant != "global_backward_hook" or torch.nn.Linear in fired)
    finally:
        if handle is not None:
            handle.remove()
    if variant == "input_grad":
        (gx,) = torch.autograd.grad(out.square().sum(), x)
        assert gx.abs().sum() > 0


def test_torch_func_and_forward_mode_take_the_module_path():
    model, x, coords, _ = _case(activation="tanh")
    params = {k: v.detach() for k, v in model.named_parameters()}
    loss = lambda p: torch.func.functional_call(model, p, (x, coords)).square().sum()  # noqa: E731
    grads = torch.func.grad(loss)(params)
    handle = _module_path(model)
    ref = torch.autograd.grad(model(x, coords).square().sum(), list(model.parameters()))
    handle.remove()
    for (name, g), r in zip(grads.items(), ref):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-13, msg=name)
    tangent = {k: torch.randn_like(v) for k, v in params.items()}
    _, jvp = torch.func.jvp(lambda p: torch.func.functional_call(model, p, (x, coords)), (params,), (tangent,))
    eps = 1e-6
    plus = torch.func.functional_call(model, {k: v + eps * tangent[k] for k, v in params.items()}, (x, coords))
    minus = torch.func.functional_call(model, {k: v - eps * tangent[k] for k, v in params.items()}, (x, coords))
    torch.testing.assert_close(jvp, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-7)


def test_autocast_takes_the_module_path_with_or_without_grad():
    model, x, coords, _ = _case(activation="relu")
    model, x = model.float(), x.float()
    coords = tuple(c.float() for c in coords)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            plain = model(x, coords)
        handle = _module_path(model)
        with torch.no_grad():
            ref = model(x, coords)
        handle.remove()
    assert plain.dtype == ref.dtype and torch.equal(plain, ref)


def test_an_empty_query_grid_with_several_channels():
    model, x, _, _ = _case(channels=2)
    empty = (torch.zeros(0, dtype=torch.float64), torch.linspace(0, 1, 4, dtype=torch.float64))
    assert model(x, empty).shape == (5, 2, 0, 4)
    out = model(x, empty)
    assert out.sum().requires_grad
    out.sum().backward()


def test_the_fused_backward_refuses_a_second_derivative():
    model, x, coords, target = _case(activation="tanh")
    out = model(x, coords)
    grads = torch.autograd.grad(((out - target) ** 2).sum(), list(model.parameters()), create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):  # (a gradient penalty, say)
        sum(g.square().sum() for g in grads).backward()


def test_fused_training_steps_follow_the_module_path():
    """Twenty Adam steps along each path end at the same weights (float64)."""
    finals = []
    for fused in (True, False):
        model, x, coords, target = _case(activation="relu", channels=1)
        handle = None if fused else _module_path(model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(20):
            opt.zero_grad()
            loss = losses.relative_l2(model(x, coords), target, coords, (False, False))
            loss.backward()
            opt.step()
        if handle is not None:
            handle.remove()
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(finals[0], finals[1], rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------- relative L2


def _relative_l2_by_formula(pred, target, coords, periodic):
    w = losses.quadrature_weights(coords, periodic)
    num = ((pred - target).square() * w).flatten(1).sum(1).sqrt()
    return (num / (target.square() * w).flatten(1).sum(1).sqrt()).mean()


@pytest.mark.parametrize("periodic", [(False, True), (True, True)])
def test_relative_l2_node_matches_the_formula_and_gradcheck(periodic):
    torch.manual_seed(1)
    coords = (torch.linspace(0, 1, 6, dtype=torch.float64), torch.linspace(0, 3, 5, dtype=torch.float64))
    pred = torch.randn(4, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randn(4, 2, 6, 5, dtype=torch.float64)
    loss = losses.relative_l2(pred, target, coords, periodic)
    assert "_RelativeL2Backward" in _node_names(loss)
    ref = _relative_l2_by_formula(pred, target, coords, periodic)
    torch.testing.assert_close(loss, ref, rtol=1e-14, atol=0)
    (g,) = torch.autograd.grad(loss, pred)
    (r,) = torch.autograd.grad(ref, pred)
    torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(lambda p: losses.relative_l2(p, target, coords, periodic), (pred,))


def test_relative_l2_node_gives_zero_gradient_where_the_error_vanishes():
    coords = (torch.linspace(0, 1, 9, dtype=torch.float64),)
    target = torch.randn(3, 1, 9, dtype=torch.float64)
    pred = target.clone()
    pred[1] += 0.1
    pred.requires_grad_(True)
    (g,) = torch.autograd.grad(losses.relative_l2(pred, target, coords, (False,)), pred)
    assert torch.isfinite(g).all() and g[0].abs().max() == 0 and g[2].abs().max() == 0 and g[1].abs().max() > 0


def test_relative_l2_with_a_target_that_requires_grad_differentiates_both():
    coords = (torch.linspace(0, 1, 9, dtype=torch.float64),)
    pred = torch.randn(3, 1, 9, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 1, 9, dtype=torch.float64, requires_grad=True)
    loss = losses.relative_l2(pred, target, coords, (False,))
    assert "_RelativeL2Backward" not in _node_names(loss)
    assert torch.autograd.gradcheck(lambda p, t: losses.relative_l2(p, t, coords, (False,)), (pred, target))


def test_relative_l2_node_stays_finite_for_a_zero_target_like_autograd():
    """A zero target's norm is clamped to 1e-30; the gradient is then huge but finite in float32, as
    autograd's (the unit direction first, then the large factor)."""
    coords = (torch.linspace(0, 1, 9),)
    target = torch.randn(2, 1, 9)
    target[0] = 0
    pred = (target + 1e-10).requires_grad_(True)
    (g,) = torch.autograd.grad(losses.relative_l2(pred, target, coords, (False,)), pred)
    root = losses.quadrature_weights(coords, (False,), root=True)
    n, d = losses._relative_l2_parts(pred, target, root)[1:]
    (r,) = torch.autograd.grad((n / d).mean(), pred)
    assert torch.isfinite(g).all() and torch.isfinite(r).all()
    torch.testing.assert_close(g, r, rtol=1e-5, atol=0)
