"""``oplab export``: the matrix-product DFT equals the FFT path, and every format answers what
``oplab.load(RUN)`` answers (ONNX checked with ONNX Runtime), at two resolutions where the export
keeps them dynamic."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import oplab
from oplab.cli import main
from oplab.deploy.export import export
from oplab.layers.spectral import SpectralConv

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("modes, sizes", [
    ([5], [16]), ([5], [8]),            # all modes; the Nyquist frequency k = n/2 on the rfft axis
    ([5], [7]),                         # fewer points than modes hold (odd)
    ([4, 3], [16, 12]), ([4, 3], [7, 5]), ([4, 4], [8, 6]),
    ([3, 3, 2], [8, 9, 6]),
])
@pytest.mark.parametrize("factorization", [None, "tucker"])
def test_matmul_dft_is_the_fft_operator(modes, sizes, factorization):
    """The real matrix-product path (what ONNX holds) equals rfftn/irfftn to float64 rounding,
    values and input gradients."""
    torch.manual_seed(0)
    layer = SpectralConv(3, 4, modes, factorization, 0.5).double()
    x = torch.randn(2, 3, *sizes, dtype=torch.float64, requires_grad=True)
    want = layer(x)
    (g_want,) = torch.autograd.grad(want.square().sum(), x)
    want = want.detach()
    layer.dft = "matmul"
    got = layer(x)
    (g_got,) = torch.autograd.grad(got.square().sum(), x)
    got = got.detach()
    assert float((got - want).abs().max() / want.abs().max()) < 1e-12
    assert float((g_got - g_want).abs().max() / g_want.abs().max()) < 1e-12
    layer.freeze()  # the frozen real constant of export: the same operator
    assert float((layer(x).detach() - want).abs().max() / want.abs().max()) < 1e-12


def test_kept_inference_weight_is_never_stale():
    """The predictor's kept mode-major weight follows the parameters: fresh tensors swapped in by
    ``functional_call`` (a reused address, the same version), an optimizer step, load_state_dict."""
    torch.manual_seed(0)
    layer = SpectralConv(3, 4, [4, 3]).eval()
    x = torch.randn(2, 3, 16, 12)

    def fresh(scale):  # the matrix-product path never keeps anything: the reference
        layer.dft = "matmul"
        with torch.no_grad():
            out = layer(x)
        layer.dft = "auto"
        return out

    w0 = layer.weight.weight.detach().clone()
    for step in range(20):
        w = torch.empty_like(w0)
        w.copy_(w0 * (1 + step))
        with torch.inference_mode():
            got = torch.func.functional_call(layer, {"weight.weight": w}, (x,))
        layer.dft = "matmul"
        with torch.no_grad():
            want = torch.func.functional_call(layer, {"weight.weight": w}, (x,))
        layer.dft = "auto"  # (float32 rounding of two transforms, growing with the weight's scale)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * (1 + step))
    with torch.inference_mode():
        layer(x)
    torch.optim.SGD(layer.parameters(), lr=0.5).zero_grad()
    layer(x).square().sum().backward()
    torch.optim.SGD(layer.parameters(), lr=0.5).step()
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), fresh(1), rtol=1e-5, atol=1e-6)
    layer.load_state_dict({"weight.weight": 3 * w0})
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), fresh(1), rtol=1e-5, atol=1e-6)


def _train(darcy17, tmp_path_factory, name, **kw):
    torch.manual_seed(0)
    ds = oplab.data.open(darcy17)
    model = oplab.models.create(name, out_channels=1, **kw)
    out = tmp_path_factory.mktemp("export") / f"run-{name}"
    oplab.train(model, ds, epochs=1, batch_size=8, n_train=40, n_test=8, out=out, log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def fno_run(darcy17, tmp_path_factory):
    return _train(darcy17, tmp_path_factory, "fno", in_channels=1, modes=[4, 4], width=8)


def _inputs(sizes, batch=2, seed=3):
    g = np.random.default_rng(seed)
    return (3 + 9 * (g.random((batch, 1, *sizes)) > 0.5)).astype(np.float32)  # Darcy-like two-valued fields


@pytest.mark.parametrize("fmt", ["onnx", "exported-program"])
def test_export_answers_like_the_predictor_at_two_resolutions(fno_run, tmp_path, fmt, one_thread):
    from oplab.deploy.export import runner

    report = export(fno_run, fmt, tmp_path / "m", log=lambda s: None)
    path = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt2")
    assert report["file"] == str(path) and path.exists()
    assert report["dynamic"] == ["batch", "x", "y"] and report["max_rel_diff"] < 1e-5
    assert json.loads(path.with_name(path.name + ".json").read_text())["checks"] == report["checks"]
    op = oplab.load(fno_run)
    run = runner(path, fmt)
    for sizes, batch in [((17, 17), 1), ((24, 30), 5)]:  # a batch size and a grid the export never saw
        a = _inputs(sizes, batch)
        want = op(a)
        got = run(a)
        assert got.shape == want.shape
        assert np.abs(got - want).max() / np.abs(want).max() < 1e-5


def test_an_fno_with_a_period_exports_at_its_training_grid(darcy17, tmp_path_factory, tmp_path, one_thread):
    """Trained through the CLI's path (``derive``) an FNO keeps its training grid's FFT period on other
    grids by appending a size-dependent number of samples: the exporter cannot keep the sizes
    symbolic, says why in its log and writes a file for the training grid that answers like the model."""
    from oplab.deploy.export import runner
    from oplab.models.fno import grid_period

    torch.manual_seed(0)
    ds = oplab.data.open(darcy17)
    coords = tuple(torch.as_tensor(c, dtype=torch.float32) for c in ds.output_grid)
    model = oplab.models.create("fno", in_channels=1, out_channels=1, modes=[4, 4], width=8,
                                period=grid_period(coords))
    run = tmp_path_factory.mktemp("export") / "run-period"
    oplab.train(model, ds, epochs=1, batch_size=8, n_train=40, n_test=8, out=run, log=lambda s: None)
    said = []
    report = export(run, "onnx", tmp_path / "m", log=said.append)
    assert report["dynamic"] == ["batch"] and report["max_rel_diff"] < 1e-5
    assert any("period" in line and "[17, 17]" in line for line in said), said
    a = _inputs((17, 17), 3)
    np.testing.assert_allclose(runner(tmp_path / "m.onnx", "onnx")(a), oplab.load(run)(a), rtol=1e-5, atol=1e-5)


def test_torchscript_keeps_the_training_grid(fno_run, tmp_path, one_thread):
    from oplab.deploy.export import runner

    report = export(fno_run, "torchscript", tmp_path / "m.pt", log=lambda s: None)
    assert report["dynamic"] == ["batch"] and report["input"]["shape"] == ["batch", 1, 17, 17]
    a = _inputs((17, 17), 3)
    np.testing.assert_allclose(runner(tmp_path / "m.pt", "torchscript")(a), oplab.load(fno_run)(a), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, kw, dynamic", [  # (all 11 models: benchmarks/export.py)
    ("deeponet", {"n_sensors": 289, "coord_dim": 2, "latent": 16}, ["batch"]),  # a point operator: its sensors and query points are fixed
])
def test_other_models_export_to_onnx(darcy17, tmp_path_factory, tmp_path, name, kw, dynamic, one_thread):
    run = _train(darcy17, tmp_path_factory, name, **kw)
    report = export(run, "onnx", tmp_path / "m.onnx", log=lambda s: None)
    assert report["dynamic"] == dynamic and report["max_rel_diff"] < 1e-5


def test_cli_export_and_its_errors(fno_run, tmp_path, capsys, one_thread):
    out = tmp_path / "e" / "fno.onnx"
    assert main(["export", str(fno_run), "--out", str(out)]) == 0
    assert out.exists() and "largest relative difference" in capsys.readouterr().out
    assert main(["export", str(fno_run), "--out", str(out)]) == 2  # never overwritten unasked
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(fno_run), "--format", "tflite"]) == 2
    assert "expected one of onnx, exported-program, torchscript" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert not list(out.parent.glob("*.part*"))


def test_export_imports_no_training_code():
    code = ("import sys, oplab.deploy.export, oplab.predictor; "
            "bad = [m for m in sys.modules if m.startswith('oplab.train')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
