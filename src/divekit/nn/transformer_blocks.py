"""Transformer blocks from scratch: add & norm, position-wise FFN, encoder block, decoder block.

Post-norm layout of the original Transformer, batch-first. Symbols: B batch, S source length,
T target length, D model width, H heads, F hidden width of the feed-forward network.

    encoder block:  x = AddNorm(x, SelfAttn(x));  x = AddNorm(x, FFN(x))
    decoder block:  x = AddNorm(x, CausalSelfAttn(x));  x = AddNorm(x, CrossAttn(x, memory));
                    x = AddNorm(x, FFN(x))

Each block computes what ``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer`` compute
with ``batch_first=True, norm_first=False`` and ReLU, and loads their weights with
``load_from_torch``; they deliberately do not mirror those classes' signatures (ours name the
sizes ``d_model, num_heads, ffn_hidden``, default to no dropout, and decode incrementally with a cache).
Masks follow ``torch.nn.MultiheadAttention``: padding masks block where True.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from divekit.errors import ShapeError
from divekit.nn.multihead_attention import KVCache, MultiHeadAttention, copy_weight


def causal_mask(steps: int, offset: int = 0, device: torch.device | None = None) -> Tensor:
    """Bool block mask ``(T, offset + T)``: query ``t`` (absolute position ``offset + t``) may not
    see keys at later positions. With ``offset`` previous positions cached, they are all visible."""
    query_pos = torch.arange(steps, device=device).unsqueeze(1) + offset  # (T, 1)
    key_pos = torch.arange(offset + steps, device=device).unsqueeze(0)  # (1, offset + T)
    return key_pos > query_pos


class AddNorm(nn.Module):
    """Residual connection then layer norm: ``LayerNorm(x + dropout(y))``, shapes ``(B, T, D)``."""

    def __init__(self, d_model: int, dropout: float = 0.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: Tensor, sublayer_out: Tensor) -> Tensor:
        if x.shape != sublayer_out.shape:
            raise ShapeError(
                f"sublayer output must match the residual shape {tuple(x.shape)}, got {tuple(sublayer_out.shape)}"
            )
        return self.norm(x + self.dropout(sublayer_out))

    @torch.no_grad()
    def load_norm(self, norm: nn.LayerNorm) -> None:
        """Copy a torch LayerNorm's affine parameters, refusing a different eps or layout."""
        if norm.eps != self.norm.eps or (norm.bias is None) != (self.norm.bias is None):
            raise ShapeError(f"LayerNorm mismatch: eps {norm.eps} vs {self.norm.eps}, or bias present in one only")
        copy_weight(self.norm.weight, norm.weight)
        if norm.bias is not None:
            copy_weight(self.norm.bias, norm.bias)


