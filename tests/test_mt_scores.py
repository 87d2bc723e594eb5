"""The experiments' MT score table: per-pair and grouped BLEU, chrF and chrF++ equal sacreBLEU's."""

from __future__ import annotations

import pytest

from divekit.metrics.mt_scores import group_by_source, scores_tables

sacrebleu = pytest.importorskip("sacrebleu")

# Three sources, one with three translations, one with two, one with one (references of varying number).
PAIRS = [
    (["he", "runs", "."], ["il", "court", "."]),
    (["i", "am", "tired", "."], ["je", "suis", "fatigué", "."]),
    (["he", "runs", "."], ["il", "court", "vite", "."]),
    (["i", "am", "tired", "."], ["je", "suis", "épuisé", "."]),
    (["go", "!"], ["va", "!"]),
    (["he", "runs", "."], ["lui", "court", "."]),
]
HYPS = {"he runs .": "il court .", "i am tired .": "je suis très fatigué .", "go !": "allez !"}


def test_sources_are_grouped_in_first_seen_order():
    sources, refs, source_of = group_by_source(PAIRS)
    assert [" ".join(s) for s in sources] == ["he runs .", "i am tired .", "go !"]
    assert refs == [["il court .", "il court vite .", "lui court ."], ["je suis fatigué .", "je suis épuisé ."],
                    ["va !"]]
    assert source_of == [0, 1, 0, 1, 2, 0]


def test_the_six_scores_equal_sacrebleu_per_pair_and_grouped():
    outputs = {"system": [HYPS[" ".join(src)] for src, _ in PAIRS]}
    scores, signatures = scores_tables(PAIRS, outputs)
    row = dict(zip(scores["columns"], scores["rows"][0]))
    pair_hyps, pair_refs = outputs["system"], [" ".join(t) for _, t in PAIRS]
    grouped_hyps = list(HYPS.values())
    _, ref_sets, _ = group_by_source(PAIRS)
    streams = [[refs[k] if k < len(refs) else None for refs in ref_sets] for k in range(3)]
    expected = {
        "BLEU per pair": sacrebleu.metrics.BLEU().corpus_score(pair_hyps, [pair_refs]).score,
        "chrF per pair": sacrebleu.metrics.CHRF().corpus_score(pair_hyps, [pair_refs]).score,
        "chrF++ per pair": sacrebleu.metrics.CHRF(word_order=2).corpus_score(pair_hyps, [pair_refs]).score,
        "BLEU grouped": sacrebleu.metrics.BLEU().corpus_score(grouped_hyps, streams).score,
        "chrF grouped": sacrebleu.metrics.CHRF().corpus_score(grouped_hyps, streams).score,
        "chrF++ grouped": sacrebleu.metrics.CHRF(word_order=2).corpus_score(grouped_hyps, streams).score,
    }
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, abs=1e-6), name
    assert row["BLEU grouped"] > row["BLEU per pair"]  # a translation matching any of its references counts
    named = dict(signatures["rows"])
    assert named["BLEU grouped"].startswith("nrefs:var") and named["BLEU per pair"].startswith("nrefs:1")
    assert "nc:6|nw:2" in named["chrF++ grouped"]
