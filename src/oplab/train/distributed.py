"""The device and the process's place in a ``torchrun`` job.

Under ``torchrun`` (``WORLD_SIZE > 1``) each process takes its share
``batch[rank::world]`` of every global batch and DistributedDataParallel
averages the gradients, so a step equals the single-process step on the same
global batch (``batch_size`` is the global batch size). Only rank 0 writes.
"""

from __future__ import annotations

import os
import re

import torch
import torch.distributed as dist


def is_main() -> bool:
    """This process is rank 0 (or the only one): the one that writes."""
    return int(os.environ.get("RANK", "0")) == 0


_DEVICE = re.compile(r"(auto|cpu|mps|cuda)(:(\d+))?")


def check_device(name, key: str = "train.device") -> str:
    """``name`` if it is a device this torch can use (auto, cpu, cuda, cuda:N, mps), else a
    ParameterError naming ``key``, the value and what was expected."""
    from ..errors import ParameterError

    match = _DEVICE.fullmatch(name) if isinstance(name, str) else None
    if match is None or (match.group(2) and match.group(1) not in ("cuda",)):
        raise ParameterError(f"{key} must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    kind, index = match.group(1), match.group(3)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError(f"{key} = {name!r} but this torch has no CUDA device; use cpu or auto")
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            raise ParameterError(f"{key} = {name!r} but this machine has {count} CUDA device(s): "
                                 f"cuda:0 to cuda:{count - 1}")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ParameterError(f"{key} = {name!r} but this torch has no MPS device; use cpu or auto")
    return name


def resolve_device(name: str) -> torch.device:
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Dist:
    """Rank and world size (1 without torchrun); joins the process group on first use."""

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
        return is_main()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def from_main(self, value: int) -> int:
        """Rank 0's ``value`` on every rank (decisions taken from timings must agree)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(t, 0)
        return int(t.item())

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