class PositionWiseFFN(nn.Module):
    """The same two-layer MLP at every position: ``W_2 dropout(relu(W_1 x + b_1)) + b_2``.

    Shapes: ``(B, T, D)`` -> ``(B, T, F)`` inside -> ``(B, T, D)``.
    """

    def __init__(self, d_model: int, ffn_hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dense1 = nn.Linear(d_model, ffn_hidden)
        self.dense2 = nn.Linear(ffn_hidden, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.dense1.in_features:
            raise ShapeError(f"input must end in D={self.dense1.in_features}, got {tuple(x.shape)}")
        return self.dense2(self.dropout(F.relu(self.dense1(x))))

    @torch.no_grad()
    def load_from_torch(self, linear1: nn.Linear, linear2: nn.Linear) -> None:
        copy_weight(self.dense1.weight, linear1.weight)
        copy_weight(self.dense1.bias, linear1.bias)
        copy_weight(self.dense2.weight, linear2.weight)
        copy_weight(self.dense2.bias, linear2.bias)


def _check_torch_layer(layer: nn.TransformerEncoderLayer | nn.TransformerDecoderLayer) -> None:
    """Refuse torch layers whose computation differs from ours (pre-norm, non-ReLU, no bias)."""
    if layer.norm_first:
        raise ShapeError("cannot load a norm_first=True (pre-norm) layer into a post-norm block")
    activation = layer.activation
    if not (activation is F.relu or isinstance(activation, nn.ReLU)):
        raise ShapeError(f"only ReLU layers load, got activation {activation}")
    if layer.linear1.bias is None:
        raise ShapeError("only layers with bias=True load")


def _check_block_input(name: str, x: Tensor, steps: str, d_model: int) -> None:
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ShapeError(f"{name} must have shape (B, {steps}, D={d_model}), got {tuple(x.shape)}")


class EncoderBlock(nn.Module):
    """Self-attention and a position-wise FFN, each wrapped in :class:`AddNorm`.

    Forward: ``x`` ``(B, S, D)`` -> ``(B, S, D)``; ``key_padding_mask`` ``(B, S)`` (True = padding) or
    ``valid_lens`` ``(B,)`` hide padded source positions; ``attn_mask`` as in MultiHeadAttention.
    """

    def __init__(
        self, d_model: int, num_heads: int, ffn_hidden: int, dropout: float = 0.0, norm_eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.self_attention = MultiHeadAttention(d_model, num_heads, dropout)
        self.addnorm1 = AddNorm(d_model, dropout, norm_eps)
        self.ffn = PositionWiseFFN(d_model, ffn_hidden, dropout)
        self.addnorm2 = AddNorm(d_model, dropout, norm_eps)

    def forward(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        valid_lens: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        _check_block_input("x", x, "S", self.d_model)
        attended, _ = self.self_attention(
            x, x, x, key_padding_mask=key_padding_mask, valid_lens=valid_lens, attn_mask=attn_mask, need_weights=False
        )
        x = self.addnorm1(x, attended)
        return self.addnorm2(x, self.ffn(x))  # (B, S, D)

    @torch.no_grad()
    def load_from_torch(self, layer: nn.TransformerEncoderLayer) -> None:
        """Copy the weights of a post-norm ReLU ``torch.nn.TransformerEncoderLayer`` of the same sizes."""
        _check_torch_layer(layer)
        self.self_attention.load_from_torch(layer.self_attn)
        self.ffn.load_from_torch(layer.linear1, layer.linear2)
        self.addnorm1.load_norm(layer.norm1)
        self.addnorm2.load_norm(layer.norm2)


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention over the encoder output, and an FFN, each with AddNorm.

    Forward: ``x`` ``(B, T, D)`` and ``memory`` ``(B, S, D)`` -> ``(B, T, D)``. ``causal=True`` stops
    position ``t`` from seeing targets after ``t``; ``memory_key_padding_mask`` ``(B, S)`` (True =
    padding) or ``memory_valid_lens`` ``(B,)`` hide padded source positions.

    Incremental decoding: pass the same ``cache`` dict (initially empty, one per block) at every
    step with only the new positions as ``x`` (usually ``T = 1``). The self-attention keys/values of
    earlier positions are kept in ``cache["self"]`` and the projected memory in ``cache["cross"]``,
    so the result equals recomputing the whole prefix with the causal mask. A
    ``tgt_key_padding_mask`` must then cover all cached positions plus the new ones.
    """

    def __init__(
        self, d_model: int, num_heads: int, ffn_hidden: int, dropout: float = 0.0, norm_eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.self_attention = MultiHeadAttention(d_model, num_heads, dropout)
        self.addnorm1 = AddNorm(d_model, dropout, norm_eps)
        self.cross_attention = MultiHeadAttention(d_model, num_heads, dropout)
        self.addnorm2 = AddNorm(d_model, dropout, norm_eps)
        self.ffn = PositionWiseFFN(d_model, ffn_hidden, dropout)
        self.addnorm3 = AddNorm(d_model, dropout, norm_eps)

    @staticmethod
    def cached_length(cache: dict | None) -> int:
        """Number of target positions already held in a decoder block's cache."""
        if cache is None or "key" not in cache.get("self", {}):
            return 0
        return cache["self"]["key"].shape[2]

    def forward(self, x: Tensor, memory: Tensor, **masks_and_cache: Any) -> Tensor:
        """``(B, T, D)`` -> ``(B, T, D)``; keyword arguments as for :meth:`attend`."""
        return self.attend(x, memory, need_weights=False, **masks_and_cache)[0]

    def attend(
        self,
        x: Tensor,
        memory: Tensor,
        *,
        memory_key_padding_mask: Tensor | None = None,
        memory_valid_lens: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        causal: bool = True,
        cache: dict | None = None,
        need_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """:meth:`forward`, also returning the cross-attention weights ``(B, H, T, S)`` (before dropout)."""
        _check_block_input("x", x, "T", self.d_model)
        _check_block_input("memory", memory, "S", self.d_model)
        offset = self.cached_length(cache)
        self_cache: KVCache | None = None if cache is None else cache.setdefault("self", {})
        cross_cache: KVCache | None = None if cache is None else cache.setdefault("cross", {"static": True})
        mask = causal_mask(x.shape[1], offset, x.device) if causal else None
        attended, _ = self.self_attention(
            x, x, x, attn_mask=mask, key_padding_mask=tgt_key_padding_mask, need_weights=False, cache=self_cache
        )
        x = self.addnorm1(x, attended)
        attended, weights = self.cross_attention(
            x,
            memory,
            memory,
            key_padding_mask=memory_key_padding_mask,
            valid_lens=memory_valid_lens,
            need_weights=need_weights,
            average_attn_weights=False,
            cache=cross_cache,
        )
        x = self.addnorm2(x, attended)
        return self.addnorm3(x, self.ffn(x)), weights  # (B, T, D), (B, H, T, S) or None

    @torch.no_grad()
    def load_from_torch(self, layer: nn.TransformerDecoderLayer) -> None:
        """Copy the weights of a post-norm ReLU ``torch.nn.TransformerDecoderLayer`` of the same sizes."""
        _check_torch_layer(layer)
        self.self_attention.load_from_torch(layer.self_attn)
        self.cross_attention.load_from_torch(layer.multihead_attn)
        self.ffn.load_from_torch(layer.linear1, layer.linear2)
        self.addnorm1.load_norm(layer.norm1)
        self.addnorm2.load_norm(layer.norm2)
        self.addnorm3.load_norm(layer.norm3)
