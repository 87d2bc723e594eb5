"""Attention from scratch: masked softmax, additive and scaled dot-product attention.

Everything is batch-first. Symbols used in the shape comments:

    B batch, T queries (target positions), S keys (source positions), D model width,
    H heads, D/H width of one head, d_q / d_k / d_v query, key and value widths.

Two mask conventions meet here, and each function keeps the one of the torch function it mirrors:

* ``masked_softmax`` and ``scaled_dot_product_attention`` take a *keep* mask (``True`` = may attend),
  like ``torch.nn.functional.scaled_dot_product_attention``.
* ``MultiHeadAttention`` (in :mod:`divekit.nn.multihead_attention`) takes ``key_padding_mask`` and
  ``attn_mask`` as *block* masks (``True`` = may not attend), like ``torch.nn.MultiheadAttention``.

Valid lengths (``valid_lens``) are accepted everywhere: keys at index ``>= valid_len`` are ignored.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from divekit.errors import ShapeError

def _check_rank(name: str, x: Tensor, rank: int, expected: str) -> None:
    if x.dim() != rank:
        raise ShapeError(f"{name} must have shape {expected}, got {tuple(x.shape)}")


def valid_lens_mask(valid_lens: Tensor, scores_shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Keep mask ``key_index < valid_len`` broadcastable to scores of shape ``(B, ..., T, S)``.

    ``valid_lens`` is ``(B,)`` (one length per sequence, shared by all its queries) or ``(B, T)``
    (one length per query). The result has the rank of the scores, with singleton middle dims.
    """
    rank = len(scores_shape)
    batch, queries, keys = scores_shape[0], scores_shape[-2], scores_shape[-1]
    middle = (1,) * (rank - 3)
    if valid_lens.shape == (batch,):
        lens = valid_lens.reshape(batch, *middle, 1, 1)
    elif valid_lens.shape == (batch, queries):
        lens = valid_lens.reshape(batch, *middle, queries, 1)
    else:
        raise ShapeError(
            f"valid_lens must have shape (B,)=({batch},) or (B, T)=({batch}, {queries}), "
            f"got {tuple(valid_lens.shape)}"
        )
    positions = torch.arange(keys, device=valid_lens.device)
    return positions < lens  # (B, ..., 1 or T, S)


def _combined_keep_mask(
    scores_shape: torch.Size, valid_lens: Tensor | None, mask: Tensor | None
) -> Tensor | None:
    """AND of the valid-length mask and the keep mask, broadcastable to ``scores_shape``."""
    keep = None
    if valid_lens is not None:
        if len(scores_shape) < 3:
            raise ShapeError(f"valid_lens needs scores of shape (B, ..., T, S), got {tuple(scores_shape)}")
        keep = valid_lens_mask(valid_lens, scores_shape)
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ShapeError(f"mask must be a bool tensor (True = keep), got dtype {mask.dtype}")
        try:
            broadcast = torch.broadcast_shapes(mask.shape, scores_shape)
        except RuntimeError:
            broadcast = None
        if broadcast != scores_shape:
            raise ShapeError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to scores {tuple(scores_shape)}"
            )
        keep = mask if keep is None else keep & mask
    return keep


def masked_softmax(scores: Tensor, valid_lens: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
    """Softmax over the last axis that ignores masked positions.

    ``w_j = keep_j exp(s_j) / sum_l keep_l exp(s_l)``, and ``w = 0`` for a row that keeps nothing.

    Args:
        scores: ``(..., S)``; with ``valid_lens``, ``(B, ..., T, S)``.
        valid_lens: ``(B,)`` or ``(B, T)``; positions ``>= valid_len`` are masked.
        mask: bool, broadcastable to ``scores``, ``True`` = keep. Combined with ``valid_lens`` by AND.

    Returns:
        weights of the shape of ``scores``; masked positions have weight 0 and receive gradient 0.
    """
    keep = _combined_keep_mask(scores.shape, valid_lens, mask)
    if keep is None:
        return torch.softmax(scores, dim=-1)
    # A finite fill instead of -inf: a fully masked row then gives uniform weights (not 0/0 = NaN),
    # which the multiplication by `keep` below turns into zeros. masked_fill passes no gradient to
    # the filled positions, so masked scores get exactly zero gradient.
    filled = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=-1) * keep


