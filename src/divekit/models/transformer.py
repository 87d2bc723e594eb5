"""The Transformer encoder-decoder for translation, built from :mod:`divekit.nn.transformer_blocks`.

Symbols: B batch, S source length, T target length, D model width, H heads, F FFN width,
N layers, V vocabulary. Everything is batch-first.

    encoder   x = PE(sqrt(D) Embed_src(src))                                      (B, S, D)
              x = EncoderBlock_n(x, source keys >= src_valid_len hidden), n=1..N   (B, S, D)
    decoder   y = PE(sqrt(D) Embed_tgt(<bos> y_1 .. y_{T-1}))                     (B, T, D)
              y = DecoderBlock_n(y, memory=x, causal, source pads hidden)          (B, T, D)
              logits = y W_out^T + b_out                                          (B, T, V)

Embeddings start as N(0, 1/D) so that ``sqrt(D) Embed`` has unit-scale entries, comparable to the
positional encoding. ``embeddings`` selects what is shared: ``separate`` (three matrices),
``tied`` (the target embedding is the output layer's weight) or ``shared`` (one matrix for source,
target and output; the two vocabularies must then have the same size).

Decoding state (the step interface of :mod:`divekit.decode`) is a dict::

    memory (B, S, D), src_valid_len (B,), caches: one dict per decoder block holding the
    self-attention keys/values of every position decoded so far (B, H, t, D/H) and the projected
    memory (B, H, S, D/H)

so each step runs the blocks on the new position only: greedy and beam search do O(1) new
position-work per step instead of re-running the whole prefix. ``step`` never mutates the state it
is given (the caches are copied one level deep, the tensors shared), which keeps a beam's earlier
states valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from divekit.data.subwords import set_vocab_sizes
from divekit.errors import DivekitError, ShapeError
from divekit.models.seq2seq import Decoder, Encoder, EncoderDecoder, check_tokens, check_valid_len
from divekit.nn.dropout import pack_dropouts
from divekit.nn.masked_loss import at_least_float32
from divekit.nn.positional import LearnedPositionalEncoding, SinusoidalPositionalEncoding
from divekit.nn.transformer_blocks import DecoderBlock, EncoderBlock
from divekit.registry import register_model

TransformerState = dict[str, Any]


def make_positional(kind: str, d_model: int, max_len: int, dropout: float) -> nn.Module:
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(d_model, max_len, dropout)
    return LearnedPositionalEncoding(d_model, max_len, dropout)


class ScaledEmbedding(nn.Module):
    """Token indices ``(B, T)`` -> ``sqrt(D) * E[tokens]`` ``(B, T, D)``, with ``E ~ N(0, 1/D)``."""

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab_size, d_model) / math.sqrt(d_model))
        self.scale = math.sqrt(d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        return nn.functional.embedding(tokens, self.weight) * self.scale


class TransformerEncoder(Encoder):
    """Embedding, positional encoding and ``N`` post-norm encoder blocks."""

    def __init__(self, embedding: ScaledEmbedding, positional: nn.Module, d_model: int, num_heads: int,
                 ffn_hidden: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.embedding, self.positional = embedding, positional
        self.blocks = nn.ModuleList(EncoderBlock(d_model, num_heads, ffn_hidden, dropout) for _ in range(num_layers))

    def forward(self, src: Tensor, valid_len: Tensor) -> tuple[Tensor, Tensor]:
        """``src (B, S)``, ``valid_len (B,)`` -> memory ``(B, S, D)`` (also returned as the 'state')."""
        check_tokens("src", src, "(B, S)")
        check_valid_len(valid_len, src.shape[0], src.shape[1])
        x = self.positional(self.embedding(src))  # (B, S, D)
        for block in self.blocks:
            x = block(x, valid_lens=valid_len)  # padded keys get zero weight
        return x, x


def _copy_caches(caches: list[dict]) -> list[dict]:
    """New per-block dicts over the same tensors, so appending keys leaves the old state intact."""
    return [{name: dict(part) for name, part in cache.items()} for cache in caches]


class TransformerDecoder(Decoder):
    """Embedding, positional encoding, ``N`` post-norm decoder blocks with caches, output layer."""

    def __init__(self, embedding: ScaledEmbedding, positional: nn.Module, d_model: int, num_heads: int,
                 ffn_hidden: int, num_layers: int, dropout: float, vocab_size: int, tie_output: bool) -> None:
        super().__init__()
        self.embedding, self.positional = embedding, positional
        self.blocks = nn.ModuleList(DecoderBlock(d_model, num_heads, ffn_hidden, dropout) for _ in range(num_layers))
        self.out = nn.Linear(d_model, vocab_size)
        if tie_output:
            self.out.weight = embedding.weight  # one (V, D) matrix reads and writes target words

    def init_state(self, enc_outputs: Tensor, enc_state: Tensor, src_valid_len: Tensor) -> TransformerState:
        return {"memory": enc_outputs, "src_valid_len": src_valid_len, "caches": [{} for _ in self.blocks]}

    def forward(self, tokens: Tensor, state: TransformerState) -> tuple[Tensor, TransformerState]:
        """``tokens (B, T)``, the positions after those cached -> features ``(B, T, D)`` and the next state."""
        features, state, _ = self.attend(tokens, state, need_weights=False)
        return features, state

    def attend(self, tokens: Tensor, state: TransformerState, need_weights: bool = True
               ) -> tuple[Tensor, TransformerState, list[Tensor | None]]:
        """:meth:`forward`, also returning each block's cross-attention weights ``(B, H, T, S)``."""
        check_tokens("tokens", tokens, "(B, T)")
        memory, valid_len = state["memory"], state["src_valid_len"]
        if memory.shape[0] != tokens.shape[0]:
            raise ShapeError(f"tokens must have shape (B, T) with B={memory.shape[0]}, got {tuple(tokens.shape)}")
        caches = _copy_caches(state["caches"])
        offset = DecoderBlock.cached_length(caches[0]) if caches else 0
        y = self.positional(self.embedding(tokens), offset)  # (B, T, D)
        weights = []
        for block, cache in zip(self.blocks, caches):
            y, w = block.attend(y, memory, memory_valid_lens=valid_len, causal=True, cache=cache,
                                need_weights=need_weights)
            weights.append(w)
        return y, {"memory": memory, "src_valid_len": valid_len, "caches": caches}, weights

    def head(self, features: Tensor) -> Tensor:
        return self.out(features)

    def reorder_state(self, state: TransformerState, index: Tensor) -> TransformerState:
        caches = [{name: {k: v.index_select(0, index) if isinstance(v, Tensor) else v for k, v in part.items()}
                   for name, part in cache.items()} for cache in state["caches"]]
        return {"memory": state["memory"].index_select(0, index),
                "src_valid_len": state["src_valid_len"].index_select(0, index), "caches": caches}


