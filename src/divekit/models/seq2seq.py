"""Sequence-to-sequence translation with GRUs: the encoder-decoder of the book, without attention.

Symbols: B batch, S source steps, T target steps, E embedding width, H hidden units, L layers,
V vocabulary. Everything is batch-first.

    encoder   x     = Embed_src(src)                                           (B, S, E)
              o^l   = GRU_l(o^{l-1}),  o^0 = x, dropout between layers           (B, S, H)
              h^l   = o^l[b, valid_len[b] - 1]   state after the last real token (L, B, H)
    decoder   c     = h^L, the top layer's summary of the source ("context")     (B, H)
              e     = Embed_tgt(<bos> y_1 ... y_{T-1})   teacher forcing          (B, T, E)
              o     = GRU([e_t ; c] for every t,  initial state h)               (B, T, H)
              logit = o W_out^T + b_out                                          (B, T, V)

The book runs one multi-layer GRU over the padded source and hands the decoder the state after the
last *padded* step, so the summary of "he is calm ." depends on how many pads follow it. Here each
encoder layer is its own GRU and its state is read at the last real token. A GRU is causal, so the
outputs up to that position, and hence every layer's state, are the same whatever follows: padding
never reaches the decoder. (This works for both GRU engines, the scratch one having no packing.)

Decoding interface (used by :mod:`divekit.decode`)::

    state = model.init_state(src (B, S), src_valid_len (B,))
    log_probs (B, V), state = model.step(tokens (B,), state)    # one target position
    state = model.reorder_state(state, index (B',))             # rows index[i] of every state tensor
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit.data.subwords import set_vocab_sizes
from divekit.errors import DivekitError, ShapeError
from divekit.nn.masked_loss import at_least_float32, select_real
from divekit.nn.rnn import make_rnn
from divekit.registry import register_model

# (hidden (L, B, H), context (B, H)): the GRU decoder's state between steps.
DecoderState = tuple[Tensor, Tensor]


def check_tokens(name: str, x: Tensor, symbols: str) -> None:
    """Require an integer ``(B, S)`` tensor of token indices."""
    if not isinstance(x, Tensor) or x.dim() != 2 or x.dtype != torch.long:
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ShapeError(f"{name} must be a LongTensor of shape {symbols}, got {got}")


def check_valid_len(valid_len: Tensor, batch: int, steps: int) -> None:
    """Require lengths ``(B,)`` with ``1 <= valid_len <= steps``: every source has a real token."""
    if valid_len.shape != (batch,):
        raise ShapeError(f"src_valid_len must have shape (B,)=({batch},), got {tuple(valid_len.shape)}")
    if batch and (valid_len.min() < 1 or valid_len.max() > steps):
        raise ShapeError(f"src_valid_len must lie in [1, S={steps}], got {valid_len.tolist()}")


class Encoder(nn.Module):
    """Source ``(B, S)`` and lengths ``(B,)`` -> outputs ``(B, S, H)`` and a state for the decoder."""

    def forward(self, src: Tensor, valid_len: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class Decoder(nn.Module):
    """Target-side half: a state made from the encoder, then features and logits per position."""

    def init_state(self, enc_outputs: Tensor, enc_state: Tensor, src_valid_len: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def forward(self, tokens: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Tokens ``(B, T)`` -> features ``(B, T, H)`` before the output layer, and the next state."""
        raise NotImplementedError

    def head(self, features: Tensor) -> Tensor:
        """Features ``(..., H)`` -> logits ``(..., V)``."""
        raise NotImplementedError

    def reorder_state(self, state: tuple[Tensor, ...], index: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError


class EncoderDecoder(nn.Module):
    """An encoder and a decoder behind one interface for training (teacher forcing) and decoding."""

    def __init__(self, encoder: Encoder, decoder: Decoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def init_state(self, src: Tensor, src_valid_len: Tensor) -> tuple[Tensor, ...]:
        """Encode ``src (B, S)`` and return the decoder's initial state."""
        enc_outputs, enc_state = self.encoder(src, src_valid_len)
        return self.decoder.init_state(enc_outputs, enc_state, src_valid_len)

    def features(self, src: Tensor, src_valid_len: Tensor, dec_input: Tensor) -> Tensor:
        """Decoder features ``(B, T, H)`` for teacher-forced input ``dec_input (B, T)``."""
        check_tokens("dec_input", dec_input, "(B, T)")
        if dec_input.shape[0] != src.shape[0]:
            raise ShapeError(f"dec_input must have shape (B, T) with B={src.shape[0]}, got {tuple(dec_input.shape)}")
        features, _ = self.decoder(dec_input, self.init_state(src, src_valid_len))
        return features

    def forward(self, src: Tensor, src_valid_len: Tensor | None = None, dec_input: Tensor | None = None,
                tgt_valid_len: Tensor | None = None) -> Tensor:
        """Logits ``(B, T, V)`` for ``src (B, S)``, ``src_valid_len (B,)``, ``dec_input (B, T)``.

        With ``tgt_valid_len (B,)`` the output layer runs on the real target positions only and
        the logits come back stacked row by row, ``(N, V)`` with ``N = sum(tgt_valid_len)``: the
        softmax over V words is the dominant cost, and padded positions would only be discarded.
        """
        if src_valid_len is None or dec_input is None:
            raise ShapeError("an encoder-decoder takes (src (B, S), src_valid_len (B,), dec_input (B, T)); "
                             f"got only a tensor of shape {tuple(src.shape)}")
        features = self.features(src, src_valid_len, dec_input)  # (B, T, H)
        if tgt_valid_len is not None:
            features = select_real(features, tgt_valid_len)  # (N, H)
        return self.decoder.head(features)

    def step(self, tokens: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One decoding step: last tokens ``(B,)`` -> log-probabilities ``(B, V)``, at least float32, and the state."""
        if tokens.dim() != 1:
            raise ShapeError(f"step expects the last tokens as shape (B,), got {tuple(tokens.shape)}")
        features, state = self.decoder(tokens.unsqueeze(1), state)
        logits = self.decoder.head(features[:, 0])  # (B, V)
        # scores are summed over many steps: never in bfloat16
        return F.log_softmax(at_least_float32(logits), dim=-1), state

    def reorder_state(self, state: tuple[Tensor, ...], index: Tensor) -> tuple[Tensor, ...]:
        """Keep (or repeat) the batch rows ``index`` of a decoder state, e.g. after a beam step."""
        return self.decoder.reorder_state(state, index)


class GRUEncoder(Encoder):
    """Embedding and ``L`` GRU layers; each layer's state is taken at the last real source token."""

    def __init__(self, vocab_size: int, embed_size: int, hidden_size: int, num_layers: int,
                 dropout: float, rnn_impl: str) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        widths = [embed_size] + [hidden_size] * (num_layers - 1)
        self.layers = nn.ModuleList(make_rnn("gru", rnn_impl, w, hidden_size) for w in widths)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, valid_len: Tensor) -> tuple[Tensor, Tensor]:
        """``src (B, S)``, ``valid_len (B,)`` -> outputs ``(B, S, H)`` and state ``(L, B, H)``."""
        check_tokens("src", src, "(B, S)")
        check_valid_len(valid_len, src.shape[0], src.shape[1])
        rows, last = torch.arange(src.shape[0], device=src.device), valid_len - 1
        x, finals = self.embedding(src), []
        for k, layer in enumerate(self.layers):
            if k:
                x = self.dropout(x)  # between layers only, as in nn.GRU
            x, _ = layer(x)  # (B, S, H); positions past valid_len are never read
            finals.append(x[rows, last])  # (B, H): the state after the last real token
        return x, torch.stack(finals)  # (B, S, H), (L, B, H)


class GRUDecoder(Decoder):
    """The book's decoder: input ``[embedding ; context]`` at every step, encoder state as ``h_0``."""

    def __init__(self, vocab_size: int, embed_size: int, hidden_size: int, num_layers: int,
                 dropout: float, rnn_impl: str) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = make_rnn("gru", rnn_impl, embed_size + hidden_size, hidden_size, num_layers=num_layers,
                            dropout=dropout)
        self.out = nn.Linear(hidden_size, vocab_size)

    def init_state(self, enc_outputs: Tensor, enc_state: Tensor, src_valid_len: Tensor) -> DecoderState:
        return enc_state, enc_state[-1]  # (L, B, H), context (B, H)

    def forward(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """``tokens (B, T)`` -> features ``(B, T, H)`` and ``(hidden (L, B, H), context (B, H))``."""
        hidden, context = state
        emb = self.embedding(tokens)  # (B, T, E)
        ctx = context.unsqueeze(1).expand(-1, tokens.shape[1], -1).to(emb.dtype)  # (B, T, H)
        features, hidden = self.rnn(torch.cat((emb, ctx), dim=2), hidden.contiguous())
        return features, (hidden, context)

    def head(self, features: Tensor) -> Tensor:
        return self.out(features)

    def reorder_state(self, state: DecoderState, index: Tensor) -> DecoderState:
        hidden, context = state
        return hidden.index_select(1, index), context.index_select(0, index)


@dataclass(frozen=True)
class Seq2SeqConfig:
    # Vocabulary sizes are part of the model's shape. The task keeps this many entries of the
    # training split's vocabularies, most frequent first (rarer words become <unk>). Every token
    # seen at least twice: 9,779 English, 17,349 French (the book's choice).
    src_vocab_size: int = 9779  # English entries, specials included: all of them (cheap: a lookup)
    # French entries: the output softmax and its Adam update dominate the cost; 8,000 halves a
    # training step against 17,349, while <unk> rises from 1.8% to 3.8% of the test references' words.
    tgt_vocab_size: int = 8000
    embed_size: int = 256  # token embedding width E (the book: 256)
    hidden_size: int = 256  # GRU hidden units H (the book: 256)
    num_layers: int = 2  # stacked GRU layers on each side (the book: 2)
    dropout: float = 0.2  # between stacked GRU layers (the book: 0.2)
    num_steps: int = 25  # longest sentence in tokens with <eos>; longer training pairs are truncated
    rnn_impl: str = "torch"  # "torch" (nn.GRU) or "scratch" (divekit.nn.rnn.GRU): same weights, same maths
    # N > 0: a joint BPE vocabulary of N entries for both languages instead of words
    # (divekit.data.subwords); it sets both vocabulary sizes to N.
    subwords: int = 0

    def __post_init__(self) -> None:
        set_vocab_sizes(self)
        sizes = (self.src_vocab_size, self.tgt_vocab_size, self.embed_size, self.hidden_size, self.num_layers,
                 self.num_steps)
        if min(sizes) < 1:
            raise DivekitError(f"seq2seq sizes must be positive, got {self}")
        if min(self.src_vocab_size, self.tgt_vocab_size) < 5:
            raise DivekitError("seq2seq vocabularies need room for <unk> <pad> <bos> <eos> and a word")
        if not 0 <= self.dropout < 1:
            raise DivekitError(f"seq2seq dropout must be in [0, 1), got {self.dropout}")
        if self.rnn_impl not in ("torch", "scratch"):
            raise DivekitError(f"seq2seq rnn_impl must be 'torch' or 'scratch', got '{self.rnn_impl}'")


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform weight matrices in linear and recurrent layers, as the book initialises seq2seq."""
    for name, p in module.named_parameters():
        if "weight" in name and "embedding" not in name and p.dim() == 2:
            nn.init.xavier_uniform_(p)


def build_seq2seq(config: Seq2SeqConfig) -> EncoderDecoder:
    c = config
    dropout = c.dropout if c.num_layers > 1 else 0.0  # inter-layer dropout means nothing with one layer
    encoder = GRUEncoder(c.src_vocab_size, c.embed_size, c.hidden_size, c.num_layers, dropout, c.rnn_impl)
    decoder = GRUDecoder(c.tgt_vocab_size, c.embed_size, c.hidden_size, c.num_layers, dropout, c.rnn_impl)
    model = EncoderDecoder(encoder, decoder)
    init_weights(model)
    return model


@register_model(
    "seq2seq",
    config=Seq2SeqConfig,
    task="fra-eng",
    chapter="mt",
    description="GRU encoder-decoder (the book's), padding-independent encoder state",
    # Measured: 26.4 test BLEU (beam 4) after 4 epochs, 17.6 minutes on one core (docs/results/mt.md).
    recipe={"epochs": 4, "batch_size": 256, "lr": 0.004, "optimizer": "adam", "schedule": "cosine",
            "warmup_steps": 200, "grad_clip": 1.0},
)
def build(config: Seq2SeqConfig) -> nn.Module:
    return build_seq2seq(config)
