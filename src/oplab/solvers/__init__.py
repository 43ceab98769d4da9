"""Numerical machinery shared by the problems: random-field samplers,
finite-difference assembly, sparse linear solvers, spectral time steppers.
Pure numpy/scipy; torch only where it is the faster tool (batched FFTs)."""
