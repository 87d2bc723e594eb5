"""How fast ``gpt-lm`` leaves the bigram level with a learned position table and with ALiBi.

Usage: ``python benchmarks/gpt_positions.py [--steps 400] [--lr 2e-3 3e-3] [--quick]``

Each variant trains the registered model shape (no attention dropout) from the same seed on the
same random (32, 128) windows of The Time Machine's training block, with AdamW, 100 warm-up steps
and a cosine decay to ``--steps``, in bf16 autocast on one thread. Every 50 steps it prints, and
records, the perplexity of 60 fixed 128-character windows of the validation block (each read from
an empty context). A learned table starts near zero, so until the heads learn where the previous
characters are the model predicts from the current character only: its curve sits near the
bigram perplexity (about 9.6) for the first couple of hundred steps. ALiBi biases every head
towards recent characters from the first step.

The variants run one after the other in one process; on the 2-core machine run nothing else beside it.
"""

from __future__ import annotations

import argparse
import json
import math
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
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(vx)[0].float().flatten(0, 1), vy.flatten())
            points[step] = round(math.exp(loss.item()), 3)
            print(f"{positions} lr {lr:g} step {step}: val perplexity {points[step]}", flush=True)
            model.train()
        if step == steps:
            break
        for group in opt.param_groups:  # linear warm-up, then cosine decay to 0 at `steps`
            group["lr"] = lr * min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * step / steps))
        x, y = windows(train, torch.randint(0, len(train) - WINDOW - 1, (BATCH,), generator=g))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x)[0].float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return {"positions": positions, "lr": lr, "val_perplexity_by_step": points,
            "seconds": round(time.perf_counter() - start, 1)}


def run(quick: bool = False, *, steps: int = 400, lrs: tuple[float, ...] = (2e-3,)) -> dict:
    """Both variants' validation curves at each peak learning rate of ``lrs``."""
    steps = 20 if quick else steps
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    data = load_lm_data("char")
    train, val = torch.as_tensor(data.train), torch.as_tensor(data.val)
    try:
        runs = [curve(positions, lr, steps, train, val) for lr in lrs for positions in ("learned", "alibi")]
    finally:
        torch.set_num_threads(previous)
    return stamp({"steps": steps, "runs": runs}, quick=quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, nargs="+", default=[2e-3])
    parser.add_argument("--quick", action="store_true", help="20 steps per variant: shows that it runs")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, steps=args.steps, lrs=tuple(args.lr)), indent=2))


if __name__ == "__main__":
    main()
