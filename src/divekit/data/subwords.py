"""Joint subword vocabularies for English-French translation (``-o subwords=N``).

One BPE model (:mod:`divekit.data.bpe`) is learned on the English and the French sides of the
training split together, and both sides share one vocabulary of ``N`` entries:
``<unk> <pad> <bos> <eos>`` and every token the merges can produce.

Why joint. The two languages share an alphabet and many words pass through unchanged or nearly
so (names, numbers, cognates such as "possible", "table", "nation"); with one set of merges such a
word is cut the same way on both sides, so the model can learn to copy units, which is the reason
Sennrich et al. give for joint BPE. One vocabulary also lets the Transformer share its source and
target embeddings (``embeddings=shared`` needs equal sizes). The cost is a softmax that also spans
English-only units, which a model learns to leave alone.

Why ``N`` is the vocabulary size and not the number of merges. A vocabulary size is part of the
model's shape, and the shape must follow from the config alone (``divekit summary``, checkpoint
loading and FLOP counts build a model without reading data). Merges are learned until the
vocabulary holds exactly ``N`` entries; how many merges that takes (fewer than ``N``: each
character brings two tokens, ``c`` and ``c@@``, and a merge can repeat a unit already made another
way) is recorded beside them.

Why every possible token is in the vocabulary. A word over the training alphabet then segments
into known tokens only, so ``<unk>`` appears solely for characters never seen in training.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from divekit.data.bpe import (
    BPE,
    SEPARATOR,
    alphabet_of,
    iter_merges,
    unit_token,
    word_counts,
)
from divekit.data.fra_eng import RESERVED, Pair, _gc_paused
from divekit.data.vocab import UNK, Vocab
from divekit.errors import DivekitError

SPECIALS = (UNK, *RESERVED)


def set_vocab_sizes(config: Any) -> None:
    """In a frozen model config's ``__post_init__``: with ``subwords=N``, both vocabulary sizes are N.

    A size left at its default is replaced; one set explicitly to anything but N is an error, since
    the joint vocabulary has exactly N entries on both sides.
    """
    n = config.subwords
    if n < 0:
        raise DivekitError(f"subwords must be 0 (word vocabularies) or a vocabulary size, got {n}")
    if n == 0:
        return
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for name in ("src_vocab_size", "tgt_vocab_size"):
        if getattr(config, name) not in (defaults[name], n):
            raise DivekitError(f"with subwords={n} both vocabularies have {n} entries; leave {name} unset "
                               f"(it is {getattr(config, name)})")
        object.__setattr__(config, name, n)  # frozen dataclass: the sanctioned way inside __post_init__


def learn_to_size(counts: Mapping[str, int], size: int) -> BPE:
    """Merges learned from ``counts`` until specials plus possible tokens number exactly ``size``.

    Raises:
        DivekitError: ``size`` is below the characters' own tokens, or above what the text allows
            (learning stops once no pair occurs twice).
    """
    alphabet = alphabet_of(counts)
    tokens = (set(alphabet) | {ch + SEPARATOR for ch in alphabet}) - set(SPECIALS)
    smallest = len(SPECIALS) + len(tokens)
    if size < smallest:
        raise DivekitError(f"subwords={size} is too small: the {len(alphabet)} training characters alone need "
                           f"{smallest} entries (specials included); use at least {smallest}")
    merges = []
    for a, b in iter_merges(counts):
        if len(SPECIALS) + len(tokens) == size:
            break
        merges.append((a, b))
        if (token := unit_token(a, b)) not in SPECIALS:
            tokens.add(token)
    if len(SPECIALS) + len(tokens) < size:
        raise DivekitError(f"subwords={size} is too large: the training text supports at most "
                           f"{len(SPECIALS) + len(tokens)} subword entries (no pair is left that occurs twice)")
    return BPE(merges, alphabet)


def learn_joint(train: Sequence[Pair], size: int) -> BPE:
    """The joint BPE of ``size`` entries from both sides of the training pairs."""
    return learn_to_size(word_counts(side for pair in train for side in pair), size)


def segment_pairs(pairs: Sequence[Pair], bpe: BPE) -> list[Pair]:
    """Both sides of every pair as subword tokens."""
    with _gc_paused():  # millions of new small lists, none of them cyclic
        return [(bpe.segment(src), bpe.segment(tgt)) for src, tgt in pairs]


def subword_vocab(bpe: BPE, segmented: Sequence[Pair]) -> Vocab:
    """Specials, then every token ``bpe`` can produce, most frequent in ``segmented`` first.

    Frequencies only order the entries (ties by string); a token never seen in training is kept
    too, with count 0, so that no word over the training alphabet ever maps to ``<unk>``.
    """
    freqs = Counter(tok for pair in segmented for side in pair for tok in side)
    tokens = sorted((t for t in bpe.vocabulary() if t not in SPECIALS), key=lambda t: (-freqs[t], t))
    return Vocab.from_state({
        "idx_to_token": [*SPECIALS, *tokens],
        "token_freqs": [[t, freqs[t]] for t in tokens],
        "min_freq": 1,
        "reserved": list(RESERVED),
    })
