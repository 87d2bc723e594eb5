"""Corpus BLEU against sacreBLEU (the reference implementation), and the book's sentence BLEU by hand."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st
from sacrebleu.metrics import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from divekit.metrics.bleu import (
    SIGNATURE,
    BleuScore,
    bleu_signature,
    book_bleu,
    corpus_bleu,
    corpus_bleu_multi,
    reference_streams,
    tokenize_13a,
)

# Words chosen to exercise every 13a rule: digits around . , -, ASCII symbols, SGML entities, the
# <skipped> marker, words hyphenated at a line end, non-Latin scripts and non-ASCII punctuation.
VOCAB = [
    "the", "cat", "sat", "on", "mat", "a", "dog", "Le", "chat", "est", "là", "Café", "naïve",
    "über", "東京", "日本語", "🙂", "ß", "3.5", "1,000", "10-20", "it's", "don't", "well-known",
    "U.S.", "e.g.", "-", ".", ",", "!", "?", "(", ")", '"', "'", "&amp;", "&lt;", "&quot;",
    "&amp;gt;", "&amp;quot;", "<skipped>", "x-", "50%", "$5", "a.b", "...", "—", "«", "»", "2.", ".7", "ok,",
]
SEPARATORS = [" ", " ", " ", "  ", "\t", "", "\n", "-\n", "\u202f", "\xa0"]

words = st.sampled_from(VOCAB)
sentences = st.builds(
    lambda ws, seps: "".join(w + s for w, s in zip(ws, seps)),
    st.lists(words, max_size=15),
    st.lists(st.sampled_from(SEPARATORS), min_size=15, max_size=15),
)


@st.composite
def perturbed_pair(draw: st.DrawFn) -> tuple[str, str]:
    """A reference and a hypothesis made from it by dropping, replacing and swapping words."""
    ref = draw(st.lists(words, max_size=15))
    hyp: list[str] = []
    for word in ref:
        action = draw(st.sampled_from(["keep", "keep", "keep", "drop", "replace", "insert"]))
        if action == "keep":
            hyp.append(word)
        elif action == "replace":
            hyp.append(draw(words))
        elif action == "insert":
            hyp.extend([word, draw(words)])
    if len(hyp) > 1 and draw(st.booleans()):
        i = draw(st.integers(0, len(hyp) - 2))
        hyp[i], hyp[i + 1] = hyp[i + 1], hyp[i]
    return " ".join(hyp), " ".join(ref)


def assert_matches_sacrebleu(hyps: list[str], refs: list[str]) -> BleuScore:
    ours = corpus_bleu(hyps, refs)
    theirs = sacrebleu.corpus_bleu(hyps, [refs])
    assert ours.score == pytest.approx(theirs.score, abs=1e-6)
    assert list(ours.counts) == theirs.counts
    assert list(ours.totals) == theirs.totals
    assert list(ours.precisions) == pytest.approx(theirs.precisions, abs=1e-6)
    assert ours.bp == pytest.approx(theirs.bp, abs=1e-12)
    assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    return ours


# --- tokenizer ----------------------------------------------------------------------------------

# Characters (and two multi-character markers) that the 13a rules treat specially, mixed freely.
TEXT_PIECES = list("ab1 9.,-'&;<>qugtlmpsk\n\t\xa0\u202f!?()é東🙂") + ["&amp;", "&quot;", "<skipped>"]
tricky_text = st.lists(st.sampled_from(TEXT_PIECES), max_size=40).map("".join)


@settings(max_examples=80, deadline=None)
@given(tricky_text)
def test_tokenizer_matches_13a_on_arbitrary_text(text: str) -> None:
    assert tokenize_13a(text) == Tokenizer13a()(text).split()


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello, world!", ["Hello", ",", "world", "!"]),
        ("3.5 and 1,000 stay whole", ["3.5", "and", "1,000", "stay", "whole"]),
        ("pages 10-20", ["pages", "10", "-", "20"]),
        ("don't re-use it.", ["don't", "re-use", "it", "."]),
        ("a..5", ["a", ".", ".5"]),  # non-overlapping matches: the second period stays glued
        # Entities are decoded one pass each, in order: &amp;lt; becomes "<", &amp;quot; "&quot;".
        ("&amp;lt;b&gt;", ["<", "b", ">"]),
        ("&amp;quot;", ["&", "quot", ";"]),
        ("hyphen-\nated <skipped>word", ["hyphenated", "word"]),
        ("Café! 東京。", ["Café", "!", "東京。"]),
    ],
)
def test_tokenizer_documented_rules(text: str, tokens: list[str]) -> None:
    assert tokenize_13a(text) == tokens


# --- corpus BLEU against sacreBLEU --------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(sentences, sentences), min_size=1, max_size=20))
def test_independent_corpora_match_sacrebleu(pairs: list[tuple[str, str]]) -> None:
    hyps, refs = (list(side) for side in zip(*pairs))
    assert_matches_sacrebleu(hyps, refs)


@settings(max_examples=80, deadline=None)
@given(st.lists(perturbed_pair(), min_size=1, max_size=20))
def test_perturbed_corpora_match_sacrebleu(pairs: list[tuple[str, str]]) -> None:
    hyps, refs = (list(side) for side in zip(*pairs))
    assert_matches_sacrebleu(hyps, refs)


# Every one of these yields at least one token ("<skipped>" yields none), so a sentence of four of
# them has a 4-gram and an identical corpus must score exactly 100.
visible_words = st.sampled_from([w for w in VOCAB if w != "<skipped>"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(visible_words, min_size=4, max_size=12), min_size=1, max_size=20))
def test_identical_corpus_scores_100(word_lists: list[list[str]]) -> None:
    corpus = [" ".join(ws) for ws in word_lists]
    score = assert_matches_sacrebleu(corpus, corpus)
    assert score.score == pytest.approx(100.0)
    assert score.bp == 1.0


EDGE_CASES = {
    "empty hypothesis": ([""], ["the cat"]),
    "empty reference": (["the cat"], [""]),
    "all empty": (["", "", ""], ["", "", ""]),
    "whitespace only": ([" \t\n"], ["  "]),
    "single word match": (["cat"], ["cat"]),
    "single word miss": (["cat"], ["dog"]),
    "punctuation only": (["!?!"], ["! ? !"]),
    "unicode": (["Le café est là 🙂"], ["Le café était là 🙂"]),
    "no 4-grams but matches": (["a b c", "d e"], ["a b c", "d e"]),
    "one long pair lifts the corpus": (["a b", "a b c d e f"], ["a b", "a b c d e f"]),
    "shorter than reference": (["the cat sat"], ["the cat sat on the mat"]),
    "longer than reference": (["the cat sat on the mat today"], ["the cat sat on the mat"]),
    "trailing hyphen newline": (["well-\n"], ["well"]),
    "entities": (["a &amp; b &lt;c&gt;"], ["a & b <c>"]),
    "numbers": (["It costs $3.50, i.e. 10-20%."], ["It costs $3.50, e.g. 10-20%."]),
    "clipping": (["the the the the the the the"], ["the cat is on the mat"]),
    "mixed empty and full": (["", "the cat sat on the mat", ""], ["a", "the cat sat on a mat", ""]),
}


@pytest.mark.parametrize(("hyps", "refs"), EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_edge_cases_match_sacrebleu(hyps: list[str], refs: list[str]) -> None:
    ours = assert_matches_sacrebleu(hyps, refs)
    assert str(ours) == str(sacrebleu.corpus_bleu(hyps, [refs]))


def test_hand_computed_corpus_score() -> None:
    # hyp "a b c d e" vs ref "a b c d f": matches 4/5, 3/4, 2/3, 1/2, equal lengths so BP = 1.
    # BLEU = 100 * (4/5 * 3/4 * 2/3 * 1/2)^(1/4) = 100 * 0.2^0.25 = 66.874...
    score = corpus_bleu(["a b c d e"], ["a b c d f"])
    assert score.counts == (4, 3, 2, 1) and score.totals == (5, 4, 3, 2)
    assert score.score == pytest.approx(100 * 0.2**0.25, abs=1e-9)


def test_hand_computed_smoothing_and_brevity() -> None:
    # hyp "a b x c" (4 tokens) vs ref "a b y c d" (5): unigrams 3/4, bigrams 1/3 ("a b"),
    # trigrams 0/2 -> first zero order, 100/(2*2) = 25%; 4-grams 0/1 -> second, 100/(4*1) = 25%.
    # BP = exp(1 - 5/4). BLEU = exp(-1/4) * 100 * (0.75 * 1/3 * 0.25 * 0.25)^(1/4) = 27.53...
    score = corpus_bleu(["a b x c"], ["a b y c d"])
    assert score.precisions == pytest.approx((75.0, 100 / 3, 25.0, 25.0))
    assert score.bp == pytest.approx(math.exp(-0.25))
    expected = math.exp(-0.25) * 100 * (0.75 * (1 / 3) * 0.25 * 0.25) ** 0.25
    assert score.score == pytest.approx(expected, abs=1e-9)


def test_clipping_by_hand() -> None:
    # Seven "the" against a reference holding two: only 2 of the 7 unigrams count.
    score = corpus_bleu(["the the the the the the the"], ["the cat is on the mat"])
    assert score.counts[0] == 2 and score.totals[0] == 7


def test_signature_and_text_match_sacrebleu() -> None:
    hyps, refs = ["the cat sat on the mat", "a dog"], ["the cat sat on a mat", "the dog"]
    metric = BLEU()
    theirs = metric.corpus_score(hyps, [refs])
    ours = corpus_bleu(hyps, refs)
    assert ours.signature == SIGNATURE == str(metric.get_signature())
    assert str(ours) == str(theirs)


def test_count_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_bleu(["a", "b"], ["a"])


def test_empty_corpus_and_wrong_types_raise() -> None:
    with pytest.raises(ValueError, match="empty"):
        corpus_bleu([], [])
    with pytest.raises(TypeError, match="sequence of sentences"):
        corpus_bleu("a b", "a b")
    with pytest.raises(TypeError, match="must be a str"):
        corpus_bleu([["a", "b"]], ["a b"])  # type: ignore[list-item]


def test_package_does_not_import_sacrebleu() -> None:
    code = "import sys, divekit.metrics.bleu; print('sacrebleu' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- a realistic corpus: the French side of Tatoeba fra-eng -------------------------------------


@pytest.fixture(scope="module")
def french_sentences() -> list[str]:
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    archive = Path(os.environ.get("DIVEKIT_DATA", default)) / "fra-eng.zip"
    if not archive.is_file():
        pytest.skip(f"fra-eng.zip not found at {archive}; set DIVEKIT_DATA to a data directory")
    with zipfile.ZipFile(archive) as zf:
        lines = zf.read("fra-eng/fra.txt").decode("utf-8").splitlines()
    # The file is sorted by length: take 400 evenly spaced lines to span short and long sentences.
    picked = lines[:: len(lines) // 400][:400]
    return [line.split("\t")[1] for line in picked]


def _perturb(sentence: str, rng: random.Random) -> str:
    words = sentence.split(" ")
    choice = rng.random()
    if choice < 0.3 and len(words) > 1:
        del words[rng.randrange(len(words))]
    elif choice < 0.6:
        rng.shuffle(words)
    elif choice < 0.7:
        return ""
    return " ".join(words)


def test_french_corpus_matches_sacrebleu(french_sentences: list[str]) -> None:
    rng = random.Random(0)
    hyps = [_perturb(s, rng) for s in french_sentences]
    score = assert_matches_sacrebleu(hyps, french_sentences)
    assert 0.0 < score.score < 100.0  # a realistic, partly wrong system


# --- the book's sentence BLEU -------------------------------------------------------------------


def test_book_bleu_book_example() -> None:
    # pred "il est riche ." vs label "il est calme .": equal lengths, BP = 1; unigrams 3/4;
    # bigrams: only "il est" of (il est, est riche, riche .) -> 1/3.
    # score = (3/4)^(1/2) * (1/3)^(1/4) = 0.8660 * 0.7598 = 0.658
    score = book_bleu("il est riche .".split(), "il est calme .".split(), k=2)
    assert score == pytest.approx(math.sqrt(0.75) * (1 / 3) ** 0.25)
    assert round(score, 3) == 0.658


def test_book_bleu_brevity_penalty() -> None:
    # pred "a b" vs label "a b c d": p1 = p2 = 1, BP = exp(1 - 4/2) = exp(-1) = 0.3679
    assert book_bleu(["a", "b"], ["a", "b", "c", "d"]) == pytest.approx(math.exp(-1))


def test_book_bleu_clipping_and_k() -> None:
    # pred "the the the" vs label "the cat": BP = exp(min(0, 1 - 2/3)) = 1; p1 = 1/3 (one "the"
    # usable) -> (1/3)^(1/2) = 0.5774 with k = 1. With k = 2, p2 = 0/2 and the score is 0.
    pred, label = ["the", "the", "the"], ["the", "cat"]
    assert book_bleu(pred, label, k=1) == pytest.approx(3**-0.5)
    assert book_bleu(pred, label, k=2) == 0.0


def test_book_bleu_orders_beyond_prediction_are_skipped() -> None:
    # pred "a" vs label "a b", k = 4: only n = 1 exists, p1 = 1; BP = exp(1 - 2/1) = exp(-1).
    assert book_bleu(["a"], ["a", "b"], k=4) == pytest.approx(math.exp(-1))


def test_book_bleu_empty_sequences() -> None:
    assert book_bleu([], ["a", "b"]) == 0.0
    assert book_bleu([], []) == 1.0
    assert book_bleu(["a"], []) == 0.0
    with pytest.raises(ValueError, match="k must be at least 1"):
        book_bleu(["a"], ["a"], k=0)


token_lists = st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(token_lists, st.integers(1, 4))
def test_book_bleu_perfect_match_is_one(tokens: list[str], k: int) -> None:
    assert book_bleu(tokens, list(tokens), k=k) == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(token_lists, token_lists, st.integers(1, 4))
def test_book_bleu_no_overlap_is_zero(pred: list[str], label: list[str], k: int) -> None:
    shifted = [t.upper() for t in label]  # a disjoint vocabulary: no unigram can match
    assert book_bleu(pred, shifted, k=k) == 0.0


# --- several references per hypothesis ----------------------------------------------------------


@st.composite
def multi_ref_corpus(draw: st.DrawFn) -> tuple[list[str], list[list[str | None]]]:
    """Hypotheses and K reference streams; a hypothesis may lack any reference but one (None) and
    a reference may be the empty string, which sacreBLEU keeps as a reference of length 0."""
    n, k = draw(st.integers(1, 12)), draw(st.integers(1, 4))
    hyps, rows = [], []
    for _ in range(n):
        hyp, ref = draw(perturbed_pair())
        row = [draw(st.one_of(sentences, st.just(""), st.none(), st.just(ref))) for _ in range(k)]
        if all(r is None for r in row):
            row[draw(st.integers(0, k - 1))] = ref
        hyps.append(hyp)
        rows.append(row)
    return hyps, [list(stream) for stream in zip(*rows)]


def assert_multi_matches_sacrebleu(hyps: list[str], streams: list[list[str | None]]) -> BleuScore:
    ours = corpus_bleu_multi(hyps, streams)
    metric = BLEU()
    theirs = metric.corpus_score(hyps, streams)
    assert ours.score == pytest.approx(theirs.score, abs=1e-6)
    assert (list(ours.counts), list(ours.totals)) == (theirs.counts, theirs.totals)
    assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    assert ours.bp == pytest.approx(theirs.bp, abs=1e-12)
    assert ours.signature == str(metric.get_signature())
    return ours


@settings(max_examples=80, deadline=None)
@given(multi_ref_corpus())
def test_multi_reference_corpora_match_sacrebleu(corpus) -> None:
    assert_multi_matches_sacrebleu(*corpus)


def test_multi_reference_by_hand() -> None:
    # "the cat sat": "the cat" comes from reference 1, "sat" from reference 2 (max count per n-gram).
    # Lengths 3 vs references 2 and 4: both 1 away, the shorter (2) is taken, so c = 3 >= r = 2: BP 1.
    score = corpus_bleu_multi(["the cat sat"], [["the cat"], ["a cat sat down"]])
    assert score.counts[:2] == (3, 2) and score.totals[:2] == (3, 2)
    assert (score.sys_len, score.ref_len, score.bp) == (3, 2, 1.0)
    assert score.signature == bleu_signature(2) == "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    assert corpus_bleu_multi(["a", "b"], [["a", "b"], ["c", None]]).signature.startswith("nrefs:var|")


def test_one_stream_is_single_reference_bleu() -> None:
    hyps, refs = ["the cat sat", "on a mat"], ["the cat sat down", "on the mat"]
    assert corpus_bleu_multi(hyps, [refs]) == corpus_bleu(hyps, refs)


def test_reference_streams_transposes_and_pads() -> None:
    assert reference_streams([["a", "b"], ["c"], ["d", "e", "f"]]) == [["a", "c", "d"], ["b", None, "e"], [None, None, "f"]]


def test_multi_reference_bad_input() -> None:
    with pytest.raises(ValueError, match="stream 1 has 1 entries for 2 hypotheses"):
        corpus_bleu_multi(["a", "b"], [["a", "b"], ["a"]])
    with pytest.raises(ValueError, match="hypothesis 1 has no reference"):
        corpus_bleu_multi(["a", "b"], [["a", None], ["a", None]])
    with pytest.raises(TypeError, match="streams"):
        corpus_bleu_multi(["a"], ["a"])
    with pytest.raises(TypeError, match="must be a str"):
        corpus_bleu_multi(["a"], [[3]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="empty"):
        corpus_bleu_multi([], [[]])


def grouped_test_corpus(seed: int) -> tuple[list[str], list[list[str]]]:
    """The real test split grouped by English source: each source's translations are its references;
    the hypothesis is one of them perturbed, or (one in ten) a reference of another source."""
    from tests.conftest import data_dir_with

    if data_dir_with("fra-eng.zip") is None:
        pytest.skip("fra-eng.zip not found under DIVEKIT_DATA")
    from divekit.tasks.translation import real_splits

    groups: dict[tuple[str, ...], list[str]] = {}
    for src, tgt in real_splits(0)[2]:
        groups.setdefault(tuple(src), []).append(" ".join(tgt))
    ref_sets = list(groups.values())
    rng = random.Random(seed)
    hyps = [_perturb(rng.choice(rng.choice(ref_sets) if rng.random() < 0.1 else refs), rng) for refs in ref_sets]
    return hyps, ref_sets


@pytest.mark.integration
def test_real_grouped_test_split_matches_sacrebleu() -> None:
    hyps, ref_sets = grouped_test_corpus(0)
    assert max(map(len, ref_sets)) > 1  # the split really has several translations of one source
    score = assert_multi_matches_sacrebleu(hyps, reference_streams(ref_sets))
    assert score.signature.startswith("nrefs:var|")
    assert 0.0 < score.score < 100.0
