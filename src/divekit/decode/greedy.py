"""Greedy decoding, and the small step interface every divekit decoder is written against.

A model is decodable when it offers three methods (:class:`StepDecoder`); B is the number of rows
being decoded, V the target vocabulary::

    state = model.init_state(src, src_valid_len)     # encode once; src (B, S), src_valid_len (B,)
    log_probs, state = model.step(tokens, state)     # tokens (B,) -> log p(y_t | y_<t, x) (B, V)
    state = model.reorder_state(state, index)        # index (B',): row i of the result is row index[i]

``step`` returns log-probabilities (not logits) so that scores add up; ``reorder_state`` lets beam
search repeat a source for each beam and follow the surviving beams. Any state layout works (the
GRU keeps ``(L, B, H)`` and ``(B, H)`` tensors, a Transformer its key/value cache): only the model
knows where the batch axis is.

Greedy search picks ``argmax_v log p(v | y_<t, x)`` at every step until ``<eos>`` or ``max_len``
tokens. The returned tokens exclude ``<eos>``; its log-probability is counted in the score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from divekit.errors import ShapeError


class StepDecoder(Protocol):
    """What :func:`greedy_search` and :func:`divekit.decode.beam.beam_search` need from a model."""

    def init_state(self, src: Tensor, src_valid_len: Tensor) -> Any: ...

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]: ...

    def reorder_state(self, state: Any, index: Tensor) -> Any: ...


@dataclass(frozen=True)
class Hypothesis:
    """One output sequence.

    Attributes:
        tokens: the generated indices, without ``<bos>`` and without ``<eos>``.
        log_prob: ``sum_t log p(y_t | y_<t, x)`` over every generated token, ``<eos>`` included.
        length: generated tokens counted by the length penalty (``<eos>`` included).
        score: ``log_prob / length ** alpha`` (``alpha = 0`` for greedy search).
        finished: whether the hypothesis ended with ``<eos>`` (else it hit ``max_len``).
    """

    tokens: tuple[int, ...]
    log_prob: float
    length: int
    score: float
    finished: bool


def check_inputs(src: Tensor, src_valid_len: Tensor, max_len: int) -> None:
    if src.dim() != 2 or src_valid_len.shape != (src.shape[0],):
        raise ShapeError(
            f"decoding needs src (B, S) and src_valid_len (B,), got {tuple(src.shape)} and {tuple(src_valid_len.shape)}"
        )
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")


@torch.no_grad()
def greedy_search(model: StepDecoder, src: Tensor, src_valid_len: Tensor, *, bos: int, eos: int,
                  max_len: int) -> list[Hypothesis]:
    """The argmax continuation of every source in the batch, one :class:`Hypothesis` per row.

    Rows that have produced ``<eos>`` keep being fed through the model (the batch stays
    rectangular) but their tokens and scores are frozen.
    """
    check_inputs(src, src_valid_len, max_len)
    batch = src.shape[0]
    state = model.init_state(src, src_valid_len)
    tokens = torch.full((batch,), bos, dtype=torch.long, device=src.device)
    out = torch.zeros(batch, max_len, dtype=torch.long, device=src.device)
    log_prob = torch.zeros(batch, dtype=torch.float64, device=src.device)
    length = torch.zeros(batch, dtype=torch.long, device=src.device)
    alive = torch.ones(batch, dtype=torch.bool, device=src.device)
    for t in range(max_len):
        log_probs, state = model.step(tokens, state)  # (B, V)
        best, tokens = log_probs.max(dim=-1)  # (B,), (B,)
        out[:, t] = tokens
        log_prob += torch.where(alive, best.double(), 0.0)
        length += alive.long()
        alive &= tokens != eos
        if not alive.any():
            break
    result = []
    for b in range(batch):
        n = int(length[b])
        finished = n > 0 and int(out[b, n - 1]) == eos
        body = out[b, : n - 1] if finished else out[b, :n]
        lp = float(log_prob[b])
        result.append(Hypothesis(tuple(body.tolist()), lp, n, lp, finished))
    return result
