"""Model compression (issue 19, part 2; Polino, Pascanu & Alistarh 2018): 8-bit and bit-packed 4-bit
weights round trip through a run folder, the bit packing itself, the straight-through fake
quantisation, distillation into a smaller student (plain and quantised at 4 bits), quantised
distillation started from the teacher's weights, and the command's one-line errors. Everything on
a tiny Darcy run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import oplab
from oplab import models
from oplab.cli import main
from oplab.deploy.compress import compress, student_config
from oplab.deploy.quantize import (HEADER, SCALE, fake_quantize, pack, packed_bytes, q_max, quantizable,
                                   quantized_copy, unpack)
from oplab.errors import DataFileError
from oplab.predictor import Bundle
from oplab.train import config as tc
from oplab.train import run

TEACHER = {"name": "fno", "modes": [6, 6], "width": 12, "n_layers": 2, "lifting_channels": 16,
           "projection_channels": 16}


@pytest.fixture(scope="module")
def teacher(darcy17, tmp_path_factory):
    """A small FNO trained on 32 samples (8 validate, 8 test) of the 17 x 17 Darcy set."""
    out = tmp_path_factory.mktemp("compress") / "teacher"
    raw = {"data": {"train": str(darcy17), "n_train": 40, "n_val": 8, "n_test": 8}, "model": TEACHER,
           "train": {"epochs": 10, "batch_size": 8, "lr": 5e-3, "eval_every": 2, "plot_samples": 0}, "out": str(out)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run(tc.from_dict(raw), log=lambda s: None)
    yield out
    torch.set_num_threads(threads)


def inputs(data_file):
    """Inputs and solutions of the training samples (the first 32)."""
    from oplab.data import open as open_data

    return open_data(data_file).arrays(list(range(32)), outputs=True)


def rel(a, b) -> float:
    """Mean over samples of ||a - b|| / ||b||."""
    a, b = np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1)
    return float(np.mean(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


def test_int8_round_trip_through_a_run_folder(teacher, darcy17, tmp_path, capsys):
    out = tmp_path / "int8"
    assert main(["compress", str(teacher), "--method", "int8", "--out", str(out)]) == 0  # the alias of quantize
    assert "(quantize): weights" in capsys.readouterr().out
    original = load_file(str(teacher / "checkpoints" / "best" / "weights.safetensors"))
    path = out / "checkpoints" / "best" / "weights.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        names = json.loads(fh.metadata()[HEADER])["tensors"]
        saved = {k: fh.get_tensor(k) for k in fh.keys()}
    op = oplab.load(teacher)
    assert sorted(names) == sorted(quantizable(op.bundle))
    assert any(".weight.weight" in n for n in names)  # the spectral weights, [in, out, *modes, 2]
    float_bytes = quant_bytes = 0
    for name in names:
        q, scale, w = saved[name], saved[name + SCALE], original[name]
        assert q.dtype == torch.int8 and q.shape == w.shape
        assert (q.float() * scale - w).abs().le(scale / 2 * (1 + 1e-5) + 1e-12).all(), name
        float_bytes += w.numel() * w.element_size()
        quant_bytes += q.numel() * q.element_size() + scale.numel() * scale.element_size()
    assert 0.25 <= quant_bytes / float_bytes < 0.27, quant_bytes / float_bytes
    for name in set(original) - set(names):  # biases and normalisers stay float32, unchanged
        assert torch.equal(saved[name], original[name]), name
    assert (teacher / "checkpoints/best/weights.safetensors").stat().st_size / path.stat().st_size > 3.5
    # oplab.load dequantises: predictions close to the teacher's, and evaluate runs on it unchanged
    x, y = inputs(darcy17)
    small = oplab.load(out)
    assert 0 < rel(small(x), op(x)) < 5e-3
    assert json.loads((out / "config.json").read_text())["compression"]["method"] == "quantize"
    assert oplab.load(out, checkpoint="last")(x).shape == y.shape  # last quantised too, with its state
    assert (out / "checkpoints" / "last" / "state.json").exists()
    assert main(["evaluate", str(out), "--data", str(darcy17)]) == 0
    # a quantised file whose scale is missing: one error naming the file
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(out, broken)
    bad = broken / "checkpoints" / "best" / "weights.safetensors"
    del saved[names[0] + SCALE]
    save_file(saved, str(bad), metadata={HEADER: json.dumps({"bits": 8, "tensors": names})})
    with pytest.raises(DataFileError, match=f"{bad}: quantised tensor '{names[0]}' is missing"):
        oplab.load(broken)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7])
def test_bit_packing_round_trips_exactly_on_the_integer_grid(bits):
    m = q_max(bits)
    torch.manual_seed(bits)
    for shape in [(1,), (3,), (7,), (5, 3), (3, 1, 7), (0,), (1001,)]:  # odd counts: a part-filled last byte
        q = torch.randint(-m, m + 1, shape, dtype=torch.int8)
        q.view(-1)[:2] = torch.tensor([-m, m], dtype=torch.int8)[: q.numel()]  # both ends of the grid
        packed = pack(q, bits)
        assert packed.dtype == torch.uint8 and packed.shape == (packed_bytes(q.numel(), bits),)
        assert torch.equal(unpack(packed, bits, list(shape)), q)
    # 4 bits: two values per byte, q + 7 in the low nibble for the even value, the high one for the odd
    assert pack(torch.tensor([-7, 7, 0, 1, -1], dtype=torch.int8), 4).tolist() == [0xE0, 0x87, 0x06]


def test_4bit_quantisation_packs_two_weights_per_byte(teacher, darcy17, tmp_path):
    out = tmp_path / "q4"
    r = compress(teacher, "quantize", out, bits=4, log=lambda s: None)
    original = load_file(str(teacher / "checkpoints" / "best" / "weights.safetensors"))
    path = out / "checkpoints" / "best" / "weights.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        header = json.loads(fh.metadata()[HEADER])
        saved = {k: fh.get_tensor(k) for k in fh.keys()}
    names = header["tensors"]
    assert header["bits"] == 4 and sorted(names) == sorted(quantizable(oplab.load(teacher).bundle))
    float_bytes = weight_bytes = 0
    for name in names:
        q, scale, w = saved[name], saved[name + SCALE], original[name]
        assert q.dtype == torch.uint8 and q.numel() == (w.numel() + 1) // 2 and header["shapes"][name] == list(w.shape)
        values = unpack(q, 4, w.shape)
        assert values.abs().max() <= 7
        assert (values.float() * scale - w).abs().le(scale / 2 * (1 + 1e-5) + 1e-12).all(), name
        float_bytes += w.numel() * w.element_size()
        weight_bytes += q.numel() + scale.numel() * scale.element_size()
    assert 0.125 <= weight_bytes / float_bytes < 0.135, weight_bytes / float_bytes  # ~1/8 of float32
    assert r["size_ratio"] > 6  # the file, with float biases, normalisers and its header
    # oplab.load dequantises the packed values: the same model as quantising in memory
    x, _ = inputs(darcy17)
    op, small = oplab.load(teacher), oplab.load(out)
    with torch.no_grad():
        expected = quantized_copy(op.bundle, 4)(torch.as_tensor(x), small.coords_for((17, 17))).numpy()
    assert rel(small(x), expected) < 1e-5 and 0 < rel(small(x), op(x)) < 0.2
    # a header whose shape does not fit the packed bytes: one error naming the file
    header["shapes"][names[0]] = [int(n) + 2 for n in header["shapes"][names[0]]]
    save_file(saved, str(path), metadata={HEADER: json.dumps(header)})
    with pytest.raises(DataFileError, match=f"{path}: quantised tensor '{names[0]}' is .* packed bytes"):
        oplab.load(out)


def test_fake_quantize_is_on_the_grid_and_straight_through_inside_the_clipping_range():
    torch.manual_seed(0)
    w = torch.randn(3, 5, 4, requires_grad=True)
    scale = torch.tensor([0.1, 0.2, 0.05]).view(3, 1, 1)  # 4 bits: q_max 7, clipping at 0.7, 1.4, 0.35
    y = fake_quantize(w, bits=4, axis=0, scale=scale)
    steps = y.detach() / scale
    assert torch.allclose(steps, steps.round(), atol=1e-5) and steps.abs().max() <= 7 + 1e-5
    assert torch.allclose(y, scale * torch.clamp(torch.round(w / scale), -7, 7))
    inside = (w / scale).abs() <= 7
    assert inside.any() and (~inside).any()  # both cases are exercised
    g = torch.randn_like(w)
    y.backward(g)
    assert torch.allclose(w.grad[inside], g[inside]) and torch.all(w.grad[~inside] == 0)
    # the default scale (max |w| per channel) clips nothing: an identity gradient, the extremes kept exactly
    w.grad = None
    y = fake_quantize(w, bits=8, axis=0)
    y.backward(g)
    assert torch.allclose(w.grad, g)
    assert torch.allclose(y.detach().abs().amax(dim=(1, 2)), w.detach().abs().amax(dim=(1, 2)))
    assert (y.detach() - w.detach()).abs().max() <= w.detach().abs().max() / 127 / 2 * (1 + 1e-5)


@pytest.mark.parametrize("method, bits", [("distill", None), ("distill-quantize", 4)])
def test_distillation_learns_the_teachers_outputs(teacher, darcy17, tmp_path, method, bits):
    out = tmp_path / method
    r = compress(teacher, method, out, width=6, bits=bits, train={"epochs": 30, "eval_every": 5, "lr": 5e-3},
                 log=lambda s: None)
    t_op, s_op = oplab.load(teacher), oplab.load(out)
    x, y = inputs(darcy17)
    t = t_op(x)
    # the distillation loss, measured from outside: the student against the teacher, before and after
    cfg = json.loads((out / "config.json").read_text())
    teacher_model = json.loads((teacher / "config.json").read_text())["model"]
    assert cfg["model"] == {**teacher_model, "width": 6} == student_config(teacher_model, 6)
    assert cfg["compression"]["method"] == method and cfg["data"]["split"] == t_op.data["split"]
    assert cfg["compression"]["init"] == "random" and cfg["compression"].get("bits") == bits
    torch.manual_seed(cfg["train"]["seed"])  # the student as the trainer initialised it
    start = Bundle(models.from_config(cfg["model"]), 1, 1)
    start.in_norm.load_state_dict(s_op.bundle.in_norm.state_dict())
    start.out_norm.load_state_dict(s_op.bundle.out_norm.state_dict())
    with torch.no_grad():
        before = rel(start(torch.as_tensor(x), s_op.coords_for((17, 17))).numpy(), t)
    after = rel(s_op(x), t)
    assert after < 0.5 * before, (before, after)
    assert after < rel(s_op(x), y)  # it learned the teacher's outputs, not the solutions
    losses = [json.loads(line)["train_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 30 and losses[-1] < 0.5 * losses[0]
    # the best checkpoint was chosen on the validation samples, with the weights that are saved
    vals = [json.loads(line)["val"]["l2"] for line in (out / "metrics.jsonl").read_text().splitlines()
            if "val" in line]
    assert r["val_l2"] == pytest.approx(min(vals), rel=1e-5)
    with safe_open(str(out / "checkpoints" / "best" / "weights.safetensors"), framework="pt") as fh:
        quantized = HEADER in (fh.metadata() or {})
        dtypes = {fh.get_tensor(n).dtype for n in quantizable(s_op.bundle)}
    assert quantized == (method == "distill-quantize")
    assert dtypes == ({torch.uint8} if quantized else {torch.float32})  # 4 bits: packed
    assert r["size_ratio"] > (18 if quantized else 3)


def test_quantised_distillation_can_start_from_the_teachers_weights(teacher, darcy17, tmp_path):
    """``init="teacher"``: the student is the teacher's model with the teacher's weights and normalisers
    (Polino et al.'s quantised distillation at the same size); with a learning rate too small to move a
    float32 weight, what is saved is exactly the teacher quantised after training."""
    out = tmp_path / "qd4"
    compress(teacher, "distill-quantize", out, bits=4, init="teacher",
             train={"epochs": 1, "lr": 1e-12, "weight_decay": 0.0}, log=lambda s: None)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == json.loads((teacher / "config.json").read_text())["model"]
    assert cfg["compression"]["init"] == "teacher" and cfg["compression"]["bits"] == 4
    x, _ = inputs(darcy17)
    t_op, s_op = oplab.load(teacher), oplab.load(out)
    with torch.no_grad():
        expected = quantized_copy(t_op.bundle, 4)(torch.as_tensor(x), s_op.coords_for((17, 17))).numpy()
    assert rel(s_op(x), expected) < 1e-6


def test_command_errors_are_one_line(teacher, tmp_path, capsys):
    def fails(argv, needle):
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and needle in err, (code, err)

    fails(["compress", teacher, "--method", "prune", "--out", tmp_path / "a"],
          "unknown compression method 'prune'; valid: quantize, distill, distill-quantize (or int8, distill-int8)")
    fails(["compress", teacher, "--method", "int8", "--out", teacher], "already holds a run; choose another --out")
    fails(["compress", teacher, "--method", "int8", "--out", tmp_path / "b", "--width", "4"], "--width")
    fails(["compress", teacher, "--method", "distill", "--out", tmp_path / "c", "--bits", "4"], "--bits applies")
    fails(["compress", teacher, "--method", "distill-quantize", "--out", tmp_path / "d", "--bits", "9"],
          "bits must be an int from 2 to 8")
    fails(["compress", teacher, "--method", "distill", "--out", tmp_path / "e", "--set", "data.n_train=3"],
          "compress takes model.KEY=VALUE")
    fails(["compress", teacher, "--method", "quantize", "--out", tmp_path / "f", "--init", "teacher"], "--init")
    fails(["compress", teacher, "--method", "distill-quantize", "--out", tmp_path / "g", "--init", "zeros"],
          "unknown --init 'zeros'; valid: random, teacher")
    fails(["compress", teacher, "--method", "distill-quantize", "--out", tmp_path / "h", "--init", "teacher",
           "--width", "6"], "--init teacher starts the student from the teacher's weights: it needs the teacher's "
                            "model, and this student differs in width")
    fails(["compress", teacher, "--method", "distill", "--out", tmp_path / "i", "--init", "teacher"],
          "the student would be the teacher's model (fno)")
    assert not any((tmp_path / n).exists() for n in "abcdefghi")
