"""Fine-tuning a trained run on new data (full, LoRA, head) and the MAML-style meta-initialisation
(oplab.train.finetune): LoRA starts at the parent exactly and merges exactly, head trains only the
head, a fine-tune on shifted data lowers the error, the run folder is normal and records its parent,
bad data is one line (exit 2)."""

import json

import pytest
import torch
from safetensors.torch import load_file

import oplab
from oplab import models, problems
from oplab.cli import main
from oplab.data.generation import generate
from oplab.errors import ParameterError
from oplab.train import config as tc
from oplab.train import run
from oplab.train.finetune import finetune, merge_lora, meta_init, prepare_model

SMALL_FNO = {"name": "fno", "modes": [4, 4], "width": 8, "n_layers": 2, "lifting_channels": 8, "projection_channels": 8}
QUIET = dict(log=lambda s: None, plot_samples=0)  # (the predictions figure costs seconds)


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """Darcy at 17 x 17 with other coefficient values (3 / 12 -> 1 / 6): the parent's error on it is large."""
    path = tmp_path_factory.mktemp("ft") / "darcy17_shifted.h5"
    generate(problems.create("darcy", resolution=17, contrast_low=1.0, contrast_high=6.0), 40, path, seed=1)
    return path


@pytest.fixture(scope="module")
def parent(darcy17, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "parent"
    raw = {"data": {"train": str(darcy17), "n_train": 40, "n_test": 8}, "model": dict(SMALL_FNO),
           "train": {"epochs": 8, "batch_size": 8, "lr": 1e-2, "eval_every": 4, "threads": 1, "plot_samples": 0}, "out": str(out)}
    run(tc.from_dict(raw), log=QUIET["log"])
    return out


def _grid(n):
    return (torch.arange(n) + 0.5) / n


def _perturb_adapters(model, scale=0.05):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, scale)


def test_lora_starts_at_the_parent_and_merges_into_the_parents_architecture(one_thread):
    torch.manual_seed(0)
    base = models.create("fno", in_channels=1, out_channels=1, modes=[6], width=16, n_layers=2,
                         lifting_channels=16, projection_channels=16)
    x, c = torch.randn(3, 1, 32), (_grid(32),)
    y0 = base(x, c)
    import copy

    lora, head, full = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    info = prepare_model(lora, "lora", rank=2, alpha=2.0)
    assert torch.equal(lora(x, c), y0)  # B = 0: exactly the parent
    assert info["lora"]["spectral"] == ["spectral.0", "spectral.1"] and "projection.2" in info["lora"]["pointwise"]
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # counts: the adapters' own sizes, far below the model's
    n_full, n_head = prepare_model(full, "full")["trainable_params"], prepare_model(head, "head")["trainable_params"]
    assert n_full == info["total_params"] == sum(p.numel() for p in base.parameters())
    assert info["trainable_params"] == sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)
    assert info["trainable_params"] < n_full / 4
    assert n_head == sum(p.numel() for p in base.projection.parameters())
    _perturb_adapters(lora)
    y1 = lora(x, c)
    assert (y1 - y0).abs().max() > 1e-3  # the adapters act (spectral and pointwise)
    merged = merge_lora(lora)
    assert sorted(merged.state_dict()) == sorted(base.state_dict())  # a plain FNO again
    assert torch.allclose(merged(x, c), y1, atol=1e-6, rtol=0)
    assert all(p.requires_grad for p in merged.parameters())


def test_lora_through_peft_on_linear_layers(one_thread):
    pytest.importorskip("peft")
    torch.manual_seed(0)
    base = models.create("deeponet", n_sensors=16, coord_dim=1, branch_layers=[16, 16], trunk_layers=[16, 16],
                         latent=16)
    import copy

    lora = copy.deepcopy(base)
    x, c = torch.randn(3, 1, 16), (_grid(16),)
    y0 = base(x, c)
    info = prepare_model(lora, "lora", rank=2, alpha=4.0)
    assert info["lora"]["peft"] and torch.equal(lora(x, c), y0)
    _perturb_adapters(lora)
    y1 = lora(x, c)
    assert (y1 - y0).abs().max() > 1e-3
    merged = merge_lora(lora)
    assert sorted(merged.state_dict()) == sorted(base.state_dict())
    assert torch.allclose(merged(x, c), y1, atol=1e-6, rtol=0)


