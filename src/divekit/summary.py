"""Layer-by-layer output shapes and parameter counts, found by running one forward pass with hooks."""

from __future__ import annotations

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


def summarize(model: nn.Module, example: torch.Tensor) -> list[LayerRow]:
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
            model(example)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return rows


def format_summary(rows: list[LayerRow], model: nn.Module, example: torch.Tensor) -> str:
    width = max([len(r.name) for r in rows] + [5])
    lines = [f"input {tuple(example.shape)}", f"{'layer':<{width}}  {'type':<18} {'output shape':<22} {'params':>10}"]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.kind:<18} {str(r.output_shape):<22} {r.params:>10,}")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(f"total parameters {total:,} (trainable {trainable:,})")
    lines.append(f"forward FLOPs per image {count_flops(model, example[:1]).total:,}")
    return "\n".join(lines)
