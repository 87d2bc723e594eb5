"""The training recipe: one small dataclass, stored as plain values in every checkpoint and result."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from divekit.errors import DivekitError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle", "step")
PRECISIONS = ("fp32", "bf16", "auto")  # auto: resolved by divekit.train.precision when training starts


@dataclass
class TrainConfig:
    """How to train: everything that changes the trajectory of the weights lives here."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    grad_clip: float | None = None
    seed: int = 0
    precision: str = "fp32"
    label_smoothing: float = 0.0
    patience: int | None = None  # early stopping: end after this many epochs without a better validation metric
    channels_last: bool = False  # NHWC memory layout for image models: faster convolutions on CPU
    # Where and how fast: these do not change the result on one device.
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise DivekitError(msg)

        need(self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        need(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        need(math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive finite number, got {self.lr}")
        need(isinstance(self.seed, int) and self.seed >= 0, f"--seed must be a whole number >= 0, got {self.seed}")
        need(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got '{self.optimizer}'")
        need(self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got '{self.schedule}'")
        need(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        need(self.grad_clip is None or (math.isfinite(self.grad_clip) and self.grad_clip > 0),
             f"--grad-clip must be a positive finite number, got {self.grad_clip}")
        need(0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}")
        need(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"--weight-decay must be a non-negative finite number, got {self.weight_decay}")
        need(self.warmup_steps >= 0, f"--warmup-steps must be non-negative, got {self.warmup_steps}")
        need(0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        need(self.patience is None or self.patience >= 1, f"--patience must be at least 1, got {self.patience}")
        need(self.threads is None or self.threads >= 1, f"--threads must be at least 1, got {self.threads}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DivekitError(f"unknown device '{name}'; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DivekitError("--device cuda was asked for but no CUDA device is available")
    return device
