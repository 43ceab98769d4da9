"""One training loop for every operator.

``fit`` trains a model on :class:`~oplab.train.data.GridData`, evaluates it
on test sets keyed by resolution, and keeps a run folder::

    RUN/config.json            what was run: model config, train config, data description
    RUN/metrics.jsonl          one JSON line per epoch
    RUN/checkpoints/last/      model + normalisers + optimizer + random state + epoch
    RUN/checkpoints/best/      the weights with the lowest test relative L2 so far
    RUN/predictions.png, RUN/loss.png

Determinism and resume: the model is initialised from ``seed`` by the
caller; the batch order of epoch ``e`` comes from a generator seeded with
``(seed, e)``; the learning rate is a pure function of the epoch. So a run
resumed from ``checkpoints/last`` after a ``kill -9`` ends with the same
weights as an uninterrupted one.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) each process takes its
share ``batch[rank::world]`` of every global batch and DistributedDataParallel
averages the gradients, so a step equals the single-process step on the same
global batch (``batch_size`` is the global batch size). Only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from .. import __version__, losses
from ..data.normalize import ChannelNormalizer
from ..errors import OplabError
from ..losses.physics import residual_loss
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import GridData

RUN_FORMAT = "oplab-run"
RUN_VERSION = 1


class TrainingDiverged(OplabError):
    """The loss became NaN or Inf."""


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    if cfg.scheduler == "step":
        return cfg.lr * cfg.gamma ** (epoch // cfg.step_size)
    if cfg.scheduler == "cosine":
        return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.scheduler == "onecycle":
        # one cycle (Smith & Topin 2019; torch's OneCycleLR) per epoch, with the factors of MgNO's Darcy
        # script: cosine from lr/2 up to lr over the first 30% of the epochs, then cosine down to lr/200
        warm = max(1, round(0.3 * cfg.epochs))
        if epoch < warm:
            return cfg.lr / 2 + cfg.lr / 2 * 0.5 * (1.0 - math.cos(math.pi * epoch / warm))
        low = cfg.lr / 200
        t = (epoch - warm) / max(1, cfg.epochs - 1 - warm)
        return low + (cfg.lr - low) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    return cfg.lr


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Dist:
    """The process's place in a torchrun job (world 1 without torchrun)."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = device
        if self.world > 1 and not dist.is_initialized():
            if device.type == "cuda":
                local = int(os.environ.get("LOCAL_RANK", "0"))
                torch.cuda.set_device(local)
                self.device = torch.device("cuda", local)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()


class Bundle(torch.nn.Module):
    """Model + normalisers: what a checkpoint's ``weights.safetensors`` holds."""

    def __init__(self, model, in_channels: int, out_channels: int):
        super().__init__()
        self.model = model
        self.in_norm = ChannelNormalizer(in_channels)
        self.out_norm = ChannelNormalizer(out_channels)

    def forward(self, x, coords):
        return self.out_norm.decode(self.model(self.in_norm.encode(x), coords))


def evaluate(bundle: Bundle, data: GridData, batch_size: int = 50, device=None) -> dict:
    """Relative L2 and H1 errors (means over samples) of ``bundle`` on ``data``."""
    device = device or next(bundle.parameters()).device
    coords = tuple(c.to(device) for c in data.out_coords)
    l2 = h1 = 0.0
    bundle.eval()
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            xb = data.x[start : start + batch_size].to(device)
            yb = data.y[start : start + batch_size].to(device)
            pred = bundle(xb, coords)
            l2 += losses.relative_l2(pred, yb, coords, data.periodic, reduce=False).sum().item()
            h1 += losses.relative_h1(pred, yb, coords, data.periodic, reduce=False).sum().item()
    bundle.train()
    return {"l2": l2 / len(data), "h1": h1 / len(data)}


def inference_seconds_per_sample(bundle, data, batch: int = 50, repeats: int = 5) -> float:
    """Median time of the trained predictor (normalise, model, de-normalise) on a batch, per sample."""
    device = next(bundle.parameters()).device
    x = data.x[:batch].to(device)
    coords = tuple(c.to(device) for c in data.out_coords)
    bundle.eval()
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            tic = time.perf_counter()
            bundle(x, coords)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - tic)
    return statistics.median(times) / x.shape[0]