def _attend(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    keep: Tensor | None,
    dropout: nn.Module | None = None,
) -> tuple[Tensor, Tensor]:
    """``softmax(q k^T / sqrt(d)) v`` on ``(..., T, d)``, ``(..., S, d)``, ``(..., S, d_v)``."""
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])  # (..., T, S)
    weights = masked_softmax(scores, mask=keep)
    applied = weights if dropout is None else dropout(weights)
    return applied @ value, weights  # (..., T, d_v), (..., T, S)


def _check_qkv(query: Tensor, key: Tensor, value: Tensor) -> None:
    if query.dim() < 2 or key.dim() != query.dim() or value.dim() != query.dim():
        raise ShapeError(
            f"query, key, value must share a rank >= 2 ((..., T, d), (..., S, d), (..., S, d_v)), got "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    if key.shape[-1] != query.shape[-1]:
        raise ShapeError(f"key width must equal query width {query.shape[-1]}, got {key.shape[-1]}")
    if key.shape[-2] != value.shape[-2]:
        raise ShapeError(f"value must have S={key.shape[-2]} positions like key, got {value.shape[-2]}")


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None = None,
    valid_lens: Tensor | None = None,
) -> Tensor:
    """``softmax(q k^T / sqrt(d) | mask) v`` without dropout.

    Shapes: query ``(..., T, d)``, key ``(..., S, d)``, value ``(..., S, d_v)`` -> ``(..., T, d_v)``.
    ``mask`` is a bool keep mask broadcastable to ``(..., T, S)``; ``valid_lens`` is ``(B,)`` or
    ``(B, T)`` with B the leading axis. A query with no admissible key returns zeros.
    """
    _check_qkv(query, key, value)
    keep = _combined_keep_mask(torch.Size((*query.shape[:-1], key.shape[-2])), valid_lens, mask)
    return _attend(query, key, value, keep)[0]


class DotProductAttention(nn.Module):
    """Scaled dot-product attention ``dropout(softmax(q k^T / sqrt(d))) v``.

    Forward shapes: query ``(B, T, d)``, key ``(B, S, d)``, value ``(B, S, d_v)`` -> ``(B, T, d_v)``
    (extra leading axes such as heads are allowed). Returns ``(output, weights)`` like
    ``nn.MultiheadAttention``: the ``(B, T, S)`` weights before dropout, or None with
    ``need_weights=False``.
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        *,
        valid_lens: Tensor | None = None,
        mask: Tensor | None = None,
        need_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        _check_qkv(query, key, value)
        keep = _combined_keep_mask(torch.Size((*query.shape[:-1], key.shape[-2])), valid_lens, mask)
        out, weights = _attend(query, key, value, keep, self.dropout)
        return out, weights if need_weights else None


class AdditiveAttention(nn.Module):
    """Additive (Bahdanau) attention ``score(q, k) = w_v^T tanh(W_q q + W_k k)``.

    The query and key widths may differ: both are projected to ``num_hiddens`` first.
    Forward shapes: query ``(B, T, d_q)``, key ``(B, S, d_k)``, value ``(B, S, d_v)`` -> ``(B, T, d_v)``.
    Returns ``(output, weights)``: the ``(B, T, S)`` weights before dropout, or None with ``need_weights=False``.
    """

    def __init__(self, key_size: int, query_size: int, num_hiddens: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.W_k = nn.Linear(key_size, num_hiddens, bias=False)
        self.W_q = nn.Linear(query_size, num_hiddens, bias=False)
        self.w_v = nn.Linear(num_hiddens, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        *,
        valid_lens: Tensor | None = None,
        mask: Tensor | None = None,
        need_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        _check_rank("query", query, 3, f"(B, T, d_q={self.W_q.in_features})")
        _check_rank("key", key, 3, f"(B, S, d_k={self.W_k.in_features})")
        _check_rank("value", value, 3, "(B, S, d_v)")
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ShapeError(
                f"query (B, T, d_q), key (B, S, d_k), value (B, S, d_v) disagree: "
                f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
            )
        # Broadcast (B, T, 1, h) + (B, 1, S, h): every query meets every key.
        features = torch.tanh(self.W_q(query).unsqueeze(2) + self.W_k(key).unsqueeze(1))  # (B, T, S, h)
        scores = self.w_v(features).squeeze(-1)  # (B, T, S)
        weights = masked_softmax(scores, valid_lens=valid_lens, mask=mask)
        return self.dropout(weights) @ value, weights if need_weights else None
