"""Fashion-MNIST classification with optional training augmentation and test-time flips.

The same data, split, loss and metrics as ``fashion-mnist`` (:mod:`divekit.tasks.image_classification`);
the model config may switch on two things:

- ``augment``: each training image is zero-padded by ``CROP_PADDING`` pixels on every side, a random
  28x28 window of it is kept, and the window is mirrored left-right with probability 1/2. Both happen
  on the uint8 ``(batch, 28, 28)`` images in one gather, before resizing and standardising, so the
  augmentation costs almost nothing next to a training step.
- ``erase`` (a probability): after the crop and mirror, random erasing (Zhong et al., 2017) replaces
  a random rectangle of each chosen image, 2-40% of its area with aspect ratio 0.3-3.3, by uniform
  noise, so the network cannot lean on any one region of the garment.
- ``test_flip``: evaluation averages the logits of each image and of its mirror image.

Clothing is (nearly) left-right symmetric, so mirrored images are still images of their class. The
random draws use torch's global generator, whose state the Trainer saves in every checkpoint, so a
resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from divekit.data.loader import TensorLoader
from divekit.errors import ShapeError
from divekit.tasks import register_task
from divekit.tasks.image_classification import ImageClassification, prepare_images
from divekit.train.config import TrainConfig
from divekit.train.distributed import DistInfo

# Up to 2 pixels of shift each way: 7% of the image side, enough to regularise without cutting
# off the garment (the objects fill most of the 28x28 frame).
CROP_PADDING = 2


def random_crop_flip(images: torch.Tensor, padding: int = CROP_PADDING, *, flip: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Random ``(H, W)`` windows of the zero-padded images, each mirrored with probability 1/2.

    ``images``: ``(B, H, W)`` of any dtype -> same shape and dtype. Window offsets are uniform on
    ``0 .. 2 * padding`` in each direction, drawn independently per image.
    """
    if images.dim() != 3:
        raise ShapeError(f"random_crop_flip expects images of shape (batch, H, W), got {tuple(images.shape)}")
    b, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    rows = dy[:, None] + torch.arange(h)  # (B, H): source row of each output row
    cols = dx[:, None] + torch.arange(w)  # (B, W): source column of each output column
    if flip:
        mirror = torch.rand(b, generator=generator) < 0.5
        cols = torch.where(mirror[:, None], cols.flip(1), cols)  # reading columns backwards mirrors
    return padded[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_erase(images: torch.Tensor, p: float = 0.5, area: tuple[float, float] = (0.02, 0.4),
                 ratio: tuple[float, float] = (0.3, 3.3), generator: torch.Generator | None = None) -> torch.Tensor:
    """Each uint8 image of ``(B, H, W)`` with probability ``p`` gets one rectangle of uniform noise.

    The rectangle's area fraction is uniform on ``area``, its aspect ratio (height / width) log-uniform
    on ``ratio``; sides are clipped to the image and the corner is uniform over the positions that fit.
    """
    if images.dim() != 3:
        raise ShapeError(f"random_erase expects images of shape (batch, H, W), got {tuple(images.shape)}")
    b, h, w = images.shape
    u = torch.rand(b, 5, generator=generator)
    frac = area[0] + (area[1] - area[0]) * u[:, 0]
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1])
    eh = (torch.sqrt(frac * aspect) * h).round().clamp(1, h).long()  # (B,) rectangle heights
    ew = (torch.sqrt(frac / aspect) * w).round().clamp(1, w).long()
    top = (u[:, 2] * (h - eh + 1)).long()  # uniform over 0 .. h - eh
    left = (u[:, 3] * (w - ew + 1)).long()
    rows, cols = torch.arange(h), torch.arange(w)
    inside = (((rows >= top[:, None]) & (rows < (top + eh)[:, None]))[:, :, None]
              & ((cols >= left[:, None]) & (cols < (left + ew)[:, None]))[:, None, :])  # (B, H, W)
    inside &= (u[:, 4] < p)[:, None, None]
    noise = torch.randint(0, 256, images.shape, generator=generator).to(images.dtype)
    return torch.where(inside, noise, images)


class AugmentedImageClassification(ImageClassification):
    """:class:`ImageClassification` with training augmentation and/or test-time flip averaging."""

    name = "fashion-mnist-aug"

    def __init__(self, *, augment: bool = False, test_flip: bool = False, erase: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= erase <= 1.0:
            raise ValueError(f"erase is a probability, got {erase}")
        self.augment = augment
        self.test_flip = test_flip
        self.erase = erase

    def _train_transform(self, batch):
        x, y = batch
        if self.augment:
            x = random_crop_flip(x)
        if self.erase:
            x = random_erase(x, self.erase)
        return prepare_images(x, self.resolution), y

    def train_loader(self, dist: DistInfo) -> TensorLoader:
        x, y = self.splits["train"]
        return TensorLoader(
            x, y, batch_size=self.batch_size, shuffle=True, seed=self.seed, transform=self._train_transform,
            rank=dist.rank, world_size=dist.world_size,
        )

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(n, classes)`` (flip-averaged with ``test_flip``) and labels ``(n,)``, in eval mode."""
        if not self.test_flip:
            return super().predict(model, split)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        logits, labels = [], []
        for x, y in self.eval_loader(split):
            x = x.to(device)
            both = (model(x).float() + model(x.flip(-1)).float()) / 2  # mean of image and mirror logits
            logits.append(both.cpu())
            labels.append(y)
        model.train(was_training)
        return torch.cat(logits), torch.cat(labels)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "augment": self.augment, "test_flip": self.test_flip, "erase": self.erase}


@register_task("fashion-mnist-aug")
def make(model_config: Any, train_config: TrainConfig, *, limit: int | None = None) -> AugmentedImageClassification:
    return AugmentedImageClassification(
        augment=getattr(model_config, "augment", False),
        test_flip=getattr(model_config, "test_flip", False),
        erase=getattr(model_config, "erase", 0.0),
        batch_size=train_config.batch_size,
        seed=train_config.seed,
        resolution=getattr(model_config, "resolution", 28),
        limit=limit,
        label_smoothing=train_config.label_smoothing,
    )
