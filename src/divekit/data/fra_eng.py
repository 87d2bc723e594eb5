"""English-French sentence pairs (Tatoeba) for machine translation.

Pipeline, every step a pure function so it can be tested on tiny text:

1. ``read_fra_txt``: the text of ``fra.txt`` read from the zip's bytes in memory; nothing is
   extracted, so member paths inside the archive never reach the file system.
2. ``preprocess``: narrow and ordinary non-breaking spaces (U+202F, U+00A0) become spaces, the
   text is lower-cased, and a space is inserted before each ``, . ! ?`` whose preceding character
   is not a space (so ``"go."`` -> ``"go ."``, and ``"..."`` -> ``" . . ."``).
3. ``parse_pairs``: lines ``english<TAB>french[<TAB>attribution]``, each side split on spaces with
   empty strings dropped.
4. ``split_pairs``: a seeded split grouped by English source, so every translation of one source
   sentence lands in the same split and test sources are never trained on.
5. Vocabularies from the training split only (``min_freq=2``, reserved ``<pad> <bos> <eos>``), and
   ``build_array``: index tensors ``(n, num_steps)`` with ``<eos>`` appended, then truncated or
   padded, plus valid lengths ``(n,)``.

On the real file: 167,130 pairs, 116,830 distinct English sources; the split with the default
sizes is exactly 157,130 / 5,000 / 5,000 pairs, and with ``seed=0`` the training vocabularies hold
9,779 English and 17,349 French tokens.
"""

from __future__ import annotations

import gc
import io
import random
import re
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from divekit.data.vocab import Vocab
from divekit.errors import DataError

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
RESERVED = (PAD, BOS, EOS)
MIN_FREQ = 2

Tokens = list[str]
Pair = tuple[Tokens, Tokens]
# (src, src_valid_len, tgt, tgt_valid_len): shapes (n, num_steps), (n,), (n, num_steps), (n,).
Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

# The empty gap between a non-space character and a following punctuation mark. Lookarounds
# match against the original text, as a left-to-right character loop would, and an empty match
# needs no group expansion, which keeps 11 MB of text fast.
_GLUED_PUNCT = re.compile(r"(?<=[^ ])(?=[,.!?])")


def preprocess(text: str) -> str:
    """Non-breaking spaces -> spaces, lower-case, a space before ``, . ! ?`` not preceded by one."""
    text = text.replace("\u202f", " ").replace("\xa0", " ").lower()
    return _GLUED_PUNCT.sub(" ", text)


def tokenize(sentence: str) -> Tokens:
    """Words are separated by spaces; runs of spaces leave empty strings, which are dropped."""
    return list(filter(None, sentence.split(" ")))


