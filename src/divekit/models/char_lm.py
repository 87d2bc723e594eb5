"""Recurrent character language models (RNN, GRU, LSTM; shallow or deep; scratch or torch layers).

Symbols: B batch, T steps, V vocabulary, E embedding width, H hidden units, L layers, D directions.

    tokens (B, T) -> embedding (B, T, E) or one-hot (B, T, V)
                  -> dropout -> recurrent stack (B, T, D*H) -> dropout -> linear head (B, T, V)

``forward(tokens, state)`` returns the logits and the final state, ``(L*D, B, H)`` for RNN and GRU
or a pair of them for LSTM, so a caller can carry the state to the next window of the same text
(truncated backpropagation through time, after :func:`divekit.nn.state.detach_state`). The recurrent
stack comes from :func:`divekit.nn.rnn.make_rnn`; ``impl="scratch"`` and ``impl="torch"`` share
parameter names, so their checkpoints are interchangeable. A bidirectional stack is allowed only to
show why it cannot be a language model: its backward direction has read the very token it is asked
to predict.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit.errors import ShapeError
from divekit.nn.rnn import make_rnn
from divekit.nn.state import RecurrentState
from divekit.registry import register_model


@dataclass(frozen=True)
class CharLMConfig:
    kind: str = "gru"  # recurrent cell: rnn | gru | lstm
    impl: str = "scratch"  # scratch: divekit.nn.rnn; torch: nn.RNN/nn.GRU/nn.LSTM (same parameters)
    vocab_size: int = 28  # the Time Machine's character vocabulary (<unk>, space, a-z)
    hidden: int = 256  # hidden units per layer and direction
    layers: int = 1  # stacked recurrent layers; 2+ is the "deep" model
    embedding: int = 32  # input embedding width; 0 feeds one-hot vectors as the book does
    dropout: float = 0.0  # on the inputs, between layers and before the head; regularises bigger models
    locked_dropout: bool = False  # one input/head dropout mask per sequence, shared by all steps (variational)
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden weights, one mask per forward pass
    bidirectional: bool = False  # only for demonstrating leakage: a BiRNN sees the target it predicts
    num_steps: int = 35  # window length for truncated BPTT (read by the timemachine task)
    sequential: bool = True  # sequential partitioning with carried state (False: random windows, fresh state)

    def __post_init__(self) -> None:
        if self.kind not in ("rnn", "gru", "lstm"):
            raise ValueError(f"kind must be rnn, gru or lstm, got {self.kind!r}")
        if self.impl not in ("scratch", "torch"):
            raise ValueError(f"impl must be scratch or torch, got {self.impl!r}")
        if min(self.vocab_size, self.hidden, self.layers, self.num_steps) <= 0 or self.embedding < 0:
            raise ValueError("vocab_size, hidden, layers and num_steps must be positive, embedding non-negative")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not 0.0 <= self.weight_drop < 1.0:
            raise ValueError(f"weight_drop must lie in [0, 1), got {self.weight_drop}")


class CharLM(nn.Module):
    """Next-token logits from a recurrent stack over embedded (or one-hot) tokens; see the module docstring."""

    def __init__(self, config: CharLMConfig) -> None:
        super().__init__()
        self.config = config
        width = config.embedding or config.vocab_size
        self.embed = nn.Embedding(config.vocab_size, config.embedding) if config.embedding else None
        self.drop = nn.Dropout(config.dropout)
        # Dropout between layers only exists with 2+ layers; passing it to one layer would only warn.
        between = config.dropout if config.layers > 1 else 0.0
        self.rnn = make_rnn(config.kind, config.impl, width, config.hidden, num_layers=config.layers,
                            bidirectional=config.bidirectional, dropout=between)
        directions = 2 if config.bidirectional else 1
        self.head = nn.Linear(directions * config.hidden, config.vocab_size)

    def inputs(self, tokens: Tensor) -> Tensor:
        """Token ids ``(B, T)`` -> input vectors ``(B, T, E)`` or one-hot ``(B, T, V)``."""
        if self.embed is not None:
            return self.embed(tokens)
        return F.one_hot(tokens, self.config.vocab_size).to(self.head.weight.dtype)

    def forward(self, tokens: Tensor, state: RecurrentState | None = None) -> tuple[Tensor, RecurrentState]:
        """``tokens (B, T)`` and an optional carried state -> logits ``(B, T, V)`` and the final state."""
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ShapeError(f"tokens must be a LongTensor of shape (B, T), got {tuple(tokens.shape)} {tokens.dtype}")
        outputs, state = self._recur(self._dropout(self.inputs(tokens)), state)  # (B, T, D*H)
        return self.head(self._dropout(outputs)), state

    def _dropout(self, x: Tensor) -> Tensor:
        """Dropout on ``(B, T, F)``: a fresh mask per step, or with ``locked_dropout`` one per sequence."""
        if not (self.config.locked_dropout and self.training and self.config.dropout):
            return self.drop(x)
        keep = 1.0 - self.config.dropout
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(keep) / keep  # (B, 1, F): broadcast over T
        return x * mask

    def _recur(self, x: Tensor, state: RecurrentState | None) -> tuple[Tensor, RecurrentState]:
        """The recurrent stack, with DropConnect (Wan et al., 2013; AWD-LSTM) on ``weight_hh`` when training.

        Dropping recurrent *weights* rather than activations regularises the recurrence without
        disturbing its memory from step to step: one mask serves all steps of the batch.
        """
        if not (self.training and self.config.weight_drop):
            return self.rnn(x, state)
        dropped = {name: F.dropout(p, self.config.weight_drop)
                   for name, p in self.rnn.named_parameters() if name.startswith("weight_hh")}
        return torch.func.functional_call(self.rnn, dropped, (x, state), strict=False)


def build(config: CharLMConfig) -> CharLM:
    return CharLM(config)


# Adam with clipping: the recipe that reaches low held-out perplexity on this corpus in minutes.
_RECIPE = {"epochs": 10, "batch_size": 32, "lr": 2e-3, "optimizer": "adam", "grad_clip": 1.0}


@dataclass(frozen=True)
class RNNLMConfig(CharLMConfig):
    kind: str = "rnn"  # tanh RNN cell


@dataclass(frozen=True)
class GRULMConfig(CharLMConfig):
    kind: str = "gru"  # gated recurrent unit


@dataclass(frozen=True)
class LSTMLMConfig(CharLMConfig):
    kind: str = "lstm"  # long short-term memory cell


@dataclass(frozen=True)
class DeepLSTMLMConfig(CharLMConfig):
    kind: str = "lstm"  # long short-term memory cell
    impl: str = "torch"  # nn.LSTM: the timed recipe's speed (impl="scratch" trains the same model)
    layers: int = 2  # two stacked layers
    hidden: int = 512  # wider: the deep model is the one meant to beat the n-gram baselines clearly
    embedding: int = 64
    dropout: float = 0.55  # the wide model memorises the 139k-character block without strong dropout
    num_steps: int = 64  # longer windows: fewer cuts of the gradient, same cost per character


# About ten minutes on one core of the 2-core CPU (benchmarks/char_lm.py): the cosine decay to zero
# is worth more at the end than the same time spent at a constant rate.
_DEEP_RECIPE = {"epochs": 30, "batch_size": 32, "lr": 3e-3, "optimizer": "adamw", "weight_decay": 0.1,
                "schedule": "cosine", "warmup_steps": 100, "grad_clip": 1.0}


for _name, _cls, _what, _recipe in (
    ("rnn-lm", RNNLMConfig, "tanh RNN", _RECIPE),
    ("gru-lm", GRULMConfig, "GRU", _RECIPE),
    ("lstm-lm", LSTMLMConfig, "LSTM", _RECIPE),
    ("deep-lstm-lm", DeepLSTMLMConfig, "2-layer LSTM (hidden 512, dropout 0.55)", _DEEP_RECIPE),
):
    register_model(_name, config=_cls, task="timemachine", chapter="rnn",
                   description=f"{_what} character language model on The Time Machine",
                   recipe=dict(_recipe))(build)
