"""Training throughput of divekit's from-scratch Transformer against ``torch.nn.Transformer``, in one run.

Both models have the registered recipe's sizes (D 256, 4 heads, FFN 1024, 3 + 3 post-norm layers,
dropout 0.1, target embedding tied to the output layer, sinusoidal positions) and train on the same
random batches of real-looking shape (batch 256, source 12 and target 13 tokens, 9,779 / 8,000
words), with Adam and the same cross-entropy. ``nn.Transformer`` adds a final layer norm after its
encoder and its decoder stacks (1,024 parameters more), which divekit's post-norm stacks do not need. A step is forward, backward and the optimizer
update; the figure is the median step time after warm-up, reported as target tokens per second and
as the ratio divekit / torch (above 1: divekit is faster).

The profile option (``--profile``) prints where divekit's step spends its time by operator group,
so the ratio comes with its reason (attention, the vocabulary softmax, the optimizer).

    python benchmarks/transformer_speed.py [--steps 8] [--threads 2] [--precision fp32|bf16] [--profile]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit.models.transformer import TransformerConfig, build_transformer
from divekit.nn.positional import SinusoidalPositionalEncoding

from _machine import stamp

PAD = 1  # divekit's <pad> index in both vocabularies


class TorchTransformer(nn.Module):
    """The same architecture from ``nn.Transformer``: scaled embeddings, sinusoidal positions, tied output."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(c.src_vocab_size, c.d_model)
        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, c.d_model)
        nn.init.normal_(self.src_embed.weight, std=c.d_model ** -0.5)
        nn.init.normal_(self.tgt_embed.weight, std=c.d_model ** -0.5)
        self.pos = SinusoidalPositionalEncoding(c.d_model, c.max_len, c.dropout)
        self.core = nn.Transformer(c.d_model, c.num_heads, c.num_encoder_layers, c.num_decoder_layers,
                                   c.ffn_hidden, c.dropout, batch_first=True)
        self.out_bias = nn.Parameter(torch.zeros(c.tgt_vocab_size))
        self.scale = math.sqrt(c.d_model)

    def forward(self, src: Tensor, src_len: Tensor, dec_input: Tensor) -> Tensor:
        s, t = src.shape[1], dec_input.shape[1]
        src_pad = torch.arange(s)[None, :] >= src_len[:, None]  # (B, S): True where padding
        causal = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        x = self.pos(self.src_embed(src) * self.scale)
        y = self.pos(self.tgt_embed(dec_input) * self.scale)
        h = self.core(x, y, tgt_mask=causal, src_key_padding_mask=src_pad, memory_key_padding_mask=src_pad)
        return h @ self.tgt_embed.weight.T + self.out_bias  # (B, T, V), tied output layer


def batches(c: TransformerConfig, n: int, batch: int, s: int, t: int, seed: int = 0) -> list[tuple[Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        src = torch.randint(4, c.src_vocab_size, (batch, s), generator=g)
        src_len = torch.randint(s // 2, s + 1, (batch,), generator=g)
        src = src.masked_fill(torch.arange(s)[None, :] >= src_len[:, None], PAD)
        tgt = torch.randint(4, c.tgt_vocab_size, (batch, t), generator=g)
        out.append((src, src_len, tgt[:, :-1], tgt[:, 1:]))
    return out


def step_seconds(model: nn.Module, data: list[tuple[Tensor, ...]], precision: str) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for src, src_len, dec_in, labels in data:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(src, src_len, dec_in)
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def profile_groups(model: nn.Module, data: list[tuple[Tensor, ...]], precision: str) -> dict[str, float]:
    """Share of the profiled self CPU time by operator group."""
    from torch.profiler import ProfilerActivity, profile

    step_seconds(model, data[:1], precision)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step_seconds(model, data[1:3], precision)
    groups = {"matmul": ("addmm", "mm", "bmm", "matmul", "linear"), "softmax": ("softmax",),
              "optimizer": ("adam", "_foreach", "lerp", "addcdiv", "sqrt"), "dropout": ("dropout", "bernoulli"),
              "layer norm": ("layer_norm",), "embedding": ("embedding",)}
    totals = {name: 0.0 for name in (*groups, "other")}
    for event in prof.key_averages():
        name = event.key.lower()
        group = next((g for g, keys in groups.items() if any(k in name for k in keys)), "other")
        totals[group] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {k: round(v / whole, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def run(quick: bool = False, *, steps: int = 8, threads: int = 2, precision: str = "fp32",
        profile: bool = False) -> dict[str, Any]:
    """Median step time of both models on the same batches, tokens/s and the ratio."""
    if quick:
        steps, profile = 2, False
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    c = TransformerConfig(subwords=0)
    data = batches(c, steps + 2, batch=64 if quick else 256, s=12, t=14)
    tokens = data[0][3].numel()
    torch.manual_seed(0)
    ours = build_transformer(c)
    torch.manual_seed(0)
    theirs = TorchTransformer(c)
    result: dict[str, Any] = {"precision": precision, "threads": threads,
                              "batch_target_tokens": tokens,
                              "parameters": {"divekit": sum(p.numel() for p in ours.parameters()),
                                             "torch": sum(p.numel() for p in theirs.parameters())}}
    rates = {}
    for name, model in (("divekit", ours), ("torch", theirs)):
        times = step_seconds(model, data, precision)[2:]  # two warm-up steps
        rates[name] = tokens / statistics.median(times)
    result["tokens_per_s"] = {k: round(v) for k, v in rates.items()}
    result["ratio_divekit_to_torch"] = round(rates["divekit"] / rates["torch"], 3)
    if profile:
        result["divekit_time_by_group"] = profile_groups(ours, data, precision)
        result["torch_time_by_group"] = profile_groups(theirs, data, precision)
    torch.set_num_threads(previous)
    return stamp(result, quick=quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--quick", action="store_true")
    a = parser.parse_args()
    print(json.dumps(run(quick=a.quick, steps=a.steps, threads=a.threads, precision=a.precision,
                         profile=a.profile), indent=2))
