"""What ``gpt-lm``'s two speed choices buy: ALiBi against a learned position table, packed dropout masks.

Usage: ``python benchmarks/gpt_lm.py [--steps 400] [--lr 2e-3 4e-3] [--quick]``

1. ``curves``: each position scheme trains the registered model shape (no attention dropout) from
   the same seed on the same random (32, 128) windows of The Time Machine's training block, with
   AdamW, 100 warm-up steps and a cosine decay to ``--steps``, in bf16 autocast on one thread.
   Every 50 steps it records the perplexity of 60 fixed 128-character windows of the validation
   block (each read from an empty context). A learned table starts near zero, so until the heads
   learn where the previous characters are the model predicts from the current character only:
   its curve sits near the bigram perplexity (about 9.6) for the first couple of hundred steps.
   ALiBi biases every head towards recent characters from the first step.
2. ``step_ms``: one bf16 training step (forward, backward, AdamW) on a (32, 128) batch, two
   threads, best and median of 6 after 3 warm-up steps, for the position scheme, torch's or packed
   dropout masks, and attention dropout on or off.

On the 2-core machine run nothing else beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

from divekit.data.timemachine import load_lm_data
from divekit.models.gpt import GPT, GPTConfig

from _machine import stamp

BATCH, WINDOW, WARMUP, EVERY = 32, 128, 100, 50


def windows(block: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-character targets ``(N, WINDOW)`` starting at ``starts``."""
    x = torch.stack([block[i: i + WINDOW] for i in starts.tolist()])
    y = torch.stack([block[i + 1: i + WINDOW + 1] for i in starts.tolist()])
    return x, y


def lm_loss(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-character cross-entropy of ``x (N, WINDOW)`` against ``y``, in bf16 autocast."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return F.cross_entropy(model(x)[0].float().flatten(0, 1), y.flatten())


def train_step(model: GPT, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *, clip: bool) -> None:
    """Forward, backward (gradient norm clipped at 1 if ``clip``) and one optimizer update."""
    loss = lm_loss(model, x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def curve(positions: str, lr: float, steps: int, train: torch.Tensor, val: torch.Tensor) -> dict:
    """Validation perplexity every ``EVERY`` steps of one variant."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(positions=positions, attn_dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    g = torch.Generator().manual_seed(1)  # the same windows for every variant
    vx, vy = windows(val, torch.arange(0, WINDOW * 60, WINDOW))
    points, start = {}, time.perf_counter()
    for step in range(steps + 1):
        if step % EVERY == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                loss = lm_loss(model, vx, vy)
            points[step] = round(math.exp(loss.item()), 3)
            print(f"{positions} lr {lr:g} step {step}: val perplexity {points[step]}", file=sys.stderr, flush=True)
            model.train()
        if step == steps:
            break
        for group in opt.param_groups:  # linear warm-up, then cosine decay to 0 at `steps`
            group["lr"] = lr * min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * step / steps))
        x, y = windows(train, torch.randint(0, len(train) - WINDOW - 1, (BATCH,), generator=g))
        train_step(model, opt, x, y, clip=True)
    return {"positions": positions, "lr": lr, "val_perplexity_by_step": points,
            "seconds": round(time.perf_counter() - start, 1)}


STEP_VARIANTS = {  # GPTConfig overrides
    "learned, torch masks, no attention dropout": {"positions": "learned", "packed_dropout": False,
                                                   "attn_dropout": 0.0},
    "alibi, torch masks, no attention dropout": {"packed_dropout": False, "attn_dropout": 0.0},
    "alibi, packed masks, no attention dropout": {"attn_dropout": 0.0},
    "alibi, packed masks, attention dropout 0.1 (registered)": {},
    "alibi, no dropout": {"dropout": 0.0, "attn_dropout": 0.0},
}


def step_ms(overrides: dict, repeats: int) -> dict:
    """Best and median milliseconds of one bf16 training step of the registered shape with ``overrides``."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**overrides)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    x, y = torch.randint(0, 28, (BATCH, WINDOW)), torch.randint(0, 28, (BATCH, WINDOW))
    times = []
    for k in range(3 + repeats):
        start = time.perf_counter()
        train_step(model, opt, x, y, clip=False)
        if k >= 3:
            times.append(time.perf_counter() - start)
    best = min(times)
    return {"best_ms": round(best * 1000, 1), "median_ms": round(sorted(times)[len(times) // 2] * 1000, 1),
            "characters_per_s": round(BATCH * WINDOW / best)}


def run(quick: bool = False, *, steps: int = 400, lrs: tuple[float, ...] = (2e-3,)) -> dict:
    """Both schemes' validation curves at each peak learning rate of ``lrs``, and the step times."""
    steps, repeats = (20, 1) if quick else (steps, 6)
    previous = torch.get_num_threads()
    data = load_lm_data("char")
    train, val = torch.as_tensor(data.train), torch.as_tensor(data.val)
    try:
        torch.set_num_threads(1)
        curves = [curve(positions, lr, steps, train, val) for lr in lrs for positions in ("learned", "alibi")]
        torch.set_num_threads(2)
        steps_ms = {name: step_ms(overrides, repeats) for name, overrides in STEP_VARIANTS.items()}
    finally:
        torch.set_num_threads(previous)
    return stamp({"steps": steps, "curves": curves, "step_ms_two_threads": steps_ms}, quick=quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, nargs="+", default=[2e-3])
    parser.add_argument("--quick", action="store_true", help="20 steps per curve, one timed step: shows that it runs")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, steps=args.steps, lrs=tuple(args.lr)), indent=2))


if __name__ == "__main__":
    main()
