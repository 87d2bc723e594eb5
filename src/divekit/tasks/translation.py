"""English-to-French translation (task ``fra-eng``): batches, masked loss, validation loss and BLEU.

Data: the 167,130 Tatoeba pairs split by English source into 157,130 / 5,000 / 5,000
(:mod:`divekit.data.fra_eng`). The vocabularies always come from the *whole* training split, cut to
the model config's ``src_vocab_size`` / ``tgt_vocab_size`` most frequent entries, so a model's
shape never depends on ``--limit``; ``--limit N`` trains on N pairs drawn at random (the file is
sorted by length, a prefix would hold only the shortest sentences).

One training batch (B pairs, S and T the longest source and target in the batch)::

    src (B, S), src_valid_len (B,), tgt (B, T), tgt_valid_len (B,)
    dec_input = <bos> tgt[:, :-1]                        teacher forcing
    loss      = mean over the N real target tokens of -log p(tgt | dec_input, src)

Batches are drawn with length bucketing (:mod:`divekit.data.buckets`): each epoch's permutation
is cut into pools of 50 batches, each pool sorted by length and cut into batches, and the batches
shuffled. Every batch is then trimmed to its own longest sentence, so the GRUs and the softmax run
over few pads. Bucketing changes which pairs share a batch, never what a pair contributes: the
encoder state ignores pads, the decoder is causal and the loss covers real tokens only.

Evaluation reports the masked loss and corpus BLEU (equal to sacreBLEU's, 13a tokens) of greedy
translations against the lower-cased, punctuation-spaced references. An ``<unk>`` in a
translation is scored as one wrong word (rendered ``UNK``, which no lower-cased reference holds).

Subwords (``subwords=N`` in the model config): a joint BPE vocabulary of N entries learned on the
whole training split (:mod:`divekit.data.subwords`) replaces the word vocabularies. Sentences are
segmented before indexing, so ``num_steps`` counts subword tokens; translations are joined back
into words before scoring, so BLEU is always computed on words against the original references.
The merges travel in the checkpoint's task state as plain lists.
"""

from __future__ import annotations

import functools
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit import seeding
from divekit.data.bpe import BPE, join_subwords
from divekit.data.buckets import Batch, BucketLoader
from divekit.data.fra_eng import (
    BOS,
    EOS,
    PAD,
    RESERVED,
    Pair,
    build_array,
    load_pairs,
    shift_right,
    split_pairs,
)
from divekit.data.subwords import learn_joint, segment_pairs, subword_vocab
from divekit.data.vocab import UNK, Vocab
from divekit.decode.beam import decode_batch
from divekit.errors import CheckpointError, DivekitError
from divekit.metrics.bleu import BleuScore, corpus_bleu
from divekit.nn.masked_loss import at_least_float32, masked_cross_entropy, select_real
from divekit.tasks import register_task
from divekit.train.checkpoint import load_checkpoint, load_model_state
from divekit.train.config import TrainConfig
from divekit.train.distributed import DistInfo
from divekit.train.task import StepOutput

SPLIT_SEED = 0  # the data split is fixed, so every run is scored on the same 5,000 test pairs
SPECIALS = (UNK, PAD, BOS)
BLEU_UNK = "UNK"  # an unknown word in a scored translation: one token no lower-cased reference holds


# --- data ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def real_splits(seed: int = SPLIT_SEED) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """The real ``(train, val, test)`` pairs, parsed once per process (about 3 s)."""
    return split_pairs(load_pairs(), seed=seed)


@functools.lru_cache(maxsize=2)
def real_subwords(size: int, seed: int = SPLIT_SEED) -> BPE:
    """The joint BPE of ``size`` entries learned on the real training split (seconds; once per process)."""
    return learn_joint(real_splits(seed)[0], size)


# side -> (the training pairs last counted, their full vocabulary): the tour builds this task four
# times from the one cached split, and counting its 140,000 pairs costs a second or two per side.
_COUNTED: dict[str, tuple[list, Vocab]] = {}


def training_vocab(train: list[Pair], size: int, *, side: str) -> Vocab:
    """:func:`make_vocab` of one side of ``train``, counted once per split object."""
    cached = _COUNTED.get(side)
    if cached is None or cached[0] is not train:
        words = [s for s, _ in train] if side == "source" else [t for _, t in train]
        cached = _COUNTED[side] = (train, Vocab(words, min_freq=2, reserved=RESERVED))
    return cut_vocab(cached[1], size, side=side)


