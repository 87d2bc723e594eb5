"""``divekit mt-evaluate``: BLEU and chrF of a ``fra-eng`` checkpoint, greedy and beam search.

    divekit mt-evaluate --checkpoint runs/seq2seq/best.pt                 # test split, beam 4
    divekit mt-evaluate --checkpoint best.pt --split val --beam 1 4 8 --alpha 0.75

For each decoding method it prints corpus BLEU, chrF and chrF++ (all equal to sacreBLEU's) two
ways:

* per pair: every (source, reference) pair of the split is one sentence with one reference, the
  figure training reports;
* grouped: the split is grouped by English source (all translations of a source sit in one
  split), so each distinct source is one sentence whose references are all of its translations
  in the split. This is the multi-reference BLEU of the MT literature; a correct translation that
  matches another reference of the same source is no longer counted wrong.

Each distinct source is translated once and its translation serves every pair it appears in.
The sacreBLEU-style signatures follow the figures, so the numbers can be set beside published
ones. References are lower-cased and punctuation-spaced like the training data; a subword model's
output is joined back into words before it is scored.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from divekit.errors import DivekitError


def register(subparsers) -> None:
    p = subparsers.add_parser("mt-evaluate", help="test BLEU and chrF of a translation checkpoint (greedy and beam)")
    p.add_argument("--checkpoint", type=Path, required=True, help="a fra-eng checkpoint (best.pt)")
    p.add_argument("--split", choices=["val", "test"], default="test")
    p.add_argument("--beam", type=int, nargs="+", default=[4], metavar="K",
                   help="beam widths to score beside greedy search (default: 4)")
    p.add_argument("--alpha", type=float, default=0.75, help="length-normalisation exponent of beam search")
    p.add_argument("--limit", type=int, help="score only the split's first N pairs")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from divekit.metrics.mt_scores import group_by_source, score_all
    from divekit.tasks.translation import BLEU_UNK, load_translator, real_splits

    if min(args.beam) < 1:
        raise DivekitError(f"--beam widths must be at least 1, got {args.beam}")
    if args.alpha < 0:
        raise DivekitError(f"--alpha must be non-negative, got {args.alpha}")
    if args.limit is not None and args.limit < 1:
        raise DivekitError(f"--limit must be positive, got {args.limit}")
    translator, ckpt = load_translator(args.checkpoint)
    _, val, test = real_splits(int(ckpt["task_state"].get("split_seed", 0)))
    pairs = (val if args.split == "val" else test)[: args.limit]
    sources, ref_sets, source_of = group_by_source(pairs)
    kind = f", {len(translator.src_vocab)} subwords" if translator.bpe is not None else ""
    print(f"{ckpt['model']} ({args.checkpoint}, epoch {ckpt['epoch']}{kind}) on {args.split}: {len(pairs)} pairs, "
          f"{len(sources)} distinct sources")
    signatures: dict[str, str] = {}
    for k in sorted({1, *args.beam}):
        hyps = translator.translate(sources, beam_size=k, alpha=args.alpha, unk=BLEU_UNK)
        print("  greedy" if k == 1 else f"  beam {k}, alpha {args.alpha:g}")
        for name, score in score_all(hyps, [" ".join(t) for _, t in pairs], ref_sets, source_of).items():
            print(f"    {name:<16} {score}")
            signatures[name] = score.signature
    print("signatures:")
    for name, signature in signatures.items():
        print(f"  {name:<16} {signature}")
    return 0
