"""Classification metrics computed on whole tensors."""

from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows of ``logits`` ``(n, classes)`` whose argmax equals ``labels`` ``(n,)``."""
    return (logits.argmax(1) == labels).float().mean().item()


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``C[i, j]`` of examples with true class ``i`` predicted as ``j``, shape ``(classes, classes)``."""
    if predicted.shape != labels.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and labels {tuple(labels.shape)} differ in shape")
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
