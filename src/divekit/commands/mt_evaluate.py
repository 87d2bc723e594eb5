"""``divekit mt-evaluate``: corpus BLEU of a ``fra-eng`` checkpoint, greedy and beam search.

    divekit mt-evaluate --checkpoint runs/seq2seq/best.pt                 # test split, beam 4
    divekit mt-evaluate --checkpoint best.pt --split val --beam 1 4 8 --alpha 0.75

Prints one line per decoding method (BLEU, n-gram precisions, brevity penalty, lengths) and the
sacreBLEU-style signature, so the numbers can be set beside published ones. The split is the fixed
source-grouped one (5,000 validation and 5,000 test pairs); references are lower-cased and
punctuation-spaced like the training data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from divekit.errors import DivekitError


def register(subparsers) -> None:
    p = subparsers.add_parser("mt-evaluate", help="test BLEU of a translation checkpoint (greedy and beam)")
    p.add_argument("--checkpoint", type=Path, required=True, help="a fra-eng checkpoint (best.pt)")
    p.add_argument("--split", choices=["val", "test"], default="test")
    p.add_argument("--beam", type=int, nargs="+", default=[4], metavar="K",
                   help="beam widths to score beside greedy search (default: 4)")
    p.add_argument("--alpha", type=float, default=0.75, help="length-normalisation exponent of beam search")
    p.add_argument("--limit", type=int, help="score only the split's first N pairs")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from divekit.metrics.bleu import SIGNATURE
    from divekit.tasks.translation import load_translator, real_splits

    if min(args.beam) < 1:
        raise DivekitError(f"--beam widths must be at least 1, got {args.beam}")
    if args.alpha < 0:
        raise DivekitError(f"--alpha must be non-negative, got {args.alpha}")
    if args.limit is not None and args.limit < 1:
        raise DivekitError(f"--limit must be positive, got {args.limit}")
    translator, ckpt = load_translator(args.checkpoint)
    _, val, test = real_splits(int(ckpt["task_state"].get("split_seed", 0)))
    pairs = (val if args.split == "val" else test)[: args.limit]
    print(f"{ckpt['model']} ({args.checkpoint}, epoch {ckpt['epoch']}) on {args.split}, {len(pairs)} pairs:")
    for k in sorted({1, *args.beam}):
        score, _ = translator.bleu(pairs, beam_size=k, alpha=args.alpha)
        method = "greedy" if k == 1 else f"beam {k}, alpha {args.alpha:g}"
        print(f"  {method:<22} {score}")
    print(f"signature: {SIGNATURE}")
    return 0
