"""chrF (Popović, 2015) and chrF++ (Popović, 2017): character n-gram F-scores of a translation corpus.

For each order, character n-grams (n = 1..``char_order``, whitespace removed from the sentence
first) and, for chrF++, word n-grams (n = 1..``word_order``, words split on whitespace with one
punctuation mark cut off a word's end, or else off its start) give three counts per sentence::

    hyp_n   = n-grams of the hypothesis (0 if the reference has none of this order)
    ref_n   = n-grams of the reference
    match_n = sum_g min(count_hyp(g), count_ref(g))

With several references, each sentence keeps the counts of the reference whose own sentence-level
score (below) is highest, the first on a tie. The counts are summed over the corpus, then

    P_n = match_n / hyp_n,   R_n = match_n / ref_n        for the orders with hyp_n > 0 and ref_n > 0
    P   = mean of P_n,       R   = mean of R_n            over those "effective" orders
    chrF_beta = 100 * (1 + beta^2) P R / (beta^2 P + R)   (0 if P + R = 0 or no order is effective)

beta = 2 weighs recall twice as much as precision. The numbers equal sacreBLEU 2.6.0's
``CHRF(char_order, word_order, beta).corpus_score`` with its other defaults (case-sensitive,
whitespace ignored, effective-order averaging rather than epsilon smoothing), and
:attr:`ChrfScore.signature` is sacreBLEU's signature of that computation. References are given
as streams, ``None`` marking a missing one, as for :func:`divekit.metrics.bleu.corpus_bleu_multi`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from divekit.metrics.bleu import SACREBLEU_VERSION, ReferenceStreams, reference_sets

CHAR_ORDER, WORD_ORDER, BETA = 6, 0, 2
# string.punctuation: the marks chrF++ cuts off a word's edge before counting word n-grams.
_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")

Stats = list[int]  # [hyp_1, ref_1, match_1, hyp_2, ref_2, match_2, ...], one triple per order


@dataclass(frozen=True)
class ChrfScore:
    """A corpus chrF result: the score on the 0-100 scale and how it was computed."""

    score: float
    char_order: int
    word_order: int
    beta: int
    signature: str

    @property
    def name(self) -> str:
        """``chrF2`` for chrF, ``chrF2++`` for word order 2 (one ``+`` per word order), as sacreBLEU names it."""
        return f"chrF{self.beta}" + "+" * self.word_order

    def __str__(self) -> str:
        return f"{self.name} = {self.score:.2f}"


def chrf_signature(nrefs: int | str, *, char_order: int = CHAR_ORDER, word_order: int = WORD_ORDER) -> str:
    """sacreBLEU's signature of its chrF with these orders and ``nrefs`` references (or ``"var"``)."""
    return (f"nrefs:{nrefs}|case:mixed|eff:yes|nc:{char_order}|nw:{word_order}|space:no|"
            f"version:{SACREBLEU_VERSION}")


def _words(sentence: str) -> list[str]:
    """Whitespace-split words with one edge punctuation mark cut off: ``"chat."`` -> ``chat .``."""
    out: list[str] = []
    for w in sentence.split():
        if len(w) > 1 and w[-1] in _PUNCT:
            out += [w[:-1], w[-1]]
        elif len(w) > 1 and w[0] in _PUNCT:
            out += [w[0], w[1:]]
        else:
            out.append(w)
    return out


def _ngram_counters(sentence: str, char_order: int, word_order: int) -> list[Counter[str]]:
    """One counter per order: character orders 1..char_order, then word orders 1..word_order."""
    chars = "".join(sentence.split())
    counters = [Counter(chars[i:i + n] for i in range(len(chars) - n + 1)) for n in range(1, char_order + 1)]
    words = _words(sentence) if word_order else []
    counters += [Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
                 for n in range(1, word_order + 1)]
    return counters


def _match_stats(hyp: list[Counter[str]], ref: list[Counter[str]]) -> Stats:
    stats: Stats = []
    for h, r in zip(hyp, ref):
        matches = sum(min(c, r[g]) for g, c in h.items() if g in r)
        # An order the reference lacks counts no hypothesis n-grams, so it drops out of the mean.
        stats += [sum(h.values()) if r else 0, sum(r.values()), matches]
    return stats


def _f_score(stats: Stats, beta: int) -> float:
    """chrF on the 0-100 scale from summed counts, averaging P and R over the effective orders."""
    precisions, recalls = [], []
    for n_hyp, n_ref, n_match in zip(stats[0::3], stats[1::3], stats[2::3]):
        if n_hyp > 0 and n_ref > 0:
            precisions.append(n_match / n_hyp)
            recalls.append(n_match / n_ref)
    if not precisions:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if not p + r:
        return 0.0
    factor = beta**2
    # Operations in sacreBLEU's order, so that the two agree to the last bit, not just to 1e-6.
    f = (1 + factor) * p * r
    f /= factor * p + r
    return 100 * f


def corpus_chrf(hypotheses: Sequence[str], streams: ReferenceStreams, *, char_order: int = CHAR_ORDER,
                word_order: int = WORD_ORDER, beta: int = BETA) -> ChrfScore:
    """Corpus chrF (``word_order=0``) or chrF++ (``word_order=2``) against reference streams.

    Args:
        hypotheses: detokenised system outputs, one per sentence.
        streams: ``streams[j][i]`` is hypothesis i's j-th reference or ``None``; one reference
            each is ``[references]``.
        char_order, word_order, beta: sacreBLEU's parameters of the same names.

    Raises:
        TypeError, ValueError: as :func:`divekit.metrics.bleu.corpus_bleu_multi`; ValueError also for
        a non-positive ``char_order`` or ``beta`` or a negative ``word_order``.
    """
    if char_order < 1 or word_order < 0 or beta < 1:
        raise ValueError(f"corpus_chrf: need char_order >= 1, word_order >= 0, beta >= 1; got "
                         f"{char_order}, {word_order}, {beta}")
    ref_sets = reference_sets(hypotheses, streams, "corpus_chrf")
    total = [0] * (3 * (char_order + word_order))
    for hyp, refs in zip(hypotheses, ref_sets):
        hyp_grams = _ngram_counters(hyp, char_order, word_order)
        best, best_f = None, -1.0
        for ref in refs:
            stats = _match_stats(hyp_grams, _ngram_counters(ref, char_order, word_order))
            f = _f_score(stats, beta)
            if f > best_f:  # strictly better: the first reference wins a tie
                best, best_f = stats, f
        total = [a + b for a, b in zip(total, best)]
    counts = {len(refs) for refs in ref_sets}
    nrefs = counts.pop() if len(counts) == 1 else "var"
    return ChrfScore(_f_score(total, beta), char_order, word_order, beta,
                     chrf_signature(nrefs, char_order=char_order, word_order=word_order))
