"""Sensible defaults per model and data, and named presets (as data).

``derive(name, kwargs, data)`` fills what the data decides (channels,
sensors, query dimension) and the model's defaults for a grid of this size;
arguments given by the user always win.
"""

from __future__ import annotations

import math

from ..errors import ParameterError

#: named presets: model name + arguments (the papers' settings)
PRESETS = {
    # Li et al. 2021 (FNO), sec. 5.2 Darcy: 4 Fourier layers, 12 modes, width 32
    "fno-darcy": {"name": "fno", "modes": [12, 12], "width": 32, "n_layers": 4},
    # Li et al. 2021 (FNO), sec. 5.1 Burgers: 16 modes, width 64
    "fno-burgers": {"name": "fno", "modes": [16], "width": 64, "n_layers": 4},
    # Li et al. 2021 (FNO), sec. 5.3 Navier-Stokes FNO-2D: 12 modes, width 20
    "fno-ns": {"name": "fno", "modes": [12, 12], "width": 20, "n_layers": 4},
    "tfno-darcy": {"name": "tfno", "modes": [12, 12], "width": 32, "n_layers": 4},
    # U-Net baseline (Ronneberger et al. 2015) as used against FNO: width 32, 4 down-samplings
    "unet-darcy": {"name": "unet", "width": 32, "depth": 4},
    # He, Liu, Xu 2024 (MgNO): the defaults of the authors' MgNO_DC model, 4 layers of 24 channels, V-cycles of up
    # to 6 levels (their Darcy script trains 5 layers: see the paper suite)
    "mgno-darcy": {"name": "mgno", "width": 24, "n_layers": 4},
    # Wu et al. 2023 (LSM), the released Darcy script: width 64, 4 tokens, 12 basis functions, 8 heads,
    # 6x6-cell patches at 96 cells (16 patches per axis); 19.2M parameters
    "lsm-darcy": {"name": "lsm", "width": 64, "depth": 4, "n_tokens": 4, "n_basis": 12, "n_heads": 8, "patches": 16},
    # Wu et al. 2024 (Transolver), the released Darcy script: 8 layers, width 128, 8 heads, 64 slices, mlp ratio 1,
    # unified position on an 8 x 8 reference grid
    "transolver-darcy": {"name": "transolver", "width": 128, "n_layers": 8, "n_heads": 8, "n_slices": 64,
                         "mlp_ratio": 1, "ref": 8},
    # LordNet (Huang et al. 2022): no published Darcy setting; width 64, rank 8, 4 blocks (about FNO's cost at 64)
    "lordnet-darcy": {"name": "lordnet", "width": 64, "rank": 8, "n_layers": 4, "projection_channels": 64},
    # Kossaifi et al. 2024 (MG-TFNO): 2 x 2 patches with one coarse level, 1/8 patch of context, joint Tucker
    # rank 0.1 (the paper's setting is for Navier-Stokes at 1024; this is the Darcy-64 one of the cpu suite)
    "mgtfno-darcy": {"name": "mgtfno", "patches": 2, "levels": 1, "padding": 0.125, "domain_padding": 0.125,
                     "rank": 0.1},
    # Lu et al. 2021 (DeepONet), antiderivative: branch/trunk width 40, p = 40
    "deeponet-antiderivative": {"name": "deeponet", "branch_layers": [40, 40], "trunk_layers": [40, 40],
                                "latent": 40, "activation": "relu"},
    # MultiONet (arXiv:2502.06250) at DeepONet's antiderivative size (tanh: ReLU
    # makes every layer-wise inner product non-negative)
    "multionet-antiderivative": {"name": "multionet", "width": 40, "depth": 2, "activation": "tanh"},
}


def derive(kwargs: dict, x_shape, y_shape, out_coords, periodic) -> dict:
    """Complete ``{"name": ..., **args}`` for data with input ``[N, C_in, *S_in]``
    and (flattened) output ``[N, C_out, *S_out]``."""
    kwargs = dict(kwargs)
    name = kwargs.get("name", "")
    preset = None
    if name in PRESETS:
        preset = name
        kwargs = {**PRESETS[name], **{k: v for k, v in kwargs.items() if k != "name"}}
        name = kwargs["name"]
    from . import get

    cls = get(name)
    c_in, s_in = x_shape[1], tuple(x_shape[2:])
    c_out, s_out = y_shape[1], tuple(y_shape[2:])
    d = len(s_out)
    given = {k: v for k, v in kwargs.items() if k != "name"}
    _check_dimension(f"model {name!r}" + (f" (preset {preset!r})" if preset else ""), given, s_out)
    if cls.kind == "grid":
        if s_in != s_out:
            raise ParameterError(
                f"model {name!r} maps a grid to the same grid, but the data maps inputs on {list(s_in)} "
                f"to outputs on {list(s_out)}; use a point operator (deeponet, multionet, ffn)")
        defaults = {"in_channels": c_in, "out_channels": c_out, **cls.defaults(s_out, tuple(periodic), given)}
        if out_coords is not None and len(out_coords) == d and min(s_out) > 1:  # (the FNO family's ``period``)
            from .fno import grid_period

            defaults["period"] = grid_period(out_coords)
    else:
        defaults = {"n_sensors": c_in * math.prod(s_in), "in_channels": c_in, "coord_dim": d, "out_channels": c_out,
                    "n_points": math.prod(s_out), **cls.defaults(s_out, tuple(periodic), given)}
    import inspect

    valid = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return {"name": name, **{k: v for k, v in defaults.items() if k in valid and k not in given}, **given}


#: arguments that fix a model's number of spatial axes: a count, or one entry per axis
_DIMENSION_COUNTS = ("dim", "coord_dim")
_DIMENSION_LISTS = ("modes", "grid", "periodic")


def _check_dimension(label: str, given: dict, sizes: tuple) -> None:
    """A ParameterError unless the arguments the user (or a preset) gave that fix the model's
    number of spatial axes agree with the data's ``len(sizes)``."""
    d = len(sizes)
    axes = f"{d} spatial axis" if d == 1 else f"{d} spatial axes"
    for key in _DIMENSION_COUNTS:
        value = given.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value != d:
            raise ParameterError(f"{label}: {key}={value} makes a {value}D model, but the data has "
                                 f"{axes} {list(sizes)}; set model.{key}={d} or leave it out")
    for key in _DIMENSION_LISTS:
        value = given.get(key)
        if isinstance(value, (list, tuple)) and len(value) != d:
            example = f" (e.g. model.modes={[min(12, n // 2) for n in sizes]})" if key == "modes" else ""
            raise ParameterError(f"{label}: {key}={list(value)} makes a {len(value)}D model, but the data "
                                 f"has {axes} {list(sizes)}; give {d} value(s){example} or leave it out")
