"""The on-disk format (HDF5), the lazy torch Dataset, and resumable generation.

``oplab.data.open(path, resolution=None)`` opens a data set lazily;
``oplab.data.generate(problem, n, out, ...)`` makes one; ``read_meta`` reads
its self-description. Torch is imported only when a Dataset is opened.
"""

from __future__ import annotations


def open(path, resolution=None):  # noqa: A001 - the natural name, as in oplab.data.open
    from .dataset import open_dataset

    return open_dataset(path, resolution)


def __getattr__(name):
    if name in ("generate",):
        from .generation import generate

        return generate
    if name in ("read_meta",):
        from .format import read_meta

        return read_meta
    if name in ("H5Dataset", "open_dataset"):
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'oplab.data' has no attribute {name!r}")
