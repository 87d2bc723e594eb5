"""``divekit sample``: continue a prefix with a trained ``timemachine`` language model.

    divekit sample --checkpoint runs/gru-lm/best.pt --prefix "time traveller" --length 200 --temperature 0.8
    divekit sample gru-lm --checkpoint best.pt --top-k 5        # refuse a checkpoint of another model

The model knows only the characters of its training vocabulary (lower-case ``a``-``z`` and the
space for The Time Machine). The prefix is lower-cased first, as the training text was (with a
note); a prefix still holding any other character is refused with those characters named, rather
than silently mapped to ``<unk>``, which is never sampled either. ``--temperature 0`` is greedy
decoding; ``--seed`` makes sampling repeatable. The text is printed as it is drawn, and
``--length`` is capped at :data:`MAX_LENGTH` characters.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from divekit.argtypes import real, whole
from divekit.errors import DivekitError


MAX_LENGTH = 100_000  # about a novel's chapter; a longer request is more likely a typo than a wish


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="generate text from a character language model checkpoint")
    p.add_argument("model", nargs="?", help="expected model name (a checkpoint of another model is refused)")
    p.add_argument("--checkpoint", type=Path, required=True, help="a timemachine checkpoint (best.pt)")
    p.add_argument("--prefix", default="time traveller", help="text to continue")
    p.add_argument("--length", type=whole(0, MAX_LENGTH), default=200, help=f"characters to generate (at most {MAX_LENGTH:,})")
    p.add_argument("--temperature", type=real(0), default=0.8, help="softmax temperature; 0 is greedy")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="sample among the K likeliest only")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampler")
    p.set_defaults(handler=run)


def encode_prefix(prefix: str, vocab) -> list[int]:
    """Indices of the prefix's characters; :class:`DivekitError` naming any the vocabulary lacks."""
    if not prefix:
        raise DivekitError("the prefix is empty; give at least one character")
    unknown = sorted({ch for ch in prefix if ch not in vocab or ch == vocab.idx_to_token[vocab.unk]})
    if unknown:
        known = "".join(t for t in vocab.idx_to_token[1:] if len(t) == 1)
        raise DivekitError(f"the prefix holds characters outside the model's vocabulary: "
                           f"{', '.join(repr(c) for c in unknown)}; it knows only {known!r}")
    return [vocab[ch] for ch in prefix]


def run(args: argparse.Namespace) -> int:
    from divekit.decode.sampling import stream
    from divekit.tasks.language_model import load_language_model

    if args.top_k is not None and args.top_k < 1:
        raise DivekitError(f"--top-k must be at least 1, got {args.top_k}")
    model, vocab, _ = load_language_model(args.checkpoint, expect_model=args.model)
    prefix = args.prefix.lower()
    if prefix != args.prefix:
        print("note: the prefix was lower-cased, as the training text was", file=sys.stderr)
    ids = encode_prefix(prefix, vocab)
    sys.stdout.write(prefix)
    tokens = stream(model, ids, args.length, temperature=args.temperature, top_k=args.top_k,
                    generator=torch.Generator().manual_seed(args.seed), never=[vocab.unk])
    for k, token in enumerate(tokens, 1):
        sys.stdout.write(vocab.idx_to_token[token])
        if k % 64 == 0:
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
