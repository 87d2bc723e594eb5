"""Sampling speed of ``gpt-lm`` with its key/value cache and by recomputing every window.

Usage: ``python benchmarks/gpt_sampling.py [--length 300] [--threads 1] [--checkpoint best.pt]``

An untrained model of the registered shape (or a checkpoint) continues a 16-character prefix greedily.
The cached way carries :class:`~divekit.models.gpt.GPTState` and runs one new position per character
(plus a re-encoding of ``context_keep`` characters each time the window slides); the recomputing way
runs the whole current window from an empty state for every character. Both produce the same text.
"""

from __future__ import annotations

import argparse
import time

import torch

from divekit.decode.sampling import generate
from divekit.models.gpt import GPT, GPTConfig


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", default=None, help="a gpt-lm best.pt (default: untrained)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.checkpoint:
        from divekit.tasks.language_model import load_language_model

        model = load_language_model(args.checkpoint, expect_model="gpt-lm")[0]
    else:
        model = GPT(GPTConfig()).eval()
    prefix = list(range(1, 17))
    results = {}
    with torch.no_grad():
        for name, run in (("cached", lambda: generate(model, prefix, args.length, temperature=0.0)),
                          ("recompute", lambda: recompute(model, prefix, args.length))):
            start = time.perf_counter()
            results[name] = run()
            seconds = time.perf_counter() - start
            print(f"{name:>9}: {args.length / seconds:8.1f} characters/s ({seconds:.2f} s)")
    print("same text:", results["cached"] == results["recompute"])


if __name__ == "__main__":
    main()
