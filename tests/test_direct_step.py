"""A training step without autograd (MapTask.direct_stepper) and Adam over one flat buffer (FlatAdam):
the written-out gradients must be autograd's, a run must train as the autograd path does, the flat
optimizer must step as torch's fused Adam does, and both must step aside where they would differ."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

from oplab import losses
from oplab.models.deeponet import DeepONet
from oplab.predictor import Bundle
from oplab.train import Callback, Trainer
from oplab.train.config import TrainConfig
from oplab.train.data import GridData
from oplab.train.optim import FlatAdam
from oplab.train.tasks import MapTask


def _bundle(channels=1, activation="relu", dtype=torch.float64):
    torch.manual_seed(0)
    model = DeepONet(n_sensors=2 * 9, coord_dim=2, out_channels=channels, branch_layers=[16], trunk_layers=[12, 10],
                     latent=6, activation=activation).to(dtype)
    bundle = Bundle(model, 2, channels).to(dtype)
    bundle.in_norm.set(torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.5]))
    bundle.out_norm.set(torch.linspace(-1, 1, channels), torch.linspace(0.5, 3, channels))
    coords = (torch.linspace(0, 1, 7, dtype=dtype), torch.linspace(0, 2, 5, dtype=dtype))
    x = torch.randn(4, 2, 9, dtype=dtype)
    y = torch.randn(4, channels, 7, 5, dtype=dtype)
    return bundle, x, y, coords


@pytest.mark.parametrize("channels,activation", [(1, "relu"), (3, "tanh"), (2, "gelu")])
def test_the_written_out_gradients_are_autograds(channels, activation):
    bundle, x, y, coords = _bundle(channels, activation)
    bundle.model.trunk[0].bias.requires_grad_(False)  # a frozen parameter gets no gradient
    y[1] = bundle(x, coords)[1].detach()  # a sample without error: its gradient is 0, not NaN
    periodic = (False, True)
    loss = losses.relative_l2(bundle(x, coords), y, coords, periodic)
    params = [p for p in bundle.parameters() if p.requires_grad]
    ref = torch.autograd.grad(loss, params)

    pred, pullback = bundle.vjp(x, coords)
    value, grad = losses.relative_l2_value_and_grad(pred, y, coords, periodic)
    pairs = pullback(grad)
    torch.testing.assert_close(pred, bundle(x, coords), rtol=0, atol=1e-13)
    torch.testing.assert_close(value, loss, rtol=1e-14, atol=0)
    assert sorted(id(p) for p, _ in pairs) == sorted(id(p) for p in params)
    got = {id(p): g for p, g in pairs}
    for p, r in zip(params, ref):
        torch.testing.assert_close(got[id(p)], r, rtol=1e-11, atol=1e-14)
    assert torch.isfinite(grad).all()


def test_vjp_steps_aside_where_it_would_differ():
    bundle, x, y, coords = _bundle()
    handle = bundle.model.register_forward_hook(lambda *a: None)  # a hook must see the module's call
    assert bundle.vjp(x, coords) is None
    handle.remove()
    handle = bundle.register_forward_pre_hook(lambda *a: None)
    assert bundle.vjp(x, coords) is None
    handle.remove()
    assert bundle.vjp(x, torch.rand(6, 2, dtype=torch.float64)) is None  # query points, not a grid
    stacked = Bundle(DeepONet(n_sensors=18, coord_dim=2, branch_layers=[8], trunk_layers=[8], latent=4, stacked=True), 2, 1)
    assert stacked.vjp(x.float(), tuple(c.float() for c in coords)) is None
    assert "h1" not in losses.VALUE_AND_GRAD  # losses without a written-out gradient take autograd


class _Graph(Callback):
    """An on_loss callback that may use the loss's graph: the run takes the autograd path."""

    def on_loss(self, trainer, batch, loss):
        assert loss.requires_grad


