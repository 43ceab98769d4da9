"""Inference speed: oplab's FNO (eager, its predictor's inference path, ONNX Runtime) against
neuraloperator 2.0.0's FNO of the same size, side by side in one process.

Run with the peers' virtual environment (see ``benchmarks/setup_peers.sh``)::

    benchmarks/.venv-peers/bin/python benchmarks/inference.py [--threads 2] [--rounds 5]

The pair is the one of ``benchmarks/peers_fno.py`` (neuraloperator's Darcy example size):
neuraloperator ``FNO(n_modes=(16, 16), hidden_channels=32, n_layers=4,
projection_channel_ratio=2)`` and oplab ``FNO(modes=[8, 9], width=32, n_layers=4,
lifting_channels=64, projection_channels=64)``, the same retained spectrum and parameter count
within 0.4%. Inference time does not depend on the weights' values, so both are untrained
(seeded). Both are timed as whole predictors, physical units in and out: neuraloperator's model
followed by its output normaliser's ``inverse_transform`` (its example's data processor), oplab's
normalisers + model + grid coordinates.

Paths timed, per sample, at 32x32 (the peers' test grid) and 64x64, batch 1 and batch 100:

* ``neuralop``: ``model.eval()`` under ``torch.no_grad()`` (its documented inference);
* ``oplab eager``: the same for oplab's module (``torch.no_grad()``), the path before this change;
* ``oplab predictor``: what ``oplab.load(RUN)(x)`` runs: ``torch.inference_mode()``, spectral
  weights kept in their mode-major layout between calls (``SpectralConv._mode_major``);
* ``oplab onnxruntime``: the ``oplab export --format onnx`` graph (matrix-product DFTs) in ONNX
  Runtime's CPU provider with the same thread count.

Calls are interleaved: in each round every path makes 2 warm-up calls then ``--repeats`` timed
calls; the median over all rounds is reported, with the ratio to neuraloperator. Writes
``benchmarks/inference.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from timing import interleaved

HERE = Path(__file__).resolve().parent


def build(seed: int = 0):
    from neuralop.models import FNO as NeuralopFNO

    from oplab.data.normalize import ChannelNormalizer
    from oplab.models import create
    from oplab.predictor import Bundle

    torch.manual_seed(seed)
    peer = NeuralopFNO(n_modes=(16, 16), in_channels=1, out_channels=1, hidden_channels=32, n_layers=4,
                       projection_channel_ratio=2).eval()
    torch.manual_seed(seed)
    model = create("fno", in_channels=1, out_channels=1, modes=[8, 9], width=32, n_layers=4,
                   lifting_channels=64, projection_channels=64)
    bundle = Bundle(model, 1, 1).eval()
    for norm in (bundle.in_norm, bundle.out_norm):  # a fitted normaliser's statistics
        assert isinstance(norm, ChannelNormalizer)
        norm.mean.fill_(0.3)
        norm.std.fill_(1.7)
    mean, std = torch.tensor(0.3), torch.tensor(1.7)

    def peer_predict(x):  # neuraloperator's UnitGaussianNormalizer.inverse_transform: x * std + mean
        return peer(x) * std + mean

    return peer, peer_predict, bundle


def onnx_session(bundle, threads: int, path: Path):
    import onnxruntime as ort

    from oplab.deploy.export import Exportable

    module = Exportable(bundle, [(0.0, 1.0, False), (0.0, 1.0, False)])
    x = torch.randn(2, 1, 32, 32)
    dims = {0: torch.export.Dim("batch", max=4096), 2: torch.export.Dim("nx", min=16, max=4096),
            3: torch.export.Dim("ny", min=18, max=4096)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), dynamo=True, dynamic_shapes={"x": dims}, input_names=["x"],
                          output_names=["y"], verbose=False).save(str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x.numpy()})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (1: immune to a busy machine)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--out", type=Path, default=HERE / "inference.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peer, peer_predict, bundle = build()
    with tempfile.TemporaryDirectory() as tmp:
        ort_predict = onnx_session(bundle, args.threads, Path(tmp) / "fno.onnx")

    def coords(n):
        return (torch.linspace(0, 1, n), torch.linspace(0, 1, n))

    def eager(x):
        with torch.no_grad():
            return bundle(x, coords(x.shape[-1]))

    def predictor(x):  # Predictor.__call__'s model call
        with torch.inference_mode():
            return bundle(x, coords(x.shape[-1]))

    def neuralop(x):
        with torch.no_grad():
            return peer_predict(x)

    paths = {"neuralop": neuralop, "oplab eager": eager, "oplab predictor": predictor, "oplab onnxruntime": ort_predict}
    g = torch.Generator().manual_seed(1)
    rows = []
    for n, batch in [(32, 1), (32, 100), (64, 1), (64, 100)]:
        x = torch.randn(batch, 1, n, n, generator=g)
        ref = eager(x).numpy()
        for name, f in paths.items():
            if name != "neuralop":
                out = np.asarray(f(x))
                assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max(), (name, n)
        times = interleaved(paths, x, args.rounds, args.repeats, per=batch)
        base = statistics.median(times["neuralop"])
        for name in paths:
            ms = statistics.median(times[name]) * 1e3
            rows.append({"grid": n, "batch": batch, "path": name, "ms_per_sample": ms, "ratio_to_neuralop": ms / (base * 1e3),
                         "spread_ms": [min(times[name]) * 1e3, max(times[name]) * 1e3]})
    params = {"neuralop": sum(p.numel() * (2 if p.is_complex() else 1) for p in peer.parameters()),  # real numbers
              "oplab": bundle.model.n_params()}
    print(f"threads {args.threads}; parameters: neuralop {params['neuralop']:,}, oplab {params['oplab']:,}")
    print(f"{'grid':>4} {'batch':>5} {'path':<18} {'ms/sample':>10} {'x neuralop':>10}")
    for r in rows:
        print(f"{r['grid']:>4} {r['batch']:>5} {r['path']:<18} {r['ms_per_sample']:>10.3f} {r['ratio_to_neuralop']:>10.2f}")
    import neuralop
    import onnxruntime

    record = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "cpus": torch.get_num_threads(), "threads": args.threads, "torch": torch.__version__,
              "neuralop": neuralop.__version__, "onnxruntime": onnxruntime.__version__, "parameters": params,
              "rounds": args.rounds, "repeats": args.repeats, "rows": rows}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
