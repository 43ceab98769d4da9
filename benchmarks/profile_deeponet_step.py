"""Profile oplab's DeepONet training iteration in the setting of ``peers_deeponet.py``.

    benchmarks/.venv-peers/bin/python benchmarks/profile_deeponet_step.py

Prints (1) the median time per iteration of the plain loop with torch's default (for-loop),
``foreach`` and ``fused`` Adam, (2) the ``torch.profiler`` table of 200 iterations of the plain
loop, grouped by stage, and (3) a cProfile of ``oplab.train.fit`` (2000 one-batch epochs),
which shows the per-epoch Python overhead of the training loop.
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers_deeponet as P  # noqa: E402


def main() -> int:
    torch.set_num_threads(2)
    data = P.make_data(150, 10, 0)
    x = torch.from_numpy(data["v_train"])[:, None]
    y = torch.from_numpy(data["u_train"])[:, None]
    coords = (torch.from_numpy(data["grid"]),)
    mse = torch.nn.functional.mse_loss

    def loop(model, opt, n, labels=False):
        stamps = []
        for _ in range(n):
            stamps.append(time.perf_counter())
            if labels:
                with record_function("forward+loss"):
                    loss = mse(model(x, coords), y)
                with record_function("zero_grad+backward"):
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                with record_function("optimizer.step"):
                    opt.step()
            else:
                opt.zero_grad(set_to_none=True)
                mse(model(x, coords), y).backward()
                opt.step()
        stamps.append(time.perf_counter())
        return 1e3 * statistics.median(np.diff(stamps))

    for label, kw in (("Adam (default, for-loop)", {}), ("Adam(foreach=True)", {"foreach": True}),
                      ("Adam(fused=True)", {"fused": True})):
        model = P._oplab_model(0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, **kw)
        loop(model, opt, 200)
        print(f"{label:26s} {loop(model, opt, 3000):.3f} ms/iteration", flush=True)

    model = P._oplab_model(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loop(model, opt, 200)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loop(model, opt, 200, labels=True)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    for row in prof.key_averages():
        if row.key in ("forward+loss", "zero_grad+backward", "optimizer.step", "Optimizer.step#Adam.step"):
            print(f"{row.key:28s} {row.cpu_time_total / 1e3 / row.count:.3f} ms per iteration (profiled)")

    from oplab.train.config import TrainConfig
    from oplab.train.data import GridData
    from oplab.train import fit

    train = GridData(x=x, y=y, in_coords=coords, out_coords=coords, periodic=(False,), n_times=None, resolution=100)
    cfg = TrainConfig(epochs=2000, batch_size=150, lr=1e-3, weight_decay=0.0, optimizer="adam", scheduler="none",
                      loss="l2", eval_every=10**9, seed=0, device="cpu")
    profiler = cProfile.Profile()
    profiler.enable()
    fit(P._oplab_model(0), train, {}, cfg, out=None, log=lambda *a: None)
    profiler.disable()
    print("oplab.train.fit, 2000 epochs of one batch, cProfile by own time:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
