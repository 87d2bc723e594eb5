"""Masked language modelling on English text (task ``masked-lm``), the pretraining of BERT.

Text: the English side of the fra-eng *training* split (distinct sentences; the split is grouped by
English source, so no validation or test sentence is trained on) and The Time Machine's training
block cut into 16-word pieces (letters only: the book's cleaned text keeps no punctuation).
Validation and test take the same two sources' held-out parts. The vocabulary holds the
``vocab_size`` most frequent training words seen at least twice.

An example joins two consecutive pieces A, B as ``<cls> A <sep> B <sep>`` (segments 0 then 1),
longer piece cut first until ``num_steps`` tokens fit. Masking (:func:`mask_tokens`, Devlin et
al. 2019): each ordinary token is chosen with probability ``mask_rate``; a chosen token becomes
``<mask>`` with probability 0.8, a random ordinary word with 0.1, and stays as it is with 0.1.
The special tokens and ``<unk>`` are never chosen. Training draws a fresh masking for every batch
(a random stream of its own, seeded from the seed and epoch); evaluation uses one fixed masking per split, so its
figures compare across epochs. With ``nsp=True`` (the book's BERT; RoBERTa found it does not help),
B is A's successor in half the examples and any other piece of the same split in the rest, drawn
once per split, and a next-sentence loss joins the masked-LM loss. Metrics: mean cross-entropy over
the chosen tokens (``loss``), ``perplexity``, and ``accuracy``, the fraction of chosen tokens
predicted exactly; with NSP also ``nsp_accuracy``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit import seeding
from divekit.data.timemachine import IGNORE_INDEX
from divekit.data.vocab import Vocab
from divekit.errors import CheckpointError, DataError, DivekitError
from divekit.tasks import register_task
from divekit.train.checkpoint import load_checkpoint, load_model_state
from divekit.train.config import TrainConfig
from divekit.train.distributed import DistInfo
from divekit.train.task import StepOutput

TASK_NAME = "masked-lm"
PAD, CLS, SEP, MASK = "<pad>", "<cls>", "<sep>", "<mask>"
RESERVED = (PAD, CLS, SEP, MASK)
FIRST_WORD = 1 + len(RESERVED)  # index of the first ordinary word: <unk> is 0, the reserved follow
PIECE_WORDS = 16  # The Time Machine's cleaned text has no sentence ends: fixed-length pieces instead
EVAL_SEED = 12345  # the fixed masking of the validation and test examples: the same every evaluation
Examples = tuple[Tensor, ...]  # tokens (n, T), segments (n, T), valid_lens (n,)[, is_next (n,) with NSP]
Batch = tuple[Tensor, ...]  # inputs (B, T), segments (B, T), valid_lens (B,), labels (B, T)[, is_next (B,)]


# --- masking ------------------------------------------------------------------------------------


def mask_tokens(tokens: Tensor, maskable: Tensor, *, mask_id: int, first_word: int, vocab_size: int,
                rate: float = 0.15, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """BERT's corruption of ``tokens (B, T)``: returns ``(inputs (B, T), labels (B, T))``.

    Each position where ``maskable`` is True is chosen with probability ``rate``; ``labels`` holds the
    original token there and ``IGNORE_INDEX`` elsewhere. A chosen input becomes ``mask_id`` (p 0.8),
    a uniform word from ``[first_word, vocab_size)`` (p 0.1), or stays (p 0.1).
    """
    if tokens.shape != maskable.shape or maskable.dtype != torch.bool:
        raise ValueError(f"maskable must be a bool tensor of the tokens' shape {tuple(tokens.shape)}")
    draw = torch.rand(tokens.shape, generator=generator)  # one uniform per position decides all three
    chosen = maskable & (draw < rate)
    # Reusing the draw: given chosen, draw / rate is uniform on [0, 1), split 0.8 / 0.1 / 0.1.
    fraction = draw / rate
    to_mask = chosen & (fraction < 0.8)
    to_random = chosen & (fraction >= 0.8) & (fraction < 0.9)
    random_words = torch.randint(first_word, vocab_size, tokens.shape, generator=generator)
    inputs = torch.where(to_mask, torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(to_random, random_words, inputs)
    labels = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE_INDEX))
    return inputs, labels


# --- examples -----------------------------------------------------------------------------------


def timemachine_pieces(text: str, words: int = PIECE_WORDS) -> list[list[str]]:
    """A cleaned text's words in consecutive pieces of ``words`` (the last one shorter)."""
    tokens = text.split()
    return [tokens[i: i + words] for i in range(0, len(tokens), words)]


