"""Layer-by-layer output shapes and parameter counts, found by running one forward pass with hooks."""

from __future__ import annotations

from typing import Any

from dataclasses import dataclass

import torch
from torch import nn

from divekit.flops import count_flops


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int


def summarize(model: nn.Module, example) -> list[LayerRow]:
    """Rows for every leaf module in the order it runs on ``example``."""
    rows: list[LayerRow] = []
    hooks = []

    def hook(name: str):
        def record(module: nn.Module, inputs, output) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
            params = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append(LayerRow(name, type(module).__name__, shape, params))

        return record

    for name, module in model.named_modules():
        if not list(module.children()) and not isinstance(module, nn.Identity):
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*example) if isinstance(example, tuple) else model(example)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return rows


def example_input(task: str, config: Any, batch: int = 1) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """A forward-pass input for a model of ``task`` built with ``config`` (sizes from the config)."""
    g = torch.Generator().manual_seed(0)
    if task == "timemachine":
        steps = getattr(config, "num_steps", 35)
        return torch.randint(0, getattr(config, "vocab_size", 28), (batch, steps), generator=g)
    if task == "fra-eng":
        steps = getattr(config, "num_steps", 10)
        src = torch.randint(4, config.src_vocab_size, (batch, steps), generator=g)
        dec = torch.randint(4, config.tgt_vocab_size, (batch, steps), generator=g)
        return src, torch.full((batch,), steps), dec
    if task in ("masked-lm", "eng-question"):
        tokens = torch.randint(5, config.vocab_size, (batch, config.num_steps), generator=g)
        return tokens, torch.zeros_like(tokens), torch.full((batch,), config.num_steps)
    size = getattr(config, "resolution", 28)
    return torch.zeros(batch, 1, size, size)


def format_summary(rows: list[LayerRow], model: nn.Module, example) -> str:
    width = max([len(r.name) for r in rows] + [5])
    shapes = [tuple(t.shape) for t in example] if isinstance(example, tuple) else tuple(example.shape)
    lines = [f"input {shapes}", f"{'layer':<{width}}  {'type':<18} {'output shape':<22} {'params':>10}"]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.kind:<18} {str(r.output_shape):<22} {r.params:>10,}")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(f"total parameters {total:,} (trainable {trainable:,})")
    if isinstance(example, torch.Tensor) and example.is_floating_point():  # FLOPs are counted for image models
        lines.append(f"forward FLOPs per image {count_flops(model, example[:1]).total:,}")
    return "\n".join(lines)
