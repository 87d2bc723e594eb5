"""chrF and chrF++ against sacreBLEU's CHRF (the reference implementation), and by hand."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.metrics.bleu import reference_streams
from divekit.metrics.chrf import ChrfScore, chrf_signature, corpus_chrf
from tests.test_bleu import grouped_test_corpus, multi_ref_corpus

sacre_metrics = pytest.importorskip("sacrebleu.metrics")


def assert_matches_sacrebleu(hyps, streams, **kwargs) -> ChrfScore:
    ours = corpus_chrf(hyps, streams, **kwargs)
    metric = sacre_metrics.CHRF(**kwargs)
    theirs = metric.corpus_score(hyps, streams)
    assert ours.score == pytest.approx(theirs.score, abs=1e-6)
    assert ours.name == theirs.name
    assert ours.signature == str(metric.get_signature())
    assert str(ours) == f"{theirs.name} = {theirs.score:.2f}"
    return ours


ORDERS = [{}, {"word_order": 2}, {"char_order": 3, "word_order": 1, "beta": 1}]


@settings(max_examples=60, deadline=None)
@given(multi_ref_corpus(), st.sampled_from(ORDERS))
def test_random_multi_reference_corpora_match_sacrebleu(corpus, orders) -> None:
    assert_matches_sacrebleu(*corpus, **orders)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(" ab.,!'(é", max_size=12), min_size=2, max_size=16), st.sampled_from(ORDERS))
def test_random_text_with_punctuation_edges_matches_sacrebleu(lines, orders) -> None:
    half = len(lines) // 2
    assert_matches_sacrebleu(lines[:half], [lines[half:2 * half]], **orders)


def test_chrf_by_hand() -> None:
    # "ab" vs "abc": order 1: P = 2/2, R = 2/3; order 2: P = 1/1, R = 1/2; orders 3..6: the
    # hypothesis has none, so they do not count. P = 1, R = 7/12; chrF2 = 5PR / (4P + R).
    p, r = 1.0, (2 / 3 + 1 / 2) / 2
    score = corpus_chrf(["ab"], [["abc"]])
    assert score.score == pytest.approx(100 * 5 * p * r / (4 * p + r))
    assert score.name == "chrF2" and score.signature == chrf_signature(1)
    assert score.signature == "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0"
    assert corpus_chrf(["a b"], [["a b"]], word_order=2).name == "chrF2++"
    assert corpus_chrf(["x"], [["y"]]).score == 0.0


def test_best_reference_per_sentence_is_kept() -> None:
    both = corpus_chrf(["le chat"], [["un chien"], ["le chat"]])
    assert both.score == pytest.approx(100.0)
    assert both.signature.startswith("nrefs:2|")


def test_bad_orders_raise() -> None:
    with pytest.raises(ValueError, match="char_order"):
        corpus_chrf(["a"], [["a"]], char_order=0)


@pytest.mark.integration
@pytest.mark.parametrize("orders", ORDERS[:2], ids=["chrF", "chrF++"])
def test_real_grouped_test_split_matches_sacrebleu(orders) -> None:
    hyps, ref_sets = grouped_test_corpus(1)
    score = assert_matches_sacrebleu(hyps, reference_streams(ref_sets), **orders)
    assert 0.0 < score.score < 100.0
    single = assert_matches_sacrebleu(hyps, [[refs[0] for refs in ref_sets]], **orders)
    assert score.score >= single.score  # more references can only help a sentence's best match


def test_package_does_not_import_sacrebleu() -> None:
    code = "import sys, divekit.metrics.chrf, divekit.data.bpe; print('sacrebleu' in sys.modules, 'subword_nmt' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
