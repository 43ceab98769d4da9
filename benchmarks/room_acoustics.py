"""Room acoustics with a DeepONet: accuracy in Pa, moving sources against the solver, speed, WAV files
(issue 16, item 1).

    OMP_NUM_THREADS=1 python benchmarks/room_acoustics.py [--work DIR] [--minutes 10]

Set-up (Borrel-Jensen et al. 2024, PNAS, "Sound propagation in realistic interactive 3D scenes with
parameterized sources using deep neural operators", at a CPU size): the ``room_acoustics`` problem's
default 2D room, 2 m x 2 m with rigid walls, a Gaussian pulse (sigma0 = 0.2 m, peak 1 Pa) released at
a source drawn at least 0.5 m from the walls, pressure recorded on 21 x 21 receivers every 0.5 ms
to 20 ms (the pulse crosses the room about 3.4 times). The DeepONet of the paper: the branch reads
the source position, the trunk ``(c t, x, y)`` with the Fourier-feature expansion, sin activations,
2000 random query points per step (the paper: 1000); trained through ``oplab.train`` (best
checkpoint on validation sources), scored on held-out sources. (Found on the validation sources
in 2-minute probes: tanh 0.68 and GELU 0.44 relative L2 against sin's 0.45 after the same time,
and whole-grid steps 8x slower per step than 2000 points.)

Measured:
1. RMSE in Pa (the paper's metric) and relative L2 on the test sources;
2. a moving source (one pulse per FDTD step along a 1 m path in 5 ms, weighted by a windowed tone),
   heard at a receiver: the operator's superposition (:func:`oplab.auralize.moving_source`) against
   the solver's direct run (:meth:`RoomAcoustics.moving_source`);
3. speed: one receiver's time series for a new source, the whole field, and the moving source,
   operator against solver;
4. WAV files of a static and a moving source (benchmarks/figures/room_acoustics_*.wav) and a figure.
Writes the table and ``benchmarks/room_acoustics.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import timing

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/oplab-room"))
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=ROOT / "room_acoustics.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    import oplab
    from oplab import auralize, problems
    from oplab.data.generation import generate
    from oplab.train import run_or_resume
    from oplab.train.config import DataConfig, RunConfig, TrainConfig
    from oplab.train.data import Part, recorded_split
    from oplab.rundir import RunDir

    prob = problems.create("room_acoustics")
    total = args.n_train + args.n_test
    data_path = args.work / "room2d.h5"
    tic = time.perf_counter()
    generate(prob, total, data_path, seed=0, resume=True)
    print(f"data: {total} sources ({time.perf_counter() - tic:.0f} s)", flush=True)
    run_dir = args.work / "deeponet"
    model = {"name": "deeponet", "branch_layers": [128, 128], "trunk_layers": [128, 128, 128], "latent": 128,
             "activation": "sin", "coord_scale": [343.0, 1.0, 1.0], "fourier_features": [0.5, 1.0, 2.0]}
    cfg = RunConfig(data=DataConfig(train=str(data_path), n_train=args.n_train, n_val=args.n_train // 10,
                                    n_test=args.n_test),
                    model=model,
                    train=TrainConfig(epochs=20000, budget_minutes=args.minutes, batch_size=64, points=2000, lr=1e-3,
                                      loss="mse", scheduler="cosine", eval_every=100, device="cpu", plot_samples=2),
                    out=str(run_dir))
    run_or_resume(cfg, log=lambda s: print(s, flush=True))
    op = oplab.load(run_dir)

    # 1. accuracy on the test sources
    test = recorded_split(RunDir.open(run_dir)).tests[0]
    data = Part(test.file, test.indices, None).load()
    pred = torch.as_tensor(op(data.x.numpy()))
    diff = (pred - data.y).double()
    rmse = float(diff.square().mean().sqrt())
    rmse_per = diff.square().flatten(1).mean(1).sqrt()
    rel = float((diff.flatten(1).norm(dim=1) / data.y.double().flatten(1).norm(dim=1)).mean())
    print(f"test: RMSE {rmse:.4f} Pa (per source {float(rmse_per.min()):.4f}-{float(rmse_per.max()):.4f}), "
          f"relative L2 {rel:.4f}", flush=True)

    # 2. a moving source against the solver's direct run
    receiver = np.array([1.5, 0.5])
    path_times = np.array([0.0, 0.005])
    path = np.array([[0.6, 0.6], [1.4, 1.3]])
    times = prob.output_axes()[0].coords()  # 0.5 ms .. 20 ms
    tone = lambda t: np.sin(2 * np.pi * 300 * t) * np.sin(np.pi * t / 0.005) ** 2  # noqa: E731
    tt = np.linspace(0, 0.005, 101)
    tic = time.perf_counter()
    direct = prob.moving_source(tt, np.stack([np.interp(tt, path_times, path[:, d]) for d in range(2)], 1),
                                tone(tt), receiver[None], times)
    solver_moving_s = time.perf_counter() - tic
    tic = time.perf_counter()
    assembled = auralize.moving_source(op, direct.emit_times, direct.emit_points, direct.emit_weights, receiver, times)
    surrogate_moving_s = time.perf_counter() - tic
    ref = direct.pressure[:, 0]
    moving = {"pulses": len(direct.emit_times), "rmse_pa": float(np.sqrt(np.mean((assembled - ref) ** 2))),
              "relative_l2": float(np.linalg.norm(assembled - ref) / np.linalg.norm(ref)),
              "peak_pa": float(np.abs(ref).max()), "solver_seconds": solver_moving_s,
              "surrogate_seconds": surrogate_moving_s}
    print(f"moving source ({moving['pulses']} pulses): RMSE {moving['rmse_pa']:.4f} Pa of a {moving['peak_pa']:.2f} Pa "
          f"peak, relative L2 {moving['relative_l2']:.3f}", flush=True)

    # 3. speed: a receiver's time series, the whole field (medians of interleaved calls)
    source = data.x[0, 0].numpy().astype(np.float64)
    runs = timing.interleaved({
        "solver series": lambda _: prob.impulse_response(source, receiver[None], times),
        "operator series": lambda _: auralize.receiver_responses(op, source[None], receiver, times),
        "solver field": lambda _: prob.solve(data.x[0].numpy().astype(np.float64)),
        "operator field": lambda _: op(data.x[:1].numpy())}, None, rounds=3, repeats=3)
    t_solver, t_series, t_solve_field, t_field = (statistics.median(runs[k]) for k in (
        "solver series", "operator series", "solver field", "operator field"))
    speed = {"solver_series_s": t_solver, "operator_series_s": t_series, "series_speedup": t_solver / t_series,
             "solver_field_s": t_solve_field, "operator_field_s": t_field, "field_speedup": t_solve_field / t_field,
             "moving_speedup": solver_moving_s / surrogate_moving_s}
    print(f"speed: receiver series {1e3 * t_series:.2f} ms vs solver {1e3 * t_solver:.0f} ms "
          f"({speed['series_speedup']:.0f}x); field {1e3 * t_field:.2f} ms vs {1e3 * t_solve_field:.0f} ms "
          f"({speed['field_speedup']:.0f}x); moving source {speed['moving_speedup']:.0f}x", flush=True)

    # 4. WAV files and a figure
    figures = ROOT / "figures"
    static = auralize.auralize(op, receiver, [0.7, 1.2], figures / "room_acoustics_static.wav", overwrite=True)
    moving_wav = auralize.auralize(op, receiver, [0.6, 0.6], figures / "room_acoustics_moving.wav", to=[1.4, 1.3],
                                   overwrite=True)
    _figure(figures / "room_acoustics.png", times, pred[0, 0], data.y[0, 0], op, source, receiver, prob,
            assembled, ref)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    out = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
           "torch_threads": 1, "args": {k: str(v) for k, v in vars(args).items()}, "model": model,
           "parameters": sum(p.numel() for p in op.bundle.model.parameters()),
           "epochs": len(metrics), "train_seconds": sum(m.get("epoch_seconds", 0) + m.get("eval_seconds", 0) for m in metrics),
           "test": {"rmse_pa": rmse, "relative_l2": rel, "sources": len(data)}, "moving": moving, "speed": speed,
           "wav": {"static": static, "moving": moving_wav}}
    args.json.write_text(json.dumps(out, indent=1, default=str))
    print(f"\n| quantity | value |\n|---|---|\n| test RMSE (Pa) | {rmse:.4f} |\n| test relative L2 | {rel:.4f} |\n"
          f"| moving source RMSE (Pa) / relative L2 | {moving['rmse_pa']:.4f} / {moving['relative_l2']:.3f} |\n"
          f"| receiver series: operator / solver | {1e3 * t_series:.2f} ms / {1e3 * t_solver:.0f} ms |\n"
          f"| whole field: operator / solver | {1e3 * t_field:.2f} ms / {1e3 * t_solve_field:.0f} ms |")
    print(f"wrote {args.json}")


def _figure(path, times, pred, truth, op, source, receiver, prob, assembled, ref) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from oplab import auralize

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.4))
    k = len(times) // 4
    im = axes[0].imshow(truth[k].T, origin="lower", extent=[0, 2, 0, 2], cmap="RdBu_r", vmin=-0.5, vmax=0.5)
    axes[0].set_title(f"FDTD p at t = {1e3 * times[k]:.1f} ms (test source)", fontsize=8)
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    im = axes[1].imshow((pred[k] - truth[k]).T, origin="lower", extent=[0, 2, 0, 2], cmap="RdBu_r",
                        vmin=-0.05, vmax=0.05)
    axes[1].set_title("DeepONet - FDTD (Pa)", fontsize=8)
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    axes[0].plot(*source, "k*")
    axes[0].plot(*receiver, "ko", mfc="none")
    ms = 1e3 * times
    fine = np.linspace(times[0], times[-1], 400)
    axes[2].plot(1e3 * fine, prob.impulse_response(source, receiver[None], fine)[:, 0], "k", lw=1, label="FDTD, static")
    axes[2].plot(1e3 * fine, auralize.receiver_responses(op, source[None], receiver, fine)[0], "C0--", lw=1,
                 label="DeepONet, static")
    axes[2].set_title("a test source, heard at the receiver (circle)", fontsize=8)
    axes[3].plot(ms, ref, "k", lw=1, label="FDTD, moving source")
    axes[3].plot(ms, assembled, "C1o", ms=2.5, label="DeepONet superposition")
    axes[3].set_title("a moving source (271 pulses, 300 Hz tone), same receiver", fontsize=8)
    for ax in axes[2:]:
        ax.set_xlabel("t (ms)", fontsize=8)
        ax.set_ylabel("p at the receiver (Pa)", fontsize=8)
        ax.legend(fontsize=6)
    for ax in axes:
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
