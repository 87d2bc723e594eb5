"""BLEU: corpus-level BLEU as reported in machine-translation papers, and the book's sentence score.

Corpus BLEU (Papineni et al., 2002) over sentence pairs ``(h_i, r_i)``, one reference each::

    p_n  = sum_i sum_{g in ngrams_n(h_i)} min(count_{h_i}(g), count_{r_i}(g))
           / sum_i max(0, |h_i| - n + 1)                              n = 1..4
    BP   = 1                      if c >= r
           exp(1 - r / c)         if 0 < c < r
           0                      if c == 0
    BLEU = 100 * BP * exp(sum_{n=1..4} log(p_n) / 4)

where ``c = sum_i |h_i|`` and ``r = sum_i |r_i|`` are token counts after mteval-v13a tokenisation.
Counts are clipped per sentence but summed over the whole corpus before any division, so a corpus
score is *not* the mean of sentence scores. An order whose numerator is zero is smoothed with the
mteval "exp" rule: the k-th such order (counting from the lowest) gets ``p_n = 1 / (2^k * total_n)``.
An order with no n-grams at all (every hypothesis shorter than n) has ``p_n = 0``, and a corpus with
no matching unigram, bigram, trigram or 4-gram at all scores 0 without smoothing.

Several references per hypothesis (:func:`corpus_bleu_multi`, Papineni et al.'s original setting):
an n-gram is clipped to its largest count in any one reference, ``min(count_h(g), max_j count_{r_ij}(g))``,
and the reference length of sentence i is the length of the reference closest to ``|h_i|`` (on a
tie, the shorter), summed over the corpus into ``r``. References come as streams, as in
sacreBLEU: stream j holds the j-th reference of every hypothesis, ``None`` where a hypothesis has
fewer. A ``None`` is left out; an empty string is a real, empty reference (length 0), exactly as
sacreBLEU treats them.

The numbers equal sacreBLEU 2.6.0's ``corpus_bleu(hyps, streams)`` with its defaults (13a tokens,
case-sensitive, exp smoothing, no effective order); ``BleuScore.signature`` names that behaviour in
sacreBLEU's own signature format (``nrefs:var`` when hypotheses have different numbers of
references) so that a reported score can be compared with published ones.

:func:`book_bleu` is the simpler per-sentence score used to eyeball translations in the book; see
its docstring for how it differs.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

MAX_ORDER = 4

# The signature describes the computation, not this package: the version field names the sacreBLEU
# release whose default corpus BLEU these numbers reproduce exactly.
SACREBLEU_VERSION = "2.6.0"


def bleu_signature(nrefs: int | str) -> str:
    """sacreBLEU's signature of its default corpus BLEU with ``nrefs`` references (a count or ``"var"``)."""
    return f"nrefs:{nrefs}|case:mixed|eff:no|tok:13a|smooth:exp|version:{SACREBLEU_VERSION}"


SIGNATURE = bleu_signature(1)
ReferenceStreams = Sequence[Sequence[str | None]]

# --- mteval-v13a tokenisation -------------------------------------------------------------------

# SGML entities are decoded one after another, in mteval-v13a's order, and the order shows: "&amp;lt;"
# ends up as "<" (the "&amp;" pass makes a fresh "&lt;" for the next pass) while "&amp;quot;" stays
# "&quot;" (its pass has already run).
_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))

# Every ASCII symbol except the apostrophe, comma, hyphen and period becomes a token of its own.
# Those four are left to the digit-aware rules below, so that "3.5", "1,000", "don't" and
# "well-known" survive.
_ALWAYS_SPLIT = str.maketrans({ch: f" {ch} " for ch in "!\"#$%&()*+/:;<=>?@[\\]^_`{|}~"})

# Each rule is one left-to-right pass of non-overlapping matches; mteval's output depends on that
# (in "a..5" the second period is consumed by the first match and stays glued to "5").
_DIGIT_AWARE_RULES = (
    (re.compile(r"([^0-9])([.,])"), r"\1 \2 "),  # period/comma after a non-digit
    (re.compile(r"([.,])([^0-9])"), r" \1 \2"),  # period/comma before a non-digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # hyphen after a digit: "10-20" -> "10 - 20"
)


