"""AlexNet (Krizhevsky et al., 2012) as the book trains it: five convolutions, three dense layers.

    conv 11x11/4, 96, pad 1 -> relu -> maxpool 3x3/2
    conv 5x5, 256, pad 2    -> relu -> maxpool 3x3/2
    conv 3x3, 384 -> relu -> conv 3x3, 384 -> relu -> conv 3x3, 256 -> relu -> maxpool 3x3/2
    flatten -> 4096 -> relu -> dropout 0.5 -> 4096 -> relu -> dropout 0.5 -> 10

(one input channel and ten classes instead of ImageNet's three and a thousand, no local response
normalisation and no split across two GPUs, as in the book).

Two variants, chosen by ``resolution`` (shapes for one image):

- the book's (``resolution=224``; any side >= 65 works): ``(1, 224, 224) -> (96, 54, 54) -> (96, 26, 26)
  -> (256, 12, 12) -> (256, 5, 5) -> 6400 -> 4096 -> 4096 -> 10``.
- native 28x28 (``resolution=28``): the first convolution is 3x3/1 with padding 1 (an 11x11/4 one
  would shrink 28 pixels to 5), the pooling schedule is the book's, and every width is a quarter
  of the book's (24, 64, 96, 96, 64 channels; 1024-unit dense layers), which keeps the ratio of
  convolutional to dense parameters: ``(1, 28, 28) -> (24, 13, 13) -> (64, 6, 6) -> (64, 2, 2) -> 256
  -> 1024 -> 1024 -> 10``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from divekit.errors import DivekitError
from divekit.models._classifier import ImageClassifier, xavier_init_
from divekit.registry import register_model

BOOK_CONV_WIDTHS = (96, 256, 384, 384, 256)
BOOK_HIDDEN = 4096
NATIVE_SCALE = 0.25  # the native variant's widths relative to the book's
BOOK_MIN_RESOLUTION = 65  # smallest side the 11x11/4 stem and three 3x3/2 pools leave at least 1 pixel of


@dataclass(frozen=True)
class AlexNetConfig:
    resolution: int = 28  # input side; 28 builds the native variant, 224 (the book's) or any side >= 65 the book's
    width: float = 1.0  # multiplier on every width (native widths are already a quarter of the book's)
    dropout: float = 0.5  # after each hidden dense layer (the book's)
    num_classes: int = 10
    augment: bool = False  # random shifted crops and mirror images during training (task fashion-mnist-aug)
    test_flip: bool = False  # average the logits of each evaluation image and its mirror image
    test_shift: bool = False  # also average over the image moved one pixel each way

    def __post_init__(self) -> None:
        if self.resolution != 28 and self.resolution < BOOK_MIN_RESOLUTION:
            raise DivekitError(f"alexnet resolution must be 28 (native) or at least {BOOK_MIN_RESOLUTION}, "
                               f"got {self.resolution}")
        if self.width <= 0 or not 0 <= self.dropout < 1:
            raise DivekitError(
                f"alexnet width must be positive and dropout in [0, 1), got {self.width}, {self.dropout}")


class AlexNet(ImageClassifier):
    """AlexNet for ``(batch, 1, R, R)`` images -> logits ``(batch, num_classes)``."""

    name = "alexnet"

    def __init__(self, config: AlexNetConfig) -> None:
        super().__init__()
        self.config = config
        native = config.resolution == 28
        scale = config.width * (NATIVE_SCALE if native else 1.0)
        c1, c2, c3, c4, c5 = (max(1, round(c * scale)) for c in BOOK_CONV_WIDTHS)
        hidden = max(1, round(BOOK_HIDDEN * scale))
        first = nn.Conv2d(1, c1, 3, padding=1) if native else nn.Conv2d(1, c1, 11, stride=4, padding=1)
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731 - a fresh module per use
        self.features = nn.Sequential(
            first, relu(), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(c1, c2, 5, padding=2), relu(), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(c2, c3, 3, padding=1), relu(),
            nn.Conv2d(c3, c4, 3, padding=1), relu(),
            nn.Conv2d(c4, c5, 3, padding=1), relu(), nn.MaxPool2d(3, stride=2),
        )
        side = _pooled_side(config.resolution, native)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c5 * side * side, hidden), relu(), nn.Dropout(config.dropout),
            nn.Linear(hidden, hidden), relu(), nn.Dropout(config.dropout),
            nn.Linear(hidden, config.num_classes),
        )
        xavier_init_(self)  # the book's initialisation for its CNNs
        # forward_features: ``(B, 1, R, R)`` -> ``(B, C_5, s, s)`` (native ``(B, 64, 2, 2)``, book ``(B, 256, 5, 5)``).
        # forward_head: ``(B, C_5, s, s)`` -> logits ``(B, num_classes)``.


def _pooled_side(resolution: int, native: bool) -> int:
    """Side of the last feature map: the stem, then three 3x3/2 max-pools (5x5 and 3x3 convs keep size)."""
    side = resolution if native else (resolution + 2 - 11) // 4 + 1
    for _ in range(3):
        side = (side - 3) // 2 + 1
    return side


# divekit's recipe: AdamW with a one-cycle schedule. Without batch norm, SGD leaves this network's
# initial plateau slowly; Adam's per-weight step sizes get it learning within a few hundred steps.
@register_model("alexnet", config=AlexNetConfig, task="fashion-mnist-aug", chapter="cnn",
                description="AlexNet (ReLU, dropout, wide dense layers); resolution=224 for the book's network",
                recipe={"epochs": 10, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "batch_size": 128,
                        "schedule": "onecycle", "channels_last": True})
def build(config: AlexNetConfig) -> nn.Module:
    return AlexNet(config)
