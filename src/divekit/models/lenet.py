"""LeNet-5 (LeCun et al., 1998) as the book presents it, and a modern variant.

Classic (sigmoid, average pooling), for 28x28 input:

    conv 5x5, 6 ch, pad 2 -> sigmoid -> avgpool 2   (batch, 6, 14, 14)
    conv 5x5, 16 ch       -> sigmoid -> avgpool 2   (batch, 16, 5, 5)
    flatten -> 120 -> sigmoid -> 84 -> sigmoid -> 10

Modern: the same layout with ReLU, max pooling and batch normalisation after each convolution and
hidden linear layer (the book's "BN LeNet" uses the same placement), which trains far faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from divekit.registry import register_model
from divekit.shapes import check_image_batch


@dataclass(frozen=True)
class LeNetConfig:
    num_classes: int = 10
    modern: bool = False  # ReLU, max pooling and batch norm instead of sigmoid and average pooling


class LeNet(nn.Module):
    """LeNet for ``(batch, 1, 28, 28)`` images -> logits ``(batch, num_classes)``."""

    def __init__(self, config: LeNetConfig) -> None:
        super().__init__()
        self.config = config
        act = nn.ReLU if config.modern else nn.Sigmoid
        pool = nn.MaxPool2d if config.modern else nn.AvgPool2d

        def norm(n: int, conv: bool) -> nn.Module:
            if not config.modern:
                return nn.Identity()
            return nn.BatchNorm2d(n) if conv else nn.BatchNorm1d(n)

        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), norm(6, True), act(), pool(2),
            nn.Conv2d(6, 16, 5), norm(16, True), act(), pool(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), norm(120, False), act(),
            nn.Linear(120, 84), norm(84, False), act(),
            nn.Linear(84, config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, 1, 28, who="lenet")
        return self.classifier(self.features(x))


@register_model("lenet", config=LeNetConfig, task="fashion-mnist", chapter="cnn",
                description="LeNet-5 as in the book (sigmoid, average pooling); modern=True: ReLU, max pool, BN",
                recipe={"epochs": 10, "lr": 0.9, "batch_size": 256})
def build(config: LeNetConfig) -> nn.Module:
    return LeNet(config)
