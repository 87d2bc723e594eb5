"""The training engine: one Trainer, its config, checkpoints, schedules and distributed set-up."""

from divekit.train.config import TrainConfig
from divekit.train.trainer import Trainer, TrainResult

__all__ = ["TrainConfig", "Trainer", "TrainResult"]