def tokenize_13a(line: str) -> list[str]:
    """Split ``line`` into tokens with the rules of the WMT scorer mteval-v13a.

    Steps: drop ``<skipped>`` markers; join words hyphenated across a line break (``-\\n``); turn
    remaining newlines into spaces; decode ``&quot; &amp; &lt; &gt;``; isolate ASCII punctuation
    other than ``' , - .``; isolate a period or comma unless it sits between digits; isolate a
    hyphen that follows a digit; split on any Unicode whitespace. Letters in every script are left
    alone, so ``"Café!"`` gives ``["Café", "!"]``.
    """
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        for entity, char in _ENTITIES:
            line = line.replace(entity, char)
    # Padding lets the digit-aware rules see a non-digit before the first and after the last char.
    line = f" {line} ".translate(_ALWAYS_SPLIT)
    for pattern, replacement in _DIGIT_AWARE_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


# --- sufficient statistics ----------------------------------------------------------------------


def _ngrams(tokens: list[str], max_order: int) -> Counter[tuple[str, ...]]:
    """Count every n-gram of ``tokens`` for n = 1..max_order (the tuple length is the order)."""
    counts: Counter[tuple[str, ...]] = Counter()
    for n in range(1, max_order + 1):
        counts.update(zip(*(tokens[i:] for i in range(n))))
    return counts


def _closest_ref_len(hyp_len: int, ref_lens: list[int]) -> int:
    """The reference length nearest ``hyp_len``; of two equally near, the shorter."""
    return min(ref_lens, key=lambda n: (abs(n - hyp_len), n))


def _sentence_stats(hyp: list[str], refs: list[list[str]]) -> tuple[list[int], list[int], int]:
    """Clipped matches and candidate counts per order, and the closest reference length."""
    ref_counts: Counter[tuple[str, ...]] = Counter()
    for ref in refs:
        for gram, count in _ngrams(ref, MAX_ORDER).items():
            ref_counts[gram] = max(ref_counts[gram], count)  # the most any single reference allows
    matches = [0] * MAX_ORDER
    for gram, count in _ngrams(hyp, MAX_ORDER).items():
        # Clipping: a hypothesis n-gram is credited at most as often as a reference holds it.
        matches[len(gram) - 1] += min(count, ref_counts[gram])
    totals = [max(0, len(hyp) - n + 1) for n in range(1, MAX_ORDER + 1)]
    return matches, totals, _closest_ref_len(len(hyp), [len(r) for r in refs])


def _preprocess(sentence: str) -> list[str]:
    # Trailing whitespace is removed before tokenising, so a final "-\n" is kept as a hyphen.
    return tokenize_13a(sentence.rstrip())


# --- the score ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BleuScore:
    """A corpus BLEU result and the statistics it was computed from.

    Attributes:
        score: BLEU on the 0-100 scale.
        counts: clipped n-gram matches summed over the corpus, orders 1..4.
        totals: hypothesis n-grams summed over the corpus, orders 1..4.
        precisions: smoothed n-gram precisions in percent, orders 1..4.
        bp: brevity penalty in [0, 1].
        sys_len: hypothesis tokens in the corpus (``c``).
        ref_len: reference tokens in the corpus (``r``).
        signature: how the score was computed, in sacreBLEU's signature format.
    """

    score: float
    counts: tuple[int, ...]
    totals: tuple[int, ...]
    precisions: tuple[float, ...]
    bp: float
    sys_len: int
    ref_len: int
    signature: str = SIGNATURE

    @property
    def ratio(self) -> float:
        """Hypothesis-to-reference length ratio ``c / r`` (0 when the references are empty)."""
        return self.sys_len / self.ref_len if self.ref_len else 0.0

    def __str__(self) -> str:
        precisions = "/".join(f"{p:.1f}" for p in self.precisions)
        return (
            f"BLEU = {self.score:.2f} {precisions} (BP = {self.bp:.3f} ratio = {self.ratio:.3f} "
            f"hyp_len = {self.sys_len:d} ref_len = {self.ref_len:d})"
        )


def _brevity_penalty(sys_len: int, ref_len: int) -> float:
    if sys_len >= ref_len:
        return 1.0
    return math.exp(1.0 - ref_len / sys_len) if sys_len > 0 else 0.0