def test_full_finetune_lowers_the_error_on_shifted_data_and_records_the_parent(parent, shifted, tmp_path):
    out = tmp_path / "full"
    r = finetune(parent, shifted, "full", 16, out, n_val=8, n_test=8, epochs=10, lr=5e-3, eval_every=5, threads=1,
                 **QUIET)
    before = r["parent_errors"]["val"]["l2"]
    assert r["best_val"] < 0.7 * before, (before, r["best_val"])
    config = json.loads((out / "config.json").read_text())
    ft = config["finetune"]
    assert ft["parent"] == str(parent.resolve()) and ft["method"] == "full" and ft["n_train"] == 16
    assert ft["parent_checkpoint"] == "best" and len(ft["parent_weights_sha256"]) == 64
    split = config["data"]["split"]  # the first K samples train, the next n_val validate
    assert split["train"]["ranges"] == [[0, 16]] and split["val"]["ranges"] == [[16, 24]]
    loaded = oplab.load(out)  # a normal run folder
    x = oplab.data.open(shifted).arrays(range(32, 40))[0]
    assert loaded(x).shape == x.shape


def test_head_trains_only_the_projection_and_lora_saves_a_plain_checkpoint(parent, shifted, tmp_path):
    finetune(parent, shifted, "head", 8, tmp_path / "head", n_val=4, n_test=4, epochs=3, lr=1e-2, threads=1, **QUIET)
    w0 = load_file(str(parent / "checkpoints/best/weights.safetensors"))
    w1 = load_file(str(tmp_path / "head/checkpoints/last/weights.safetensors"))
    changed = {k for k in w0 if k.startswith("model.") and not torch.equal(w0[k], w1[k])}  # (normalisers: refit)
    assert changed and all(k.startswith("model.projection.") for k in changed), changed
    r = finetune(parent, shifted, "lora", 16, tmp_path / "lora", n_val=8, n_test=8, epochs=10, lr=1e-2, eval_every=5,
                 lora_rank=2, normalizers="parent", threads=1, **QUIET)
    ft = json.loads((tmp_path / "lora/config.json").read_text())["finetune"]
    assert ft["lora"]["rank"] == 2 and ft["trainable_params"] < ft["total_params"] / 3
    assert r["best_val"] < r["parent_errors"]["val"]["l2"]
    for name in ("best", "last"):  # merged: the parent's keys and shapes, every weight moved
        w = load_file(str(tmp_path / f"lora/checkpoints/{name}/weights.safetensors"))
        assert {k: v.shape for k, v in w.items()} == {k: v.shape for k, v in w0.items()}
        assert torch.equal(w["in_norm.mean"], w0["in_norm.mean"])  # normalizers="parent" keeps them
    assert not torch.equal(w["model.spectral.0.weight.weight"], w0["model.spectral.0.weight.weight"])
    x = oplab.data.open(shifted).arrays(range(32, 36))[0]
    loaded = oplab.load(tmp_path / "lora", checkpoint="last")
    with torch.no_grad():
        direct = r["bundle"](torch.as_tensor(x), loaded.coords_for(x.shape[2:])).numpy()
    assert abs(loaded(x) - direct).max() < 1e-5


