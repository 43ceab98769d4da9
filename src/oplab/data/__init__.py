"""The on-disk format (HDF5), the lazy torch Dataset, and resumable generation."""