def _run(callbacks=(), epochs=5, optimizer="adam", weight_decay=0.0, train=True):
    torch.manual_seed(1)
    coords = (torch.linspace(0, 1, 20),)
    x = torch.randn(24, 1, 20).cumsum(-1) / 5
    y = (x.cumsum(-1) / 20)
    data = GridData(x=x, y=y, in_coords=coords, out_coords=coords, periodic=(False,), n_times=None, resolution=20)
    torch.manual_seed(0)
    model = DeepONet(n_sensors=20, coord_dim=1, branch_layers=[16], trunk_layers=[16], latent=8)
    cfg = TrainConfig(epochs=epochs, batch_size=10, lr=3e-3, weight_decay=weight_decay, optimizer=optimizer,
                      scheduler="none", loss="l2", eval_every=10**9, seed=0, device="cpu", normalize=True)
    trainer = Trainer(model, data, cfg, log=lambda *a: None, callbacks=list(callbacks))
    return trainer, trainer.fit() if train else None


class _InBuffer(Callback):
    """Counts the steps whose gradients all lie in FlatAdam's buffer (written there, not copied)."""

    loss_graph = False
    steps = 0

    def on_batch_end(self, trainer, batch, loss):
        slots = trainer.optimizer.grad_views()
        self.steps += all(p.grad is slots[p] for p in trainer.params)


def _count_steps(monkeypatch, taken):
    """Every direct step's result appended to ``taken``."""
    real = MapTask.direct_stepper

    def stepper(self, *args):
        step = real(self, *args)
        return None if step is None else (lambda batch: taken.append(step(batch)) or taken[-1])

    monkeypatch.setattr(MapTask, "direct_stepper", stepper)


def test_a_run_trains_as_the_autograd_path_does(monkeypatch):
    taken = []
    _count_steps(monkeypatch, taken)
    in_buffer = _InBuffer()
    trainer, direct = _run([in_buffer], optimizer="adamw", weight_decay=1e-3)
    assert len(taken) == 15 and all(step is not None for step in taken)  # 5 epochs of 3 batches
    assert in_buffer.steps == 15 and trainer.grad_slots is None  # (the slots are the fit's only)
    assert isinstance(trainer.optimizer, FlatAdam)
    taken.clear()
    _, graph = _run([_Graph()], optimizer="adamw", weight_decay=1e-3)
    assert not taken  # the callback's on_loss may read the graph: no direct step was tried
    losses_d = [h["train_loss"] for h in direct["history"]]
    losses_g = [h["train_loss"] for h in graph["history"]]
    assert losses_d[-1] < 0.75 * losses_d[0]  # it learns
    assert losses_d == losses_g  # the same arithmetic, bit for bit
    for p, q in zip(direct["bundle"].parameters(), graph["bundle"].parameters()):
        assert torch.equal(p, q)
        assert p.untyped_storage().nbytes() == p.numel() * p.element_size()  # released from the flat buffer


@pytest.mark.parametrize("where", ["bundle", "model", "layer", "parameter"])
def test_a_hook_added_during_a_fit_sees_every_later_batch(monkeypatch, where):
    taken, calls = [], []
    _count_steps(monkeypatch, taken)

    class Hook(Callback):
        def on_epoch_start(self, trainer, epoch):
            if epoch == 1:
                bundle = trainer.bundle
                if where == "parameter":
                    bundle.model.bias.register_hook(lambda g: calls.append(epoch))
                    return
                module = {"bundle": bundle, "model": bundle.model, "layer": bundle.model.branch[0]}[where]
                module.register_forward_hook(lambda *a: calls.append(epoch))

    _run([Hook()], epochs=2)
    assert calls == [1, 1, 1]  # the three batches after it: the stepper set up at the start steps aside
    assert [step is None for step in taken] == [False] * 3 + [True] * 3


def test_a_step_hook_that_replaces_some_gradients_trains_as_the_autograd_path_does():
    class Halve(Callback):  # an optimizer step hook that replaces one gradient (the others stay in the slots)
        def on_fit_start(self, trainer):
            bias = trainer.bundle.model.bias

            def hook(opt, args, kwargs):
                bias.grad = bias.grad * 0.5

            trainer.optimizer.register_step_pre_hook(hook)

    _, direct = _run([Halve()], epochs=3)
    _, graph = _run([Halve(), _Graph()], epochs=3)
    assert [h["train_loss"] for h in direct["history"]] == [h["train_loss"] for h in graph["history"]]
    for p, q in zip(direct["bundle"].parameters(), graph["bundle"].parameters()):
        assert torch.equal(p, q)