def distinct(sentences: Sequence[Sequence[str]]) -> list[list[str]]:
    """The sentences without repeats, in first-appearance order (a source has several translations)."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for s in sentences:
        if tuple(s) not in seen:
            seen.add(tuple(s))
            out.append(list(s))
    return out


def make_vocab(pieces: Sequence[Sequence[str]], size: int) -> Vocab:
    """The training words seen at least twice, cut to the ``size`` most frequent (specials included)."""
    full = Vocab(pieces, min_freq=2, reserved=RESERVED)
    if not FIRST_WORD < size <= len(full):
        raise DivekitError(f"vocab_size must lie in ({FIRST_WORD}, {len(full)}] for this text, got {size}")
    state = full.to_state()
    return Vocab.from_state({**state, "idx_to_token": state["idx_to_token"][:size]})


def pair_tokens(a: list[str], b: list[str], num_steps: int) -> tuple[list[str], list[int]]:
    """``<cls> a <sep> b <sep>`` and its segments, the longer piece cut first until it fits ``num_steps``."""
    a, b = list(a), list(b)
    while len(a) + len(b) + 3 > num_steps:
        (a if len(a) >= len(b) else b).pop()
    tokens = [CLS, *a, SEP, *b, SEP]
    return tokens, [0] * (len(a) + 2) + [1] * (len(b) + 1)


def next_pieces(n_pieces: int, seed: int) -> tuple[list[int], list[int]]:
    """For next-sentence prediction: the piece that follows piece ``2k`` in example ``k``, and whether
    it is the true successor ``2k+1`` (1) or, with probability 1/2, any other piece (0), drawn by ``seed``."""
    rng = random.Random(seed)
    followers, is_next = [], []
    for k in range(n_pieces // 2):
        if rng.random() < 0.5:
            followers.append(2 * k + 1)
            is_next.append(1)
        else:
            other = rng.randrange(n_pieces - 1)
            followers.append(other + (other >= 2 * k + 1))  # every piece but the true successor
            is_next.append(0)
    return followers, is_next


def build_examples(pieces: Sequence[Sequence[str]], vocab: Vocab, num_steps: int, *,
                   nsp_seed: int | None = None) -> Examples:
    """Pieces ``(2k, 2k+1)`` as padded examples: tokens and segments ``(n, num_steps)``, valid lengths ``(n,)``.

    With ``nsp_seed``, B is drawn by :func:`next_pieces` and a fourth tensor ``is_next (n,)`` follows.
    """
    n = len(pieces) // 2
    if n == 0:
        raise DataError("masked-LM examples need at least two pieces of text")
    followers, is_next = next_pieces(len(pieces), nsp_seed) if nsp_seed is not None else (
        [2 * k + 1 for k in range(n)], None)
    tokens = torch.full((n, num_steps), vocab[PAD], dtype=torch.long)
    segments = torch.zeros(n, num_steps, dtype=torch.long)
    valid = torch.zeros(n, dtype=torch.long)
    for i in range(n):
        words, segs = pair_tokens(pieces[2 * i], pieces[followers[i]], num_steps)
        tokens[i, : len(words)] = torch.tensor(vocab[words])
        segments[i, : len(segs)] = torch.tensor(segs)
        valid[i] = len(words)
    return (tokens, segments, valid) if is_next is None else (tokens, segments, valid, torch.tensor(is_next))


def maskable_positions(tokens: Tensor) -> Tensor:
    """True at ordinary words: never at ``<unk>``, ``<pad>``, ``<cls>``, ``<sep>`` or ``<mask>``."""
    return tokens >= FIRST_WORD


def real_pieces() -> dict[str, list[list[str]]]:
    """Training, validation and test pieces of English from fra-eng and The Time Machine (see the module)."""
    from divekit.data.timemachine import load_lm_data
    from divekit.tasks.translation import real_splits

    splits = dict(zip(("train", "val", "test"), real_splits()))
    book = load_lm_data("char")  # its contiguous 80/10/10 character blocks, as the character LMs use
    pieces = {}
    for split, pairs in splits.items():
        block = "".join(book.vocab.to_tokens(getattr(book, split)))
        pieces[split] = distinct([src for src, _ in pairs]) + timemachine_pieces(block)
    return pieces


# --- the task -----------------------------------------------------------------------------------


class ExampleBatches:
    """Minibatches of example rows ``(tokens (n, T), segments (n, T), valid_lens (n,), *more)``.

    Shuffled by a generator seeded from ``(seed, epoch)`` (so a resumed run sees the same batches)
    or kept in order; every two-dimensional tensor is trimmed to the batch's longest example.
    ``batch_size`` is the global batch: under data parallelism each rank takes its contiguous share.
    """

    def __init__(self, arrays: tuple[Tensor, ...], batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1) -> None:
        self.arrays, self.batch_size, self.seed, self.shuffle = arrays, batch_size, seed, shuffle
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.arrays[0].shape[0] // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        n = self.arrays[0].shape[0]
        g = seeding.generator(self.seed, "order", self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        for idx in order.split(self.batch_size):
            if idx.numel() < self.world_size:  # too small to give every rank a row: all ranks skip it
                continue
            idx = idx.tensor_split(self.world_size)[self.rank]
            rows = [t[idx] for t in self.arrays]
            width = int(rows[2].max())
            yield tuple(r[:, :width] if r.dim() == 2 else r for r in rows)


class MaskedBatches(ExampleBatches):
    """:class:`ExampleBatches` of ``(inputs, segments, valid_lens, labels[, is_next])``, masked afresh by
    :func:`mask_tokens`."""

    def __init__(self, examples: Examples, vocab_size: int, mask_id: int, *, rate: float, **batching) -> None:
        super().__init__(examples, **batching)
        self.vocab_size, self.mask_id, self.rate = vocab_size, mask_id, rate

    def __iter__(self) -> Iterator[Batch]:
        # The masking draws: the run's augmentation stream, one per (epoch, rank), so shares are masked
        # independently and a resumed run masks exactly as an uninterrupted one.
        g = seeding.generator(self.seed, "augment", self.epoch, self.rank)
        for tokens, segments, valid, *is_next in super().__iter__():
            inputs, labels = mask_tokens(tokens, maskable_positions(tokens), mask_id=self.mask_id,
                                         first_word=FIRST_WORD, vocab_size=self.vocab_size, rate=self.rate,
                                         generator=g)
            yield inputs, segments, valid, labels, *is_next


class MaskedLMTask:
    """Masked-LM cross-entropy over chosen tokens; loss, perplexity and accuracy on held-out English.

    Args:
        pieces: ``{"train", "val", "test"}`` lists of word pieces (default: the real text).
        vocab_size, num_steps, mask_rate: as in :class:`divekit.models.bert.BERTConfig`.
        limit: train on ``limit`` examples drawn at random from ``seed`` (fra-eng is sorted by length,
            so a prefix would hold only the shortest sentences).
    """

    name = TASK_NAME
    monitor = "val_loss"
    monitor_mode = "min"

    def __init__(self, *, vocab_size: int, num_steps: int, batch_size: int, mask_rate: float = 0.15,
                 seed: int = 0, limit: int | None = None, pieces: dict[str, list[list[str]]] | None = None,
                 eval_batch_size: int = 256, nsp: bool = False) -> None:
        pieces = pieces if pieces is not None else real_pieces()
        self.vocab = make_vocab(pieces["train"], vocab_size)
        self.num_steps, self.batch_size, self.mask_rate, self.nsp = num_steps, batch_size, mask_rate, nsp
        self.seed, self.limit, self.eval_batch_size = seed, limit, eval_batch_size
        # With NSP, each split's random followers are drawn once, from the seed (held-out splits: a fixed one).
        nsp_seeds = {"train": seeding.stream_seed(seed, "data"), "val": EVAL_SEED, "test": EVAL_SEED + 1}
        self.examples = {split: build_examples(p, self.vocab, num_steps, nsp_seed=nsp_seeds[split] if nsp else None)
                         for split, p in pieces.items()}
        if limit is not None and limit < self.examples["train"][0].shape[0]:
            g = seeding.generator(seed, "data")
            keep = torch.randperm(self.examples["train"][0].shape[0], generator=g)[:limit].sort().values
            self.examples["train"] = tuple(t[keep] for t in self.examples["train"])
        self.mask_id = self.vocab[MASK]

    def _batches(self, split: str, **batching) -> MaskedBatches:
        return MaskedBatches(self.examples[split], len(self.vocab), self.mask_id, rate=self.mask_rate, **batching)

    def train_loader(self, dist: DistInfo) -> MaskedBatches:
        return self._batches("train", batch_size=self.batch_size, seed=self.seed, rank=dist.rank,
                             world_size=dist.world_size)

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        pass

    def _logits(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor, Tensor | None]:
        """Masked-LM logits ``(N, V)``, their targets ``(N,)``, and next-sentence logits ``(B, 2)`` or None."""
        inputs, segments, valid, labels = batch[:4]
        chosen = labels != IGNORE_INDEX
        if self.nsp:
            logits, nsp_logits = model.pretraining_logits(inputs, segments, valid, chosen)
            return logits.float(), labels[chosen], nsp_logits.float()
        return model(inputs, segments, valid, masked=chosen).float(), labels[chosen], None

    def step(self, model: nn.Module, batch: Batch) -> StepOutput:
        logits, targets, nsp_logits = self._logits(model, batch)
        loss = F.cross_entropy(logits, targets)
        if nsp_logits is not None:  # the two losses summed, as in BERT
            loss = loss + F.cross_entropy(nsp_logits, batch[4])
        correct = (logits.argmax(-1) == targets).sum().item()
        return StepOutput(loss=loss, count=targets.numel(), correct=correct)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        total, correct, count, nsp_correct, pairs = 0.0, 0, 0, 0, 0
        for batch in self._batches(split, batch_size=self.eval_batch_size, seed=EVAL_SEED, shuffle=False):
            batch = tuple(t.to(device) for t in batch)
            logits, targets, nsp_logits = self._logits(model, batch)
            total += F.cross_entropy(logits, targets, reduction="sum").item()
            correct += int((logits.argmax(-1) == targets).sum())
            count += targets.numel()
            if nsp_logits is not None:
                nsp_correct += int((nsp_logits.argmax(-1) == batch[4]).sum())
                pairs += batch[4].numel()
        model.train(was_training)
        loss = total / max(count, 1)
        out = {"loss": loss, "perplexity": float(torch.tensor(loss).exp()), "accuracy": correct / max(count, 1)}
        if self.nsp:
            out["nsp_accuracy"] = nsp_correct / max(pairs, 1)
        return out

    def state(self) -> dict[str, Any]:
        return {"vocab": self.vocab.to_state(), "num_steps": self.num_steps, "mask_rate": self.mask_rate,
                "limit": self.limit, "nsp": self.nsp}

    def example_input(self, batch_size: int = 2) -> tuple[Tensor, Tensor, Tensor]:
        tokens, segments, valid = (t[:batch_size] for t in self.examples["val"][:3])
        return tokens, segments, valid


@register_task(TASK_NAME)
def make(model_config: Any, train_config: TrainConfig, *, limit: int | None = None) -> MaskedLMTask:
    return MaskedLMTask(vocab_size=model_config.vocab_size, num_steps=model_config.num_steps,
                        batch_size=train_config.batch_size, mask_rate=model_config.mask_rate,
                        seed=train_config.seed, limit=limit, nsp=model_config.nsp)


def load_bert(path: str | os.PathLike) -> tuple[nn.Module, Vocab, dict[str, Any]]:
    """The pretrained model of a ``masked-lm`` checkpoint (eval mode) and its vocabulary; reads no dataset."""
    from divekit.registry import get_model
    from divekit.registry import model_config_from_dict

    ckpt = load_checkpoint(path)
    if ckpt.get("task") != TASK_NAME:
        raise CheckpointError(f"'{path}' is a checkpoint of task '{ckpt.get('task')}', not a masked-LM model")
    spec = get_model(ckpt["model"])
    model = spec.build(model_config_from_dict(spec, ckpt["model_config"]))
    load_model_state(model, ckpt["model_state"], source=str(path))
    model.eval()
    return model, Vocab.from_state(ckpt["task_state"]["vocab"]), ckpt

