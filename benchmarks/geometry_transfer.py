"""One operator for several geometries, and transfer to an unseen one (issue 17, item 4).

    OMP_NUM_THREADS=1 python benchmarks/geometry_transfer.py [--work DIR] [--batch 10] [--quick]

The multi-task DeepONet of Kumar, Goswami et al. (2024, "Synergistic learning with multi-task
DeepONet for efficient PDE problem solving", arXiv:2408.02198; code varunsingh88/MT-DeepONet)
trains one DeepONet on Darcy flow over a square, a disk and a triangle, the geometry given as a
mask channel beside the conductivity and the loss taken inside the domain only, and fine-tunes it
on a new geometry (a square with a cross cut out) with few samples. The same protocol with oplab's
``darcy_domain`` (:mod:`oplab.problems.domains`) at 32 x 32 and ``train.loss_mask: mask``:

(a) **multi-geometry vs one model per geometry.** Five training geometries (square, disk, L-shape,
    triangle, square with a hole), ``PER_TRAIN`` training and ``PER_VAL`` validation samples each
    (one file, the geometries in turn). One model is trained on all of them for ``E`` epochs; one
    model per geometry is trained on that geometry's samples (the same samples) for ``E`` epochs,
    so the five together take the multi-geometry model's optimizer steps and sample passes (batch
    ``--batch``: with 20 the single-geometry FNOs get 60 steps each, with 10, 120).
    Reported: the relative L2 error over the domain on ``PER_TEST`` held-out test samples of each
    geometry (a separate file), for an FNO and a DeepONet. The parents are chosen on their
    validation samples (the ``best`` evaluation, every ``EVAL_EVERY`` epochs); nothing on test.
(b) **transfer to the annulus** (never seen in (a)) with K = 10, 20, 50 samples: fine-tune the
    multi-geometry model (all weights, its normalisers kept; warm-started through the Python API:
    a callback loads the parent's weights at the start of the run) against the same architecture
    from scratch on the same K samples, for the same ``TRANSFER_STEPS`` optimizer steps at the same
    learning rate; the checkpoint of each run chosen on 10 further annulus validation samples.
    Reported: the relative L2 error on ``PER_TEST`` annulus test samples, and the parent's zero-shot
    error (K = 0).

The FNO parent is written as an ordinary run folder (``oplab.load``/``oplab evaluate`` work on it,
its ``config.json`` records ``loss_mask``); the other runs train in memory (no figures). Writes the
tables to stdout and ``benchmarks/geometry_transfer.json``. Timings on a shared machine are
indicative only.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
RES = 32
TRAIN_GEOMETRIES = ("square", "disk", "lshape", "triangle", "hole")
NEW = "annulus"
PER_TRAIN, PER_VAL, PER_TEST = 40, 8, 20
KS = (10, 20, 50)
NEW_VAL = 10
EVAL_EVERY = 5
#: family -> (model arguments, epochs of (a), learning rate, optimizer steps of each transfer run)
FAMILIES = {
    "fno": ({"name": "fno", "modes": [8, 8], "width": 16, "lifting_channels": 64, "projection_channels": 64},
            30, 1e-3, 150),
    "deeponet": ({"name": "deeponet", "branch_layers": [128, 128], "trunk_layers": [128, 128], "latent": 128},
                 100, 1e-3, 150),
}


def make_data(work: Path) -> dict:
    """The three files: training geometries in turn (train + val), the test file (all six geometries
    in turn), and the annulus transfer file (``max(KS)`` training + ``NEW_VAL`` validation)."""
    from oplab import problems
    from oplab.data.generation import generate

    g = len(TRAIN_GEOMETRIES)
    files = {
        "multi": (",".join(TRAIN_GEOMETRIES), g * (PER_TRAIN + PER_VAL), 0),
        "test": (",".join((*TRAIN_GEOMETRIES, NEW)), (g + 1) * PER_TEST, 1),
        "new": (NEW, max(KS) + NEW_VAL, 2),
    }
    out = {}
    for key, (geometry, n, seed) in files.items():
        out[key] = generate(problems.create("darcy_domain", RES, geometry=geometry), n, work / f"{key}.h5", seed=seed,
                            resume=True)
    return out


def _callbacks():
    from oplab.train import Callback

    class Best(Callback):
        def __init__(self):
            self.state = None

        def on_epoch_end(self, trainer, record):
            if record.get("best"):
                self.state = copy.deepcopy(trainer.bundle.state_dict())

    class WarmStart(Callback):
        """Loads a parent's bundle (weights and normalisers) before the first step."""

        order = 1

        def __init__(self, state):
            self.parent = state

        def on_fit_start(self, trainer):
            trainer.bundle.load_state_dict(self.parent)

    return Best, WarmStart


