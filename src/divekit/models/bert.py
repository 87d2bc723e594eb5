"""BERT: a Transformer encoder pretrained by masked language modelling, and a classification head.

Symbols: B batch, T tokens, D model width, H heads, F feed-forward width, L blocks, V vocabulary,
N masked positions in a batch, C classes.

    x = Dropout(LayerNorm(TokEmbed(tokens) + SegEmbed(segments) + P[0:T]))      (B, T, D)
    x = EncoderBlock_l(x, padding hidden), l = 1..L                             (B, T, D)   post-norm, as BERT
    masked LM:  h = LayerNorm(relu(x W_1 + b_1));  logits = h TokEmbed^T + b     (N, V)      at masked positions
    pooled:     tanh(x[:, 0] W_p + b_p)                                         (B, D)      the <cls> position
    next sentence (nsp=True): pooled W_n + b_n                                  (B, 2)      is B A's successor?

The encoder blocks and the learned positional table are the tested blocks of ``divekit.nn``; the
padding is hidden from every attention through ``valid_lens``, so padded positions change no real
token's output. An input is ``<cls> A <sep> B <sep>`` with segment 0 on ``<cls> A <sep>`` and 1 on
``B <sep>``; see :mod:`divekit.tasks.masked_lm`. :class:`BERTClassifier` puts a linear layer on the
pooled ``<cls>`` vector for fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from divekit.errors import DivekitError, ShapeError
from divekit.nn.positional import LearnedPositionalEncoding
from divekit.nn.transformer_blocks import EncoderBlock
from divekit.registry import register_model

SEGMENTS = 2  # sentence A and sentence B


@dataclass(frozen=True)
class BERTConfig:
    vocab_size: int = 8_000  # most frequent training words (9,673 are seen twice or more), specials included
    max_len: int = 64  # positions with a learned embedding
    d_model: int = 128  # width of every position's vector
    num_heads: int = 4  # D/H = 32 dimensions per head
    layers: int = 2  # encoder blocks: enough to show pretraining on a CPU
    ffn_hidden: int = 256  # feed-forward width
    dropout: float = 0.1  # on embeddings, attention weights and sublayer outputs
    num_steps: int = 48  # tokens per example, <cls> and both <sep> included (read by the task)
    mask_rate: float = 0.15  # fraction of ordinary tokens chosen as masked-LM targets (read by the task)
    nsp: bool = False  # also next-sentence prediction: B is A's successor or a random piece (the book's BERT)

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.max_len, self.d_model, self.num_heads, self.layers, self.ffn_hidden) <= 0:
            raise DivekitError("vocab_size, max_len, d_model, num_heads, layers and ffn_hidden must be positive")
        if self.d_model % self.num_heads:
            raise DivekitError(f"d_model D={self.d_model} must be divisible by num_heads H={self.num_heads}")
        if not 5 <= self.num_steps <= self.max_len:
            raise DivekitError(f"num_steps must lie in [5, max_len={self.max_len}] (<cls> A <sep> B <sep>), "
                               f"got {self.num_steps}")
        if not 0.0 <= self.dropout < 1.0:
            raise DivekitError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not 0.0 < self.mask_rate < 1.0:
            raise DivekitError(f"mask_rate must lie in (0, 1), got {self.mask_rate}")


def check_inputs(tokens: Tensor, segments: Tensor | None, valid_lens: Tensor | None, vocab_size: int) -> None:
    """Refuse inputs that are not ``tokens (B, T)``, ``segments (B, T)`` in {0, 1}, ``valid_lens (B,)`` in [1, T]."""
    if tokens.dim() != 2 or tokens.dtype != torch.long:
        raise ShapeError(f"tokens must be a LongTensor of shape (B, T), got {tuple(tokens.shape)} {tokens.dtype}")
    if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < vocab_size:
        raise ShapeError(f"token ids must lie in [0, V={vocab_size})")
    if segments is not None and (segments.shape != tokens.shape or not bool(((segments == 0) | (segments == 1)).all())):
        raise ShapeError(f"segments must be 0/1 of the tokens' shape (B, T)={tuple(tokens.shape)}, "
                         f"got {tuple(segments.shape)}")
    if valid_lens is not None and (valid_lens.shape != tokens.shape[:1] or bool((valid_lens < 1).any())
                                   or bool((valid_lens > tokens.shape[1]).any())):
        raise ShapeError(f"valid_lens must be (B={tokens.shape[0]},) with values in [1, T={tokens.shape[1]}]")


class BERTEncoder(nn.Module):
    """Token, segment and position embeddings, then ``L`` post-norm :class:`EncoderBlock`: ``(B, T) -> (B, T, D)``."""

    def __init__(self, config: BERTConfig) -> None:
        super().__init__()
        self.config = config
        self.token = nn.Embedding(config.vocab_size, config.d_model)
        self.segment = nn.Embedding(SEGMENTS, config.d_model)
        self.positional = LearnedPositionalEncoding(config.d_model, config.max_len)
        self.norm = nn.LayerNorm(config.d_model)  # the three embeddings' sum, normalised as in BERT
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(config.d_model, config.num_heads, config.ffn_hidden, config.dropout)
                                    for _ in range(config.layers))

    def forward(self, tokens: Tensor, segments: Tensor | None = None, valid_lens: Tensor | None = None) -> Tensor:
        """``tokens (B, T)``, ``segments (B, T)`` (default all 0), ``valid_lens (B,)`` (default T) -> ``(B, T, D)``."""
        return self.hidden_states(tokens, segments, valid_lens)[-1]

    def hidden_states(self, tokens: Tensor, segments: Tensor | None = None,
                      valid_lens: Tensor | None = None) -> list[Tensor]:
        """The embedding layer's output and every block's: ``L + 1`` tensors ``(B, T, D)`` (an ELMo-style
        mix weighs them; the last is :meth:`forward`'s output)."""
        check_inputs(tokens, segments, valid_lens, self.config.vocab_size)
        if segments is None:
            segments = torch.zeros_like(tokens)
        x = self.positional(self.token(tokens) + self.segment(segments))  # (B, T, D)
        states = [self.dropout(self.norm(x))]
        for block in self.blocks:
            states.append(block(states[-1], valid_lens=valid_lens))  # keys past valid_lens hidden from every query
        return states


class MaskLMHead(nn.Module):
    """``LayerNorm(relu(h W_1 + b_1)) E^T + b``: vectors ``(N, D)`` -> word logits ``(N, V)``.

    ``E`` is the encoder's token embedding, passed in at call time: the output layer *is* the
    input embedding, one tensor, trained by both ends.
    """

    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, h: Tensor, embedding: Tensor) -> Tensor:
        return nn.functional.linear(self.norm(torch.relu(self.dense(h))), embedding, self.bias)


