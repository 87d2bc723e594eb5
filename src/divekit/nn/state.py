"""The state a language model carries from one window of text to the next, and how to cut its graph.

A recurrent model's state is ``h``, or ``(h, c)`` for an LSTM, each ``(L*D, B, H)``; a GPT's is a
tuple of its context tokens and cached keys and values. Training on consecutive windows keeps the
values but must stop backpropagation at each window's start (truncated backpropagation through
time), and dynamic evaluation does the same after every update: :func:`detach_state`.
"""

from __future__ import annotations

from torch import Tensor

RecurrentState = Tensor | tuple[Tensor, ...]  # h, (h, c) for an LSTM, or a GPT's (tokens, keys, values)


def detach_state(state: RecurrentState | None) -> RecurrentState | None:
    """The same state cut from the graph, so backpropagation stops at the window boundary."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
