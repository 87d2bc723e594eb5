"""``divekit sample``: continue a prefix with a trained ``timemachine`` language model.

    divekit sample --checkpoint runs/gru-lm/best.pt --prefix "time traveller" --length 200 --temperature 0.8
    divekit sample gru-lm --checkpoint best.pt --top-k 5        # refuse a checkpoint of another model

The model knows only the characters of its training vocabulary (lower-case ``a``-``z`` and the
space for The Time Machine); a prefix holding any other character is refused with those characters
named, rather than silently mapped to ``<unk>``, which the model never saw in training.
``--temperature 0`` is greedy decoding; ``--seed`` makes sampling repeatable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from divekit.errors import DivekitError


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="generate text from a character language model checkpoint")
    p.add_argument("model", nargs="?", help="expected model name (a checkpoint of another model is refused)")
    p.add_argument("--checkpoint", type=Path, required=True, help="a timemachine checkpoint (best.pt)")
    p.add_argument("--prefix", default="time traveller", help="text to continue")
    p.add_argument("--length", type=int, default=200, help="characters to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 is greedy")
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
    from divekit.decode.sampling import generate
    from divekit.tasks.language_model import load_language_model

    if args.length < 0:
        raise DivekitError(f"--length must be non-negative, got {args.length}")
    if args.temperature < 0:
        raise DivekitError(f"--temperature must be non-negative, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise DivekitError(f"--top-k must be at least 1, got {args.top_k}")
    model, vocab, _ = load_language_model(args.checkpoint, expect_model=args.model)
    ids = encode_prefix(args.prefix, vocab)
    new = generate(model, ids, args.length, temperature=args.temperature, top_k=args.top_k,
                   generator=torch.Generator().manual_seed(args.seed))
    print(args.prefix + "".join(vocab.to_tokens(new)))
    return 0
