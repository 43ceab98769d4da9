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
    # Lu et al. 2021 (DeepONet), antiderivative: branch/trunk width 40, p = 40
    "deeponet-antiderivative": {"name": "deeponet", "branch_layers": [40, 40], "trunk_layers": [40, 40],
                                "latent": 40, "activation": "relu"},
}


def derive(kwargs: dict, x_shape, y_shape, out_coords, periodic) -> dict:
    """Complete ``{"name": ..., **args}`` for data with input ``[N, C_in, *S_in]``
    and (flattened) output ``[N, C_out, *S_out]``."""
    kwargs = dict(kwargs)
    name = kwargs.get("name", "")
    if name in PRESETS:
        kwargs = {**PRESETS[name], **{k: v for k, v in kwargs.items() if k != "name"}}
        name = kwargs["name"]
    from . import get

    cls = get(name)
    c_in, s_in = x_shape[1], tuple(x_shape[2:])
    c_out, s_out = y_shape[1], tuple(y_shape[2:])
    d = len(s_out)
    given = set(kwargs)
    if cls.kind == "grid":
        if s_in != s_out:
            raise ParameterError(
                f"model {name!r} maps a grid to the same grid, but the data maps inputs on {list(s_in)} "
                f"to outputs on {list(s_out)}; use a point operator (deeponet, multionet)")
        defaults = {"in_channels": c_in, "out_channels": c_out, **cls.defaults(s_out, tuple(periodic))}
    else:
        defaults = {"n_sensors": c_in * math.prod(s_in), "coord_dim": d, "out_channels": c_out,
                    "n_points": math.prod(s_out), **cls.defaults(s_out, tuple(periodic))}
    import inspect

    valid = set(inspect.signature(cls.__init__).parameters) - {"self"}
    out = {"name": name}
    out.update({k: v for k, v in defaults.items() if k in valid and k not in given})
    out.update({k: v for k, v in kwargs.items() if k != "name"})
    return out
