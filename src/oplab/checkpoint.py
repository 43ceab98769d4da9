"""Checkpoints without pickle: safetensors for tensors, JSON for the rest.

A checkpoint folder holds

* ``weights.safetensors``: the model (``model.*``) and normalisers
  (``in_norm.*``, ``out_norm.*``); in a quantised checkpoint the weights are
  integers (int8, or bit-packed uint8 below 8 bits) with float scales, marked
  in the file's header and dequantised on load (:mod:`oplab.deploy.quantize`);
* ``state.safetensors`` + ``state.json`` (training checkpoints only): the
  optimizer's tensors and its JSON-able structure, the torch random state,
  the epoch and the best metric so far.

A folder is written under a temporary name and renamed into place, so a
``kill -9`` leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import DataFileError


def _contiguous(tensors: dict) -> dict:
    """Tensors safetensors can write: contiguous, on the CPU, each owning its storage (a view into a
    larger buffer, e.g. :class:`~oplab.train.optim.FlatAdam`'s parameters, is copied out)."""
    out = {}
    for k, v in tensors.items():
        v = v.detach().contiguous().cpu()
        out[k] = v.clone() if v.untyped_storage().nbytes() != v.numel() * v.element_size() else v
    return out


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split ``optimizer.state_dict()`` into tensors and a JSON structure."""
    sd = optimizer.state_dict()
    tensors, layout = {}, {}
    for pid, state in sd["state"].items():
        layout[str(pid)] = {}
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{key}"] = value
                layout[str(pid)][key] = "tensor"
            else:
                layout[str(pid)][key] = value
    groups = json.loads(json.dumps(sd["param_groups"], default=list))
    return tensors, {"state": layout, "param_groups": groups}


def optimizer_from_flat(tensors: dict, structure: dict) -> dict:
    state = {}
    for pid, entries in structure["state"].items():
        state[int(pid)] = {k: (tensors[f"opt.{pid}.{k}"] if v == "tensor" else v) for k, v in entries.items()}
    groups = []
    for g in structure["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def save(folder: Path, weights: dict, state_tensors: dict | None = None, state: dict | None = None,
         metadata: dict | None = None) -> None:
    """Write a checkpoint folder atomically (``folder.tmp`` then rename); ``metadata``: string pairs
    for the weights file's header (a quantised checkpoint's, :mod:`oplab.deploy.quantize`)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_contiguous(weights), str(tmp / "weights.safetensors"), metadata=metadata)
    if state is not None:
        save_file(_contiguous(state_tensors or {}), str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def locate(folder: Path) -> Path:
    """The checkpoint folder, or its previous version if a rename was interrupted."""
    folder = Path(folder)
    if folder.exists():
        return folder
    old = folder.with_name(folder.name + ".old")
    if old.exists():
        return old
    raise DataFileError(f"{folder}: no checkpoint there")


def load_weights(folder: Path) -> dict:
    """The float weights of a checkpoint; a quantised one (integer values, packed below 8 bits, and
    scales, marked in its header) is dequantised (:func:`oplab.deploy.quantize.dequantize_state`)."""
    path = locate(folder) / "weights.safetensors"
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = (fh.metadata() or {}).get("oplab.quantized")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataFileError(f"{path}: not a readable safetensors file ({exc})") from None
    if header is not None:
        from .deploy.quantize import dequantize_state

        return dequantize_state(tensors, header, path)
    return tensors


def load_state(folder: Path) -> tuple[dict, dict]:
    folder = locate(folder)
    try:
        tensors = load_file(str(folder / "state.safetensors"))
        state = json.loads((folder / "state.json").read_text())
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataFileError(f"{folder}: training state unreadable ({exc})") from None
    return tensors, state


def split_prefix(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


NET_CONFIG = "config.json"


def save_net(folder: str | Path, kind: str, config: dict, weights: dict) -> Path:
    """A standalone network (not a run folder: a learned proximal network, a hypernetwork, ...):
    ``folder/weights.safetensors`` (atomically, :func:`save`; the config also in its header) and
    ``folder/config.json`` = ``{"kind": kind, **config}`` (the constructor's arguments)."""
    folder = Path(folder)
    text = json.dumps({"kind": kind, **config}, indent=1)
    save(folder, dict(weights), metadata={f"oplab.{kind}": text})
    (folder / NET_CONFIG).write_text(text)
    return folder


def load_net(folder: str | Path, kind: str, build, what: str) -> torch.nn.Module:
    """The network :func:`save_net` wrote as ``kind``, built by ``build(config)`` (the config without
    ``kind``; it may raise DataFileError itself) and loaded strictly, in eval mode; a one-line
    DataFileError naming the folder and ``what`` it should hold for anything else."""
    from .errors import ParameterError

    folder = locate(Path(folder))
    try:
        config = json.loads((folder / NET_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise DataFileError(f"{folder}: no readable {NET_CONFIG} ({exc.__class__.__name__})") from None
    if not isinstance(config, dict) or config.pop("kind", None) != kind:
        raise DataFileError(f"{folder}: {NET_CONFIG} does not describe {what}")
    try:
        model = build(config)
    except (TypeError, ParameterError) as exc:
        raise DataFileError(f"{folder / NET_CONFIG}: does not build {what} ({str(exc).splitlines()[0]})") from None
    try:
        model.load_state_dict(load_weights(folder), strict=True)
    except RuntimeError as exc:
        raise DataFileError(f"{folder}: weights do not fit the config ({str(exc).splitlines()[0]})") from None
    return model.eval()
