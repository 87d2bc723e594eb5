"""Multilayer perceptron for images: flatten, then hidden layers with ReLU and optional dropout.

    h_0 = flatten(x);  h_i = dropout(relu(h_{i-1} W_i^T + b_i));  logits = h_L W_out^T + b_out
    x: (batch, 1, size, size) -> logits: (batch, classes)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from divekit.errors import DivekitError
from divekit.registry import register_model
from divekit.shapes import check_image_batch


@dataclass(frozen=True)
class MLPConfig:
    resolution: int = 28  # side of the square input image
    num_classes: int = 10
    hidden: tuple[int, ...] = (256,)  # width of each hidden layer; the book's MLP has one of 256
    dropout: float = 0.0  # dropout after each hidden activation (0: none)

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise DivekitError(f"mlp dropout must be in [0, 1), got {self.dropout}")
        if not self.hidden or min(self.hidden) < 1:
            raise DivekitError(f"mlp hidden widths must be positive, got {self.hidden}")


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Flatten()]
        width = config.resolution**2
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = h
        layers.append(nn.Linear(width, config.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, 1, self.config.resolution, who="mlp")
        return self.net(x)


@register_model("mlp", config=MLPConfig, task="fashion-mnist", chapter="foundations",
                description="multilayer perceptron with ReLU and optional dropout",
                recipe={"epochs": 10, "lr": 0.1, "batch_size": 256})
def build(config: MLPConfig) -> nn.Module:
    return MLP(config)
