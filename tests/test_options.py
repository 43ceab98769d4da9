"""The general papers' options (issue 20, item 4): annealed gradient noise, EvoNorm-B0/S0,
residual scaling of FNO, weighted convolution kernels of U-Net and MgNO; and that with every
option off the models and the training loop are what they were before the options existed."""

import json
import math

import pytest
import torch

from oplab import models, problems
from oplab.data.generation import generate
from oplab.errors import ParameterError
from oplab.layers.conv import tap_density, weight_taps
from oplab.layers.norms import EvoNormB0, EvoNormS0
from oplab.train import config as tc
from oplab.train import resume_run, run
from oplab.train.config import TrainConfig
from oplab.train.data import GridData
from oplab.train.trainer import Trainer, add_gradient_noise

AXES = (torch.linspace(0, 1, 20), torch.linspace(0, 1, 20))


def _output(name, **kw):
    torch.manual_seed(0)
    model = models.create(name, **kw)
    x = torch.randn(2, 1, 20, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x, AXES)


FNO = dict(in_channels=1, out_channels=1, modes=[5, 5], width=8, n_layers=3, lifting_channels=8, projection_channels=8)
UNET = dict(in_channels=1, out_channels=1, width=8, depth=2)
MGNO = dict(in_channels=1, out_channels=1, width=6, n_layers=2, levels=3)


# ------------------------------------------------------------------ options off: as before
#: (sum, sum of |y|, y[0, 0, 3, 5]) of the outputs above, computed with the code of commit
#: d5ed469 (before these options existed; `git archive d5ed469 src` run on the same torch 2.13 CPU)
BEFORE = {"fno": (FNO, (-191.13941153883934, 191.13941153883934, -0.2389359176158905)),
          "unet": (UNET, (-32.252179546281695, 187.12526793777943, -0.7166655659675598)),
          "mgno": (MGNO, (9.566139931615908, 27.75548208534019, 0.03999025374650955))}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_models_with_the_options_off_answer_as_before_the_options(name):
    kw, (total, absolute, entry) = BEFORE[name]
    y = _output(name, **kw).double()
    assert y.sum().item() == pytest.approx(total, rel=1e-5)
    assert y.abs().sum().item() == pytest.approx(absolute, rel=1e-5)
    assert y[0, 0, 3, 5].item() == pytest.approx(entry, rel=1e-5, abs=1e-7)


def _toy(n=12, s=12):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 1, s, s, generator=g)
    y = torch.roll(x, 1, dims=-1) ** 2 + 0.1 * x
    ax = torch.linspace(0, 1, s)
    return GridData(x, y, (ax, ax), (ax, ax), (False, False), None, None)


def _fit(**train):
    torch.manual_seed(0)
    model = models.create("fno", in_channels=1, out_channels=1, modes=[4, 4], width=6, n_layers=2,
                          lifting_channels=0, projection_channels=0)
    cfg = TrainConfig(epochs=3, batch_size=4, lr=1e-2, eval_every=10, threads=1, **train)
    result = Trainer(model, _toy(), cfg, log=lambda s: None).fit()
    return [h["train_loss"] for h in result["history"]], model


def test_training_without_gradient_noise_is_as_before_and_with_it_reproducible_and_different():
    losses, model = _fit()
    # the same run with the code before train.grad_noise existed (see BEFORE)
    assert losses == pytest.approx([0.8308241963386536, 0.8068996866544088, 0.8086253801981608], rel=1e-6)
    assert sum(p.double().abs().sum().item() for p in model.parameters()) == pytest.approx(163.24873354854208, rel=1e-6)
    noisy, m1 = _fit(grad_noise=0.01)
    again, m2 = _fit(grad_noise=0.01)
    assert noisy == again and all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
    assert all(a != b for a, b in zip(noisy, losses))


