"""oplab's DeepONet against DeepXDE 1.15.0 (pytorch backend) on the antiderivative operator,
in DeepXDE's aligned (Cartesian-product) setting.

Run with the peers' virtual environment (see ``benchmarks/setup_peers.sh``)::

    benchmarks/.venv-peers/bin/python benchmarks/peers_deeponet.py      # 3 seeds x 10000 iterations, ~5 min

Setting (DeepXDE's antiderivative_aligned example): 150 training and 1000 test functions ``v``
(GP, RBF kernel, l = 0.2) at 100 sensors, outputs ``u = int_0^x v`` at the same 100 points, made
by ``oplab.problems.create("antiderivative", resolution=100).generate(...)`` (training indices
0..149, test indices 150..1149, data seed 0, identical for every model seed). Network: branch
``[100, 40, 40]``, trunk ``[1, 40, 40]``, ReLU, Glorot normal, zero biases, a scalar output bias.
Adam, lr 1e-3, 10000 full-batch iterations (150 functions x 100 points), MSE loss, float32,
``torch.set_num_threads(2)``.

* DeepXDE: ``dde.data.TripleCartesianProd`` + ``dde.nn.DeepONetCartesianProd`` + ``dde.Model``,
  ``compile("adam", lr=1e-3)``, ``train(iterations=10000)`` (its default ``display_every=1000``,
  i.e. a test-set evaluation every 1000 iterations, as in its example).
* oplab (``oplab``): ``DeepONet(n_sensors=100, coord_dim=1, branch_layers=[40], trunk_layers=[40],
  latent=40, activation="relu")`` trained by a plain torch loop (``zero_grad``, forward on the
  shared grid, ``mse_loss``, ``backward``, ``step``), no normalisation: the same problem as
  DeepXDE's.
* oplab ``fit`` (``oplab_fit``, for reference): the same network trained by
  ``oplab.train.fit`` (Adam, lr 1e-3, no weight decay, no schedule, batch 150, 10000
  epochs of one batch), i.e. with oplab's defaults: channel-wise normalisation and the relative
  L2 training loss (not MSE), so its error is not like-for-like, only its time;
  ``oplab_fit_folder``: the same with a run folder, as ``oplab train`` writes one (the epoch
  records in ``metrics.jsonl``, checkpoints every 30 s and at the end). Compare the mean column
  (the whole run's time over its iterations): the median of ``epoch_seconds`` leaves out the
  per-epoch bookkeeping that a one-batch epoch pays every step.

Measured: time per iteration = the interval between the starts of consecutive iterations
(DeepXDE: a callback's ``on_batch_begin``; oplab: the top of the loop; ``fit``: its per-epoch
``epoch_seconds``, the batch loop only), median over the run; test error = mean over the 1000
test functions of ``||u - v||_2 / ||v||_2`` on the 100 points (DeepXDE's "mean l2 relative
error"), computed by the same function for all.

Writes ``benchmarks/peers_deeponet.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("DDE_BACKEND", "pytorch")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oplab.bench.machine import Foreign, describe  # noqa: E402
from oplab.bench.peer_driver import step_stamps  # noqa: E402

HERE = Path(__file__).resolve().parent


def rel_l2(pred: np.ndarray, target: np.ndarray) -> float:
    pred = np.asarray(pred, dtype=np.float64).reshape(target.shape[0], -1)
    target = np.asarray(target, dtype=np.float64).reshape(target.shape[0], -1)
    return float(np.mean(np.linalg.norm(pred - target, axis=1) / np.linalg.norm(target, axis=1)))


def make_data(n_train: int, n_test: int, seed: int) -> dict:
    import oplab

    problem = oplab.problems.create("antiderivative", resolution=100)
    x_train, y_train = problem.generate(range(n_train), seed)  # [N, 1, 100] each
    x_test, y_test = problem.generate(range(n_train, n_train + n_test), seed)
    grid = problem.output_axes()[0].coords()  # [100], 0..1
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)
    return {"v_train": f32(x_train[:, 0]), "u_train": f32(y_train[:, 0]), "v_test": f32(x_test[:, 0]),
            "u_test": f32(y_test[:, 0]), "grid": f32(grid)}


def run_deepxde(seed: int, args, data) -> dict:
    import deepxde as dde

    xs = data["grid"][:, None]  # [100, 1]
    d = dde.data.TripleCartesianProd(X_train=(data["v_train"], xs), y_train=data["u_train"],
                                     X_test=(data["v_test"], xs), y_test=data["u_test"])
    dde.config.set_random_seed(seed)
    net = dde.nn.DeepONetCartesianProd([100, 40, 40], [1, 40, 40], "relu", "Glorot normal")
    model = dde.Model(d, net)
    model.compile("adam", lr=args.lr, metrics=["mean l2 relative error"])
    torch.set_num_threads(args.threads)

    stamps = step_stamps(dde)
    tic = time.perf_counter()
    model.train(iterations=args.iterations, callbacks=[stamps], verbose=0)
    total = time.perf_counter() - tic
    per_iter = np.diff(stamps.t).tolist()
    pred = model.predict((data["v_test"], xs))
    params = sum(p.numel() for p in net.parameters())
    return {"params": params, "iter_seconds_median": statistics.median(per_iter),
            "iter_seconds_mean": total / args.iterations, "train_seconds_total": total,
            "test_rel_l2": rel_l2(pred, data["u_test"]),
            "train_rel_l2": rel_l2(model.predict((data["v_train"], xs)), data["u_train"])}


def _oplab_model(seed: int):
    from oplab.models.deeponet import DeepONet

    torch.manual_seed(seed)
    return DeepONet(n_sensors=100, coord_dim=1, branch_layers=[40], trunk_layers=[40], latent=40,
                    activation="relu")


def run_oplab(seed: int, args, data, fused: bool = False) -> dict:
    model = _oplab_model(seed)
    x = torch.from_numpy(data["v_train"])[:, None]  # [150, 1, 100]
    y = torch.from_numpy(data["u_train"])[:, None]
    coords = (torch.from_numpy(data["grid"]),)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, fused=fused)
    mse = torch.nn.functional.mse_loss
    stamps = []
    tic = time.perf_counter()
    for _ in range(args.iterations):
        stamps.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss = mse(model(x, coords), y)
        loss.backward()
        opt.step()
    stamps.append(time.perf_counter())
    total = time.perf_counter() - tic
    per_iter = np.diff(stamps).tolist()
    with torch.no_grad():
        pred = model(torch.from_numpy(data["v_test"])[:, None], coords)[:, 0].numpy()
        pred_train = model(x, coords)[:, 0].numpy()
    return {"params": model.n_params(), "iter_seconds_median": statistics.median(per_iter),
            "iter_seconds_mean": total / args.iterations, "train_seconds_total": total,
            "test_rel_l2": rel_l2(pred, data["u_test"]), "train_rel_l2": rel_l2(pred_train, data["u_train"])}


def run_oplab_fit(seed: int, args, data, fused: bool = False, folder: bool = False) -> dict:
    import oplab.train.trainer as loop
    from peers_fno import _fused_torch_optim
    from oplab.train.config import TrainConfig
    from oplab.train.data import GridData
    from oplab.train import fit

    model = _oplab_model(seed)
    coords = (torch.from_numpy(data["grid"]),)
    train = GridData(x=torch.from_numpy(data["v_train"])[:, None], y=torch.from_numpy(data["u_train"])[:, None],
                     in_coords=coords, out_coords=coords, periodic=(False,), n_times=None, resolution=100)
    cfg = TrainConfig(epochs=args.iterations, batch_size=len(train), lr=args.lr, weight_decay=0.0,
                      optimizer="adam", scheduler="none", loss="l2", eval_every=10**9, seed=seed,
                      device="cpu", normalize=True)
    saved, loop.torch = loop.torch, (_fused_torch_optim() if fused else loop.torch)  # what-if, see peers_fno.py
    try:
        tic = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:  # folder: a run folder as `oplab train` writes one
            result = fit(model, train, {}, cfg, out=Path(tmp) / "run" if folder else None, log=lambda *a: None)
        total = time.perf_counter() - tic
    finally:
        loop.torch = saved
    bundle = result["bundle"].eval()
    with torch.no_grad():
        pred = bundle(torch.from_numpy(data["v_test"])[:, None], coords)[:, 0].numpy()
    per_epoch = [h["epoch_seconds"] for h in result["history"]]
    return {"params": model.n_params(), "iter_seconds_median": statistics.median(per_epoch),
            "iter_seconds_mean": total / args.iterations, "train_seconds_total": total,
            "test_rel_l2": rel_l2(pred, data["u_test"])}


def run_oplab_train(seed: int, args, data) -> dict:
    """The same network through ``oplab.train`` (what ``oplab train`` runs): the data from an oplab
    file, a run folder, the thread count chosen automatically (``--threads`` is not passed on); time
    per iteration = from the first epoch's start to the last one's end over the iterations (the
    per-epoch bookkeeping included; the set-up and the figures written after training left out)."""
    import oplab
    from oplab.data.generation import generate
    from oplab.train import Callback

    path = Path(tempfile.gettempdir()) / f"oplab-peers-antiderivative-{args.n_train}-{args.n_test}-{args.data_seed}.h5"
    problem = oplab.problems.create("antiderivative", resolution=100)
    generate(problem, args.n_train + args.n_test, path, seed=args.data_seed, resume=True, workers=1)
    ds = oplab.data.open(path)
    assert np.allclose(ds.arrays([0])[0][0, 0], data["v_train"][0])  # the same samples as make_data's

    class Clock(Callback):
        def on_epoch_start(self, trainer, epoch):
            if epoch == 0:
                self.start = time.perf_counter()

        def on_fit_end(self, trainer):
            self.end = time.perf_counter()

    clock, before = Clock(), torch.get_num_threads()
    model = _oplab_model(seed)
    env = os.environ.pop("OMP_NUM_THREADS", None)  # the automatic choice, as a user gets it
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tic = time.perf_counter()
            result = oplab.train(model, ds, out=Path(tmp) / "run", n_train=args.n_train, n_val=0, n_test=args.n_test,
                                 epochs=args.iterations, batch_size=args.n_train, lr=args.lr, weight_decay=0.0,
                                 optimizer="adam", scheduler="none", eval_every=10**9, seed=seed, device="cpu",
                                 log=lambda *a: None, callbacks=[clock])
            total = time.perf_counter() - tic
            threads = json.loads((Path(tmp) / "run" / "config.json").read_text())["train"]["threads"]
    finally:
        if env is not None:
            os.environ["OMP_NUM_THREADS"] = env
        torch.set_num_threads(before)
    bundle = result["bundle"].eval()
    coords = (torch.from_numpy(data["grid"]),)
    with torch.no_grad():
        pred = bundle(torch.from_numpy(data["v_test"])[:, None], coords)[:, 0].numpy()
    per_epoch = [h["epoch_seconds"] for h in result["history"]]
    return {"params": model.n_params(), "iter_seconds_median": statistics.median(per_epoch),
            "iter_seconds_mean": (clock.end - clock.start) / args.iterations, "train_seconds_total": total,
            "threads_chosen": threads, "test_rel_l2": rel_l2(pred, data["u_test"])}


def summarize(runs: list[dict]) -> dict:
    out = {"params": runs[0]["params"],
           "foreign_cpu_cores_max": max(r["foreign_cpu_cores"] or 0.0 for r in runs),
           "iter_ms_median": 1e3 * statistics.median(r["iter_seconds_median"] for r in runs),
           "iter_ms_mean": 1e3 * statistics.fmean(r["iter_seconds_mean"] for r in runs)}
    vals = [r["test_rel_l2"] for r in runs]
    out["test_rel_l2_mean"] = statistics.fmean(vals)
    out["test_rel_l2_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    out["test_rel_l2_per_seed"] = vals
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iterations", type=int, default=10000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-train", type=int, default=150)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--models", nargs="+", default=["deepxde", "oplab", "oplab_fit"],
                   choices=["deepxde", "oplab", "oplab_fit", "oplab_fit_folder", "oplab_train", "oplab_fused",
                            "oplab_fit_fused"],
                   help="*_fused: what-if, torch's fused Adam kernel (same algorithm) on the oplab side")
    p.add_argument("--out", default=str(HERE / "peers_deeponet.json"))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    import deepxde  # here, so it prints its backend once, before the runs

    torch.set_num_threads(args.threads)
    data = make_data(args.n_train, args.n_test, args.data_seed)
    runners = {"deepxde": run_deepxde, "oplab": run_oplab, "oplab_fit": run_oplab_fit,
               "oplab_fit_folder": lambda s, a, d: run_oplab_fit(s, a, d, folder=True),
               "oplab_train": run_oplab_train,
               "oplab_fused": lambda s, a, d: run_oplab(s, a, d, fused=True),
               "oplab_fit_fused": lambda s, a, d: run_oplab_fit(s, a, d, fused=True)}
    runs = {m: [] for m in args.models}
    for seed in args.seeds:  # interleaved
        for name in args.models:
            with Foreign() as busy:
                r = runners[name](seed, args, data)
            r["foreign_cpu_cores"] = busy.cores
            runs[name].append(r)
            print(f"seed {seed} {name:15s} params {r['params']:,}  iter {1e3 * r['iter_seconds_median']:.3f}ms "
                  f"(mean {1e3 * r['iter_seconds_mean']:.3f}ms)  test rel L2 {r['test_rel_l2']:.5f}  "
                  f"total {r['train_seconds_total']:.1f}s  threads {torch.get_num_threads()}  other programs {r['foreign_cpu_cores']:.2f} cores", flush=True)

    summary = {m: summarize(r) for m, r in runs.items()}
    ratios = {}
    if "deepxde" in summary:
        ref = summary["deepxde"]
        for m, s in summary.items():
            if m == "deepxde":
                continue
            ratios[m] = {"iter_ratio": s["iter_ms_median"] / ref["iter_ms_median"], "iter_goal": 0.5,
                         "iter_ratio_mean": s["iter_ms_mean"] / ref["iter_ms_mean"],
                         "error_vs_ref_mean": s["test_rel_l2_mean"] - ref["test_rel_l2_mean"]}
            ratios[m]["iter_met"] = ratios[m]["iter_ratio"] <= 0.5
            ratios[m]["error_met"] = s["test_rel_l2_mean"] <= ref["test_rel_l2_mean"]

    print()
    print(f"{'model':15s} {'params':>7s} {'ms/iter med':>11s} {'ms/iter mean':>12s} {'test rel L2 mean±std':>22s}")
    for m, s in summary.items():
        print(f"{m:15s} {s['params']:7,d} {s['iter_ms_median']:11.3f} {s['iter_ms_mean']:12.3f} "
              f"{s['test_rel_l2_mean']:12.5f}±{s['test_rel_l2_std']:.5f}")
    for m, r in ratios.items():
        print(f"{m}: iteration x{r['iter_ratio']:.3f} (mean x{r['iter_ratio_mean']:.3f}; goal <= 0.5, "
              f"{'met' if r['iter_met'] else 'missed'}), error {'met' if r['error_met'] else 'missed'} "
              f"({r['error_vs_ref_mean']:+.5f})")

    report = {
        "benchmark": "DeepONet vs DeepXDE 1.15.0, antiderivative aligned",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "environment": {**describe(), "deepxde": deepxde.__version__},
        "metric": "mean over the test functions of ||u - v||_2 / ||v||_2 on the 100 points",
        "summary": summary, "ratios_vs_deepxde": ratios, "runs": runs,
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
