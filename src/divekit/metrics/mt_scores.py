"""Translation scores as the field reports them: BLEU, chrF and chrF++, per pair and grouped by source.

* per pair: every (source, reference) pair is one sentence with one reference;
* grouped: each distinct English source is one sentence whose references are all of its
  translations in the split (the split is grouped by source, so none of them lies elsewhere): the
  multi-reference scoring of the MT literature, where a correct translation that matches another
  reference of the same source is no longer counted wrong.

All six equal sacreBLEU's (tests/test_bleu.py, tests/test_chrf.py) and carry its signatures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from divekit.metrics.bleu import corpus_bleu, corpus_bleu_multi, reference_streams
from divekit.metrics.chrf import corpus_chrf


def group_by_source(pairs: Sequence) -> tuple[list[list[str]], list[list[str]], list[int]]:
    """``(sources, reference_sets, source_of_pair)``: distinct sources in first-seen order, the
    references of each (joined words), and for every pair the index of its source."""
    index: dict[tuple[str, ...], int] = {}
    sources: list[list[str]] = []
    refs: list[list[str]] = []
    source_of: list[int] = []
    for src, tgt in pairs:
        key = tuple(src)
        if key not in index:
            index[key] = len(sources)
            sources.append(list(src))
            refs.append([])
        refs[index[key]].append(" ".join(tgt))
        source_of.append(index[key])
    return sources, refs, source_of


def score_all(hyps: list[str], pair_refs: list[str], ref_sets: list[list[str]],
              source_of: list[int]) -> dict[str, object]:
    """The six scores of one decoding method: BLEU, chrF and chrF++, per pair and grouped.

    ``hyps[i]`` translates source i; ``pair_refs[j]`` is pair j's reference, ``source_of[j]`` its source.
    """
    pair_hyps = [hyps[i] for i in source_of]
    streams = reference_streams(ref_sets)
    return {
        "BLEU per pair": corpus_bleu(pair_hyps, pair_refs),
        "chrF per pair": corpus_chrf(pair_hyps, [pair_refs]),
        "chrF++ per pair": corpus_chrf(pair_hyps, [pair_refs], word_order=2),
        "BLEU grouped": corpus_bleu_multi(hyps, streams),
        "chrF grouped": corpus_chrf(hyps, streams),
        "chrF++ grouped": corpus_chrf(hyps, streams, word_order=2),
    }


def scores_tables(pairs: Sequence, outputs: Mapping[str, Sequence[str]]) -> list[dict]:
    """Two report tables: the six scores for each decoding method, and their sacreBLEU signatures.

    ``pairs`` are (source tokens, target tokens); ``outputs[method][j]`` translates pair ``j``'s
    source (one translation per source: the first of its pairs stands for all).
    """
    _, ref_sets, source_of = group_by_source(pairs)
    first: dict[int, int] = {}
    for j, i in enumerate(source_of):
        first.setdefault(i, j)
    pair_refs = [" ".join(t) for _, t in pairs]
    rows, signatures = [], {}
    for method, hyps in outputs.items():
        scores = score_all([hyps[first[i]] for i in range(len(ref_sets))], pair_refs, ref_sets, source_of)
        rows.append([method, *(s.score for s in scores.values())])
        signatures.update({name: s.signature for name, s in scores.items()})
    return [{"title": f"Test scores as MT papers report them: {len(pairs):,} pairs, and their {len(ref_sets):,} "
                      f"distinct sources each with all its references (grouped)",
             "columns": ["method", *signatures], "rows": rows},
            {"title": "Signatures of those scores (sacreBLEU's format)", "columns": ["score", "signature"],
             "rows": [[name, signature] for name, signature in signatures.items()]}]
