"""A plain deep MLP for the stability studies: ``depth`` hidden layers of one width.

    h_0 = flatten(x)
    h_l = act(norm_l(h_{l-1} W_l^T + b_l))        l = 1 .. depth,   W_1: (width, in), W_l: (width, width)
    out = h_depth W_out^T + b_out                                     W_out: (classes, width)

``norm`` is none, the scratch :class:`divekit.nn.batchnorm.BatchNorm1d` or ``nn.BatchNorm1d``; both
normalisations sit between the linear map and the activation, as in the original batch-norm paper.
Shapes: ``x`` ``(batch, *)`` with ``prod(*) = in_features`` -> ``(batch, out_features)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from divekit.errors import DivekitError, ShapeError
from divekit.nn.batchnorm import BatchNorm1d

ACTIVATIONS: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
NORMS = ("none", "scratch", "torch")


@dataclass(frozen=True)
class DeepMLPConfig:
    in_features: int = 784  # flattened input size (28 x 28 images)
    out_features: int = 10  # classes (or regression outputs)
    width: int = 128  # every hidden layer has this many units
    depth: int = 10  # number of hidden layers
    activation: str = "sigmoid"  # sigmoid | tanh | relu
    norm: str = "none"  # none | scratch (divekit BatchNorm1d) | torch (nn.BatchNorm1d)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise DivekitError(f"activation must be one of {', '.join(ACTIVATIONS)}, got '{self.activation}'")
        if self.norm not in NORMS:
            raise DivekitError(f"norm must be one of {', '.join(NORMS)}, got '{self.norm}'")
        if min(self.in_features, self.out_features, self.width, self.depth) < 1:
            raise DivekitError("deep MLP sizes must be positive")


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "scratch":
        return BatchNorm1d(width)
    if kind == "torch":
        return nn.BatchNorm1d(width)
    return nn.Identity()


class DeepMLP(nn.Module):
    def __init__(self, config: DeepMLPConfig) -> None:
        super().__init__()
        self.config = config
        blocks: list[nn.Module] = []
        width_in = config.in_features
        for _ in range(config.depth):
            blocks.append(nn.Sequential(nn.Linear(width_in, config.width), _norm(config.norm, config.width),
                                        ACTIVATIONS[config.activation]()))
            width_in = config.width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(config.width, config.out_features)

    def linear_layers(self) -> list[nn.Linear]:
        """The ``depth + 1`` linear maps from input to output, in order."""
        return [block[0] for block in self.blocks] + [self.head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, *)`` -> ``(batch, out_features)``."""
        h = x.reshape(x.shape[0], -1) if x.dim() > 1 else x
        if h.dim() != 2 or h.shape[1] != self.config.in_features:
            raise ShapeError(f"deep MLP expects input (batch, {self.config.in_features}) after flattening; "
                             f"got {tuple(x.shape)}")
        return self.head(self.blocks(h))
