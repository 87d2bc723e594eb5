"""Initialisation: scratch Xavier/Kaiming against torch's, the variance they keep, and trainability.

1. Weight statistics: a ``(256, 512)`` weight from each scratch initialiser and from its
   ``torch.nn.init`` counterpart, sample variance against the formula (``divekit.nn.init``).
2. Forward signal: ``E[z_l^2]`` of the pre-activations ``z_l = h_{l-1} W_l^T`` through 30 square
   layers of width 256 at initialisation, on ``x ~ N(0, I)``, for each scheme and activation.
   Kaiming keeps it constant under ReLU (``Var(w) = 2 / n`` undoes ReLU's halving); Xavier lets it
   decay slowly under tanh (which shrinks everything away from 0) and halves it per layer under
   ReLU; a fixed std of 0.01 multiplies it by about ``n * 1e-4`` (``/ 2`` under ReLU) per layer.
3. Trainability: a deep ReLU MLP (width 128) on Fashion-MNIST under each scheme, with the Trainer.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from divekit import seeding
from divekit.cpu import flush_denormals, single_thread
from divekit.data.fashion_mnist import FashionMNIST
from divekit.experiments.base import ExperimentContext
from divekit.experiments.deep_mlp import ACTIVATIONS, DeepMLP, DeepMLPConfig
from divekit.experiments.fashion_mnist_study import train_study_model
from divekit.nn import init as scratch
from divekit.plots import line_plot
from divekit.registry import register_experiment

# (label, scheme for init_linear_layers_, nonlinearity whose gain it uses)
SCHEMES = [("normal 0.01", "normal-0.01", "linear"), ("Xavier", "xavier", "linear"), ("Kaiming", "kaiming", "relu")]

# (label, scratch initialiser, torch initialiser, variance formula of (fan_in, fan_out))
INITIALISERS = [
    ("xavier_uniform_", scratch.xavier_uniform_, nn.init.xavier_uniform_, lambda i, o: 2 / (i + o)),
    ("xavier_normal_", scratch.xavier_normal_, nn.init.xavier_normal_, lambda i, o: 2 / (i + o)),
    ("kaiming_uniform_", scratch.kaiming_uniform_, nn.init.kaiming_uniform_, lambda i, o: 2 / i),
    ("kaiming_normal_", scratch.kaiming_normal_, nn.init.kaiming_normal_, lambda i, o: 2 / i),
]


def weight_statistics(seed: int, shape: tuple[int, int] = (256, 512)) -> list[list]:
    """``[name, formula variance, scratch variance, torch variance]`` per initialiser (float64 weights)."""
    fan_out, fan_in = shape
    rows = []
    for name, ours, theirs, variance in INITIALISERS:
        a = ours(torch.empty(shape, dtype=torch.float64), generator=seeding.generator(seed, "init", 0))
        # Another stream for torch's draw: the comparison is statistical, not draw for draw.
        b = theirs(torch.empty(shape, dtype=torch.float64), generator=seeding.generator(seed, "init", 1))
        rows.append([name, variance(fan_in, fan_out), a.var().item(), b.var().item()])
    return rows


def forward_second_moments(scheme: str, gain_for: str, activation: str, *, depth: int = 30, width: int = 256,
                           batch: int = 512, seed: int = 0, use_torch: bool = False) -> list[float]:
    """``E[z_l^2]`` for ``l = 1 .. depth`` at initialisation (``use_torch``: torch's Kaiming/Xavier normal)."""
    g = seeding.generator(seed, "init")
    layers = [nn.Linear(width, width, dtype=torch.float64) for _ in range(depth)]
    stack = nn.Sequential(*layers)
    if use_torch:
        with torch.no_grad():
            for layer in layers:
                if scheme == "kaiming":
                    nn.init.kaiming_normal_(layer.weight, nonlinearity=gain_for, generator=g)
                else:
                    nn.init.xavier_normal_(layer.weight, nn.init.calculate_gain(gain_for), generator=g)
                layer.bias.zero_()
    else:
        scratch.init_linear_layers_(stack, scheme, nonlinearity=gain_for, generator=g)
    act = ACTIVATIONS[activation]()
    h = torch.randn(batch, width, generator=seeding.generator(seed, "data"), dtype=torch.float64)
    moments = []
    with torch.no_grad():
        for layer in layers:
            z = layer(h)
            moments.append(z.pow(2).mean().item())
            h = act(z)
    return moments


@register_experiment(
    "initialization",
    chapter="stability",
    title="Initialisation: Xavier and Kaiming from scratch",
    description="scratch initialisers against torch.nn.init, forward variance through depth, deep ReLU MLP training",
    modes="Quick: a 10-layer network trained 3 epochs on 5,000 images; full: 8 epochs on all 55,000.",
)
def run(ctx: ExperimentContext) -> dict:
    with single_thread(), flush_denormals():  # the std-0.01 network's gradients are subnormal floats
        return _run(ctx)


def _run(ctx: ExperimentContext) -> dict:
    depth = ctx.pick(10, 10)
    epochs = ctx.pick(3, 8)
    limit = ctx.pick(5_000, None)

    stats = weight_statistics(ctx.seed)
    profiles, moment_rows = {}, []
    for label, scheme, gain_for in SCHEMES:
        for activation in ("tanh", "relu"):
            moments = forward_second_moments(scheme, gain_for, activation, seed=ctx.seed)
            profiles[f"{label}, {activation}"] = (list(range(1, len(moments) + 1)), moments)
            reference = (forward_second_moments(scheme, gain_for, activation, seed=ctx.seed + 1, use_torch=True)[-1]
                         if scheme != "normal-0.01" else None)
            moment_rows.append([label, activation, moments[0], moments[-1], reference])
    line_plot(ctx.path("forward_variance.png"), profiles, xlabel="layer", ylabel="E[z^2] of the pre-activations",
              logy=True, title="Forward signal through 30 layers of width 256 at initialisation")

    data = FashionMNIST()
    curves, train_rows = {}, []
    for label, scheme, gain_for in SCHEMES:
        config = DeepMLPConfig(depth=depth, width=128, activation="relu")
        model = DeepMLP(config)
        scratch.init_linear_layers_(model, scheme, nonlinearity=gain_for,
                                    generator=seeding.generator(ctx.seed, "init"))
        r = train_study_model(model, name=f"deep-mlp ({label})", model_config=asdict(config), data=data,
                              epochs=epochs, lr=0.1, limit=limit, seed=ctx.seed, device=ctx.device,
                              progress=ctx.progress, splits=("test",))
        curves[label] = ([h["epoch"] for h in r.history], [h["val_accuracy"] for h in r.history])
        train_rows.append([label, r.history[0]["train_loss"], r.history[-1]["train_loss"],
                           r.history[-1]["val_accuracy"], r.test_accuracy])
    line_plot(ctx.path("training.png"), curves, xlabel="epoch", ylabel="validation accuracy",
              title=f"{depth}-layer ReLU MLP on Fashion-MNIST by initialisation")

    worst_gap = max(abs(sample - r[1]) / r[1] for r in stats for sample in r[2:])  # r: name, formula, ours, torch's
    by_scheme = {r[0]: r for r in train_rows}
    kaiming_relu = next(r for r in moment_rows if r[0] == "Kaiming" and r[1] == "relu")
    xavier_relu = next(r for r in moment_rows if r[0] == "Xavier" and r[1] == "relu")
    n_train = limit or 55_000
    return {
        "summary": (
            f"Scratch and torch initialisers give sample variances within {worst_gap:.1%} of the formula on a "
            f"256x512 weight. Through 30 layers, E[z^2] goes from {kaiming_relu[2]:.3g} to {kaiming_relu[3]:.3g} "
            f"under Kaiming + ReLU but from {xavier_relu[2]:.3g} to {xavier_relu[3]:.3g} under Xavier + ReLU, and "
            f"vanishes under normal(0, 0.01). Training a {depth}-layer ReLU MLP for {epochs} epochs on {n_train} "
            f"images (SGD lr 0.1): test accuracy {by_scheme['normal 0.01'][4]:.1%} with normal(0, 0.01) (stuck at "
            f"chance), {by_scheme['Xavier'][4]:.1%} with Xavier and {by_scheme['Kaiming'][4]:.1%} with Kaiming."
        ),
        "metrics": {
            "init_variance_max_rel_error": worst_gap,
            "kaiming_relu_last_layer_moment": kaiming_relu[3],
            "xavier_relu_last_layer_moment": xavier_relu[3],
            "test_accuracy_normal001": by_scheme["normal 0.01"][4],
            "test_accuracy_xavier": by_scheme["Xavier"][4],
            "test_accuracy_kaiming": by_scheme["Kaiming"][4],
        },
        "tables": [
            {"title": "Weight variance on a (256, 512) weight: formula, scratch, torch.nn.init",
             "columns": ["initialiser", "formula", "scratch", "torch"], "rows": stats},
            {"title": "E[z^2] of the pre-activations at layers 1 and 30 (torch: the same scheme by torch.nn.init)",
             "columns": ["init", "activation", "layer 1", "layer 30", "layer 30, torch"], "rows": moment_rows},
            {"title": f"{depth}-layer ReLU MLP, {epochs} epochs on {n_train} images",
             "columns": ["init", "first-epoch train loss", "last-epoch train loss", "val acc.", "test acc."],
             "rows": train_rows},
        ],
        "figures": [
            {"file": "forward_variance.png", "caption": "Second moment of each layer's pre-activations at "
                                                        "initialisation, by scheme and activation."},
            {"file": "training.png", "caption": "Validation accuracy per epoch by initialisation."},
        ],
    }
