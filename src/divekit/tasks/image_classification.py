"""Fashion-MNIST classification: 55,000 training, 5,000 validation and 10,000 test images.

Images stay uint8 ``(n, 28, 28)`` in memory; each batch is converted to float ``(batch, 1, R, R)``,
resized to the model's resolution ``R`` when it differs from 28, and standardised with the training
set's mean and standard deviation. Converting per batch keeps memory small even for the 224-pixel
models (60,000 images at 224x224 in float32 would need 12 GB).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from divekit.data.fashion_mnist import FashionMNIST, normalize, to_float
from divekit.data.loader import TensorLoader
from divekit.train.distributed import DistInfo
from divekit.tasks import register_task
from divekit.train.config import TrainConfig
from divekit.train.task import StepOutput


def prepare_images(images: torch.Tensor, resolution: int = 28) -> torch.Tensor:
    """uint8 ``(batch, 28, 28)`` -> standardised float ``(batch, 1, resolution, resolution)``."""
    return normalize(to_float(images, resize=resolution))


class ImageClassification:
    """Cross-entropy training and accuracy evaluation on Fashion-MNIST."""

    name = "fashion-mnist"
    monitor = "val_accuracy"
    monitor_mode = "max"

    def __init__(
        self,
        *,
        batch_size: int,
        seed: int = 0,
        resolution: int = 28,
        limit: int | None = None,
        label_smoothing: float = 0.0,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        data: FashionMNIST | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.resolution = resolution
        self.label_smoothing = label_smoothing
        self.limit = limit
        self.eval_batch_size = eval_batch_size
        splits = (data or FashionMNIST()).train_val_test(val_size=val_size, seed=seed)
        train_x, train_y = splits.train
        if limit is not None:
            train_x, train_y = train_x[:limit], train_y[:limit]
        self.splits = {"train": (train_x, train_y), "val": splits.val, "test": splits.test}

    def _transform(self, batch):
        x, y = batch
        return prepare_images(x, self.resolution), y

    def train_loader(self, dist: DistInfo) -> TensorLoader:
        x, y = self.splits["train"]
        return TensorLoader(
            x, y, batch_size=self.batch_size, shuffle=True, seed=self.seed, transform=self._transform,
            rank=dist.rank, world_size=dist.world_size,
        )

    def eval_loader(self, split: str) -> TensorLoader:
        x, y = self.splits[split]
        return TensorLoader(x, y, batch_size=self.eval_batch_size, transform=self._transform)

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        pass

    def step(self, model: nn.Module, batch) -> StepOutput:
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        correct = (logits.argmax(1) == y).sum().item()
        return StepOutput(loss=loss, count=y.shape[0], correct=correct)

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(n, classes)`` and labels ``(n,)`` for a split, in eval mode."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        logits, labels = [], []
        for x, y in self.eval_loader(split):
            logits.append(model(x.to(device)).float().cpu())
            labels.append(y)
        model.train(was_training)
        return torch.cat(logits), torch.cat(labels)

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        logits, labels = self.predict(model, split)
        return {
            "loss": F.cross_entropy(logits, labels).item(),
            "accuracy": (logits.argmax(1) == labels).float().mean().item(),
        }

    def state(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "limit": self.limit}

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        return torch.zeros(batch_size, 1, self.resolution, self.resolution)


@register_task("fashion-mnist")
def make(model_config: Any, train_config: TrainConfig, *, limit: int | None = None) -> ImageClassification:
    return ImageClassification(
        batch_size=train_config.batch_size,
        seed=train_config.seed,
        resolution=getattr(model_config, "resolution", 28),
        limit=limit,
        label_smoothing=train_config.label_smoothing,
    )