def train_in_memory(model_cfg: dict, train, val, cfg, parent_state=None):
    """``fit`` without a run folder; returns (the bundle at its best validation error, seconds)."""
    from oplab import models
    from oplab.train.trainer import fit

    Best, WarmStart = _callbacks()
    torch.manual_seed(cfg.seed)
    model = models.from_config(model_cfg)
    best = Best()
    callbacks = [best] + ([WarmStart(parent_state)] if parent_state is not None else [])
    tic = time.perf_counter()
    result = fit(model, train, {}, cfg, info={"data": {"input_channels": ["a", "mask"]}}, val=val, log=lambda s: None,
                 callbacks=callbacks)
    seconds = time.perf_counter() - tic
    bundle = result["bundle"]
    if best.state is not None:
        bundle.load_state_dict(best.state)
    return bundle, seconds


def errors_by_geometry(bundle, test_file) -> dict:
    """Relative L2 over the domain (mask) on each geometry's test samples."""
    from oplab.eval import evaluate
    from oplab.train.data import Part

    names = (*TRAIN_GEOMETRIES, NEW)
    out = {}
    for k, name in enumerate(names):
        data = Part(str(test_file), list(range(k, len(names) * PER_TEST, len(names))), None).load()
        out[name] = evaluate(bundle, data, mask=1)["l2"]
    return out


def model_config(family: str, data) -> dict:
    from oplab.models.presets import derive

    return derive(dict(FAMILIES[family][0]), (len(data), *data.x_shape), (len(data), *data.y_shape), data.out_coords,
                  data.periodic)


def part_a(family: str, files: dict, work: Path, log, batch: int = 10) -> tuple[dict, dict, dict]:
    """The multi-geometry model (a run folder for the FNO) and one model per geometry."""
    import oplab
    from oplab.train.config import TrainConfig
    from oplab.train.data import Part

    _, epochs, lr, _ = FAMILIES[family]
    g = len(TRAIN_GEOMETRIES)
    n_train = g * PER_TRAIN
    base = dict(epochs=epochs, batch_size=batch, lr=lr, loss_mask="mask", eval_every=EVAL_EVERY, seed=0, threads=1,
                plot_samples=0)
    train_all = Part(str(files["multi"]), list(range(n_train)), None).load()
    val_all = Part(str(files["multi"]), list(range(n_train, n_train + g * PER_VAL)), None).load()
    model_cfg = model_config(family, train_all)

    tic = time.perf_counter()
    if family == "fno":  # the parent as an ordinary run folder
        run_dir = work / f"{family}_multi_b{batch}"
        if not (run_dir / "config.json").exists():
            torch.manual_seed(0)
            oplab.train(oplab.models.from_config(model_cfg), oplab.data.open(files["multi"]), test=files["test"],
                        out=run_dir, n_train=n_train + g * PER_VAL, n_val=g * PER_VAL, in_memory=True,
                        log=lambda s: None, **base)
        multi = oplab.load(run_dir, "best").bundle
    else:
        multi, _ = train_in_memory(model_cfg, train_all, val_all, TrainConfig(**base))
    seconds = {"multi": time.perf_counter() - tic}
    multi_err = errors_by_geometry(multi, files["test"])
    log(f"{family}: multi-geometry model trained in {seconds['multi']:.0f} s")

    single_err, tic = {}, time.perf_counter()
    for k, name in enumerate(TRAIN_GEOMETRIES):
        train = Part(str(files["multi"]), list(range(k, n_train, g)), None).load()
        val = Part(str(files["multi"]), list(range(n_train + k, n_train + g * PER_VAL, g)), None).load()
        bundle, _ = train_in_memory(model_cfg, train, val, TrainConfig(**base))
        single_err[name] = errors_by_geometry(bundle, files["test"])[name]
    seconds["single"] = time.perf_counter() - tic
    log(f"{family}: five single-geometry models trained in {seconds['single']:.0f} s")
    return {"multi": multi_err, "single": single_err, "seconds": seconds, "model": model_cfg}, multi, model_cfg


