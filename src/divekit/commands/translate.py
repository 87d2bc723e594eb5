"""``divekit translate``: English to French with a trained ``fra-eng`` checkpoint.

    divekit translate --checkpoint runs/seq2seq/best.pt "he is calm ."
    divekit translate --checkpoint best.pt --beam 4 --file sentences.txt   # one sentence a line
    echo "i lost ." | divekit translate --checkpoint best.pt                # stdin, one a line

Each sentence gets the training data's preprocessing (lower case, a space before ``, . ! ?``).
Sentences the model cannot take are refused with the reason, never silently altered:

* an empty sentence;
* a sentence longer than the model's limit (``num_steps - 1`` words: the model was trained on
  sentences of at most ``num_steps`` tokens with ``<eos>``) is refused with that limit named,
  rather than truncated, because a truncated source yields a confidently wrong translation;
* a sentence made only of words outside the English vocabulary.

Words outside the vocabulary are read as ``<unk>``; a note on stderr names them. A subword model
(trained with ``-o subwords=N``) splits any word over its training alphabet into known units, so
only characters never seen in training become ``<unk>``; the note then lists those characters, and
the length limit counts subword tokens. Its translations are joined back into words and never
contain ``<unk>``. One input line gives one output line (an empty one for a refused line); the exit
status is 1 if any was refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from divekit.data.fra_eng import preprocess, tokenize
from divekit.errors import DivekitError


def register(subparsers) -> None:
    p = subparsers.add_parser("translate", help="translate English sentences to French with a checkpoint")
    p.add_argument("sentence", nargs="?", help="an English sentence (default: read --file or stdin)")
    p.add_argument("--checkpoint", type=Path, required=True, help="a fra-eng checkpoint (best.pt)")
    p.add_argument("--file", type=Path, help="translate this file, one sentence a line ('-': stdin)")
    p.add_argument("--beam", type=int, default=1, metavar="K", help="beam width (1: greedy search)")
    p.add_argument("--alpha", type=float, default=0.75, help="length-normalisation exponent of beam search")
    p.set_defaults(handler=run)


def check_sentence(tokens: list[str], translator, max_words: int) -> str | None:
    """Raise :class:`DivekitError` if the model cannot translate ``tokens``; else the note to print, if any."""
    if not tokens:
        raise DivekitError("the sentence is empty")
    if translator.bpe is not None:
        return _check_subwords(tokens, translator, max_words)
    if len(tokens) > max_words:
        raise DivekitError(f"the sentence has {len(tokens)} tokens (words and punctuation); this model "
                           f"translates at most {max_words}")
    unknown = [w for w in tokens if w not in translator.src_vocab]
    if len(unknown) == len(tokens):
        raise DivekitError(f"none of the words is in the model's English vocabulary: {' '.join(tokens)}")
    return f"not in the vocabulary, read as <unk>: {' '.join(unknown)}" if unknown else None


def _check_subwords(tokens: list[str], translator, max_words: int) -> str | None:
    pieces = translator.model_tokens(tokens)
    if len(pieces) > max_words:
        raise DivekitError(f"the sentence has {len(pieces)} subword tokens; this model translates at most {max_words}")
    outside = translator.bpe.outside_alphabet(tokens)
    if outside and all(p not in translator.src_vocab for p in pieces):
        raise DivekitError(f"none of the characters is in the model's training alphabet: {' '.join(tokens)}")
    if outside:
        return f"characters outside the training alphabet, read as <unk>: {' '.join(outside)}"
    return None


def _lines(args) -> tuple[list[str], bool]:
    """The sentences to translate, and whether they came one a line (file or stdin)."""
    if args.sentence is not None:
        if args.file is not None:
            raise DivekitError("give either a sentence or --file, not both")
        return [args.sentence], False
    if args.file is None or str(args.file) == "-":
        return sys.stdin.read().splitlines(), True
    try:
        return args.file.read_text(encoding="utf-8").splitlines(), True
    except (OSError, UnicodeDecodeError) as e:
        raise DivekitError(f"cannot read '{args.file}': {e}") from None


def run(args: argparse.Namespace) -> int:
    from divekit.tasks.translation import load_translator

    if args.beam < 1:
        raise DivekitError(f"--beam must be at least 1, got {args.beam}")
    if args.alpha < 0:
        raise DivekitError(f"--alpha must be non-negative, got {args.alpha}")
    lines, many = _lines(args)
    translator, _ = load_translator(args.checkpoint)
    max_words = translator.num_steps - 1  # one position is taken by <eos>
    accepted: list[tuple[int, list[str]]] = []
    for n, line in enumerate(lines, 1):
        tokens = tokenize(preprocess(line.strip()))
        try:
            note = check_sentence(tokens, translator, max_words)
        except DivekitError as e:
            if not many:
                raise
            print(f"divekit: line {n}: {e}", file=sys.stderr)
            continue
        if note:
            where = f"line {n}: " if many else ""
            print(f"note: {where}{note}", file=sys.stderr)
        accepted.append((n, tokens))
    outputs = dict(zip((n for n, _ in accepted), translator.translate(
        [t for _, t in accepted], beam_size=args.beam, alpha=args.alpha))) if accepted else {}
    for n in range(1, len(lines) + 1):
        print(outputs.get(n, ""))
    return 0 if len(accepted) == len(lines) else 1
