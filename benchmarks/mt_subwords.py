"""Subwords and translation metrics on the real fra-eng split: no model is trained.

    python benchmarks/mt_subwords.py          # prints JSON; benchmarks/run.py collects it too

* BPE learning time, ours against subword-nmt (when installed) on the same training text, and
  whether the two merge lists are equal;
* for several joint vocabulary sizes: merges needed, sentence lengths in tokens, sentences longer
  than the models' ``num_steps`` of 25, and ``<unk>`` tokens in the test split, beside the word
  vocabularies' ``<unk>`` rates;
* how far human translations agree: for every test source with several translations, the first
  translation scored against the others, with one reference and with all of them (BLEU, chrF,
  chrF++). This is a ceiling of sorts for what single-reference figures can show.
"""

from __future__ import annotations

import io
import json
import statistics
import time

from _machine import stamp

SIZES = (2000, 8000, 16000)
MERGES = (1000, 8000)


def _timing(train) -> dict:
    from divekit.data.bpe import learn_bpe, word_counts

    text = "".join(" ".join(side) + "\n" for pair in train for side in pair)
    out = {}
    for n in MERGES:
        start = time.perf_counter()
        ours = learn_bpe(word_counts(line.split(" ") for line in text.split("\n")), n)
        row = {"ours_s": time.perf_counter() - start}
        try:
            from subword_nmt.learn_bpe import learn_bpe as reference
        except ImportError:
            out[n] = row
            continue
        codes = io.StringIO()
        start = time.perf_counter()
        reference(io.StringIO(text), codes, n)
        row["subword_nmt_s"] = time.perf_counter() - start
        theirs = [tuple(line.split(" ")) for line in codes.getvalue().rstrip("\n").split("\n")[1:]]
        row["equal_merges"] = ours.merges == theirs
        out[n] = row
    return out


def _lengths(pairs, side: int) -> dict:
    lens = [len(p[side]) + 1 for p in pairs]  # + <eos>
    return {"mean": statistics.mean(lens), "over_25": sum(n > 25 for n in lens)}


def _vocabularies(train, test) -> dict:
    from divekit.data.subwords import learn_joint, segment_pairs, subword_vocab
    from divekit.tasks.translation import make_vocab

    src, tgt = make_vocab([s for s, _ in train], 9779, side="source"), make_vocab([t for _, t in train], 8000, side="target")
    words = {
        "en_unk_rate": sum(w not in src for s, _ in test for w in s) / sum(len(s) for s, _ in test),
        "fr_unk_rate": sum(w not in tgt for _, t in test for w in t) / sum(len(t) for _, t in test),
        "en_tokens": _lengths(test, 0), "fr_tokens": _lengths(test, 1),
    }
    out = {"words (9,779 / 8,000)": words}
    for size in SIZES:
        start = time.perf_counter()
        bpe = learn_joint(train, size)
        vocab = subword_vocab(bpe, segment_pairs(train, bpe))
        seconds = time.perf_counter() - start
        seg = segment_pairs(test, bpe)
        out[f"subwords={size}"] = {
            "merges": len(bpe.merges), "alphabet": len(bpe.alphabet), "learn_and_index_s": seconds,
            "test_unk_tokens": sum(tok not in vocab for p in seg for side in p for tok in side),
            "en_tokens": _lengths(seg, 0), "fr_tokens": _lengths(seg, 1),
        }
    return out


def _human_agreement(test) -> dict:
    from divekit.metrics.mt_scores import group_by_source
    from divekit.metrics.bleu import corpus_bleu, corpus_bleu_multi, reference_streams
    from divekit.metrics.chrf import corpus_chrf

    sources, ref_sets, _ = group_by_source(test)
    several = [refs for refs in ref_sets if len(refs) > 1]
    hyps, others = [refs[0] for refs in several], [refs[1:] for refs in several]
    one, every = [[refs[0] for refs in others]], reference_streams(others)
    return {
        "test_pairs": len(test), "distinct_sources": len(sources), "sources_with_several": len(several),
        "most_references": max(map(len, ref_sets)),
        "one_reference": {"bleu": corpus_bleu(hyps, one[0]).score, "chrf": corpus_chrf(hyps, one).score,
                          "chrf++": corpus_chrf(hyps, one, word_order=2).score},
        "all_other_references": {"bleu": corpus_bleu_multi(hyps, every).score, "chrf": corpus_chrf(hyps, every).score,
                                 "chrf++": corpus_chrf(hyps, every, word_order=2).score},
    }


def run(quick: bool = False) -> dict:
    """BPE timings, vocabulary statistics and human agreement.

    Quick: the timings on the first 5,000 training pairs and the agreement on 1,000 test pairs; the
    vocabulary statistics need the whole split and are left out.
    """
    from divekit.tasks.translation import real_splits

    train, _, test = real_splits(0)
    if quick:
        return stamp({"bpe_timing": _timing(train[:5000]), "human_agreement": _human_agreement(test[:1000])},
                     quick=True)
    return stamp({"bpe_timing": _timing(train), "vocabularies": _vocabularies(train, test),
                  "human_agreement": _human_agreement(test)}, quick=False)


if __name__ == "__main__":
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
