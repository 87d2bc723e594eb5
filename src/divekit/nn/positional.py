"""Positions for attention, which is blind to order: absolute tables added to embeddings, or linear biases.

Absolute encodings mark position ``p`` by adding a vector ``P[p]`` to the embedding at ``p``
``(B, T, D)``: fixed sinusoids or a learned table. Both take an ``offset`` so that incremental
decoding, which feeds one new position at a time, adds ``P[offset : offset + T]`` instead of
restarting at position 0.

:class:`ALiBi` marks no embedding; it adds ``-m_h (i - j)`` to the attention score of query ``i``
and key ``j`` in head ``h`` (Press et al., 2022): a penalty growing with distance, so that from the
first step each head favours recent keys, at its own rate. Only distances enter, never absolute
positions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from divekit.errors import ShapeError


def sinusoidal_table(max_len: int, d_model: int) -> Tensor:
    """The ``(max_len, D)`` table ``P[p, 2i] = sin(p / 10000^(2i/D))``, ``P[p, 2i+1] = cos(p / 10000^(2i/D))``.

    Each column pair is a rotation at its own frequency, from 1 down to about 1/10000 radians per
    position, so ``P[p + k]`` is a fixed linear map of ``P[p]``. Computed in float64, returned as float32.
    """
    positions = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)  # (max_len, 1)
    even = torch.arange(0, d_model, 2, dtype=torch.float64)  # the 2i of each column pair
    angles = positions / torch.pow(10000.0, even / d_model)  # (max_len, ceil(D/2))
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : d_model // 2])  # an odd D has one sine column more
    return table.float()


def _check_positions(x: Tensor, d_model: int, max_len: int, offset: int) -> None:
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ShapeError(f"input must have shape (B, T, D={d_model}), got {tuple(x.shape)}")
    if offset < 0 or offset + x.shape[1] > max_len:
        raise ShapeError(
            f"positions {offset}..{offset + x.shape[1] - 1} fall outside the table of max_len={max_len}"
        )


class SinusoidalPositionalEncoding(nn.Module):
    """``dropout(x + P[offset : offset + T])`` with the fixed sinusoid table of :func:`sinusoidal_table`.

    Shapes: ``(B, T, D)`` -> ``(B, T, D)``. The table is a non-persistent buffer: it follows
    ``.to(device)`` but is not saved in checkpoints, since it is a function of ``(max_len, D)``.
    """

    def __init__(self, d_model: int, max_len: int = 1000, dropout: float = 0.0) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("table", sinusoidal_table(max_len, d_model), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        _check_positions(x, self.d_model, self.max_len, offset)
        steps = x.shape[1]
        return self.dropout(x + self.table[offset : offset + steps].to(x.dtype))  # (B, T, D)


class LearnedPositionalEncoding(nn.Module):
    """``dropout(x + E[offset : offset + T])`` with a trained table ``E`` of shape ``(max_len, D)``.

    Shapes: ``(B, T, D)`` -> ``(B, T, D)``. ``E`` starts as N(0, 0.02^2), small next to unit-scale
    embeddings so that early training is not dominated by position. Positions past ``max_len``
    have no row and are refused.
    """

    def __init__(self, d_model: int, max_len: int = 1000, dropout: float = 0.0) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.dropout = nn.Dropout(dropout)
        self.table = nn.Parameter(torch.randn(max_len, d_model) * 0.02)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        _check_positions(x, self.d_model, self.max_len, offset)
        steps = x.shape[1]
        return self.dropout(x + self.table[offset : offset + steps].to(x.dtype))  # (B, T, D)


def alibi_slopes(num_heads: int) -> Tensor:
    """Head ``h``'s slope ``m_h = 2^(-8 (h + 1) / H)``, ``h = 0..H-1``: ``1/2, 1/4, ..., 1/256`` for ``H = 8``.

    A geometric sequence from ``2^(-8/H)`` down to ``2^-8`` for any ``H``; the paper uses this rule
    for ``H`` a power of two and interleaves two such sequences otherwise. Shape ``(H,)``.
    """
    if num_heads < 1:
        raise ShapeError(f"num_heads must be positive, got {num_heads}")
    return torch.pow(2.0, -8.0 * torch.arange(1, num_heads + 1, dtype=torch.float64) / num_heads).float()


class ALiBi(nn.Module):
    """Attention biases ``bias[h, i, j] = -m_h max(0, p_i - j)`` of shape ``(H, T, S)``.

    The ``T`` queries are the last ``T`` of the ``S`` key positions (``p_i = S - T + i``), as in
    causal self-attention with a key/value cache; keys after a query get bias 0, since the causal
    mask removes them anyway. Add it to the ``(B, H, T, S)`` scores before the softmax. The slopes are
    a non-persistent buffer (a function of ``H``), so a checkpoint holds no position parameters.
    """

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)

    def forward(self, queries: int, keys: int) -> Tensor:
        if not 1 <= queries <= keys:
            raise ShapeError(f"ALiBi needs 1 <= T <= S (the queries are the last keys), got T={queries}, S={keys}")
        device = self.slopes.device
        query_pos = torch.arange(keys - queries, keys, device=device)  # (T,)
        distance = (query_pos[:, None] - torch.arange(keys, device=device)[None, :]).clamp(min=0)  # (T, S)
        return -self.slopes[:, None, None] * distance  # (H, T, S)
