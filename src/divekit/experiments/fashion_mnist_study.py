"""Train an experiment's own network on Fashion-MNIST with the shared Trainer and score it.

The generalization and stability studies compare variants of one network (with or without dropout,
batch norm, a given initialisation) that are not registered models. They still train through
:class:`divekit.train.trainer.Trainer` on the registered ``fashion-mnist`` task, so data split,
preprocessing, loop and evaluation are those of every other model. One :class:`FashionMNIST`
instance is shared by all runs of a study so the files are read once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from divekit.data.fashion_mnist import FashionMNIST
from divekit.tasks.image_classification import ImageClassification
from divekit.train.config import TrainConfig
from divekit.train.trainer import Trainer


@dataclass
class StudyRun:
    """Per-epoch Trainer history plus the final model's accuracy and loss on each scored split."""

    history: list[dict[str, Any]]
    scores: dict[str, dict[str, float]]  # split -> {"accuracy", "loss"}, in evaluation mode
    seconds: float

    @property
    def test_accuracy(self) -> float:
        return self.scores["test"]["accuracy"]


def train_study_model(model: nn.Module, *, name: str, model_config: dict[str, Any], data: FashionMNIST,
                      epochs: int, lr: float, limit: int | None, seed: int, device: str = "auto",
                      batch_size: int = 256, progress: bool = False,
                      splits: tuple[str, ...] = ("train", "test"), val_size: int = 5_000) -> StudyRun:
    """Train ``model`` (images ``(B, 1, 28, 28)`` -> logits ``(B, 10)``) by SGD and score ``splits``.

    ``limit`` keeps the first ``limit`` training images; ``"train"`` in ``splits`` scores exactly
    those images in evaluation mode (dropout off, batch norm on running statistics). ``val_size``
    is the task's validation split (5,000 images, as for every registered model).
    """
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device)
    task = ImageClassification(batch_size=batch_size, seed=seed, limit=limit, data=data, val_size=val_size)
    trainer = Trainer(model, task, config, model_name=name, model_config=model_config, run_dir=None,
                      progress=progress, log=lambda *_: None)
    result = trainer.fit()
    scores = {split: task.evaluate(trainer.model, split) for split in splits}
    return StudyRun(history=result.history, scores=scores, seconds=result.seconds)