def read_fra_txt(zip_bytes: bytes) -> str:
    """The UTF-8 text of the archive member named ``fra.txt`` (in any folder of the zip)."""
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
            for member in archive.infolist():
                if not member.is_dir() and member.filename.rsplit("/", 1)[-1] == "fra.txt":
                    return archive.read(member).decode("utf-8")
    except (zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise DataError(f"fra-eng archive is unreadable: {err}") from err
    raise DataError("fra-eng archive has no fra.txt member")


def parse_pairs(text: str) -> list[Pair]:
    """Tokenized ``(english, french)`` pairs from the lines of ``fra.txt``; blank lines are skipped."""
    with _gc_paused():
        return _parse(text)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while building many small containers.

    Hundreds of thousands of new token lists and tuples repeatedly trigger collections that
    traverse every live pair yet find nothing (tokens hold no cycles); pausing them cuts parsing,
    splitting and indexing the real file to about a third of the time. Nested use is safe.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse(text: str) -> list[Pair]:
    pairs = []
    # Preprocessing the whole text at once gives the same tokens as per field (a space inserted
    # after a tab or newline only makes an empty string, which tokenize drops) and is much faster.
    for lineno, line in enumerate(preprocess(text).split("\n"), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) < 2:
            raise DataError(f"fra.txt line {lineno} has no tab between English and French")
        pairs.append((tokenize(fields[0]), tokenize(fields[1])))
    return pairs


def load_pairs() -> list[Pair]:
    """All 167,130 tokenized pairs of the real file, read through the data store."""
    from divekit.data import store  # imported here so the pure functions work without the store

    return parse_pairs(read_fra_txt(store.load_bytes("fra-eng")))


def _fill(order: list[tuple[str, ...]], groups: dict, taken: set, target: int) -> list[int]:
    """Take whole source groups in ``order`` while they fit, until ``target`` pairs are chosen.

    A group too large for what is left is skipped rather than split, so a later smaller group can
    complete the target exactly; the result falls short only if no remaining groups fit.
    """
    chosen: list[int] = []
    for source in order:
        if len(chosen) == target:
            break
        if source not in taken and len(groups[source]) <= target - len(chosen):
            taken.add(source)
            chosen.extend(groups[source])
    return chosen


def split_pairs(
    pairs: Sequence[Pair], *, seed: int = 0, val_pairs: int = 5000, test_pairs: int = 5000
) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """Split into ``(train, val, test)``, grouped by English source, reproducibly from ``seed``.

    The distinct sources are shuffled with ``random.Random(seed)``; whole groups then fill the test
    split, next the validation split, and every remaining pair is training data. Sizes are exactly
    ``test_pairs`` and ``val_pairs`` whenever groups allow (on the real file they do: 157,130 /
    5,000 / 5,000), else slightly fewer. Each split keeps the pairs' original order.
    """
    if val_pairs < 0 or test_pairs < 0 or val_pairs + test_pairs >= len(pairs):
        raise DataError(
            f"cannot hold out {val_pairs} + {test_pairs} pairs from {len(pairs)} and keep a training split"
        )
    with _gc_paused():
        return _grouped_split(pairs, seed, val_pairs, test_pairs)


def _grouped_split(
    pairs: Sequence[Pair], seed: int, val_pairs: int, test_pairs: int
) -> tuple[list[Pair], list[Pair], list[Pair]]:
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, (src, _) in enumerate(pairs):
        groups.setdefault(tuple(src), []).append(i)
    order = list(groups)  # first-appearance order, so the shuffle below depends only on the data
    random.Random(seed).shuffle(order)
    taken: set[tuple[str, ...]] = set()
    test_idx = set(_fill(order, groups, taken, test_pairs))
    val_idx = set(_fill(order, groups, taken, val_pairs))
    train = [p for i, p in enumerate(pairs) if i not in test_idx and i not in val_idx]
    val = [p for i, p in enumerate(pairs) if i in val_idx]
    test = [p for i, p in enumerate(pairs) if i in test_idx]
    return train, val, test


def build_vocabs(train: Sequence[Pair]) -> tuple[Vocab, Vocab]:
    """Source and target vocabularies from training pairs only (``min_freq=2``, ``<pad> <bos> <eos>``)."""
    src_vocab = Vocab((src for src, _ in train), min_freq=MIN_FREQ, reserved=RESERVED)
    tgt_vocab = Vocab((tgt for _, tgt in train), min_freq=MIN_FREQ, reserved=RESERVED)
    return src_vocab, tgt_vocab


def truncate_pad(indices: Sequence[int], num_steps: int, pad_index: int) -> list[int]:
    """Exactly ``num_steps`` indices: the first ``num_steps`` of ``indices``, then ``pad_index``."""
    kept = list(indices[:num_steps])
    return kept + [pad_index] * (num_steps - len(kept))


def build_array(
    token_lists: Sequence[Tokens], vocab: Vocab, num_steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index each sentence, append ``<eos>``, truncate or pad to ``num_steps``.

    Returns:
        ``array`` LongTensor ``(n, num_steps)`` and ``valid_len`` LongTensor ``(n,)``, the number of
        real tokens in each row (``<eos>`` included, padding excluded), i.e. ``min(len + 1, num_steps)``.
    """
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    if PAD not in vocab or EOS not in vocab:
        raise ValueError(f"vocabulary must reserve {PAD!r} and {EOS!r}")
    pad, eos = vocab[PAD], vocab[EOS]
    rows = [truncate_pad(vocab[toks] + [eos], num_steps, pad) for toks in token_lists]
    array = torch.tensor(rows, dtype=torch.long).reshape(len(rows), num_steps)
    valid_len = torch.tensor([min(len(toks) + 1, num_steps) for toks in token_lists], dtype=torch.long)
    return array, valid_len


def shift_right(tgt: torch.Tensor, bos_index: int) -> torch.Tensor:
    """Decoder input for teacher forcing: ``<bos>`` then ``tgt`` without its last step, ``(n, T)``."""
    bos = torch.full_like(tgt[:, :1], bos_index)
    return torch.cat([bos, tgt[:, :-1]], dim=1)


@dataclass(frozen=True)
class MTData:
    """Splits as tensors ready for ``TensorLoader(*data.train, ...)``, plus what made them.

    Each of ``train``, ``val``, ``test`` is ``(src, src_valid_len, tgt, tgt_valid_len)`` with
    shapes ``(n, num_steps), (n,), (n, num_steps), (n,)``; the decoder input for teacher forcing
    is ``shift_right(tgt, tgt_vocab["<bos>"])``. The ``*_pairs`` fields keep the untruncated
    tokens, e.g. as BLEU references.
    """

    src_vocab: Vocab  # English, from the training split only
    tgt_vocab: Vocab  # French, from the training split only
    num_steps: int
    train: Arrays
    val: Arrays
    test: Arrays
    train_pairs: list[Pair]
    val_pairs: list[Pair]
    test_pairs: list[Pair]


def _arrays(pairs: Sequence[Pair], src_vocab: Vocab, tgt_vocab: Vocab, num_steps: int) -> Arrays:
    src, src_len = build_array([s for s, _ in pairs], src_vocab, num_steps)
    tgt, tgt_len = build_array([t for _, t in pairs], tgt_vocab, num_steps)
    return src, src_len, tgt, tgt_len


def build_mt(
    pairs: Sequence[Pair],
    num_steps: int,
    *,
    seed: int = 0,
    max_pairs: int | None = None,
    val_pairs: int = 5000,
    test_pairs: int = 5000,
) -> MTData:
    """Split ``pairs``, build training vocabularies, and index all three splits.

    ``max_pairs`` keeps only that many training pairs, a random subset drawn from ``seed`` (the
    file is sorted by length, so a prefix would hold only the shortest sentences); the validation
    and test splits stay whole, so scores remain comparable across training sizes. The
    vocabularies come from the training pairs actually kept.
    """
    if max_pairs is not None and max_pairs <= 0:
        raise ValueError(f"max_pairs must be positive, got {max_pairs}")
    with _gc_paused():
        return _build_mt(pairs, num_steps, seed, max_pairs, val_pairs, test_pairs)


def _build_mt(
    pairs: Sequence[Pair], num_steps: int, seed: int, max_pairs: int | None, val_pairs: int, test_pairs: int
) -> MTData:
    train, val, test = split_pairs(pairs, seed=seed, val_pairs=val_pairs, test_pairs=test_pairs)
    if max_pairs is not None and max_pairs < len(train):
        keep = sorted(random.Random(seed).sample(range(len(train)), max_pairs))
        train = [train[i] for i in keep]
    src_vocab, tgt_vocab = build_vocabs(train)
    return MTData(
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        num_steps=num_steps,
        train=_arrays(train, src_vocab, tgt_vocab, num_steps),
        val=_arrays(val, src_vocab, tgt_vocab, num_steps),
        test=_arrays(test, src_vocab, tgt_vocab, num_steps),
        train_pairs=train,
        val_pairs=val,
        test_pairs=test,
    )


def load_mt(num_steps: int, *, seed: int = 0, max_pairs: int | None = None) -> MTData:
    """``build_mt`` on the real pairs read through the data store (157,130 / 5,000 / 5,000 split)."""
    return build_mt(load_pairs(), num_steps, seed=seed, max_pairs=max_pairs)
