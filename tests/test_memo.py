"""TensorMemo never returns a value built from other contents: recycled addresses,
numpy in-place writes, torch in-place writes; hits are real hits; the real users
(DeepONet's grid points, the losses' quadrature weights) stay correct."""

import gc

import numpy as np
import pytest
import torch

import oplab
from oplab import losses
from oplab._memo import TensorMemo


class Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self):
        self.calls += 1
        return self.fn()


def test_recycled_addresses_never_give_stale_values():
    m = TensorMemo()
    stale = 0
    for i in range(200):
        t = torch.linspace(0, 1 + i, 100)
        stale += m.get([t], "w", lambda: t.sum().item()) != t.sum().item()
    assert stale == 0


def test_numpy_rewrite_of_the_same_tensor_object():
    g = np.linspace(0, 1, 64)
    t = torch.from_numpy(g)
    m = TensorMemo()
    for k in range(1, 6):
        g[:] = np.linspace(0, k, 64)  # torch's version counter does not see this
        assert t._version == 0
        assert m.get([t], "w", lambda: t.sum().item()) == pytest.approx(32 * k)


def test_numpy_rewrite_with_a_new_tensor_each_call():
    g = np.linspace(0, 1, 64)
    m = TensorMemo()
    for k in range(1, 6):
        g[:] = np.linspace(0, k, 64)
        t = torch.from_numpy(g)  # same address, version 0, every time
        assert m.get([t], "w", lambda: t.sum().item()) == pytest.approx(32 * k)


def test_torch_in_place_writes():
    t = torch.linspace(0, 1, 100)
    m = TensorMemo()
    assert m.get([t], "w", lambda: t.sum().item()) == pytest.approx(50)
    t.add_(1)
    assert m.get([t], "w", lambda: t.sum().item()) == pytest.approx(150)
    t.data.add_(1)  # bypasses the version counter
    assert m.get([t], "w", lambda: t.sum().item()) == pytest.approx(250)


def test_signed_zero_and_nan_are_compared_bit_for_bit():
    m = TensorMemo()
    pos, neg = torch.tensor([0.0, 1.0]), torch.tensor([-0.0, 1.0])
    assert not m.get([pos], "w", lambda: torch.signbit(pos[0]).item())
    assert m.get([neg], "w", lambda: torch.signbit(neg[0]).item())
    nan = Counter(lambda: 1)
    for _ in range(3):
        m.get([torch.tensor([float("nan"), 1.0])], "w", nan)
    assert nan.calls == 1


def test_a_hit_is_a_hit():
    m = TensorMemo()
    a, b = torch.linspace(0, 1, 100), torch.linspace(0, 2, 64)
    build = Counter(lambda: (a.sum() + b.sum()).item())
    for _ in range(5):
        assert m.get([a, b], ("x",), build) == build.fn()
    for _ in range(5):  # equal contents in new objects (one a strided view) hit as well
        assert m.get([a.clone(), torch.stack([b, -b], dim=1)[:, 0]], ("x",), build) == build.fn()
    assert build.calls == 1
    assert m.get([a, b], ("y",), build) == build.fn()  # extra is part of the key
    assert m.get([a.double(), b], ("x",), build) == build.fn()  # so is the dtype
    assert m.get([a[:50], b], ("x",), build) == build.fn()  # and the shape
    assert build.calls == 4


def test_lru_bound_and_most_recent_kept():
    m = TensorMemo(size=3)
    ts = [torch.full((4,), float(i)) for i in range(5)]
    for t in ts:
        m.get([t], None, lambda t=t: t[0].item())
    assert len(m) == 3
    build = Counter(lambda: 4.0)
    assert m.get([ts[4]], None, build) == 4.0 and build.calls == 0
    m.get([ts[0]], None, build)
    assert build.calls == 1


def test_values_that_carry_gradients_are_not_cached():
    m = TensorMemo()
    t = torch.linspace(0, 1, 10, requires_grad=True)
    build = Counter(lambda: t * 2)
    m.get([t], None, build)
    m.get([t], None, build)
    assert build.calls == 2 and len(m) == 0
    with torch.no_grad():
        m.get([t], None, build)
        m.get([t], None, build)
    assert build.calls == 3


def test_non_cpu_keys_are_the_live_object_at_its_version():
    """The device path (meta tensors stand in for CUDA ones): same object and
    version hit, an in-place write misses, a new object misses, and the entries
    of a dead tensor are dropped."""
    m = TensorMemo()
    t = torch.empty(8, device="meta")
    build = Counter(lambda: object())
    v = m.get([t], None, build)
    assert m.get([t], None, build) is v and build.calls == 1
    t.add_(1)
    assert m.get([t], None, build) is not v and build.calls == 2
    assert m.get([torch.empty(8, device="meta")], None, build) and build.calls == 3
    assert len(m) == 2  # the temporary's entry went with it
    del t
    gc.collect()
    assert len(m) == 0


def _deeponet():
    torch.manual_seed(0)
    return oplab.models.create("deeponet", n_sensors=16, coord_dim=1, branch_layers=[8],
                               trunk_layers=[8], latent=6)


def test_deeponet_on_a_numpy_grid_rewritten_in_place():
    model = _deeponet()
    x = torch.randn(3, 1, 16)
    g = np.linspace(0, 1, 50).astype(np.float32)
    t = torch.from_numpy(g)
    with torch.no_grad():
        for k in range(1, 5):
            g[:] = np.linspace(0, k, 50)
            fresh = torch.tensor(g.copy())
            expected = model(x, (fresh,))
            assert torch.equal(model(x, (t,)), expected)  # the same tensor object
            assert torch.equal(model(x, (torch.from_numpy(g),)), expected)  # a new one


def test_relative_l2_on_a_numpy_grid_rewritten_in_place():
    g = np.linspace(0, 1, 33)
    t = torch.from_numpy(g)
    pred, true = torch.rand(2, 1, 33, dtype=torch.float64), torch.rand(2, 1, 33, dtype=torch.float64)
    for k in range(1, 5):
        g[:] = np.linspace(0, 1, 33) ** k  # a non-uniform grid: the weights change
        expected = losses.relative_l2(pred, true, (torch.tensor(g.copy()),), [False])
        assert torch.equal(losses.relative_l2(pred, true, (t,), [False]), expected)
        assert torch.equal(losses.relative_l2(pred, true, (torch.from_numpy(g),), [False]), expected)
