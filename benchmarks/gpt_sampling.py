"""Sampling speed of ``gpt-lm`` with its key/value cache and by recomputing every window.

Usage: ``python benchmarks/gpt_sampling.py [--length 300] [--threads 1] [--checkpoint best.pt]``

An untrained model of the registered shape (or a checkpoint) continues a 16-character prefix greedily.
The cached way carries :class:`~divekit.models.gpt.GPTState` and runs one new position per character
(plus a re-encoding of ``context_keep`` characters each time the window slides); the recomputing way
runs the whole current window from an empty state for every character. Both produce the same text.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from divekit.decode.sampling import generate
from divekit.models.gpt import GPT, GPTConfig

from _machine import stamp


def recompute(model: GPT, prefix: list[int], length: int) -> list[int]:
    """Greedy continuation with no state: each step reruns the window the sliding rule gives.

    The prefix must fit one window (``len(prefix) <= max_len``).
    """
    keep, max_len = model.config.context_keep, model.config.max_len
    window, out = list(prefix), []
    for _ in range(length):
        logits, _ = model(torch.tensor([window]))
        token = int(logits[0, -1].argmax())
        out.append(token)
        if len(window) == max_len:
            window = window[len(window) - keep:] if keep else []
        window.append(token)
    return out


def run(quick: bool = False, *, length: int = 300, threads: int = 1, checkpoint: str | None = None) -> dict:
    """Characters per second of greedy sampling with the cache and by recomputing each window."""
    if quick:
        length = 40
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if checkpoint:
        from divekit.tasks.language_model import load_language_model

        model = load_language_model(checkpoint, expect_model="gpt-lm")[0]
    else:
        model = GPT(GPTConfig()).eval()
    prefix = list(range(1, 17))
    texts, rates = {}, {}
    try:
        with torch.no_grad():
            for name, sample in (("cached", lambda: generate(model, prefix, length, temperature=0.0)),
                                 ("recompute", lambda: recompute(model, prefix, length))):
                start = time.perf_counter()
                texts[name] = sample()
                rates[name] = length / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return stamp({"length": length, "threads": threads, "trained": bool(checkpoint),
                  "characters_per_s": {k: round(v, 1) for k, v in rates.items()},
                  "same_text": texts["cached"] == texts["recompute"]}, quick=quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", default=None, help="a gpt-lm best.pt (default: untrained)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, length=args.length, threads=args.threads, checkpoint=args.checkpoint),
                     indent=2))


if __name__ == "__main__":
    main()
