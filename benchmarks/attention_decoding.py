"""Greedy decoding speed of a Transformer with and without its key/value cache.

Usage: ``python benchmarks/attention_decoding.py [--d-model 256] [--layers 3] [--sentences 200] [--max-len 25]``

An untrained model of the recipe's shape decodes random sources for exactly ``max_len`` steps
(``<eos>`` is made unreachable), so both decoders do the same number of steps. The cached decoder
runs every block on one new position per step; the recomputing one on the whole prefix.
"""

from __future__ import annotations

import argparse
import time

import torch

from divekit.decode.greedy import greedy_search
from divekit.models.transformer import RecomputingDecoder, TransformerConfig, build_transformer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--max-len", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = TransformerConfig(src_vocab_size=9779, tgt_vocab_size=8000, d_model=args.d_model,
                               num_heads=4, ffn_hidden=4 * args.d_model, num_encoder_layers=args.layers,
                               num_decoder_layers=args.layers, dropout=0.0)
    model = build_transformer(config).eval()
    with torch.no_grad():
        model.decoder.out.bias.fill_(0.0)
        model.decoder.out.bias[3] = -1e9  # <eos> never wins: every row decodes max_len steps
    src = torch.randint(4, 9779, (args.sentences, 10))
    src_len = torch.full((args.sentences,), 10)
    for name, decoder in (("cached", model), ("no cache", RecomputingDecoder(model))):
        start = time.perf_counter()
        greedy_search(decoder, src, src_len, bos=2, eos=3, max_len=args.max_len)
        seconds = time.perf_counter() - start
        print(f"{name:>9}: {args.sentences / seconds:8.1f} sentences/s ({seconds:.2f} s, {args.max_len} steps)")


if __name__ == "__main__":
    main()
