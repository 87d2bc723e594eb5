"""Greedy decoding speed of a Transformer with and without its key/value cache.

Usage: ``python benchmarks/attention_decoding.py [--d-model 256] [--layers 3] [--sentences 200] [--max-len 25]
[--quick]``

An untrained model of the recipe's shape decodes random sources for exactly ``max_len`` steps
(``<eos>`` is made unreachable), so both decoders do the same number of steps. The cached decoder
runs every block on one new position per step; the recomputing one on the whole prefix.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from divekit.decode.greedy import greedy_search
from divekit.models.transformer import RecomputingDecoder, TransformerConfig, build_transformer

from _machine import stamp

# Quick mode: a one-layer model of width 64 decoding 16 sentences for 8 steps.
QUICK = {"d_model": 64, "layers": 1, "sentences": 16, "max_len": 8}


def run(quick: bool = False, *, d_model: int = 256, layers: int = 3, sentences: int = 200, max_len: int = 25,
        threads: int = 1) -> dict[str, Any]:
    """Sentences per second of greedy decoding with the cache and without it, and their ratio."""
    if quick:
        d_model, layers, sentences, max_len = (QUICK[k] for k in ("d_model", "layers", "sentences", "max_len"))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = TransformerConfig(src_vocab_size=9779, tgt_vocab_size=8000, d_model=d_model,
                               num_heads=4, ffn_hidden=4 * d_model, num_encoder_layers=layers,
                               num_decoder_layers=layers, dropout=0.0)
    model = build_transformer(config).eval()
    with torch.no_grad():
        model.decoder.out.bias.fill_(0.0)
        model.decoder.out.bias[3] = -1e9  # <eos> never wins: every row decodes max_len steps
    src = torch.randint(4, 9779, (sentences, 10))
    src_len = torch.full((sentences,), 10)
    decoders = {}
    for name, decoder in (("cached", model), ("no_cache", RecomputingDecoder(model))):
        start = time.perf_counter()
        greedy_search(decoder, src, src_len, bos=2, eos=3, max_len=max_len)
        seconds = time.perf_counter() - start
        decoders[name] = {"seconds": round(seconds, 3), "sentences_per_s": round(sentences / seconds, 1)}
    return stamp({"setup": {"d_model": d_model, "layers": layers, "sentences": sentences, "max_len": max_len,
                            "threads": threads, "torch": torch.__version__},
                  "decoders": decoders,
                  "cache_speedup": round(decoders["no_cache"]["seconds"] / decoders["cached"]["seconds"], 2)},
                 quick=quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--max-len", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: shows that it runs, measures nothing")
    args = parser.parse_args()
    result = run(args.quick, d_model=args.d_model, layers=args.layers, sentences=args.sentences,
                 max_len=args.max_len, threads=args.threads)
    steps = result["setup"]["max_len"]
    for name, figures in result["decoders"].items():
        print(f"{name:>9}: {figures['sentences_per_s']:8.1f} sentences/s ({figures['seconds']:.2f} s, {steps} steps)")


if __name__ == "__main__":
    main()
