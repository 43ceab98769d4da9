"""Train a peer library's model on an oplab data set: ``PEER_PYTHON peer_driver.py SPEC.json``.

Run by :func:`oplab.bench.run_peer` with the peers' own interpreter (their
virtual environment, ``benchmarks/setup_peers.sh``), so this file imports
neither oplab nor anything the peers lack: torch, numpy, h5py and the peer.
It reads the oplab HDF5 file directly (``/inputs``, ``/outputs``), trains,
and writes the test predictions (``pred_K.npy``, one per test set, in the
order of the spec: the training file's last ``n_test`` samples, then each
``test_files`` entry whole) and ``result.json``; the caller computes the
errors with oplab's own metric, so both sides are scored by one function.

Libraries:

* ``neuraloperator`` (2.0.0): ``neuralop.models.FNO(n_modes, hidden_channels,
  ...)`` (its defaults otherwise), inputs and outputs normalised per channel
  to unit Gaussian as its ``DefaultDataProcessor`` does, its ``H1Loss`` or
  ``LpLoss`` (``train.loss``) on the normalised outputs as its ``Trainer``
  does, ``torch.optim.AdamW``, ``CosineAnnealingLR(T_max=epochs)`` stepped
  per epoch, batch ``train.batch_size``, shuffled each epoch. With
  ``train.budget_minutes`` the epoch count is fixed after epoch 0 from its
  time, as oplab does.
* ``deepxde`` (1.15.0, pytorch backend): ``DeepONetCartesianProd`` (branch
  ``[n_sensors, *branch]``, trunk ``[d, *trunk]``, ``relu``, Glorot normal),
  ``TripleCartesianProd`` data, Adam ``train.lr``, ``train.epochs``
  full-batch iterations (an oplab epoch with ``batch_size >= n_train`` is one
  iteration), MSE loss (its default).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch


def _read(path: str, indices=None, resolution=None):
    with h5py.File(path, "r") as f:
        axes = json.loads(f.attrs["output_axes"])
        n = f["inputs"].shape[0]
        idx = np.arange(n) if indices is None else np.asarray(indices)
        x = f["inputs"][idx.min():idx.max() + 1][idx - idx.min()]
        y = f["outputs"][idx.min():idx.max() + 1][idx - idx.min()]
        grids = [np.asarray(f["grid/outputs"][a["name"]]) for a in axes]
    if resolution:
        sl = []
        for a in axes:
            step = a["n"] // resolution if a["periodic"] else (a["n"] - 1) // (resolution - 1)
            sl.append(slice(None, None, step))
        x = x[(Ellipsis, *sl)] if x.ndim == y.ndim else x
        y = y[(Ellipsis, *sl)]
        grids = [g[s] for g, s in zip(grids, sl)]
    return x.astype(np.float32), y.astype(np.float32), grids


def _split(spec):
    with h5py.File(spec["train_file"], "r") as f:
        n = f["inputs"].shape[0]
    n_test = spec.get("n_test") or max(1, n // 5)
    n_train = spec.get("n_train") or n - n_test
    train = _read(spec["train_file"], range(n_train), spec.get("resolution"))
    tests = [_read(spec["train_file"], range(n - n_test, n), spec.get("resolution"))]
    tests += [_read(p) for p in spec.get("test_files", [])]
    return train, tests


def _gauss(t):
    dims = [0] + list(range(2, t.ndim))
    return t.mean(dim=dims, keepdim=True), t.std(dim=dims, keepdim=True) + 1e-6


def run_neuraloperator(spec, train, tests):
    import neuralop
    from neuralop.losses import H1Loss, LpLoss
    from neuralop.models import FNO

    cfg = spec["train"]
    x, y = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    d = y.ndim - 2
    mx, sx = _gauss(x)
    my, sy = _gauss(y)
    m = spec["model"]
    model = FNO(n_modes=tuple(m.get("n_modes", [12] * d)), in_channels=x.shape[1], out_channels=y.shape[1],
                hidden_channels=m.get("hidden_channels", 32), n_layers=m.get("n_layers", 4))
    loss_fn = H1Loss(d=d) if cfg.get("loss", "h1") == "h1" else LpLoss(d=d, p=2)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.get("lr", 1e-3), weight_decay=cfg.get("weight_decay", 1e-4))
    epochs, bs = cfg.get("epochs", 100), cfg.get("batch_size", 20)
    budget = cfg.get("budget_minutes", 0.0) * 60.0
    xn, yn = (x - mx) / sx, (y - my) / sy
    n = x.shape[0]
    torch.manual_seed(cfg.get("seed", 0))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    times, clock, epoch = [], time.perf_counter(), 0
    while epoch < epochs:
        tic = time.perf_counter()
        model.train()
        for idx in torch.randperm(n).split(bs):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xn[idx]), yn[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - tic)
        if epoch == 0 and budget > 0:
            epochs = max(1, min(epochs, 1 + int(max(budget - (time.perf_counter() - clock), 0) / times[0])))
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
            for g in opt.param_groups:
                g["lr"] = cfg.get("lr", 1e-3)
            sched.last_epoch = 0
        sched.step()
        print(f"[neuraloperator] epoch {epoch}/{epochs} loss {loss.item():.4f} {times[-1]:.2f}s", flush=True)
        epoch += 1
    model.eval()

    def predict(a):
        with torch.no_grad():
            return model((torch.from_numpy(a) - mx) / sx) * sy + my

    preds = [torch.cat([predict(t[0][i:i + 50]) for i in range(0, len(t[0]), 50)]).numpy() for t in tests]
    infer = _time(lambda: predict(tests[0][0][:50])) / min(50, len(tests[0][0]))
    return {"version": neuralop.__version__, "params": sum(p.numel() for p in model.parameters()),
            "epochs": epochs, "epoch_seconds": statistics.median(times), "train_seconds": sum(times),
            "inference_seconds_per_sample": infer}, preds


def run_deepxde(spec, train, tests):
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    import deepxde as dde

    cfg, m = spec["train"], spec["model"]
    x, y, grids = train
    mesh = np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, len(grids)).astype(np.float32)
    flat = lambda a: a.reshape(a.shape[0], -1)  # noqa: E731
    data = dde.data.TripleCartesianProd(X_train=(flat(x), mesh), y_train=flat(y),
                                        X_test=(flat(tests[0][0]), mesh), y_test=flat(tests[0][1]))
    dde.config.set_random_seed(cfg.get("seed", 0))
    net = dde.nn.DeepONetCartesianProd([flat(x).shape[1], *m.get("branch", [40, 40])],
                                       [mesh.shape[1], *m.get("trunk", [40, 40])], "relu", "Glorot normal")
    model = dde.Model(data, net)
    model.compile("adam", lr=cfg.get("lr", 1e-3))

    stamps = step_stamps(dde)
    iterations = cfg.get("epochs", 10000)
    tic = time.perf_counter()
    model.train(iterations=iterations, callbacks=[stamps], verbose=0, display_every=max(1000, iterations // 10))
    total = time.perf_counter() - tic
    preds = [model.predict((flat(t[0]), mesh)).reshape(t[1].shape) for t in tests]
    infer = _time(lambda: model.predict((flat(tests[0][0]), mesh))) / len(tests[0][0])
    return {"version": dde.__version__, "params": sum(p.numel() for p in net.parameters()),
            "epochs": iterations, "epoch_seconds": statistics.median(np.diff(stamps.t)), "train_seconds": total,
            "inference_seconds_per_sample": infer}, preds


def step_stamps(dde):
    """A DeepXDE callback recording the start of every step and the end of training (``.t``)."""

    class Stamps(dde.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.t = []

        def on_batch_begin(self):
            self.t.append(time.perf_counter())

        def on_train_end(self):
            self.t.append(time.perf_counter())

    return Stamps()


def _time(fn, repeats=5):
    fn()
    out = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        out.append(time.perf_counter() - tic)
    return statistics.median(out)


def main(path: str) -> int:
    spec = json.loads(Path(path).read_text())
    if spec.get("device", "cpu").startswith("cuda"):
        print("peer_driver: runs the peers on the CPU only", file=sys.stderr)
    torch.set_num_threads(int(os.environ.get("OPLAB_PEER_THREADS", os.cpu_count() or 1)))
    train, tests = _split(spec)
    runner = {"neuraloperator": run_neuraloperator, "deepxde": run_deepxde}[spec["library"]]
    result, preds = runner(spec, train, tests)
    out = Path(spec["out"])
    for i, p in enumerate(preds):
        np.save(out.parent / f"pred_{i}.npy", np.asarray(p, dtype=np.float32))
    result.update(library=spec["library"], model=spec["model"], train=spec["train"],
                  peak_memory_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  n_predictions=len(preds))
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
