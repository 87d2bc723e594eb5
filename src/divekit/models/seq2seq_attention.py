"""Sequence-to-sequence translation with Bahdanau (additive) attention over the encoder outputs.

Symbols: B batch, S source steps, T target steps, E embedding width, H hidden units, L layers,
V vocabulary. Everything is batch-first.

    encoder   o, h  = GRUEncoder(src)          as in :mod:`divekit.models.seq2seq`   (B, S, H), (L, B, H)
    decoder   for every target step t, with s_{t-1} the decoder state (s_0 = h):
              q_t     = s_{t-1}^L                      the top layer's state is the query      (B, 1, H)
              a_t     = softmax_j(w_v^T tanh(W_q q_t + W_k o_j)),  j < src_valid_len        (B, 1, S)
              c_t     = sum_j a_tj o_j                 the context vector                     (B, 1, H)
              f_t,s_t = GRU([Embed_tgt(y_{t-1}) ; c_t], s_{t-1})                              (B, 1, H)
              logit_t = f_t W_out^T + b_out                                                   (B, 1, V)

Unlike the plain seq2seq, the context changes at every step: the decoder looks back at each source
position, so a long sentence is no longer squeezed into one vector. Because the query at step t is
the state after step t-1, teacher forcing also runs step by step (the GRU cannot be unrolled over
the whole target at once).

Decoding uses the step interface of :mod:`divekit.decode` through
:class:`divekit.models.seq2seq.EncoderDecoder`; the state is
``(enc_outputs (B, S, H), hidden (L, B, H), src_valid_len (B,))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from divekit.errors import ShapeError
from divekit.models.seq2seq import Decoder, EncoderDecoder, GRUEncoder, Seq2SeqConfig, check_tokens, init_weights
from divekit.nn.attention import AdditiveAttention
from divekit.nn.rnn import make_rnn
from divekit.registry import register_model

# (encoder outputs (B, S, H), decoder hidden (L, B, H), source lengths (B,))
AttentionState = tuple[Tensor, Tensor, Tensor]


class BahdanauDecoder(Decoder):
    """GRU decoder whose input at each step is ``[embedding ; attention context]``."""

    def __init__(self, vocab_size: int, embed_size: int, hidden_size: int, num_layers: int,
                 dropout: float, rnn_impl: str) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.attention = AdditiveAttention(hidden_size, hidden_size, hidden_size)
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = make_rnn("gru", rnn_impl, embed_size + hidden_size, hidden_size, num_layers=num_layers,
                            dropout=dropout)
        self.out = nn.Linear(hidden_size, vocab_size)

    def init_state(self, enc_outputs: Tensor, enc_state: Tensor, src_valid_len: Tensor) -> AttentionState:
        return enc_outputs, enc_state, src_valid_len

    def attend(self, tokens: Tensor, state: AttentionState, need_weights: bool = True
               ) -> tuple[Tensor, AttentionState, Tensor | None]:
        """``tokens (B, T)`` -> features ``(B, T, H)``, the next state, and attention weights ``(B, T, S)``."""
        check_tokens("tokens", tokens, "(B, T)")
        enc_outputs, hidden, valid_len = state
        if enc_outputs.shape[0] != tokens.shape[0]:
            raise ShapeError(f"tokens must have shape (B, T) with B={enc_outputs.shape[0]}, got {tuple(tokens.shape)}")
        emb = self.embedding(tokens)  # (B, T, E)
        features, weights = [], []
        for t in range(tokens.shape[1]):
            query = hidden[-1].unsqueeze(1).to(enc_outputs.dtype)  # (B, 1, H): top layer after step t-1
            context, w = self.attention(query, enc_outputs, enc_outputs, valid_lens=valid_len,
                                        need_weights=need_weights)  # (B, 1, H), (B, 1, S) or None
            weights.append(w)
            step_in = torch.cat((emb[:, t : t + 1], context.to(emb.dtype)), dim=2)  # (B, 1, E + H)
            out, hidden = self.rnn(step_in, hidden.contiguous())  # (B, 1, H), (L, B, H)
            features.append(out)
        if not features:
            raise ShapeError("tokens must hold at least one target step, got shape (B, 0)")
        return (torch.cat(features, dim=1), (enc_outputs, hidden, valid_len),
                torch.cat(weights, dim=1) if need_weights else None)

    def forward(self, tokens: Tensor, state: AttentionState) -> tuple[Tensor, AttentionState]:
        features, state, _ = self.attend(tokens, state, need_weights=False)
        return features, state

    def head(self, features: Tensor) -> Tensor:
        return self.out(features)

    def reorder_state(self, state: AttentionState, index: Tensor) -> AttentionState:
        enc_outputs, hidden, valid_len = state
        return enc_outputs.index_select(0, index), hidden.index_select(1, index), valid_len.index_select(0, index)


class AttentionSeq2Seq(EncoderDecoder):
    """The GRU encoder with a :class:`BahdanauDecoder`; also returns the attention weights on request."""

    @torch.no_grad()
    def attention_weights(self, src: Tensor, src_valid_len: Tensor, dec_input: Tensor) -> Tensor:
        """Weights ``(B, T, S)`` each target position puts on each source position (teacher forcing)."""
        _, _, weights = self.decoder.attend(dec_input, self.init_state(src, src_valid_len))
        return weights


@dataclass(frozen=True)
class AttentionSeq2SeqConfig(Seq2SeqConfig):
    """The plain seq2seq's sizes and checks, with more dropout: attention lets the decoder memorise faster."""

    dropout: float = 0.3  # between stacked GRU layers (0.2 overfits within 10 epochs: docs/results/attention.md)


def build_attention_seq2seq(config: AttentionSeq2SeqConfig) -> AttentionSeq2Seq:
    c = config
    dropout = c.dropout if c.num_layers > 1 else 0.0  # inter-layer dropout means nothing with one layer
    encoder = GRUEncoder(c.src_vocab_size, c.embed_size, c.hidden_size, c.num_layers, dropout, c.rnn_impl)
    decoder = BahdanauDecoder(c.tgt_vocab_size, c.embed_size, c.hidden_size, c.num_layers, dropout, c.rnn_impl)
    model = AttentionSeq2Seq(encoder, decoder)
    init_weights(model)
    return model


@register_model(
    "seq2seq-attention",
    config=AttentionSeq2SeqConfig,
    task="fra-eng",
    chapter="attention",
    description="GRU encoder-decoder with Bahdanau (additive) attention over the encoder outputs",
    # 10 epochs: 49 minutes on one core of the 2-core CPU (docs/results/attention.md).
    recipe={"epochs": 10, "batch_size": 128, "lr": 0.004, "optimizer": "adam", "schedule": "cosine",
            "warmup_steps": 200, "grad_clip": 1.0, "label_smoothing": 0.1},
)
def build(config: AttentionSeq2SeqConfig) -> nn.Module:
    return build_attention_seq2seq(config)