def make_vocab(token_lists: Sequence[Sequence[str]], size: int, *, side: str) -> Vocab:
    """The training vocabulary (``min_freq=2``) cut to its ``size`` most frequent entries."""
    return cut_vocab(Vocab(token_lists, min_freq=2, reserved=RESERVED), size, side=side)


def cut_vocab(full: Vocab, size: int, *, side: str) -> Vocab:
    """``full`` cut to its ``size`` most frequent entries (its counts kept)."""
    if size > len(full):
        raise DivekitError(f"{side} vocabulary size {size} exceeds the {len(full)} tokens seen at least twice "
                           f"in the training split; use a size of at most {len(full)}")
    state = full.to_state()
    return Vocab.from_state({**state, "idx_to_token": state["idx_to_token"][:size]})


def subsample(pairs: list[Pair], limit: int | None, seed: int) -> list[Pair]:
    """``limit`` pairs drawn at random from ``seed``, in their original order (all of them if None)."""
    if limit is None or limit >= len(pairs):
        return pairs
    keep = sorted(random.Random(seeding.stream_seed(seed, "data")).sample(range(len(pairs)), limit))
    return [pairs[i] for i in keep]


def to_arrays(pairs: Sequence[Pair], src_vocab: Vocab, tgt_vocab: Vocab, num_steps: int) -> Batch:
    src, src_len = build_array([s for s, _ in pairs], src_vocab, num_steps)
    tgt, tgt_len = build_array([t for _, t in pairs], tgt_vocab, num_steps)
    return src, src_len, tgt, tgt_len


# --- rendering ----------------------------------------------------------------------------------


def render(tokens: Sequence[int], vocab: Vocab, *, unk: str = UNK, subwords: bool = False) -> str:
    """Indices -> text; special tokens other than ``<eos>`` are shown as ``unk``; subwords are joined."""
    words = [unk if w in SPECIALS else w for w in vocab.to_tokens(list(tokens))]
    return " ".join(join_subwords(words) if subwords else words)


class NoSpecials:
    """A step decoder that never emits ``<unk>``, ``<pad>`` or ``<bos>``.

    With a subword vocabulary every training character has a token, so these carry no text; the
    model's distribution is renormalised over the other tokens,
    ``log p'(v) = log p(v) - log sum_{u not banned} p(u)``.
    """

    def __init__(self, model: nn.Module, banned: Sequence[int]) -> None:
        self.model, self.banned = model, list(banned)

    def init_state(self, src: Tensor, src_valid_len: Tensor) -> Any:
        return self.model.init_state(src, src_valid_len)

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        log_probs, state = self.model.step(tokens, state)  # (B, V)
        index = torch.tensor(self.banned, device=log_probs.device)
        return torch.log_softmax(log_probs.index_fill(-1, index, -math.inf), dim=-1), state

    def reorder_state(self, state: Any, index: Tensor) -> Any:
        return self.model.reorder_state(state, index)


