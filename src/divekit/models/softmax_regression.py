"""Softmax regression: the linear baseline every image classifier must beat.

    logits = flatten(x) W^T + b,   x: (batch, 1, size, size) -> logits: (batch, classes)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from divekit.registry import register_model
from divekit.shapes import check_image_batch


@dataclass(frozen=True)
class SoftmaxRegressionConfig:
    resolution: int = 28  # side of the square input image
    num_classes: int = 10  # Fashion-MNIST has ten


class SoftmaxRegression(nn.Module):
    def __init__(self, config: SoftmaxRegressionConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.resolution**2, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, 1, self.config.resolution, who="softmax-regression")
        return self.linear(x.flatten(1))


@register_model(
    "softmax-regression",
    config=SoftmaxRegressionConfig,
    task="fashion-mnist",
    chapter="foundations",
    description="linear classifier on raw pixels (baseline)",
    recipe={"epochs": 10, "lr": 0.1, "batch_size": 256},
)
def build(config: SoftmaxRegressionConfig) -> nn.Module:
    return SoftmaxRegression(config)