def part_b(family: str, files: dict, parent, model_cfg: dict, log) -> dict:
    """Fine-tune ``parent`` vs scratch on K annulus samples, the same steps."""
    from oplab.train.config import TrainConfig
    from oplab.train.data import Part

    _, _, lr, steps = FAMILIES[family]
    val = Part(str(files["new"]), list(range(max(KS), max(KS) + NEW_VAL)), None).load()
    rows = {"zero_shot": errors_by_geometry(parent, files["test"])[NEW]}
    parent_state = copy.deepcopy(parent.state_dict())
    for k in KS:
        train = Part(str(files["new"]), list(range(k)), None).load()
        batch = 10
        epochs = steps * batch // k  # k / batch steps per epoch
        cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, loss_mask="mask",
                          eval_every=max(1, epochs // 10), seed=0, threads=1)
        row = {"steps": epochs * (k // batch)}
        for method, state in (("finetune", parent_state), ("scratch", None)):
            bundle, sec = train_in_memory(model_cfg, train, val, cfg, state)
            row[method] = errors_by_geometry(bundle, files["test"])[NEW]
            row[f"{method}_seconds"] = sec
        rows[k] = row
        log(f"{family}: K={k}: fine-tune {row['finetune']:.4f}, scratch {row['scratch']:.4f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/oplab_geometry_transfer"))
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--out", type=Path, default=ROOT / "geometry_transfer.json")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 epochs, 10 transfer steps")
    parser.add_argument("--batch", type=int, default=10, help="batch size of (a) (the transfer runs use 10)")
    args = parser.parse_args()
    if args.quick:
        for f, (m, _, lr, _) in FAMILIES.items():
            FAMILIES[f] = (m, 2, lr, 10)
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, flush=True)  # noqa: E731
    tic = time.perf_counter()
    files = make_data(args.work)
    gen_seconds = time.perf_counter() - tic
    log(f"data generated in {gen_seconds:.0f} s")
    results = {}
    for family in args.families:
        a, parent, model_cfg = part_a(family, files, args.work, log, args.batch)
        b = part_b(family, files, parent, model_cfg, log)
        results[family] = {"a": a, "b": b}

    print(f"\n(a) relative L2 over the domain on {PER_TEST} test samples per geometry "
          f"({PER_TRAIN} training samples per geometry, batch {args.batch}, equal total steps)")
    head = "| model | " + " | ".join(TRAIN_GEOMETRIES) + " | mean | annulus (unseen) |"
    print(head)
    print("|" + "---|" * (len(TRAIN_GEOMETRIES) + 3))
    for family, r in results.items():
        for kind in ("multi", "single"):
            errs = r["a"][kind]
            mean = sum(errs[g] for g in TRAIN_GEOMETRIES) / len(TRAIN_GEOMETRIES)
            unseen = f"{errs[NEW]:.4f}" if NEW in errs else "-"
            label = "one model, all geometries" if kind == "multi" else "one model per geometry"
            print(f"| {family}: {label} | " + " | ".join(f"{errs[g]:.4f}" for g in TRAIN_GEOMETRIES)
                  + f" | {mean:.4f} | {unseen} |")
    print(f"\n(b) transfer to the annulus: relative L2 on {PER_TEST} annulus test samples")
    print("| model | K | steps | fine-tuned multi-geometry | from scratch | ratio scratch/fine-tuned |")
    print("|---|---|---|---|---|---|")
    for family, r in results.items():
        b = r["b"]
        print(f"| {family} | 0 (zero-shot) | 0 | {b['zero_shot']:.4f} | - | - |")
        for k in KS:
            row = b[k]
            print(f"| {family} | {k} | {row['steps']} | {row['finetune']:.4f} | {row['scratch']:.4f} | "
                  f"{row['scratch'] / row['finetune']:.2f} |")
    total = time.perf_counter() - tic
    print(f"\ntotal {total:.0f} s (generation {gen_seconds:.0f} s)")
    report = {
        "date": datetime.date.today().isoformat(), "machine": platform.machine(), "python": platform.python_version(),
        "torch": torch.__version__, "threads": 1, "resolution": RES, "train_geometries": list(TRAIN_GEOMETRIES),
        "new_geometry": NEW, "batch_a": args.batch, "per_train": PER_TRAIN, "per_val": PER_VAL, "per_test": PER_TEST,
        "ks": list(KS),
        "families": {f: {"model": FAMILIES[f][0], "epochs": FAMILIES[f][1], "lr": FAMILIES[f][2],
                         "transfer_steps": FAMILIES[f][3]} for f in args.families},
        "results": {f: {"a": {k: v for k, v in r["a"].items() if k != "model"},
                        "b": {str(k): v for k, v in r["b"].items()}} for f, r in results.items()},
        "seconds": {"total": total, "generation": gen_seconds},
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
