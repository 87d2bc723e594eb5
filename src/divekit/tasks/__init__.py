"""Tasks tie a registered model to its data, loss and evaluation (see ``divekit.train.task.Task``).

A model's registry entry names its task; :func:`make_task` builds it from the model config, the
training config and the command line's data options.
"""

from __future__ import annotations

from typing import Any

from divekit.errors import UnknownNameError
from divekit.registry import suggest
from divekit.train.config import TrainConfig
from divekit.train.task import Task


def make_task(name: str, model_config: Any, train_config: TrainConfig, *, limit: int | None = None) -> Task:
    """Build the task ``name`` for a model with ``model_config``; ``limit`` caps the training examples."""
    if name == "fashion-mnist":
        from divekit.tasks.image_classification import ImageClassification

        resolution = getattr(model_config, "resolution", 28)
        return ImageClassification(
            batch_size=train_config.batch_size,
            seed=train_config.seed,
            resolution=resolution,
            limit=limit,
            label_smoothing=train_config.label_smoothing,
        )
    raise UnknownNameError(f"unknown task '{name}'{suggest(name, ['fashion-mnist'])}")
