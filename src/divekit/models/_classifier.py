"""The shape every CNN classifier here shares, split as timm splits its models.

``forward_features`` runs the convolutional body ``(B, 1, R, R) -> (B, C, h, w)``; ``forward_head``
pools or flattens and classifies ``(B, C, h, w) -> (B, num_classes)``. A subclass sets
``self.config`` (with ``resolution``), ``self.features`` and ``self.head``, and names itself in
``name`` so a wrong input batch is reported against the right model.
"""

from __future__ import annotations

import torch
from torch import nn

from divekit.shapes import check_image_batch


class ImageClassifier(nn.Module):
    name = "cnn"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, 1, self.config.resolution, who=self.name)
        return self.forward_head(self.forward_features(x))


def xavier_init_(model: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every convolution and linear layer (the book's CNN init)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