class BERT(nn.Module):
    """The encoder with the masked-LM head and the ``<cls>`` pooler; see the module docstring."""

    def __init__(self, config: BERTConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = BERTEncoder(config)
        self.mlm = MaskLMHead(config.d_model, config.vocab_size)
        self.pooler = nn.Sequential(nn.Linear(config.d_model, config.d_model), nn.Tanh())
        # Is B the piece that follows A? A linear layer on the pooled <cls> vector, pretraining only.
        self.nsp_head = nn.Linear(config.d_model, 2) if config.nsp else None
        for module in self.modules():  # BERT's initialisation: N(0, 0.02) weights, zero biases
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens: Tensor, segments: Tensor | None = None, valid_lens: Tensor | None = None,
                masked: Tensor | None = None) -> Tensor:
        """Masked-LM logits: ``(B, T, V)``, or ``(N, V)`` at the ``N`` True positions of ``masked (B, T)`` only.

        Scoring only the masked positions skips the ``V``-wide output for the other 85% of tokens.
        """
        hidden = self.encoder(tokens, segments, valid_lens)  # (B, T, D)
        if masked is None:
            return self.mlm(hidden, self.encoder.token.weight)
        if masked.shape != tokens.shape or masked.dtype != torch.bool:
            raise ShapeError(f"masked must be a bool tensor of the tokens' shape {tuple(tokens.shape)}")
        return self.mlm(hidden[masked], self.encoder.token.weight)  # (N, V)

    def pretraining_logits(self, tokens: Tensor, segments: Tensor, valid_lens: Tensor,
                           masked: Tensor) -> tuple[Tensor, Tensor]:
        """Both pretraining outputs from one encoder pass: masked-LM logits ``(N, V)`` and
        next-sentence logits ``(B, 2)`` (needs ``nsp=True``)."""
        if self.nsp_head is None:
            raise DivekitError("this BERT has no next-sentence head: build it with nsp=True")
        if masked.shape != tokens.shape or masked.dtype != torch.bool:
            raise ShapeError(f"masked must be a bool tensor of the tokens' shape {tuple(tokens.shape)}")
        hidden = self.encoder(tokens, segments, valid_lens)  # (B, T, D)
        return self.mlm(hidden[masked], self.encoder.token.weight), self.nsp_head(self.pooler(hidden[:, 0]))

    def pooled(self, tokens: Tensor, segments: Tensor | None = None, valid_lens: Tensor | None = None) -> Tensor:
        """The ``<cls>`` summary ``tanh(x[:, 0] W_p + b_p)``, ``(B, D)``."""
        return self.pooler(self.encoder(tokens, segments, valid_lens)[:, 0])