def test_gradient_noise_has_the_annealed_variance_and_depends_only_on_seed_and_step():
    eta, gamma = 0.3, 0.55
    real = torch.nn.Parameter(torch.zeros(400, 500))
    cplx = torch.nn.Parameter(torch.zeros(300, 300, dtype=torch.cfloat))
    for step in (0, 9, 999):
        for p in (real, cplx):
            p.grad = torch.zeros_like(p)
        std = add_gradient_noise([real, cplx], eta, gamma, seed=5, step=step)
        assert std == pytest.approx(math.sqrt(eta / (1 + step) ** gamma))
        for values in (real.grad.flatten(), cplx.grad.real.flatten(), cplx.grad.imag.flatten()):
            assert values.mean().abs().item() < 5 * std / math.sqrt(values.numel())
            assert values.var().item() == pytest.approx(std**2, rel=0.02)  # 90,000+ samples: 0.5% sd
    first = real.grad.clone()
    real.grad = torch.zeros_like(real)
    add_gradient_noise([real], eta, gamma, seed=5, step=999)
    same = real.grad.clone()
    real.grad = torch.zeros_like(real)
    add_gradient_noise([real], eta, gamma, seed=6, step=999)
    assert torch.equal(first, same) and not torch.equal(first, real.grad)
    with pytest.raises(ParameterError, match="grad_noise"):
        TrainConfig(grad_noise=-1.0)


@pytest.fixture(scope="module")
def darcy(tmp_path_factory):
    path = tmp_path_factory.mktemp("options") / "darcy17.h5"
    generate(problems.create("darcy", resolution=17), 14, path, seed=0)
    return path


def _cfg(data, out, **train):
    raw = {"data": {"train": str(data), "n_train": 10, "n_test": 4},
           "model": {"name": "fno", "modes": [4, 4], "width": 6, "n_layers": 2, "lifting_channels": 0,
                     "projection_channels": 0},
           "train": {"epochs": 3, "batch_size": 5, "lr": 5e-3, "eval_every": 3, "threads": 1, "plot_samples": 0,
                     "grad_noise": 0.05, **train}, "out": str(out)}
    return tc.from_dict(raw)


@pytest.mark.parametrize("extra", [{}, {"grad_noise": 0.0, "augment": "dihedral"}])
def test_a_resumed_noisy_run_ends_with_the_same_weights(darcy, tmp_path, extra):
    """Gradient noise, and the symmetry augmentation's draws, replay exactly in a resumed run."""
    from safetensors.torch import load_file

    run(_cfg(darcy, tmp_path / "full", **extra), log=lambda s: None)

    def crash(line):
        if line.startswith("epoch    1"):
            raise KeyboardInterrupt  # after epoch 1's metrics, before its checkpoint

    with pytest.raises(KeyboardInterrupt):
        run(_cfg(darcy, tmp_path / "cut", checkpoint_seconds=0, **extra), log=crash)
    assert json.loads((tmp_path / "cut/checkpoints/last/state.json").read_text())["epoch"] == 0
    resume_run(tmp_path / "cut", log=lambda s: None)
    a = load_file(str(tmp_path / "full/checkpoints/last/weights.safetensors"))
    b = load_file(str(tmp_path / "cut/checkpoints/last/weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    config = json.loads((tmp_path / "full/config.json").read_text())
    assert config["train"]["grad_noise"] == extra.get("grad_noise", 0.05) and config["train"]["grad_noise_gamma"] == 0.55
    assert config["train"]["augment"] == extra.get("augment", "none")


# ------------------------------------------------------------------ EvoNorm
HAND = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]], [[0.0, 1.0], [-1.0, 2.0]]],
                     [[[2.0, 2.0], [-3.0, 1.0]], [[4.0, -4.0], [0.5, 0.25]]]])  # [B=2, C=2, 2, 2]


def _var(values):
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


def test_evonorm_b0_is_its_formula_on_a_hand_tensor_in_training_and_eval_mode():
    layer = EvoNormB0(2, eps=1e-5)
    with torch.no_grad():
        layer.v.copy_(torch.tensor([0.5, -1.0]))
        layer.gamma.copy_(torch.tensor([2.0, 0.5]))
        layer.beta.copy_(torch.tensor([0.1, -0.2]))
    y = layer(HAND)
    for c in range(2):
        s2_batch = _var(HAND[:, c].flatten())
        assert layer.running_var[c].item() == pytest.approx(0.9 + 0.1 * s2_batch, rel=1e-6)
        for b in range(2):
            s2_inst = _var(HAND[b, c].flatten())
            for i in range(2):
                for j in range(2):
                    x = HAND[b, c, i, j].item()
                    denom = max(math.sqrt(s2_batch + 1e-5), layer.v[c].item() * x + math.sqrt(s2_inst + 1e-5))
                    want = x / denom * layer.gamma[c].item() + layer.beta[c].item()
                    assert y[b, c, i, j].item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    layer.eval()  # the running variance replaces the batch's
    y = layer(HAND)
    x = HAND[1, 0, 0, 1].item()
    denom = max(math.sqrt(layer.running_var[0].item() + 1e-5), 0.5 * x + math.sqrt(_var(HAND[1, 0].flatten()) + 1e-5))
    assert y[1, 0, 0, 1].item() == pytest.approx(x / denom * 2.0 + 0.1, rel=1e-5)