def _smoothed_precisions(counts: list[int], totals: list[int]) -> list[float]:
    """Per-order precision in percent with mteval's "exp" smoothing of zero-match orders."""
    precisions = [0.0] * MAX_ORDER
    if not any(counts):
        return precisions  # nothing matched at any order: no smoothing, the score is 0
    halvings = 0
    for n, (count, total) in enumerate(zip(counts, totals)):
        if total == 0:
            break  # hypotheses too short for this order and every higher one: precision 0
        if count == 0:
            halvings += 1
            precisions[n] = 100.0 / (2**halvings * total)
        else:
            precisions[n] = 100.0 * count / total
    return precisions


def _check_strings(fn: str, name: str, corpus: Sequence[str | None], *, allow_none: bool = False) -> None:
    if isinstance(corpus, str):
        raise TypeError(f"{fn}: {name} must be a sequence of sentences, not one string")
    bad = next((s for s in corpus if not isinstance(s, str) and not (allow_none and s is None)), None)
    if bad is not None:
        raise TypeError(f"{fn}: every item of {name} must be a str, got {type(bad).__name__}")


def _check_corpus(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    for name, corpus in (("hypotheses", hypotheses), ("references", references)):
        _check_strings("corpus_bleu", name, corpus)
    if len(hypotheses) != len(references):
        raise ValueError(
            f"corpus_bleu: {len(hypotheses)} hypotheses but {len(references)} references; "
            "each hypothesis needs exactly one reference"
        )
    if not hypotheses:
        raise ValueError("corpus_bleu: the corpus is empty; give at least one sentence pair")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> BleuScore:
    """Corpus BLEU of detokenised ``hypotheses`` against one detokenised reference each.

    Args:
        hypotheses: system outputs, one string per sentence (an empty string is allowed).
        references: the matching references, same length and order.

    Returns:
        A :class:`BleuScore` equal to sacreBLEU 2.6.0's default ``corpus_bleu(hypotheses,
        [references])``.

    Raises:
        TypeError: a corpus is not a sequence of strings.
        ValueError: the two corpora differ in length, or are empty.
    """
    _check_corpus(hypotheses, references)
    return _score(hypotheses, [[ref] for ref in references], SIGNATURE)


def corpus_bleu_multi(hypotheses: Sequence[str], streams: ReferenceStreams) -> BleuScore:
    """Corpus BLEU against several references per hypothesis, given as reference streams.

    Args:
        hypotheses: system outputs, one string per sentence.
        streams: ``streams[j][i]`` is the j-th reference of hypothesis i, or ``None`` if it has
            fewer than ``j + 1``; every stream has one entry per hypothesis.

    Returns:
        A :class:`BleuScore` equal to sacreBLEU 2.6.0's default ``corpus_bleu(hypotheses, streams)``,
        its signature saying ``nrefs:K`` (every hypothesis has K references) or ``nrefs:var``.

    Raises:
        TypeError: a corpus or stream is not a sequence of strings (and ``None``).
        ValueError: a stream's length differs from the hypotheses', or a hypothesis has no reference.
    """
    ref_sets = reference_sets(hypotheses, streams, "corpus_bleu_multi")
    counts = {len(refs) for refs in ref_sets}
    return _score(hypotheses, ref_sets, bleu_signature(counts.pop() if len(counts) == 1 else "var"))


def reference_sets(hypotheses: Sequence[str], streams: ReferenceStreams, fn: str) -> list[list[str]]:
    """Per hypothesis, its references with the ``None`` gaps left out (checked as described by ``fn``)."""
    if isinstance(streams, str) or not streams or any(isinstance(s, str) for s in streams):
        raise TypeError(f"{fn}: streams must be a non-empty sequence of reference streams")
    _check_strings(fn, "hypotheses", hypotheses)
    if not hypotheses:
        raise ValueError(f"{fn}: the corpus is empty; give at least one hypothesis")
    for j, stream in enumerate(streams):
        _check_strings(fn, f"reference stream {j}", stream, allow_none=True)
        if len(stream) != len(hypotheses):
            raise ValueError(f"{fn}: reference stream {j} has {len(stream)} entries for {len(hypotheses)} "
                             "hypotheses; pad a stream with None where a hypothesis has fewer references")
    ref_sets = [[r for r in refs if r is not None] for refs in zip(*streams)]
    missing = next((i for i, refs in enumerate(ref_sets) if not refs), None)
    if missing is not None:
        raise ValueError(f"{fn}: hypothesis {missing} has no reference in any stream")
    return ref_sets


def reference_streams(ref_sets: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-hypothesis reference lists -> streams, padded with ``None`` (``[[a, b], [c]]`` -> ``[[a, c], [b, None]]``)."""
    width = max((len(refs) for refs in ref_sets), default=0)
    return [[refs[j] if j < len(refs) else None for refs in ref_sets] for j in range(width)]


def _score(hypotheses: Sequence[str], ref_sets: list[list[str]], signature: str) -> BleuScore:
    counts, totals = [0] * MAX_ORDER, [0] * MAX_ORDER
    sys_len = ref_len = 0
    for hyp_text, refs in zip(hypotheses, ref_sets):
        hyp = _preprocess(hyp_text)
        matches, candidates, closest = _sentence_stats(hyp, [_preprocess(r) for r in refs])
        counts = [a + b for a, b in zip(counts, matches)]
        totals = [a + b for a, b in zip(totals, candidates)]
        sys_len += len(hyp)
        ref_len += closest
    bp = _brevity_penalty(sys_len, ref_len)
    precisions = _smoothed_precisions(counts, totals)
    if 0.0 in precisions:
        score = 0.0  # log(0) = -inf: a missing order zeroes the geometric mean
    else:
        score = bp * math.exp(sum(math.log(p) for p in precisions) / MAX_ORDER)
    return BleuScore(score, tuple(counts), tuple(totals), tuple(precisions), bp, sys_len, ref_len, signature)


# --- the book's sentence score ------------------------------------------------------------------


def book_bleu(pred_tokens: list[str], label_tokens: list[str], k: int = 2) -> float:
    """Per-sentence BLEU of "Dive into Deep Learning", on the 0-1 scale.

    .. math::

        \\mathrm{score} = \\exp\\big(\\min(0,\\; 1 - \\mathrm{len_{label}} / \\mathrm{len_{pred}})\\big)
                         \\prod_{n=1}^{k} p_n^{1/2^n}

    where ``p_n`` is the fraction of the prediction's n-grams that also occur in the label, each
    label n-gram usable at most as many times as it occurs there (clipping).

    How it differs from :func:`corpus_bleu`: it scores one sentence at a time rather than pooling
    counts over a corpus; it applies no smoothing, so one order without a match makes the score 0;
    it weights order n by ``1/2^n`` instead of a uniform ``1/4``, which favours short n-grams; it
    usually stops at ``k = 2`` orders; it works on tokens the caller has already split (no 13a
    rules); and it is on the 0-1 scale. Scores from the two are not comparable; report
    :func:`corpus_bleu` as "BLEU".

    Edge cases:
        * Orders longer than the prediction (``n > len(pred_tokens)``) are skipped, i.e. contribute
          a factor of 1, as in the book; the brevity penalty still punishes a short prediction.
        * An empty prediction scores 0.0, the limit of the brevity penalty as the prediction
          shrinks to nothing; if the label is empty too, the two sequences are identical and the
          score is 1.0.
        * A non-empty prediction against an empty label has no matching n-gram and scores 0.0.

    Raises:
        ValueError: ``k`` is smaller than 1.
    """
    if k < 1:
        raise ValueError(f"book_bleu: k must be at least 1, got {k}")
    len_pred, len_label = len(pred_tokens), len(label_tokens)
    if len_pred == 0:
        return 1.0 if len_label == 0 else 0.0
    score = math.exp(min(0.0, 1.0 - len_label / len_pred))  # brevity penalty
    for n in range(1, min(k, len_pred) + 1):
        pred_grams = Counter(zip(*(pred_tokens[i:] for i in range(n))))
        label_grams = Counter(zip(*(label_tokens[i:] for i in range(n))))
        matched = sum((pred_grams & label_grams).values())  # clipped matches of order n
        score *= (matched / (len_pred - n + 1)) ** (0.5**n)  # p_n^(1/2^n)
    return score
