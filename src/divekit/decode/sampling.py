"""Sampling text from a left-to-right language model: temperature and top-k.

For next-token logits ``z (B, V)``, temperature ``tau > 0`` and ``k``::

    p_i = softmax(z / tau)_i restricted to the k largest z_i (others get probability 0)

``tau -> 0`` concentrates all mass on the largest logit, so ``temperature=0`` is defined as greedy
(argmax) decoding, which is deterministic. ``tau = 1`` with no top-k is the model's own distribution.

The model contract is that of :class:`divekit.models.char_lm.CharLM`:
``model(tokens (B, T), state) -> (logits (B, T, V), state)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from divekit.errors import DivekitError, ShapeError


def next_token(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
    """Draw one token per row of ``logits (B, V)``; returns ``(B,)`` indices."""
    if logits.dim() != 2:
        raise ShapeError(f"logits must have shape (B, V), got {tuple(logits.shape)}")
    if temperature < 0:
        raise ValueError(f"temperature must be non-negative, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if temperature == 0:
        return logits.argmax(-1)
    scaled = logits.double() / temperature  # double: tiny temperatures must not overflow to inf
    if top_k is not None and top_k < logits.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]  # (B, 1) the k-th largest logit
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1).cpu()  # the generator lives on the CPU
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(logits.device)


def generate(model: nn.Module, prefix: list[int], length: int, *, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None,
             never: Sequence[int] = ()) -> list[int]:
    """Continue ``prefix`` (token ids, at least one) by ``length`` tokens; returns the new tokens only."""
    return list(stream(model, prefix, length, temperature=temperature, top_k=top_k, generator=generator,
                       never=never))


@torch.no_grad()
def stream(model: nn.Module, prefix: list[int], length: int, *, temperature: float = 1.0,
           top_k: int | None = None, generator: torch.Generator | None = None,
           never: Sequence[int] = ()) -> Iterator[int]:
    """:func:`generate`, one token at a time as it is drawn (for printing while sampling).

    ``never``: token ids that are never drawn (e.g. ``<unk>``, which stands for no character).
    """
    if not prefix:
        raise DivekitError("the prefix is empty; give at least one character")
    if length < 0:
        raise DivekitError(f"length must be non-negative, got {length}")
    if getattr(getattr(model, "config", None), "bidirectional", False):
        raise DivekitError("a bidirectional model reads the future to predict each token; it cannot "
                           "generate left to right")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    banned = torch.tensor(list(never), dtype=torch.long, device=device)
    try:
        logits, state = model(torch.tensor([prefix], device=device), None)  # warm the state on the prefix
        for _ in range(length):
            last = logits[:, -1].index_fill(-1, banned, float("-inf")) if banned.numel() else logits[:, -1]
            token = next_token(last, temperature=temperature, top_k=top_k, generator=generator)
            yield int(token)
            logits, state = model(token.view(1, 1), state)
    finally:
        model.train(was_training)