def test_evonorm_s0_is_its_formula_on_a_hand_tensor():
    x4 = torch.cat([HAND, -HAND], dim=1)  # [2, 4, 2, 2]: two groups of two channels
    layer = EvoNormS0(4, groups=2, eps=1e-5)
    with torch.no_grad():
        layer.v.copy_(torch.tensor([0.5, -1.0, 2.0, 1.0]))
        layer.gamma.copy_(torch.tensor([2.0, 0.5, 1.0, 3.0]))
        layer.beta.copy_(torch.tensor([0.1, -0.2, 0.0, 1.0]))
    y = layer(x4)
    for b in range(2):
        for c in range(4):
            g = c // 2
            s2 = _var(x4[b, 2 * g : 2 * g + 2].flatten())
            for i in range(2):
                for j in range(2):
                    x = x4[b, c, i, j].item()
                    want = x / (1 + math.exp(-layer.v[c].item() * x)) / math.sqrt(s2 + 1e-5) * layer.gamma[c].item() \
                        + layer.beta[c].item()
                    assert y[b, c, i, j].item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    with pytest.raises(ParameterError, match="groups"):
        EvoNormS0(6, groups=4)


def test_unet_with_evonorm_trains_and_rejects_an_unknown_norm():
    for norm in ("evonorm_b0", "evonorm_s0"):
        y = _output("unet", **UNET, norm=norm)
        assert y.shape == (2, 1, 20, 20) and torch.isfinite(y).all()
    model = models.create("unet", **UNET, norm="evonorm_s0")
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    with pytest.raises(ParameterError, match="norm"):
        models.create("unet", **UNET, norm="batch")


# ------------------------------------------------------------------ residual scaling
def test_fno_residual_scale_one_is_the_default_and_alpha_scales_the_spectral_path():
    assert torch.equal(_output("fno", **FNO, residual_scale=1.0), _output("fno", **FNO))
    torch.manual_seed(0)
    scaled = models.create("fno", **FNO, residual_scale="depth")  # 1 / sqrt(3)
    assert scaled.residual_scale == pytest.approx(1 / math.sqrt(3))
    torch.manual_seed(0)
    plain = models.create("fno", **FNO)
    with torch.no_grad():  # a dense spectral layer is linear in its weights: alpha K == K with alpha * weights
        for layer in plain.spectral:
            for p in layer.parameters():
                p.mul_(1 / math.sqrt(3))
    x = torch.randn(2, 1, 20, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(scaled(x, AXES), plain(x, AXES), atol=1e-6)
        assert (scaled(x, AXES) - _output("fno", **FNO)).abs().max() > 1e-5  # (at initialisation K is small)
    for bad in (0, -1.0, "half", True):
        with pytest.raises(ParameterError, match="residual_scale"):
            models.create("fno", **FNO, residual_scale=bad)


# ------------------------------------------------------------------ weighted convolution
def test_weighted_convolution_with_uniform_density_is_the_plain_one_and_otherwise_scales_the_taps():
    assert torch.equal(tap_density((3, 3), 0.5), torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]))
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    plain = torch.nn.Conv2d(3, 4, 3, padding=1)
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 9, 9)
    keys = set(conv.state_dict())
    weight_taps(conv, 0.5)
    assert set(conv.state_dict()) == keys  # same parameters, same checkpoint
    with torch.no_grad():
        manual = torch.nn.functional.conv2d(x, plain.weight * tap_density((3, 3), 0.5), plain.bias, padding=1)
        assert torch.allclose(conv(x), manual, atol=1e-6) and not torch.allclose(conv(x), plain(x), atol=1e-3)
    for name, kw in (("unet", UNET), ("mgno", MGNO)):
        assert torch.equal(_output(name, **kw, conv="weighted", conv_density=1.0), _output(name, **kw))
        assert not torch.allclose(_output(name, **kw, conv="weighted"), _output(name, **kw), atol=1e-4)
        with pytest.raises(ParameterError, match="conv"):
            models.create(name, **kw, conv="dilated")
        with pytest.raises(ParameterError, match="conv_density"):
            models.create(name, **kw, conv="weighted", conv_density=0)
