"""Shape checks for module boundaries: shape bugs are the most common bugs here, so fail early and say why."""

from __future__ import annotations

import torch

from divekit.errors import ShapeError


def check_image_batch(x: torch.Tensor, channels: int, size: int | None, *, who: str) -> None:
    """Require a float image batch ``(batch, channels, size, size)`` (``size`` None: any square size)."""
    expected = f"(batch, {channels}, {size or 'H'}, {size or 'W'})"
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{who} expects a tensor of shape {expected}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ShapeError(f"{who} expects a floating-point image batch {expected}, got dtype {x.dtype}")
    if x.dim() != 4 or x.shape[1] != channels or (size is not None and tuple(x.shape[2:]) != (size, size)):
        raise ShapeError(f"{who} expects an image batch of shape {expected}, got {tuple(x.shape)}")
