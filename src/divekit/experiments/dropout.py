"""Dropout on Fashion-MNIST: the same MLP without dropout, with ``nn.Dropout`` and with scratch dropout.

The network is the book's two-hidden-layer MLP (784 -> 256 -> 256 -> 10, ReLU) with dropout after
each hidden activation at rates 0.2 and 0.5 (lower near the input, where a dropped unit discards
more of the raw signal):

    h_1 = drop_0.2(relu(x W_1^T + b_1));  h_2 = drop_0.5(relu(h_1 W_2^T + b_2));  logits = h_2 W_3^T + b_3
    x: (batch, 1, 28, 28) flattened to (batch, 784) -> logits: (batch, 10)

Each variant trains with the shared Trainer (SGD, lr 0.1, batch 256) from the same initial weights.
The train/test gap is accuracy on the training images minus accuracy on the test images, both in
evaluation mode, so it measures generalization rather than the noise dropout adds while training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from divekit import seeding
from divekit.cpu import single_thread
from divekit.data.fashion_mnist import FashionMNIST
from divekit.errors import DivekitError
from divekit.experiments.base import ExperimentContext
from divekit.experiments.fashion_mnist_study import StudyRun, train_study_model
from divekit.nn.dropout import Dropout
from divekit.plots import line_plot
from divekit.registry import register_experiment
from divekit.shapes import check_image_batch


@dataclass(frozen=True)
class DropoutMLPConfig:
    hidden: tuple[int, ...] = (256, 256)  # widths of the hidden layers (the book's)
    rates: tuple[float, ...] = (0.2, 0.5)  # dropout after each hidden layer; 0 disables it
    implementation: str = "scratch"  # scratch (divekit.nn.dropout) | torch (nn.Dropout)

    def __post_init__(self) -> None:
        if len(self.rates) != len(self.hidden):
            raise DivekitError(f"need one dropout rate per hidden layer: {len(self.hidden)} layers, "
                               f"{len(self.rates)} rates")
        if self.implementation not in ("scratch", "torch"):
            raise DivekitError(f"implementation must be 'scratch' or 'torch', got '{self.implementation}'")


class DropoutMLP(nn.Module):
    def __init__(self, config: DropoutMLPConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Flatten()]
        width = 28 * 28
        for hidden, rate in zip(config.hidden, config.rates):
            # A rate of 0 still gets its (identity) layer, so every variant has the same state-dict keys.
            drop = Dropout(rate) if config.implementation == "scratch" else nn.Dropout(rate)
            layers += [nn.Linear(width, hidden), nn.ReLU(), drop]
            width = hidden
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, 1, 28, 28)`` -> ``(batch, 10)``."""
        check_image_batch(x, 1, 28, who="dropout MLP")
        return self.net(x)


LR = 0.1  # the book uses 0.5; 0.1 makes the final epoch's scores less noisy on small training sets
# (label, rates, implementation)
VARIANTS = [
    ("no dropout", (0.0, 0.0), "torch"),
    ("nn.Dropout (0.2, 0.5)", (0.2, 0.5), "torch"),
    ("scratch Dropout (0.2, 0.5)", (0.2, 0.5), "scratch"),
]


def _train(label: str, config: DropoutMLPConfig, state: dict, ctx: ExperimentContext, data: FashionMNIST,
           epochs: int, limit: int | None) -> StudyRun:
    model = DropoutMLP(config)
    model.load_state_dict(state)  # every variant starts from the same weights
    return train_study_model(model, name=f"dropout-mlp ({label})", model_config=asdict(config), data=data,
                             epochs=epochs, lr=LR, limit=limit, seed=ctx.seed, device=ctx.device,
                             progress=ctx.progress)


@register_experiment(
    "dropout-mlp",
    chapter="generalization",
    title="Dropout: an MLP on Fashion-MNIST with and without dropout",
    description="scratch inverted dropout beside nn.Dropout; test accuracy and train/test gap",
    modes=("Quick: 2,000 training images for 40 epochs, enough to overfit without dropout; full: all "
           "55,000 images for 20 epochs."),
)
def run(ctx: ExperimentContext) -> dict:
    with single_thread():
        return _run(ctx)


def _run(ctx: ExperimentContext) -> dict:
    epochs = ctx.pick(40, 20)
    limit = ctx.pick(2_000, None)
    data = FashionMNIST()
    seeding.seed_global(ctx.seed, "init")
    initial = DropoutMLP(DropoutMLPConfig()).state_dict()
    rows, acc_curves, loss_curves, runs = [], {}, {}, {}
    for label, rates, implementation in VARIANTS:
        config = DropoutMLPConfig(rates=rates, implementation=implementation)
        r = _train(label, config, initial, ctx, data, epochs, limit)
        runs[label] = r
        train_acc, test_acc = r.scores["train"]["accuracy"], r.test_accuracy
        rows.append([label, train_acc, test_acc, train_acc - test_acc, r.scores["train"]["loss"],
                     r.scores["test"]["loss"], r.seconds])
        epochs_axis = [h["epoch"] for h in r.history]
        acc_curves[label] = (epochs_axis, [h["val_accuracy"] for h in r.history])
        loss_curves[label] = (epochs_axis, [h["train_loss"] for h in r.history])
    line_plot(ctx.path("val_accuracy.png"), acc_curves, xlabel="epoch", ylabel="validation accuracy",
              title="Validation accuracy per epoch")
    line_plot(ctx.path("train_loss.png"), loss_curves, xlabel="epoch", ylabel="training loss (while training)",
              title="Training loss per epoch")
    plain, torch_drop, scratch_drop = (runs[v[0]] for v in VARIANTS)
    gap = {label: row[3] for label, row in zip(runs, rows)}
    n_train = limit or 55_000
    return {
        "summary": (
            f"{'Quick mode: ' if ctx.quick else ''}{n_train} training images, {epochs} epochs, SGD lr {LR}, the same "
            f"initial weights for every variant. Test accuracy: {plain.test_accuracy:.2%} without dropout, "
            f"{torch_drop.test_accuracy:.2%} with nn.Dropout and {scratch_drop.test_accuracy:.2%} with the scratch "
            f"dropout. Train/test accuracy gap (both in evaluation mode): {gap[VARIANTS[0][0]]:+.2%} without, "
            f"{gap[VARIANTS[1][0]]:+.2%} and {gap[VARIANTS[2][0]]:+.2%} with dropout. The two dropout "
            f"implementations draw different masks, so their runs differ only by that randomness."
        ),
        "metrics": {
            "test_accuracy_no_dropout": plain.test_accuracy,
            "test_accuracy_torch_dropout": torch_drop.test_accuracy,
            "test_accuracy_scratch_dropout": scratch_drop.test_accuracy,
            "gap_no_dropout": gap[VARIANTS[0][0]],
            "gap_torch_dropout": gap[VARIANTS[1][0]],
            "gap_scratch_dropout": gap[VARIANTS[2][0]],
            "training_examples": n_train,
        },
        "tables": [{
            "title": f"After {epochs} epochs on {n_train} images (evaluation mode)",
            "columns": ["variant", "train acc.", "test acc.", "gap", "train loss", "test loss", "train s"],
            "rows": rows,
        }],
        "figures": [
            {"file": "val_accuracy.png", "caption": "Validation accuracy per epoch for each variant."},
            {"file": "train_loss.png", "caption": "Training loss per epoch (dropout active while training)."},
        ],
    }