def fit(model, train: GridData, tests: dict, cfg: TrainConfig, out: Path | None = None,
        info: dict | None = None, resume: bool = False, log=print, progress=None) -> dict:
    """Train ``model`` (see module docstring). ``tests`` maps a label (the
    resolution) to GridData; the first one chooses the best checkpoint.

    ``progress(done, total, text)``, if given, is called after every batch
    with batches done and planned (the plan changes under a time budget).
    """
    import dataclasses

    cfg = dataclasses.replace(cfg)  # a time budget rewrites cfg.epochs
    cap, step0 = cfg.epochs, cfg.step_size
    device = resolve_device(cfg.device)
    env = _Dist(device)
    device = env.device
    out = Path(out) if out is not None else None
    bundle = Bundle(model, train.x.shape[1], train.y.shape[1]).to(device)
    if cfg.normalize:
        bundle.in_norm.fit(train.x)
        if not cfg.physics_only:  # without solutions the output normaliser stays the identity
            bundle.out_norm.fit(train.y)
    physics = _physics_problem(info, train) if cfg.physics_weight > 0 else None
    if hasattr(model, "fit_data"):  # data-dependent parts (POD basis)
        model.fit_data(bundle.in_norm.encode(train.x.to(device)), bundle.out_norm.encode(train.y.to(device)))

    params = [p for p in bundle.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    try:  # one fused kernel per step: -26% epoch time for FNO, -17% per DeepONet step (benchmarks/RESULTS.md)
        optimizer = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):  # older torch or a device without the fused kernel
        optimizer = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = losses.get(cfg.loss)

    start_epoch, best, history = 0, math.inf, []
    if resume:
        if out is None:
            raise OplabError("resume needs a run folder")
        weights = ckpt.load_weights(out / "checkpoints" / "last")
        bundle.load_state_dict(weights)
        tensors, state = ckpt.load_state(out / "checkpoints" / "last")
        optimizer.load_state_dict(ckpt.optimizer_from_flat(tensors, state["optimizer"]))
        torch.set_rng_state(tensors["rng.torch"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        if cfg.budget_minutes > 0:  # keep the epoch count (and step size) the budget chose
            cfg.epochs = state.get("epochs", cfg.epochs)
            cfg.step_size = state.get("step_size", cfg.step_size)
        history = _read_metrics(out, start_epoch)
        if env.main:
            log(f"resuming {out} at epoch {start_epoch}")
    elif out is not None and env.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("")
        config = {"format": RUN_FORMAT, "run_version": RUN_VERSION, "oplab_version": __version__,
                  **(info or {}), "train": cfg.__dict__.copy()}
        (out / "config.json").write_text(json.dumps(config, indent=1))

    net = bundle
    if env.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(bundle, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile and device.type == "cuda":
        net = torch.compile(net)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.amp and device.type == "cuda" else nullcontext())

    coords = tuple(c.to(device) for c in train.out_coords)
    n = len(train)
    n_batches = math.ceil(n / cfg.batch_size)
    clock = time.perf_counter()
    text = ""
    epoch = start_epoch
    while epoch < cfg.epochs:
        lr = learning_rate(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        tic = time.perf_counter()
        total, seen = 0.0, 0
        for k, start in enumerate(range(0, n, cfg.batch_size)):
            idx = order[start : start + cfg.batch_size][env.rank :: env.world]
            xb = train.x[idx].to(device)
            yb = None if cfg.physics_only else train.y[idx].to(device)  # no solutions: nothing to move
            with autocast:
                pred = net(xb, coords)
            loss = 0.0 if cfg.physics_only else cfg.data_weight * loss_fn(pred.float(), yb, coords, train.periodic)
            if physics is not None:
                loss = loss + cfg.physics_weight * residual_loss(physics, pred.float(), xb.float(), cfg.bc_weight,
                                                                 cfg.physics_norm)
            if not torch.isfinite(loss):
                where = f"{out}/checkpoints/last" if out is not None else "no run folder"
                raise TrainingDiverged(
                    f"loss is {loss.item()} at epoch {epoch}, batch {k}; stopped. Last good checkpoint: {where} "
                    f"(lower train.lr or set train.grad_clip)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            if progress is not None and env.main:
                progress(epoch * n_batches + k + 1, cfg.epochs * n_batches, text)
        record = {"epoch": epoch, "lr": lr, "train_loss": total / max(seen, 1),
                  "epoch_seconds": time.perf_counter() - tic}
        # a time budget plans the epoch count after epoch 0 (always evaluated, to time it) and
        # again after epoch 2 (epoch 0 carries warm-up costs): the rest must fit what is left
        budgeting = cfg.budget_minutes > 0 and (epoch == 0 or epoch == 2 < cfg.epochs - 1)
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs or (budgeting and epoch == 0):
            tic = time.perf_counter()
            record["test"] = {label: evaluate(bundle, data, device=device) for label, data in tests.items()}
            record["eval_seconds"] = time.perf_counter() - tic
        if budgeting:
            seen_epochs = history[1:] + [record] if epoch else [record]
            per_epoch = min(r["epoch_seconds"] for r in seen_epochs)
            eval_s = (history[0] if epoch else record).get("eval_seconds", 0.0)
            cfg.epochs = _epochs_in_budget(cfg, per_epoch + eval_s / cfg.eval_every, time.perf_counter() - clock,
                                           epoch + 1, cap, env)
            cfg.step_size = max(1, round(step0 * cfg.epochs / cap))  # a step schedule shrinks with it
            record["budget_epochs"] = cfg.epochs
            if env.main:
                log(f"time budget {cfg.budget_minutes:g} min: {cfg.epochs} epochs")
        history.append(record)
        text = f"epoch {epoch}  train {record['train_loss']:.4f}" + "".join(
            f"  test@{k} {m['l2']:.4f}" for k, m in record.get("test", {}).items())
        improved = "test" in record and tests and record["test"][next(iter(tests))]["l2"] < best
        if improved:
            best = record["test"][next(iter(tests))]["l2"]
        if env.main:
            if "test" in record or "budget_epochs" in record or (epoch + 1) % max(1, cfg.epochs // 200) == 0:
                log(_line(record))  # long runs (DeepONet: 10^4 epochs) log about 200 lines; metrics.jsonl has all
            if out is not None:
                with open(out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                weights = bundle.state_dict()
                if improved:
                    ckpt.save(out / "checkpoints" / "best", weights)
                opt_tensors, opt_struct = ckpt.optimizer_to_flat(optimizer)
                ckpt.save(out / "checkpoints" / "last", weights,
                          {**opt_tensors, "rng.torch": torch.get_rng_state()},
                          {"epoch": epoch, "best": best, "optimizer": opt_struct,
                           "epochs": cfg.epochs, "step_size": cfg.step_size})
        epoch += 1
    env.barrier()
    return {"history": history, "best_l2": best, "bundle": bundle}


def _physics_problem(info: dict | None, train: GridData):
    """The data set's problem at the training grid, for its physics residual loss."""
    from .. import problems

    data = (info or {}).get("data") or {}
    if "problem" not in data:
        raise OplabError("a physics loss needs the data set's problem (train from an oplab data file)")
    n = train.y.shape[-1]
    return problems.create(data["problem"], n, **data.get("params", {}))


def _epochs_in_budget(cfg: TrainConfig, per_epoch: float, elapsed: float, done: int, cap: int, env: _Dist) -> int:
    """Epochs in all: the ``done`` ones plus those of ``per_epoch`` seconds (training plus its
    share of evaluation) that fit in what is left of the budget; at least ``done``, at most ``cap``."""
    fit_in = done + int(max(cfg.budget_minutes * 60.0 - elapsed, 0.0) / max(per_epoch, 1e-9))
    epochs = max(done, 1, min(cap, fit_in))
    if env.world > 1:  # every rank must run the same number of epochs: take rank 0's
        t = torch.tensor([epochs], dtype=torch.int64, device=env.device)
        dist.broadcast(t, 0)
        epochs = int(t.item())
    return epochs


def _line(record: dict) -> str:
    text = f"epoch {record['epoch']:4d}  lr {record['lr']:.2e}  train {record['train_loss']:.4f}  {record['epoch_seconds']:.2f}s"
    for label, m in record.get("test", {}).items():
        text += f"  test@{label} l2 {m['l2']:.4f} h1 {m['h1']:.4f}"
    return text


def _read_metrics(out: Path, before_epoch: int) -> list[dict]:
    """Metrics of epochs already checkpointed; later lines (written just before a kill) are dropped."""
    path = out / "metrics.jsonl"
    lines = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("epoch", math.inf) < before_epoch:
                lines.append(rec)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return lines