def test_gradient_hooks_on_parameters_and_a_task_with_its_own_loss_take_autograd(monkeypatch):
    seen, taken = [], []
    real = MapTask.direct_stepper
    _count_steps(monkeypatch, taken)

    class Hook(Callback):
        def on_fit_start(self, trainer):
            trainer.bundle.model.bias.register_hook(lambda g: seen.append("hook"))

    _run([Hook()], epochs=1)
    assert seen == ["hook"] * 3 and taken == [None] * 3  # autograd ran every batch; the hook saw each gradient

    class OwnLoss(MapTask):
        def loss(self, trainer, net, batch, coords):
            return super().loss(trainer, net, batch, coords)

    trainer, _ = _run(train=False)
    trainer.task.__class__ = OwnLoss  # (as the distillation task overrides the loss)
    assert real(trainer.task, trainer, trainer.task.coords(trainer.train_data, trainer.device)) is None


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    """FlatAdam's state (its one step counter, the moments) goes through the checkpoint and back."""
    import json

    from safetensors.torch import load_file

    from oplab import problems
    from oplab.data.generation import generate
    from oplab.train import config as tc
    from oplab.train import resume_run, run

    data = tmp_path / "anti.h5"
    generate(problems.create("antiderivative", resolution=20), 36, data, seed=0)

    def cfg(out, **train):
        return tc.from_dict({"data": {"train": str(data), "n_train": 30, "n_test": 6},
                             "model": {"name": "deeponet", "branch_layers": [16], "trunk_layers": [16], "latent": 8},
                             "train": {"epochs": 4, "batch_size": 8, "lr": 3e-3, "eval_every": 4, "threads": 1,
                                       "plot_samples": 0, **train}, "out": str(out)})

    run(cfg(tmp_path / "full"), log=lambda s: None)

    def crash(line):
        if line.startswith("epoch    2"):
            raise KeyboardInterrupt  # after epoch 2's metrics, before its checkpoint

    with pytest.raises(KeyboardInterrupt):
        run(cfg(tmp_path / "cut", checkpoint_seconds=0), log=crash)
    assert json.loads((tmp_path / "cut/checkpoints/last/state.json").read_text())["epoch"] == 1
    resume_run(tmp_path / "cut", log=lambda s: None)
    a = load_file(str(tmp_path / "full/checkpoints/last/weights.safetensors"))
    b = load_file(str(tmp_path / "cut/checkpoints/last/weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = load_file(str(tmp_path / "full/checkpoints/last/state.safetensors"))
    assert {float(v) for k, v in state.items() if k.endswith(".step")} == {16.0}  # 4 epochs of 4 batches


def _pair(weight_decay, decoupled, dtype=torch.float32):
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).to(dtype)
    b = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).to(dtype)
    b.load_state_dict(a.state_dict())
    oa = torch.optim.Adam(a.parameters(), lr=1e-2, weight_decay=weight_decay, fused=True,
                          decoupled_weight_decay=decoupled)
    ob = FlatAdam(b.parameters(), lr=1e-2, weight_decay=weight_decay, decoupled=decoupled)
    return a, oa, b, ob


def _steps(pairs, x, n):
    for _ in range(n):
        for model, opt in pairs:
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()


@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, False), (1e-2, False), (1e-2, True)])
def test_flat_adam_steps_as_torchs_fused_adam(weight_decay, decoupled):
    a, oa, b, ob = _pair(weight_decay, decoupled, torch.float64)
    x = torch.randn(11, 5, dtype=torch.float64)
    _steps([(a, oa), (b, ob)], x, 25)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)
    assert b[0].weight.data_ptr() == ob._data.data_ptr()  # the parameters are views of the one buffer


