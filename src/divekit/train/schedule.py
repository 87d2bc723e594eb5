"""Learning-rate schedules as pure functions of the global step.

A schedule that depends only on the step number needs no state of its own in a checkpoint, so a
resumed run follows exactly the curve an uninterrupted one would.
"""

from __future__ import annotations

import math


def lr_at(step: int, total_steps: int, base_lr: float, schedule: str, warmup_steps: int = 0) -> float:
    """The learning rate for optimisation step ``step`` (0-based) of ``total_steps``.

    - ``constant``: ``base_lr``.
    - ``cosine``: ``base_lr * (1 + cos(pi * t)) / 2`` with ``t`` the fraction of post-warm-up steps done.
    - ``onecycle``: linear rise from ``base_lr/25`` to ``base_lr`` over the first 30% (or the warm-up),
      then cosine annealing to ``base_lr/1e4`` (Smith & Topin's one-cycle policy).
    - ``step``: ``base_lr`` divided by 10 at 50% and again at 75% of training.
    Linear warm-up from 0 over ``warmup_steps`` applies to every schedule but ``onecycle``.
    """
    total_steps = max(total_steps, 1)
    if schedule == "onecycle":
        rise = warmup_steps or max(1, int(0.3 * total_steps))
        if step < rise:
            return base_lr / 25 + (base_lr - base_lr / 25) * step / rise
        t = min(1.0, (step - rise) / max(1, total_steps - rise))
        low = base_lr / 1e4
        return low + (base_lr - low) * (1 + math.cos(math.pi * t)) / 2
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return base_lr * (1 + math.cos(math.pi * t)) / 2
    if schedule == "step":
        return base_lr * (0.1 ** (int(t >= 0.5) + int(t >= 0.75)))
    raise ValueError(f"unknown schedule '{schedule}'")