class Transformer(EncoderDecoder):
    """Encoder-decoder Transformer; :meth:`cross_attention_weights` returns what each layer looked at."""

    @torch.no_grad()
    def cross_attention_weights(self, src: Tensor, src_valid_len: Tensor, dec_input: Tensor) -> list[Tensor]:
        """Per decoder layer, the encoder-decoder attention weights ``(B, H, T, S)`` under teacher forcing."""
        check_tokens("dec_input", dec_input, "(B, T)")
        _, _, weights = self.decoder.attend(dec_input, self.init_state(src, src_valid_len))
        return weights


class RecomputingDecoder:
    """The step interface without a key/value cache: every step re-runs the decoder on the whole prefix.

    State: ``(memory (B, S, D), src_valid_len (B,), prefix (B, t))``. Step ``t`` costs work on
    ``t`` positions instead of one, so a sentence of n tokens costs O(n^2) position-work against the
    cache's O(n). Kept as the baseline that the cached decoder's speed is measured against.
    """

    def __init__(self, model: Transformer) -> None:
        self.model = model

    def init_state(self, src: Tensor, src_valid_len: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        memory, _ = self.model.encoder(src, src_valid_len)
        return memory, src_valid_len, src.new_zeros(src.shape[0], 0)

    def step(self, tokens: Tensor, state: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, tuple]:
        memory, valid_len, prefix = state
        prefix = torch.cat((prefix, tokens.unsqueeze(1)), dim=1)  # (B, t)
        y = self.model.decoder.positional(self.model.decoder.embedding(prefix))  # (B, t, D)
        for block in self.model.decoder.blocks:
            y = block(y, memory, memory_valid_lens=valid_len, causal=True)  # (B, t, D), no cache
        logits = self.model.decoder.head(y[:, -1])  # (B, V)
        return torch.log_softmax(at_least_float32(logits), dim=-1), (memory, valid_len, prefix)

    def reorder_state(self, state: tuple[Tensor, Tensor, Tensor], index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(t.index_select(0, index) for t in state)


@dataclass(frozen=True)
class TransformerConfig:
    # Vocabulary sizes as for seq2seq: the task keeps this many of the most frequent training tokens.
    src_vocab_size: int = 9779  # English entries, specials included
    tgt_vocab_size: int = 8000  # French entries: the output softmax (8,000 cover 96% of test words)
    d_model: int = 256  # model width D (the base Transformer: 512; smaller fits a CPU budget)
    num_heads: int = 4  # attention heads H; D must be divisible by H
    ffn_hidden: int = 1024  # hidden width F of the position-wise FFN (4 D, as in the paper)
    num_encoder_layers: int = 3  # encoder blocks
    num_decoder_layers: int = 3  # decoder blocks
    dropout: float = 0.1  # on embeddings+positions, attention weights and every sublayer output
    embeddings: str = "tied"  # "separate", "tied" (target embedding = output layer) or "shared" (all three)
    positional: str = "sinusoidal"  # "sinusoidal" (fixed) or "learned" (a trained table)
    max_len: int = 128  # longest sequence the positional table covers; must be >= num_steps
    num_steps: int = 25  # longest sentence in tokens with <eos>; longer training pairs are truncated
    # N > 0: a joint BPE vocabulary of N entries for both languages instead of words
    # (divekit.data.subwords); it sets both vocabulary sizes to N.
    subwords: int = 0
    # Dropout masks from 16-bit lanes of 64-bit random draws (divekit.nn.dropout): the same rates,
    # a quarter of the random numbers, which are much of a CPU training step's elementwise work.
    packed_dropout: bool = True

    def __post_init__(self) -> None:
        set_vocab_sizes(self)
        sizes = (self.src_vocab_size, self.tgt_vocab_size, self.d_model, self.num_heads, self.ffn_hidden,
                 self.num_encoder_layers, self.num_decoder_layers, self.num_steps)
        if min(sizes) < 1:
            raise DivekitError(f"transformer sizes must be positive, got {self}")
        if min(self.src_vocab_size, self.tgt_vocab_size) < 5:
            raise DivekitError("transformer vocabularies need room for <unk> <pad> <bos> <eos> and a word")
        if self.d_model % self.num_heads:
            raise DivekitError(f"transformer d_model={self.d_model} must be divisible by num_heads={self.num_heads}")
        if not 0 <= self.dropout < 1:
            raise DivekitError(f"transformer dropout must be in [0, 1), got {self.dropout}")
        if self.embeddings not in ("separate", "tied", "shared"):
            raise DivekitError(f"transformer embeddings must be separate, tied or shared, got '{self.embeddings}'")
        if self.embeddings == "shared" and self.src_vocab_size != self.tgt_vocab_size:
            raise DivekitError("transformer embeddings='shared' needs src_vocab_size == tgt_vocab_size, got "
                               f"{self.src_vocab_size} and {self.tgt_vocab_size}")
        if self.positional not in ("sinusoidal", "learned"):
            raise DivekitError(f"transformer positional must be sinusoidal or learned, got '{self.positional}'")
        if self.max_len < self.num_steps + 1:
            raise DivekitError(f"transformer max_len={self.max_len} must exceed num_steps={self.num_steps}")


def build_transformer(config: TransformerConfig) -> Transformer:
    c = config
    src_embed = ScaledEmbedding(c.src_vocab_size, c.d_model)
    tgt_embed = src_embed if c.embeddings == "shared" else ScaledEmbedding(c.tgt_vocab_size, c.d_model)
    encoder = TransformerEncoder(src_embed, make_positional(c.positional, c.d_model, c.max_len, c.dropout),
                                 c.d_model, c.num_heads, c.ffn_hidden, c.num_encoder_layers, c.dropout)
    decoder = TransformerDecoder(tgt_embed, make_positional(c.positional, c.d_model, c.max_len, c.dropout),
                                 c.d_model, c.num_heads, c.ffn_hidden, c.num_decoder_layers, c.dropout,
                                 c.tgt_vocab_size, tie_output=c.embeddings != "separate")
    for name, p in list(encoder.named_parameters()) + list(decoder.named_parameters()):
        if p.dim() == 2 and "embedding" not in name and "table" not in name and p is not decoder.out.weight:
            nn.init.xavier_uniform_(p)  # attention and FFN matrices; embeddings keep N(0, 1/D)
    model = Transformer(encoder, decoder)
    return pack_dropouts(model) if c.packed_dropout else model


@register_model(
    "transformer",
    config=TransformerConfig,
    task="fra-eng",
    chapter="attention",
    description="Transformer encoder-decoder (post-norm), tied embeddings, cached incremental decoding",
    # 7 epochs: 54 minutes on one core of the 2-core CPU (docs/results/attention.md).
    recipe={"epochs": 7, "batch_size": 256, "lr": 0.001, "optimizer": "adam", "schedule": "cosine",
            "warmup_steps": 1000, "grad_clip": 1.0, "label_smoothing": 0.1},
)
def build(config: TransformerConfig) -> nn.Module:
    return build_transformer(config)