class BERTClassifier(nn.Module):
    """A pretrained :class:`BERT` with a linear layer on its pooled ``<cls>`` vector: ``(B, T)`` -> ``(B, C)``."""

    def __init__(self, bert: BERT, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        if num_classes < 2:
            raise DivekitError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.bert = bert
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(bert.config.d_model, num_classes)

    def forward(self, tokens: Tensor, segments: Tensor | None = None, valid_lens: Tensor | None = None) -> Tensor:
        return self.out(self.dropout(self.bert.pooled(tokens, segments, valid_lens)))  # (B, C)


def build(config: BERTConfig) -> BERT:
    return BERT(config)


# AdamW with warm-up and cosine decay; clipping guards the post-norm stack's early steps. An epoch
# is 55,731 examples, 436 batches: 28 s per 79 batches (bf16, one thread, CPU shared), so four
# epochs take about ten minutes.
_RECIPE = {"epochs": 4, "batch_size": 128, "lr": 1e-3, "optimizer": "adamw", "weight_decay": 0.01,
           "schedule": "cosine", "warmup_steps": 200, "grad_clip": 1.0}

register_model("bert", config=BERTConfig, task="masked-lm", chapter="attention",
               description="BERT encoder pretrained by masked language modelling on English text",
               recipe=dict(_RECIPE))(build)


@dataclass(frozen=True)
class BERTQuestionConfig(BERTConfig):
    pretrained: str = ""  # a `divekit train bert` checkpoint whose weights start the encoder; "" = random
    num_classes: int = 2  # statement or question
    num_steps: int = 32  # one sentence, <cls> and <sep> included (read by the task)


def build_question(config: BERTQuestionConfig) -> BERTClassifier:
    """A classifier on a BERT that starts from ``config.pretrained`` (sizes must match) or from scratch."""
    if config.nsp:
        raise DivekitError("nsp is a pretraining option of bert: bert-question fine-tunes without it")
    bert = BERT(config)
    if config.pretrained:
        from divekit.train.checkpoint import load_checkpoint, load_model_state

        ckpt = load_checkpoint(config.pretrained, expect_model="bert")
        sizes = ("vocab_size", "max_len", "d_model", "num_heads", "layers", "ffn_hidden")
        differ = [f"{k}={ckpt['model_config'][k]}" for k in sizes if ckpt["model_config"][k] != getattr(config, k)]
        if differ:
            raise DivekitError(f"the pretrained model has {', '.join(differ)}; pass the same with -o")
        # The next-sentence head, if the encoder was pretrained with one, has no use in fine-tuning.
        state = {k: v for k, v in ckpt["model_state"].items() if not k.startswith("nsp_head.")}
        load_model_state(bert, state, source=config.pretrained)
    return BERTClassifier(bert, config.num_classes, config.dropout)


# Ten epochs with a short warm-up: with a budget of 1,000 labels an epoch is only 16 batches, and
# the schedule must still reach its peak and decay.
register_model("bert-question", config=BERTQuestionConfig, task="eng-question", chapter="attention",
               description="BERT fine-tuned to tell an English question from a statement, final punctuation removed",
               recipe={"epochs": 10, "batch_size": 64, "lr": 3e-4, "optimizer": "adamw", "weight_decay": 0.01,
                       "schedule": "cosine", "warmup_steps": 20, "grad_clip": 1.0})(build_question)
