"""The shape every CNN classifier here shares, split as timm splits its models.

``forward_features`` runs the convolutional body ``(B, 1, R, R) -> (B, C, h, w)``; ``forward_head``
pools or flattens and classifies ``(B, C, h, w) -> (B, num_classes)``. A subclass sets
``self.config`` (with ``resolution``, or a class attribute ``resolution``), ``self.features`` and ``self.head``, and names itself in
``name`` so a wrong input batch is reported against the right model.
"""

from __future__ import annotations

import torch
from torch import nn

from divekit.nn.conv import Conv2d as ScratchConv2d
from divekit.shapes import check_image_batch


class ImageClassifier(nn.Module):
    name = "cnn"

    @property
    def resolution(self) -> int:
        """Side of the square input images (a subclass with one fixed size sets it as a class attribute)."""
        return self.config.resolution

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, 1, self.resolution, who=self.name)
        return self.forward_head(self.forward_features(x))


def xavier_init_(model: nn.Module, *, zero_bias: bool = True) -> None:
    """Xavier-uniform weights for every (torch or from-scratch) convolution and linear layer (the book's CNN init).

    ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))`` keeps the variance of activations and of
    gradients roughly constant across layers. Biases become zero, or keep torch's draw with
    ``zero_bias=False``.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, ScratchConv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if zero_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
