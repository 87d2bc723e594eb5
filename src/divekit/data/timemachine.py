"""The Time Machine (H. G. Wells) as a language-modelling corpus, and minibatches over it.

Pipeline, every step a pure function so it can be tested on tiny text:

1. ``clean_text``: every maximal run of characters that are not ASCII letters (``A-Z``, ``a-z``)
   becomes one space, then the text is lower-cased. Only the 26 letters and the space survive.
2. ``split_blocks``: the cleaned *character stream* is cut by position into contiguous
   train / validation / test blocks (80 / 10 / 10). Contiguous blocks, not shuffled windows, so
   that no test text is ever seen in training.
3. The vocabulary comes from the training block alone; each block becomes a 1-D LongTensor
   ``(tokens,)`` of indices.
4. ``random_batches`` / ``sequential_batches`` cut one block into ``(X, Y)`` pairs of shape
   ``(batch, num_steps)`` with ``Y[b, t] == corpus[start_b + t + 1]``, i.e. ``X`` shifted by one.
   Since each block is batched on its own, no window ever straddles two blocks.

On the real file (178,979 bytes) the cleaned text has 173,428 characters; the blocks are
138,742 / 17,343 / 17,343 characters and the character vocabulary has 28 tokens (``<unk>``,
space, 26 letters).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from divekit import seeding
from divekit.data.vocab import Vocab
from divekit.errors import DataError, ShapeError, UnknownNameError

TOKEN_KINDS = ("char", "word")
# Targets at padded positions of ``eval_stream``; the default ``ignore_index`` of
# ``torch.nn.functional.cross_entropy``, so the loss skips them without extra arguments.
IGNORE_INDEX = -100

_NON_LETTERS = re.compile(r"[^A-Za-z]+")
Batch = tuple[torch.Tensor, torch.Tensor]
S = TypeVar("S", bound=Sequence)


def clean_text(text: str) -> str:
    """Replace each maximal run of non-ASCII-letter characters by one space, then lower-case."""
    return _NON_LETTERS.sub(" ", text).lower()


def _tokenize_one(text: str, token: str) -> list[str]:
    if token == "char":
        return list(text)
    return [w for w in text.split(" ") if w]  # runs of spaces leave empty strings: drop them


def tokenize(lines_or_text: str | Sequence[str], token: str = "char") -> list[str] | list[list[str]]:
    """Split a text into a flat token list, or a list of lines into one token list per line.

    ``"char"`` keeps every character (spaces included, they are what separates words);
    ``"word"`` splits on spaces and drops empty strings.
    """
    if token not in TOKEN_KINDS:
        raise UnknownNameError(f"unknown token kind {token!r}; choose one of {list(TOKEN_KINDS)}")
    if isinstance(lines_or_text, str):
        return _tokenize_one(lines_or_text, token)
    return [_tokenize_one(line, token) for line in lines_or_text]


def load_timemachine() -> str:
    """The cleaned text of the book (see ``clean_text``), read through the data store."""
    from divekit.data import (
        store,  # imported here so the pure functions work without the store
    )

    raw = store.load_bytes("timemachine")
    try:
        return clean_text(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"timemachine text is not UTF-8: {err}") from err


def split_blocks(corpus: S, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> tuple[S, ...]:
    """Cut ``corpus`` into contiguous blocks whose lengths follow ``fractions`` (summing to 1).

    Block ``k`` ends at ``round(n * (f_0 + ... + f_k))``; the last block ends at ``n``.
    Works on anything sliceable: a string, a list, a 1-D tensor.
    """
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    n = len(corpus)
    ends, total = [], 0.0
    for f in fractions[:-1]:
        total += f
        ends.append(round(n * total))
    starts = [0, *ends]
    ends.append(n)
    return tuple(corpus[a:b] for a, b in zip(starts, ends))


@dataclass(frozen=True)
class LMData:
    """The three blocks as index tensors ``(tokens,)`` and the training-block vocabulary."""

    vocab: Vocab  # built from the training block only
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    token: str  # "char" or "word"


def build_lm_data(text: str, token: str = "char") -> LMData:
    """Split cleaned ``text`` into blocks by character position, tokenize each, index with the train vocab.

    For ``"word"`` a word cut by a block boundary becomes two partial words, one per block.
    """
    blocks = [tokenize(block, token) for block in split_blocks(text)]
    vocab = Vocab(blocks[0])
    train, val, test = (torch.tensor(vocab[toks], dtype=torch.long) for toks in blocks)
    return LMData(vocab=vocab, train=train, val=val, test=test, token=token)


def load_lm_data(token: str = "char") -> LMData:
    """``build_lm_data`` on the book read through the data store."""
    return build_lm_data(load_timemachine(), token)


# --- minibatches -------------------------------------------------------------------------------


def _check_corpus(corpus: torch.Tensor) -> None:
    if corpus.dim() != 1 or corpus.dtype != torch.long:
        raise ShapeError(
            f"corpus must be a 1-D LongTensor (tokens,), got shape {tuple(corpus.shape)} dtype {corpus.dtype}"
        )


def _check_sizes(batch_size: int, num_steps: int) -> None:
    if batch_size <= 0 or num_steps <= 0:
        raise ValueError(f"batch_size and num_steps must be positive, got {batch_size} and {num_steps}")


def _generator(seed: int, epoch: int) -> torch.Generator:
    # The run's "order" stream of this epoch, as TensorLoader uses: a pure function of
    # (seed, epoch), so a resumed run sees exactly the batches an uninterrupted one would.
    return seeding.generator(seed, "order", epoch)


def _draw_offset(g: torch.Generator, num_steps: int) -> int:
    """A random start in ``[0, num_steps)`` so each epoch cuts the text at different places."""
    return int(torch.randint(num_steps, (1,), generator=g))


def _num_random_batches(n: int, batch_size: int, num_steps: int, offset: int) -> int:
    # Window k covers [offset + k*s, offset + (k+1)*s] (its target reaches one further).
    return (n - offset - 1) // num_steps // batch_size


def _num_sequential_batches(n: int, batch_size: int, num_steps: int, offset: int) -> int:
    return (n - offset - 1) // batch_size // num_steps


def random_batches(
    corpus: torch.Tensor, batch_size: int, num_steps: int, *, seed: int, epoch: int
) -> Iterator[Batch]:
    """Random sampling: non-overlapping windows after a random offset, in random order.

    Windows start at ``offset + k * num_steps``; each minibatch stacks ``batch_size`` of them,
    drawn without replacement, so neighbouring rows are unrelated and hidden state must be reset
    between minibatches. Windows that do not fill a whole minibatch are left out this epoch.

    Yields:
        ``X, Y`` of shape ``(batch, num_steps)``, ``Y = X`` shifted one token to the right.
    """
    _check_corpus(corpus)
    _check_sizes(batch_size, num_steps)
    g = _generator(seed, epoch)
    offset = _draw_offset(g, num_steps)
    num_windows = (corpus.numel() - offset - 1) // num_steps
    num_batches = num_windows // batch_size
    order = torch.randperm(num_windows, generator=g)[: num_batches * batch_size]
    starts = (offset + order * num_steps).view(num_batches, batch_size)
    steps = torch.arange(num_steps)
    for row in starts:
        idx = row[:, None] + steps  # (batch, num_steps) positions in the corpus
        yield corpus[idx], corpus[idx + 1]


def sequential_batches(
    corpus: torch.Tensor, batch_size: int, num_steps: int, *, seed: int, epoch: int
) -> Iterator[Batch]:
    """Sequential partitioning: ``batch_size`` parallel streams walked left to right.

    After a random offset the text is cut into ``batch_size`` equal contiguous streams (the
    leftover tail is dropped); minibatch ``i`` holds columns ``[i*s, (i+1)*s)`` of every stream,
    so row ``b`` of minibatch ``i+1`` continues row ``b`` of minibatch ``i`` and the hidden state
    can be carried across minibatches (detached).

    Yields:
        ``X, Y`` of shape ``(batch, num_steps)``, ``Y = X`` shifted one token to the right.
    """
    _check_corpus(corpus)
    _check_sizes(batch_size, num_steps)
    offset = _draw_offset(_generator(seed, epoch), num_steps)
    stream_len = (corpus.numel() - offset - 1) // batch_size
    used = batch_size * stream_len
    xs = corpus[offset : offset + used].view(batch_size, stream_len)
    ys = corpus[offset + 1 : offset + 1 + used].view(batch_size, stream_len)
    for i in range(stream_len // num_steps):
        cols = slice(i * num_steps, (i + 1) * num_steps)
        yield xs[:, cols], ys[:, cols]


class LMLoader:
    """A reusable, epoch-aware iterable over ``random_batches`` or ``sequential_batches``.

    Used like ``TensorLoader``: call ``set_epoch`` before iterating to get that epoch's offset
    and order. A trainer reads ``sequential`` to decide whether to carry the hidden state from
    one minibatch to the next (``True``) or to start each minibatch from zeros (``False``).

    Args:
        corpus: one block of token indices, a LongTensor ``(tokens,)``.
        batch_size, num_steps: the shape ``(batch, num_steps)`` of every ``X`` and ``Y``.
        sequential: sequential partitioning if true, random sampling otherwise.
        seed: with the epoch number, fixes the offset and order.
    """

    def __init__(
        self, corpus: torch.Tensor, batch_size: int, num_steps: int, *, sequential: bool, seed: int = 0
    ) -> None:
        _check_corpus(corpus)
        _check_sizes(batch_size, num_steps)
        # The largest offset is num_steps - 1; even then one full minibatch must fit.
        needed = (batch_size + 1) * num_steps
        if corpus.numel() < needed:
            raise DataError(
                f"a block of {corpus.numel()} tokens is too short for batch_size={batch_size}, "
                f"num_steps={num_steps} (needs at least {needed})"
            )
        self.corpus = corpus
        self.batch_size = batch_size
        self.num_steps = num_steps
        self.sequential = sequential
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the offset and order of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        offset = _draw_offset(_generator(self.seed, self.epoch), self.num_steps)
        count = _num_sequential_batches if self.sequential else _num_random_batches
        return count(self.corpus.numel(), self.batch_size, self.num_steps, offset)

    def __iter__(self) -> Iterator[Batch]:
        batches = sequential_batches if self.sequential else random_batches
        return batches(self.corpus, self.batch_size, self.num_steps, seed=self.seed, epoch=self.epoch)


def eval_stream(corpus: torch.Tensor, batch_size: int, num_steps: int) -> Iterator[Batch]:
    """Walk a whole block once, in order, for perplexity with the hidden state carried.

    The block is cut into ``batch_size`` contiguous streams covering all of it (lengths differ by
    at most one, longer streams first). Row ``b`` of successive minibatches continues stream
    ``b``; every token except the first of each stream is a target exactly once, so a block of
    ``n`` tokens yields ``n - batch_size`` targets. When the streams are unequal, the shorter
    rows of the final column hold ``X = 0`` and ``Y = IGNORE_INDEX``: sum the loss over
    ``Y != IGNORE_INDEX`` and divide by that count, not by the number of minibatches.

    Yields:
        ``X, Y`` of shape ``(batch, steps)`` with ``steps == num_steps`` except possibly the last.
    """
    _check_corpus(corpus)
    _check_sizes(batch_size, num_steps)
    if corpus.numel() < 2 * batch_size:
        raise DataError(f"a block of {corpus.numel()} tokens cannot make {batch_size} streams of 2 or more tokens")
    streams = corpus.tensor_split(batch_size)
    width = streams[0].numel() - 1  # targets in the longest stream
    xs = torch.zeros(batch_size, width, dtype=torch.long)
    ys = torch.full((batch_size, width), IGNORE_INDEX, dtype=torch.long)
    for b, stream in enumerate(streams):
        xs[b, : stream.numel() - 1] = stream[:-1]
        ys[b, : stream.numel() - 1] = stream[1:]
    for start in range(0, width, num_steps):
        yield xs[:, start : start + num_steps], ys[:, start : start + num_steps]