@dataclass(frozen=True)
class Translator:
    """A trained model with its vocabularies: sentences in, sentences out (used by the commands).

    With ``bpe`` set, words are segmented on the way in and joined on the way out, and the model is
    never allowed to emit a special token (:class:`NoSpecials`).
    """

    model: nn.Module
    src_vocab: Vocab
    tgt_vocab: Vocab
    num_steps: int
    bpe: BPE | None = None

    def model_tokens(self, words: Sequence[str]) -> list[str]:
        """What the model reads for a sentence of words: the words, or their subword tokens."""
        return self.bpe.segment(words) if self.bpe is not None else list(words)

    def encode(self, token_lists: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        return build_array([self.model_tokens(t) for t in token_lists], self.src_vocab, self.num_steps)

    @torch.no_grad()
    def translate_ids(self, src: Tensor, src_len: Tensor, *, beam_size: int = 1, alpha: float = 0.0,
                      batch_size: int = 500) -> list[tuple[int, ...]]:
        """Token indices of the best translation of each row; sources sorted by length for speed."""
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        order = torch.argsort(src_len, stable=True)
        out: list[tuple[int, ...]] = [()] * len(order)
        decoder = self.model
        if self.bpe is not None:
            decoder = NoSpecials(self.model, [self.tgt_vocab[t] for t in (UNK, PAD, BOS)])
        for chunk in order.split(batch_size):
            s, sl = src[chunk], src_len[chunk]
            s = s[:, : int(sl.max())].to(device)
            hyps = decode_batch(decoder, s, sl.to(device), bos=self.tgt_vocab[BOS], eos=self.tgt_vocab[EOS],
                                max_len=self.num_steps, beam_size=beam_size, alpha=alpha)
            for i, h in zip(chunk.tolist(), hyps):
                out[i] = h.tokens
        self.model.train(was_training)
        return out

    def translate(self, token_lists: Sequence[Sequence[str]], *, beam_size: int = 1, alpha: float = 0.0,
                  unk: str = UNK) -> list[str]:
        src, src_len = self.encode(token_lists)
        ids = self.translate_ids(src, src_len, beam_size=beam_size, alpha=alpha)
        return [render(t, self.tgt_vocab, unk=unk, subwords=self.bpe is not None) for t in ids]

    def bleu(self, pairs: Sequence[Pair], *, beam_size: int = 1, alpha: float = 0.0) -> tuple[BleuScore, list[str]]:
        """Corpus BLEU of translations of ``pairs`` against their references; and the translations."""
        hyps = self.translate([s for s, _ in pairs], beam_size=beam_size, alpha=alpha, unk=BLEU_UNK)
        return corpus_bleu(hyps, [" ".join(t) for _, t in pairs]), hyps


def load_translator(path: str | os.PathLike) -> tuple[Translator, dict[str, Any]]:
    """The model of a ``fra-eng`` checkpoint (eval mode) with the vocabularies stored beside it.

    Reads no dataset: the vocabularies travel in the checkpoint, as plain data.
    """
    from divekit.registry import get_model, model_config_from_dict

    ckpt = load_checkpoint(path)
    if ckpt.get("task") != "fra-eng":
        raise CheckpointError(f"'{path}' is a checkpoint of task '{ckpt.get('task')}', not a fra-eng translation model")
    spec = get_model(ckpt["model"])
    model = spec.build(model_config_from_dict(spec, ckpt["model_config"]))
    load_model_state(model, ckpt["model_state"], source=str(path))
    model.eval()
    state = ckpt["task_state"]
    bpe = BPE.from_state(state["bpe"]) if state.get("bpe") is not None else None
    translator = Translator(model, Vocab.from_state(state["src_vocab"]), Vocab.from_state(state["tgt_vocab"]),
                            int(state["num_steps"]), bpe)
    return translator, ckpt


# --- the task -----------------------------------------------------------------------------------


class Translation:
    """Masked cross-entropy training and loss/BLEU evaluation for an encoder-decoder.

    Args:
        splits: ``(train, val, test)`` token pairs (default: the real Tatoeba split of ``seed``).
        src_vocab_size, tgt_vocab_size: entries kept of the training vocabularies.
        num_steps: tokens per sentence, ``<eos>`` included; longer sentences are truncated.
        limit: train on this many pairs drawn at random (None: all).
        real_only_softmax: compute logits at real target positions only (False: the book's way,
            logits everywhere, then a masked loss; the same numbers, more arithmetic).
        bucket: length-bucketed batches (False: uniformly shuffled, as the book).
        subwords: N > 0 for one joint BPE vocabulary of N entries on both sides (the vocabulary
            sizes must then be N too); 0 for word vocabularies.
    """

    name = "fra-eng"
    monitor = "val_bleu"
    monitor_mode = "max"

    def __init__(self, *, src_vocab_size: int, tgt_vocab_size: int, num_steps: int, batch_size: int,
                 seed: int = 0, limit: int | None = None, label_smoothing: float = 0.0,
                 splits: tuple[list[Pair], list[Pair], list[Pair]] | None = None,
                 real_only_softmax: bool = True, bucket: bool = True, eval_batch_size: int = 500,
                 subwords: int = 0) -> None:
        train, val, test = splits if splits is not None else real_splits(SPLIT_SEED)
        self.subwords, self.bpe = subwords, None
        if subwords:
            if (src_vocab_size, tgt_vocab_size) != (subwords, subwords):
                raise DivekitError(f"subwords={subwords} needs both vocabulary sizes to be {subwords}, got "
                                   f"{src_vocab_size} and {tgt_vocab_size}")
            self.bpe = real_subwords(subwords) if splits is None else learn_joint(train, subwords)
            self.src_vocab = self.tgt_vocab = subword_vocab(self.bpe, segment_pairs(train, self.bpe))
        else:
            self.src_vocab = training_vocab(train, src_vocab_size, side="source")
            self.tgt_vocab = training_vocab(train, tgt_vocab_size, side="target")
        self.num_steps, self.batch_size, self.seed, self.limit = num_steps, batch_size, seed, limit
        self.label_smoothing, self.real_only_softmax, self.bucket = label_smoothing, real_only_softmax, bucket
        self.eval_batch_size = eval_batch_size
        self.pairs = {"train": subsample(train, limit, seed), "val": val, "test": test}
        self.arrays = {k: to_arrays(self.model_pairs(v), self.src_vocab, self.tgt_vocab, num_steps)
                       for k, v in self.pairs.items()}
        self.bos = self.tgt_vocab[BOS]

    def model_pairs(self, pairs: Sequence[Pair]) -> Sequence[Pair]:
        """The pairs as the model reads them: words, or subword tokens."""
        return segment_pairs(pairs, self.bpe) if self.bpe is not None else pairs

    def train_loader(self, dist: DistInfo) -> BucketLoader:
        return BucketLoader(self.arrays["train"], batch_size=self.batch_size, seed=self.seed, bucket=self.bucket,
                            rank=dist.rank, world_size=dist.world_size)

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        pass

    def step(self, model: nn.Module, batch: Batch) -> StepOutput:
        src, src_len, tgt, tgt_len = batch
        dec_input = shift_right(tgt, self.bos)
        labels = select_real(tgt, tgt_len)  # (N,)
        if self.real_only_softmax:
            logits = at_least_float32(model(src, src_len, dec_input, tgt_len))  # (N, V); fp32: 4x faster argmax
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        else:
            full = model(src, src_len, dec_input)  # (B, T, V), padded positions included
            loss = masked_cross_entropy(full, tgt, tgt_len, label_smoothing=self.label_smoothing)
            logits = select_real(full, tgt_len)
        correct = (logits.argmax(-1) == labels).sum().item()
        return StepOutput(loss=loss, count=labels.numel(), correct=correct)

    @torch.no_grad()
    def loss(self, model: nn.Module, split: str) -> float:
        """Mean cross-entropy per real target token over a split (teacher forcing, eval mode)."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        total, count = 0.0, 0
        loader = BucketLoader(self.arrays[split], batch_size=self.eval_batch_size, bucket=True)
        for batch in loader:
            src, src_len, tgt, tgt_len = (t.to(device) for t in batch)
            logits = model(src, src_len, shift_right(tgt, self.bos), tgt_len)  # (N, V)
            labels = select_real(tgt, tgt_len)
            total += F.cross_entropy(at_least_float32(logits), labels, reduction="sum").item()
            count += labels.numel()
        model.train(was_training)
        return total / count

    def translator(self, model: nn.Module) -> Translator:
        return Translator(model, self.src_vocab, self.tgt_vocab, self.num_steps, self.bpe)

    def bleu(self, model: nn.Module, split: str, *, beam_size: int = 1, alpha: float = 0.0,
             limit: int | None = None) -> tuple[BleuScore, list[str]]:
        """Corpus BLEU of the split's first ``limit`` pairs (all if None) and the translations."""
        pairs = self.pairs[split][:limit]
        return self.translator(model).bleu(pairs, beam_size=beam_size, alpha=alpha)

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        score, _ = self.bleu(model, split)
        return {"loss": self.loss(model, split), "bleu": score.score}

    def state(self) -> dict[str, Any]:
        return {
            "src_vocab": self.src_vocab.to_state(),
            "tgt_vocab": self.tgt_vocab.to_state(),
            "num_steps": self.num_steps,
            "split_seed": SPLIT_SEED,
            "seed": self.seed,
            "limit": self.limit,
            "subwords": self.subwords,
            "bpe": self.bpe.to_state() if self.bpe is not None else None,
        }

    def example_input(self, batch_size: int = 2) -> Tensor:
        return self.arrays["val"][0][:batch_size]


@register_task("fra-eng")
def make(model_config: Any, train_config: TrainConfig, *, limit: int | None = None) -> Translation:
    return Translation(
        src_vocab_size=model_config.src_vocab_size,
        tgt_vocab_size=model_config.tgt_vocab_size,
        num_steps=model_config.num_steps,
        batch_size=train_config.batch_size,
        seed=train_config.seed,
        limit=limit,
        label_smoothing=train_config.label_smoothing,
        subwords=getattr(model_config, "subwords", 0),
    )
