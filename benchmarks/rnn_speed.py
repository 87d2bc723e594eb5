"""Training throughput of the scratch LSTM against ``nn.LSTM`` on a character-level language model.

The model is an input layer (one-hot over V=28 characters, or a 256-wide embedding), one LSTM layer
with H=256, and a linear read-out to V logits; one training step is forward, cross-entropy,
backward and an SGD update on a batch of B=32 sequences of T=35 tokens, on 2 threads by default.
Throughput is B*T tokens over the step's wall time. Tokens are random: the arithmetic, hence the
speed, does not depend on the text.

The CPU is shared, so each engine is timed in many short rounds (one step each), interleaved with
the other engines so that a busy spell hurts all of them alike, and the best round counts: the
speed of a quiet CPU. The load average before and after is reported to judge the run. ``run()``
returns the numbers; ``python benchmarks/rnn_speed.py [--quick]`` prints them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit.nn.rnn import LSTM

from _machine import stamp

BATCH, STEPS, HIDDEN, VOCAB, EMBED = 32, 35, 256, 28, 256
THREADS = 2
ENGINES: dict[str, Callable[[int], nn.Module]] = {
    "torch": lambda width: nn.LSTM(width, HIDDEN, batch_first=True),
    "scratch_fast": lambda width: LSTM(width, HIDDEN, batch_first=True, fast=True),
    "scratch_reference": lambda width: LSTM(width, HIDDEN, batch_first=True, fast=False),
}


class CharModel(nn.Module):
    """Tokens ``(B, T)`` -> logits ``(B, T, V)`` through one recurrent layer."""

    def __init__(self, rnn_factory: Callable[[int], nn.Module], embed: bool) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMBED) if embed else None
        self.rnn = rnn_factory(EMBED if embed else VOCAB)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embedding(tokens) if self.embedding is not None else F.one_hot(tokens, VOCAB).float()
        output, _ = self.rnn(x)
        return self.head(output)


def _train_step(model: nn.Module, tokens: Tensor, targets: Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(tokens).reshape(-1, VOCAB), targets.reshape(-1))
        loss.backward()
        optimizer.step()

    return step


def _seconds_per_step(step: Callable[[], None], iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - start) / iters


def _best_throughputs(embed: bool, rounds: int, iters: int, budget_s: float, seed: int,
                      warmup: int = 3) -> dict[str, float]:
    """Tokens/s of every engine on one input kind: the best of up to ``rounds`` interleaved rounds."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (BATCH, STEPS), generator=gen)
    targets = torch.randint(0, VOCAB, (BATCH, STEPS), generator=gen)
    steps = {}
    for name, factory in ENGINES.items():
        torch.manual_seed(seed)
        steps[name] = _train_step(CharModel(factory, embed), tokens, targets)
        for _ in range(warmup):  # allocator, thread pool, oneDNN primitive cache
            steps[name]()
    best = dict.fromkeys(steps, float("inf"))
    deadline = time.perf_counter() + budget_s
    for r in range(rounds):
        if r >= 2 and time.perf_counter() > deadline:  # a loaded CPU can be ten times slower
            break
        for name, step in steps.items():
            best[name] = min(best[name], _seconds_per_step(step, iters))
    return {name: BATCH * STEPS / seconds for name, seconds in best.items()}


def run(
    quick: bool = False, *, rounds: int = 60, iters: int = 1, budget_s: float = 40.0, seed: int = 0,
    threads: int = THREADS,
) -> dict:
    """Best tokens/s per input kind and engine, and each scratch engine's ratio to ``nn.LSTM``.

    Rounds stop once ``budget_s`` seconds are spent (half per input kind), after at least two.
    Quick: one warm-up step and two rounds per engine.
    """
    warmup = 3
    if quick:
        rounds, budget_s, warmup = 2, 0.0, 1
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    throughput = {
        inputs: _best_throughputs(inputs == "embedding", rounds, iters, budget_s / 2, seed, warmup)
        for inputs in ("one_hot", "embedding")
    }
    ratios = {
        inputs: {name: tps[name] / tps["torch"] for name in tps if name != "torch"}
        for inputs, tps in throughput.items()
    }
    return stamp({
        "setup": {"batch": BATCH, "steps": STEPS, "hidden": HIDDEN, "vocab": VOCAB, "embedding": EMBED,
                  "threads": torch.get_num_threads(), "max_rounds": rounds, "iters_per_round": iters,
                  "warmup_steps": warmup,
                  "torch": torch.__version__},
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "tokens_per_s": throughput,
        "ratio_to_torch": ratios,
    }, quick=quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two rounds: shows that it runs")
    print(json.dumps(run(parser.parse_args().quick), indent=2))
