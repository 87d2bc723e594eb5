"""A GPT character language model: a stack of pre-norm causal Transformer blocks.

Symbols: B batch, T new tokens, C tokens already in the context, D model width, H heads,
F feed-forward width, L blocks, V vocabulary, ``max_len`` the context window.

    x = Embed(tokens)                                              (B, T, D)   tokens only (ALiBi)
    x = x + Dropout(CausalSelfAttn(LayerNorm(x), bias=A))          (B, T, D)   } one block, L times
    x = x + Dropout(FFN(LayerNorm(x)))                             (B, T, D)   }
    logits = LayerNorm(x) Embed^T                                  (B, T, V)   output tied to the input

Positions enter as ALiBi biases ``A[h, i, j] = -m_h (i - j)`` on the attention scores (Press et al.,
2022), the registered choice: with them every head favours recent characters from the first step,
which removes the long plateau at the bigram level that a learned position table
(``positions="learned"``: ``x = Embed(tokens) + P[C : C + T]``) spends its first few hundred steps
on before its heads learn where the previous characters are (docs/results/attention.md).

The attention, feed-forward network and positional encodings are the tested blocks of ``divekit.nn``;
a block here only arranges them pre-norm (LayerNorm before each sublayer, the residual stream left
untouched), which keeps the gradients of a deep stack well scaled (Xiong et al., 2020). :meth:`GPTBlock.load_from_torch`
copies a ``torch.nn.TransformerEncoderLayer(norm_first=True)``, which computes the same block.

The recurrent language models' contract, ``model(tokens, state) -> (logits, state)``, holds here
too, so the same task, ``divekit sample`` and ``divekit lm-evaluate`` drive both. The state is a
:class:`GPTState`: the ``C <= max_len`` tokens of the current context and every block's cached
keys and values for them, so feeding one token at a time costs one position of work. The window
does not shift by one (learned positions are absolute, and even with ALiBi the deeper blocks' keys
depend on which tokens the window held): when it is full it *slides*, keeping the last
``context_keep`` tokens (their keys recomputed as a fresh context).
Every token is thus predicted from at least ``min(context_keep, tokens before it)`` earlier ones,
and the result does not depend on how a text is cut into calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit.errors import DivekitError, ShapeError
from divekit.nn.dropout import pack_dropouts
from divekit.nn.multihead_attention import MultiHeadAttention, copy_weight
from divekit.nn.positional import ALiBi, LearnedPositionalEncoding
from divekit.nn.transformer_blocks import PositionWiseFFN
from divekit.registry import register_model


class GPTBlock(nn.Module):
    """Pre-norm causal block: ``x + Dropout(Attn(LN(x)))``, then ``x + Dropout(FFN(LN(x)))``; ``(B, T, D)``.

    With ``cache`` (a :class:`MultiHeadAttention` cache dict, initially empty) the ``T`` new
    positions attend to the cached ones too, which equals running the whole prefix causally.
    """

    def __init__(self, d_model: int, num_heads: int, ffn_hidden: int, dropout: float = 0.0,
                 attn_dropout: float | None = None, fused: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = MultiHeadAttention(d_model, num_heads, dropout if attn_dropout is None else attn_dropout,
                                            fused=fused)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = PositionWiseFFN(d_model, ffn_hidden, dropout)
        self.dropout = nn.Dropout(dropout)  # on each sublayer's output, before it joins the residual

    def forward(self, x: Tensor, *, cache: dict | None = None, bias: Tensor | None = None) -> Tensor:
        """``x (B, T, D)``; ``bias`` ``(H, T, C + T)`` is added to the attention scores (ALiBi)."""
        y = self.norm1(x)
        # Causal over the cached keys and the T new ones: query t sees keys up to position C + t.
        attended, _ = self.attention(y, y, y, attn_mask=bias, is_causal=True, need_weights=False, cache=cache)
        x = x + self.dropout(attended)  # residual: attention
        return x + self.dropout(self.ffn(self.norm2(x)))  # residual: feed-forward

    @torch.no_grad()
    def load_from_torch(self, layer: nn.TransformerEncoderLayer) -> None:
        """Copy a ``TransformerEncoderLayer(norm_first=True, activation="relu")`` of the same sizes."""
        if not layer.norm_first or layer.activation is not F.relu:
            raise ShapeError("only a pre-norm (norm_first=True) ReLU TransformerEncoderLayer loads into GPTBlock")
        self.attention.load_from_torch(layer.self_attn)
        self.ffn.load_from_torch(layer.linear1, layer.linear2)
        for ours, theirs in ((self.norm1, layer.norm1), (self.norm2, layer.norm2)):
            copy_weight(ours.weight, theirs.weight)
            copy_weight(ours.bias, theirs.bias)


class GPTState(NamedTuple):
    """The context a GPT carries between calls; any 3-tuple of these tensors is accepted back."""

    tokens: Tensor  # (B, C) the context's token ids
    keys: Tensor  # (L, B, H, C, D/H) every block's cached keys
    values: Tensor  # (L, B, H, C, D/H) every block's cached values


POSITIONS = ("alibi", "learned")


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 28  # the Time Machine's character vocabulary (<unk>, space, a-z)
    max_len: int = 128  # context window: the positions that have a learned embedding
    d_model: int = 128  # width of the residual stream
    num_heads: int = 4  # D/H = 32 dimensions per head
    layers: int = 4  # pre-norm blocks
    ffn_hidden: int = 512  # 4 D, the usual GPT ratio
    positions: str = "alibi"  # "alibi": linear biases on the attention scores; "learned": a position table
    dropout: float = 0.1  # on embeddings, sublayer outputs and FFN hidden units
    # On the attention weights, the largest tensor of a step: with torch's masks they took a quarter
    # of a bf16 training step on one CPU thread; with packed masks 168 against 147 ms, two threads.
    attn_dropout: float = 0.1
    # Attention through torch's fused kernel (the same function, tested equal), the usual choice on
    # a GPU. Off by default: on the 2-core CPU a bf16 training step of the default model took 476 ms
    # with it against 338 ms with the steps written out.
    fused_attention: bool = False
    # Dropout masks from 16-bit lanes of 64-bit random draws (divekit.nn.dropout): a quarter of the
    # random numbers. A bf16 training step took 195 ms with torch's one-draw-per-element masks,
    # 147 ms with packed ones and 105 ms without dropout, two threads (benchmarks/gpt_lm.py).
    packed_dropout: bool = True
    context_keep: int = 64  # tokens kept when a full window slides: every prediction sees at least this many
    num_steps: int = 128  # training window (read by the timemachine task); at most max_len
    sequential: bool = False  # random windows, each from an empty context, as the model is meant to read

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.max_len, self.d_model, self.num_heads, self.layers, self.ffn_hidden,
               self.num_steps) <= 0:
            raise DivekitError("vocab_size, max_len, d_model, num_heads, layers, ffn_hidden and num_steps "
                               "must be positive")
        if self.d_model % self.num_heads:
            raise DivekitError(f"d_model D={self.d_model} must be divisible by num_heads H={self.num_heads}")
        if not 0 <= self.context_keep < self.max_len:
            raise DivekitError(f"context_keep must lie in [0, max_len={self.max_len}), got {self.context_keep}")
        if self.num_steps > self.max_len:
            raise DivekitError(f"num_steps={self.num_steps} exceeds max_len={self.max_len}: a training window "
                               f"must fit the context")
        if self.positions not in POSITIONS:
            raise DivekitError(f"positions must be one of {', '.join(POSITIONS)}, got '{self.positions}'")
        for name in ("dropout", "attn_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise DivekitError(f"{name} must lie in [0, 1), got {value}")


class GPT(nn.Module):
    """Next-token logits from token + position embeddings and ``L`` :class:`GPTBlock`; see the module docstring."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        if config.positions == "learned":
            self.positional = LearnedPositionalEncoding(config.d_model, config.max_len, config.dropout)
        else:
            self.alibi = ALiBi(config.num_heads)
            self.embed_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(GPTBlock(config.d_model, config.num_heads, config.ffn_hidden, config.dropout,
                                             config.attn_dropout, config.fused_attention)
                                    for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)
        if config.packed_dropout:
            pack_dropouts(self)
        self._init_weights()

    def _init_weights(self) -> None:
        """N(0, 0.02) weights and zero biases (GPT-2); the projections that write into the residual
        stream get std 0.02 / sqrt(2 L), so the stream's variance does not grow with depth."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for proj in (block.attention.W_o, block.ffn.dense2):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * self.config.layers))

    def forward(self, tokens: Tensor, state: GPTState | tuple | None = None) -> tuple[Tensor, GPTState]:
        """``tokens (B, T)`` after an optional context ``state`` -> logits ``(B, T, V)`` and the new state.

        The new tokens are taken in chunks that fill the window; a full window slides first.
        """
        self._check(tokens, state)
        state = GPTState(*state) if state is not None and state[0].shape[1] else None
        hidden = []
        start = 0
        while start < tokens.shape[1]:
            if state is not None and state.tokens.shape[1] == self.config.max_len:
                state = self._slide(state)
            room = self.config.max_len - (0 if state is None else state.tokens.shape[1])
            h, state = self._extend(tokens[:, start: start + room], state)
            hidden.append(h)
            start += room
        logits = F.linear(self.norm(torch.cat(hidden, dim=1)), self.embed.weight)  # (B, T, V): tied weights
        return logits, state

    def _extend(self, tokens: Tensor, state: GPTState | None) -> tuple[Tensor, GPTState]:
        """Run ``tokens (B, n)``, ``C + n <= max_len``, after the context; hidden ``(B, n, D)`` and new state."""
        offset = 0 if state is None else state.tokens.shape[1]
        caches = [{} for _ in self.blocks] if state is None else [
            {"key": k, "value": v} for k, v in zip(state.keys, state.values)]
        x, bias = self._embed(tokens, offset)
        for block, cache in zip(self.blocks, caches):
            x = block(x, cache=cache, bias=bias)
        context = tokens if state is None else torch.cat([state.tokens, tokens], dim=1)  # (B, C + n)
        keys = torch.stack([c["key"] for c in caches])  # (L, B, H, C + n, D/H)
        values = torch.stack([c["value"] for c in caches])
        return x, GPTState(context, keys, values)

    def _embed(self, tokens: Tensor, offset: int) -> tuple[Tensor, Tensor | None]:
        """Embeddings ``(B, n, D)`` of tokens at positions ``offset..offset+n-1``, and the attention bias
        ``(H, n, offset + n)`` (None with a learned position table, which is in the embeddings)."""
        if self.config.positions == "learned":
            return self.positional(self.embed(tokens), offset=offset), None
        return self.embed_dropout(self.embed(tokens)), self.alibi(tokens.shape[1], offset + tokens.shape[1])

    def _slide(self, state: GPTState) -> GPTState | None:
        """A full window -> its last ``context_keep`` tokens, re-encoded from position 0 (None if 0 kept)."""
        keep = self.config.context_keep
        if keep == 0:
            return None
        return self._extend(state.tokens[:, -keep:], None)[1]

    def _check(self, tokens: Tensor, state: GPTState | tuple | None) -> None:
        if tokens.dim() != 2 or tokens.dtype != torch.long or tokens.shape[1] == 0:
            raise ShapeError(f"tokens must be a LongTensor of shape (B, T) with T >= 1, "
                             f"got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < self.config.vocab_size:
            raise ShapeError(f"token ids must lie in [0, V={self.config.vocab_size})")
        if state is None:
            return
        if len(state) != 3 or state[0].dim() != 2 or state[0].shape[0] != tokens.shape[0]:
            raise ShapeError(f"state must be a GPTState whose tokens are (B={tokens.shape[0]}, C)")
        if state[0].shape[1] > self.config.max_len:
            raise ShapeError(f"a state of {state[0].shape[1]} tokens exceeds max_len={self.config.max_len}")


def build(config: GPTConfig) -> GPT:
    return GPT(config)


# AdamW with a short warm-up and cosine decay, as nanoGPT trains its character model; weight decay
# 0.1 and dropout 0.1 because 110 epochs pass over the same 139k characters many times (0.2 ended
# worse: 4.09 against 4.02 test perplexity, docs/results/attention.md). Peak lr 3e-3.
# Sizing: on the 2-core AMX machine, bf16 (which precision auto picks there) and packed dropout, an
# epoch (33 batches of 32 x 128) plus its evaluation takes 5.3 s, so 110 epochs about ten minutes.
_RECIPE = {"epochs": 110, "batch_size": 32, "lr": 3e-3, "optimizer": "adamw", "weight_decay": 0.1,
           "schedule": "cosine", "warmup_steps": 100, "grad_clip": 1.0}

register_model("gpt-lm", config=GPTConfig, task="timemachine", chapter="attention",
               description="GPT (pre-norm causal Transformer) character language model on The Time Machine",
               recipe=dict(_RECIPE))(build)
