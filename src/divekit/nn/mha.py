"""``MultiheadAttention`` from scratch with PyTorch's parameters, layout and call: a drop-in for ``nn.MultiheadAttention``.

Symbols: B batch, T queries, S keys, D model width (``embed_dim``), H heads, D/H width of one head,
D_k and D_v the key and value widths (``kdim``, ``vdim``). Time-major by default, as in PyTorch:

    query (T, B, D)   key (S, B, D_k)   value (S, B, D_v)   ->   output (T, B, D)

``batch_first=True`` swaps the first two axes of all four; unbatched ``(T, D)``, ``(S, D_k)``,
``(S, D_v)`` inputs give a ``(T, D)`` output. For each head ``h``::

    q_h = x_q W_q^h + b_q^h      k_h = x_k W_k^h + b_k^h      v_h = x_v W_v^h + b_v^h
    A_h = softmax(q_h k_h^T / sqrt(D/H) + M)                  M: the masks, -inf where blocked
    output = concat_h(dropout(A_h) v_h) W_o^T + b_o

The three input projections live in one ``in_proj_weight`` ``(3D, D)`` (q, k, v stacked) when
``D_k = D_v = D``, otherwise in ``q_proj_weight`` ``(D, D)``, ``k_proj_weight`` ``(D, D_k)``,
``v_proj_weight`` ``(D, D_v)``; ``in_proj_bias`` ``(3D,)`` and ``out_proj`` (``weight`` ``(D, D)``,
``bias``) complete it, created and initialised in torch's order so that equal seeds give equal
weights and state dicts load either way. ``add_bias_kv`` appends a learned key and value
(``bias_k``, ``bias_v`` ``(1, 1, D)``) to every sequence; ``add_zero_attn`` appends a zero key and
value after the heads are split. Both extend the masks by one unblocked column, as torch does.

Masks follow ``nn.MultiheadAttention``: ``key_padding_mask`` ``(B, S)`` and ``attn_mask`` ``(T, S)``
or ``(B*H, T, S)``, bool (True = may not attend) or float (added to the scores). One deliberate
difference: a query whose keys are all blocked gets zero weights here (torch gives NaN). The
batch-first teaching layer with a key/value cache is :class:`divekit.nn.multihead_attention.MultiHeadAttention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit.errors import ShapeError
from divekit.nn.attention import masked_softmax
from divekit.nn.multihead_attention import blocked_and_bias


class MultiheadAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s constructor, parameters and ``forward``.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) -> (output, weights)``: weights ``(B, T, S)``
    averaged over heads, ``(B, H, T, S)`` with ``average_attn_weights=False`` (unbatched: without
    ``B``), or None with ``need_weights=False``. ``S`` counts the appended key of ``add_bias_kv``
    and of ``add_zero_attn``, as in torch.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ShapeError(f"embed_dim D={embed_dim} must be a positive multiple of num_heads H={num_heads}")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout, self.batch_first, self.add_zero_attn = float(dropout), batch_first, add_zero_attn
        # Created in torch's order: the random stream is then consumed identically.
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **factory))
            self.register_parameter("in_proj_weight", None)
        in_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory)) if bias else None
        self.register_parameter("in_proj_bias", in_bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
        else:
            self.bias_k = self.bias_v = None
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """torch's initialisation: Xavier-uniform projections, zero biases, Xavier-normal ``bias_k/v``."""
        for weight in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if weight is not None:
                nn.init.xavier_uniform_(weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)
        for extra in (self.bias_k, self.bias_v):
            if extra is not None:
                nn.init.xavier_normal_(extra)

    def _projection_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """``W_q (D, D)``, ``W_k (D, D_k)``, ``W_v (D, D_v)``, from the packed or the separate parameters."""
        if self.in_proj_weight is not None:
            return tuple(self.in_proj_weight.chunk(3, dim=0))  # type: ignore[return-value]
        return self.q_proj_weight, self.k_proj_weight, self.v_proj_weight

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, steps, _ = x.shape
        return x.view(batch, steps, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, steps, D/H)

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Batch-first inputs -> ``q (B, H, T, D/H)``, ``k, v (B, H, S', D/H)`` with the appended keys."""
        w_q, w_k, w_v = self._projection_weights()
        b_q, b_k, b_v = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
        if self.bias_k is not None:  # one learned key and value appended to every sequence
            k = torch.cat([k, self.bias_k.expand(k.shape[0], 1, -1)], dim=1)
            v = torch.cat([v, self.bias_v.expand(v.shape[0], 1, -1)], dim=1)
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        if self.add_zero_attn:  # one zero key and value per head
            k = torch.cat([k, k.new_zeros(*k.shape[:2], 1, self.head_dim)], dim=2)
            v = torch.cat([v, v.new_zeros(*v.shape[:2], 1, self.head_dim)], dim=2)
        return q, k, v

    def _masks(
        self, shape: tuple[int, int, int, int], key_padding_mask: Tensor | None, attn_mask: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None]:
        """``(keep, bias)`` broadcastable to the scores ``(B, H, T, S')``, None where no mask applies."""
        batch, heads, queries, keys = shape
        appended = keys - self._given_keys(keys)  # columns for bias_k and the zero key: never blocked
        keep: Tensor | None = None
        bias: Tensor | None = None
        for mask, kind in ((key_padding_mask, "kpm"), (attn_mask, "attn")):
            if mask is None:
                continue
            mask = self._mask_as_scores(mask, kind, batch, heads, queries, keys - appended)
            mask = F.pad(mask, (0, appended), value=False if mask.dtype == torch.bool else 0.0)
            blocked, extra = blocked_and_bias(mask)
            keep = ~blocked if keep is None else keep & ~blocked
            if extra is not None:
                bias = extra if bias is None else bias + extra
        return keep, bias

    def _given_keys(self, keys: int) -> int:
        """Keys that came from ``key``, out of the ``keys`` the scores have."""
        return keys - int(self.bias_k is not None) - int(self.add_zero_attn)

    @staticmethod
    def _mask_as_scores(mask: Tensor, kind: str, batch: int, heads: int, queries: int, keys: int) -> Tensor:
        """A key padding ``(B, S)`` or attention ``(T, S)`` / ``(B*H, T, S)`` mask viewed as ``(B|1, H|1, T|1, S)``."""
        if kind == "kpm":
            if mask.shape != (batch, keys):
                raise ShapeError(f"key_padding_mask must have shape (B, S)=({batch}, {keys}), got {tuple(mask.shape)}")
            return mask.view(batch, 1, 1, keys)
        if mask.shape == (queries, keys):
            return mask.view(1, 1, queries, keys)
        if mask.shape == (batch * heads, queries, keys):
            return mask.view(batch, heads, queries, keys)  # torch's head-major layout
        raise ShapeError(f"attn_mask must have shape (T, S)=({queries}, {keys}) or (B*H, T, S)="
                         f"({batch * heads}, {queries}, {keys}), got {tuple(mask.shape)}")

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``key``/``value`` in the layout of the module docstring.

        ``is_causal`` is, as in torch, only a hint that ``attn_mask`` is the causal mask, which must
        then be given. The weights returned are those after dropout, as ``nn.MultiheadAttention``
        returns them (no difference in evaluation mode).
        """
        if is_causal and attn_mask is None:
            raise RuntimeError("is_causal is a hint about attn_mask, which must be given with it")
        unbatched = query.dim() == 2
        query, key, value, key_padding_mask = self._batch_first(query, key, value, key_padding_mask)
        q, k, v = self._project(query, key, value)  # (B, H, T, D/H), (B, H, S', D/H) twice
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, S')
        keep, bias = self._masks(tuple(scores.shape), key_padding_mask, attn_mask)
        if bias is not None:
            scores = scores + bias.to(scores.dtype)
        weights = masked_softmax(scores, mask=keep)  # (B, H, T, S')
        if self.training and self.dropout > 0:
            weights = F.dropout(weights, self.dropout)
        merged = (weights @ v).transpose(1, 2).reshape(query.shape[0], query.shape[1], self.embed_dim)
        output = self.out_proj(merged)  # (B, T, D)
        output = output.squeeze(0) if unbatched else (output if self.batch_first else output.transpose(0, 1))
        if not need_weights:
            return output, None
        weights = weights.mean(dim=1) if average_attn_weights else weights
        return output, weights.squeeze(0) if unbatched else weights

    def _batch_first(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Inputs as ``(B, T, D)``, ``(B, S, D_k)``, ``(B, S, D_v)`` and the padding mask as ``(B, S)``."""
        rank = query.dim()
        if rank not in (2, 3) or key.dim() != rank or value.dim() != rank:
            raise ShapeError(f"query, key and value must all be 3-D (batched) or 2-D (unbatched), got "
                             f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
        if rank == 2:  # unbatched: a batch of one
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        widths = (query.shape[-1], key.shape[-1], value.shape[-1])
        if widths != (self.embed_dim, self.kdim, self.vdim) or key.shape[:2] != value.shape[:2]:
            raise ShapeError(f"expected query, key, value widths ({self.embed_dim}, {self.kdim}, {self.vdim}) "
                             f"and equal key/value lengths, got {tuple(query.shape)}, {tuple(key.shape)}, "
                             f"{tuple(value.shape)}")
        if key.shape[0] != query.shape[0]:
            raise ShapeError(f"key/value batch {key.shape[0]} differs from query batch B={query.shape[0]}")
        return query, key, value, key_padding_mask

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"
