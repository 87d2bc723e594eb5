"""Multi-head attention from scratch, batch-first, with a key/value cache for incremental decoding.

Symbols: B batch, T queries, S keys, D model width, H heads, D/H width of one head.

``MultiHeadAttention`` deliberately does not mirror ``torch.nn.MultiheadAttention``'s signature: it
is the readable layer the Transformer blocks are built from, batch-first, with four separate
projections ``W_q, W_k, W_v, W_o``, keyword-only masks, ``valid_lens`` and a cache. It loads the
weights of a torch layer with :meth:`MultiHeadAttention.load_from_torch`. The drop-in with torch's
constructor, parameter names and call is :class:`divekit.nn.mha.MultiheadAttention`.

It takes torch's *block* masks (``key_padding_mask`` ``(B, S)`` and ``attn_mask``, ``True`` = may
not attend, or float masks added to the scores) and the *keep*-convention ``valid_lens`` of
:mod:`divekit.nn.attention`; all given masks are combined. ``is_causal=True`` adds the causal mask
(each query sees the keys up to its own position, the queries being the last ``T`` of the ``S``).

``fused=True`` lets a call that needs no weights and has no masks but the causal one and additive
(float) ``attn_mask`` biases run through
``torch.nn.functional.scaled_dot_product_attention``, whose fused CPU/GPU kernels never store the
``(B, H, T, S)`` scores: the same function (tested equal to the steps written out here). Its
dropout then draws from torch's own kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit.errors import ShapeError
from divekit.nn.attention import masked_softmax, valid_lens_mask

KVCache = dict[str, Tensor | bool]


def causal_keep(queries: int, keys: int, device: torch.device | None = None) -> Tensor:
    """Keep mask ``(T, S)``, ``S >= T``: query ``t`` stands at position ``S - T + t`` and sees keys up to it."""
    if keys < queries:
        raise ShapeError(f"a causal mask needs at least as many keys as queries, got S={keys} < T={queries}")
    return torch.ones(queries, keys, dtype=torch.bool, device=device).tril(keys - queries)


def blocked_and_bias(mask: Tensor) -> tuple[Tensor, Tensor | None]:
    """Split a torch-style mask into (blocked positions, finite additive bias or None).

    A bool mask blocks where True. A float mask is added to the scores; its -inf entries are
    treated as blocked so they get exactly zero weight and gradient, and a fully blocked row
    gives zeros instead of NaN.
    """
    if mask.dtype == torch.bool:
        return mask, None
    blocked = torch.isneginf(mask)
    return blocked, mask.masked_fill(blocked, 0.0)


def _four_dims(attn_mask: Tensor, scores_shape: tuple[int, int, int, int]) -> Tensor:
    """An ``attn_mask`` of shape ``(T, S)``, ``(H, T, S)`` or torch's head-major ``(B*H, T, S)`` as
    a view broadcastable to the scores ``(B, H, T, S)``."""
    batch, heads, queries, keys = scores_shape
    if attn_mask.shape == (queries, keys):
        return attn_mask.view(1, 1, queries, keys)
    if attn_mask.shape == (batch * heads, queries, keys):
        return attn_mask.view(batch, heads, queries, keys)
    if attn_mask.shape == (heads, queries, keys):
        return attn_mask.view(1, heads, queries, keys)  # one per head, shared by the batch
    raise ShapeError(f"attn_mask must have shape (T, S)=({queries}, {keys}), (H, T, S)=({heads}, {queries}, "
                     f"{keys}) or (B*H, T, S)=({batch * heads}, {queries}, {keys}), got {tuple(attn_mask.shape)}")


def reorder_kv_cache(cache: dict, index: Tensor) -> None:
    """Select batch rows of every cached tensor in place (e.g. to follow surviving beams).

    Walks nested dicts, so a decoder's whole cache (per block, per attention) can be passed.
    """
    for name, item in cache.items():
        if isinstance(item, dict):
            reorder_kv_cache(item, index)
        elif isinstance(item, Tensor):
            cache[name] = item.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """Multi-head attention ``concat(head_1..head_H) W_o`` with ``head_h = attn(q W_q^h, k W_k^h, v W_v^h)``.

    Each head is scaled dot-product attention on a ``D/H``-wide slice of the projections. The
    parameters mirror ``torch.nn.MultiheadAttention`` (see :meth:`load_from_torch`), and so do the
    masks: ``key_padding_mask`` ``(B, S)`` and ``attn_mask`` ``(T, S)`` or ``(B*H, T, S)`` block where
    True (bool) or are added to the scores (float, ``-inf`` = blocked). ``valid_lens`` ``(B,)`` or
    ``(B, T)`` is the keep-convention alternative. All given masks are combined.

    Incremental decoding: pass ``cache`` (a dict, initially empty, one per attention layer and
    sequence batch). The new keys/values, projected and split into heads ``(B, H, S_new, D/H)``,
    are appended to ``cache["key"]`` / ``cache["value"]``, and the queries attend over all of them;
    masks must then cover the total key length. A cache with ``"static": True`` (for
    cross-attention over a fixed memory) projects ``key``/``value`` once and reuses them.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 fused: bool = False) -> None:
        super().__init__()
        self.fused = fused
        if d_model % num_heads:
            raise ShapeError(f"d_model D={d_model} must be divisible by num_heads H={num_heads}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.W_q = nn.Linear(d_model, d_model, bias=bias)
        self.W_k = nn.Linear(d_model, d_model, bias=bias)
        self.W_v = nn.Linear(d_model, d_model, bias=bias)
        self.W_o = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, steps, _ = x.shape
        return x.view(batch, steps, self.num_heads, -1).transpose(1, 2)  # (B, H, steps, D/H)

    def _merge_heads(self, x: Tensor) -> Tensor:
        batch, _, steps, _ = x.shape
        return x.transpose(1, 2).reshape(batch, steps, self.d_model)  # (B, steps, D)

    def _check_input(self, name: str, x: Tensor, steps: str) -> None:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ShapeError(f"{name} must have shape (B, {steps}, D={self.d_model}), got {tuple(x.shape)}")

    def _keys_values(
        self, key: Tensor | None, value: Tensor | None, cache: KVCache | None
    ) -> tuple[Tensor, Tensor]:
        if cache is not None and cache.get("static") and "key" in cache:
            return cache["key"], cache["value"]  # projected once, on the first call
        if key is None or value is None:
            raise ShapeError("key and value (B, S, D) are required unless a filled static cache is given")
        self._check_input("key", key, "S")
        self._check_input("value", value, "S")
        if key.shape[:2] != value.shape[:2]:
            raise ShapeError(f"key and value must both be (B, S, D), got {tuple(key.shape)}, {tuple(value.shape)}")
        k, v = self._split_heads(self.W_k(key)), self._split_heads(self.W_v(value))  # (B, H, S, D/H)
        if cache is not None:
            if "key" in cache:
                k = torch.cat([cache["key"], k], dim=2)
                v = torch.cat([cache["value"], v], dim=2)
            cache["key"], cache["value"] = k, v
        return k, v

    def _masks(
        self,
        scores_shape: tuple[int, int, int, int],
        key_padding_mask: Tensor | None,
        attn_mask: Tensor | None,
        valid_lens: Tensor | None,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Return (keep mask, additive bias), each broadcastable to scores (B, H, T, S) or None."""
        batch, keys = scores_shape[0], scores_shape[3]
        blocked_parts: list[Tensor] = []
        bias: Tensor | None = None
        if key_padding_mask is not None:
            if key_padding_mask.shape != (batch, keys):
                raise ShapeError(
                    f"key_padding_mask must have shape (B, S)=({batch}, {keys}), got {tuple(key_padding_mask.shape)}"
                )
            blocked, extra = blocked_and_bias(key_padding_mask.view(batch, 1, 1, keys))
            blocked_parts.append(blocked)
            bias = extra
        if attn_mask is not None:
            blocked, extra = blocked_and_bias(_four_dims(attn_mask, scores_shape))
            blocked_parts.append(blocked)
            if extra is not None:
                bias = extra if bias is None else bias + extra
        keep = valid_lens_mask(valid_lens, scores_shape) if valid_lens is not None else None
        for blocked in blocked_parts:
            keep = ~blocked if keep is None else keep & ~blocked
        return keep, bias

    def forward(
        self,
        query: Tensor,
        key: Tensor | None,
        value: Tensor | None,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        valid_lens: Tensor | None = None,
        need_weights: bool = True,
        average_attn_weights: bool = True,
        cache: KVCache | None = None,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` ``(B, T, D)`` to ``key``/``value`` ``(B, S, D)``.

        Returns ``(output (B, T, D), weights)``: weights are ``(B, T, S)`` averaged over heads,
        ``(B, H, T, S)`` with ``average_attn_weights=False``, or None with ``need_weights=False``.
        The returned weights are those before dropout.
        """
        self._check_input("query", query, "T")
        q = self._split_heads(self.W_q(query))  # (B, H, T, D/H)
        k, v = self._keys_values(key, value, cache)  # (B, H, S, D/H)
        if k.shape[0] != q.shape[0]:
            raise ShapeError(f"key/value batch {k.shape[0]} differs from query batch B={q.shape[0]}")
        queries, keys = q.shape[2], k.shape[2]
        if (self.fused and not need_weights and key_padding_mask is None and valid_lens is None
                and (attn_mask is None or attn_mask.is_floating_point())):
            return self._fused(q, k, v, attn_mask, is_causal), None
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
        keep, bias = self._masks(tuple(scores.shape), key_padding_mask, attn_mask, valid_lens)
        if is_causal:
            causal = causal_keep(queries, keys, q.device)
            keep = causal if keep is None else keep & causal
        if bias is not None:
            scores = scores + bias.to(scores.dtype)
        weights = masked_softmax(scores, mask=keep)  # (B, H, T, S)
        output = self.W_o(self._merge_heads(self.dropout(weights) @ v))  # (B, T, D)
        if not need_weights:
            return output, None
        return output, weights.mean(dim=1) if average_attn_weights else weights

    def _fused(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, is_causal: bool) -> Tensor:
        """Attention through torch's fused kernel, with an optional additive ``bias`` and the causal mask."""
        queries, keys = q.shape[2], k.shape[2]
        mask = None
        if bias is not None:
            mask = _four_dims(bias, (q.shape[0], q.shape[1], queries, keys)).to(q.dtype)
            if is_causal:  # one additive mask: the kernel takes either a mask or is_causal
                mask = mask.masked_fill(~causal_keep(queries, keys, q.device), float("-inf"))
        elif is_causal and queries != keys:
            mask = causal_keep(queries, keys, q.device)
        attended = F.scaled_dot_product_attention(  # (B, H, T, D/H)
            q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0,
            is_causal=is_causal and mask is None)
        return self.W_o(self._merge_heads(attended))

    @torch.no_grad()
    def load_from_torch(self, mha: nn.MultiheadAttention) -> None:
        """Copy the weights of a ``torch.nn.MultiheadAttention`` with the same width and heads.

        torch packs the three input projections into ``in_proj_weight`` ``(3D, D)`` in q, k, v order.
        """
        if mha.embed_dim != self.d_model or mha.num_heads != self.num_heads:
            raise ShapeError(
                f"cannot load MultiheadAttention(D={mha.embed_dim}, H={mha.num_heads}) into "
                f"MultiHeadAttention(D={self.d_model}, H={self.num_heads})"
            )
        if mha.in_proj_weight is None or mha.bias_k is not None or mha.add_zero_attn:
            raise ShapeError(
                "only MultiheadAttention with kdim = vdim = D, no bias_k/bias_v and no zero attention loads"
            )
        if (mha.in_proj_bias is None) != (self.W_q.bias is None):
            raise ShapeError(f"bias mismatch: torch layer has bias={mha.in_proj_bias is not None}")
        projections = (self.W_q, self.W_k, self.W_v)
        for linear, weight in zip(projections, mha.in_proj_weight.chunk(3, dim=0)):
            copy_weight(linear.weight, weight)
        if mha.in_proj_bias is not None:
            for linear, bias in zip(projections, mha.in_proj_bias.chunk(3, dim=0)):
                copy_weight(linear.bias, bias)
        copy_weight(self.W_o.weight, mha.out_proj.weight)
        if self.W_o.bias is not None:
            copy_weight(self.W_o.bias, mha.out_proj.bias)


def copy_weight(target: Tensor, source: Tensor) -> None:
    """Copy one tensor of weights, refusing a shape mismatch rather than broadcasting."""
    if target.shape != source.shape:
        raise ShapeError(f"weight shape mismatch: expected {tuple(target.shape)}, got {tuple(source.shape)}")
    target.copy_(source)
