"""Byte-pair encoding of words into subword units (Sennrich, Haddow and Birch, 2016).

Learning. Every distinct training word ``w`` with count ``f(w)`` starts as its characters, the
last one carrying the end-of-word marker: ``"lower"`` -> ``l o w e r</w>``. One merge step finds
the most frequent adjacent symbol pair over the corpus,

    count(a, b) = sum_w f(w) * #{i : s_i(w) = a, s_{i+1}(w) = b}        (overlaps counted: "a a a" has 2)

and rewrites every word, left to right and without overlap, so each ``a b`` becomes ``ab``
(``a a a`` -> ``aa a``). Learning stops after ``num_merges`` steps, or earlier when the best pair is
seen fewer than ``min_frequency`` (2) times.

Ties. Among pairs of equal count the one that is greatest as a tuple of strings wins, i.e. the
larger first symbol by Python's code-point string order, then the larger second symbol. This is
the rule of the reference tool subword-nmt (``max`` over ``(count, pair)``); with it the merge list
is a function of the word counts alone, never of the order the text was read in. (subword-nmt
finds symbol boundaries with a regular expression for which any Unicode whitespace is a boundary,
so a word that itself holds, say, a thin space U+2009 can in principle be rewritten differently
there. 84 training words of fra-eng hold one; the merges still agree at 1,000 and 8,000.)

Speed. A merge changes only the words that hold its pair, so only those words are re-counted; the
pair counts change by the difference, and a heap with lazy deletion (stale entries are skipped
when popped) yields the next best pair. 8,000 merges on the fra-eng training text take seconds.

Applying. A word is split into characters (the last with ``</w>``), then the learned merge of the
lowest rank present among its adjacent pairs is applied everywhere in the word, until no learned
pair is left. Tokens other than a word's last carry the separator ``@@``, so

    "lowest" -> ["low@@", "est"]            and joining undoes it: drop every "@@ " (and a final "@@").

Every character seen in training is a unit of its own, so a word made of training characters is
always segmented into units of :meth:`BPE.vocabulary`; this is what makes a subword model free of
``<unk>`` for such input. The separator is ambiguous only for words that themselves contain
``@@``, which the fra-eng text never does.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from divekit.errors import CheckpointError

EOW = "</w>"  # end-of-word marker attached to a word's last symbol while learning and applying
SEPARATOR = "@@"  # suffix of every token that is not the last of its word

Pair = tuple[str, str]


def word_counts(token_lists: Iterable[Sequence[str]]) -> Counter[str]:
    """How often each word occurs in a corpus of tokenised sentences (the learner's only input)."""
    counts: Counter[str] = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    return counts


def _initial_symbols(word: str) -> list[str]:
    """``"low"`` -> ``["l", "o", "w</w>"]``."""
    return [*word[:-1], word[-1] + EOW]


def _merge_word(symbols: list[str], pair: Pair) -> list[str]:
    """Replace each ``a b`` of ``symbols`` by ``ab``, scanning left to right without overlaps."""
    a, b = pair
    out: list[str] = []
    i, n = 0, len(symbols)
    while i < n:
        if i + 1 < n and symbols[i] == a and symbols[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _pair_counts(symbols: list[str]) -> Counter[Pair]:
    return Counter(itertools.pairwise(symbols))


class _Ranked:
    """A heap entry ordered so that ``heapq`` (a min-heap) pops the highest ``(count, pair)`` first."""

    __slots__ = ("count", "pair")

    def __init__(self, count: int, pair: Pair) -> None:
        self.count, self.pair = count, pair

    def __lt__(self, other: _Ranked) -> bool:
        return (self.count, self.pair) > (other.count, other.pair)


class _PairStats:
    """Pair counts over a corpus of words, kept current as merges rewrite the words."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.words = [_initial_symbols(w) for w in counts if w]
        self.freqs = [counts[w] for w in counts if w]
        self.count: dict[Pair, int] = {}
        self.where: dict[Pair, set[int]] = {}  # pair -> indices of the words that hold it
        for j, symbols in enumerate(self.words):
            for pair, k in _pair_counts(symbols).items():
                self.count[pair] = self.count.get(pair, 0) + k * self.freqs[j]
                self.where.setdefault(pair, set()).add(j)
        self.heap = [_Ranked(c, p) for p, c in self.count.items()]
        heapq.heapify(self.heap)

    def best(self) -> tuple[Pair, int] | None:
        """The pair with the highest ``(count, pair)``, or None when no pair is left."""
        while self.heap:
            top = self.heap[0]
            if self.count.get(top.pair) == top.count and top.count > 0:
                return top.pair, top.count
            heapq.heappop(self.heap)  # stale: the pair's count has changed since it was pushed
        return None

    def merge(self, pair: Pair) -> None:
        """Rewrite every word holding ``pair`` and update the counts of the pairs that changed."""
        delta: dict[Pair, int] = {}
        for j in self.where.pop(pair, ()):
            old = self.words[j]
            new = _merge_word(old, pair)
            self.words[j] = new
            word_delta: dict[Pair, int] = {}
            for p in itertools.pairwise(old):
                word_delta[p] = word_delta.get(p, 0) - 1
            new_pairs = set(itertools.pairwise(new))
            for p in itertools.pairwise(new):
                word_delta[p] = word_delta.get(p, 0) + 1
            freq = self.freqs[j]
            for p, k in word_delta.items():
                if k:  # pairs away from the merge site cancel out and are never touched
                    delta[p] = delta.get(p, 0) + k * freq
                    if k > 0:
                        self.where.setdefault(p, set()).add(j)
                    elif p not in new_pairs and p != pair:
                        self.where[p].discard(j)
        self.count.pop(pair, None)
        delta.pop(pair, None)
        for p, d in delta.items():
            c = self.count[p] = self.count.get(p, 0) + d
            if c > 0:
                heapq.heappush(self.heap, _Ranked(c, p))


def iter_merges(counts: Mapping[str, int], *, min_frequency: int = 2) -> Iterator[Pair]:
    """The merges of ``counts`` in learning order, lazily, until no pair occurs ``min_frequency`` times."""
    stats = _PairStats(counts)
    while (found := stats.best()) is not None and found[1] >= min_frequency:
        yield found[0]
        stats.merge(found[0])


def alphabet_of(counts: Mapping[str, int]) -> list[str]:
    """The distinct characters of the words, sorted."""
    return sorted({ch for w in counts for ch in w})


def learn_bpe(counts: Mapping[str, int], num_merges: int, *, min_frequency: int = 2) -> BPE:
    """Learn up to ``num_merges`` merges from word counts (see the module docstring for the rules).

    Args:
        counts: word -> how often it occurs in the training text (empty words are ignored).
        num_merges: the most merges to learn; fewer when pairs run out or get too rare.
        min_frequency: stop once the most frequent pair occurs fewer times than this.
    """
    if num_merges < 0:
        raise ValueError(f"num_merges must be non-negative, got {num_merges}")
    merges = list(itertools.islice(iter_merges(counts, min_frequency=min_frequency), num_merges))
    return BPE(merges, alphabet_of(counts))


def unit_token(a: str, b: str) -> str:
    """The token the merge of ``a`` and ``b`` shows as: ``"ab"`` if it ends a word, else ``"ab@@"``."""
    unit = a + b
    return unit[: -len(EOW)] if unit.endswith(EOW) else unit + SEPARATOR


class BPE:
    """Learned merges, applied to words; the inverse (:func:`join_subwords`) needs nothing learned.

    Args:
        merges: the merge list in learning order; a pair's position is its rank.
        alphabet: the characters of the training text.
    """

    def __init__(self, merges: Sequence[Pair], alphabet: Iterable[str]) -> None:
        self.merges = [(str(a), str(b)) for a, b in merges]
        self.alphabet = sorted(set(alphabet))
        self.ranks: dict[Pair, int] = {}
        for rank, pair in enumerate(self.merges):
            self.ranks.setdefault(pair, rank)  # a pair learned twice keeps its first rank
        self._cache: dict[str, tuple[str, ...]] = {}  # word -> units
        self._token_cache: dict[str, tuple[str, ...]] = {}  # word -> tokens with separators

    def encode_word(self, word: str) -> tuple[str, ...]:
        """The units of ``word`` without separators, e.g. ``("low", "est")``."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        symbols = _initial_symbols(word)
        while len(symbols) > 1:
            ranked = [(self.ranks[p], p) for p in itertools.pairwise(symbols) if p in self.ranks]
            if not ranked:
                break
            symbols = _merge_word(symbols, min(ranked)[1])
        symbols[-1] = symbols[-1][: -len(EOW)]
        units = tuple(symbols)
        self._cache[word] = units
        return units

    def word_tokens(self, word: str) -> tuple[str, ...]:
        """The tokens of one non-empty word: its units, ``@@`` on all but the last (cached)."""
        tokens = self._token_cache.get(word)
        if tokens is None:
            units = self.encode_word(word)
            tokens = self._token_cache[word] = (*(u + SEPARATOR for u in units[:-1]), units[-1])
        return tokens

    def segment(self, tokens: Sequence[str]) -> list[str]:
        """Words -> subword tokens, ``@@`` on every token but a word's last; empty words are dropped."""
        out: list[str] = []
        for word in tokens:
            if word:
                out.extend(self.word_tokens(word))
        return out

    def segment_line(self, line: str) -> str:
        """A space-separated line in, a space-separated line of subword tokens out."""
        return " ".join(self.segment(line.split(" ")))

    def vocabulary(self) -> list[str]:
        """Every token :meth:`segment` can emit for words over the training alphabet, sorted.

        A character can end a word (``c``) or not (``c@@``); a merged unit ending in ``</w>`` only
        ends a word, any other only starts or continues one.
        """
        tokens = set(self.alphabet) | {ch + SEPARATOR for ch in self.alphabet}
        tokens.update(unit_token(a, b) for a, b in self.merges)
        return sorted(tokens)

    def outside_alphabet(self, tokens: Iterable[str]) -> list[str]:
        """The distinct characters of ``tokens`` never seen in training, in order of appearance."""
        known = set(self.alphabet)
        seen: dict[str, None] = {}
        for tok in tokens:
            for ch in tok:
                if ch not in known:
                    seen.setdefault(ch)
        return list(seen)

    def to_state(self) -> dict[str, Any]:
        """Plain lists and strings, safe for ``torch.load(weights_only=True)``."""
        return {"merges": [[a, b] for a, b in self.merges], "alphabet": list(self.alphabet)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> BPE:
        if not isinstance(state, Mapping) or {"merges", "alphabet"} - set(state):
            raise CheckpointError("BPE state must hold 'merges' and 'alphabet'")
        if any(len(m) != 2 for m in state["merges"]):
            raise CheckpointError("every BPE merge must be a pair of symbols")
        return cls([tuple(m) for m in state["merges"]], state["alphabet"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BPE):
            return NotImplemented
        return self.merges == other.merges and self.alphabet == other.alphabet

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BPE(merges={len(self.merges)}, alphabet={len(self.alphabet)})"


def join_subwords(tokens: Sequence[str]) -> list[str]:
    """Undo :meth:`BPE.segment`: glue each ``x@@`` to what follows; a dangling final ``@@`` is dropped."""
    words: list[str] = []
    pending = ""
    for tok in tokens:
        if tok.endswith(SEPARATOR):
            pending += tok[: -len(SEPARATOR)]
        else:
            words.append(pending + tok)
            pending = ""
    if pending:
        words.append(pending)
    return words