def test_flat_adam_checkpoints_move_to_and_from_torchs_adam():
    a, oa, b, ob = _pair(0.0, False)
    x = torch.randn(11, 5)
    _steps([(a, oa), (b, ob)], x, 3)
    save_file({k: v.contiguous() for k, v in ob.state_dict()["state"][0].items()}, "/dev/null")  # one storage each
    a2, oa2, b2, ob2 = _pair(0.0, False)
    a2.load_state_dict(b.state_dict())
    b2.load_state_dict(a.state_dict())
    oa2.load_state_dict(copy.deepcopy(ob.state_dict()))  # flat -> torch (copies, as through a file)
    ob2.load_state_dict(copy.deepcopy(oa.state_dict()))  # torch -> flat
    assert ob2._flat and float(ob2._step) == 3.0
    _steps([(a, oa), (b, ob), (a2, oa2), (b2, ob2)], x, 4)
    for p, q, r, s in zip(a.parameters(), b.parameters(), a2.parameters(), b2.parameters()):
        torch.testing.assert_close(r, q, rtol=2e-6, atol=1e-7)  # torch's Adam from the flat one's state
        torch.testing.assert_close(s, p, rtol=2e-6, atol=1e-7)  # and the other way


def test_flat_adam_keeps_torchs_meaning_for_a_parameter_without_gradient():
    a, oa, b, ob = _pair(1e-2, False)
    x = torch.randn(11, 5)
    _steps([(a, oa), (b, ob)], x, 2)
    for model, opt in ((a, oa), (b, ob)):  # the first layer gets no gradient this step: torch skips it
        opt.zero_grad()
        model[2](torch.tanh(model[0](x)).detach()).square().mean().backward()
        opt.step()
    assert not ob._flat  # torch's own step from here on
    _steps([(a, oa), (b, ob)], x, 2)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=2e-6, atol=1e-7)
    ob.release()
    assert all(p.untyped_storage().nbytes() == p.numel() * p.element_size() for p in b.parameters())


def test_flat_adam_reads_gradients_written_into_its_buffer_as_copied_ones(monkeypatch):
    _, _, b, ob = _pair(1e-2, True)
    _, _, twin, otwin = _pair(1e-2, True)  # the same start; its gradients copied in by the step
    x = torch.randn(11, 5)
    slots = ob.grad_views()
    assert list(slots) == list(b.parameters()) and all(s.shape == p.shape for p, s in slots.items())
    for _ in range(3):
        grads = torch.autograd.grad(b(x).square().mean(), list(b.parameters()))
        for p, q, g in zip(b.parameters(), twin.parameters(), grads):
            p.grad, q.grad = slots[p].copy_(g), g.clone()
        with monkeypatch.context() as m:
            m.setattr(torch, "cat", None)  # gradients already in the buffer: nothing is copied
            ob.step()
        otwin.step()
        for p, q in zip(b.parameters(), twin.parameters()):
            assert torch.equal(p, q)


def test_flat_adam_runs_torchs_step_hooks_and_profiler_label():
    a, oa, b, ob = _pair(0.0, False)
    x = torch.randn(11, 5)
    calls = []
    handles = [ob.register_step_pre_hook(lambda *args: calls.append("pre")),
               ob.register_step_post_hook(lambda *args: calls.append("post")),
               register_optimizer_step_pre_hook(lambda *args: calls.append("global"))]
    with torch.profiler.profile() as prof:
        _steps([(a, oa), (b, ob)], x, 2)
    for h in handles:
        h.remove()
    assert calls.count("pre") == 2 and calls.count("post") == 2 and calls.count("global") == 4  # (both optimizers)
    assert any(e.name == "Optimizer.step#FlatAdam.step" for e in prof.events())
    calls.clear()
    _steps([(a, oa), (b, ob)], x, 2)  # no hooks, no profiler: the plain step, the same arithmetic
    assert not calls
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("decoupled", [False, True])
def test_flat_adam_calls_the_kernel_as_the_functional_adam_does(monkeypatch, decoupled):
    import oplab.train.optim as optim

    _, _, a, oa = _pair(1e-2, decoupled)
    _, _, b, ob = _pair(1e-2, decoupled)
    x = torch.randn(11, 5)
    _steps([(a, oa)], x, 4)
    monkeypatch.setattr(optim, "_KERNELS", (None, None))  # (a torch without the private kernels)
    _steps([(b, ob)], x, 4)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert float(oa._step) == float(ob._step) == 4.0
