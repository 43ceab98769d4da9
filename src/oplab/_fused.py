"""When a hand-written backward may stand in for autograd's own.

Some small, hot compositions (a DeepONet's branch and trunk nets, the relative L2 loss) run as one
``torch.autograd.Function`` with a hand-written backward: the same arithmetic, without the per-node
overhead that dominates a small model's step on a CPU (benchmarks/RESULTS.md, issue 22). Those
backwards are first-order only and have no forward-mode or ``torch.func`` rules, so the fused path is
taken only under :func:`plain_autograd`; everything else takes the ordinary module path.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd import forward_ad
from torch.nn.modules import module as _torch_module  # the global module hooks


def plain_autograd(device_type: str) -> bool:
    """Autograd records, and no ``torch.func`` transform, forward-mode AD, autocast or
    ``torch.compile`` tracing (which fuses by itself) is active."""
    return (torch.is_grad_enabled() and not torch._C._are_functorch_transforms_active()
            and forward_ad._current_level < 0 and not torch.is_autocast_enabled(device_type)
            and not torch.compiler.is_compiling())


def hooked(module: nn.Module) -> bool:
    """Whether a forward or backward hook (``module``'s own or a global one) would see ``module``'s
    inputs or outputs: then a fused path, which computes its output by other means, steps aside."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or _torch_module._global_forward_hooks
                or _torch_module._global_forward_pre_hooks or _torch_module._global_backward_hooks
                or _torch_module._global_backward_pre_hooks)
