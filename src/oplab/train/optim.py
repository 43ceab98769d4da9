"""Adam over one flat buffer: torch's fused Adam kernel, called once per step for all parameters.

``torch.optim.Adam(fused=True)`` runs one kernel over all parameters, but its Python around the
kernel (grouping the tensors, building the lists, the step counters) costs 40-100 us a step, which is
a tenth of a small DeepONet's step on a CPU (benchmarks/RESULTS.md, issue 22). :class:`FlatAdam`
keeps the parameters and Adam's two moments each in one contiguous buffer (the parameters become views
into it) and the gradients in a fourth, so a step is one call of the same fused kernel on four tensors.
The kernel works element by element, so the weights are those of ``torch.optim.Adam(fused=True)`` to the
last bit or two (an element can fall in the kernel's vector body in one layout and its scalar tail in the
other; tests/test_direct_step.py); its
``state_dict`` has torch's layout, so checkpoints move between the two. The Trainer takes it for models
of at most :data:`SMALL` parameters (one process); larger ones, and complex weights, keep torch's Adam.

The gradients can skip the copy: :meth:`FlatAdam.grad_views` are views of the fourth buffer shaped as the
parameters, and a step whose gradients are those very tensors (what the Trainer's direct step writes,
:meth:`oplab.train.tasks.MapTask.direct_stepper`) reads them in place. The step calls the kernel itself
(``torch._fused_adam_``, after the functional Adam's ``step += 1``), and runs torch's optimizer hooks and
profiler label only when one is in use: in a small DeepONet's loop torch's wrapper and functional Adam
took 110 us of a 230 us step and the copy 70 us more (benchmarks/RESULTS.md, issue 22).

torch's Adam skips a parameter without a gradient (``grad`` None); a step where any parameter has none
falls back to torch's own step, with its semantics, for the rest of the run (as does a checkpoint whose
step counts differ between parameters).
"""

from __future__ import annotations

import inspect

import torch
from torch.optim import optimizer as _torch_optimizer
from torch.optim.adam import adam

ALIGN = 16  # elements
#: the fused kernels the functional Adam calls (private torch functions, present since torch 2.0; without
#: them the step goes through the functional Adam)
_KERNELS = (getattr(torch, "_fused_adam_", None), getattr(torch, "_fused_adamw_", None))
#: whether torch's profiler is recording (private too; where missing, every step takes torch's wrapper)
_profiling = getattr(torch._C._autograd, "_profiler_enabled", lambda: True)
#: the functional fused Adam takes ``decoupled_weight_decay`` (AdamW) from torch 2.7 on
_FUSED_ADAMW = "decoupled_weight_decay" in inspect.signature(adam).parameters


def _torch_step(optimizer) -> None:
    step = torch.optim.Adam.step
    (step.__wrapped__ if getattr(step, "hooked", False) else step)(optimizer)


#: the most parameters :func:`flat_eligible` takes: above it the copy of the gradients into the buffer
#: costs more than the Python it saves (40-100 us a step)
SMALL = 100_000


def flat_eligible(params, most: int = SMALL) -> bool:
    """Real floating parameters of one dtype on one CPU or CUDA device (what one buffer can hold),
    ``most`` numbers in all at most."""
    params = list(params)
    if not _FUSED_ADAMW or not params or sum(p.numel() for p in params) > most:
        return False
    p0 = params[0]
    return (p0.device.type in ("cpu", "cuda") and p0.is_floating_point()
            and all(p.dtype == p0.dtype and p.device == p0.device and p.layout == torch.strided for p in params))


