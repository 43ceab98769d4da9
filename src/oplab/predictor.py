"""A trained operator, ready to answer: ``op = oplab.load(RUN_DIR); u = op(a)``.

The run folder describes itself (``config.json``: model arguments, channels,
grid axes) and its weights are safetensors, so loading runs no pickle.
Grid operators answer at any resolution the architecture allows (the
coordinates are rebuilt from the stored axes for the input's size); point
operators answer on their training grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .errors import DataFileError, OplabError
from .problems.base import Axis


class Predictor:
    def __init__(self, run_dir: str | Path, checkpoint: str = "best", device: str = "cpu"):
        from . import models
        from .train import checkpoint as ckpt
        from .train.loop import RUN_FORMAT, RUN_VERSION, Bundle

        self.run_dir = Path(run_dir)
        path = self.run_dir / "config.json"
        if not path.exists():
            raise OplabError(f"{self.run_dir}: not a run folder (no config.json)")
        try:
            cfg = json.loads(path.read_text())
        except ValueError:
            raise DataFileError(f"{path}: not valid JSON") from None
        if cfg.get("format") != RUN_FORMAT or cfg.get("run_version") != RUN_VERSION:
            raise OplabError(f"{path}: run format {cfg.get('format')!r} v{cfg.get('run_version')}, "
                             f"this oplab reads {RUN_FORMAT!r} v{RUN_VERSION}")
        self.config = cfg
        self.data = cfg["data"]
        model = models.from_config(cfg["model"])
        in_shape, out_shape = self.data["train_input_shape"], self.data["train_output_shape"]
        self.bundle = Bundle(model, in_shape[0], out_shape[0])
        folder = self.run_dir / "checkpoints" / checkpoint
        try:
            ckpt.locate(folder)
        except DataFileError:  # no "best" yet (no evaluation before a stop): fall back to "last"
            folder = self.run_dir / "checkpoints" / "last"
        self.bundle.load_state_dict(ckpt.load_weights(folder))
        self.device = torch.device(device)
        self.bundle.to(self.device).eval()
        self.kind = type(model).kind
        self.out_axes = [Axis(**a) for a in self.data["output_axes"]]
        self.in_axes = [Axis(**a) for a in self.data["input_axes"]]

    def coords_for(self, in_spatial: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        if self.kind == "grid":
            sizes = in_spatial
        else:
            sizes = tuple(self.data["train_output_shape"][1:])
        return tuple(torch.tensor(Axis(a.name, n, a.lo, a.hi, a.periodic).coords(), dtype=torch.float32)
                     for a, n in zip(self.out_axes, sizes))

    def __call__(self, a):
        """``a``: ``[C_in, *S]`` or ``[B, C_in, *S]`` (numpy or torch); returns the same kind."""
        is_numpy = isinstance(a, np.ndarray)
        x = torch.as_tensor(a, dtype=torch.float32)
        c_in = self.data["train_input_shape"][0]
        d_in = len(self.in_axes)
        single = x.ndim == d_in + 1
        if single:
            x = x[None]
        if x.ndim != d_in + 2 or x.shape[1] != c_in:
            raise OplabError(f"input of shape {list(np.shape(a))} does not fit this operator: expected "
                             f"[{c_in}, {', '.join(a.name for a in self.in_axes)}] or a batch of those")
        if self.kind == "point" and list(x.shape[1:]) != self.data["train_input_shape"]:
            raise OplabError(f"input of shape {list(x.shape[1:])}: this point operator takes its training "
                             f"sensors {self.data['train_input_shape']}")
        with torch.no_grad():
            y = self.bundle(x.to(self.device), tuple(c.to(self.device) for c in self.coords_for(tuple(x.shape[2:]))))
        y = y.cpu()
        if self.data.get("n_times"):
            y = y.reshape(y.shape[0], self.data["n_times"], -1, *y.shape[2:])
        if single:
            y = y[0]
        return y.numpy() if is_numpy else y


def load(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> Predictor:
    """Load a trained operator from a run folder (``best`` checkpoint, else ``last``)."""
    return Predictor(run_dir, checkpoint, device)
