"""The Trainer: resume reproduces an uninterrupted run, NaN stops training, checkpoints are data only."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from divekit.data.loader import TensorLoader
from divekit.errors import CheckpointError, NonFiniteLossError
from divekit.train.checkpoint import load_checkpoint, save_checkpoint
from divekit.train.config import TrainConfig
from divekit.train.schedule import lr_at
from divekit.train.task import StepOutput
from divekit.train.trainer import Trainer, TrainingInterrupted


class ToyTask:
    """3-class classification of 8-d Gaussian points; can send Ctrl-C or produce NaN at a given step.

    ``phase`` says where in the step the SIGINT arrives: before the forward pass, after it (dropout
    has drawn its masks), or during the backward pass (from a gradient hook).
    """

    name = "toy"
    monitor = "val_loss"
    monitor_mode = "min"

    def __init__(self, *, interrupt_at: int | None = None, nan_at: int | None = None, phase: str = "before",
                 augment: bool = False) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(256, 8, generator=g)
        self.y = (self.x @ torch.randn(8, 3, generator=g)).argmax(1)
        self.interrupt_at, self.nan_at, self.steps, self.phase = interrupt_at, nan_at, 0, phase
        self.augment = augment

    def train_loader(self, dist):
        noise = (lambda batch, g: (batch[0] + 0.3 * torch.randn(batch[0].shape, generator=g), batch[1]))
        return TensorLoader(self.x[:192], self.y[:192], batch_size=24, shuffle=True, seed=7,
                            augment=noise if self.augment else None, rank=dist.rank, world_size=dist.world_size)

    def start_epoch(self, model, epoch):
        pass

    def step(self, model, batch):
        self.steps += 1
        interrupt = self.steps == self.interrupt_at
        if interrupt and self.phase == "before":
            signal.raise_signal(signal.SIGINT)
        x, y = batch
        loss = F.cross_entropy(model(x), y)
        if interrupt and self.phase == "after-forward":
            signal.raise_signal(signal.SIGINT)
        if interrupt and self.phase == "backward":
            loss.register_hook(lambda grad: signal.raise_signal(signal.SIGINT))
        if self.steps == self.nan_at:
            loss = loss * float("nan")
        return StepOutput(loss, y.shape[0])

    @torch.no_grad()
    def evaluate(self, model, split):
        model.eval()
        loss = F.cross_entropy(model(self.x[192:]), self.y[192:]).item()
        model.train()
        return {"loss": loss}

    def state(self):
        return {"note": "toy"}


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


CONFIG = dict(epochs=3, batch_size=24, lr=0.05, optimizer="adam", schedule="cosine", warmup_steps=3, grad_clip=1.0)


def trainer(task, run_dir, **kw) -> Trainer:
    return Trainer(make_model(), task, TrainConfig(**{**CONFIG, **kw}), model_name="toy-mlp",
                   model_config={"hidden": 16}, run_dir=run_dir, progress=False, log=lambda *a: None)


def strip_times(history):
    return [{k: v for k, v in h.items() if "seconds" not in k and "per_s" not in k} for h in history]


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("phase", ["before", "after-forward", "backward"])
@pytest.mark.parametrize("interrupt_at", [5, 8, 13, 24])  # mid-epoch 1, end of epoch 1, mid-epoch 2, last step
def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path, interrupt_at, phase, augment):
    """The model drops out (p=0.3) and the data may be augmented: a checkpoint whose random state
    is off by one step would show."""
    reference = trainer(ToyTask(augment=augment), tmp_path / "a")
    reference.fit()

    broken = trainer(ToyTask(interrupt_at=interrupt_at, phase=phase, augment=augment), tmp_path / "b")
    with pytest.raises(TrainingInterrupted, match="--resume"):
        broken.fit()
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoint.pt", expect_model="toy-mlp")
    assert ckpt["epoch"] * 8 + ckpt["step_in_epoch"] == interrupt_at  # the step in progress finished

    torch.manual_seed(12345)  # the resumed run must not depend on the process's RNG state
    resumed = trainer(ToyTask(augment=augment), tmp_path / "b")
    resumed.restore(ckpt)
    resumed.fit()

    for (name, a), (_, b) in zip(reference.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert strip_times(resumed.history) == strip_times(reference.history)


def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    t = trainer(ToyTask(nan_at=12), tmp_path)  # step 12 lies in epoch 2
    with pytest.raises(NonFiniteLossError, match="nan at epoch 2.*last good checkpoint"):
        t.fit()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model_state"].values())


def test_best_checkpoint_tracks_validation_metric(tmp_path):
    t = trainer(ToyTask(), tmp_path)
    result = t.fit()
    best = load_checkpoint(tmp_path / "best.pt")
    losses = [h["val_loss"] for h in result.history]
    assert best["epoch"] == 1 + losses.index(min(losses))
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 3


def test_checkpoint_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "divekit-checkpoint", "version": 1, "model": "mlp", "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_of_another_model_or_garbage_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"model": "lenet", "model_state": {"w": torch.ones(2)}})
    assert load_checkpoint(path, expect_model="lenet")["model_state"]["w"].sum() == 2
    with pytest.raises(CheckpointError, match="model 'lenet', not of 'mlp'"):
        load_checkpoint(path, expect_model="mlp")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(junk)
    torch.save({"weights": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a divekit checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "junk.pt", "plain.pt"]  # no temp files left


def test_schedules():
    assert lr_at(0, 100, 1.0, "constant") == 1.0
    assert lr_at(0, 100, 1.0, "cosine") == 1.0
    assert math.isclose(lr_at(50, 100, 1.0, "cosine"), 0.5)
    assert lr_at(99, 100, 1.0, "cosine") < 1e-3
    assert [lr_at(s, 100, 1.0, "cosine", warmup_steps=4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(60, 100, 1.0, "step") == pytest.approx(0.1) and lr_at(80, 100, 1.0, "step") == pytest.approx(0.01)
    peak = max(lr_at(s, 100, 1.0, "onecycle") for s in range(100))
    assert peak == pytest.approx(1.0, rel=0.05) and lr_at(0, 100, 1.0, "onecycle") == pytest.approx(0.04)


def test_train_config_rejects_bad_values():
    from divekit.errors import DivekitError

    for bad in [dict(epochs=0), dict(lr=-1), dict(optimizer="lbfgs"), dict(precision="fp8"), dict(grad_clip=0)]:
        with pytest.raises(DivekitError):
            TrainConfig(**bad)


class PlateauTask(ToyTask):
    """Validation loss that improves for two epochs, then only gets worse."""

    def __init__(self) -> None:
        super().__init__()
        self.evaluations = 0

    def evaluate(self, model, split):
        self.evaluations += 1
        return {"loss": [3.0, 2.0, 2.5, 2.6, 2.7, 2.8][self.evaluations - 1]}


def test_patience_stops_after_epochs_without_improvement(tmp_path):
    t = trainer(PlateauTask(), tmp_path, epochs=6, patience=2)
    result = t.fit()
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