class FlatAdam(torch.optim.Adam):
    """Adam (``decoupled=True``: AdamW) with flat parameter and moment buffers (see the module's
    text). One parameter group. The gradients stay per-parameter tensors (torch's semantics:
    ``zero_grad`` drops them, autograd makes them); a step copies them into one buffer unless they are
    already its slots (:meth:`grad_views`). Call
    :meth:`release` when training ends: it gives every parameter its own storage back (safetensors
    refuses to write tensors that share one)."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, decoupled: bool = False):
        params = list(params)
        if not flat_eligible(params, most=sum(p.numel() for p in params)):
            raise ValueError("FlatAdam: the parameters must be real floating tensors of one dtype on one device")
        super().__init__(params, lr=lr, weight_decay=weight_decay, fused=True, decoupled_weight_decay=decoupled)
        self._decoupled = decoupled
        self._params, p0 = params, params[0]
        # each parameter starts at a multiple of ALIGN elements (64 bytes in float32): a real tensor
        # viewed as complex needs an even offset, and vector loads like aligned rows; the gaps hold
        # zeros, whose gradient is zero, so they stay zero
        starts = [0]
        for p in params:
            starts.append(-(-(starts[-1] + p.numel()) // ALIGN) * ALIGN)
        self._data = torch.zeros(starts[-1], dtype=p0.dtype, device=p0.device)
        self._grad = torch.zeros_like(self._data)
        self._m, self._v = torch.zeros_like(self._data), torch.zeros_like(self._data)
        self._step = torch.zeros((), dtype=torch.float32, device=p0.device)  # the fused kernel's counter
        self._moments = []
        #: the zeros after each parameter (the gradient buffer is the gradients and these, concatenated)
        self._gaps = [self._data.new_zeros(b - a - p.numel()) for p, a, b in zip(params, starts, starts[1:])]
        self._grad_views = []
        with torch.no_grad():
            for p, start in zip(params, starts):
                part = slice(start, start + p.numel())
                self._data[part].copy_(p.reshape(-1))
                p.data = self._data[part].view_as(p)
                self._moments.append((self._m[part].view_as(p), self._v[part].view_as(p)))
                self._grad_views.append(self._grad[part].view_as(p))
        self._flat = True  # False after a fallback or release: torch's own step from then on

    def grad_views(self) -> dict | None:
        """``{parameter: its slot in the gradient buffer}``: a gradient written there and set as the
        parameter's ``grad`` is read in place by the next step (no copy); None once the buffers are
        given up (:meth:`release`, a fallback). A slot is overwritten by the next such write: like
        torch's ``zero_grad(set_to_none=False)``, ``p.grad`` is then the same tensor every step, so a
        gradient kept past its step must be cloned."""
        return dict(zip(self._params, self._grad_views)) if self._flat else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not (self._flat and set_to_none):
            return super().zero_grad(set_to_none)
        for p in self._params:
            p.grad = None

    def step(self, closure=None):
        """torch's optimizer step: with its step hooks and profiler label when one is in use (torch's
        own wrapper, which ``Optimizer.__init__`` would put around every call), else without them."""
        if (self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks or _torch_optimizer._global_optimizer_pre_hooks
                or _torch_optimizer._global_optimizer_post_hooks or _profiling()):
            return self._hooked_step() if closure is None else self._hooked_step(closure)  # (the hooks' args)
        return self._plain_step(closure)

    step.hooked = True  # (what tells Optimizer.__init__ that the class's step is wrapped already)

    @torch.no_grad()
    def _plain_step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for p in self._params] if self._flat else None
        if grads is not None and all(g is not None for g in grads):
            written = [g is v for g, v in zip(grads, self._grad_views)]
            if not any(written):
                torch.cat([t for g, gap in zip(grads, self._gaps) for t in (g.reshape(-1), gap)], out=self._grad)
            elif not all(written):  # some replaced (a step hook's doing): those copied into their slots
                for g, v, done in zip(grads, self._grad_views, written):
                    if not done:
                        v.copy_(g)
            self._flat_step()
            return loss
        if self._flat:  # a parameter without a gradient: torch's step skips it
            self._unflatten(keep_storage=True)
        _torch_step(self)  # (this step's hooks have run: torch's step without its hook wrapper)
        return loss

    _hooked_step = torch.optim.Optimizer.profile_hook_step(_plain_step)

    def _flat_step(self) -> None:
        if not self.state:  # torch's state, as views of the buffers (its layout for state_dict)
            self._point_state()
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        lr, decoupled = group["lr"], group["decoupled_weight_decay"]
        kernel = _KERNELS[bool(decoupled)]
        if kernel is None or group["amsgrad"] or torch.is_tensor(lr) or torch.is_tensor(beta1) or torch.is_tensor(beta2):
            adam([self._data], [self._grad], [self._m], [self._v], [], [self._step], fused=True,
                 amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2, lr=lr, weight_decay=group["weight_decay"],
                 eps=group["eps"], maximize=group["maximize"], decoupled_weight_decay=decoupled,
                 grad_scale=None, found_inf=None)
            return
        # what the functional fused Adam does for one tensor of each kind, without its grouping
        self._step.add_(1)
        kernel(
            [self._data], [self._grad], [self._m], [self._v], [], [self._step], amsgrad=False, lr=lr, beta1=beta1,
            beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
            grad_scale=None, found_inf=None)

    def _point_state(self) -> None:
        for p, (m, v) in zip(self._params, self._moments):
            self.state[p] = {"step": self._step, "exp_avg": m, "exp_avg_sq": v}

    def state_dict(self):
        sd = super().state_dict()  # (its per-parameter dicts are the live ones: new dicts, not edits)
        sd["state"] = {k: {**v, "step": v["step"].clone()} for k, v in sd["state"].items()}  # a counter each
        return sd

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self.param_groups[0]["decoupled_weight_decay"] = self._decoupled  # (older torch's AdamW had no key)
        if not self._flat:
            return
        if not self.state:  # a checkpoint from before the first step
            for t in (self._m, self._v, self._step):
                t.zero_()
            return
        steps = {float(self.state[p]["step"]) for p in self._params if p in self.state}
        if len(steps) != 1 or any(p not in self.state for p in self._params) or self.param_groups[0]["amsgrad"]:
            self._unflatten(keep_storage=True)  # steps counted per parameter: torch's step from now on
            return
        with torch.no_grad():
            for p, (m, v) in zip(self._params, self._moments):
                m.copy_(self.state[p]["exp_avg"])
                v.copy_(self.state[p]["exp_avg_sq"])
            self._step.fill_(steps.pop())
        self._point_state()

    def _unflatten(self, keep_storage: bool) -> None:
        """Give up the flat step: a step counter per parameter (and, unless ``keep_storage``, every
        parameter and moment its own storage)."""
        self._flat = False
        for p in self._params:
            if p in self.state:
                self.state[p] = {k: v.clone() if torch.is_tensor(v) and (k == "step" or not keep_storage) else v
                                 for k, v in self.state[p].items()}
            if not keep_storage:
                with torch.no_grad():
                    p.data = p.data.clone()

    def release(self) -> None:
        """Every parameter and moment its own storage again; torch's step from now on."""
        self._unflatten(keep_storage=False)
