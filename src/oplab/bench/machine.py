"""The machine a benchmark ran on, and how busy the rest of it was.

``Foreign`` measures, over a block, the CPU time (in cores) used by everything on the machine
except this process: system-wide busy time from ``/proc/stat`` minus this process's own CPU
time, divided by the wall time. On an otherwise idle 2-core machine it stays near 0; a value
near 1 means another program took about a whole core while the block ran, so its timings are
not clean.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _busy_seconds() -> float | None:
    try:
        with open("/proc/stat") as fh:
            fields = [float(v) for v in fh.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Foreign:
    """``with Foreign() as f: ...`` then ``f.cores``: other programs' mean CPU use (cores)."""

    cores: float | None = None

    def __enter__(self):
        self._busy, self._own, self._wall = _busy_seconds(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy = _busy_seconds()
        wall = time.perf_counter() - self._wall
        if busy is not None and self._busy is not None and wall > 0:
            own = time.process_time() - self._own
            self.cores = max(0.0, (busy - self._busy - own) / wall)
        return False


def describe(device: str = "cpu") -> dict:
    """What a benchmark record says about where it ran: CPU, cores, GPU, software versions."""
    import numpy
    import torch

    from .. import __version__

    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform(),
            "oplab": __version__, "torch": torch.__version__, "numpy": numpy.__version__, "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
