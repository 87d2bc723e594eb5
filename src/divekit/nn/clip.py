"""Gradient clipping by global norm from scratch, equal to ``torch.nn.utils.clip_grad_norm_``.

All gradients ``g_1 .. g_k`` (any shapes) are treated as one long vector ``g``:

    ||g||_p = (sum_i sum_j |g_ij|^p)^(1/p)          ||g||_inf = max_ij |g_ij|
    g_i <- g_i * min(1, max_norm / (||g||_p + 1e-6))

so the direction of the update is kept and only its length is capped at (about) ``max_norm``.
The ``1e-6`` keeps the ratio finite for an all-zero gradient; it is the same constant PyTorch uses,
which makes the two functions agree to rounding. One deliberate difference: the norm is computed
with the largest entry factored out, so float32 gradients near ``1e20`` and beyond (whose squares
overflow) still get a finite norm and are clipped, where the built-in reports an infinite norm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from divekit.errors import DivekitError, NonFiniteLossError

Params = torch.Tensor | Iterable[torch.Tensor]

EPS = 1e-6  # added to the norm before dividing


def _grads(parameters: Params) -> list[torch.Tensor]:
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def global_grad_norm(parameters: Params, norm_type: float = 2.0) -> torch.Tensor:
    """The ``norm_type``-norm of all gradients of ``parameters`` taken together (a 0-dim tensor).

    Parameters without a gradient are skipped; with none at all the norm is 0.
    """
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise DivekitError(f"norm_type must be positive (or inf), got {norm_type}")
    grads = _grads(parameters)
    if not grads:
        return torch.tensor(0.0)
    flat = torch.cat([g.detach().reshape(-1) for g in grads])  # one vector: the norm is "global"
    largest = flat.abs().max()
    if math.isinf(norm_type) or largest == 0 or not torch.isfinite(largest):
        return largest
    # Factor out the largest entry so that |g|^p can neither overflow nor underflow.
    return largest * (flat.abs() / largest).pow(norm_type).sum().pow(1.0 / norm_type)


@torch.no_grad()
def clip_grad_norm(parameters: Params, max_norm: float, norm_type: float = 2.0, *,
                   error_if_nonfinite: bool = False) -> torch.Tensor:
    """Rescale the gradients in place so their global norm is at most ``max_norm``.

    Returns the global norm *before* clipping, as ``clip_grad_norm_`` does, so a training loop can
    log how large the gradients were.
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    parameters = list(parameters)
    total = global_grad_norm(parameters, norm_type)
    if error_if_nonfinite and not torch.isfinite(total):
        raise NonFiniteLossError(
            f"the global gradient norm is {total.item()}; clipping cannot rescale it (lower the learning rate)"
        )
    scale = torch.clamp(max_norm / (total + EPS), max=1.0)  # never scales up
    for g in _grads(parameters):
        g.mul_(scale.to(g.device, g.dtype))
    return total
