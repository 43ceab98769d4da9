"""Profile one training epoch of oplab's FNO (and optionally neuraloperator's) on the peer Darcy set.

    benchmarks/.venv-peers/bin/python benchmarks/profile_fno_epoch.py --modes 16 16
    benchmarks/.venv-peers/bin/python benchmarks/profile_fno_epoch.py --modes 8 9 --neuralop

Same settings as ``peers_fno.py`` (width 32, 4 layers, lifting/projection 64, batch 32, H1 loss,
AdamW lr 8e-3, 2 threads). One warm-up epoch, then one epoch under ``torch.profiler``; prints the
operators by self CPU time, grouped by the oplab stage they belong to (``record_function`` labels
around forward, loss, backward and optimizer step), and the inference call (100 at 32x32).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers_fno import grid, load  # noqa: E402


def oplab_epoch(bundle, optimizer, loss_fn, x, y, coords, batch, seed, epoch, labels=True):
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    ctx = record_function if labels else (lambda name: torch.autograd.profiler.record_function(name))
    for start in range(0, len(x), batch):
        idx = order[start : start + batch]
        xb, yb = x[idx], y[idx]
        with ctx("forward"):
            pred = bundle(xb, coords)
        with ctx("loss"):
            loss = loss_fn(pred, yb, coords, (False, False))
        with ctx("zero_grad+backward"):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with ctx("optimizer.step"):
            optimizer.step()
        loss.item()


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--modes", type=int, nargs=2, default=[16, 16])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--neuralop", action="store_true", help="profile neuraloperator's FNO step too")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from oplab import losses
    from oplab.models.fno import FNO
    from oplab.predictor import Bundle

    x, y = load("train_16")
    coords = (grid(16), grid(16))
    torch.manual_seed(0)
    model = FNO(1, 1, modes=list(args.modes), width=32, n_layers=4, lifting_channels=64, projection_channels=64)
    bundle = Bundle(model, 1, 1)
    bundle.in_norm.fit(x)
    bundle.out_norm.fit(y)
    optimizer = torch.optim.AdamW([q for q in bundle.parameters() if q.requires_grad], lr=8e-3, weight_decay=1e-4)
    loss_fn = losses.get("h1")
    oplab_epoch(bundle, optimizer, loss_fn, x, y, coords, 32, 0, 0)  # warm-up
    tic = time.perf_counter()
    oplab_epoch(bundle, optimizer, loss_fn, x, y, coords, 32, 0, 1)
    print(f"oplab modes={args.modes}: epoch {time.perf_counter() - tic:.3f}s (unprofiled)")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        oplab_epoch(bundle, optimizer, loss_fn, x, y, coords, 32, 0, 2)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))

    x32, _ = load("test_32")
    x100 = torch.cat([x32, x32])
    c32 = (grid(32), grid(32))
    bundle.eval()
    with torch.no_grad():
        for _ in range(3):
            bundle(x100, c32)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                bundle(x100, c32)
    print("inference, 5 calls of 100 at 32x32")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))

    if args.neuralop:
        import neuralop  # noqa: F401
        from neuralop import H1Loss
        from neuralop.models import FNO as NFNO

        warnings.filterwarnings("ignore", message=r".*received unexpected keyword arguments")
        torch.manual_seed(0)
        net = NFNO(n_modes=(16, 16), in_channels=1, out_channels=1, hidden_channels=32, n_layers=4,
                   projection_channel_ratio=2)
        opt = torch.optim.AdamW(net.parameters(), lr=8e-3, weight_decay=1e-4)
        h1 = H1Loss(d=2)
        yn = (y - y.mean()) / y.std()

        def epoch():
            for start in range(0, len(x), 32):
                opt.zero_grad(set_to_none=True)
                with record_function("forward"):
                    out = net(x[start : start + 32])
                with record_function("loss"):
                    loss = h1(out, yn[start : start + 32])
                with record_function("backward"):
                    loss.backward()
                with record_function("optimizer.step"):
                    opt.step()
                loss.item()

        epoch()
        tic = time.perf_counter()
        epoch()
        print(f"neuralop: epoch {time.perf_counter() - tic:.3f}s (unprofiled)")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            epoch()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