def test_data_of_another_layout_is_refused_in_one_line(parent, tmp_path, capsys):
    other = tmp_path / "burgers16.h5"
    generate(problems.create("burgers", resolution=16, t_end=0.05), 6, other, seed=0)
    with pytest.raises(ParameterError, match=r"inputs \[1, 16\] -> outputs \[1, 16\], but the parent run .* "
                                             r"inputs \[1, 17, 17\] -> outputs \[1, 17, 17\]"):
        finetune(parent, other, "full", 2, tmp_path / "x", n_val=1, n_test=1, **QUIET)
    assert not (tmp_path / "x").exists()
    assert main(["finetune", str(parent), "--data", str(other), "--n-train", "2", "--n-val", "1", "--n-test", "1",
                 "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert "error:" in err and "fine-tuning needs the same channels" in err and len(err.splitlines()) == 1
    assert main(["finetune", str(parent), "--data", str(other), "--n-train", "2", "--method", "bitfit"]) == 2


def test_cli_finetune_then_resume_with_more_epochs(parent, shifted, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["finetune", str(parent), "--data", str(shifted), "--method", "head", "--n-train", "8", "--n-val", "4",
                 "--n-test", "4", "--epochs", "2", "--out", str(out), "--set", "train.threads=1",
                 "--set", "train.plot_samples=0"]) == 0
    assert "parent" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["finetune"]["normalizers"] == "refit"
    # it resumes like any run: the frozen layers stay frozen (the optimizer state fits)
    assert main(["train", "--resume", str(out), "--epochs", "3"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    w0 = load_file(str(parent / "checkpoints/best/weights.safetensors"))
    w1 = load_file(str(out / "checkpoints/last/weights.safetensors"))
    frozen = [k for k in w0 if k.startswith("model.") and not k.startswith("model.projection.")]
    assert all(torch.equal(w0[k], w1[k]) for k in frozen)
    # refit (the default): the normalisers are the 8 training samples' (the shifted coefficient), not the parent's
    assert not torch.equal(w0["in_norm.mean"], w1["in_norm.mean"])


def test_meta_initialisation_writes_a_run_that_fine_tunes(darcy17, shifted, tmp_path):
    assert main(["pretrain-meta", str(darcy17), str(shifted), "--model", "fno", "--set", "model.modes=[4, 4]",
                 "--set", "model.width=8", "--set", "model.n_layers=1", "--out", str(tmp_path / "meta"),
                 "--n-train", "24", "--n-val", "4", "--n-test", "4", "--steps", "4", "--meta-batch", "2",
                 "--support", "4", "--query", "4", "--inner-steps", "1", "--eval-every", "2"]) == 0
    history = [json.loads(line) for line in (tmp_path / "meta/metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all(0 < h["val"]["l2"] < 1.5 for h in history)
    with pytest.raises(ParameterError, match="at least 2 data files"):
        meta_init([darcy17], {"name": "fno"}, tmp_path / "meta1", log=QUIET["log"])
    config = json.loads((tmp_path / "meta/config.json").read_text())
    assert config["meta_init"]["algorithm"] == "first-order MAML" and len(config["meta_init"]["tasks"]) == 2
    x = oplab.data.open(shifted).arrays(range(36, 40))[0]
    assert oplab.load(tmp_path / "meta")(x).shape == x.shape
    ft = finetune(tmp_path / "meta", shifted, "full", 8, tmp_path / "ft", n_val=4, n_test=4, epochs=2, **QUIET)
    assert ft["finetune"]["parent"] == str((tmp_path / "meta").resolve())


@pytest.mark.parametrize("cfg", [
    dict(name="mgno", in_channels=1, out_channels=1, width=8, n_layers=1, levels=2, padding_mode="circular"),
    dict(name="unet", in_channels=1, out_channels=1, width=8, depth=2, conv="weighted"),
    dict(name="transolver", in_channels=1, out_channels=1, width=16, n_layers=1, n_heads=2, n_slices=4),
], ids=["mgno-circular", "unet-weighted", "transolver"])
def test_lora_merges_exactly_for_any_padding_and_weighted_taps_and_every_adapter_learns(cfg):
    """The adapters of convolutions go through the layer's own padding mode and tap density (peft's
    would pad with zeros), so the merged model is the trained one; a layer whose weight the model
    reads directly (Transolver's projections) gets no adapter, so every adapter gets a gradient."""
    from oplab.models import create
    from oplab.train.finetune import add_lora, merge_lora

    torch.manual_seed(0)
    model = create(**cfg).eval()
    t = torch.linspace(0, 1, 16)
    x, coords = torch.randn(2, 1, 16, 16), (t, t)
    before = model(x, coords)
    done = add_lora(model, rank=2, alpha=2.0, probe=(x[:1], coords))
    assert torch.equal(model(x, coords), before)  # B = 0: the parent exactly
    if cfg["name"] == "transolver":
        assert any(name.endswith("to_slices") for name in done["frozen"]) and done["peft"]
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_()
    model.train()
    model(x, coords).square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().max() > 0)]
    assert not dead, dead
    model.eval()
    adapted = model(x, coords)
    assert (adapted - before).abs().max() > 1e-3
    merge_lora(model)
    assert torch.allclose(model(x, coords), adapted, atol=1e-4, rtol=1e-4)


def test_head_of_a_model_without_a_named_head_is_its_last_small_block():
    from oplab.models import create

    model = create(name="resnet", in_channels=1, out_channels=1)
    info = prepare_model(model, "head")
    assert info["head"] == ["blocks.5"] and info["trainable_params"] < 0.2 * info["total_params"]


def test_a_frozen_evonorm_b0_keeps_the_parents_statistics():
    from oplab.layers.norms import EvoNormB0

    layer = EvoNormB0(3).train()
    x = 5.0 * torch.randn(4, 3, 8, 8)
    layer(x)
    assert not torch.allclose(layer.running_var, torch.ones(3))  # trained: the statistics move
    before = layer.running_var.clone()
    for p in layer.parameters():
        p.requires_grad_(False)
    frozen = layer(x)
    assert torch.equal(layer.running_var, before)
    assert torch.allclose(frozen, layer.eval()(x))  # frozen in train mode = eval mode


def test_lora_larger_than_the_model_is_reported(parent, shifted, tmp_path):
    """Rank-64 adapters on a small FNO hold more parameters than the model: full fine-tuning costs no more."""
    lines = []
    finetune(parent, shifted, "lora", 8, tmp_path / "big", n_val=4, n_test=4, epochs=1, lora_rank=64, threads=1,
             **{**QUIET, "log": lines.append})
    assert any(line.startswith("warning: the rank-64 adapters hold") for line in lines), lines
    lines.clear()
    finetune(parent, shifted, "lora", 8, tmp_path / "small", n_val=4, n_test=4, epochs=1, lora_rank=1, threads=1,
             **{**QUIET, "log": lines.append})
    assert not any(line.startswith("warning:") for line in lines)
